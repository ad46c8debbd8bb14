"""The matrix BPTT formulas for hidden size H: exact elementwise, 60 digits, and H = 1 is the notes."""

from __future__ import annotations

import pytest
import sympy as sp

from symbolic import derive
from symbolic.derive_matrix import MatrixDerivation
from symbolic.proof import exact_matrix, numeric_matrix

from .conftest import ACTIVATION_NAMES


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_matrix_formulas_equal_elementwise_derivatives(activation, bias):
    derivation = MatrixDerivation(3, activation, hidden=2, inputs=2, bias=bias)
    check = exact_matrix(derivation)
    assert check.passed and "cancels to 0" in check.detail, check
    assert not exact_matrix(derivation, drop_gap=1).passed


@pytest.mark.parametrize(("steps", "hidden", "activation"), [(3, 2, "tanh"), (12, 3, "sigmoid"), (25, 4, "relu")])
def test_matrix_formulas_at_sixty_digits(steps, hidden, activation):
    derivation = MatrixDerivation(steps, activation, hidden=hidden, inputs=2, bias=True)
    assert numeric_matrix(derivation).passed
    assert not numeric_matrix(derivation, drop_gap=1).passed


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_hidden_size_one_is_the_notes_model(activation):
    matrix = MatrixDerivation(3, activation, hidden=1, inputs=3)
    scalar = derive(3, activation)
    u = scalar.unrolled
    rename = {matrix.W_h[0, 0]: u.w_h, matrix.w_o[0]: u.w_o, matrix.y: u.y, matrix.y_hat: u.y_hat}
    rename.update(zip(matrix.W_i, u.w_i))
    for t in range(3):
        rename[matrix.o[t][0]] = u.o[t]
        rename.update(zip(matrix.x[t], u.x[t]))
    for d in range(3):
        assert sp.expand(matrix.gradients["w_i"][0, d].xreplace(rename) - scalar.bptt("w_i", d)) == 0
    assert sp.expand(matrix.gradients["w_h"][0].xreplace(rename) - scalar.bptt("w_h")) == 0
    assert sp.expand(matrix.gradients["w_o"][0].xreplace(rename) - scalar.bptt("w_o")) == 0


def test_jacobian_is_diag_f_prime_times_w_h():
    derivation = MatrixDerivation(2, "tanh", hidden=2, inputs=1)
    o = derivation.o[1]
    expected = sp.Matrix([[1 - o[0] ** 2, 0], [0, 1 - o[1] ** 2]]) * derivation.W_h
    assert sp.simplify(derivation.jacobian(2) - expected) == sp.zeros(2, 2)
