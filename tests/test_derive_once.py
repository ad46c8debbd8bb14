"""A command derives once (issue 22): ``cli/common.py: derivation_for`` makes the engine's derivation at
the command's top and hands it to typeset, proof and codegen, which never derive again. Each case
counts the exact derivations (``derive_cell`` without the mutations' ``local_partials``) a run makes."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys

import pytest

from symbolic.cli import main
from symbolic.engine import derivation as engine

COMMANDS = {
    "derive_md": ["derive", "--cell", "gru", "--steps", "2", "--format", "md"],
    "derive_verify": ["derive", "--cell", "gru", "--steps", "2", "--inputs", "2", "--verify"],
    "codegen_numpy": ["codegen", "--cell", "gru", "--steps", "3"],
    "codegen_numba": ["codegen", "--cell", "gru", "--steps", "3", "--backend", "numba"],
    "codegen_matrix_rnn": ["codegen", "--hidden", "2", "--steps", "3", "--backend", "numba"],
}


def _count_derivations(monkeypatch) -> list:
    """Wrap derive_cell wherever a loaded module of the package holds it (imported at the top or on call)."""
    calls = []
    real = engine.derive_cell

    def counted(cell, local_partials=None, outputs=None):
        if local_partials is None:  # a mutation re-derives with patched partials: not a second derivation
            calls.append(cell.name)
        return real(cell, local_partials, outputs)

    for name, module in list(sys.modules.items()):
        if name.startswith("symbolic") and getattr(module, "derive_cell", None) is real:
            monkeypatch.setattr(module, "derive_cell", counted)
    return calls


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_derives_once(monkeypatch, name):
    if "numba" in COMMANDS[name]:
        pytest.importorskip("numba")
    # loaded first, so the names they import at the top are counted too
    for module in ("symbolic.codegen.cell_backend", "symbolic.codegen.numba_cells"):
        importlib.import_module(module)

    calls = _count_derivations(monkeypatch)
    with contextlib.redirect_stdout(io.StringIO()):
        status = main(COMMANDS[name])
    assert status == 0
    assert len(calls) == 1, calls
