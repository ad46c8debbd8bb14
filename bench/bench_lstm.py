"""The gated cells' loss_and_grad: the generic Numba module, the generic NumPy module, PyTorch's
nn.LSTM / nn.GRU autograd and JAX (jit of value_and_grad over lax.scan), float64, measured in one run,
each as a ratio to the Numba module (a framework not installed is a "–" in its column, said above it).

    python3 bench/bench_lstm.py [--quick] [--cells lstm,gru] [--threads K] [--cpu-time] [--only rows|compile|accuracy]

Rows: per cell, H in {16, 128}, n = 100, B in {1, 64, 4096}, D = 3 (``--quick``: B <= 64). The
candidates of a row are timed in interleaved rounds (bench/_timing.py) and each keeps its best round.
Before timing, the three gradients are compared (the Numba module against the NumPy one to 1e-12,
torch and JAX to 1e-9). Then the Numba module's first call in a fresh process with an empty kernel cache and
with a warm one. ``--only accuracy``: the kernels' f for real arguments (``templates/numba/macros.j2``,
real_functions: _tanh_real, _logistic_real, _exp_real) against NumPy's, in ulps over 3·10⁶
arguments, and the complex step through them against NumPy's complex f. ``--threads K`` gives Numba,
PyTorch, XLA and BLAS K threads (default: each library's own; with --cpu-time use 1, since the CPU
time of every thread counts).
"""

from __future__ import annotations

import argparse
import os
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

import _jax_cells as jax_cells
from _timing import interleaved

from symbolic.codegen import load
from symbolic.model import Model

STEPS = 100
INPUTS = 3
#: cell → (torch class name, gates in torch's stacking order, {torch bias: our per-gate names, None
#: for a zero block}); the readout is nn.Linear(H, 1, bias=False) with weight w_yᵀ (tests/test_torch_cells.py).
TORCH = {
    "lstm": ("LSTM", "ifgo", {"bias_ih_l0": ["b_i", "b_f", "b_g", "b_o"], "bias_hh_l0": [None] * 4}),
    "gru": ("GRU", "rzn", {"bias_ih_l0": ["b_r", "b_z", "b_in"], "bias_hh_l0": [None, None, "b_hn"]}),
}


