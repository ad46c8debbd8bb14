"""The NumPy and Numba backends against a hand-written NumPy BPTT (and JAX, PyTorch where installed).

    python3 bench/bench_backends.py [--quick] [--only scalar|hidden|compile|parallel|paths]

float64, tanh. Scalar rows: the notes' model, N in {100, 1000} × B in {1, 100, 10 000}, one-hot inputs.
Hidden rows: H in {16, 128} at N = 100, B in {1, 64, 4096}, D = 3, normal inputs, no biases; the hand
BPTT and the PyTorch column (torch.nn.RNN) are bench/bench_hidden.py's. Each row times loss_and_grad;
every column is a ratio to the Numba backend measured in the same run (> 1: slower than Numba).
The candidates of a row are timed in interleaved rounds (bench/_timing.py), each keeping its best.
Then: the first call in a fresh process (import, compile or cache load, first call) with a cold and
a warm cache, and the serial and parallel kernels side by side, which set _PARALLEL_BATCH and
_PARALLEL_ENTRIES of the generated modules; ``paths``: the compiled and the vectorised path of the
same module side by side (the scalar module's wide path), which set _VECTORISED_BATCH and
_VECTORISED_ENTRIES.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_hidden
from _timing import interleaved
from bench_gradients import hand_loss_and_grad, optional_rows

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


def row(candidates: dict, repeat: int) -> str:
    """One table row: Numba's time, then every other candidate as time and ratio to Numba."""
    times = interleaved(candidates, rounds=repeat)
    fast = times.pop("numba")
    cells = " | ".join(f"{t * 1e3:.3f} ms ({t / fast:.2f}×)" for t in times.values())
    return f"{fast * 1e3:.3f} ms | {cells} |"


def scalar_rows(batches, repeat, extra) -> None:
    names = ["NumPy backend", "hand NumPy BPTT"] + [name for name, _ in extra]
    print("| N | B | Numba backend | " + " | ".join(f"{name} (× Numba)" for name in names) + " |")
    print("|---:|---:|---:|" + "---:|" * len(names))
    rng = np.random.default_rng(0)
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
                "hand": partial(hand_loss_and_grad, *arguments),
            }
            candidates.update({name: partial(run, *arguments) for name, run in extra})
            print(f"| {steps} | {batch} | {row(candidates, repeat)}", flush=True)


def _jax_matrix():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def loss(w_i, w_h, w_o, x, y):
        projection = jnp.einsum("bnd,hd->nbh", x, w_i)

        def step(o, p):
            return jnp.tanh(p + o @ w_h.T), None

        o_n, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], w_h.shape[0])), projection)
        z = o_n @ w_o
        return jnp.mean(jnp.logaddexp(0, z) - y * z)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return lambda x, y, w_i, w_h, w_o: jax.block_until_ready(value_and_grad(w_i, w_h, w_o, x, y))


def hidden_rows(batches, repeat) -> None:
    extra = []
    for name, _ in optional_rows():
        extra.append((name, _jax_matrix() if name == "jax" else bench_hidden.torch_loss_and_grad()))
    names = ["NumPy backend", "hand NumPy BPTT"] + [name for name, _ in extra]
    print("| H | B | Numba backend | " + " | ".join(f"{name} (× Numba)" for name in names) + " |")
    print("|---:|---:|---:|" + "---:|" * len(names))
    rng = np.random.default_rng(0)
    steps = bench_hidden.STEPS
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
            candidates.update({name: partial(run, *arguments) for name, run in extra})
            print(f"| {hidden} | {batch} | {row(candidates, repeat)}", flush=True)


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


def _matrix_kernels(module, kind, batch, x_t, y, w_i, w_h, w_o, b_h, b_o):
    """The compiled passes of a matrix module's loss_and_grad, with the serial or parallel kernels."""
    o = getattr(module, f"_states_{kind}")(x_t, w_i, w_h, b_h)
    _, residual = module._outputs(o[-1], y, w_o, b_o)
    backward = getattr(module, f"_backward_{kind}")
    return backward(x_t, o, w_h, residual[:, np.newaxis] * w_o, module._span(batch, x_t.shape[0]))


def parallel_rows(repeat) -> None:
    import numba

    rng = np.random.default_rng(1)
    module = load(Model(steps=100, activation="tanh"), "loop", backend="numba")
    print(
        f"\nScalar kernels, N = 100 ({numba.get_num_threads()} threads; "
        f"the module goes parallel from B = {module._PARALLEL_BATCH}):"
    )
    print("| B | serial | parallel | parallel / serial |\n|---:|---:|---:|---:|")
    for batch in (256, 1024, 4096, 10_000, 100_000):
        x = np.eye(3)[rng.integers(0, 3, size=(batch, 100))]
        y = rng.integers(0, 2, size=batch).astype(float)
        # loss_and_grad itself (the wide path from _VECTORISED_BATCH on) with its kernels' serial or
        # parallel drivers
        call = partial(module.loss_and_grad, x, y, rng.normal(size=3) * 0.5, 0.9, 1.5)
        times = _either_side(module, "_PARALLEL_BATCH", call, repeat, "serial", "parallel")
        print(
            f"| {batch} | {times['serial'] * 1e3:.3f} ms | {times['parallel'] * 1e3:.3f} ms | "
            f"{times['parallel'] / times['serial']:.2f} |",
            flush=True,
        )
    print(
        f"\nMatrix kernels, N = 100 (parallel from B·H = "
        f"{load(Model(steps=100, hidden=16), 'loop', backend='numba')._PARALLEL_ENTRIES}):"
    )
    print("| H | B | serial | parallel | parallel / serial |\n|---:|---:|---:|---:|---:|")
    for hidden, batch in ((16, 256), (16, 1024), (16, 4096), (128, 64), (128, 256), (128, 4096)):
        module = load(Model(steps=100, activation="tanh", hidden=hidden), "loop", backend="numba")
        x = rng.normal(size=(batch, 100, 3))
        y = rng.integers(0, 2, size=batch).astype(float)
        weights = (
            rng.normal(size=(hidden, 3)),
            rng.normal(size=(hidden, hidden)) / np.sqrt(hidden),
            rng.normal(size=hidden),
        )
        x_t, y_c, w_i, w_h, w_o, b_h, b_o = module._compiled_arguments(x, y, *weights, None, None)

        times = interleaved(
            {
                kind: partial(_matrix_kernels, module, kind, batch, x_t, y_c, w_i, w_h, w_o, b_h, b_o)
                for kind in ("serial", "parallel")
            },
            rounds=repeat,
        )
        print(
            f"| {hidden} | {batch} | {times['serial'] * 1e3:.3f} ms | {times['parallel'] * 1e3:.3f} ms | "
            f"{times['parallel'] / times['serial']:.2f} |",
            flush=True,
        )


