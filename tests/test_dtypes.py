"""Generated modules compute in at least float64: narrow inputs neither wrap around nor overflow.

Bool, integer and float16 inputs are converted to float64 by the shared validation (the macro
``numbers`` in templates/numpy/macros.j2, which every NumPy template and, through the copied
validation, every Numba module uses). The oracle here is an independent float64 forward pass written
from the model equations, differentiated by the complex step, on the *same* numbers given in
float64. Each case first shows that its inputs would go wrong in their own dtype (int8 16·16 wraps to
0, a float16 300·300 overflows), so a module that computed in the input's dtype fails the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.model import CELLS, Model

STEP = 1e-30  # complex step

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "relu": lambda a: np.where(np.real(a) > 0, a, 0),  # analytic away from the kink
    "identity": lambda a: a,
}

# dtype → (x entries, w_i entries): products or sums that the dtype cannot hold.
NARROW = {
    "int8": (16, 16),  # 16·16 = 256 wraps to 0
    "uint8": (16, 16),
    "int16": (256, 256),  # 65536 wraps to 0
    "bool": (True, True),  # bool @ bool is a logical or: 1 instead of 3
    "float16": (300.0, 300.0),  # 90000 overflows float16 (max 65504)
}


def narrow_inputs(dtype: str, batch: int = 2, steps: int = 3, inputs: int = 3):
    """x (B, n, D) and w_i (D,) in ``dtype``, all entries the table's values or 0."""
    x_value, w_value = NARROW[dtype]
    pattern = np.ones((batch, steps, inputs), bool)
    pattern[0, 1, 2] = pattern[1, 0, 0] = False
    x = np.where(pattern, x_value, 0).astype(dtype)
    w_i = np.full(inputs, w_value, dtype=dtype)
    return x, w_i


def test_the_inputs_go_wrong_in_their_own_dtype():
    """Negative control: computed in the input dtype, w_i·x_t is wrong for every case of NARROW."""
    for dtype in NARROW:
        x, w_i = narrow_inputs(dtype)
        with np.errstate(over="ignore"):
            narrow = (x @ w_i).astype(np.float64)
        wide = x.astype(np.float64) @ w_i.astype(np.float64)
        assert not np.allclose(narrow, wide), dtype


def softplus(z):
    return np.log1p(np.exp(z))  # the test's logits are small: no overflow, analytic for the step


def rnn_loss(x, y, w_i, w_h, w_o, activation):
    """Mean cross-entropy of the notes' RNN, straight from o_t = f(w_i·x_t + w_h o_(t−1))."""
    f = ACTIVATIONS[activation]
    o = np.zeros(x.shape[0], dtype=np.result_type(x, w_i, w_h, complex))
    for t in range(x.shape[1]):
        o = f(x[:, t] @ w_i + w_h * o)
    z = w_o * o
    return np.mean(y * softplus(-z) + (1 - y) * softplus(z))


def complex_step(loss, parameters: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """The loss and its gradient w.r.t. every entry of ``parameters`` (float64 arrays)."""
    value = float(np.real(loss(*parameters)))
    gradients = []
    for index, parameter in enumerate(parameters):
        gradient = np.zeros(parameter.shape)
        for entry in np.ndindex(parameter.shape):
            shifted = [p.astype(complex) for p in parameters]
            shifted[index][entry] += STEP * 1j
            gradient[entry] = np.imag(loss(*shifted)) / STEP
        gradients.append(gradient)
    return value, gradients


def assert_gradients_equal(got, want):
    scale = max(float(np.max(np.abs(w))) for w in want)
    assert scale > 0
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == np.float64
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12 * scale)


def small_logit_w_o(x, w_i, scale_by=0.7):
    """w_o so that |w_o o_n| stays below ~1 even for the identity (the gradients stay informative)."""
    projection = np.abs(x.astype(np.float64) @ w_i.astype(np.float64)).max()
    return scale_by / (3 * projection)


