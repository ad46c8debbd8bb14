"""Generated loss and loss_and_grad at extreme points, against an independent 50-digit mpmath oracle.

The oracle runs the notes' recursion o_t = f(w_i·x_t + w_h o_(t−1)) in mpmath at 50 digits and
differentiates the mean binary cross-entropy with ``mpmath.diff``: it shares no code with the
derivation or the generated module. The points: logits up to ±1e4, inputs up to 1e3 in magnitude,
weights that drive tanh and sigmoid deep into saturation. Any NumPy warning fails these tests.

Accuracy: float64 loss to 1e-13 relative; each gradient component to 1e-12 relative, or within
1e-15 of the gradient's largest component (a saturated step's f′ = 1 − o² is written with the stored
output, so components ~1e-40 come out as 0 — absolutely exact, relatively not). float32 inputs give
float32 results accurate to 1e-5 (loss) and 1e-4 of the largest component (gradient).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.model import Model

from .conftest import ACTIVATION_NAMES

STEPS = 6
pytestmark = pytest.mark.filterwarnings("error")


def _f(activation, a):
    if activation == "tanh":
        return mpmath.tanh(a)
    if activation == "sigmoid":
        return 1 / (1 + mpmath.exp(-a))
    if activation == "relu":
        return a if a > 0 else mpmath.mpf(0)
    return a


def _softplus(z):
    return z + mpmath.log1p(mpmath.exp(-z)) if z > 0 else mpmath.log1p(mpmath.exp(z))


def _loss(x, y, w_i, w_h, w_o, activation):
    total = mpmath.mpf(0)
    for sequence, label in zip(x, y):
        o = mpmath.mpf(0)
        for x_t in sequence:
            o = _f(activation, mpmath.fsum(w * v for w, v in zip(w_i, x_t)) + w_h * o)
        z = w_o * o
        total += label * _softplus(-z) + (1 - label) * _softplus(z)
    return total / len(x)


def oracle(x, y, w_i, w_h, w_o, activation):
    """(loss, [dL/dw_i..., dL/dw_h, dL/dw_o]) as floats, from 50-digit mpmath."""
    with mpmath.workdps(50):
        mpf = mpmath.mpf
        X = [[[mpf(float(v)) for v in row] for row in seq] for seq in np.asarray(x, dtype=float)]
        Y = [mpf(float(v)) for v in y]
        Wi, Wh, Wo = [mpf(float(v)) for v in w_i], mpf(float(w_h)), mpf(float(w_o))
        value = _loss(X, Y, Wi, Wh, Wo, activation)
        gradient = [
            mpmath.diff(lambda v, d=d: _loss(X, Y, Wi[:d] + [v] + Wi[d + 1 :], Wh, Wo, activation), Wi[d])
            for d in range(len(Wi))
        ]
        gradient.append(mpmath.diff(lambda v: _loss(X, Y, Wi, v, Wo, activation), Wh))
        gradient.append(mpmath.diff(lambda v: _loss(X, Y, Wi, Wh, v, activation), Wo))
        return float(value), np.array([float(g) for g in gradient])


def _points(activation):
    rng = np.random.default_rng(sum(map(ord, activation)))
    one_hot = np.eye(3)[rng.integers(0, 3, size=(4, STEPS))]
    saturating = activation in ("tanh", "sigmoid")
    return {
        # |w_o o_n| up to 1e4, labels right and wrong
        "logits ±1e4": (one_hot, [0.0, 1.0, 1.0, 0.0], [0.9, -0.7, 1.1], 0.6, 1e4 if saturating else 2e3),
        "inputs 1e3": (
            rng.uniform(-1e3, 1e3, size=(4, STEPS, 3)),
            [0.0, 1.0, 0.5, 1.0],
            [0.3, -0.2, 0.1],
            0.5,
            0.8 if activation != "identity" else 1e-3,
        ),
        "saturating weights": (
            rng.normal(size=(4, STEPS, 3)),
            [1.0, 0.0, 1.0, 0.0],
            [20.0, -30.0, 25.0],
            40.0 if saturating else 1.5,
            3.0,
        ),
    }


CASES = [(a, name) for a in ACTIVATION_NAMES for name in ("logits ±1e4", "inputs 1e3", "saturating weights")]


def _gradient(result):
    return np.array([*result[1], result[2], result[3]], dtype=float)


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize(("activation", "point"), CASES)
def test_float64_matches_50_digits(activation, point, mode):
    x, y, w_i, w_h, w_o = _points(activation)[point]
    x, y, w_i = np.asarray(x), np.asarray(y), np.asarray(w_i)
    want_loss, want = oracle(x, y, w_i, w_h, w_o, activation)
    module = load(Model(steps=STEPS, activation=activation), mode)
    result = module.loss_and_grad(x, y, w_i, w_h, w_o)
    got = _gradient(result)
    assert np.all(np.isfinite(got)) and np.isfinite(result[0])
    for loss in (result[0], module.loss(x, y, w_i, w_h, w_o)):
        assert abs(loss - want_loss) <= 1e-13 * abs(want_loss)
    scale = np.max(np.abs(want))
    assert np.all(np.abs(got - want) <= 1e-12 * np.abs(want) + 1e-15 * scale), (got, want)


@pytest.mark.parametrize(("activation", "point"), CASES)
def test_float32_inputs_give_float32_accurate_results(activation, point):
    x, y, w_i, w_h, w_o = _points(activation)[point]
    x32, y32, w_i32 = (np.asarray(v, dtype=np.float32) for v in (x, y, w_i))
    w_h32, w_o32 = np.float32(w_h), np.float32(w_o)
    want_loss, want = oracle(x32, y32, w_i32, w_h32, w_o32, activation)  # at the float32 inputs
    module = load(Model(steps=STEPS, activation=activation), "loop")
    result = module.loss_and_grad(x32, y32, w_i32, w_h32, w_o32)
    assert result[1].dtype == np.float32
    assert abs(result[0] - want_loss) <= 1e-5 * abs(want_loss)
    got = _gradient(result)
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want)), (got, want)


def test_the_oracle_catches_a_wrong_gradient():
    """Negative control: the comparison above rejects a gradient off by 1e-9."""
    x, y, w_i, w_h, w_o = _points("tanh")["inputs 1e3"]
    x, y, w_i = np.asarray(x), np.asarray(y), np.asarray(w_i)
    _, want = oracle(x, y, w_i, w_h, w_o, "tanh")
    got = _gradient(load(Model(steps=STEPS, activation="tanh"), "loop").loss_and_grad(x, y, w_i, w_h, w_o))
    got[-1] *= 1 + 1e-9
    assert not np.all(np.abs(got - want) <= 1e-12 * np.abs(want) + 1e-15 * np.max(np.abs(want)))
