"""bptt analyze for hidden size H > 1 (and --bias): Jacobian products, the Pascanu–Mikolov–Bengio
condition and the regime, against an independent oracle.

The oracle is a plain NumPy forward pass written here (no generated code, no SymPy); f′ is taken by
central differences of f itself, the Jacobian products are multiplied out directly (no rescaling)
and their spectral norms taken with numpy.linalg.norm(…, 2).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symbolic.codegen import load
from symbolic.errors import UsageError
from symbolic.model import VOCABULARY
from symbolic.study import analysis
from symbolic.study.data import encode

from .conftest import run_bptt as bptt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FUNCTIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "relu": lambda a: np.maximum(a, 0.0),
    "identity": lambda a: a,
}
GAMMA = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "identity": 1.0}


def loop_loader(model):
    """One loop module for every length (fast: Hypothesis draws many lengths)."""
    return load(replace(model, steps=1), "loop")


def oracle_forward(words, activation, weights):
    """(pre-activations a_t (n, H), states o_t (n, H)) of o_t = f(W_i x_t + W_h o_{t−1} + b_h)."""
    f = FUNCTIONS[activation]
    x = encode(words)
    b_h = weights.get("b_h", np.zeros(len(weights["w_o"])))
    previous = np.zeros(len(weights["w_o"]))
    pre, states = [], []
    for x_t in x:
        a = weights["w_i"] @ x_t + weights["w_h"] @ previous + b_h
        previous = f(a)
        pre.append(a)
        states.append(previous)
    return np.array(pre), np.array(states)


def oracle_loss(words, y, activation, weights):
    z = float(weights["w_o"] @ oracle_forward(words, activation, weights)[1][-1] + weights.get("b_o", 0.0))
    return float(np.logaddexp(0.0, z) - y * z)


def oracle_jacobian_norms(words, activation, weights):
    """‖J_n ⋯ J_{j+1}‖₂ for j = 1..n, J_k = diag(f′(a_k)) W_h, f′ by central differences."""
    pre, _ = oracle_forward(words, activation, weights)
    f, h = FUNCTIONS[activation], 1e-6
    n, H = pre.shape
    norms = np.ones(n)
    product = np.eye(H)
    for j in range(n - 1, 0, -1):
        derivative = (f(pre[j] + h) - f(pre[j] - h)) / (2 * h)
        product = product @ (np.diag(derivative) @ weights["w_h"])
        norms[j - 1] = np.linalg.norm(product, 2)
    return norms


def random_weights(rng, hidden, scale, bias=False, positive_inputs=False):
    w_i = rng.uniform(0.1, 0.9, size=(hidden, 3)) if positive_inputs else rng.normal(0, 0.7, size=(hidden, 3))
    weights = {
        "w_i": w_i,
        "w_h": scale * rng.normal(size=(hidden, hidden)) / math.sqrt(hidden),
        "w_o": rng.normal(size=hidden),
    }
    if bias:
        weights.update(b_h=rng.normal(0, 0.3, size=hidden), b_o=float(rng.normal()))
    return weights


# -- the measured Jacobian products ----------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("bias", [False, True])
def test_jacobian_norms_match_an_independent_computation(activation, bias):
    rng = np.random.default_rng(5)
    weights = random_weights(rng, 4, 1.3, bias)
    words = analysis.random_words(12, seed=5)
    result = analysis.analyze_matrix(activation=activation, hidden=4, bias=bias, weights=weights, words=words)
    expected = oracle_jacobian_norms(words, activation, weights)
    np.testing.assert_allclose(result.jacobian_norms, expected, rtol=1e-7)
    np.testing.assert_allclose(result.singular_values, np.linalg.svd(weights["w_h"], compute_uv=False))
    # f′(a_t) from the generated module, against the oracle's central differences.
    pre, _ = oracle_forward(words, activation, weights)
    f = FUNCTIONS[activation]
    np.testing.assert_allclose(
        result.derivatives, (f(pre + 1e-6) - f(pre - 1e-6)) / 2e-6, rtol=1e-7, atol=1e-9
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    activation=st.sampled_from(sorted(FUNCTIONS)),
    hidden=st.sampled_from([2, 3, 5]),
    bias=st.booleans(),
    scale=st.floats(0.05, 4.0),
    seed=st.integers(0, 2**32 - 1),
    words=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=30),
)
def test_jacobian_norms_never_exceed_the_bound(activation, hidden, bias, scale, seed, words):
    """‖Π_{k=j+1..n} diag(f′(a_k)) W_h‖₂ ≤ (γ σ_max(W_h))^gap for any W_h and input."""
    weights = random_weights(np.random.default_rng(seed), hidden, scale, bias)
    result = analysis.analyze_matrix(
        activation=activation, hidden=hidden, bias=bias, weights=weights, words=words, loader=loop_loader
    )
    sigma_max = np.linalg.norm(weights["w_h"], 2)
    assert result.bound_value == pytest.approx(GAMMA[activation] * sigma_max, rel=1e-12)
    limit = np.log10(GAMMA[activation] * sigma_max) * result.gaps
    assert np.all(result.log10_jacobian_norms <= limit + 1e-9)
    if GAMMA[activation] * sigma_max < 1:
        assert result.regime == "vanishing"


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.3])
def test_identity_activation_with_scaled_orthogonal_w_h_is_exactly_s_to_the_gap(scale):
    """f = id, W_h = s·Q: every Jacobian is s·Q, and ‖(sQ)^g‖₂ = s^g exactly."""
    result = analysis.analyze_matrix(steps=60, activation="identity", hidden=8, w_h_scale=scale, seed=3)
    np.testing.assert_allclose(result.singular_values, scale, rtol=1e-12)
    np.testing.assert_allclose(result.jacobian_norms, scale ** result.gaps.astype(float), rtol=1e-10)
    assert result.growth == pytest.approx(scale, rel=1e-10)
    assert result.regime == {0.7: "vanishing", 1.0: "stable", 1.3: "exploding"}[scale]


def test_relu_with_scaled_orthogonal_w_h():
    """ReLU, W_h = s·Q: ‖Π‖₂ ≤ s^gap always; equal when every unit is on (Q a permutation, inputs > 0),
    and the measured norms are the oracle's either way."""
    rng = np.random.default_rng(8)
    words = analysis.random_words(40, seed=8)
    permutation = np.eye(6)[rng.permutation(6)]
    on = {"w_i": rng.uniform(0.1, 0.9, size=(6, 3)), "w_h": 1.5 * permutation, "w_o": rng.normal(size=6)}
    result = analysis.analyze_matrix(activation="relu", hidden=6, weights=on, words=words)
    np.testing.assert_allclose(result.jacobian_norms, 1.5 ** result.gaps.astype(float), rtol=1e-12)
    assert result.regime == "exploding"
    drawn = analysis.analyze_matrix(activation="relu", hidden=6, w_h_scale=1.5, words=words, seed=8)
    assert np.all(drawn.log10_jacobian_norms <= np.log10(1.5) * drawn.gaps + 1e-9)
    expected = oracle_jacobian_norms(words, "relu", drawn.weights)
    np.testing.assert_allclose(drawn.jacobian_norms, expected, rtol=1e-9, atol=1e-300)