BACKENDS = ["numpy", "numba"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", list(NARROW))
def test_scalar_module_computes_narrow_inputs_in_float64(dtype, activation, mode, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    module = load(Model(steps=3, activation=activation), mode, backend)
    x, w_i = narrow_inputs(dtype)
    y = np.array([0, 1], dtype=np.int8)
    w_h, w_o = 0.5, small_logit_w_o(x, w_i)
    x64, y64, w_i64 = (np.asarray(v, dtype=np.float64) for v in (x, y, w_i))

    def oracle(w_i, w_h, w_o):
        return rnn_loss(x64, y64, w_i, w_h, w_o, activation)

    want_loss, want = complex_step(oracle, [w_i64, np.array(w_h), np.array(w_o)])
    with np.errstate(all="raise", under="ignore"):  # no overflow, nothing invalid anywhere
        loss, dw_i, dw_h, dw_o = module.loss_and_grad(x, y, w_i, w_h, w_o)
        assert module.loss(x, y, w_i, w_h, w_o) == pytest.approx(want_loss, rel=1e-12)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_gradients_equal([dw_i, np.float64(dw_h), np.float64(dw_o)], want)
    if backend == "numpy" and mode == "unrolled" and activation != "relu":
        terms = module.bptt_terms(x, y, w_i, w_h, w_o)
        assert terms["terms_w_i"].dtype == np.float64
        np.testing.assert_allclose(terms["terms_w_i"].sum(axis=1).mean(axis=0), want[0], rtol=1e-10)


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_complex_weights_stay_complex_with_narrow_inputs(dtype):
    """The complex step through the module itself, with int8 or float16 x: ∂L/∂w_i[0] exactly."""
    module = load(Model(steps=3, activation="tanh"))
    x, w_i = narrow_inputs(dtype)
    y = np.array([1, 0])
    w_o = small_logit_w_o(x, w_i)
    w_i64 = w_i.astype(np.float64)
    shifted = w_i64.astype(complex)
    shifted[0] += STEP * 1j
    value = module.loss(x, y, shifted, 0.5, w_o)
    assert isinstance(value, complex)
    _, dw_i, _, _ = module.loss_and_grad(x.astype(np.float64), y, w_i64, 0.5, w_o)
    assert value.imag / STEP == pytest.approx(dw_i[0], rel=1e-12, abs=1e-300)


def test_float32_still_computes_in_float32():
    """The documented exception: float32 inputs (and Python-number weights) give float32 results."""
    module = load(Model(steps=3))
    x, w_i = narrow_inputs("int8")
    x32, w_i32 = x.astype(np.float32) / 16, w_i.astype(np.float32) / 16
    _, dw_i, _, _ = module.loss_and_grad(x32, np.array([0, 1], np.float32), w_i32, 0.5, 0.3)
    assert dw_i.dtype == np.float32


# -- hidden size H and the LSTM ---------------------------------------------------------------------


def matrix_loss(x, y, w_i, w_h, w_o, b_h, b_o, activation):
    f = ACTIVATIONS[activation]
    o = np.zeros((x.shape[0], w_h.shape[0]), dtype=np.result_type(x, w_i, w_h, w_o, b_h, b_o, complex))
    for t in range(x.shape[1]):
        o = f(x[:, t] @ w_i.T + o @ w_h.T + b_h)
    z = o @ w_o + b_o
    return np.mean(y * softplus(-z) + (1 - y) * softplus(z))


@pytest.mark.parametrize("interface", ["dict", "positional"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["tanh", "identity"])
@pytest.mark.parametrize("dtype", list(NARROW))
def test_matrix_module_computes_narrow_inputs_in_float64(dtype, activation, backend, interface):
    if backend == "numba":
        pytest.importorskip("numba")
    hidden = 2
    module = load(Model(steps=3, activation=activation, hidden=hidden, bias=True), "unrolled", backend)
    x, row = narrow_inputs(dtype)
    w_i = np.stack([row, row])  # (H, D), in the narrow dtype
    w_h = np.array([[0.5, -0.25], [0.25, 0.5]])
    w_o = np.full(hidden, small_logit_w_o(x, row))
    b_h = np.array([1, -1], dtype=np.int8)
    b_o = np.int8(1)
    y = np.array([True, False])
    x64, y64 = x.astype(np.float64), y.astype(np.float64)

    def oracle(w_i, w_h, w_o, b_h, b_o):
        return matrix_loss(x64, y64, w_i, w_h, w_o, b_h, b_o, activation)

    parameters = [np.asarray(v, dtype=np.float64) for v in (w_i, w_h, w_o, b_h, b_o)]
    want_loss, want = complex_step(oracle, parameters)
    # the plain RNN's modules take the parameters as one dict keyed like PARAMS and one by one
    with np.errstate(all="raise", under="ignore"):
        if interface == "dict":
            params = {"w_i": w_i, "w_h": w_h, "w_o": w_o, "b_h": b_h, "b_o": b_o}
            loss, grads = module.loss_and_grad(x, y, params)
            gradients = [grads[name] for name in params]
        else:
            loss, *gradients = module.loss_and_grad(x, y, w_i, w_h, w_o, b_h=b_h, b_o=b_o)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_gradients_equal([np.asarray(g) for g in gradients], want)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def lstm_loss(x, y, params):
    """The LSTM of docs/cells.md (gates i, f, g, o; c_0 = h_0 = 0; ŷ = σ(w_yᵀ h_n)), in float64."""
    dtype = np.result_type(x, *params.values(), complex)
    hidden = params["w_y"].shape[0]
    h = c = np.zeros((x.shape[0], hidden), dtype)
    for t in range(x.shape[1]):
        a = {g: x[:, t] @ params[f"W_{g}"].T + h @ params[f"U_{g}"].T + params[f"b_{g}"] for g in "ifgo"}
        c = sigmoid(a["f"]) * c + sigmoid(a["i"]) * np.tanh(a["g"])
        h = sigmoid(a["o"]) * np.tanh(c)
    z = h @ params["w_y"]
    return np.mean(y * softplus(-z) + (1 - y) * softplus(z))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["int8", "bool", "float16"])
def test_lstm_module_computes_narrow_inputs_in_float64(dtype, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    module = load(Model(steps=3, cell="lstm", hidden=1, inputs=3), "unrolled", backend)
    x, row = narrow_inputs(dtype)
    # W_· in the narrow dtype (their products with x overflow it), the rest small floats; the
    # saturated gates leave ∂L/∂w_y, ∂L/∂b_· and the loss to tell the wrapped sums apart.
    params = {name: np.full(shape, 0.3) for name, shape in module.PARAMS.items()}
    for gate in "ifgo":
        params[f"W_{gate}"] = row[np.newaxis]
    y = np.array([1, 0])
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    names = list(module.PARAMS)

    def oracle(*values):
        return lstm_loss(x64, y64, dict(zip(names, values)))

    want_loss, want = complex_step(oracle, [np.asarray(params[n], dtype=np.float64) for n in names])
    with np.errstate(all="raise", under="ignore"):
        loss, grads = module.loss_and_grad(x, y, params)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_gradients_equal([grads[n] for n in names], want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", [cell for cell in CELLS if cell not in ("rnn", "skip")])  # skip: w_i, no W_
@pytest.mark.parametrize("dtype", list(NARROW))
def test_every_cell_computes_narrow_inputs_as_their_float64_values(dtype, cell, backend):
    """Every cell's module (dictionary interface), whatever its equations: narrow x and W_· give
    exactly what their float64 values give (each module is checked in float64 elsewhere)."""
    if backend == "numba":
        pytest.importorskip("numba")
    module = load(Model(steps=3, cell=cell, hidden=2, inputs=3), "unrolled", backend)
    x, row = narrow_inputs(dtype)
    params = {name: np.full(shape, 0.3) for name, shape in module.PARAMS.items()}
    narrow = [name for name, shape in module.PARAMS.items() if name.startswith("W_")]
    assert narrow, module.PARAMS
    for name in narrow:
        params[name] = np.broadcast_to(row, module.PARAMS[name]).copy()
    y = np.array([1, 0], dtype=np.int8)
    with np.errstate(all="raise", under="ignore"):
        loss, grads = module.loss_and_grad(x, y, params)
    wide = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    want_loss, want = module.loss_and_grad(x.astype(np.float64), y.astype(np.float64), wide)
    assert loss == want_loss
    for name in module.PARAMS:
        assert grads[name].dtype == np.float64
        np.testing.assert_array_equal(grads[name], want[name])
    with np.errstate(over="ignore"):
        in_own_dtype = x[:, 0] @ params[narrow[0]].T  # the product the module must not form
    assert not np.array_equal(in_own_dtype.astype(np.float64), x[:, 0].astype(np.float64) @ wide[narrow[0]].T)
