"""Generated loss_and_grad against hand-written NumPy BPTTs, JAX and PyTorch, measured in one run.

    python3 bench/bench_gradients.py [--quick] [--threads K] [--cpu-time]

Prints, for B sequences of N steps: the time of the strongest hand loop (the faster of two: the
min-char-rnn style, and time-major contiguous rows with out= and no temporaries), of the generated
loss_and_grad in each mode (unrolled only where N is within its limit) and the ratio generated /
hand, plus the ratio loss_and_grad / forward of the generated module; then JAX (jit of
value_and_grad over lax.scan, float64, inputs already JAX arrays) and PyTorch autograd, as ratios to
the same hand loop. A framework that is not installed is printed as a gap, not left out. Times are
the best of several interleaved rounds (bench/_timing.py). ``--threads K`` gives PyTorch, XLA and
BLAS K threads (default: their own; with --cpu-time the CPU time of every thread counts, so use 1).
"""

from __future__ import annotations

import argparse
import os
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

from symbolic.codegen import UNROLLED_LIMIT, load
from symbolic.model import Model


def hand_loss_and_grad(x, y, w_i, w_h, w_o):
    """A careful hand BPTT in the min-char-rnn style, for o_t = tanh(w_i·x_t + w_h o_(t−1)).

    Input projections hoisted out of the loop; deltas propagated backwards step by step.
    """
    batch, steps, _ = x.shape
    projection = x @ w_i  # (B, N)
    hs = np.zeros((steps + 1, batch))  # hs[t] = o_t, hs[0] = o_0 = 0
    for t in range(steps):
        hs[t + 1] = np.tanh(projection[:, t] + w_h * hs[t])
    z = w_o * hs[steps]
    y_hat = 1 / (1 + np.exp(-z))
    loss = np.mean(np.logaddexp(0, z) - y * z)
    dz = (y_hat - y) / batch
    dw_o = np.sum(dz * hs[steps])
    dh = dz * w_o
    da = np.empty((steps, batch))
    for t in range(steps - 1, -1, -1):
        da[t] = dh * (1 - hs[t + 1] ** 2)
        dh = da[t] * w_h
    dw_h = np.sum(da * hs[:-1])
    dw_i = np.einsum("tb,btd->d", da, x)
    return loss, dw_i, dw_h, dw_o


def hand_time_major(x, y, w_i, w_h, w_o):
    """A hand BPTT keeping time on the first axis: every step reads and writes contiguous rows of
    the (n + 1, B) states, in place (out=), with one scratch row and no temporaries in the loops."""
    batch, steps, size = x.shape
    o = np.empty((steps + 1, batch))
    o[0] = 0.0
    o[1:] = (x.reshape(-1, size) @ w_i).reshape(batch, steps).T  # w_i·x_t, time-major
    scratch = np.empty(batch)
    for t in range(1, steps + 1):
        row = o[t]
        np.multiply(o[t - 1], w_h, out=scratch)
        row += scratch
        np.tanh(row, out=row)
    o_n = o[steps]
    z = w_o * o_n
    loss = np.mean(np.logaddexp(0, z) - y * z)
    dz = (1 / (1 + np.exp(-z)) - y) / batch
    dw_o = dz @ o_n
    delta = dz * w_o
    gates = np.empty((steps, batch))
    for t in range(steps, 0, -1):
        gate = gates[t - 1]
        np.multiply(o[t], o[t], out=gate)
        np.subtract(1.0, gate, out=gate)
        gate *= delta
        np.multiply(gate, w_h, out=delta)
    dw_h = np.vdot(gates, o[:-1])
    dw_i = gates.T.ravel() @ x.reshape(-1, size)
    return loss, dw_i, dw_h, dw_o


#: The hand loops; each row's baseline is the faster of them.
HAND = {"min-char-rnn": hand_loss_and_grad, "time-major": hand_time_major}


def frameworks(factories: dict) -> dict:
    """name → (prepare, run) for each framework of ``factories`` (name → factory) that is installed,
    else the reason it is missing (a string, for the gap in the table).

    ``prepare(x, y, w_i, w_h, w_o)`` converts the NumPy arguments once, outside the timing (JAX:
    device arrays, and the jit compiled by a first call); ``run(*prepared)`` is the timed call."""
    found = {}
    for name, factory in factories.items():
        try:
            __import__(name)
        except ImportError as error:
            found[name] = f"{name} not installed ({error})"
        else:
            found[name] = factory()
    return found


def _jax():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def loss(w_i, w_h, w_o, x, y):
        projection = jnp.einsum("bnd,d->nb", x, w_i)  # time-major: scan runs over the first axis

        def step(o, p):
            return jnp.tanh(p + w_h * o), None

        o_n, _ = jax.lax.scan(step, jnp.zeros(x.shape[0], x.dtype), projection)
        z = w_o * o_n
        return jnp.mean(jnp.logaddexp(0, z) - y * z)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

    def prepare(x, y, w_i, w_h, w_o):
        arguments = tuple(jnp.asarray(np.asarray(v, dtype=np.float64)) for v in (w_i, w_h, w_o, x, y))
        jax.block_until_ready(value_and_grad(*arguments))  # compiled for these shapes
        return arguments

    def run(*arguments):
        return jax.block_until_ready(value_and_grad(*arguments))

    return prepare, run


