"""The generic proof (symbolic/engine/oracle.py): every cell's BPTT against sp.diff of its unrolled loss.

Parametrized over cells: the built-ins (lstm, gru, the plain RNN with H > 1 or biases, the matrix RNN,
with each activation) and two user cells loaded from files (docs/cells: IndRNN with its ReLU kink, a
minimal gated unit with a map applied to f ⊙ h). Each is proved and each negative control is rejected.
The oracle itself is checked against the literal nested sp.diff of the unrolled loss and its loss
against a float64 forward pass written here from the papers' equations, so that a wrong oracle cannot
agree with a wrong engine. The plain RNN at H = 1 gives the notes' Σ/Π gradients (symbolic.notes.derive).
"""

from __future__ import annotations

import random
import re
import shlex
from fractions import Fraction
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy as sp

from symbolic import derive
from symbolic.cells import builtin, load_cell
from symbolic.cells.spec import Cell, sigmoid, tanh
from symbolic.cli.common import derivation_for
from symbolic.engine import derivation as engine
from symbolic.engine import evaluate as evaluation
from symbolic.engine import oracle
from symbolic.files import MARKER
from symbolic.model import Model
from symbolic.typeset.cells import document

from .conftest import run_bptt

CELL_FILES = Path(__file__).resolve().parent.parent / "docs" / "cells"
CELLS = {
    "lstm": lambda: builtin("lstm"),
    "gru": lambda: builtin("gru"),
    "rnn_bias": lambda: builtin("rnn", activation="tanh", bias=True),
    "rnn_sigmoid": lambda: builtin("rnn", activation="sigmoid"),
    "rnn_relu_bias": lambda: builtin("rnn", activation="relu", bias=True),
    "rnn_identity": lambda: builtin("rnn", activation="identity"),
    "indrnn": lambda: load_cell(CELL_FILES / "indrnn.py"),
    "mgu": lambda: load_cell(CELL_FILES / "mgu.py"),
}
#: The path each cell's negative control removes: the direct path s_(t−1) → s_t where there is one.
CONTROL = {"lstm": "no_direct_path", "gru": "no_direct_path", "rnn_bias": "truncated", "rnn_sigmoid": "truncated",
           "rnn_relu_bias": "truncated", "rnn_identity": "truncated", "indrnn": "no_direct_path",
           "mgu": "no_direct_path"}


@pytest.fixture(scope="module")
def derivations():
    return {name: engine.derive_cell(make()) for name, make in CELLS.items()}


# -- every cell proved, every control rejected ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(CELLS))
def test_verify_proves_each_cell_and_rejects_its_negative_control(name, derivations):
    report = oracle.verify(derivations[name], steps=3, hidden=2, inputs=2)
    text = str(report)
    assert report.passed and report.proved, text
    kinds = [check.kind for check in report.checks]
    assert kinds == ["local", "exact", "numeric"] and all(check.passed for check in report.checks), text
    exact, numeric = report.checks[1], report.checks[2]
    assert exact.name == "exact identity (H = 1, D = 2, n = 3)" and "zero polynomial" in exact.detail
    assert numeric.name == "60-digit evaluation (H = 2, D = 2, n = 3, B = 2)"
    assert report.worst < mpmath.mpf(10) ** -45
    control = report.control
    assert control.mutation == CONTROL[name] and control.rejected, text
    assert [check.passed for check in control.checks] == [False, False], text
    assert control.checks[1].worst > mpmath.mpf(10) ** -3   # the removed path carries a visible share
    assert text.startswith(f"Proof that the BPTT recursion of cell {report.cell}")
    assert "PROVED: 3 of 3 checks hold, negative control rejected; worst 60-digit difference" in text
    assert f"4. Negative control: {CONTROL[name]}" in text and "NOT rejected" not in text


@pytest.mark.parametrize("name", ["lstm", "gru", "indrnn", "mgu"])
def test_every_wrong_bptt_of_the_engine_is_rejected(name, derivations):
    """The catalogue of engine.MUTATIONS: each is rejected by the exact or the 60-digit check (at H = 1
    Mᵀ = M, and with B = 1 the batch mean is 1, so those two only the 60-digit check can see)."""
    d = derivations[name]
    exact_oracle = oracle.ExactOracle(d.cell, 2, 3)
    numeric_oracle = oracle.NumericOracle(d.cell, 2, 2, 3, points=2)   # the second of any sign: ReLU shut too
    assert exact_oracle.check(d).passed and numeric_oracle.check(d).passed
    mutations = d.applicable_mutations()
    assert {"truncated", "no_direct_path", "residual_sign", "no_batch_mean"} <= set(mutations)
    for mutation in mutations:
        wrong = d.mutate(mutation)
        exact, numeric = exact_oracle.check(wrong), numeric_oracle.check(wrong)
        assert not numeric.passed, (mutation, numeric)
        assert exact.passed == (mutation in ("untransposed", "no_batch_mean")), (mutation, exact)


