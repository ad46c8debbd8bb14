"""bptt analyze: the notes' claims about vanishing and exploding gradients, against independent oracles.

The oracle is a plain NumPy forward pass written here (no generated code, no SymPy), differentiated
by central finite differences; the factors ∂o_k/∂o_{k−1} are recomputed from its states by hand.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symbolic.errors import UsageError
from symbolic.model import VOCABULARY
from symbolic.study import analysis
from symbolic.study.data import encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ACTIVATION_FUNCTIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "relu": lambda a: np.maximum(a, 0.0),
    "identity": lambda a: a,
}


def oracle_states(words, activation, w_i, w_h):
    """o_1..o_n by the notes' recurrence o_t = f(w_i·x_t + w_h o_{t−1}), o_0 = 0."""
    f = ACTIVATION_FUNCTIONS[activation]
    x = encode(words)
    states, previous = [], 0.0
    for x_t in x:
        previous = f(float(np.dot(w_i, x_t)) + w_h * previous)
        states.append(previous)
    return np.array(states)


def oracle_loss(words, y, activation, w_i, w_h, w_o):
    z = w_o * oracle_states(words, activation, w_i, w_h)[-1]
    return float(np.logaddexp(0.0, z) - y * z)  # −y log σ(z) − (1 − y) log(1 − σ(z))


def central_difference(function, point, h=1e-6):
    point = np.atleast_1d(np.asarray(point, dtype=float))
    gradient = np.zeros_like(point)
    for index in range(point.size):
        step = np.zeros_like(point)
        step[index] = h
        gradient[index] = (function(point + step) - function(point - step)) / (2 * h)
    return gradient


def words_strategy(min_size=2, max_size=25):
    return st.lists(st.sampled_from(VOCABULARY), min_size=min_size, max_size=max_size)


# -- the symbolic bound -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activation", "gamma"), [("tanh", 1), ("sigmoid", sp.Rational(1, 4)), ("relu", 1), ("identity", 1)]
)
def test_bound_has_the_right_gamma_and_value(activation, gamma):
    bound = analysis.bound(activation)
    assert bound.gamma == gamma
    assert bound.value(-2.0) == pytest.approx(float(gamma) * 2.0)
    assert r"\le \gamma" in bound.latex
    assert sp.latex(bound.gamma) in bound.latex


def test_bound_jacobian_is_the_derivative_of_the_step():
    """The Jacobian the bound is stated for equals d/do_{k−1} tanh(u + w_h o_{k−1}) numerically."""
    bound = analysis.bound("tanh")
    u, w_h, o_prev = 0.3, 0.7, -0.4
    o_k = math.tanh(u + w_h * o_prev)
    value = float(bound.jacobian.subs({sp.Symbol("o_k", real=True): o_k, bound.w_h: w_h}))
    h = 1e-6
    numeric = (math.tanh(u + w_h * (o_prev + h)) - math.tanh(u + w_h * (o_prev - h))) / (2 * h)
    assert value == pytest.approx(numeric, rel=1e-8)


# -- the regime rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factors", "bound_value", "regime"),
    [
        ([1.4, 1.6, 1.5], 1.5, "exploding"),
        ([0.3, 0.2, 0.9], 1.2, "vanishing"),
        ([1.0, 1.01, 0.99], 1.0, "stable"),
        ([1.5, 0.0, 1.5], 1.5, "vanishing"),  # a dead unit stops the product
        ([2.0, 2.0], 0.9, "vanishing"),  # the bound γ|w_h| < 1 decides first
        ([], 1.0, "stable"),
    ],
)
def test_classify(factors, bound_value, regime):
    assert analysis.classify(np.array(factors), bound_value)[0] == regime


