"""The derivation against independent oracles: finite differences and hand-derived small cases."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symbolic import derive
from symbolic.activations import ACTIVATIONS
from symbolic.derive import Derivation
from symbolic.model import Model

from .conftest import ACTIVATION_NAMES

NUMPY_F = {
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0.0),
    "identity": lambda z: z,
}


def numpy_loss(activation, x, y, w_i, w_h, w_o):
    """The notes' loss, written directly from the model equations (independent of the derivation)."""
    f = NUMPY_F[activation]
    o = 0.0
    for x_t in x:
        o = f(x_t @ w_i + w_h * o)
    y_hat = 1 / (1 + np.exp(-w_o * o))
    return -y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat)


def evaluate_derived(derivation: Derivation, x, y, w_i, w_h, w_o):
    """The derived Σ/Π gradients evaluated in float64, with o_t from the forward recursion."""
    u = derivation.unrolled
    f = NUMPY_F[derivation.model.activation]
    values = {u.w_h: w_h, u.w_o: w_o, u.y: y}
    values.update(zip(u.w_i, w_i))
    o = 0.0
    for t, x_t in enumerate(x, start=1):
        values.update(zip(u.x[t - 1], x_t))
        o = f(x_t @ w_i + w_h * o)
        values[u.o[t - 1]] = o
    values[u.y_hat] = 1 / (1 + np.exp(-w_o * o))
    gradient = [derivation.bptt("w_i", d) for d in range(len(w_i))]
    gradient += [derivation.bptt("w_h"), derivation.bptt("w_o")]
    return np.array([float(g.subs(values)) for g in gradient])


def central_differences(activation, x, y, w_i, w_h, w_o, step=1e-6):
    point = np.array([*w_i, w_h, w_o], dtype=float)

    def loss_at(p):
        return numpy_loss(activation, x, y, p[:-2], p[-2], p[-1])

    gradient = np.zeros_like(point)
    for index in range(len(point)):
        shift = np.zeros_like(point)
        shift[index] = step
        gradient[index] = (loss_at(point + shift) - loss_at(point - shift)) / (2 * step)
    return gradient


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_gradients_match_finite_differences(activation, steps):
    rng = np.random.default_rng(steps * 7 + len(activation))
    derivation = derive(steps, activation)
    for _ in range(3):
        x = rng.normal(size=(steps, 3))
        w_i = rng.uniform(0.2, 1.0, size=3) if activation == "relu" else rng.normal(size=3)
        w_h, w_o, y = rng.uniform(-0.9, 0.9), rng.normal(), float(rng.integers(0, 2))
        if activation == "relu":
            x = np.abs(x)  # keep every pre-activation away from the kink
            w_h = abs(w_h)
        derived = evaluate_derived(derivation, x, y, w_i, w_h, w_o)
        numeric = central_differences(activation, x, y, w_i, w_h, w_o)
        np.testing.assert_allclose(derived, numeric, rtol=1e-6, atol=1e-8)


def test_hand_derived_one_step_case():
    """n = 1: ∂L/∂w_h = 0 (o_0 = 0), ∂L/∂w_i = (ŷ − y) w_o (1 − o_1²) x_1, ∂L/∂w_o = (ŷ − y) o_1."""
    derivation = derive(1, "tanh")
    u = derivation.unrolled
    y_hat, y, w_o, o_1 = u.y_hat, u.y, u.w_o, u.o[0]
    assert derivation.bptt("w_h") == 0
    for d in range(3):
        expected = (y_hat - y) * w_o * (1 - o_1**2) * u.x[0][d]
        assert sp.expand(derivation.bptt("w_i", d) - expected) == 0
    assert sp.expand(derivation.bptt("w_o") - (y_hat - y) * o_1) == 0


def test_local_derivatives_per_activation():
    """∂o_k/∂o_{k−1} written with the output, as the notes and the activation table say."""
    o, w_h = sp.Symbol("o_t"), sp.Symbol("w_h")
    expected = {"tanh": (1 - o**2) * w_h, "sigmoid": o * (1 - o) * w_h, "relu": sp.Heaviside(o, 0) * w_h,
                "identity": w_h}
    for name, value in expected.items():
        derivation = derive(3, name)
        step = derivation.unrolled.step
        assert sp.expand(derivation.step_jacobian.xreplace({step.o: o}) - value) == 0, name


def test_gamma_is_sup_of_derivative():
    assert {name: a.gamma for name, a in ACTIVATIONS.items()} == {
        "tanh": 1, "sigmoid": sp.Rational(1, 4), "relu": 1, "identity": 1,
    }


def test_output_factor_is_y_hat_minus_y_times_w_o():
    derivation = derive(3)
    u = derivation.unrolled
    assert sp.expand(derivation.output_factor - (u.y_hat - u.y) * u.w_o) == 0


def test_short_and_long_term_labels():
    terms = derive(3).terms()
    assert [(t.j, t.kind) for t in terms] == [(3, "short-term"), (2, "long-term"), (1, "long-term")]


def test_thousand_steps_is_fast_and_keeps_states_symbolic():
    import time

    start = time.perf_counter()
    derivation = Derivation(Model(steps=1000))
    elapsed = time.perf_counter() - start
    assert len(derivation.unrolled.o) == 1000
    assert derivation.jacobian(1000).free_symbols == {derivation.unrolled.o[-1], derivation.unrolled.w_h}
    assert elapsed < 60  # a generous guard against the O(n²) path, not a benchmark