def test_without_a_later_step_there_is_no_path_to_remove(derivations):
    """n = 1: nothing is sent back in time, so the control cannot be told apart there; verify runs the
    control at n = 2 and rejects it."""
    d = derivations["lstm"]
    assert oracle.ExactOracle(d.cell, 1, 1).check(d.mutate("no_direct_path")).passed
    report = oracle.verify(d, steps=1, hidden=2, inputs=1)
    assert report.passed, str(report)
    assert report.checks[1].name == "exact identity (H = 1, D = 1, n = 1)"
    # the 60-digit check runs where every path of the LSTM (2 states) exists: n = 3
    assert [check.name for check in report.control.checks] == [
        "exact identity (H = 1, D = 1, n = 2)", "60-digit evaluation (H = 2, D = 1, n = 3, B = 2)"]


def test_large_models_are_proved_at_small_sizes_and_say_so():
    model = Model(steps=100, hidden=64, inputs=10, cell="rnn", bias=True)
    report = oracle.verify(derivation_for(model), model, control=False)
    assert report.passed and report.control is None
    assert [check.name for check in report.checks[1:]] == [
        "exact identity (H = 1, D = 2, n = 3)", "60-digit evaluation (H = 3, D = 3, n = 4, B = 2)"]
    text = oracle.format_report(report)
    assert "model H = 64, D = 10, n = 100" in text.splitlines()[0] and "proved at the sizes shown" in text


@pytest.mark.parametrize("rate", [sp.Rational(1, 3), 0.1], ids=["rational", "decimal"])
def test_a_cell_with_fractional_coefficients(rate):
    """A leaky unit h' = (1 − k) h + k tanh(W x + U h + b): the exact identity over QQ, and with a decimal
    k the derivation's Float arithmetic (1 − 0.1 = 0.9) read as the decimals it prints as."""
    cell = Cell("leaky", readout="w_y")
    x, h = cell.input(), cell.state("h")
    W, U, b = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H"), cell.vector("b")
    cell.update(h, (1 - rate) * h + rate * tanh(W @ x + U @ h + b))
    report = oracle.verify(engine.derive_cell(cell), steps=3, hidden=2, inputs=1)
    assert report.passed and report.control.mutation == "no_direct_path", str(report)


# -- the oracle is sp.diff of the unrolled loss ----------------------------------------------------------------


def _point(unrolled: oracle.Unrolled, rng: random.Random) -> dict:
    """Random rationals for the weights, inputs and labels (weights positive: every ReLU open)."""
    point = {s: sp.Rational(rng.randint(100, 900), 1000) for value in unrolled.parameters.values() for s in value.flat}
    point |= {s: sp.Rational(rng.randint(-1000, 1000), 1000) for s in unrolled.x.flat}
    point |= {s: sp.Integer(rng.randint(0, 1)) for s in unrolled.y.flat}
    return point


