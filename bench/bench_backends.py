"""The NumPy and Numba backends against hand-written NumPy BPTTs, JAX and PyTorch.

    python3 bench/bench_backends.py [--quick] [--threads K] [--only scalar|hidden|compile|parallel|widths]

float64, tanh. Scalar rows: the notes' model, N in {100, 1000} × B in {1, 100, 10 000}, one-hot inputs.
Hidden rows: H in {16, 128} at N = 100, B in {1, 64, 4096}, D = 3, normal inputs, no biases; the hand
BPTT and the framework columns are bench/bench_hidden.py's. Each row times loss_and_grad; every
column is a ratio to the Numba backend measured in the same run (> 1: slower than Numba). The hand
column of the scalar rows is the faster of bench/bench_gradients.py's two hand loops. JAX: jit of
value_and_grad over lax.scan, float64, inputs already JAX arrays (block_until_ready); PyTorch:
autograd (torch.nn.RNN for H). A framework that is not installed is a gap in its column.
``--threads K`` gives Numba, PyTorch, XLA and BLAS K threads (default: each library's own).
The candidates of a row are timed in interleaved rounds (bench/_timing.py), each keeping its best.
The Numba module of the hidden rows is the generic cell module (templates/numba/cell.py.j2), called in
the plain RNN's positional form. Then: the first call in a fresh process (import, compile or cache
load, first call) with a cold and a warm cache; the scalar module's serial and parallel drivers side by
side, which set its _PARALLEL_BATCH; ``widths``: the scalar module's block width (_WIDTH), and the
generic module's compiled drivers and BLAS drivers side by side for the plain RNN, the LSTM and the
GRU (its _BLAS_ENTRIES, numba_cells.blas_entries).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import timeit
from functools import partial
from pathlib import Path

import _threads  # noqa: F401  (before NumPy: BLAS reads its thread count as it loads)
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_hidden
from _timing import interleaved
from bench_gradients import HAND, SCALAR_FRAMEWORKS, frameworks, hand_loss_and_grad, set_threads

from symbolic.codegen import load
from symbolic.model import Model

FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from symbolic.codegen import load
from symbolic.model import Model
imported = time.perf_counter()
module = load(Model(steps=100, activation="tanh"{hidden}), "loop", backend="numba")
loaded = time.perf_counter()
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 100, 3))
w = {weights}
module.loss_and_grad(x, np.array([0.0, 1.0, 1.0, 0.0]), *w)
end = time.perf_counter()
print(imported - start, loaded - imported, end - loaded, end - start)
"""
SCALAR_WEIGHTS = "(np.array([0.1, 0.2, 0.3]), 0.9, 1.5)"
MATRIX_WEIGHTS = "(rng.normal(size=(16, 3)), rng.normal(size=(16, 16)) / 4, rng.normal(size=16))"