def parameters(module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The module's initialisation (uniform ±1/√H like torch, the cell's own constants) for a seed."""
    return module.init_params(int(rng.integers(2**31)))


def torch_loss_and_grad(cell: str, hidden: int):
    """(set_parameters, run, grads, torch): the torch layer (float64, batch_first) plus w_y on the last
    state and the mean BCE with logits, by autograd; ``grads`` returns (loss, grads) keyed like the
    modules' dict (torch's stacked gradients split by gate)."""
    import torch

    kind, gates, biases = TORCH[cell]
    layer = getattr(torch.nn, kind)(INPUTS, hidden, batch_first=True).double()
    w_y = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)

    def set_parameters(params):
        with torch.no_grad():
            layer.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([params[f"W_{g}"] for g in gates])))
            layer.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([params[f"U_{g}"] for g in gates])))
            for torch_name, names in biases.items():
                blocks = [params[name] if name else np.zeros(hidden) for name in names]
                getattr(layer, torch_name).copy_(torch.from_numpy(np.concatenate(blocks)))
            w_y.copy_(torch.from_numpy(params["w_y"]))

    def run(x, y):
        layer.zero_grad(set_to_none=True)
        w_y.grad = None
        states, _ = layer(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(states[:, -1] @ w_y, y)
        loss.backward()
        return loss

    def grads(loss):
        result = {}
        for family, weight in (("W", layer.weight_ih_l0), ("U", layer.weight_hh_l0)):
            result |= {f"{family}_{g}": b for g, b in zip(gates, np.split(weight.grad.numpy(), len(gates)))}
        for torch_name, names in biases.items():
            blocks = np.split(getattr(layer, torch_name).grad.numpy(), len(gates))
            result |= {name: block for name, block in zip(names, blocks) if name}
        result["w_y"] = w_y.grad.numpy()
        return loss.item(), result

    return set_parameters, run, grads, torch


def jax_loss_and_grad(cell: str):
    """(prepare, run, grads): ``jax.jit(jax.value_and_grad(loss))`` over ``lax.scan``, float64, the
    cell's equations written in JAX with the modules' parameter names (torch's gate conventions);
    ``prepare(params, x, y)`` turns the arguments into JAX arrays (compiling for their shapes),
    ``run(*prepared)`` returns (loss, grads dict) with every call ended by ``block_until_ready``."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    step, states = jax_cells.step(cell)

    def loss(p, x, y):
        zeros = jnp.zeros((x.shape[0], p["w_y"].shape[0]), x.dtype)

        def scan_step(carry, x_t):
            return step(p, carry, x_t), None

        carry, _ = jax.lax.scan(scan_step, (zeros,) * states, jnp.swapaxes(x, 0, 1))
        logit = carry[0] @ p["w_y"]
        return jnp.mean(jnp.logaddexp(0, logit) - y * logit)

    value_and_grad = jax.jit(jax.value_and_grad(loss))

    def prepare(params, x, y):
        arguments = ({k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(x), jnp.asarray(y))
        jax.block_until_ready(value_and_grad(*arguments))  # compiled for these shapes
        return arguments

    def run(*arguments):
        return jax.block_until_ready(value_and_grad(*arguments))

    def grads(result):
        value, gradients = result
        return float(value), {k: np.asarray(v) for k, v in gradients.items()}

    return prepare, run, grads


def relative(got: dict, want: dict) -> float:
    return max(float(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k]))) for k in want)


FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
import numba
from symbolic.codegen import load
from symbolic.model import Model
imported = time.perf_counter()
module = load(Model(cell="{cell}", steps=100, hidden={hidden}), "loop", backend="numba")
loaded = time.perf_counter()
rng = np.random.default_rng(0)
params = module.init_params(0)
module.loss_and_grad(rng.normal(size=(1, 100, 3)), np.array([1.0]), params)
called = time.perf_counter()
print(imported - start, loaded - imported, called - loaded, called - start)
"""


def first_call_seconds(cache_dir: str, cell: str, hidden: int) -> list[float]:
    """(imports, load, first call, total) seconds in a fresh process with the kernel cache in cache_dir."""
    # every bptt cache directory inside the temporary one: ~/.cache/bptt would make a cold row warm
    environment = {
        **os.environ,
        "BPTT_CACHE_DIR": cache_dir,
        "XDG_CACHE_HOME": os.path.join(cache_dir, "xdg"),
        "TMPDIR": os.path.join(cache_dir, "tmp"),
        "PYTHONPATH": str(ROOT),
    }
    os.makedirs(environment["TMPDIR"], exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", FIRST_CALL.format(cell=cell, hidden=hidden)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(v) for v in result.stdout.strip().splitlines()[-1].split()]


def rows(cells: list[str], batches: tuple[int, ...], clock) -> None:
    import numba

    try:
        import torch

        threads = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch, threads = None, "torch not installed: no torch column"
    try:
        import jax

        jax_note = f"JAX {jax.__version__}"
    except ImportError:
        jax, jax_note = None, "JAX not installed: no JAX column (pip install '.[bench]')"
    print(
        f"n = {STEPS}, D = {INPUTS}, float64; Numba {numba.__version__}, {numba.get_num_threads()} threads; {threads}; "
        + jax_note
        + ("; CPU time" if clock is time.process_time else "")
    )
    print("| cell | H | B | Numba | NumPy / Numba | torch / Numba | JAX / Numba |\n|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for cell in cells:
        for hidden in (16, 128):
            model = Model(cell=cell, steps=STEPS, hidden=hidden)
            fast, reference = load(model, "loop", backend="numba"), load(model, "loop")
            if torch is not None:
                set_parameters, run_torch, torch_grads, _ = torch_loss_and_grad(cell, hidden)
            if jax is not None:
                prepare_jax, run_jax, jax_grads = jax_loss_and_grad(cell)
            for batch in batches:
                x = rng.normal(size=(batch, STEPS, INPUTS))
                y = rng.integers(0, 2, size=batch).astype(float)
                params = parameters(fast, rng)
                want_loss, want = reference.loss_and_grad(x, y, params)
                got_loss, got = fast.loss_and_grad(x, y, params)
                assert abs(got_loss - want_loss) <= 1e-12 * want_loss and relative(got, want) < 1e-12
                candidates = {
                    "numba": partial(fast.loss_and_grad, x, y, params),
                    "numpy": partial(reference.loss_and_grad, x, y, params),
                }
                if torch is not None:
                    set_parameters(params)
                    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
                    torch_loss, torch_result = torch_grads(run_torch(x_t, y_t))
                    assert (
                        abs(torch_loss - want_loss) <= 1e-9 * want_loss
                        and relative(torch_result, want) < 1e-9
                    )
                    candidates["torch"] = partial(run_torch, x_t, y_t)
                if jax is not None:
                    prepared = prepare_jax(params, x, y)
                    jax_loss, jax_result = jax_grads(run_jax(*prepared))
                    assert abs(jax_loss - want_loss) <= 1e-9 * want_loss and relative(jax_result, want) < 1e-9
                    candidates["jax"] = partial(run_jax, *prepared)
                del want, got
                times = interleaved(candidates, rounds=3 if batch * hidden >= 2**17 else 7, clock=clock)
                numba_time = times.pop("numba")
                cells_ = [f"{numba_time * 1e3:.3f} ms"] + [
                    f"{times[name] / numba_time:.2f}" if name in times else "–" for name in ("numpy", "torch", "jax")
                ]
                print(f"| {cell} | {hidden} | {batch} | " + " | ".join(cells_) + " |", flush=True)


def compile_times(cells: list[str]) -> None:
    print(
        "\nNumba module, first loss_and_grad in a fresh process (seconds): imports (NumPy, Numba, "
        "bptt with SymPy), load (derivation, source, module), first call (compile, or load the cached kernels)"
    )
    print(
        "| cell | H | kernel cache | imports | load | first call | total |\n|---|---:|---|---:|---:|---:|---:|"
    )
    for cell in cells:
        for hidden in (16, 128):
            with tempfile.TemporaryDirectory() as cache:
                cold = first_call_seconds(cache, cell, hidden)
                warm = min((first_call_seconds(cache, cell, hidden) for _ in range(3)), key=lambda t: t[-1])
            for name, times in (("cold", cold), ("warm", warm)):
                print(
                    f"| {cell} | {hidden} | {name} | " + " | ".join(f"{t:.2f}" for t in times) + " |",
                    flush=True,
                )


ACCURACY_MODULE = """{% import "numba/macros.j2" as m with context %}import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload


{{ m.scalar_helpers(False, False) }}


{{ m.real_functions(True, True, True) }}


@njit
def apply(values, out_tanh, out_logistic, out_exp):
    for i in range(values.shape[0]):
        out_tanh[i] = _tanh(values[i])
        out_logistic[i] = _logistic(values[i])
        out_exp[i] = _exp(values[i])