@pytest.mark.parametrize(("name", "hidden", "entries", "inert"), [
    ("lstm", 1, None, False), ("rnn_bias", 1, None, False), ("indrnn", 1, None, False), ("mgu", 1, None, False),
    ("gru", 1, None, True),
    ("gru", 2, ["U_n[1,2]", "U_n[2,1]", "b_hn[2]", "W_z[2,1]", "U_r[1,2]", "w_y[2]"], True),
    ("mgu", 2, ["U_n[1,2]", "U_n[2,1]", "U_f[2,1]", "b_f[1]"], True),
])
def test_the_oracle_is_the_literal_nested_sp_diff(name, hidden, entries, inert):
    """The oracle's derivative (sp.diff of each node of the unrolled graph, chained) equals sp.diff of the
    whole nest at a random rational point, n = 2: with SymPy's tanh, 1/(1 + exp(−a)) and Max(0, a), or
    (``inert``, where SymPy's own functions take minutes) with the oracle's functions, whose rules
    test_local_rules checks against those closed forms."""
    unrolled = oracle.Unrolled(CELLS[name](), hidden, 1, 2)
    nest = unrolled.nested(unrolled.loss, inert=inert)
    point = _point(unrolled, random.Random(hidden))
    ours = unrolled.gradient()
    floats = {symbol: sp.Float(value, 50) for symbol, value in point.items()}
    closed = {oracle._Tanh: sp.tanh, oracle._Sigmoid: lambda a: 1 / (1 + sp.exp(-a)),
              oracle._Relu: lambda a: sp.Max(0, a), oracle._Step: lambda a: sp.Heaviside(a)}
    with mpmath.workdps(50):
        values = unrolled.mp_point({n: np.vectorize(lambda s: Fraction(int(point[s].p), int(point[s].q)),
                                                    otypes=[object])(v) for n, v in unrolled.parameters.items()},
                                   np.vectorize(lambda s: Fraction(int(point[s].p), int(point[s].q)),
                                                otypes=[object])(unrolled.x),
                                   [int(point[s]) for s in unrolled.y.flat])
        memo: dict = {}
        checked = 0
        for parameter, symbols in unrolled.parameters.items():
            for index in np.ndindex(symbols.shape):
                theta = symbols[index]
                if entries is not None and str(theta) not in entries:
                    continue
                literal = sp.diff(nest, theta).xreplace(floats)   # Floats: SymPy's functions evaluate at once
                for function, value in closed.items():
                    literal = literal.replace(function, value)   # the oracle's, innermost first
                value = oracle.value_of(ours[parameter][index], values, memo, oracle._mp)
                assert abs(value - mpmath.mpf(str(sp.N(literal, 45)))) < mpmath.mpf(10) ** -35, (theta, value, literal)
                checked += 1
    assert checked == (len(entries) if entries else len(unrolled.parameter_symbols))


def _torch_lstm(p, x, H):
    h, c = np.zeros(H), np.zeros(H)
    for x_t in x:
        i, f, o = (1 / (1 + np.exp(-(p[f"W_{g}"] @ x_t + p[f"U_{g}"] @ h + p[f"b_{g}"]))) for g in "ifo")
        g = np.tanh(p["W_g"] @ x_t + p["U_g"] @ h + p["b_g"])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h


def _torch_gru(p, x, H):
    h = np.zeros(H)
    for x_t in x:
        r = 1 / (1 + np.exp(-(p["W_r"] @ x_t + p["b_r"] + p["U_r"] @ h)))
        z = 1 / (1 + np.exp(-(p["W_z"] @ x_t + p["b_z"] + p["U_z"] @ h)))
        n = np.tanh(p["W_n"] @ x_t + p["b_in"] + r * (p["U_n"] @ h + p["b_hn"]))
        h = (1 - z) * n + z * h
    return h


def _rnn(f):
    def forward(p, x, H):
        o = np.zeros(H)
        for x_t in x:
            o = f(p["w_i"] @ x_t + p["w_h"] @ o + p.get("b_h", 0.0))
        return o
    return forward


def _indrnn(p, x, H):
    h = np.zeros(H)
    for x_t in x:
        h = np.maximum(p["W"] @ x_t + p["u"] * h + p["b"], 0)
    return h


def _mgu(p, x, H):
    h = np.zeros(H)
    for x_t in x:
        f = 1 / (1 + np.exp(-(p["W_f"] @ x_t + p["U_f"] @ h + p["b_f"])))
        n = np.tanh(p["W_n"] @ x_t + p["U_n"] @ (f * h) + p["b_n"])
        h = (1 - f) * h + f * n
    return h


FORWARD = {"lstm": _torch_lstm, "gru": _torch_gru, "rnn_bias": _rnn(np.tanh),
           "rnn_sigmoid": _rnn(lambda a: 1 / (1 + np.exp(-a))), "rnn_relu_bias": _rnn(lambda a: np.maximum(a, 0)),
           "rnn_identity": _rnn(lambda a: a), "indrnn": _indrnn, "mgu": _mgu}