# -- the notes' claims -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=words_strategy(),
    w_h=st.floats(-0.99, 0.99).filter(lambda v: abs(v) > 1e-3),
    w_i=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
    w_o=st.floats(-3, 3).filter(lambda v: abs(v) > 1e-2),
)
def test_tanh_with_small_w_h_never_exceeds_w_h_to_the_gap(words, w_h, w_i, w_o):
    """The notes: tanh′ ≤ 1 and |w_h| < 1, so every long-term product is at most |w_h|^gap."""
    result = analysis.analyze(activation="tanh", w_h=w_h, w_i=w_i, w_o=w_o, words=words)
    n = len(words)
    gaps = n - np.arange(1, n + 1)
    limit = np.abs(w_h) ** gaps
    assert np.all(result.products <= limit * (1 + 1e-12))
    # The terms themselves: ‖term_j(w_i)‖ ≤ |(ŷ − y) w_o| |w_h|^gap, since |tanh′| ≤ 1 and ‖x_j‖ = 1.
    assert np.all(result.norms_w_i <= abs(result.output_factor) * limit * (1 + 1e-12) + 1e-300)
    assert result.regime == "vanishing"
    # The factors are the true ∂o_k/∂o_{k−1} of the oracle's states.
    states = oracle_states(words, "tanh", np.array(w_i), w_h)
    np.testing.assert_allclose(result.factors, w_h * (1 - states[1:] ** 2), rtol=1e-12, atol=1e-300)


def test_relu_with_identity_initialisation_keeps_long_term_terms_at_short_term_size():
    """ReLU with w_h = 1 (the notes' identity initialisation) and live units: every factor is 1."""
    words = analysis.random_words(40, seed=3)
    result = analysis.analyze(activation="relu", w_h=1.0, w_i=[0.3, 0.5, 0.7], w_o=0.1, words=words)
    short_term = result.norms_w_i[-1]
    assert short_term > 0
    np.testing.assert_allclose(result.norms_w_i, short_term, rtol=1e-12)
    np.testing.assert_allclose(result.products, 1.0, rtol=1e-12)
    assert result.regime == "stable"


def test_relu_with_w_h_one_and_a_half_grows_as_one_and_a_half_to_the_gap():
    words = analysis.random_words(40, seed=4)
    result = analysis.analyze(activation="relu", w_h=1.5, w_i=[0.3, 0.5, 0.7], w_o=0.1, words=words)
    gaps = result.gaps
    np.testing.assert_allclose(result.products, 1.5**gaps, rtol=1e-12)
    np.testing.assert_allclose(result.norms_w_i / result.norms_w_i[-1], 1.5**gaps, rtol=1e-12)
    assert result.regime == "exploding"


def test_tanh_saturated_is_vanishing_even_with_large_w_h():
    """γ|w_h| = 3 allows growth, but saturated tanh units make the measured factors small."""
    words = analysis.random_words(30, seed=5)
    result = analysis.analyze(activation="tanh", w_h=3.0, w_i=[2.0, 2.0, 2.0], words=words)
    assert result.bound_value == pytest.approx(3.0)
    assert result.regime == "vanishing"
    assert result.geometric_mean < 0.95


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity", "relu"])
def test_terms_sum_to_the_finite_difference_gradient(activation):
    rng = np.random.default_rng(11)
    words = analysis.random_words(8, seed=11)
    w_i = rng.uniform(0.2, 0.9, size=3)  # positive: ReLU units stay away from the kink
    w_h, w_o = 0.8, -1.3
    result = analysis.analyze(activation=activation, w_h=w_h, w_i=w_i, w_o=w_o, words=words)
    y = result.label

    def loss_of_w_h(v):
        return oracle_loss(words, y, activation, w_i, float(v[0]), w_o)

    def loss_of_w_i(v):
        return oracle_loss(words, y, activation, v, w_h, w_o)

    expected_w_h = central_difference(loss_of_w_h, [w_h])[0]
    expected_w_i = central_difference(loss_of_w_i, w_i)
    assert np.sum(result.terms_w_h) == pytest.approx(expected_w_h, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(np.sum(result.terms_w_i, axis=0), expected_w_i, rtol=1e-6, atol=1e-9)
    # Term j = n is the short-term dependency: (ŷ − y) w_o f′(a_n) x_n, by hand.
    states = oracle_states(words, activation, w_i, w_h)
    y_hat = 1 / (1 + math.exp(-w_o * states[-1]))
    assert result.output_factor == pytest.approx((y_hat - y) * w_o, rel=1e-12)


def test_products_do_not_overflow_for_long_exploding_sequences():
    result = analysis.analyze(activation="relu", w_h=1.5, steps=2000, w_i=[0.3, 0.5, 0.7], w_o=0.1)
    assert result.log10_products[0] == pytest.approx(1999 * math.log10(1.5), rel=1e-9)
    assert json.dumps(result.as_json(), allow_nan=False)  # non-finite values become null


def test_table_and_json_shapes():
    result = analysis.analyze(activation="relu", w_h=1.5, steps=6, seed=2)
    data = result.as_json()
    assert {"steps", "activation", "weights", "factors", "terms_w_h", "terms_w_i", "bound", "regime"} <= set(
        data
    )
    assert data["steps"] == 6 and len(data["factors"]) == 5 and len(data["terms_w_h"]) == 6
    assert np.array(data["terms_w_i"]).shape == (6, 3)
    assert data["regime"] == "exploding"
    text = analysis.table(result)
    assert "regime: exploding" in text and "γ|w_h| = 1·1.5 = 1.5" in text
    assert len([line for line in text.splitlines() if line.strip().startswith(tuple("123456"))]) >= 6


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"steps": None}, "--steps"),
        ({"steps": 3, "words": ["cat", "mat"]}, "does not match"),
        ({"words": ["cat", "dog"]}, "unknown word 'dog'"),
        ({"steps": 3, "w_i": [1.0, 2.0]}, "--w-i needs 3 numbers"),
        ({"steps": 3, "activation": "softsign"}, "unknown activation"),
    ],
)
def test_mistakes_are_usage_errors(arguments, message):
    with pytest.raises(UsageError, match=message):
        analysis.analyze(**arguments)


