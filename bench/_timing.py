"""Timing shared by the benchmark scripts: candidates measured in interleaved rounds.

On a shared machine the speed drifts over seconds; timing each candidate in its own block lets
that drift land on one of them. Here every round times each candidate once (the same number of
calls each, starting with a different candidate each round), and each candidate keeps its best
round, so all see the same conditions.
"""

from __future__ import annotations

import timeit


def interleaved(candidates: dict, rounds: int = 7, budget: float = 0.2, clock=timeit.default_timer) -> dict:
    """name → best seconds per call, for ``candidates`` (name → zero-argument callable).

    ``clock`` is the wall clock by default; ``time.process_time`` (the benchmarks' --cpu-time)
    counts only this process's CPU time, so on a busy shared machine the time other processes
    hold the cores is left out (CPU time of every thread is summed: use one BLAS thread with it).
    """
    numbers = {}
    for name, call in candidates.items():
        number, elapsed = timeit.Timer(call, timer=clock).autorange()
        # autorange aims at 0.2 s per measurement; scale to the budget.
        numbers[name] = max(1, int(number * budget / max(elapsed, 1e-9)))
    best = {name: float("inf") for name in candidates}
    order = list(candidates.items())
    for round_ in range(rounds):
        # Each round starts with another candidate, and every other round runs them in reverse, so
        # no candidate always runs right after the same other one (whose freed memory, warmed caches
        # or still-busy threads it would inherit: after JAX's largest calls, whatever ran next took
        # up to 2× its time). A rotation alone keeps the cyclic order, and with it each one's
        # predecessor.
        this_round = order if round_ % 2 == 0 else order[::-1]
        shift = (round_ // 2) % len(order)
        for name, call in this_round[shift:] + this_round[:shift]:
            seconds = timeit.Timer(call, timer=clock).timeit(numbers[name]) / numbers[name]
            best[name] = min(best[name], seconds)
    return best