def test_orthogonal_is_orthogonal_and_reproducible():
    q = analysis.orthogonal(7, seed=4)
    np.testing.assert_allclose(q @ q.T, np.eye(7), atol=1e-12)
    np.testing.assert_array_equal(q, analysis.orthogonal(7, seed=4))
    assert not np.allclose(q, analysis.orthogonal(7, seed=5))


def test_long_exploding_products_do_not_overflow():
    result = analysis.analyze_matrix(steps=3000, activation="identity", hidden=4, w_h_scale=1.5, seed=1)
    assert result.log10_jacobian_norms[0] == pytest.approx(2999 * math.log10(1.5), rel=1e-9)
    assert result.regime == "exploding"
    assert json.dumps(result.as_json(), allow_nan=False)


def test_jacobian_log_norms_zero_product():
    derivatives = np.ones((5, 2))
    derivatives[2] = 0.0  # every unit off at step 3: the products through it are zero
    logs = analysis.jacobian_log_norms(derivatives, np.eye(2))
    np.testing.assert_allclose(logs[2:], 0.0, atol=1e-12)
    assert np.all(np.isneginf(logs[:2]))


# -- the terms --------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_terms_sum_to_the_finite_difference_gradient(activation):
    rng = np.random.default_rng(2)
    weights = random_weights(rng, 3, 0.9, bias=True, positive_inputs=True)
    words = analysis.random_words(7, seed=2)
    result = analysis.analyze_matrix(activation=activation, hidden=3, bias=True, weights=weights, words=words)
    for name, terms in (("w_h", result.terms_w_h), ("w_i", result.terms_w_i)):
        expected = np.zeros_like(weights[name])
        for index in np.ndindex(expected.shape):
            plus, minus = ({**weights, name: weights[name].copy()} for _ in range(2))
            plus[name][index] += 1e-6
            minus[name][index] -= 1e-6
            expected[index] = (
                oracle_loss(words, result.label, activation, plus)
                - oracle_loss(words, result.label, activation, minus)
            ) / 2e-6
        np.testing.assert_allclose(terms.sum(axis=0), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result.norms_w_i, np.linalg.norm(result.terms_w_i, axis=(1, 2)))
    assert result.shares.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("growth", "bound_value", "steps", "regime"),
    [
        (1.2, 0.9, 10, "vanishing"),  # the bound decides first
        (1.2, 1.5, 10, "exploding"),
        (0.5, 1.5, 10, "vanishing"),
        (0.0, 1.5, 10, "vanishing"),
        (1.01, 1.5, 10, "stable"),
        (math.nan, 1.5, 1, "stable"),
    ],
)
def test_classify_growth(growth, bound_value, steps, regime):
    assert analysis.classify_growth(growth, bound_value, steps)[0] == regime


