"""Issue 5's rows: generated matrix loss_and_grad (hidden size H) against a hand-written NumPy BPTT
with matmuls, JAX and PyTorch's torch.nn.RNN autograd, measured in one run.

    python3 bench/bench_hidden.py [--quick] [--threads K] [--cpu-time]

Rows: H in {16, 128}, n = 100, B in {1, 64, 4096}, D = 3, tanh, no biases. Times are the best of
several interleaved rounds (bench/_timing.py); ratios are candidate / hand. JAX: jit of
value_and_grad over lax.scan, float64, inputs already JAX arrays. A framework that is not installed
is printed as a gap. ``--threads K`` gives PyTorch, XLA and BLAS K threads (default: their own).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved

from symbolic.codegen import load
from symbolic.model import Model

STEPS = 100
INPUTS = 3


def hand_loss_and_grad(x, y, w_i, w_h, w_o):
    """A careful hand BPTT with matmuls (min-char-rnn style, batched), tanh, no biases.

    Input projections hoisted out of the loop, time-major states; backward step by step, the weight
    gradients accumulated per step.
    """
    batch, steps, _ = x.shape
    hidden = w_h.shape[0]
    xs = x.transpose(1, 0, 2)  # (n, B, D)
    projection = xs @ w_i.T
    hs = np.zeros((steps + 1, batch, hidden))
    for t in range(steps):
        hs[t + 1] = np.tanh(projection[t] + hs[t] @ w_h.T)
    z = hs[steps] @ w_o
    loss = np.mean(np.logaddexp(0, z) - y * z)
    dz = (1 / (1 + np.exp(-z)) - y) / batch
    dw_o = dz @ hs[steps]
    dh = dz[:, np.newaxis] * w_o
    dw_h = np.zeros_like(w_h)
    dw_i = np.zeros_like(w_i)
    for t in range(steps, 0, -1):
        da = dh * (1 - hs[t] ** 2)
        dw_h += da.T @ hs[t - 1]
        dw_i += da.T @ xs[t - 1]
        dh = da @ w_h
    return loss, dw_i, dw_h, dw_o


def torch_loss_and_grad():
    import torch

    def run(x, y, w_i, w_h, w_o):
        hidden, inputs = w_i.shape
        rnn = torch.nn.RNN(inputs, hidden, nonlinearity="tanh", bias=False, batch_first=True).double()
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(torch.from_numpy(w_i))
            rnn.weight_hh_l0.copy_(torch.from_numpy(w_h))
        w_o_t = torch.tensor(w_o, requires_grad=True)
        states, _ = rnn(torch.from_numpy(x))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            states[:, -1] @ w_o_t, torch.from_numpy(y)
        )
        loss.backward()
        return loss.item(), rnn.weight_ih_l0.grad, rnn.weight_hh_l0.grad, w_o_t.grad

    return run


def torch_framework():
    """(prepare, run) for bench_gradients.frameworks: torch.nn.RNN on the NumPy arguments."""
    run = torch_loss_and_grad()
    return (lambda *arguments: arguments), run


def jax_loss_and_grad():
    """(prepare, run): jax.jit(jax.value_and_grad(loss)) over lax.scan, float64, for hidden size H."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def loss(w_i, w_h, w_o, x, y):
        projection = jnp.einsum("bnd,hd->nbh", x, w_i)  # time-major: scan runs over the first axis

        def step(o, p):
            return jnp.tanh(p + o @ w_h.T), None

        o_n, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], w_h.shape[0]), x.dtype), projection)
        z = o_n @ w_o
        return jnp.mean(jnp.logaddexp(0, z) - y * z)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

    def prepare(x, y, w_i, w_h, w_o):
        arguments = tuple(jnp.asarray(np.asarray(v, dtype=np.float64)) for v in (w_i, w_h, w_o, x, y))
        jax.block_until_ready(value_and_grad(*arguments))  # compiled for these shapes
        return arguments

    def run(*arguments):
        return jax.block_until_ready(value_and_grad(*arguments))

    return prepare, run


#: Hidden size H in the frameworks (bench_gradients.frameworks).
HIDDEN_FRAMEWORKS = {"jax": jax_loss_and_grad, "torch": torch_framework}


def main(argv=None) -> int:
    from bench_gradients import frameworks, set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, B <= 64 only")
    parser.add_argument("--threads", type=int, default=None, help="threads for PyTorch and XLA")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of the wall clock (for a busy shared machine; "
        "run with OPENBLAS_NUM_THREADS=1, since the CPU time of every thread is summed)",
    )
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else timeit.default_timer
    batches = (1, 64) if args.quick else (1, 64, 4096)
    repeat = 3 if args.quick else 5
    set_threads(args.threads)  # XLA reads its flags when JAX first loads
    extra = frameworks(HIDDEN_FRAMEWORKS)
    notes = [found for found in extra.values() if isinstance(found, str)]
    if not isinstance(extra["torch"], str):
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        notes.append(f"torch threads: {torch.get_num_threads()}")
    print(f"n = {STEPS}, D = {INPUTS}, tanh, no biases; " + "; ".join(notes))
    columns = ["unrolled", "loop", *extra]
    header = f"{'H':>4} {'B':>5} {'hand':>10}  " + "  ".join(f"{name:>10} {'ratio':>6}" for name in columns)
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for hidden in (16, 128):
        modules = {
            mode: load(Model(steps=STEPS, activation="tanh", hidden=hidden), mode)
            for mode in ("unrolled", "loop")
        }
        for batch in batches:
            x = rng.normal(size=(batch, STEPS, INPUTS))
            y = rng.integers(0, 2, size=batch).astype(float)
            w_i = rng.normal(size=(hidden, INPUTS)) * 0.5
            w_h = rng.normal(size=(hidden, hidden)) * 0.9 / np.sqrt(hidden)
            w_o = rng.normal(size=hidden)
            arguments = (x, y, w_i, w_h, w_o)
            reference = hand_loss_and_grad(*arguments)
            candidates = {"hand": partial(hand_loss_and_grad, *arguments)}
            for mode, module in modules.items():
                result = module.loss_and_grad(*arguments)
                for got, want in zip(result, reference):
                    assert np.allclose(got, want, rtol=1e-9, atol=1e-14), mode
                candidates[mode] = partial(module.loss_and_grad, *arguments)
            for name, framework in extra.items():
                if isinstance(framework, str):
                    continue
                prepare, run = framework
                prepared = prepare(*arguments)
                result = run(*prepared)
                # JAX: (loss, (dL/dw_i, dL/dw_h, dL/dw_o)); torch: (loss, dL/dw_i, dL/dw_h, dL/dw_o)
                loss, dw_h = (result[0], result[1][1]) if name == "jax" else (result[0], result[2])
                assert np.isclose(float(loss), reference[0], rtol=1e-9)
                assert np.allclose(np.asarray(dw_h), reference[2], rtol=1e-8, atol=1e-14)
                candidates[name] = partial(run, *prepared)
            times = interleaved(candidates, rounds=repeat, clock=clock)
            hand = times.pop("hand")
            cells = [f"{hidden:>4} {batch:>5} {hand * 1e3:>8.3f}ms"]
            for name in columns:
                timed = times.get(name)
                cells.append(
                    f"{timed * 1e3:>8.3f}ms {timed / hand:>5.2f}x" if timed else f"{'—':>10} {'—':>6}"
                )
            print("  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
