"""``bptt codegen --target`` at the command line (issue 27): torch and JAX stay optional (a missing one is one
line naming the extra), a lagged cell generates (its command line names --skip), and every framework module is
ruff-clean."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, run_bptt
from .export_cases import CELLS, IDS, LAGGED, LAGGED_IDS, model
from .test_check_hostile import one_line_error


def _without(framework: str, *argv: str) -> subprocess.CompletedProcess:
    """The command line in a process where ``framework`` cannot be found."""
    code = (
        "import importlib.util as u, sys\n"
        "found = u.find_spec\n"
        f"u.find_spec = lambda name, *rest: None if name == {framework!r} else found(name, *rest)\n"
        "from symbolic.cli import main\n"
        f"sys.exit(main({list(argv)!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)


@pytest.mark.parametrize("target, extra", [("torch", "bptt[torch]"), ("jax", "bptt[jax]")])
def test_a_missing_framework_is_one_line_naming_the_extra(target, extra):
    one_line_error(_without(target, "codegen", "--cell", "gru", "--target", target), f"pip install '{extra}'")


def test_a_numpy_module_needs_neither_framework():
    result = _without("torch", "codegen", "--cell", "gru", "--steps", "3")
    assert result.returncode == 0 and "import numpy as np" in result.stdout
    code = ("import json, sys, symbolic\nfrom symbolic.codegen import generate\nfrom symbolic.model import Model\n"
            "generate(Model(steps=3, hidden=2, cell='gru'))\n"
            "print(json.dumps(sorted(m for m in ('torch', 'jax') if m in sys.modules)))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert json.loads(imported.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("argv, fragment", [
    (["--cell", "gru", "--target", "tensorflow"], "unknown target 'tensorflow'"),
    (["--cell", "gru", "--target", "jax", "--backend", "numba"], "--backend numba is for --target numpy"),
    (["--cell", "lstm", "--target", "torch", "--mode", "unrolled"], "--mode unrolled is for --target numpy"),
    (["--cell", "gru", "--target", "jax", "--readout", "every"], "leaves the readout and loss to you"),
    (["--cell", "rnn", "--target", "torch", "--loss", "mse"], "leaves the readout and loss to you"),
])
def test_mistakes_are_one_line(argv, fragment):
    one_line_error(run_bptt("codegen", *argv), fragment)


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_a_lagged_cell_generates_with_the_command_that_made_it(target, tmp_path):
    """Once refused, now generated: the header's command line regenerates the same file (--skip kept)."""
    argv = ["codegen", "--cell", "skip", "--skip", "3", "--target", target, "-o", "skip.py"]
    assert run_bptt(*argv, cwd=tmp_path).returncode == 0
    source = (tmp_path / "skip.py").read_text(encoding="utf-8")
    assert 'LAGGED = (("o", 3),)' in source
    header = source.splitlines()[1].removeprefix("#   bptt ").split()
    assert header[:5] == argv[:5] and header[-2:] == ["-o", "skip.py"]
    assert run_bptt(*header[:-1], "again.py", cwd=tmp_path).returncode == 0
    assert (tmp_path / "again.py").read_text(encoding="utf-8") == source.replace("-o skip.py", "-o again.py")


@pytest.mark.parametrize("target", ["torch", "jax"])
@pytest.mark.parametrize("cell", CELLS + LAGGED, ids=IDS + LAGGED_IDS)
def test_framework_modules_are_ruff_clean(cell, target):
    from symbolic.codegen import generate_target

    source = generate_target(model(cell), target)
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--line-length", "110",
                             "--stdin-filename", "generated.py", "-"], input=source, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert "def forward_step(" in source and "def backward_step(" in source
