"""bptt derive --cell lstm: the proof of the LSTM recursion, its negative controls, and the document.

The proof's oracle (symbolic/proof_lstm.py) is the unrolled loss differentiated by sp.diff and, at
60 digits, mpmath's derivative of a plain mpmath forward pass; the tests below also check that oracle
against a third, float64 forward pass written here. Expected LaTeX is written out by hand, so a change
in what the printer emits (a lost factor, U instead of Uᵀ, the cell path merged into the rest) fails.
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
from symbolic.latex import document, lstm_command
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
from .test_latex import compile_pdf, render_katex


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


# -- the document ------------------------------------------------------------------------------------------

DELTA_C = (
    r"\boldsymbol{\delta}\mathbf{c}_{t} &= \underbrace{\boldsymbol{\delta}\mathbf{h}_{t} \odot \mathbf{o}_{t} \odot "
    r"\left(\mathbf{1} - \tanh\left(\mathbf{c}_{t}\right)^{\circ {2}}\right)}_{\text{through } \mathbf{h}_{t}} + "
    r"\underbrace{\boldsymbol{\delta}\mathbf{c}_{t+1} \odot \mathbf{f}_{t+1}}_{\text{direct cell path}}"
)
DELTA_A = {
    "i": r"\boldsymbol{\delta}\mathbf{a}_{i,t} &= \boldsymbol{\delta}\mathbf{c}_{t} \odot \mathbf{g}_{t} \odot "
         r"\mathbf{i}_{t} \odot \left(\mathbf{1} - \mathbf{i}_{t}\right)",
    "f": r"\boldsymbol{\delta}\mathbf{a}_{f,t} &= \boldsymbol{\delta}\mathbf{c}_{t} \odot \mathbf{c}_{t-1} \odot "
         r"\mathbf{f}_{t} \odot \left(\mathbf{1} - \mathbf{f}_{t}\right)",
    "g": r"\boldsymbol{\delta}\mathbf{a}_{g,t} &= \boldsymbol{\delta}\mathbf{c}_{t} \odot \mathbf{i}_{t} \odot "
         r"\left(\mathbf{1} - \mathbf{g}_{t}^{\circ {2}}\right)",
    "o": r"\boldsymbol{\delta}\mathbf{a}_{o,t} &= \boldsymbol{\delta}\mathbf{h}_{t} \odot "
         r"\tanh\left(\mathbf{c}_{t}\right) \odot \mathbf{o}_{t} \odot \left(\mathbf{1} - \mathbf{o}_{t}\right)",
}
DELTA_H = [
    r"\boldsymbol{\delta}\mathbf{h}_{n} &= \left(\hat{y} - y\right) \mathbf{w}_{y}",
    (r"\boldsymbol{\delta}\mathbf{h}_{t-1} &= U_{i}^{T} \boldsymbol{\delta}\mathbf{a}_{i,t} + U_{f}^{T} "
     r"\boldsymbol{\delta}\mathbf{a}_{f,t} + U_{g}^{T} \boldsymbol{\delta}\mathbf{a}_{g,t} + U_{o}^{T} "
     r"\boldsymbol{\delta}\mathbf{a}_{o,t}"),
]
CELL_PATH = [
    r"\frac{\partial \mathbf{c}_{t}}{\partial \mathbf{c}_{t-1}} = \operatorname{diag}\left(\mathbf{f}_{t}\right)",
    r"\frac{\partial c_{t}}{\partial c_{t-1}} &= f_{t}",
    (r"= \prod_{k=j + 1}^{n} \operatorname{diag}\left(\mathbf{f}_{k}\right) = "
     r"\operatorname{diag}\left(\mathbf{f}_{j+1} \odot \cdots \odot \mathbf{f}_{n}\right)"),
    r"\prod_{k=j + 1}^{n} \operatorname{diag}\left(f'\left(\mathbf{a}_{k}\right)\right) W_{h}",
]
GRADIENTS = [
    r"\frac{\partial L}{\partial W_{f}} &= \sum_{t=1}^{n} \boldsymbol{\delta}\mathbf{a}_{f,t} \mathbf{x}_{t}^{T}",
    r"\frac{\partial L}{\partial U_{g}} &= \sum_{t=1}^{n} \boldsymbol{\delta}\mathbf{a}_{g,t} \mathbf{h}_{t-1}^{T}",
    r"\frac{\partial L}{\partial \mathbf{b}_{o}} &= \sum_{t=1}^{n} \boldsymbol{\delta}\mathbf{a}_{o,t}",
    r"\frac{\partial L}{\partial \mathbf{w}_{y}} &= \left(\hat{y} - y\right) \mathbf{h}_{n}",
]
LOCAL = [
    r"\frac{\partial i_{t}}{\partial a_{i,t}} &= i_{t} \left(1 - i_{t}\right)",
    r"\frac{\partial g_{t}}{\partial a_{g,t}} &= 1 - g_{t}^{2}",
    r"\frac{\partial c_{t}}{\partial f_{t}} &= c_{t-1}",
    r"\frac{\partial h_{t}}{\partial c_{t}} &= o_{t} \left(1 - \tanh^{2}{\left(c_{t} \right)}\right)",
    r"\frac{\partial a_{o,t}}{\partial h_{t-1}} &= U_{o}",
    r"\frac{\partial L}{\partial z} &= \hat{y} - y",
]
TORCH = [
    r"\texttt{weight\_ih\_l0} &= \begin{bmatrix} W_{i} \\ W_{f} \\ W_{g} \\ W_{o} \end{bmatrix}",
    r"\texttt{weight\_hh\_l0} &= \begin{bmatrix} U_{i} \\ U_{f} \\ U_{g} \\ U_{o} \end{bmatrix}",
    (r"\texttt{bias\_ih\_l0 + bias\_hh\_l0} &= \begin{bmatrix} \mathbf{b}_{i} \\ \mathbf{b}_{f} \\ \mathbf{b}_{g} "
     r"\\ \mathbf{b}_{o} \end{bmatrix}"),
]


def _unrolled_rows(steps: int) -> list[str]:
    """δc_t = Σ_k (f_(t+1) ⋯ f_k) δh_k o_k (1 − tanh² c_k), each term under its brace, by hand."""
    rows = []
    for t in range(steps, 0, -1):
        for k in range(t, steps + 1):
            forgets = "".join(f"f_{{{m}}} " for m in range(t + 1, k + 1))
            term = rf"{forgets}\delta h_{{{k}}} o_{{{k}}} \left(1 - \tanh^{{2}}{{\left(c_{{{k}}} \right)}}\right)"
            label = rf"\text{{through }} h_{{{t}}}" if k == t else rf"\text{{cell path, gap {k - t}}}"
            lead = rf"\delta c_{{{t}}} &= " if k == t else r"&\quad + "
            rows.append(lead + rf"\underbrace{{{term}}}_{{{label}}}")
    return rows


@pytest.mark.parametrize("fmt", ["tex", "md"])
def test_document_shows_the_formulas(fmt):
    text = document(lstm(steps=3, hidden=2, inputs=2), fmt)
    for expected in (DELTA_C, *DELTA_A.values(), *DELTA_H, *CELL_PATH, *GRADIENTS, *LOCAL, *TORCH):
        assert expected in text, expected
    for row in _unrolled_rows(3):
        assert row in text, row
    assert r"\mathbb{R}^{2 \times 2}" in text
    # Negative control: U without the transpose, or the cell path folded into the first term, is not printed.
    assert r"U_{i} \boldsymbol{\delta}\mathbf{a}_{i,t}" not in text
    assert r"\mathbf{f}_{t+1}}_{\text{through" not in text


def test_unrolled_rows_only_for_small_n():
    assert "cell path, gap 3" in document(lstm(steps=4), "md")
    text = document(lstm(steps=50, hidden=4), "md")
    assert "cell path, gap" not in text and r"shown for $n \le 4$" in text


def test_markdown_has_no_latex_commands_in_prose():
    text = document(lstm(), "md")
    assert "`nn.LSTM`" in text and "`torch.nn.LSTM(D, H)`" in text and "`bptt derive --cell lstm --verify`" in text
    prose = "\n".join(block for index, block in enumerate(text.split("$$")) if index % 2 == 0)
    assert "\\texttt" not in prose and "\\texttt{weight\\_ih\\_l0}" in text


def test_header_names_the_canonical_command():
    assert lstm_command(lstm(steps=5, hidden=4), "md") == "bptt derive --cell lstm --steps 5 --hidden 4 --format md"
    assert lstm_command(lstm(steps=2, inputs=2), "tex") == "bptt derive --cell lstm --steps 2 --hidden 1 --inputs 2 --format tex"
    assert document(lstm(), "tex").startswith(f"% {MARKER}. Command: bptt derive --cell lstm --steps 3 --hidden 1")


@pytest.mark.parametrize(("hidden", "steps"), [(1, 3), (2, 3), (2, 50)])
def test_tex_compiles_without_overfull_lines_and_reads(tmp_path, hidden, steps):
    run, log, text = compile_pdf(document(lstm(steps=steps, hidden=hidden), "tex"), tmp_path)
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    # pdftotext reads the underscores of \texttt{weight\_ih\_l0} (drawn as rules) as spaces.
    words = " ".join(text.replace("_", " ").split())
    for expected in ("Backpropagation through time for the LSTM", "weight ih l0", "weight hh l0",
                     "bias ih l0 + bias hh l0", "The constant error carousel", "Hochreiter and Schmidhuber (1997)",
                     "direct cell path", "need not vanish", f"H = {hidden}", f"n = {steps}"):
        assert expected in words, expected
    assert ("cell path, gap" in words) == (steps <= 4)


@pytest.mark.parametrize(("hidden", "steps"), [(1, 3), (2, 50)])
def test_markdown_renders_with_katex(hidden, steps):
    page = document(lstm(steps=steps, hidden=hidden), "md")
    result = render_katex(page)
    assert result.returncode == 0, result.stderr
    assert "\\documentclass" not in page and "align*" not in page


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