def first_call_seconds(cache_dir: str, hidden: int = 1) -> list[float]:
    """(imports, load, first call, total) seconds in a fresh process."""
    code = FIRST_CALL.format(
        hidden=f", hidden={hidden}" if hidden > 1 else "",
        weights=MATRIX_WEIGHTS if hidden > 1 else SCALAR_WEIGHTS,
    )
    # Every cache directory bptt reads (codegen.cache_directories) inside cache_dir: a module found in
    # the user's own cache would make the cold row warm.
    environment = {
        **os.environ,
        "BPTT_CACHE_DIR": cache_dir,
        "XDG_CACHE_HOME": os.path.join(cache_dir, "xdg"),
        "TMPDIR": os.path.join(cache_dir, "tmp"),
        "PYTHONPATH": str(ROOT),
    }
    os.makedirs(environment["TMPDIR"], exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    return [float(v) for v in result.stdout.strip().splitlines()[-1].split()]


def import_seconds(modules: str) -> float:
    """Importing ``modules`` alone in a fresh process."""
    code = f"import time; s = time.perf_counter(); import {modules}; print(time.perf_counter() - s)"
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's bptt, not an installed one
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


def row(candidates: dict, columns: list, repeat: int, clock) -> str:
    """One table row: Numba's time, then every column as time and ratio to Numba; a column is a list
    of candidate names (the row keeps the fastest of them) or the reason it is a gap."""
    times = interleaved(candidates, rounds=repeat, clock=clock)
    fast = times["numba"]
    cells = []
    for column in columns:
        if isinstance(column, str):
            cells.append("—")
            continue
        t = min(times[name] for name in column)
        cells.append(f"{t * 1e3:.3f} ms ({t / fast:.2f}×)")
    return f"{fast * 1e3:.3f} ms | " + " | ".join(cells) + " |"


def framework_candidates(extra: dict, arguments: tuple, check) -> tuple[dict, list]:
    """Timed calls of the installed frameworks (their arguments prepared once, outside the timing,
    the result checked by ``check(name, result)``) and the table's columns for them."""
    candidates, columns = {}, []
    for name, framework in extra.items():
        if isinstance(framework, str):
            columns.append(framework)
            continue
        prepare, run = framework
        prepared = prepare(*arguments)
        check(name, run(*prepared))
        candidates[name] = partial(run, *prepared)
        columns.append([name])
    return candidates, columns


def scalar_rows(batches, repeat, extra, clock) -> None:
    names = ["NumPy backend", "hand NumPy BPTT (faster of two)", *extra]
    print("| N | B | Numba backend | " + " | ".join(f"{name} (× Numba)" for name in names) + " |")
    print("|---:|---:|---:|" + "---:|" * len(names))
    rng = np.random.default_rng(0)

    def check(name, result):
        loss, dw_h = (result[0], result[1][1]) if name == "jax" else (result[0], result[2])
        assert np.isclose(float(loss), want[0], rtol=1e-9) and np.isclose(float(dw_h), want[2], rtol=1e-9)

    for steps in (100, 1000):
        model = Model(steps=steps, activation="tanh")
        fast, reference = load(model, "loop", backend="numba"), load(model, "loop")
        for batch in batches:
            x = np.eye(3)[rng.integers(0, 3, size=(batch, steps))]
            y = rng.integers(0, 2, size=batch).astype(float)
            w_i, w_h, w_o = rng.normal(size=3) * 0.5, 0.9, 1.5
            want = hand_loss_and_grad(x, y, w_i, w_h, w_o)
            got = fast.loss_and_grad(x, y, w_i, w_h, w_o)
            assert np.allclose(got[1], want[1], rtol=1e-12) and np.isclose(got[2], want[2], rtol=1e-12)
            arguments = (x, y, w_i, w_h, w_o)
            candidates = {
                "numba": partial(fast.loss_and_grad, *arguments),
                "numpy": partial(reference.loss_and_grad, *arguments),
            }
            candidates.update({name: partial(hand, *arguments) for name, hand in HAND.items()})
            timed, columns = framework_candidates(extra, arguments, check)
            candidates.update(timed)
            columns = [["numpy"], list(HAND), *columns]
            print(f"| {steps} | {batch} | {row(candidates, columns, repeat, clock)}", flush=True)


def hidden_rows(batches, repeat, extra, clock) -> None:
    names = ["NumPy backend", "hand NumPy BPTT", *extra]
    print("| H | B | Numba backend | " + " | ".join(f"{name} (× Numba)" for name in names) + " |")
    print("|---:|---:|---:|" + "---:|" * len(names))
    rng = np.random.default_rng(0)
    steps = bench_hidden.STEPS

    def check(name, result):
        loss, dw_h = (result[0], result[1][1]) if name == "jax" else (result[0], result[2])
        assert np.isclose(float(loss), want[0], rtol=1e-9)
        assert np.allclose(np.asarray(dw_h), want[2], rtol=1e-8, atol=1e-14)

    for hidden in (16, 128):
        model = Model(steps=steps, activation="tanh", hidden=hidden)
        fast, reference = load(model, "loop", backend="numba"), load(model, "loop")
        for batch in batches:
            x = rng.normal(size=(batch, steps, bench_hidden.INPUTS))
            y = rng.integers(0, 2, size=batch).astype(float)
            w_i = rng.normal(size=(hidden, bench_hidden.INPUTS)) * 0.5
            w_h = rng.normal(size=(hidden, hidden)) * 0.9 / np.sqrt(hidden)
            w_o = rng.normal(size=hidden)
            arguments = (x, y, w_i, w_h, w_o)
            want = bench_hidden.hand_loss_and_grad(*arguments)
            for got, expected in zip(fast.loss_and_grad(*arguments), want):
                assert np.allclose(got, expected, rtol=1e-9, atol=1e-14)
            candidates = {
                "numba": partial(fast.loss_and_grad, *arguments),
                "numpy": partial(reference.loss_and_grad, *arguments),
                "hand": partial(bench_hidden.hand_loss_and_grad, *arguments),
            }
            timed, columns = framework_candidates(extra, arguments, check)
            candidates.update(timed)
            columns = [["numpy"], ["hand"], *columns]
            print(f"| {hidden} | {batch} | {row(candidates, columns, repeat, clock)}", flush=True)


def compile_times() -> None:
    imports = {
        name: min(import_seconds(name) for _ in range(3)) for name in ("numpy", "numba", "symbolic", "sympy")
    }
    print(
        "First call in a fresh process (seconds): imports (NumPy, bptt without SymPy), load (cold: "
        "derivation with SymPy, source, module; warm: the cached source, so Numba's import), first "
        "loss_and_grad (Numba: compile, or load its cache), total"
    )
    print("| model | cache | imports | load | first call | total |\n|---|---|---:|---:|---:|---:|")
    for hidden in (1, 16):
        with tempfile.TemporaryDirectory() as cache:
            cold = first_call_seconds(cache, hidden)
            warm = min((first_call_seconds(cache, hidden) for _ in range(3)), key=lambda t: t[-1])
        label = "scalar, N = 100" if hidden == 1 else f"H = {hidden}, N = 100"
        for name, times in (("cold", cold), ("warm", warm)):
            print(f"| {label} | {name} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    print(
        "Imports alone (fresh process, best of 3): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in imports.items())
    )


def parallel_rows(repeat, quick: bool = False) -> None:
    import numba

    rng = np.random.default_rng(1)
    module = load(Model(steps=100, activation="tanh"), "loop", backend="numba")
    print(
        f"\nScalar kernels, N = 100 ({numba.get_num_threads()} threads; "
        f"the module goes parallel from B = {module._PARALLEL_BATCH}):"
    )
    print("| B | serial | parallel | parallel / serial |\n|---:|---:|---:|---:|")
    for batch in (264, 528, 1056, 4096, 10_000, 100_000) + (() if quick else (1_000_000,)):
        x = np.eye(3)[rng.integers(0, 3, size=(batch, 100))]
        y = rng.integers(0, 2, size=batch).astype(float)
        # loss_and_grad itself with its kernels' serial or parallel drivers
        call = partial(module.loss_and_grad, x, y, rng.normal(size=3) * 0.5, 0.9, 1.5)
        times = _either_side(module, "_PARALLEL_BATCH", call, repeat, "serial", "parallel")
        print(
            f"| {batch} | {times['serial'] * 1e3:.3f} ms | {times['parallel'] * 1e3:.3f} ms | "
            f"{times['parallel'] / times['serial']:.2f} |",
            flush=True,
        )


def _forced(module, threshold: str, value: int, call):
    """``call`` with the module's threshold ``threshold`` set to ``value`` (0: always above it)."""

    def run():
        setattr(module, threshold, value)
        return call()

    return run


def _either_side(module, threshold: str, call, repeat: int, below: str, above: str, clock=None) -> dict:
    """``call`` timed (interleaved) with the module's ``threshold`` out of reach (name ``below``) and
    at 0 (name ``above``), so the same call takes either path; the threshold is restored after."""
    saved = getattr(module, threshold)
    try:
        return interleaved(
            {below: _forced(module, threshold, 1 << 62, call), above: _forced(module, threshold, 0, call)},
            rounds=repeat,
            clock=clock or timeit.default_timer,
        )
    finally:
        setattr(module, threshold, saved)


def width_rows(repeat, clock=None) -> None:
    """The scalar module's block width, and the generic module's compiled against BLAS drivers per
    call size: the constants _WIDTH and _BLAS_ENTRIES of the generated modules."""
    rng = np.random.default_rng(2)
    module = load(Model(steps=100, activation="tanh"), "loop", backend="numba")
    widths = (64, 128, 200, 256, 264, 296, 512)
    print(f"\nScalar model, N = 100, serial driver: block widths (the module's: {module._WIDTH}), ms")
    print("| B | " + " | ".join(str(w) for w in widths) + " |\n|---:|" + "---:|" * len(widths))
    for batch in (1000, 10_000, 100_000):
        x = np.eye(3)[rng.integers(0, 3, size=(batch, 100))]
        y = rng.integers(0, 2, size=batch).astype(float)
        arguments = module._compiled_arguments(x, y, rng.normal(size=3) * 0.5, 0.9, 1.5)
        times = interleaved(
            {w: partial(module._gradients_serial, *arguments, w, -(-batch // w)) for w in widths},
            rounds=repeat,
            clock=clock or timeit.default_timer,
        )
        print(f"| {batch} | " + " | ".join(f"{times[w] * 1e3:.3f}" for w in widths) + " |", flush=True)
    print(
        "\nGeneric module, N = 100, loss_and_grad: the compiled drivers against the BLAS ones (products"
        " through NumPy's BLAS, the equations' compiled loops per chunk), per cell; the module's own"
        " cut-over in the last column"
    )
    print(
        "| cell | H | B | B·H | compiled | BLAS | BLAS / compiled | the module's |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|"
    )
    cases = [("rnn", 16, batch) for batch in (16, 32, 64, 128)] + [("rnn", 128, b) for b in (1, 2, 4, 8)]
    for cell in ("lstm", "gru"):
        cases += [(cell, 16, batch) for batch in (8, 16, 32, 64)] + [(cell, 128, b) for b in (1, 2, 4)]
    for cell, hidden, batch in cases:
        module = load(Model(steps=100, cell=cell, hidden=hidden), "loop", backend="numba")
        x = rng.normal(size=(batch, 100, 3))
        y = rng.integers(0, 2, size=batch).astype(float)
        call = partial(module.loss_and_grad, x, y, module.init_params(int(rng.integers(2**31))))
        times = _either_side(module, "_BLAS_ENTRIES", call, repeat, "compiled", "BLAS", clock)
        path = "BLAS" if batch * hidden >= module._BLAS_ENTRIES else "compiled"
        print(
            f"| {cell} | {hidden} | {batch} | {hidden * batch} | {times['compiled'] * 1e3:.3f} ms | "
            f"{times['BLAS'] * 1e3:.3f} ms | {times['BLAS'] / times['compiled']:.2f} | "
            f"{path} (from {module._BLAS_ENTRIES}) |",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, small batches only")
    parser.add_argument("--only", choices=("scalar", "hidden", "compile", "parallel", "widths"), default=None)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per row (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="threads for Numba, PyTorch and XLA")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of the wall clock (for a busy shared machine; "
        "the CPU time of every thread is summed: use it with --threads 1)",
    )
    args = parser.parse_args(argv)
    repeat = args.rounds or (3 if args.quick else 7)
    clock = time.process_time if args.cpu_time else timeit.default_timer
    set_threads(args.threads)  # XLA reads its flags when JAX first loads
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    tables = args.only in (None, "scalar", "hidden")
    scalar_extra = frameworks(SCALAR_FRAMEWORKS) if args.only in (None, "scalar") else {}
    hidden_extra = frameworks(bench_hidden.HIDDEN_FRAMEWORKS) if args.only in (None, "hidden") else {}
    versions = ""
    loaded = {
        name
        for extra in (scalar_extra, hidden_extra)
        for name, found in extra.items()
        if not isinstance(found, str)
    }
    if "torch" in loaded:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        versions += f", PyTorch {torch.__version__} with {torch.get_num_threads()} threads"
    if "jax" in loaded:
        import jax

        versions += f", JAX {jax.__version__} ({os.environ.get('XLA_FLAGS') or 'XLA default threads'})"
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Numba {numba.__version__} with {numba.get_num_threads()} threads, NumPy {np.__version__}{versions}; "
        f"{'CPU' if args.cpu_time else 'wall-clock'} time\n"
    )
    if tables:
        for found in {**scalar_extra, **hidden_extra}.values():
            if isinstance(found, str):
                print(f"({found}: its column is a gap)\n")
    if args.only in (None, "scalar"):
        scalar_rows((1, 100) if args.quick else (1, 100, 10_000), repeat, scalar_extra, clock)
        print()
    if args.only in (None, "hidden"):
        hidden_rows((1, 64) if args.quick else (1, 64, 4096), repeat, hidden_extra, clock)
        print()
    if args.only in (None, "compile"):
        compile_times()
    if args.only in (None, "parallel"):
        parallel_rows(repeat, args.quick)
    if args.only in (None, "widths"):
        width_rows(repeat, clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