"""


def accuracy() -> None:
    """The kernels' f against NumPy's: the largest and mean distance in ulps over 3·10⁶ real
    arguments (as tests/test_numba.py measures the scalar module's), and the complex step."""
    import importlib.util

    from symbolic.templating import environment

    source = environment().from_string(ACCURACY_MODULE).render(disk_cache=False)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "real_functions.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("real_functions", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        def ulps(got, want):
            def ordered(a):
                bits = a.view(np.int64)
                return np.where(bits < 0, np.int64(-(2**63)) - bits, bits)

            return np.abs(ordered(got) - ordered(want))

        rng = np.random.default_rng(0)
        size = 10**6
        magnitudes = np.exp(rng.uniform(np.log(1e-300), np.log(800.0), size))
        values = np.concatenate(
            [magnitudes * rng.choice([-1.0, 1.0], size), rng.uniform(-25, 25, size), rng.uniform(-1, 1, size)]
        )
        special = np.array(
            [0.0, -0.0, 5e-324, -5e-324, 0.625, 20.0, -745.2, -746.0, 709.78, 710.0, np.inf, -np.inf]
        )
        values = np.concatenate([values, special, [np.nan]])
        got = {name: np.empty_like(values) for name in ("tanh", "σ", "exp")}
        module.apply(values, got["tanh"], got["σ"], got["exp"])
        with np.errstate(over="ignore"):
            positive = values > 0
            e = np.exp(np.where(positive, -values, values))
            want = {
                "tanh": np.tanh(values),
                "σ": np.where(positive, 1 / (1 + e), e / (1 + e)),
                "exp": np.exp(values),
            }
        finite = np.isfinite(values) & np.isfinite(want["exp"])
        print(
            "| f | max ulp | mean ulp | specials equal (±0, subnormals, ±inf, overflow, NaN) |\n|---|---:|---:|---|"
        )
        for name in got:
            distance = ulps(got[name][finite], want[name][finite])
            tail = slice(-len(special) - 1, None)
            equal = np.array_equal(got[name][tail], want[name][tail], equal_nan=True)
            print(f"| {name} | {distance.max()} | {distance.mean():.2f} | {equal} |")
        steps = values[np.isfinite(values)][::300]
        steps = steps[np.abs(steps) < 700] + 1e-20j * rng.normal(size=steps[np.abs(steps) < 700].size)
        got = {name: np.empty_like(steps) for name in ("tanh", "σ", "exp")}
        module.apply(steps, got["tanh"], got["σ"], got["exp"])
        positive = steps.real > 0
        e = np.exp(np.where(positive, -steps, steps))
        want = {
            "tanh": np.tanh(steps),
            "σ": np.where(positive, 1 / (1 + e), e / (1 + e)),
            "exp": np.exp(steps),
        }
        for name in got:
            error = max(
                float(
                    np.max(
                        np.abs(got[name].real - want[name].real) / np.maximum(np.abs(want[name].real), 1e-300)
                    )
                ),
                float(
                    np.max(
                        np.abs(got[name].imag - want[name].imag) / np.maximum(np.abs(want[name].imag), 1e-300)
                    )
                ),
            )
            print(f"complex step, {name}: largest relative difference from NumPy's, both parts: {error:.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B <= 64 only")
    parser.add_argument("--cells", default="lstm,gru", help="comma-separated: lstm, gru (default both)")
    parser.add_argument("--cpu-time", action="store_true", help="time process CPU instead of the wall clock")
    parser.add_argument("--only", choices=("rows", "compile", "accuracy"), default=None)
    parser.add_argument("--threads", type=int, default=None, help="threads for Numba, PyTorch, XLA and BLAS")
    args = parser.parse_args(argv)
    cells = [cell for cell in args.cells.split(",") if cell]
    unknown = [cell for cell in cells if cell not in TORCH]
    if unknown:
        parser.error(f"unknown cell {', '.join(unknown)}: choose from {', '.join(TORCH)}")
    if args.threads:
        from bench_gradients import set_threads

        set_threads(args.threads)  # XLA reads its flags when JAX first loads
        import numba

        numba.set_num_threads(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    if args.only in (None, "rows"):
        rows(
            cells,
            (1, 64) if args.quick else (1, 64, 4096),
            time.process_time if args.cpu_time else timeit.default_timer,
        )
    if args.only in (None, "compile"):
        compile_times(cells)
    if args.only == "accuracy":
        accuracy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
