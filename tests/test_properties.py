"""Property tests (Hypothesis): random n, activation, weights and batches.

* loss_and_grad against the complex step (analytic activations: exact to rounding) or central
  finite differences (ReLU, with every pre-activation kept away from the kink);
* unrolled and loop modes give the same loss and gradient.

Hidden size 1 only: larger hidden sizes are refused until they are supported (tests/test_bad_input.py).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from symbolic.activations import ACTIVATIONS
from symbolic.codegen import load
from symbolic.model import Model

from .conftest import ACTIVATION_NAMES

D = 3
finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw):
    steps = draw(st.integers(1, 30))
    batch = draw(st.integers(1, 4))
    x = draw(arrays(np.float64, (batch, steps, D), elements=finite))
    y = draw(arrays(np.float64, (batch,), elements=st.sampled_from([0.0, 1.0, 0.25])))
    w_i = draw(arrays(np.float64, (D,), elements=finite))
    w_h = draw(st.floats(-1.5, 1.5))
    w_o = draw(st.floats(-3.0, 3.0))
    return steps, x, y, w_i, w_h, w_o


def _pre_activations(activation, x, w_i, w_h):
    f = {"relu": lambda a: np.maximum(a, 0.0)}.get(activation)
    o, out = np.zeros(x.shape[0]), []
    for t in range(x.shape[1]):
        a = x[:, t] @ w_i + w_h * o
        out.append(a)
        o = f(a) if f else a
    return np.array(out)


def _numerical_gradient(module, x, y, w_i, w_h, w_o, analytic):
    def derivative(shifted):
        if analytic:
            return np.imag(shifted(1e-20j)) / 1e-20
        h = 1e-6
        return (shifted(h) - shifted(-h)) / (2 * h)

    loss = module.loss
    parts = [derivative(lambda s, e=e: loss(x, y, w_i + s * e, w_h, w_o)) for e in np.eye(D)]
    parts.append(derivative(lambda s: loss(x, y, w_i, w_h + s, w_o)))
    parts.append(derivative(lambda s: loss(x, y, w_i, w_h, w_o + s)))
    return np.array(parts, dtype=float)


@settings(max_examples=60, deadline=None)
@given(activation=st.sampled_from(ACTIVATION_NAMES), problem=problems())
def test_loss_and_grad_matches_complex_step_or_finite_differences(activation, problem):
    _, x, y, w_i, w_h, w_o = problem
    analytic = ACTIVATIONS[activation].analytic
    if not analytic:
        assume(np.min(np.abs(_pre_activations(activation, x, w_i, w_h))) > 1e-3)
    module = load(Model(steps=1, activation=activation), "loop")
    _, dw_i, dw_h, dw_o = module.loss_and_grad(x, y, w_i, w_h, w_o)
    got = np.array([*dw_i, dw_h, dw_o])
    want = _numerical_gradient(module, x, y, w_i, w_h, w_o, analytic)
    tolerance = 1e-10 if analytic else 1e-6
    assert np.max(np.abs(got - want)) <= tolerance * max(np.max(np.abs(want)), 1e-3), (got, want)


@settings(max_examples=40, deadline=None)
@given(activation=st.sampled_from(ACTIVATION_NAMES), problem=problems())
def test_unrolled_and_loop_modes_agree(activation, problem):
    steps, x, y, w_i, w_h, w_o = problem
    unrolled = load(Model(steps=steps, activation=activation), "unrolled")
    loop = load(Model(steps=1, activation=activation), "loop")
    a = unrolled.loss_and_grad(x, y, w_i, w_h, w_o)
    b = loop.loss_and_grad(x, y, w_i, w_h, w_o)
    assert np.isclose(a[0], b[0], rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose([*a[1], a[2], a[3]], [*b[1], b[2], b[3]], rtol=1e-12, atol=1e-14)