@pytest.mark.parametrize("name", list(CELLS))
def test_the_unrolled_loss_is_the_cells_loss(name):
    """The oracle's loss (explicit matrices M[j,k] u_k, zero initial states, mean over the batch) against
    a float64 forward pass written here, at H = 3, D = 2, n = 3, B = 2."""
    cell = CELLS[name]()
    unrolled = oracle.Unrolled(cell, 3, 2, 3, batch=2)
    rng = np.random.default_rng(0)
    sizes = {"H": 3, "D": 2}
    floats = {n: rng.uniform(-1, 1, tuple(sizes[s] for s in shape)) for n, shape in cell.parameters.items()}
    x, y = rng.uniform(-1, 1, (2, 3, 2)), np.array([1.0, 0.0])
    readout, bias = floats[cell.readout], floats.get(cell.readout_bias, 0.0)
    expected = 0.0
    for b in range(2):
        z = readout @ FORWARD[name](floats, x[b], 3) + bias
        expected += (y[b] * np.log1p(np.exp(-z)) + (1 - y[b]) * np.log1p(np.exp(z))) / 2
    as_fractions = {n: np.vectorize(Fraction, otypes=[object])(v) for n, v in floats.items()}
    with mpmath.workdps(30):
        point = unrolled.mp_point(as_fractions, np.vectorize(Fraction, otypes=[object])(x), [1, 0])
        loss = oracle.value_of(unrolled.loss, point, {}, oracle._mp)
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)


#: f for the forward passes written here.
_F = {"tanh": np.tanh, "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "relu": lambda a: np.maximum(a, 0.0),
      "identity": lambda a: a}


@pytest.mark.parametrize("activation", list(_F))
def test_the_plain_rnn_at_h1_is_the_notes_model(activation):
    """The engine's plain RNN at H = 1 without biases gives the gradients of the notes' Σ/Π form (symbolic.notes.derive,
    the scalar model's own derivation), at a point with units on and off: one model, derived twice."""
    scalar = derive(3, activation)
    u = scalar.unrolled
    # chosen so that ReLU's unit is off at step 1 (a_1 = −1) and on at steps 2 and 3
    w_i, w_h, w_o = np.array([1.0, -1.0, 0.5]), 0.8, -1.3
    x, y = np.array([[0.2, 1.2, 0.0], [1.0, 0.3, 0.4], [0.5, 0.1, 1.0]]), 1.0
    o = [0.0]
    for x_t in x:
        o.append(float(_F[activation](w_i @ x_t + w_h * o[-1])))
    y_hat = 1 / (1 + np.exp(-w_o * o[-1]))
    point = {u.w_h: w_h, u.w_o: w_o, u.y: y, u.y_hat: y_hat}
    point |= {u.o[t]: o[t + 1] for t in range(3)} | {u.w_i[c]: w_i[c] for c in range(3)}
    point |= {u.x[t][c]: x[t, c] for t in range(3) for c in range(3)}
    notes = {"w_i": [float(scalar.bptt("w_i", c).xreplace(point)) for c in range(3)],
             "w_h": float(scalar.bptt("w_h").xreplace(point)), "w_o": float(scalar.bptt("w_o").xreplace(point))}
    d = engine.derive_cell(builtin("rnn", activation=activation))
    values = evaluation.evaluate(d, {"w_i": w_i.reshape(1, 3), "w_h": np.array([[w_h]]), "w_o": np.array([w_o])}, x, y)
    assert np.allclose(values.gradients["w_i"].ravel(), notes["w_i"], rtol=1e-12, atol=1e-15)
    assert values.gradients["w_h"].item() == pytest.approx(notes["w_h"], rel=1e-12)
    assert values.gradients["w_o"].item() == pytest.approx(notes["w_o"], rel=1e-12)
    assert abs(notes["w_h"]) > 1e-3 and (activation != "relu" or 0.0 in o[1:])  # a long path, and a unit off


# -- the oracle's own rules and its matching of the engine's values ------------------------------------------


def test_local_rules_are_the_closed_forms_and_a_wrong_rule_is_caught(monkeypatch):
    check = oracle.local()
    assert check.passed and "tanh′ = 1 − tanh²" in check.detail and "ReLU′ = [a > 0]" in check.detail
    monkeypatch.setattr(oracle._Tanh, "fdiff", lambda self, argindex=1: 1 - self)
    wrong = oracle.local()
    assert not wrong.passed and wrong.detail == "disagree with the closed forms: tanh"


def _mgu_variant() -> Cell:
    """The MGU without f in the candidate, n = tanh(W_n x + U_n h + b_n): the same parameters, another
    forward pass (f ⊙ (U_n h) would not do: at H = 1 it is U_n (f ⊙ h))."""
    cell = Cell("mgu_variant", readout="w_y")
    x, h = cell.input(), cell.state("h")
    W_f, U_f, b_f = cell.matrix("W_f", "H", "D"), cell.matrix("U_f", "H", "H"), cell.vector("b_f")
    W_n, U_n, b_n = cell.matrix("W_n", "H", "D"), cell.matrix("U_n", "H", "H"), cell.vector("b_n")
    f = cell.let("f", sigmoid(W_f @ x + U_f @ h + b_f))
    n = cell.let("n", tanh(W_n @ x + U_n @ h + b_n))
    cell.update(h, (1 - f) * h + f * n)
    return cell.validate()


