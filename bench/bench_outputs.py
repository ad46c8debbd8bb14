"""Many-to-many rows: a softmax readout and cross-entropy at every step (``--readout every --loss softmax``).

    python3 bench/bench_outputs.py [--quick] [--threads K] [--cpu-time]

float64. Rows: the plain RNN, the LSTM and the GRU at H = 32, n = 50, K = 10 classes, D = 10, B in
{1, 64, 1024}, normal inputs. Each row times loss_and_grad of the generated NumPy and Numba modules
(loop mode), PyTorch autograd (torch.nn.RNN / LSTM / GRU, a Linear readout at every step and
CrossEntropyLoss(reduction="sum") / B) and JAX (``jax.jit(jax.value_and_grad(loss))``, the cell's
equations over ``lax.scan``, one readout product over every step's state, the same reduction; compiled
before the timing, every call ended by ``block_until_ready``), and prints each column as a ratio to the
Numba module measured in the same run (> 1: slower than Numba). Before the timing, torch and JAX get
the module's weights and their loss and gradients are compared with the NumPy module's (loss within
1e-10 relative, gradients 1e-9), so every column computes the same thing. ``--threads K`` gives BLAS,
Numba, PyTorch and XLA K threads (one thread: ``--threads 1``); ``--cpu-time`` times this process's CPU
time instead of the wall clock (on a busy shared machine; with one thread, since every thread's time
counts). A framework that is not installed is a gap in its column.
"""

from __future__ import annotations

import argparse
import sys
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
from symbolic.outputs import Outputs

HIDDEN, STEPS, CLASSES, INPUTS = 32, 50, 10, 10
#: cell → (torch class, gates in torch's stacking order, {torch bias: the modules' per-gate names, None
#: for a zero block}, the readout's name); the layouts of tests/test_torch_cells.py.
TORCH = {
    "rnn": ("RNN", [""], {}, "w_o"),
    "lstm": ("LSTM", "ifgo", {"bias_ih_l0": ["b_i", "b_f", "b_g", "b_o"], "bias_hh_l0": [None] * 4}, "w_y"),
    "gru": ("GRU", "rzn", {"bias_ih_l0": ["b_r", "b_z", "b_in"], "bias_hh_l0": [None, None, "b_hn"]}, "w_y"),
}


def _torch_name(family: str, gate: str) -> str:
    """The module's name of one gate's block: W_i / U_i for the gated cells, w_i / w_h for the rnn."""
    return f"{family}_{gate}" if gate else {"W": "w_i", "U": "w_h"}[family]


def torch_column(cell: str, params: dict, x, y):
    """(step, result): PyTorch autograd with the module's weights; ``step()`` one loss and gradient
    (the timed call), ``result()`` (loss, grads keyed like the module's) after a step, or None."""
    try:
        import torch
    except ImportError:
        return None
    kind, gates, biases, readout_name = TORCH[cell]
    layer = getattr(torch.nn, kind)(INPUTS, HIDDEN, batch_first=True, bias=bool(biases)).double()
    readout = torch.nn.Linear(HIDDEN, CLASSES, bias=False).double()
    with torch.no_grad():
        for family, weight in (("W", layer.weight_ih_l0), ("U", layer.weight_hh_l0)):
            weight.copy_(torch.from_numpy(np.concatenate([params[_torch_name(family, g)] for g in gates])))
        for torch_name, names in biases.items():
            blocks = [params[name] if name else np.zeros(HIDDEN) for name in names]
            getattr(layer, torch_name).copy_(torch.from_numpy(np.concatenate(blocks)))
        readout.weight.copy_(torch.from_numpy(params[readout_name]))
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).reshape(-1)
    loss_function = torch.nn.CrossEntropyLoss(reduction="sum")
    last = []

    def step():
        layer.zero_grad(set_to_none=True)
        readout.zero_grad(set_to_none=True)
        states, _ = layer(xs)
        loss = loss_function(readout(states).reshape(-1, CLASSES), ys) / x.shape[0]
        loss.backward()
        last[:] = [loss]

    def result():
        grads = {readout_name: readout.weight.grad.numpy()}
        for family, weight in (("W", layer.weight_ih_l0), ("U", layer.weight_hh_l0)):
            blocks = np.split(weight.grad.numpy(), len(gates))
            grads |= {_torch_name(family, g): block for g, block in zip(gates, blocks)}
        for torch_name, names in biases.items():
            blocks = np.split(getattr(layer, torch_name).grad.numpy(), len(gates))
            grads |= {name: block for name, block in zip(names, blocks) if name}
        return last[0].item(), grads

    return step, result


