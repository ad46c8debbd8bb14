"""bptt derive --cell lstm: the proof of the LSTM recursion and its negative controls (the document is
tested for every cell in tests/test_typeset.py).

The proof's oracle (symbolic/proof_lstm.py) is the unrolled loss differentiated by sp.diff and, at
60 digits, mpmath's derivative of a plain mpmath forward pass; the tests below also check that oracle
against a third, float64 forward pass written here.
"""

from __future__ import annotations

import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp

from symbolic.derive_lstm import GATES, LSTMDerivation
from symbolic.errors import UsageError
from symbolic.files import MARKER
from symbolic.model import Model
from symbolic.proof_lstm import (
    check_lstm_size,
    exact,
    format_lstm_report,
    local,
    mp_loss,
    numeric,
    prove_lstm,
    unroll,
)

from .conftest import run_bptt


def _mp(value: Fraction):
    return mpmath.mpf(value.numerator) / value.denominator


def lstm(steps: int = 3, hidden: int = 1, inputs: int = 3) -> LSTMDerivation:
    return LSTMDerivation(Model(steps=steps, hidden=hidden, inputs=inputs, cell="lstm"))


# -- the oracle itself ------------------------------------------------------------------------------------


def _float_loss(parameters: dict, x: np.ndarray, y: float) -> float:
    """The model once more, in float64 NumPy with stacked gates as in torch.nn.LSTM."""
    W = np.vstack([parameters[f"W_{gate}"] for gate in GATES])
    U = np.vstack([parameters[f"U_{gate}"] for gate in GATES])
    b = np.concatenate([parameters[f"b_{gate}"] for gate in GATES])
    H = U.shape[1]
    h, c = np.zeros(H), np.zeros(H)
    for x_t in x:
        a = W @ x_t + U @ h + b
        i, f, o = (1 / (1 + np.exp(-a[k * H:(k + 1) * H])) for k in (0, 1, 3))
        g = np.tanh(a[2 * H:3 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
    z = parameters["w_y"] @ h
    return float(y * np.log1p(np.exp(-z)) + (1 - y) * np.log1p(np.exp(z)))


def test_oracles_compute_the_lstm_loss():
    """The nested SymPy loss and the mpmath loss of the proof agree with a float64 LSTM written here."""
    derivation = lstm(steps=3, hidden=2, inputs=2)
    rng = np.random.default_rng(0)
    parameters = {name: rng.uniform(-1, 1, shape) for name, shape in derivation.parameters.items()}
    x, y = rng.uniform(-1, 1, (3, 2)), 1.0
    expected = _float_loss(parameters, x, y)
    as_lists = {name: value.tolist() for name, value in parameters.items()}
    assert mp_loss(as_lists, x.tolist(), y, 2, 2) == pytest.approx(expected, rel=1e-12)
    unrolled = unroll(derivation)
    point = {unrolled.y: y}
    for name, index, symbol in unrolled.entries():
        point[symbol] = parameters[name].flatten()[index]
    for t, column in enumerate(unrolled.x):
        point.update({symbol: x[t, d] for d, symbol in enumerate(column)})
    value = unrolled.loss.xreplace(point).replace(
        lambda e: e.func.__name__ in ("_Tanh", "_Exp"),
        lambda e: sp.tanh(e.args[0]) if e.func.__name__ == "_Tanh" else sp.exp(e.args[0]),
    )
    assert float(value) == pytest.approx(expected, rel=1e-12)


# -- the proof ----------------------------------------------------------------------------------------------


def test_local_derivatives_are_those_of_the_closed_forms():
    check = local(lstm())
    assert check.passed, check


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_exact_identity_for_one_unit(steps):
    check = exact(lstm(steps=steps, inputs=2))
    assert check.passed, check
    assert f"exact identity (H = 1, D = 2, n = {steps})" == check.name
    assert "for all 17 parameter entries" in check.detail
    if steps <= 2:
        assert "expands to 0" in check.detail
    else:
        assert "exact rational arithmetic" in check.detail


def test_high_precision_with_two_units():
    check = numeric(lstm(steps=4, hidden=2, inputs=2))
    assert check.passed, check
    assert check.name == "60-digit evaluation (H = 2, D = 2, n = 4)"
    assert "all 42 entries" in check.detail and "LSTMDerivation.evaluate" in check.detail


@pytest.mark.parametrize("steps", [2, 3])
def test_recursion_without_the_cell_path_is_rejected(steps):
    """Negative control: δc_t without δc_(t+1) ⊙ f_(t+1) fails the exact and the 60-digit check."""
    derivation = lstm(steps=steps, inputs=2)
    assert not exact(derivation, drop_carousel=True).passed
    assert not numeric(derivation, drop_carousel=True, points=1).passed
    report = prove_lstm(lstm(steps=steps, hidden=2, inputs=2), drop_carousel=True)
    text = format_lstm_report(report)
    assert not report.passed
    assert "DISAGREEMENT: 1 of 3 checks hold" in text and text.count("[FAIL]") == 2


def test_without_a_later_step_there_is_no_cell_path_to_drop():
    """n = 1: δc_(n+1) = 0, so dropping the cell path changes nothing (and the check says so)."""
    assert exact(lstm(steps=1, inputs=1), drop_carousel=True).passed


def test_a_wrong_gate_formula_is_rejected():
    """Negative control: δa_f without its factor c_(t−1) fails both checks."""
    derivation = lstm(steps=2, inputs=1)
    derivation.delta_a = dict(derivation.delta_a, f=derivation.delta_a["f"] / derivation.c_prev)
    assert not exact(derivation).passed
    assert not numeric(derivation, points=1).passed


def test_recursion_oracle_agrees_with_finite_differences_in_float64():
    """The 60-digit check's oracle (mpmath.diff) is not alone: a central difference in float64 agrees."""
    derivation = lstm(steps=3, hidden=2, inputs=2)
    rng = random.Random(1)
    theta = {name: np.array([[rng.uniform(-0.9, 0.9) for _ in range(shape[-1])] for _ in range(shape[0])])
             if len(shape) == 2 else np.array([rng.uniform(-0.9, 0.9) for _ in range(shape[0])])
             for name, shape in derivation.parameters.items()}
    x = np.array([[rng.uniform(-1, 1) for _ in range(2)] for _ in range(3)])
    values = derivation.evaluate({k: v.tolist() for k, v in theta.items()}, x.tolist(), 0)
    step = 1e-6
    for name, value in theta.items():
        for index in np.ndindex(value.shape):
            shifted_up = {k: v.copy() for k, v in theta.items()}
            shifted_down = {k: v.copy() for k, v in theta.items()}
            shifted_up[name][index] += step
            shifted_down[name][index] -= step
            difference = (_float_loss(shifted_up, x, 0.0) - _float_loss(shifted_down, x, 0.0)) / (2 * step)
            assert float(values.gradients[name][index]) == pytest.approx(difference, abs=1e-8)


def test_size_limit():
    check_lstm_size(lstm(steps=4, hidden=2, inputs=2))
    with pytest.raises(UsageError, match="too large to verify at 60 digits"):
        check_lstm_size(lstm(steps=100, hidden=64))


# -- the command line ----------------------------------------------------------------------------------------


def test_verify_proves_the_recursion_on_the_command_line():
    result = run_bptt("derive", "--cell", "lstm", "--steps", "3", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Proof that the LSTM BPTT recursion")
    assert "H = 1, D = 3, n = 3" in out.splitlines()[0]
    assert "[ok  ] local derivatives:" in out
    assert "[ok  ] exact identity (H = 1, D = 3, n = 3): recursion − sp.diff(unrolled L) is 0 in exact rational" in out
    assert "for all 21 parameter entries" in out
    assert "[ok  ] 60-digit evaluation (H = 1, D = 3, n = 3)" in out
    assert out.rstrip().endswith("PROVED: 3 of 3 checks hold")
    assert "\\documentclass" not in out and result.stderr == ""


def test_verify_refuses_a_size_too_large_in_one_line(tmp_path):
    result = run_bptt("derive", "--cell", "lstm", "--hidden", "64", "--steps", "100", "--verify", "-o",
                      str(tmp_path / "doc.tex"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "too large to verify" in result.stderr
    assert not (tmp_path / "doc.tex").exists() and result.stdout == ""


def test_document_with_verify_and_output(tmp_path):
    target = tmp_path / "lstm.md"
    result = run_bptt("derive", "--cell", "lstm", "--hidden", "2", "--inputs", "2", "--steps", "2", "--format",
                      "md", "--verify", "-o", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROVED: 3 of 3 checks hold" in result.stdout
    text = target.read_text(encoding="utf-8")
    assert text.splitlines()[0] == (
        f"<!-- {MARKER}. Command: bptt derive --cell lstm --steps 2 --hidden 2 --inputs 2 --format md -->"
    )


def test_documents_are_deterministic():
    args = ("derive", "--cell", "lstm", "--hidden", "2", "--steps", "3", "--format", "tex")
    outputs = [run_bptt(*args, env={"PYTHONHASHSEED": seed}) for seed in ("1", "2024")]
    assert all(result.returncode == 0 for result in outputs)
    assert outputs[0].stdout == outputs[1].stdout and outputs[0].stdout


# -- LSTMDerivation.evaluate -------------------------------------------------------------------------------


def test_evaluate_matches_mpmath_at_exact_rationals():
    """LSTMDerivation.evaluate takes Fractions exactly: one point against mpmath.diff of the proof's loss."""
    derivation = lstm(steps=2, hidden=1, inputs=1)
    theta = {name: ([[Fraction(1, 3)]] if len(shape) == 2 else [Fraction(-1, 4)])
             for name, shape in derivation.parameters.items()}
    x = [[Fraction(1, 2)], [Fraction(-1, 5)]]
    values = derivation.evaluate(theta, x, 1)
    with mpmath.workdps(120):  # mpmath.diff needs twice the digits it should be right to
        theta = {name: ([[_mp(v[0][0])]] if isinstance(v[0], list) else [_mp(v[0])]) for name, v in theta.items()}
        x = [[_mp(row[0])] for row in x]
        for name in theta:
            def along(value, name=name):
                shifted = dict(theta, **{name: ([[value]] if isinstance(theta[name][0], list) else [value])})
                return mp_loss(shifted, x, 1, 1, 1)
            start = theta[name][0][0] if isinstance(theta[name][0], list) else theta[name][0]
            expected = mpmath.diff(along, start)
            assert abs(values.gradients[name].flatten()[0] - expected) < mpmath.mpf(10) ** -40
