"""Many-to-many rows: a softmax readout and cross-entropy at every step (``--readout every --loss softmax``).

    python3 bench/bench_outputs.py [--quick] [--threads K]

float64. Rows: the plain RNN, the LSTM and the GRU at H = 32, n = 50, K = 10 classes, D = 10, B in
{1, 64, 1024}, normal inputs. Each row times loss_and_grad of the generated NumPy and Numba modules
(loop mode) and PyTorch autograd (torch.nn.RNN / LSTM / GRU, a Linear readout at every step and
CrossEntropyLoss(reduction="sum") / B), and prints each column as a ratio to the Numba module measured
in the same run (> 1: slower than Numba). ``--threads K`` gives BLAS and PyTorch K threads (one thread:
``--threads 1``). A framework that is not installed is a gap in its column. JAX is not timed here yet.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import _threads  # noqa: F401  (before NumPy: BLAS reads its thread count as it loads)
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _timing import interleaved

from symbolic.codegen import load
from symbolic.model import Model
from symbolic.outputs import Outputs

HIDDEN, STEPS, CLASSES, INPUTS = 32, 50, 10, 10
TORCH = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def torch_step(cell: str, x, y, threads: str | None):
    """A zero-argument callable: PyTorch's loss and gradients for the same sizes (its own weights)."""
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(int(threads))
    layer = getattr(torch.nn, TORCH[cell])(INPUTS, HIDDEN, batch_first=True, bias=cell != "rnn").double()
    readout = torch.nn.Linear(HIDDEN, CLASSES, bias=False).double()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).reshape(-1)
    loss_function = torch.nn.CrossEntropyLoss(reduction="sum")

    def step():
        layer.zero_grad()
        readout.zero_grad()
        states, _ = layer(xs)
        loss = loss_function(readout(states).reshape(-1, CLASSES), ys) / x.shape[0]
        loss.backward()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B in {1, 64} only, fewer rounds")
    parser.add_argument("--threads", default=None, metavar="K")
    args = parser.parse_args()
    outputs = Outputs("every", "softmax", CLASSES)
    batches = (1, 64) if args.quick else (1, 64, 1024)
    print(f"loss_and_grad, softmax at every step: H = {HIDDEN}, n = {STEPS}, K = {CLASSES}, D = {INPUTS}; "
          "ratio to the Numba module (> 1: slower)")
    print(f"{'cell':6} {'B':>6} {'Numba s':>10} {'NumPy':>8} {'PyTorch':>8}")
    for cell in TORCH:
        model = Model(cell=cell, hidden=HIDDEN, inputs=INPUTS, steps=STEPS, outputs=outputs)
        numpy_module, numba_module = load(model, "loop"), load(model, "loop", backend="numba")
        params = numpy_module.init_params(0)
        rng = np.random.default_rng(0)
        for batch in batches:
            x = rng.normal(size=(batch, STEPS, INPUTS))
            y = rng.integers(0, CLASSES, size=(batch, STEPS))
            numba_module.loss_and_grad(x, y, params)   # compile outside the timing
            candidates = {"numba": partial(numba_module.loss_and_grad, x, y, params),
                          "numpy": partial(numpy_module.loss_and_grad, x, y, params)}
            step = torch_step(cell, x, y, args.threads)
            if step is not None:
                candidates["torch"] = step
            best = interleaved(candidates, rounds=3 if args.quick else 7)
            ratio = {name: best[name] / best["numba"] for name in best}
            torch_text = f"{ratio['torch']:8.2f}" if "torch" in ratio else f"{'-':>8}"
            print(f"{cell:6} {batch:6d} {best['numba']:10.2e} {ratio['numpy']:8.2f} {torch_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