def test_an_engine_that_evaluates_another_forward_pass_is_rejected():
    """The derivation of another cell with the same parameters: its activations are not the unrolled
    loss's, and both checks say so."""
    wrong = engine.derive_cell(_mgu_variant())
    exact = oracle.ExactOracle(CELLS["mgu"](), 2, 2).check(wrong)
    assert not exact.passed and "activations the unrolled loss does not have" in exact.detail
    assert not oracle.NumericOracle(CELLS["mgu"](), 2, 2, 2, points=1).check(wrong).passed


# -- the command line --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", str(CELL_FILES / "mgu.py")], ids=["lstm", "mgu_file"])
def test_derive_verify_on_the_command_line(cell):
    result = run_bptt("derive", "--cell", cell, "--steps", "3", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    name = "lstm" if cell == "lstm" else "mgu"
    assert out.startswith(f"Proof that the BPTT recursion of cell {name} (symbolic.engine.derivation)")
    assert "model H = 1, D = 3, n = 3" in out.splitlines()[0]
    assert "[ok  ] exact identity (H = 1, D = 2, n = 3): engine recursion − sp.diff(unrolled L) is the zero " \
           "polynomial" in out
    assert "[ok  ] 60-digit evaluation (H = 2, D = 3, n = 3, B = 2)" in out
    assert "4. Negative control: no_direct_path" in out and out.count(" rejected: ") == 2
    assert "PROVED: 3 of 3 checks hold, negative control rejected" in out.rstrip().splitlines()[-1]
    assert "\\documentclass" not in out and _without_progress(result.stderr) == ""


def test_derive_verify_exits_1_on_a_disagreement(monkeypatch, capsys):
    """The engine made wrong (its carousel removed): the proof fails and bptt says so with exit 1."""
    from symbolic.cli import main

    right = engine.derive_cell
    monkeypatch.setattr(engine, "derive_cell", lambda cell, **kw: right(cell, **kw).mutate("no_direct_path"))
    status = main(["derive", "--cell", "lstm", "--steps", "2", "--inputs", "2", "--verify"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "[FAIL] exact identity (H = 1, D = 2, n = 2)" in out and "DISAGREEMENT: 1 of 3 checks hold" in out


def test_a_negative_control_that_is_not_rejected_fails_the_proof(monkeypatch, capsys):
    """Blind checks (every check passes whatever it is given): the proof holds, but the control, whose
    mutation does change the gradient, is not rejected, so the checks could not tell a wrong
    derivation from the right one: verify fails (exit 1), in the report as on the command line.
    Negative control of this test: with the real checks the control is rejected and verify passes."""
    from symbolic.cli import main

    gru = Model(cell="gru", steps=2, inputs=2)
    report = oracle.verify(derivation_for(gru), gru)
    assert report.passed and report.control.visible and report.control.rejected
    for oracle_class in (oracle.ExactOracle, oracle.NumericOracle):
        real = oracle_class.check

        def blind(self, d, *args, real=real, **kwargs):
            check = real(self, d, *args, **kwargs)
            check.passed = True
            return check

        monkeypatch.setattr(oracle_class, "check", blind)
    report = oracle.verify(derivation_for(gru), gru)
    assert report.proved and report.control.visible and not report.control.rejected and not report.passed
    status = main(["derive", "--cell", "gru", "--steps", "2", "--inputs", "2", "--verify"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "NOT rejected" in out and "PROVED" not in out.rstrip().splitlines()[-1]


def _without_progress(stderr: str) -> str:
    """stderr less the progress lines a slow proof prints (symbolic.progress): nothing else may be there."""
    return "".join(line for line in stderr.splitlines(True) if not line.startswith("bptt derive --verify: "))


SKIP_BY_COPIES = """
from symbolic.cells.spec import Cell, tanh

cell = Cell("skip3", readout="w_o", description="o_t = tanh(W_i x + W_h o_(t-1) + W_s o_(t-3)), by copy states")
x, o, o1, o2 = cell.input(), cell.state("o"), cell.state("o1"), cell.state("o2")
W_i, W_h, W_s = cell.matrix("W_i", "H", "D"), cell.matrix("W_h", "H", "H"), cell.matrix("W_s", "H", "H")
cell.update(o, tanh(W_i @ x + W_h @ o + W_s @ o2))
cell.update(o1, o)
cell.update(o2, o1)
CELL = cell
"""


def test_a_cell_with_copy_states_is_proved_where_its_paths_exist(tmp_path):
    """A lag written as copy states (o1' = o, o2' = o1): W_s reads o_(t−3), a path that exists only from
    n = 4. Both checks run at n = 4 (its path_steps: 1 + one step per state), where the control's mutation
    changes the gradient, and the control is rejected there: a right derivation is PROVED (before:
    DISAGREEMENT, exit 1)."""
    path = tmp_path / "skip3.py"
    path.write_text(SKIP_BY_COPIES)
    report = oracle.verify(engine.derive_cell(load_cell(path)))
    assert report.passed, str(report)
    numeric = next(check for check in report.checks if check.kind == "numeric")
    assert "n = 4" in numeric.name
    exact = next(check for check in report.checks if check.kind == "exact")
    assert "n = 4" in exact.name
    assert report.control.visible and report.control.rejected and report.control.invisible == []
    result = run_bptt("derive", "--cell", str(path), "--verify")
    assert result.returncode == 0 and "negative control rejected" in result.stdout, result.stdout


def test_document_with_verify_and_output(tmp_path):
    target = tmp_path / "indrnn.md"
    cell = str(CELL_FILES / "indrnn.py")
    result = run_bptt("derive", "--cell", cell, "--hidden", "2", "--inputs", "2", "--steps", "2",
                      "--format", "md", "--verify", "-o", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROVED: 3 of 3 checks hold, negative control rejected" in result.stdout
    assert target.read_text(encoding="utf-8").startswith(f"<!-- {MARKER}. Command: bptt derive --cell ")


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_matrix_rnn_verify_is_the_command_its_page_names(bias):
    """bptt derive --hidden 2 [--bias] --verify: the generic proof of the plain RNN (the command the page's
    last line names), with the truncated BPTT as its negative control; the document is not printed."""
    model = Model(steps=3, hidden=2, inputs=2, bias=bias)
    page = document(model, derivation_for(model), "md")
    command = re.search(r"\n```\n(bptt derive [^\n]* --verify)\n```", page).group(1)
    assert command == "bptt derive --cell rnn --steps 3 --hidden 2" + (" --bias" if bias else "") + " --inputs 2 --verify"
    result = run_bptt(*shlex.split(command)[1:])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Proof that the BPTT recursion of cell rnn (symbolic.engine.derivation)")
    assert "model H = 2, D = 2, n = 3" in out.splitlines()[0]
    entries = 2 + 1 + 1 + (2 if bias else 0)   # w_i (1×2), w_h, w_o, and b_h, b_o at H = 1
    assert (f"[ok  ] exact identity (H = 1, D = 2, n = 3): engine recursion − sp.diff(unrolled L) is the zero "
            f"polynomial for all {entries} parameter entries") in out
    assert "[ok  ] 60-digit evaluation (H = 2, D = 2, n = 3, B = 2)" in out
    assert "4. Negative control: truncated" in out and out.count(" rejected: ") == 2
    assert "PROVED: 3 of 3 checks hold, negative control rejected" in out.rstrip().splitlines()[-1]
    assert "\\documentclass" not in out and _without_progress(result.stderr) == ""


def test_a_large_matrix_rnn_is_proved_at_small_sizes_on_the_command_line(tmp_path):
    """--hidden 128 --steps 1000 --verify: the derivation is per unit, so it is proved where it runs in
    seconds and the report says at which sizes; with -o the document is written too."""
    target = tmp_path / "doc.tex"
    result = run_bptt("derive", "--hidden", "128", "--steps", "1000", "--verify", "-o", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "model H = 128, D = 3, n = 1000" in out.splitlines()[0]
    assert "[ok  ] exact identity (H = 1, D = 2, n = 3)" in out and "[ok  ] 60-digit evaluation (H = 3, D = 3, n = 4, B = 2)" in out
    assert "PROVED: 3 of 3 checks hold" in out and "proved at the sizes shown" in out
    assert target.read_text(encoding="utf-8").startswith(f"% {MARKER}. Command: bptt derive --cell rnn --steps 1000 --hidden 128")
