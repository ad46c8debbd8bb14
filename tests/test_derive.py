"""The derivation against independent oracles: finite differences and hand-derived small cases."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symbolic import derive
from symbolic.activations import ACTIVATIONS
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.notes.derive import Derivation, OutOfRange

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


def test_thousand_steps_keep_states_symbolic():
    derivation = Derivation(Model(steps=1000))
    assert len(derivation.unrolled.o) == 1000
    assert derivation.jacobian(1000).free_symbols == {derivation.unrolled.o[-1], derivation.unrolled.w_h}


# -- indexed accessors: a timestep or component out of range is a UsageError naming the range -------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: d.jacobian(0), r"jacobian\(0\): the timestep k must be in 1..3 \(n = 3 steps\), got 0"),
        (lambda d: d.jacobian(4), r"jacobian\(4\): the timestep k must be in 1..3"),
        (lambda d: d.jacobian(-1), r"must be in 1..3 .*got -1"),
        (lambda d: d.immediate("w_h", 0), r"immediate\(0\): the timestep j must be in 1..3"),
        (lambda d: d.immediate("w_i", 4, 0), r"immediate\(4\): the timestep j must be in 1..3"),
        (lambda d: d.immediate("w_i", 1, 3), r"component 3 of w_i does not exist: w_i has 3 components \(index 0..2\)"),
        (lambda d: d.immediate("w_i", 1, -1), r"component -1 of w_i does not exist"),
        (lambda d: d.term("w_h", 0), r"term\(0\): the timestep j must be in 1..3"),
        (lambda d: d.term("w_i", 4, 1), r"term\(4\): the timestep j must be in 1..3"),
        (lambda d: d.abstract_term("w_h", 0), r"abstract_term\(0\): the timestep j must be in 1..3"),
        (lambda d: d.bptt("w_i", 3), r"component 3 of w_i does not exist"),
        (lambda d: d.bptt("w_h", 1), r"component 1 of w_h does not exist: w_h has 1 component \(index 0\)"),
        (lambda d: d.bptt("w_o", 1), r"component 1 of w_o does not exist"),
        (lambda d: d.expanded("w_i", 5), r"component 5 of w_i does not exist"),
    ],
)
def test_out_of_range_indices_name_the_valid_range(call, message):
    derivation = derive(3)
    with pytest.raises(OutOfRange, match=message) as raised:
        call(derivation)
    assert isinstance(raised.value, UsageError) and isinstance(raised.value, IndexError)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: d.jacobian(2.5), r"the timestep k must be a whole number from 1 to 3"),
        (lambda d: d.jacobian(True), r"the timestep k must be a whole number"),
        (lambda d: d.term("w_h", "2"), r"the timestep j must be a whole number"),
        (lambda d: d.bptt("w_x"), r"unknown parameter 'w_x': choose one of w_i, w_h, w_o"),
        (lambda d: d.expanded("W_h"), r"unknown parameter 'W_h'"),
        (lambda d: d.immediate("w_o", 1), r"'w_o' is not a hidden-state weight .*bptt\('w_o'\)"),
        (lambda d: d.term("w_x", 1), r"unknown parameter 'w_x': choose one of w_i, w_h$"),
        (lambda d: d.bptt("w_i", 0.0), r"the component of w_i must be a whole number from 0 to 2"),
    ],
)
def test_wrong_index_types_and_names_are_usage_errors(call, message):
    with pytest.raises(UsageError, match=message):
        call(derive(3))


def test_every_valid_index_is_accepted():
    """The ranges are exactly 1..n and 0..D−1: the first and last of each work (numpy integers too)."""
    derivation = derive(3)
    u = derivation.unrolled
    assert derivation.jacobian(1) == derivation.jacobian(np.int64(1))
    assert derivation.jacobian(3).free_symbols == {u.o[2], u.w_h}
    assert derivation.immediate("w_i", 3, 2).free_symbols >= {u.x[2][2]}
    assert derivation.term("w_i", 1) != 0 and derivation.abstract_term("w_i", 3) is not None
    assert derivation.bptt("w_i", 2) == derivation.bptt("w_i", np.int8(2))