def _forced(module, threshold: str, value: int, call):
    """``call`` with the module's threshold ``threshold`` set to ``value`` (0: always above it)."""

    def run():
        setattr(module, threshold, value)
        return call()

    return run


def _either_side(module, threshold: str, call, repeat: int, below: str, above: str) -> dict:
    """``call`` timed (interleaved) with the module's ``threshold`` out of reach (name ``below``) and
    at 0 (name ``above``), so the same call takes either path; the threshold is restored after."""
    saved = getattr(module, threshold)
    try:
        return interleaved(
            {below: _forced(module, threshold, 1 << 62, call), above: _forced(module, threshold, 0, call)},
            rounds=repeat,
        )
    finally:
        setattr(module, threshold, saved)


def path_rows(repeat) -> None:
    """Compiled against vectorised path per call size: the thresholds of the generated modules."""
    rng = np.random.default_rng(2)
    module = load(Model(steps=100, activation="tanh"), "loop", backend="numba")
    print(f"\nScalar model, N = 100 (the wide path from B = {module._VECTORISED_BATCH}):")
    print("| B | compiled | wide path | wide / compiled |\n|---:|---:|---:|---:|")
    for batch in (16, 64, 128, 256, 1000, 10_000):
        x = np.eye(3)[rng.integers(0, 3, size=(batch, 100))]
        y = rng.integers(0, 2, size=batch).astype(float)
        call = partial(module.loss_and_grad, x, y, rng.normal(size=3) * 0.5, 0.9, 1.5)
        times = _either_side(module, "_VECTORISED_BATCH", call, repeat, "compiled", "vectorised")
        print(
            f"| {batch} | {times['compiled'] * 1e3:.3f} ms | {times['vectorised'] * 1e3:.3f} ms | "
            f"{times['vectorised'] / times['compiled']:.2f} |",
            flush=True,
        )
    print("\nMatrix model, N = 100 (the NumPy module's functions from B·H = 256):")
    print("| H | B | B·H | compiled | vectorised | vectorised / compiled |\n|---:|---:|---:|---:|---:|---:|")
    for hidden, batch in (
        (16, 1),
        (16, 4),
        (16, 8),
        (16, 12),
        (16, 16),
        (16, 64),
        (128, 1),
        (128, 2),
        (128, 8),
    ):
        module = load(Model(steps=100, activation="tanh", hidden=hidden), "loop", backend="numba")
        x = rng.normal(size=(batch, 100, 3))
        y = rng.integers(0, 2, size=batch).astype(float)
        weights = (
            rng.normal(size=(hidden, 3)),
            rng.normal(size=(hidden, hidden)) / np.sqrt(hidden),
            rng.normal(size=hidden),
        )
        call = partial(module.loss_and_grad, x, y, *weights)
        times = _either_side(module, "_VECTORISED_ENTRIES", call, repeat, "compiled", "vectorised")
        print(
            f"| {hidden} | {batch} | {hidden * batch} | {times['compiled'] * 1e3:.3f} ms | "
            f"{times['vectorised'] * 1e3:.3f} ms | {times['vectorised'] / times['compiled']:.2f} |",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, small batches only")
    parser.add_argument("--only", choices=("scalar", "hidden", "compile", "parallel", "paths"), default=None)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per row (default 7)")
    args = parser.parse_args(argv)
    repeat = args.rounds or (3 if args.quick else 7)
    import numba

    extra = [(name, factory()) for name, factory in optional_rows()]
    threads = ""
    if any(name == "torch" for name, _ in extra):
        import torch

        threads = f", PyTorch {torch.__version__} with {torch.get_num_threads()} threads"
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Numba {numba.__version__} with {numba.get_num_threads()} threads, NumPy {np.__version__}{threads}\n"
    )
    if not extra:
        print("(JAX and PyTorch are not installed: no columns for them)\n")
    if args.only in (None, "scalar"):
        scalar_rows((1, 100) if args.quick else (1, 100, 10_000), repeat, extra)
        print()
    if args.only in (None, "hidden"):
        hidden_rows((1, 64) if args.quick else (1, 64, 4096), repeat)
        print()
    if args.only in (None, "compile"):
        compile_times()
    if args.only in (None, "parallel"):
        parallel_rows(repeat)
    if args.only in (None, "paths"):
        path_rows(repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
