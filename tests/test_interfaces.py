"""``symbolic.verify.interfaces``: one adapter for the three module interfaces (scalar, matrix, dict).

The modules here are written by hand (a tanh RNN with its backward pass worked out by hand, no bptt
code), each against one interface. The adapter's gradients, taken by name, are compared with central
finite differences of the module's own ``loss`` called with the module's own argument convention (the
oracle knows nothing of the adapter); the negative controls are modules with a wrong or misplaced
gradient that ``check_module``, which calls through the adapter, must fail on that parameter.
"""

from __future__ import annotations

import numpy as np
import pytest

from symbolic.codegen import generate
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.verify.check import check_module
from symbolic.verify.check_report import failing
from symbolic.verify.interfaces import (
    DictInterface,
    MatrixInterface,
    ScalarInterface,
    adapt,
    calls,
    kind_of,
    load_module,
)

#: A tanh RNN o_t = tanh(W_i x_t + W_h o_(t-1) + b_h), z = w_o·o_n + b_o, the mean binary cross-entropy,
#: and its backward pass written out by hand. Complex parameters flow through (the complex step).
RNN = '''
import numpy as np

ACTIVATION = "tanh"
INPUT_SIZE = 3
STEPS = 4


def _states(x, w_i, w_h, b_h):
    o = np.zeros((x.shape[0], w_h.shape[0]), dtype=np.result_type(x, w_i, w_h, b_h))
    states = [o]
    for t in range(x.shape[1]):
        o = np.tanh(x[:, t] @ w_i.T + o @ w_h.T + b_h)
        states.append(o)
    return states


def _loss(x, y, w_i, w_h, w_o, b_h, b_o):
    z = _states(x, w_i, w_h, b_h)[-1] @ w_o + b_o
    return np.mean(np.log(1 + np.exp(z)) - y * z)


def _forward(x, w_i, w_h, w_o, b_h, b_o):
    return 1 / (1 + np.exp(-(_states(x, w_i, w_h, b_h)[-1] @ w_o + b_o)))


def _loss_and_grad(x, y, w_i, w_h, w_o, b_h, b_o):
    states = _states(x, w_i, w_h, b_h)
    z = states[-1] @ w_o + b_o
    dz = (1 / (1 + np.exp(-z)) - y) / x.shape[0]
    grads = {"w_i": np.zeros_like(w_i), "w_h": np.zeros_like(w_h), "w_o": states[-1].T @ dz,
             "b_h": np.zeros_like(b_h), "b_o": dz.sum()}
    delta = np.outer(dz, w_o)
    for t in range(x.shape[1], 0, -1):
        da = delta * (1 - states[t] ** 2)
        grads["w_i"] += da.T @ x[:, t - 1]
        grads["w_h"] += da.T @ states[t - 1]
        grads["b_h"] += da.sum(axis=0)
        delta = da @ w_h
    return np.mean(np.log(1 + np.exp(z)) - y * z), grads
'''

#: The notes' interface: w_i (D,), w_h and w_o numbers, gradients in that order.
SCALAR = RNN + '''

def _matrices(w_i, w_h, w_o):
    return np.reshape(w_i, (1, -1)), np.reshape(w_h, (1, 1)), np.reshape(w_o, (1,)), np.zeros(1), 0.0


def loss(x, y, w_i, w_h, w_o):
    return _loss(x, y, *_matrices(w_i, w_h, w_o))


def forward(x, w_i, w_h, w_o):
    return _forward(x, *_matrices(w_i, w_h, w_o))


def loss_and_grad(x, y, w_i, w_h, w_o):
    value, grads = _loss_and_grad(x, y, *_matrices(w_i, w_h, w_o))
    return value, grads["w_i"][0], float(grads["w_h"][0, 0]) * WRONG, float(grads["w_o"][0])
'''

