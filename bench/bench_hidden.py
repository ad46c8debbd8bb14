"""Issue 5's rows: generated matrix loss_and_grad (hidden size H) against a hand-written NumPy BPTT
with matmuls and PyTorch's torch.nn.RNN autograd, measured in one run.

    python3 bench/bench_hidden.py [--quick] [--threads K] [--cpu-time]

Rows: H in {16, 128}, n = 100, B in {1, 64, 4096}, D = 3, tanh, no biases. Times are the best of
several repeats (timeit); ratios are generated / hand and torch / hand. PyTorch rows appear only when
torch is importable; ``--threads`` sets torch.set_num_threads (default: torch's own default).
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, B <= 64 only")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(K)")
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
    try:
        import torch
    except ImportError:
        torch, run_torch = None, None
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        run_torch = torch_loss_and_grad()
    threads = f"torch threads: {torch.get_num_threads()}" if torch else "torch not installed: no torch rows"
    print(f"n = {STEPS}, D = {INPUTS}, tanh, no biases; {threads}")
    header = (
        f"{'H':>4} {'B':>5} {'hand':>10}  {'unrolled':>10} {'ratio':>6}  {'loop':>10} {'ratio':>6}"
        f"  {'torch':>10} {'ratio':>6}"
    )
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
            reference = hand_loss_and_grad(x, y, w_i, w_h, w_o)
            candidates = {"hand": partial(hand_loss_and_grad, x, y, w_i, w_h, w_o)}
            for mode, module in modules.items():
                result = module.loss_and_grad(x, y, w_i, w_h, w_o)
                for got, want in zip(result, reference):
                    assert np.allclose(got, want, rtol=1e-9, atol=1e-14), mode
                candidates[mode] = partial(module.loss_and_grad, x, y, w_i, w_h, w_o)
            if run_torch is not None:
                result = run_torch(x, y, w_i, w_h, w_o)
                assert np.isclose(result[0], reference[0], rtol=1e-9)
                assert np.allclose(result[2].numpy(), reference[2], rtol=1e-8, atol=1e-14)
                candidates["torch"] = partial(run_torch, x, y, w_i, w_h, w_o)
            times = interleaved(candidates, rounds=repeat, clock=clock)
            hand = times.pop("hand")
            cells = [f"{hidden:>4} {batch:>5} {hand * 1e3:>8.3f}ms"]
            for timed in times.values():
                cells.append(f"{timed * 1e3:>8.3f}ms {timed / hand:>5.2f}x")
            print("  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
