"""The NumPy and Numba backends against a hand-written NumPy BPTT (and JAX, PyTorch where installed).

    python3 bench/bench_backends.py [--quick]

Scalar tanh model, float64, one-hot inputs. Each row times loss_and_grad for B sequences of N steps;
every column is a ratio to the Numba backend measured in the same run (> 1: slower than Numba).
Times are the minimum over repeats (the machine may be shared). Then: Numba's first-call time
(import + compile or cache load + first call) in a fresh process with a cold and with a warm cache,
and the serial and parallel drivers side by side, which sets the module's _PARALLEL_BATCH.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_gradients import best, hand_loss_and_grad, optional_rows

from symbolic.codegen import load
from symbolic.model import Model

FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from symbolic.codegen import load
from symbolic.model import Model
module = load(Model(steps=100, activation="tanh"), "loop", backend="numba")
x = np.eye(3)[np.random.default_rng(0).integers(0, 3, size=(4, 100))]
module.loss_and_grad(x, np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.1, 0.2, 0.3]), 0.9, 1.5)
print(time.perf_counter() - start)
"""


def first_call_seconds(cache_dir: str) -> float:
    environment = {**os.environ, "BPTT_CACHE_DIR": cache_dir, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], env=environment, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def import_seconds() -> float:
    """Python + NumPy + Numba import alone, to separate it from compiling."""
    code = "import time; s = time.perf_counter(); import numpy, numba; print(time.perf_counter() - s)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, B ≤ 100 only")
    args = parser.parse_args(argv)
    batches = (1, 100) if args.quick else (1, 100, 10_000)
    repeat = 3 if args.quick else 7
    import numba

    rng = np.random.default_rng(0)
    extra = [(name, factory()) for name, factory in optional_rows()]
    names = ["NumPy backend", "hand NumPy BPTT"] + [name for name, _ in extra]
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Numba {numba.__version__} with {numba.get_num_threads()} threads, NumPy {np.__version__}\n"
    )
    print("| N | B | Numba backend | " + " | ".join(f"{name} (× Numba)" for name in names) + " |")
    print("|---:|---:|---:|" + "---:|" * len(names))
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
            numba_time = best(fast.loss_and_grad, x, y, w_i, w_h, w_o, repeat=repeat)
            others = [
                best(reference.loss_and_grad, x, y, w_i, w_h, w_o, repeat=repeat),
                best(hand_loss_and_grad, x, y, w_i, w_h, w_o, repeat=repeat),
            ] + [best(run, x, y, w_i, w_h, w_o, repeat=repeat) for _, run in extra]
            cells = " | ".join(f"{t * 1e3:.3f} ms ({t / numba_time:.1f}×)" for t in others)
            print(f"| {steps} | {batch} | {numba_time * 1e3:.3f} ms | {cells} |")
    if not extra:
        print("\n(JAX and PyTorch are not installed: no columns for them)")

    with tempfile.TemporaryDirectory() as cache:
        cold = first_call_seconds(cache)
        warm = min(first_call_seconds(cache) for _ in range(3))
    imports = min(import_seconds() for _ in range(3))
    print(
        f"\nNumba first call (fresh process: import, compile or load from cache, first loss_and_grad): "
        f"cold cache {cold:.2f} s, warm cache {warm:.2f} s (of which importing NumPy and Numba {imports:.2f} s)"
    )

    module = load(Model(steps=100, activation="tanh"), "loop", backend="numba")
    print(
        f"\nSerial and parallel drivers, N = 100 ({numba.get_num_threads()} threads; "
        f"the module goes parallel from B = {module._PARALLEL_BATCH}):"
    )
    print("| B | serial | parallel | parallel / serial |\n|---:|---:|---:|---:|")
    for batch in (16, 32, 64, 128, 1024, 10_000):
        x = np.eye(3)[rng.integers(0, 3, size=(batch, 100))]
        y = rng.integers(0, 2, size=batch).astype(float)
        arguments = module._compiled_arguments(x, y, rng.normal(size=3) * 0.5, 0.9, 1.5)
        times = []
        for kernel in (module._gradients_serial, module._gradients_parallel):
            losses, sums = np.empty(batch), np.zeros((module._blocks(batch), 5))
            times.append(best(kernel, *arguments, losses, sums, repeat=repeat))
        print(f"| {batch} | {times[0] * 1e3:.3f} ms | {times[1] * 1e3:.3f} ms | {times[1] / times[0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
