"""A million sequences on one thread: the Numba module's loss_and_grad against a floor measured in the
same run, and where its time goes.

    python3 bench/bench_million.py [--batch B] [--steps N] [--rounds R] [--cpu-time]

The scalar model (tanh, D = 3, one-hot inputs, float64), n = 100 and B = 10⁶ by default: x alone is
B·n·D·8 bytes (2.4 GB). One thread everywhere (NUMBA_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS
and OPENBLAS_NUM_THREADS are set to 1 before NumPy and Numba load).

The floor is what any BPTT of this model must do, each part timed alone:
  read x twice    np.sum(x), twice: the forward pass reads x, the gradient of w_i reads it again
  states          writing the n·B states o_t once (np.copyto into an array already touched) and
                  reading them back once (np.sum): the backward pass needs every o_t
  f               np.tanh (NumPy's SIMD loop) over n·B values, on a row that stays in cache
An implementation that keeps x and the states in cache between passes can beat this floor; one that
stores them must at least pay it.

Then the module's loss_and_grad as a ratio to the floor, and its stages timed as cumulative prefixes
of its own block loop (the kernels of the generated module, called over all blocks by a driver
compiled here): projection w_i·x_t alone, + forward recursion, + backward pass, + input gradient
(= the whole kernel); each stage's cost is the difference from the previous prefix, so each is
timed where it runs in the real loop (with the block's arrays in cache). Validation: the module's
own argument handling for this call, and for comparison the full checks (np.isfinite over x), which
the kernels' fused check replaces.

Last, the NumPy backend's loss_and_grad (the loop-mode module) against the strongest hand loop of
bench_gradients.py at this size, the time-major one (contiguous rows, out=, no temporaries in its
loops), in the same interleaved rounds (``--no-numpy`` leaves both out: they hold the n·B states and
gates, 1.6 GB more at B = 10⁶).
"""

from __future__ import annotations

import os

for _name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"

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

CACHED_ROW = 8192  # values per np.tanh call for the f part of the floor (64 KB: stays in cache)