def _torch_loss_and_grad():
    import torch

    def run(x, y, w_i, w_h, w_o):
        w_i = torch.tensor(w_i, requires_grad=True)
        w_h = torch.tensor(w_h, requires_grad=True, dtype=torch.float64)
        w_o = torch.tensor(w_o, requires_grad=True, dtype=torch.float64)
        projection = (x @ w_i).T
        o = torch.zeros(x.shape[0], dtype=torch.float64)
        for p in projection:
            o = torch.tanh(p + w_h * o)
        z = w_o * o
        loss = torch.mean(torch.nn.functional.softplus(z) - y * z)
        loss.backward()
        return loss.item(), w_i.grad, w_h.grad, w_o.grad

    def prepare(x, y, w_i, w_h, w_o):
        return torch.as_tensor(x), torch.as_tensor(y), w_i, w_h, w_o

    return prepare, run


def set_threads(threads: int | None) -> None:
    """XLA's CPU threads (read when JAX first loads, so call this before ``frameworks``)."""
    if threads:
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen={str(threads > 1).lower()} "
            f"intra_op_parallelism_threads={threads}"
        ).strip()


#: The scalar model in the frameworks (bench/bench_hidden.py has hidden size H).
SCALAR_FRAMEWORKS = {"jax": _jax, "torch": _torch_loss_and_grad}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, B ≤ 100 only")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of the wall clock (for a busy shared machine; "
        "run with OPENBLAS_NUM_THREADS=1, since the CPU time of every thread is summed)",
    )
    parser.add_argument("--threads", type=int, default=None, help="threads for PyTorch and XLA")
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else timeit.default_timer
    batches = (1, 100) if args.quick else (1, 100, 10_000)
    repeat = 3 if args.quick else 5
    rng = np.random.default_rng(0)
    set_threads(args.threads)
    extra = frameworks(SCALAR_FRAMEWORKS)
    if args.threads and not isinstance(extra["torch"], str):
        import torch

        torch.set_num_threads(args.threads)
    for name, missing in extra.items():
        if isinstance(missing, str):
            print(f"({missing}: its rows are gaps)")
    header = f"{'B':>6} {'N':>5} {'hand':>10}  {'mode':<9}{'time':>10} {'/ hand':>9} {'grad/fwd':>9}"
    print(header)
    print("-" * len(header))
    for steps in (100, 1000):
        modes = ["unrolled", "loop"] if steps <= UNROLLED_LIMIT else ["loop"]
        modules = {mode: load(Model(steps=steps, activation="tanh"), mode) for mode in modes}
        for batch in batches:
            x = np.eye(3)[rng.integers(0, 3, size=(batch, steps))]
            y = rng.integers(0, 2, size=batch).astype(float)
            w_i, w_h, w_o = rng.normal(size=3) * 0.5, 0.9, 1.5
            arguments = (x, y, w_i, w_h, w_o)
            reference = hand_loss_and_grad(*arguments)
            candidates = {}
            for name, hand in HAND.items():
                result = hand(*arguments)
                assert np.allclose(result[1], reference[1]) and np.isclose(result[2], reference[2])
                candidates[name] = partial(hand, *arguments)
            for mode, module in modules.items():
                result = module.loss_and_grad(*arguments)
                assert np.allclose(result[1], reference[1]) and np.isclose(result[2], reference[2])
                candidates[mode] = partial(module.loss_and_grad, *arguments)
                candidates[f"{mode} forward"] = partial(module.forward, x, w_i, w_h, w_o)
            for name, framework in extra.items():
                if not isinstance(framework, str):
                    prepare, run = framework
                    candidates[name] = partial(run, *prepare(*arguments))
            times = interleaved(candidates, rounds=repeat, clock=clock)
            fastest = min(HAND, key=times.get)
            hand = times[fastest]
            start = f"{batch:>6} {steps:>5} {hand * 1e3:>8.3f}ms"
            for mode in modules:
                generated, forward = times[mode], times[f"{mode} forward"]
                print(
                    f"{start}  {mode:<9}{generated * 1e3:>8.3f}ms {generated / hand:>8.2f}x "
                    f"{generated / forward:>8.2f}x"
                )
            for name in extra:
                if name in times:
                    timed = times[name]
                    print(f"{start}  {name:<9}{timed * 1e3:>8.3f}ms {timed / hand:>8.2f}x {'':>9}")
                else:
                    print(f"{start}  {name:<9}{'—':>10} {'—':>9} {'':>9}")
            print(f"{'':>13} hand: {fastest} ({', '.join(f'{n} {times[n] * 1e3:.3f} ms' for n in HAND)})")
        if steps > UNROLLED_LIMIT:
            print(f"{'':>13} (unrolled refused above n = {UNROLLED_LIMIT}: loop only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