#: The matrix interface: W_i (H, D), W_h (H, H), w_o (H,), biases as keywords, gradients in that order.
MATRIX = RNN + '''
HIDDEN_SIZE = 2
BIAS = True


def loss(x, y, w_i, w_h, w_o, b_h=None, b_o=0.0):
    return _loss(x, y, w_i, w_h, w_o, b_h, b_o)


def forward(x, w_i, w_h, w_o, b_h=None, b_o=0.0):
    return _forward(x, w_i, w_h, w_o, b_h, b_o)


def loss_and_grad(x, y, w_i, w_h, w_o, b_h=None, b_o=0.0):
    value, g = _loss_and_grad(x, y, w_i, w_h, w_o, b_h, b_o)
    return value, g["w_i"], g["w_h"] * WRONG, g["w_o"], g["b_h"], float(g["b_o"])
'''

#: The dict interface, under names of its own.
DICT = RNN + '''
CELL = "toy"
HIDDEN_SIZE = 2
ANALYTIC = True
PARAMS = {"W": (2, 3), "U": (2, 2), "v": (2,), "b": (2,), "c": ()}
_NAMES = {"W": "w_i", "U": "w_h", "v": "w_o", "b": "b_h", "c": "b_o"}


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-0.7, 0.7, size=shape) for name, shape in PARAMS.items()}


def _arguments(params):
    return [params[name] for name in PARAMS]


def loss(x, y, params):
    return _loss(x, y, *_arguments(params))


def forward(x, params):
    return _forward(x, *_arguments(params))


def loss_and_grad(x, y, params):
    value, g = _loss_and_grad(x, y, *_arguments(params))
    grads = {name: np.asarray(g[_NAMES[name]], dtype=float) for name in PARAMS}
    grads["U"] = grads["U"] * WRONG
    return value, grads
'''

SOURCES = {"scalar": SCALAR, "matrix": MATRIX, "dict": DICT}
CLASSES = {"scalar": ScalarInterface, "matrix": MatrixInterface, "dict": DictInterface}
#: The recurrent weight of each interface, which the negative controls get wrong.
RECURRENT = {"scalar": "w_h", "matrix": "w_h", "dict": "U"}


def write(tmp_path, kind: str, wrong: float = 1.0, name: str | None = None):
    path = tmp_path / f"{name or kind}.py"
    path.write_text(SOURCES[kind] + f"\nWRONG = {wrong!r}\n")
    return load_module(path), path


def own_loss(module, kind: str, x, y, params) -> float:
    """The module's ``loss`` called as its interface says, written here without the adapter."""
    if kind == "dict":
        return float(module.loss(x, y, params))
    if kind == "scalar":
        return float(module.loss(x, y, params["w_i"], float(params["w_h"]), float(params["w_o"])))
    return float(module.loss(x, y, params["w_i"], params["w_h"], params["w_o"], b_h=params["b_h"],
                             b_o=float(params["b_o"])))


def finite_differences(module, kind: str, x, y, params, step: float = 1e-6) -> dict:
    """Central differences of the module's own loss in every entry of every parameter."""
    gradients = {}
    for name, value in params.items():
        value = np.asarray(value, dtype=float)
        gradient = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            moved = []
            for sign in (1, -1):
                shifted = value.copy()
                shifted[index] += sign * step
                moved.append(own_loss(module, kind, x, y, {**params, name: shifted}))
            gradient[index] = (moved[0] - moved[1]) / (2 * step)
        gradients[name] = gradient
    return gradients


def test_adapt_tells_the_interfaces_apart(tmp_path):
    shapes = {
        "scalar": {"w_i": (3,), "w_h": (), "w_o": ()},
        "matrix": {"w_i": (2, 3), "w_h": (2, 2), "w_o": (2,), "b_h": (2,), "b_o": ()},
        "dict": {"W": (2, 3), "U": (2, 2), "v": (2,), "b": (2,), "c": ()},
    }
    for kind, expected in shapes.items():
        module, path = write(tmp_path, kind)
        interface = adapt(module, path)
        assert kind_of(module) == kind and type(interface) is CLASSES[kind]
        assert interface.shapes == expected and interface.names == list(expected)
        assert interface.steps == 4 and interface.size == 3 and interface.analytic