# -- through the command line ----------------------------------------------------------------------


def bptt(*arguments, cwd=None, prelude="", env=None):
    """Run the real command line in a fresh interpreter (``prelude`` runs first, e.g. to hide a module)."""
    if prelude:
        command = ["-c", f"import sys{prelude}; from symbolic.cli import main; sys.exit(main(sys.argv[1:]))"]
    else:
        command = ["-m", "symbolic"]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, *command, *arguments],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=120,
    )


def test_cli_json_and_plot(tmp_path):
    plot = tmp_path / "terms.png"
    run = bptt("analyze", "--steps", "12", "-a", "relu", "--w-h", "1.5", "--json", "--plot", str(plot))
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["regime"] == "exploding" and data["steps"] == 12
    assert data["bound"]["value"] == 1.5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Run again: the plot carries the bptt marker, so it may be replaced.
    again = bptt("analyze", "--input", "cat,mat,rat", "-a", "relu", "--w-h", "1.5", "--plot", str(plot))
    assert again.returncode == 0, again.stderr
    assert "bptt analyze" not in again.stdout and "n = 3" in again.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        ("analyze", "-a", "relu"),
        ("analyze", "-n", "0", "-a", "relu"),
        ("analyze", "-n", "3", "-a", "relu", "--w-h", "big"),
        ("analyze", "-n", "3", "-a", "relu", "--w-i", "1,2"),
        ("analyze", "-a", "relu", "--input", "cat,dog"),
        ("analyze", "-n", "3", "-a", "relu", "--plot", "terms.txt"),
        ("analyze", "-n", "3", "-a", "relu", "--w-h", "nan"),
    ],
)
def test_cli_mistakes_are_one_line(arguments, tmp_path):
    run = bptt(*arguments, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("bptt: error:")


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    run = bptt(
        "analyze",
        "-n",
        "3",
        "-a",
        "relu",
        "--plot",
        str(tmp_path / "p.png"),
        prelude="; sys.modules['matplotlib'] = None",
    )
    assert run.returncode == 2
    assert "pip install bptt[plot]" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


# -- float64 overflow: said where, what could be computed shown, no warning, nan or inf ----------------

#: Any RuntimeWarning (NumPy's overflow, invalid value, …) ends the process with a traceback.
STRICT = {"PYTHONWARNINGS": "error::RuntimeWarning"}
#: 1.5^gap exceeds float64 from this gap on (the oracle: logarithms, no float64 power).
FIRST_OVERFLOWING_GAP = math.floor(math.log10(np.finfo(np.float64).max) / math.log10(1.5)) + 1


def strict_json(text):
    """json.loads that refuses NaN and Infinity (which Python's json.dumps writes by default)."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def power_of_ten_text(log10):
    exponent = math.floor(log10)
    return f"{10 ** (log10 - exponent):.4g}e+{exponent}"


def test_cli_exploding_past_float64_says_where_and_shows_the_rest(tmp_path):
    """ReLU, w_h = 1.5, n = 2000 (docs/bad-input.md: analyze's limit is 100000 steps): 1.5^gap passes the largest
    float64 at gap 1751. With x one-hot and |ŷ − y| w_o = 1, ‖term_j for w_i‖ = 1.5^gap exactly."""
    assert FIRST_OVERFLOWING_GAP == 1751
    plot = tmp_path / "exploding.png"
    run = bptt("analyze", "-n", "2000", "-a", "relu", "--w-h", "1.5", "--plot", str(plot), env=STRICT)
    assert run.returncode == 0, run.stderr
    assert run.stderr == f"wrote {plot}\n"
    text = run.stdout
    assert "nan" not in text.lower() and not any(word in ("inf", "-inf") for word in text.split())
    (line,) = [row for row in text.splitlines() if row.startswith("overflow: ")]
    assert "float64 (largest 1.798e+308) overflowed in the states o_t from step 1751 on" in line
    assert "|Π| from gap 1751 on" in line and "249 of 2000 w_i terms (from gap 1751)" in line
    assert "2000 of 2000 w_h terms (from gap 0)" in line
    rows = {int(row.split()[1]): row.split() for row in text.splitlines() if row[:5].strip().isdigit()}
    # |Π| and the bound beyond float64, printed from their logarithms; the w_i term where it fits.
    assert rows[1999][2] == rows[1999][3] == power_of_ten_text(1999 * math.log10(1.5)) == "1.015e+352"
    assert rows[1999][4:] == ["overflow", "overflow", "—"]
    assert float(rows[1144][5]) == pytest.approx(1.5**1144, rel=1e-3)  # squared, it would overflow
    assert rows[0][2:] == ["1", "1", "overflow", "1", "—"]
    assert "sums: ∂L/∂w_h = overflow" in text and "short-term share of ∂L/∂w_i: —" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_of_an_overflow_is_valid_json_with_what_could_be_computed():
    run = bptt("analyze", "-n", "2000", "-a", "relu", "--w-h", "1.5", "--json", env=STRICT)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    data = strict_json(run.stdout)
    overflow = data["overflow"]
    assert overflow["dtype"] == "float64" and overflow["states_from_step"] == 1751
    assert overflow["products_from_gap"] == FIRST_OVERFLOWING_GAP
    assert overflow["terms"]["w_i"] == {"lost": 249, "of": 2000, "from_gap": 1751}
    assert overflow["terms"]["w_h"] == {"lost": 2000, "of": 2000, "from_gap": 0}
    assert overflow["message"].startswith("float64 (largest 1.798e+308) overflowed in")
    gaps = 2000 - np.arange(1, 2001)
    for gap, row in zip(gaps, data["terms_w_i"]):
        if gap >= FIRST_OVERFLOWING_GAP:
            assert None in row
        else:
            assert math.hypot(*row) == pytest.approx(1.5**gap, rel=1e-9), gap
    assert data["log10_products"][0] == pytest.approx(1999 * math.log10(1.5), rel=1e-12)
    assert data["products"][0] is None and data["products"][-1] == 1.0


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_cli_matrix_overflow_is_said_and_valid_json(activation):
    """H = 4, W_h = 3·Q: the states overflow (inf − inf is nan), so ŷ and every term are lost."""
    arguments = ("analyze", "--hidden", "4", "-n", "2000", "-a", activation, "--w-h-scale", "3")
    run = bptt(*arguments, env=STRICT)
    assert run.returncode == 0, run.stderr
    assert "nan" not in run.stdout.lower() and " inf" not in run.stdout
    assert "ŷ = overflow" in run.stdout and "overflow: float64 (largest 1.798e+308) overflowed in" in run.stdout
    assert "short-term share of ∂L/∂W_i: —" in run.stdout
    data = strict_json(bptt(*arguments, "--json", env=STRICT).stdout)
    assert data["overflow"]["terms"]["W_i"]["lost"] == 2000 and data["regime"] == "exploding"
    assert data["log10_bounds"][0] == pytest.approx(1999 * math.log10(3), rel=1e-12)


def test_no_overflow_no_overflow_line():
    result = analysis.analyze(activation="relu", w_h=1.5, steps=12)
    assert result.overflow is None and result.as_json()["overflow"] is None
    assert "overflow" not in analysis.table(result)
    matrix = analysis.analyze_matrix(steps=12, hidden=3, w_h_scale=3, activation="relu")
    assert matrix.overflow is None and "overflow" not in analysis.matrix_table(matrix)


def test_power_of_ten_and_norms_beyond_float64():
    assert analysis._power_of_ten(math.log10(2.5)) == "2.5"
    assert analysis._power_of_ten(400 + math.log10(9.99999)) == "1e+401"  # rounds up into the exponent
    assert analysis._power_of_ten(-400.5) == "3.162e-401"
    assert analysis._power_of_ten(-math.inf) == "0" and analysis._power_of_ten(math.nan) == "overflow"
    norms = analysis._norms(np.array([[1e200, 1e200], [3.0, 4.0], [np.inf, 0.0]]), axis=1)
    np.testing.assert_allclose(norms[:2], [math.sqrt(2) * 1e200, 5.0])
    assert norms[2] == np.inf
    shares = analysis._shares(np.array([1e308, 1e308]))
    np.testing.assert_allclose(shares, [0.5, 0.5])


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "identity"])
def test_text_reports_are_plain_text(activation):
    """LaTeX belongs in documents: the report writes the local derivative as plain text (ReLU's step
    as [o_k > 0]), and the bound agrees with the table's bound column at gap 1."""
    from symbolic.study import analysis

    text = analysis.table(analysis.analyze(steps=6, activation=activation, w_h=0.5))
    assert "\\" not in text and "LaTeX" not in text and "theta" not in text and "frac" not in text
    line = next(line for line in text.splitlines() if line.startswith("  here: "))
    assert line.startswith("  here: |∂o_k/∂o_(k-1)| = |") and ("[o_k > 0]" in line) == (activation == "relu")


@pytest.mark.parametrize(("activation", "w_h"), [("tanh", 0.5), ("relu", 1.5), ("sigmoid", 3.0)])
def test_the_plot_draws_the_bound_against_what_it_bounds(activation, w_h, monkeypatch, tmp_path):
    """The bound (γ|w_h|)^gap and the measured |Π| share a panel and both start at 1 (the bound is
    never below |Π|); the terms have their own panel; every gap tick is a whole number."""
    pytest.importorskip("matplotlib")
    from symbolic.study import analysis

    figures = []
    monkeypatch.setattr(analysis, "save_figure", lambda figure, path: figures.append(figure))
    monkeypatch.setattr(analysis.pyplot(), "close", lambda figure: None)
    analysis.plot(analysis.analyze(steps=12, activation=activation, w_h=w_h), tmp_path / "a.png")
    (figure,) = figures
    figure.canvas.draw()
    terms, products = figure.axes
    lines = {line.get_label(): line for line in products.get_lines()}
    product = next(line for label, line in lines.items() if "Pi" in label)
    bound = next(line for label, line in lines.items() if label.startswith("bound"))
    assert product.get_ydata()[0] == pytest.approx(1) and bound.get_ydata()[0] == pytest.approx(1)
    assert np.all(np.asarray(bound.get_ydata()) >= np.asarray(product.get_ydata()) * (1 - 1e-12))
    assert {line.get_label() for line in terms.get_lines()} == {r"$\|$term$_j$ for $w_i\|$", r"$|$term$_j$ for $w_h|$"}
    for axes in (terms, products):
        ticks = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