def tanh_in_cache(values: int, row: np.ndarray) -> None:
    """np.tanh over ``values`` values, a cache-resident row at a time."""
    for _ in range(values // row.size):
        np.tanh(row, out=row)


def staged_driver(module, stages: int):
    """A compiled loop over the module's blocks running its first ``stages`` kernels per block
    (1: projection, 2: + forward, 3: + backward, 4: + input gradient)."""
    import numba

    project, forward, backward = module._project, module._forward, module._backward
    input_terms, work_arrays, check = module._input_terms, module._work, module._CHECK

    @numba.njit(error_model="numpy")
    def run(x, labels, w_i, w_h, w_o, width):
        batch, steps = x.shape[0], x.shape[1]
        p, o, terms, deltas = work_arrays(steps, min(width, batch), x.dtype)
        for start in range(0, batch, width):
            if batch - start < p.shape[1]:
                p, o, terms, deltas = work_arrays(steps, batch - start, x.dtype)
            project(x, w_i, start, p)
            if stages >= 2:
                forward(p, w_h, o, terms[check])
            if stages >= 3:
                backward(labels, w_h, w_o, o, start, p, terms, deltas)
            if stages >= 4:
                input_terms(x, p, start, terms)
        return terms[0, 0]

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1_000_000, help="sequences B (default 10⁶)")
    parser.add_argument("--steps", type=int, default=100, help="steps n (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of the wall clock (for a busy shared machine)",
    )
    parser.add_argument(
        "--no-numpy",
        action="store_true",
        help="leave out the NumPy module and the hand loop (they store the states and gates)",
    )
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else timeit.default_timer
    import numba

    batch, steps = args.batch, args.steps
    rng = np.random.default_rng(0)
    x = np.eye(3)[rng.integers(0, 3, size=(batch, steps))]
    y = rng.integers(0, 2, size=batch).astype(float)
    w_i, w_h, w_o = rng.normal(size=3) * 0.5, 0.9, 1.5
    module = load(Model(steps=steps, activation="tanh"), "loop", backend="numba")
    print(
        f"n = {steps}, B = {batch}, D = 3, tanh, float64; x {x.nbytes / 1e9:.2f} GB; "
        f"Numba {numba.__version__} with {numba.get_num_threads()} thread, NumPy {np.__version__}; "
        f"{'CPU' if args.cpu_time else 'wall-clock'} time, best of {args.rounds} interleaved rounds"
    )
    # The same result as the NumPy module on a slice (the full batch would need its n·B states).
    reference = load(Model(steps=steps, activation="tanh"), "loop")
    part = slice(0, min(batch, 10_000))
    got = module.loss_and_grad(x[part], y[part], w_i, w_h, w_o)
    want = reference.loss_and_grad(x[part], y[part], w_i, w_h, w_o)
    assert np.allclose(got[1], want[1], rtol=1e-10) and np.isclose(got[2], want[2], rtol=1e-10)
    module.loss_and_grad(x, y, w_i, w_h, w_o)  # compiled and warm

    states = np.empty((steps + 1, batch))
    states.fill(0.5)  # touched: the floor counts the bytes, not the page faults of a fresh array
    row = rng.normal(size=CACHED_ROW)
    arguments = module._arguments(x, y, w_i, w_h, w_o)[0]
    drivers = {stages: staged_driver(module, stages) for stages in (1, 2, 3, 4)}
    for driver in drivers.values():
        driver(*arguments, module._WIDTH)
    candidates = {
        "loss_and_grad": partial(module.loss_and_grad, x, y, w_i, w_h, w_o),
        "read x": partial(np.sum, x),
        "write states": partial(np.copyto, states, 0.25),
        "read states": partial(np.sum, states),
        "f (np.tanh)": partial(tanh_in_cache, steps * batch, row),
        "validation": partial(module._arguments, x, y, w_i, w_h, w_o),
        "full checks": lambda: (module._inputs(x, w_i, w_h, w_o), module._labels(y, batch)),
    }
    names = ["projection", "+ forward", "+ backward", "+ input gradient"]
    for stages, driver in drivers.items():
        candidates[names[stages - 1]] = partial(driver, *arguments, module._WIDTH)
    if not args.no_numpy:
        from bench_gradients import hand_time_major

        hand = hand_time_major(x[part], y[part], w_i, w_h, w_o)
        assert np.allclose(hand[1], want[1], rtol=1e-10) and np.isclose(hand[2], want[2], rtol=1e-10)
        candidates["NumPy module"] = partial(reference.loss_and_grad, x, y, w_i, w_h, w_o)
        candidates["hand loop"] = partial(hand_time_major, x, y, w_i, w_h, w_o)
    times = interleaved(candidates, rounds=args.rounds, budget=0.0, clock=clock)

    floor_parts = {
        "read x twice": 2 * times["read x"],
        "write and re-read the states": times["write states"] + times["read states"],
        f"f: np.tanh over n·B = {steps * batch:.0e} values": times["f (np.tanh)"],
    }
    floor = sum(floor_parts.values())
    total = times["loss_and_grad"]
    print("\nFloor (each part timed alone):")
    for name, seconds in floor_parts.items():
        print(f"  {name:<44} {seconds:7.3f} s")
    print(f"  {'floor':<44} {floor:7.3f} s")
    print(f"\nloss_and_grad {total:.3f} s = {total / floor:.2f} × the floor\n")
    print("Where the time goes (stages as differences of cumulative prefixes of the block loop):")
    previous = 0.0
    stage_names = ["projection w_i·x_t", "forward recursion", "backward pass", "input gradient"]
    for stages, name in zip((1, 2, 3, 4), stage_names):
        seconds = times[names[stages - 1]]
        print(f"  {name:<44} {seconds - previous:7.3f} s")
        previous = seconds
    print(f"  {'validation (this call)':<44} {times['validation']:7.3f} s")
    rest = total - previous - times["validation"]
    print(f"  {'the rest (drivers, sums)':<44} {rest:7.3f} s")
    print(f"  (the full checks, np.isfinite over x, would take {times['full checks']:.3f} s)")
    if not args.no_numpy:
        numpy_time, hand_time = times["NumPy module"], times["hand loop"]
        print("\nNumPy backend against the time-major hand loop (bench_gradients.py):")
        print(f"  {'hand loop (time-major)':<44} {hand_time:7.3f} s")
        print(
            f"  {'NumPy module loss_and_grad':<44} {numpy_time:7.3f} s = {numpy_time / hand_time:.2f} × the hand loop"
        )
        print(
            f"  {'Numba module loss_and_grad':<44} {total:7.3f} s = {total / hand_time:.2f} × the hand loop"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