@pytest.mark.parametrize("kind", ["scalar", "matrix", "dict"])
def test_adapted_gradients_match_finite_differences(kind, tmp_path):
    module, path = write(tmp_path, kind)
    interface = adapt(module, path)
    rng = np.random.default_rng(1)
    for x, y, params in interface.cases(rng, 3, interface.steps, 2):  # one-hot, then dense
        loss, gradients = interface.loss_and_grad(x, y, params)
        assert abs(float(interface.loss(x, y, params)) - own_loss(module, kind, x, y, params)) < 1e-15
        assert abs(float(loss) - own_loss(module, kind, x, y, params)) < 1e-12
        oracle = finite_differences(module, kind, x, y, params)
        assert list(gradients) == list(oracle)
        for name, want in oracle.items():
            got = np.asarray(gradients[name], dtype=float)
            assert got.shape == interface.shapes[name]
            assert np.max(np.abs(got - want)) <= 1e-7 * max(1.0, np.max(np.abs(want))), name


@pytest.mark.parametrize("kind", ["scalar", "matrix", "dict"])
def test_forward_through_calls(kind, tmp_path):
    """``calls`` needs nothing but the functions: ŷ by name matches the module's own logistic loss."""
    module, path = write(tmp_path, kind)
    x, y, params = next(adapt(module, path).cases(np.random.default_rng(2), 5, 4, 1))
    y_hat = calls(module, kind).forward(x, params)
    own = np.mean(-y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat))
    assert abs(own - own_loss(module, kind, x, y, params)) < 1e-12


def test_init_params_by_name(tmp_path):
    module, path = write(tmp_path, "dict")
    interface = adapt(module, path, seed=5)
    drawn = module.init_params(5)
    assert list(interface.initial) == list(module.PARAMS)
    for name, value in interface.initial.items():
        assert np.array_equal(value, drawn[name]) and value.dtype == np.float64
    interface.initial["W"][0, 0] = 99.0  # a copy: the module's draw is not touched
    assert module.init_params(5)["W"][0, 0] != 99.0


def test_one_module_two_interfaces(tmp_path):
    """bptt codegen's RNN at H = 2 with biases takes the matrix and the dict forms: the adapter gives
    the same loss and gradients through either."""
    path = tmp_path / "rnn_h2.py"
    path.write_text(generate(Model(steps=3, activation="tanh", hidden=2, bias=True), "unrolled"))
    module = load_module(path)
    assert kind_of(module) == "dict"
    matrix, by_name = adapt(module, path, kind="matrix"), adapt(module, path, kind="dict")
    x, y, params = next(matrix.cases(np.random.default_rng(3), 3, 3, 1))
    assert set(by_name.shapes) == set(matrix.shapes)
    loss, gradients = matrix.loss_and_grad(x, y, params)
    dict_loss, dict_gradients = by_name.loss_and_grad(x, y, params)
    assert abs(float(loss) - float(dict_loss)) < 1e-14
    for name, gradient in gradients.items():
        assert np.allclose(gradient, dict_gradients[name], rtol=1e-12, atol=1e-15), name


@pytest.mark.parametrize("kind", ["scalar", "matrix", "dict"])
def test_check_passes_the_modules_and_fails_a_wrong_gradient(kind, tmp_path):
    module, path = write(tmp_path, kind)
    assert check_module(module, str(path)).passed
    module, path = write(tmp_path, kind, wrong=1.001, name=f"{kind}_wrong")
    report = check_module(module, str(path))
    assert not report.passed and not report.problems
    for method in report.errors:
        assert failing(report, method) == [RECURRENT[kind]]
        assert 5e-4 < report.errors[method][RECURRENT[kind]] < 2e-3


def test_check_fails_gradients_in_the_wrong_order(tmp_path):
    """A scalar module that returns (loss, dw_i, dw_o, dw_h): both numbers, so only the comparison by
    name through the adapter can tell."""
    path = tmp_path / "swapped.py"
    path.write_text(SCALAR.replace('float(grads["w_h"][0, 0]) * WRONG, float(grads["w_o"][0])',
                                   'float(grads["w_o"][0]), float(grads["w_h"][0, 0])') + "\nWRONG = 1.0\n")
    report = check_module(load_module(path), str(path))
    assert not report.passed
    assert failing(report, "finite differences") == ["w_h", "w_o"]


def test_adapt_names_a_missing_constant(tmp_path):
    module, path = write(tmp_path, "matrix")
    module.INPUT_SIZE = "3"
    with pytest.raises(UsageError, match="INPUT_SIZE must be a positive whole number"):
        adapt(module, path)
