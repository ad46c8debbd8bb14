"""Cells as data: the built-in cells (``rnn``, ``lstm``, ``gru``) and a user's own cell file.

Every stage asks a cell for what it needs (states, parameters, equations) and never which cell it
is; this package is the only place that knows cells by name.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from ..errors import UsageError
from .spec import Cell

#: Built-in cell name → (module, whether it takes --activation and --bias).
BUILTIN = {"rnn": "rnn", "lstm": "lstm", "gru": "gru"}
#: Cells whose equations take the model's activation and bias options.
CONFIGURABLE = {"rnn"}


def load_cell(path: str | Path) -> Cell:
    """Run a cell file (Python: its top-level code runs) and return its ``CELL``, validated."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"cell file {path} does not exist: give a .py file that defines CELL, or one of {', '.join(BUILTIN)}")
    try:
        namespace = runpy.run_path(str(path), run_name="bptt_cell")
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None
    except SyntaxError as error:
        raise UsageError(f"{path} has a syntax error at line {error.lineno}: fix the cell file") from None
    except Exception as error:  # noqa: BLE001 - the user's file raises whatever it raises
        message = str(error).splitlines()[0] if str(error) else ""
        raise UsageError(f"{path} fails when run ({type(error).__name__}: {message}): fix the cell file") from None
    cell = namespace.get("CELL")
    if callable(cell) and not isinstance(cell, Cell):
        cell = cell()
    if not isinstance(cell, Cell):
        raise UsageError(f"{path} defines no CELL: end it with CELL = cell (a symbolic.cells.spec.Cell)")
    try:
        return cell.validate()
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None


def builtin(name: str, activation: str = "tanh", bias: bool = False) -> Cell:
    """A built-in cell by name, with the model's activation and bias where it takes them."""
    from importlib import import_module

    module = import_module(f".{BUILTIN[name]}", __name__)
    if name in CONFIGURABLE:
        return module.cell(activation=activation, bias=bias).validate()
    return module.cell().validate()


def cell_of(model) -> Cell:
    """The cell of a ``Model``: a built-in name, or a cell file's path."""
    if model.cell in BUILTIN:
        return builtin(model.cell, model.activation, model.bias)
    return load_cell(model.cell)


def cell(name: str, **options) -> Cell:
    """``symbolic.cell("gru")`` or ``symbolic.cell("path/to/mycell.py")``."""
    if name in BUILTIN:
        return builtin(name, **options)
    return load_cell(name)


__all__ = ["BUILTIN", "CONFIGURABLE", "Cell", "builtin", "cell", "cell_of", "load_cell"]
