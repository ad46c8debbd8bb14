"""Bad cell specs: one UsageError naming the equation (or name) and the fix, from Python and from the
command line (exit 2, one line, nothing written), whatever stage reads the cell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

import symbolic
from symbolic.cells.spec import Cell, relu, sigmoid, tanh
from symbolic.engine.derivation import derive_cell
from symbolic.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def _base(**options):
    cell = Cell("bad", **options)
    return cell, cell.input(), cell.state("h"), cell.matrix("W", "H", "D")


def unknown_symbol():
    cell, x, h, W = _base()
    cell.update(h, tanh(W @ x + sp.Symbol("q")))
    return cell


def wrong_shape():
    cell, x, h, _ = _base()
    U = cell.matrix("U", "H", "H")
    cell.update(h, tanh(U @ x + h))
    return cell


def matrix_elementwise():
    cell, x, h, W = _base()
    U = cell.matrix("U")
    cell.update(h, tanh(W @ x + U * h))
    return cell


def input_elementwise():
    cell, x, h, W = _base()
    cell.update(h, tanh(W @ x + x))
    return cell


def state_without_update():
    cell, x, h, W = _base()
    cell.state("c")
    cell.update(h, tanh(W @ x + h))
    return cell


def updated_twice():
    cell, x, h, W = _base()
    cell.update(h, tanh(W @ x + h))
    cell.update(h, sigmoid(W @ x + h))
    return cell


def unknown_function():
    cell, x, h, W = _base()
    cell.update(h, sp.sin(W @ x + h))
    return cell


def fractional_power():
    cell, x, h, W = _base()
    cell.update(h, tanh(W @ x) * h ** sp.Rational(1, 2))
    return cell


def division():
    cell, x, h, W = _base()
    cell.update(h, tanh(W @ x) / (1 + h**2))
    return cell


def unused_parameter():
    cell, x, h, W = _base()
    cell.vector("b")
    cell.update(h, relu(W @ x + h))
    return cell


def reserved_name():
    cell, x, h, W = _base()
    cell.let("values", tanh(W @ x + h))
    return cell


def generated_prefix():
    cell, x, h, W = _base()
    cell.let("maps_a", tanh(W @ x + h))
    return cell


def taken_name():
    cell, x, h, W = _base()
    cell.let("W", tanh(W @ x + h))
    return cell


def partial_positional():
    cell, x, h, W = _base(positional=("W",))
    cell.update(h, tanh(W @ x + h))
    return cell


def clashing_constant():
    cell, x, h, W = _base(constants={"PARAMS": 1})
    cell.update(h, tanh(W @ x + h))
    return cell


def no_state():
    cell = Cell("bad")
    cell.input()
    return cell


BAD = [
    (unknown_symbol, r"equation 'h' uses q, which is neither a state, an input, a parameter nor an earlier"),
    (wrong_shape, r"matrix U has shape \(H, H\) but is applied to x of size D: declare it \(H, D\)"),
    (matrix_elementwise, r"equation 'h' uses the matrix U elementwise: apply it with U @"),
    (input_elementwise, r"equation 'h' uses the input x elementwise"),
    (state_without_update, r"state 'c' has no update: add cell.update\(c, ...\)"),
    (updated_twice, r"state 'h' is updated twice"),
    (unknown_function, r"equation 'h' applies sin, which is not an activation of the table"),
    (fractional_power, r"equation 'h' has the power .*only positive integer powers"),
    (division, r"equation 'h' has the power .*only positive integer powers"),
    (unused_parameter, r"parameter 'b' of cell 'bad' is never used"),
    (reserved_name, r"equation name 'values' is reserved"),
    (generated_prefix, r"equation 'maps_a' is not a usable name"),
    (taken_name, r"equation name 'W' is already taken"),
    (partial_positional, r"positional= of cell 'bad' must name every parameter once"),
    (clashing_constant, r"module constant 'PARAMS' of cell 'bad' must be an UPPER_CASE name not among"),
    (no_state, r"cell 'bad' declares no state"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=[build.__name__ for build, _ in BAD])
def test_a_bad_spec_is_one_usage_error_naming_the_problem(build, message):
    with pytest.raises(UsageError, match=message) as raised:
        derive_cell(build().validate())
    text = str(raised.value)
    assert "\n" not in text and ": " in text  # one line: the problem, then the fix


def test_the_spec_api_is_public_and_a_good_cell_derives():
    assert symbolic.Cell is Cell
    cell = symbolic.Cell("ok", readout="w_y")
    x, h = cell.input(), cell.state("h")
    W, U, b = cell.matrix("W", "H", "D"), cell.matrix("U"), cell.vector("b")
    cell.update(h, tanh(W @ x + U @ h + b))
    d = derive_cell(cell.validate())
    assert set(d.gradients) == {"W", "U", "b"}


CELL_FILE = '''
import sympy as sp
from symbolic.cells.spec import Cell, tanh
cell = Cell("bad")
x, h = cell.input(), cell.state("h")
W = cell.matrix("W", "H", "D")
cell.update(h, tanh(W @ x + {body}))
CELL = cell
'''


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('sp.Symbol("q")', "equation 'h' uses q, which is neither"),
        ("x", "equation 'h' uses the input x elementwise"),
    ],
    ids=["unknown-symbol", "input-elementwise"],
)
@pytest.mark.parametrize("command", ["derive", "codegen"])
def test_a_bad_cell_file_is_refused_in_one_line_and_nothing_is_written(body, message, command, tmp_path):
    path = tmp_path / "bad_cell.py"
    path.write_text(CELL_FILE.format(body=body))
    target = tmp_path / ("out.tex" if command == "derive" else "out.py")
    result = subprocess.run(
        [sys.executable, "-m", "symbolic", command, "--cell", str(path), "-o", str(target)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_cell.py"]