def jax_column(cell: str, params: dict, x, y):
    """(step, result): ``jax.jit(jax.value_and_grad(loss))``, float64, compiled here for these shapes;
    ``step()`` one call ended by block_until_ready, ``result()`` (loss, grads) of a fresh call."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    step_function, count = jax_cells.step(cell)
    readout_name = TORCH[cell][3]

    def loss(p, x, y):
        def scan_step(carry, x_t):
            carry = step_function(p, carry, x_t)
            return carry, carry[0]

        zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)
        _, hidden = jax.lax.scan(scan_step, (zeros,) * count, jnp.swapaxes(x, 0, 1))  # (n, B, H)
        logits = hidden @ p[readout_name].T  # every step's readout in one product, (n, B, K)
        picked = jnp.take_along_axis(logits, jnp.swapaxes(y, 0, 1)[..., None], axis=-1)[..., 0]
        return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - picked) / x.shape[0]

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    arguments = ({k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(x), jnp.asarray(y))
    jax.block_until_ready(value_and_grad(*arguments))  # compiled outside the timing

    def step():
        return jax.block_until_ready(value_and_grad(*arguments))

    def result():
        value, grads = step()
        return float(value), {k: np.asarray(v) for k, v in grads.items()}

    return step, result


def same_as(name: str, result, want_loss: float, want: dict) -> None:
    """Stop unless a column's loss and gradients are the NumPy module's (1e-10 and 1e-9 relative)."""
    got_loss, got = result
    loss_error = abs(got_loss - want_loss) / abs(want_loss)
    grad_error = max(float(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k]))) for k in want)
    if loss_error > 1e-10 or grad_error > 1e-9:
        raise SystemExit(f"{name} computes another loss: relative errors {loss_error:.1e} (loss), {grad_error:.1e}")


def set_threads(threads: str | None) -> None:
    """Numba's, PyTorch's and XLA's threads (XLA reads its flags when JAX first loads: call first)."""
    if not threads:
        return
    from bench_gradients import set_threads as set_xla_threads

    set_xla_threads(int(threads))
    import numba

    numba.set_num_threads(int(threads))
    try:
        import torch

        torch.set_num_threads(int(threads))
    except ImportError:
        pass


def row(cell: str, modules: tuple, params: dict, batch: int, rng, rounds: int, clock) -> dict:
    """name → best seconds per loss_and_grad for one batch width, every column checked first."""
    numpy_module, numba_module = modules
    x = rng.normal(size=(batch, STEPS, INPUTS))
    y = rng.integers(0, CLASSES, size=(batch, STEPS))
    want_loss, want = numpy_module.loss_and_grad(x, y, params)
    same_as("the Numba module", numba_module.loss_and_grad(x, y, params), want_loss, want)  # and compiled
    candidates = {"numba": partial(numba_module.loss_and_grad, x, y, params),
                  "numpy": partial(numpy_module.loss_and_grad, x, y, params)}
    for name, column in (("torch", torch_column), ("jax", jax_column)):
        made = column(cell, params, x, y)
        if made is not None:
            step, result = made
            step()
            same_as(name, result(), want_loss, want)
            candidates[name] = step
    return interleaved(candidates, rounds=rounds, clock=clock)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B in {1, 64} only, fewer rounds")
    parser.add_argument("--threads", default=None, metavar="K")
    parser.add_argument("--cpu-time", action="store_true", help="time process CPU instead of the wall clock")
    args = parser.parse_args()
    set_threads(args.threads)
    outputs = Outputs("every", "softmax", CLASSES)
    batches = (1, 64) if args.quick else (1, 64, 1024)
    print(f"loss_and_grad, softmax at every step: H = {HIDDEN}, n = {STEPS}, K = {CLASSES}, D = {INPUTS}; "
          f"ratio to the Numba module (> 1: slower); {'CPU' if args.cpu_time else 'wall'} time")
    print(f"{'cell':6} {'B':>6} {'Numba s':>10} {'NumPy':>8} {'PyTorch':>8} {'JAX':>8}")
    for cell in TORCH:
        model = Model(cell=cell, hidden=HIDDEN, inputs=INPUTS, steps=STEPS, outputs=outputs)
        modules = load(model, "loop"), load(model, "loop", backend="numba")
        params = modules[0].init_params(0)
        rng = np.random.default_rng(0)
        for batch in batches:
            clock = time.process_time if args.cpu_time else timeit.default_timer
            best = row(cell, modules, params, batch, rng, 3 if args.quick else 7, clock)
            ratio = [f"{best[name] / best['numba']:8.2f}" if name in best else f"{'-':>8}"
                     for name in ("numpy", "torch", "jax")]
            print(f"{cell:6} {batch:6d} {best['numba']:10.2e} " + " ".join(ratio), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
