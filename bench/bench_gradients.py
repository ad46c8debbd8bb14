"""Generated loss_and_grad against a hand-written NumPy BPTT, measured in one run.

    python3 bench/bench_gradients.py [--quick] [--cpu-time]

Prints, for B sequences of N steps: the time of the hand loop, of the generated loss_and_grad in
each mode (unrolled only where N is within its limit) and the ratio generated / hand, plus the
ratio loss_and_grad / forward of the generated module. Times are the best of several repeats
(timeit). JAX and PyTorch rows appear only when those packages are importable.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from functools import partial
from pathlib import Path

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


def best(function, *args, number=None, repeat=5):
    timer = timeit.Timer(lambda: function(*args))
    if number is None:
        number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def optional_rows():
    """(name, loss_and_grad factory) for the frameworks that are installed."""
    rows = []
    try:
        import jax  # noqa: F401
    except ImportError:
        pass
    else:
        rows.append(("jax", _jax_loss_and_grad))
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        rows.append(("torch", _torch_loss_and_grad))
    return rows


def _jax_loss_and_grad():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def loss(w_i, w_h, w_o, x, y):
        projection = jnp.einsum("bnd,d->nb", x, w_i)

        def step(o, p):
            o = jnp.tanh(p + w_h * o)
            return o, None

        o_n, _ = jax.lax.scan(step, jnp.zeros(x.shape[0]), projection)
        z = w_o * o_n
        return jnp.mean(jnp.logaddexp(0, z) - y * z)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

    def run(x, y, w_i, w_h, w_o):
        value, grads = value_and_grad(w_i, w_h, w_o, x, y)
        return jax.block_until_ready((value, grads))

    return run


def _torch_loss_and_grad():
    import torch

    def run(x, y, w_i, w_h, w_o):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
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

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, B ≤ 100 only")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of the wall clock (for a busy shared machine; "
        "run with OPENBLAS_NUM_THREADS=1, since the CPU time of every thread is summed)",
    )
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else timeit.default_timer
    batches = (1, 100) if args.quick else (1, 100, 10_000)
    repeat = 3 if args.quick else 5
    rng = np.random.default_rng(0)
    extra = [(name, factory()) for name, factory in optional_rows()]
    header = f"{'B':>6} {'N':>5} {'hand':>10}  {'mode':<9}{'generated':>10} {'gen/hand':>9} {'grad/fwd':>9}"
    print(header)
    print("-" * len(header))
    for steps in (100, 1000):
        modes = ["unrolled", "loop"] if steps <= UNROLLED_LIMIT else ["loop"]
        modules = {mode: load(Model(steps=steps, activation="tanh"), mode) for mode in modes}
        for batch in batches:
            x = np.eye(3)[rng.integers(0, 3, size=(batch, steps))]
            y = rng.integers(0, 2, size=batch).astype(float)
            w_i, w_h, w_o = rng.normal(size=3) * 0.5, 0.9, 1.5
            reference = hand_loss_and_grad(x, y, w_i, w_h, w_o)
            candidates = {"hand": partial(hand_loss_and_grad, x, y, w_i, w_h, w_o)}
            for mode, module in modules.items():
                result = module.loss_and_grad(x, y, w_i, w_h, w_o)
                assert np.allclose(result[1], reference[1]) and np.isclose(result[2], reference[2])
                candidates[mode] = partial(module.loss_and_grad, x, y, w_i, w_h, w_o)
                candidates[f"{mode} forward"] = partial(module.forward, x, w_i, w_h, w_o)
            for name, run in extra:
                candidates[name] = partial(run, x, y, w_i, w_h, w_o)
            times = interleaved(candidates, rounds=repeat, clock=clock)
            hand = times["hand"]
            for mode in modules:
                generated, forward = times[mode], times[f"{mode} forward"]
                print(
                    f"{batch:>6} {steps:>5} {hand * 1e3:>8.3f}ms  {mode:<9}{generated * 1e3:>8.3f}ms "
                    f"{generated / hand:>8.2f}x {generated / forward:>8.2f}x"
                )
            for name, _ in extra:
                timed = times[name]
                print(
                    f"{batch:>6} {steps:>5} {hand * 1e3:>8.3f}ms  {name:<9}{timed * 1e3:>8.3f}ms "
                    f"{timed / hand:>8.2f}x {'':>9}"
                )
        if steps > UNROLLED_LIMIT:
            print(f"{'':>13} (unrolled refused above n = {UNROLLED_LIMIT}: loop only)")
    if not extra:
        print("(JAX and PyTorch are not installed: no rows for them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
