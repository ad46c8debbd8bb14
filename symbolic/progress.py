"""Progress lines on stderr for work that can take seconds (never stdout, which holds the result).

A command names its stages as it enters them; the lines start only once the work has taken
``after`` seconds, so a quick run prints nothing and a slow one says what it is doing.
"""

from __future__ import annotations

import sys
import time


class Stages:
    """``stages(k, what)`` as stage k of ``total`` begins: "bptt derive --verify: 3/4 what… (2.1 s)"."""

    def __init__(self, label: str, total: int, after: float = 1.5, stream=None):
        self.label, self.total, self.after = label, total, after
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()

    def __call__(self, stage: int, what: str) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed >= self.after:
            print(f"{self.label}: {stage}/{self.total} {what}… ({elapsed:.1f} s so far)", file=self.stream, flush=True)
