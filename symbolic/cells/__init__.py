"""Cells as data: the built-in cells (``rnn``, ``lstm``, ``gru``, ``skip``) and a user's own cell file.

Every stage asks a cell for what it needs (states, parameters, equations) and never which cell it
is; this package is the only place that knows cells by name.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from pathlib import Path

from ..errors import UsageError
from .spec import Cell

#: Built-in cell name → (module, whether it takes --activation and --bias).
BUILTIN = {"rnn": "rnn", "lstm": "lstm", "gru": "gru", "skip": "skip"}
#: Cells whose equations take the model's activation and bias options.
CONFIGURABLE = {"rnn", "skip"}
#: The readout's bias that --bias adds to a cell whose own biases are parameters of its equations.
READOUT_BIAS = "b_y"


def load_cell(path: str | Path) -> Cell:
    """Run a cell file (Python: its top-level code runs) and return its ``CELL``, validated.

    Whatever the file does on the way is one UsageError (an exception, ``sys.exit``, ``exit()``) but
    an interrupt; what it prints goes to stderr, so the command's standard output stays its own.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"cell file {path} does not exist: give a .py file that defines CELL, or one of {', '.join(BUILTIN)}")
    with _stdout_to_stderr():
        cell = _run(path)
        try:
            return cell.validate()
        except UsageError as error:
            raise UsageError(f"{path}: {error}") from None


def _run(path: Path) -> Cell:
    """The file's CELL (called if it is a function), every way out of it but Ctrl-C a UsageError."""
    try:
        namespace = runpy.run_path(str(path), run_name="bptt_cell")
        cell = namespace.get("CELL")
        if callable(cell) and not isinstance(cell, Cell):
            cell = cell()
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None
    except SyntaxError as error:
        raise UsageError(f"{path} has a syntax error at line {error.lineno}: fix the cell file") from None
    except KeyboardInterrupt:
        raise
    except SystemExit as error:  # sys.exit(0) too: a command must not end quietly having done nothing
        raise UsageError(
            f"{path} calls sys.exit({error.code!r}) when run: a cell file must define CELL and not exit; fix the cell file"
        ) from None
    except BaseException as error:  # noqa: BLE001 - the user's file raises whatever it raises
        message = str(error).splitlines()[0] if str(error) else ""
        raise UsageError(f"{path} fails when run ({type(error).__name__}: {message}): fix the cell file") from None
    if not isinstance(cell, Cell):
        raise UsageError(f"{path} defines no CELL: end it with CELL = cell (a symbolic.cells.spec.Cell)")
    return cell


@contextlib.contextmanager
def _stdout_to_stderr():
    """sys.stdout and file descriptor 1 point at stderr while a cell file runs (its print, os.write(1, …)
    and the programs it starts alike); both are restored after, as are sys.stdout and sys.stderr."""
    saved_streams = sys.stdout, sys.stderr
    for stream in saved_streams:
        _flush(stream)
    try:
        saved_descriptor = os.dup(1)
        _point_at_stderr(1)
    except OSError:  # no descriptor 1 (an embedding host): the Python-level redirect still holds
        saved_descriptor = None
    try:
        sys.stdout = sys.stderr
        yield
    finally:
        _flush(sys.stdout)
        _flush(sys.stderr)
        sys.stdout, sys.stderr = saved_streams
        if saved_descriptor is not None:
            os.dup2(saved_descriptor, 1)
            os.close(saved_descriptor)


def _point_at_stderr(descriptor: int) -> None:
    """dup2 stderr onto ``descriptor``, or /dev/null when stderr is not open for writing (a closed
    stderr can be a file opened for reading by whatever started us)."""
    try:
        import fcntl  # POSIX; elsewhere stderr is taken as writable

        writable = fcntl.fcntl(2, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except ImportError:
        writable = True
    except OSError:
        writable = False
    if writable:
        os.dup2(2, descriptor)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):  # a closed or odd stream the cell file left behind
        pass


def builtin(name: str, activation: str = "tanh", bias: bool = False, skip: int | None = None) -> Cell:
    """A built-in cell by name, with the model's activation and bias where it takes them (and the
    skip cell's lag K)."""
    from importlib import import_module

    module = import_module(f".{BUILTIN[name]}", __name__)
    if name == "skip":
        from ..model import checked_skip

        return module.cell(activation=activation, bias=bias, skip=checked_skip(skip)).validate()
    if name in CONFIGURABLE:
        return module.cell(activation=activation, bias=bias).validate()
    return module.cell().validate()


def cell_of(model) -> Cell:
    """The cell of a ``Model``: a built-in name, or a cell file's path."""
    cell = builtin(model.cell, model.activation, model.bias, model.skip) if model.cell in BUILTIN else load_cell(model.cell)
    if model.bias and not cell.readout_bias:   # a cell whose biases are in its equations: --bias is the readout's
        cell.add_readout_bias(READOUT_BIAS)
    return cell


def cell(name: str, **options) -> Cell:
    """``symbolic.cell("gru")`` or ``symbolic.cell("path/to/mycell.py")``."""
    if name in BUILTIN:
        return builtin(name, **options)
    return load_cell(name)


__all__ = ["BUILTIN", "CONFIGURABLE", "Cell", "builtin", "cell", "cell_of", "load_cell"]
