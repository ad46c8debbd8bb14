"""``--threads K`` read from the command line before NumPy loads: OpenBLAS, MKL and OpenMP read their
thread counts when they load, so a benchmark's ``--threads`` reaches BLAS only if it is set first
(with ``--cpu-time`` a second BLAS thread would double the CPU time counted for every product).

Import it before NumPy: ``import _threads  # noqa: F401``. Variables already set are kept.
"""

from __future__ import annotations

import os
import sys


def threads_from_argv(argv: list[str]) -> str | None:
    """The value of ``--threads K`` or ``--threads=K`` in ``argv``, else None."""
    for index, argument in enumerate(argv):
        if argument == "--threads" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--threads="):
            return argument.split("=", 1)[1]
    return None


THREADS = threads_from_argv(sys.argv[1:])
if THREADS and THREADS.isdigit():
    for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, THREADS)
