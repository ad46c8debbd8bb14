"""Shared fixtures and the one case list the checks parametrize over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACTIVATION_NAMES = ("tanh", "sigmoid", "relu", "identity")


def run_bptt(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (``python -m symbolic``) in a subprocess."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    if env:
        environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "symbolic", *args],
        cwd=cwd or ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def bptt():
    return run_bptt


# -- the fast loop: python3 -m pytest -m "not slow" ------------------------------------------------------

#: Files whose every test is slow (Numba compiling, PyTorch, wheels, sandboxes and signals, property runs).
SLOW_FILES = {"test_numba.py", "test_numba_cells.py", "test_torch.py", "test_torch_cells.py", "test_packaging.py",
              "test_grade_sandbox.py", "test_cells_hostile.py", "test_nesting.py", "test_module_cache.py",
              "test_readout_bias.py"}
#: Tests measured over about 2 s in all (file::function, every parametrization), one a line: remeasure with
#: python3 -m pytest --durations=0 and keep the list to what is slow.
SLOW_TESTS = frozenset(
    line.strip() for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines() if line.strip()
)


def identifiers(source: str) -> set[str]:
    """Every name a Python source binds or reads: names, functions, arguments, imports (the names a
    generated module uses, which a cell's own names must not shadow)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: left out of the fast loop, python3 -m pytest -m 'not slow'")


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.nodeid.split("[")[0]
        if item.path.name in SLOW_FILES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