def test_mistakes_are_usage_errors():
    with pytest.raises(UsageError, match="too large to analyze"):
        analysis.analyze_matrix(steps=100, hidden=1000)
    with pytest.raises(UsageError, match="shapes"):
        analysis.analyze_matrix(
            steps=3, hidden=2, weights={"w_i": np.ones((2, 3)), "w_h": 1.0, "w_o": np.ones(2)}
        )
    with pytest.raises(UsageError, match="--w-h-scale"):
        analysis.analyze_matrix(steps=3, hidden=2, w_h_scale=math.inf)
    with pytest.raises(UsageError, match="does not match"):
        analysis.analyze_matrix(steps=3, hidden=2, words=["cat"])


# -- through the command line ----------------------------------------------------------------------




def test_cli_table_json_and_plot(tmp_path):
    text = bptt("analyze", "--hidden", "8", "-n", "20", "--w-h-scale", "0.5")
    assert text.returncode == 0, text.stderr
    assert "singular values of W_h: 0.5, 0.5" in text.stdout
    assert "σ_max < 1/γ: sufficient for vanishing" in text.stdout and "regime: vanishing" in text.stdout
    plot = tmp_path / "norms.png"
    run = bptt(
        "analyze",
        "--hidden",
        "8",
        "-n",
        "20",
        "-a",
        "identity",
        "--w-h-scale",
        "1.2",
        "--bias",
        "--json",
        "--plot",
        str(plot),
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["regime"] == "exploding" and data["hidden"] == 8 and data["bias"]
    np.testing.assert_allclose(data["singular_values"], 1.2)
    np.testing.assert_allclose(data["jacobian_norms"], 1.2 ** (19 - np.arange(20.0)), rtol=1e-10)
    assert data["condition"]["necessary_for_exploding"] and not data["condition"]["sufficient_for_vanishing"]
    assert np.array(data["weights"]["w_h"]).shape == (8, 8) and np.array(data["terms_w_i"]).shape == (
        20,
        8,
        3,
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("arguments", "phrase"),
    [
        (("--hidden", "2", "--w-h", "1"), "--w-h sets a weight of the scalar model"),
        (("--hidden", "2", "--w-i", "1,2,3"), "--w-i sets a weight of the scalar model"),
        (("--bias", "--w-o", "1"), "--w-o sets a weight of the scalar model"),
        (("--hidden", "2", "--w-h-scale", "big"), "--w-h-scale must be a number"),
        (("--hidden", "2", "--w-h-scale", "nan"), "--w-h-scale must be a finite number"),
        (("--w-h", "1", "--w-h-scale", "1"), "not allowed with argument --w-h"),
        (("--hidden", "3000"), "too large to analyze"),
        (("--hidden", "x"), "hidden size must be a positive whole number"),
    ],
)
def test_cli_mistakes_are_one_line(arguments, phrase, tmp_path):
    run = bptt("analyze", "-n", "5", *arguments, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("bptt: error:")
    assert phrase in run.stderr


def test_scalar_w_h_scale_is_w_h():
    """For H = 1 without biases, --w-h-scale s is the notes' w_h = s: the same report as --w-h s."""
    assert (
        bptt("analyze", "-n", "6", "--w-h-scale", "0.7").stdout
        == bptt("analyze", "-n", "6", "--w-h", "0.7").stdout
    )
