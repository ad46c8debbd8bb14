"""Nested activations: the symbolic stages of a cell whose update is f(f(…f(W x + U h + b)…)), by depth.

    python3 bench/bench_nesting.py [--depths 5 10 20 30] [--limit SECONDS]

Each depth runs in a fresh Python process (SymPy's caches would otherwise serve one depth from the
last); the times are the stages alone, imports excluded, on the cell file nested_tanh_<depth>.py:

- load + derive: ``symbolic.derive_cell(symbolic.load_cell(file))`` (building the equations is where
  SymPy's tanh once split its argument into real and imaginary parts, doubling per level);
- codegen: the NumPy module (``codegen.generate``, unrolled, n = 3, H = 2);
- check: ``bptt check`` of that module, the whole command.

A stage slower than ``--limit`` seconds is stopped and reported as such (the older code took 84 s at
depth 11 and grew about 3× per level).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STAGES = """
import sys, time
import symbolic
import symbolic.cells.spec, symbolic.engine.derivation  # SymPy's import is not a stage
from symbolic.codegen import generate, numpy_backend, cell_backend
from symbolic.model import Model
path, module = sys.argv[1], sys.argv[2]
start = time.perf_counter()
symbolic.derive_cell(symbolic.load_cell(path))
derived = time.perf_counter()
source = generate(Model(steps=3, hidden=2, cell=path), "unrolled")
generated = time.perf_counter()
open(module, "w").write(source)
print(derived - start, generated - derived)
"""


def nested_cell(depth: int, activation: str = "tanh") -> str:
    """The source of a cell file whose one update nests ``activation`` ``depth`` times."""
    body = "W @ x + U @ h + b"
    for _ in range(depth):
        body = f"{activation}({body})"
    return (
        f"from symbolic.cells.spec import Cell, {activation}\n\n"
        f'cell = Cell("nested_{activation}_{depth}", readout="w_y")\n'
        'x, h = cell.input(), cell.state("h")\n'
        'W, U, b = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H"), cell.vector("b")\n'
        f"cell.update(h, {body})\n\n"
        "CELL = cell\n"
    )


def measure(depth: int, folder: Path, limit: float) -> tuple:
    """(load + derive, codegen, check) seconds at ``depth``; None for a stage stopped at ``limit``."""
    path, module = folder / f"nested_tanh_{depth}.py", folder / f"module_{depth}.py"
    path.write_text(nested_cell(depth))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, "-c", STAGES, str(path), str(module)], capture_output=True,
                              text=True, timeout=limit, env=environment, check=True)
    except subprocess.TimeoutExpired:
        return None, None, None
    derive, codegen = (float(word) for word in done.stdout.split())
    start = time.perf_counter()
    try:
        checked = subprocess.run([sys.executable, "-m", "symbolic", "check", str(module)], capture_output=True,
                                 text=True, timeout=limit, env=environment, check=False)
    except subprocess.TimeoutExpired:
        return derive, codegen, None
    check = time.perf_counter() - start
    if checked.returncode != 0:
        raise SystemExit(f"bptt check failed at depth {depth}:\n{checked.stdout}{checked.stderr}")
    return derive, codegen, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--limit", type=float, default=300.0)
    options = parser.parse_args()
    print(f"{'depth':>5}  {'load + derive':>13}  {'codegen':>8}  {'check':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for depth in options.depths:
            times = measure(depth, Path(folder), options.limit)
            cells = [f"> {options.limit:.0f} s" if value is None else f"{value:.2f} s" for value in times]
            print(f"{depth:>5}  {cells[0]:>13}  {cells[1]:>8}  {cells[2]:>7}", flush=True)


if __name__ == "__main__":
    main()
