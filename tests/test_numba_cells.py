"""The generic Numba module of every cell (templates/numba/cell.py.j2): the generic NumPy module's
interface, constants and messages, its values and gradients to rounding, finite differences and the
complex step through ``symbolic.verify.check`` on both paths (compiled, and the BLAS drivers), those drivers,
kernels printed from the derivation with no BLAS, ruff-clean source; for the plain RNN with H > 1 or
biases also its positional form (the parameters one by one, the old tuples and bptt_terms keys),
against a plain loop over time, differences and the complex step (tests/test_codegen_matrix.py's).

Compiling costs seconds per module and dtype, so modules come from ``load`` (cached per model, mode
and backend, kernels cached on disk): one loop module per cell and hidden size serves every length,
and one unrolled module per cell (its kernels are those of loop mode behind a fixed-length check).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from symbolic.activations import ACTIVATIONS
from symbolic.codegen import generate, load
from symbolic.codegen.format import SETTINGS
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.verify.check import check_module, run_check

from . import test_codegen_matrix as matrix
from .conftest import ROOT

if os.environ.get("CI"):
    import numba  # CI installs the extra: a missing Numba fails there instead of skipping
else:
    numba = pytest.importorskip("numba")

DOCS = ROOT / "docs" / "cells"
#: The built-in cells and the documented user cells (a node's map inside the step: Cho's GRU and the
#: minimal gated unit; a per-unit recurrent weight and ReLU, not analytic: IndRNN).
CELLS = ["lstm", "gru", str(DOCS / "cho_gru.py"), str(DOCS / "mgu.py"), str(DOCS / "indrnn.py")]
IDS = ["lstm", "gru", "cho_gru", "mgu", "indrnn"]
#: Test cells of tests/cells: a readout from c with a peephole (two states, both sent back through
#: elementwise and transposed terms), a matrix on a node that depends on h through another matrix.
EXTRA = [str(ROOT / "tests" / "cells" / "peephole_lstm.py"), str(ROOT / "tests" / "cells" / "residual.py")]
HIDDEN = 3
#: The unrolled modules' length; loop modules run at several lengths.
STEPS = 3


#: The plain RNN with biases: the positional form (POSITIONAL, _call) beside the dict one.
RNN = {"cell": "rnn", "bias": True}


def modules(cell, mode="loop", hidden=HIDDEN, steps=STEPS):
    """(Numba module, NumPy module) for the same cell and mode; ``cell`` a cell's name or file, or the
    keywords of a Model (RNN)."""
    model = Model(hidden=hidden, steps=steps, **(cell if isinstance(cell, dict) else {"cell": cell}))
    return load(model, mode, backend="numba"), load(model, mode)


def point(module, steps, batch=5, seed=0, inputs=3):
    """(x, y, params): dense inputs, both labels, the module's initialisation plus noise of its scale
    (large enough that no gradient is trivial)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, inputs))
    y = rng.uniform(0, 1, size=batch)
    y[0], y[-1] = 0.0, 1.0
    params = {
        name: value + rng.uniform(-1, 1, size=value.shape) * max(2 * float(np.max(np.abs(value))), 0.5)
        for name, value in module.init_params(seed).items()
    }
    return x, y, params


def relative(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def assert_same_gradients(grads, want, params, tolerance=1e-12):
    assert list(grads) == list(want) == list(params)
    for name, value in want.items():
        assert grads[name].shape == value.shape == np.shape(params[name]), name
        if np.any(value):
            assert relative(grads[name], value) < tolerance, name
        else:  # a gradient that vanishes (the LSTM's ∂L/∂b_f at n = 1, c_0 = 0): exactly
            assert not np.any(grads[name]), name


def assert_agrees(fast, reference, x, y, params):
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert isinstance(loss, float) and loss == pytest.approx(want_loss, rel=1e-13)
    assert_same_gradients(grads, want_grads, params)
    assert fast.loss(x, y, params) == pytest.approx(want_loss, rel=1e-13)
    assert relative(fast.forward(x, params), reference.forward(x, params)) < 1e-13
    states, want_states = fast.states(x, params), reference.states(x, params)
    assert list(states) == list(want_states) == list(reference.STORED)
    for name, want in want_states.items():
        assert states[name].shape == want.shape == (x.shape[0], x.shape[1], fast.HIDDEN_SIZE)
        assert np.max(np.abs(states[name] - want)) < 1e-13, name


CASES = [(cell, "loop", HIDDEN) for cell in CELLS] + [(cell, "unrolled", HIDDEN) for cell in CELLS]
CASES += [("lstm", "loop", 1), ("gru", "loop", 1)] + [(cell, "loop", 2) for cell in EXTRA]


@pytest.mark.parametrize(
    ("cell", "mode", "hidden"),
    CASES,
    ids=[f"{os.path.basename(cell).removesuffix('.py')}-{mode}-h{hidden}" for cell, mode, hidden in CASES],
)
def test_agrees_with_the_numpy_module(cell, mode, hidden):
    """The compiled path (small batches) against the generic NumPy module, at several lengths."""
    fast, reference = modules(cell, mode, hidden)
    for steps in (1, 3, 7) if mode == "loop" else (STEPS,):
        x, y, params = point(fast, steps, seed=10 * hidden + steps)
        assert_agrees(fast, reference, x, y, params)


# -- the plain RNN with hidden size H or biases: both call forms --------------------------------------

#: (activation, mode, H, biases): every activation once, each mode and bias setting twice, H = 2, 3, 8;
#: the first is RNN's loop module and the second the unrolled one the interface test reads (one compile each).
RNN_CASES = [("tanh", "loop", HIDDEN, True), ("sigmoid", "unrolled", 8, False), ("relu", "loop", 8, False)]
RNN_CASES += [("identity", "unrolled", 2, True)]
RNN_STEPS = 5


def rnn_modules(activation, mode, hidden, bias):
    """(Numba module, NumPy module) of the plain RNN."""
    return modules({"cell": "rnn", "activation": activation, "bias": bias}, mode, hidden, RNN_STEPS)


@pytest.mark.parametrize(("activation", "mode", "hidden", "bias"), RNN_CASES)
def test_rnn_agrees_with_numpy_an_independent_forward_and_the_numerical_gradients(
    activation, mode, hidden, bias
):
    """The positional form (the parameters one by one, by position or name) and the dict form: the NumPy
    module's values and return types; states against a plain loop over time; the gradient against
    central differences and the complex step (complex128 through the kernels) of the module's loss."""
    fast, reference = rnn_modules(activation, mode, hidden, bias)
    x, y, parameters = matrix.point(activation, hidden, bias, steps=RNN_STEPS, seed=hidden)
    assert list(parameters) == list(fast.POSITIONAL)
    weights = list(parameters.values())
    got, want = fast.loss_and_grad(x, y, **parameters), reference.loss_and_grad(x, y, *weights)
    assert len(got) == len(want) == 1 + len(parameters)
    assert [type(v) for v in got] == [type(v) for v in want]
    assert isinstance(got[0], float) and (not bias or isinstance(got[-1], float))
    for value, expected in zip(got, want):
        assert np.shape(value) == np.shape(expected)
        assert matrix.relative(value, expected) < 1e-12
    for value, expected in zip(fast.loss_and_grad(x, y, *weights), got):
        assert np.array_equal(value, expected)  # by position or by name: one computation
    loss, grads = fast.loss_and_grad(x, y, parameters)
    assert loss == got[0] and all(
        np.array_equal(grads[name], value) for name, value in zip(parameters, got[1:])
    )
    assert [np.shape(g) for g in grads.values()] == [
        np.shape(g) for g in reference.loss_and_grad(x, y, parameters)[1].values()
    ]
    assert matrix.relative(fast.loss(x, y, *weights), reference.loss(x, y, *weights)) < 1e-13
    assert matrix.relative(fast.forward(x, *weights), reference.forward(x, *weights)) < 1e-13
    states = fast.states(x, *weights)
    assert list(states) == ["o"]
    assert matrix.relative(states["o"], matrix.reference_forward(x, parameters, activation)[:, 1:]) < 1e-13
    gradients = dict(zip(parameters, got[1:]))
    methods = {"finite": 1e-6}
    if ACTIVATIONS[activation].analytic:
        methods["complex"] = 1e-10
    for method, tolerance in methods.items():
        numerical = matrix.numerical(fast, x, y, parameters, method)
        for name in parameters:
            assert matrix.relative(gradients[name], numerical[name]) < tolerance, (method, name)


@pytest.mark.parametrize(("activation", "bias"), [("tanh", True), ("relu", False)])
def test_rnn_bptt_terms_are_the_numpy_modules_and_sum_to_the_compiled_gradient(activation, bias):
    """bptt_terms in both forms (the positional one with the old flat keys): the NumPy module's; its
    states a plain loop's, its terms summed over t and averaged over the batch the compiled gradient."""
    hidden = HIDDEN if bias else 8  # modules of RNN_CASES (loop), already compiled
    fast, reference = rnn_modules(activation, "loop", hidden, bias)
    x, y, parameters = matrix.point(activation, hidden, bias, steps=RNN_STEPS, seed=4)
    weights = list(parameters.values())
    got, want = fast.bptt_terms(x, y, *weights), reference.bptt_terms(x, y, *weights)
    assert (
        list(got)
        == list(want)
        == ["states", "derivatives", "deltas", "terms_w_i", "terms_w_h", "output_factor"]
    )
    for name in want:
        assert got[name].shape == want[name].shape and np.array_equal(got[name], want[name]), name
    states = matrix.reference_forward(x, parameters, activation)[:, 1:]
    assert matrix.relative(got["states"], states) < 1e-13
    _, dw_i, dw_h, *_ = fast.loss_and_grad(x, y, *weights)
    assert matrix.relative(got["terms_w_i"].sum(axis=1).mean(axis=0), dw_i) < 1e-12
    assert matrix.relative(got["terms_w_h"].sum(axis=1).mean(axis=0), dw_h) < 1e-12
    nested, want = fast.bptt_terms(x, y, parameters), reference.bptt_terms(x, y, parameters)
    assert list(nested) == list(want) and list(nested["terms"]) == list(want["terms"])
    assert np.array_equal(nested["terms"]["w_h"], got["terms_w_h"])


@pytest.mark.parametrize("path", ["compiled", "blas"])
@pytest.mark.parametrize("mode", ["loop", "unrolled"])
@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_bptt_check_finite_differences_and_complex_step(cell, mode, path, monkeypatch):
    """symbolic.verify.check on both paths: five-point differences, and the complex step (complex128 through
    the kernels, and through BLAS's products) where every function of the cell is analytic (not
    IndRNN's ReLU)."""
    fast, _ = modules(cell, mode)
    monkeypatch.setattr(fast, "_BLAS_ENTRIES", 1 if path == "blas" else 1 << 62)
    assert fast._kernels(3)[0] is (fast._forward_blas if path == "blas" else fast._forward_serial)
    # seed 0: the check's random points keep clear of IndRNN's ReLU kinks (at seed 1 its differences
    # cross one, for the NumPy module as much as for this one)
    report = check_module(fast, f"numba {cell}", seed=0)
    assert report.passed and report.paths[0]["cases"] == 4  # the base cases, then one per path
    assert set(report.errors) == (
        {"finite differences", "complex step"} if fast.ANALYTIC else {"finite differences", "sub-batches"}
    )
    assert max(report.errors["finite differences"].values()) < 1e-7
    if fast.ANALYTIC:
        assert max(report.errors["complex step"].values()) < 1e-11  # the longest call (n = 40) rounds to about 2e-12


LINEAR_CELL = """
from symbolic.cells.spec import Cell, tanh

cell = Cell("linear", readout="w_y", description="h' = U tanh(V h) + W x")
x, h = cell.input(), cell.state("h")
W, U, V = cell.matrix("W", "H", "D"), cell.matrix("U"), cell.matrix("V")
m = cell.let("m", tanh(V @ h))
cell.update(h, U @ m + W @ x)
CELL = cell
"""


def test_a_state_updated_without_activation(tmp_path):
    """h' = U tanh(V h) + W x: δ(U m) and δ(W x) are δh itself (no adjoint of their own), and the first
    adjoint, δm = Uᵀ δh, is a product: both written before it. symbolic.verify.check on the compiled path."""
    path = tmp_path / "linear.py"
    path.write_text(LINEAR_CELL)
    for mode in ("loop", "unrolled"):
        fast = load(Model(cell=str(path), hidden=HIDDEN, steps=STEPS), mode, backend="numba")
        report = check_module(fast, "numba linear", seed=0)
        assert report.passed and report.paths[0]["cases"] == 4  # the base cases, then one per path
        assert max(report.errors["complex step"].values()) < 1e-12


@pytest.mark.parametrize("cell", ["lstm", CELLS[2]], ids=["lstm", "cho_gru"])
def test_complex_step_flows_through_and_loss_stays_complex(cell):
    fast, reference = modules(cell)
    x, y, params = point(fast, STEPS, seed=2)
    name = next(name for name, shape in fast.PARAMS.items() if len(shape) == 2 and shape[1] == HIDDEN)
    step = 1e-20
    shifted = {**params, name: params[name] + 0j}
    shifted[name][1, 2] += 1j * step
    got, want = fast.loss(x, y, shifted), reference.loss(x, y, shifted)
    assert isinstance(got, complex)
    assert got.imag / step == pytest.approx(want.imag / step, rel=1e-12)
    assert got.imag / step == pytest.approx(fast.loss_and_grad(x, y, params)[1][name][1, 2], rel=1e-12)


def relative_difference(got, want) -> float:
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


@pytest.mark.parametrize(
    "cell", ["lstm", CELLS[2], CELLS[4], RNN], ids=["lstm", "cho_gru", "indrnn", "rnn-bias"]
)
def test_blas_drivers_agree_with_the_compiled_ones_and_numpy(cell, monkeypatch):
    """The BLAS drivers on several chunks of sequences with a partial last one and several spans of
    steps: the compiled drivers' results to rounding (BLAS sums in its own order), the NumPy module's
    loss and gradient; a batch of one sums every step in one span."""
    fast, reference = modules(cell)
    batch = 3 * fast._ROWS + 7
    steps = fast._SPAN_ROWS // batch + 7  # two spans of steps in loss_and_grad
    x, y, params = point(fast, steps, batch=batch, seed=7)
    monkeypatch.setattr(fast, "_BLAS_ENTRIES", HIDDEN * batch)
    assert fast._kernels(batch)[0] is fast._forward_blas
    assert fast._kernels(batch - 1)[0] is fast._forward_serial
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert_same_gradients(grads, want_grads, params)
    xs, p = fast._inputs(x, params)
    xs, _, w = fast._compiled_arguments(xs, None, p)
    names = list(inspect.signature(fast._forward_serial.py_func).parameters)
    assert names == list(inspect.signature(fast._forward_blas).parameters)
    arguments = [xs, *(w[name] for name in names[1:])]
    one, other = fast._forward_serial(*arguments), fast._forward_blas(*arguments)
    for got, want in zip(other, one):
        assert relative_difference(got, want) < 1e-13
    # backward from arbitrary δs of step n + 1, over spans of 3 steps (the last one partial)
    values, *stored = one
    names = list(inspect.signature(fast._backward_serial.py_func).parameters)
    incoming = np.random.default_rng(8).normal(size=(len(fast.STATES), batch, HIDDEN))
    given = {"x": xs, "values": values, **dict(zip(names[2:], stored)), "span": 3}
    arguments = [given[name] if name in given else w[name] for name in names[:-2]]
    serial = fast._backward_serial(*arguments, incoming.copy(), 3)
    blas = fast._backward_blas(*arguments, incoming.copy(), 3)
    for got, want in zip(blas, serial):
        assert got.shape == want.shape and (want.size == 0 or relative_difference(got, want) < 1e-12)
    single = point(fast, steps, batch=1, seed=9)
    assert fast._span(1, steps) == steps
    monkeypatch.setattr(fast, "_BLAS_ENTRIES", 1)
    loss, grads = fast.loss_and_grad(*single)
    want_loss, want_grads = reference.loss_and_grad(*single)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert_same_gradients(grads, want_grads, single[2])


@pytest.mark.parametrize("cell", [*CELLS, RNN], ids=[*IDS, "rnn-bias"])
def test_wide_steps_take_the_blas_drivers(cell):
    """From _BLAS_ENTRIES entries per step (B·H) on, forward, states, loss and loss_and_grad run the
    BLAS drivers, whatever the batch's type (an array or nested lists): the NumPy module's numbers
    to rounding; in the positional form too, where the module has one."""
    fast, reference = modules(cell)
    batch = -(-fast._BLAS_ENTRIES // HIDDEN)
    assert fast._kernels(batch)[0] is fast._forward_blas
    assert fast._kernels(batch - 1)[0] is fast._forward_serial
    x, y, params = point(fast, STEPS, batch=batch, seed=11)
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert_same_gradients(grads, want_grads, params)
    assert relative_difference(fast.forward(x, params), reference.forward(x, params)) < 1e-13
    assert fast.loss(x, y, params) == pytest.approx(reference.loss(x, y, params), rel=1e-13)
    states, want_states = fast.states(x, params), reference.states(x, params)
    assert all(relative_difference(states[name], want) < 1e-13 for name, want in want_states.items())
    listed_loss, listed = fast.loss_and_grad(x.tolist(), y, params)
    assert listed_loss == loss
    assert all(np.array_equal(listed[name], grads[name]) for name in grads)
    if hasattr(reference, "POSITIONAL"):
        weights = [params[name] for name in reference.POSITIONAL]
        got, want = fast.loss_and_grad(x, y, *weights), reference.loss_and_grad(x, y, *weights)
        assert len(got) == len(want) == 1 + len(weights)
        assert all(relative_difference(a, b) < 1e-12 and type(a) is type(b) for a, b in zip(got, want))
        assert relative_difference(fast.forward(x, *weights), reference.forward(x, *weights)) < 1e-13
        with pytest.raises(ValueError, match="finite"):
            fast.loss_and_grad(np.where(x > 1, np.nan, x), y, *weights)  # the same validation


def _bad_arguments(module, x, y, params):
    matrix = next(name for name, shape in module.PARAMS.items() if len(shape) == 2)
    vector = next(name for name, shape in module.PARAMS.items() if len(shape) == 1)
    first = next(iter(params))
    return [
        (x[..., :2], y, params),
        (x[:, :0], y, params),
        (np.zeros((5, 4, 3)), y, params),
        (x, y[:2], params),
        (x, y + 2, params),
        (x, y, {k: v for k, v in params.items() if k != first}),
        (x, y, {**params, "V_unknown": np.ones(2)}),
        (x, y, {**params, matrix: params[matrix][:2]}),
        (x, y, {**params, vector: np.full(params[vector].shape, np.nan)}),
        (x, y, {**params, vector: np.array(["a"] * params[vector].shape[0])}),
        (x, y, list(params.values())),
    ]


def _bad_positional(module, x, y, params):
    """Calls of the positional form that the NumPy module rejects (or accepts): wrong shapes, NaN, a
    parameter missing, unknown, given twice or one too many."""
    names = list(module.POSITIONAL)
    weights = [params[name] for name in names]
    calls = [((x, y, *weights), {}), ((x, y), dict(zip(names, weights)))]  # both accepted
    for k, name in enumerate(names):
        shape = module.PARAMS[name]
        wrong = np.zeros((*shape[:-1], shape[-1] + 1)) if shape else np.zeros(2)
        calls.append(((x, y, *weights[:k], wrong, *weights[k + 1 :]), {}))
        calls.append(((x, y, *weights[:k], np.full(shape, np.nan), *weights[k + 1 :]), {}))
        calls.append(((x, y, *weights[:k]), {}))  # the parameters from this one on missing
    calls += [
        ((x, y, *weights, weights[0]), {}),
        ((x, y, *weights), {names[0]: weights[0]}),
        ((x, y, *weights), {"b_unknown": weights[0]}),
        ((x[..., :2], y, *weights), {}),
        ((x, y[:2], *weights), {}),
        ((x, y + 2, *weights), {}),
    ]
    return calls


#: The plain RNN's unrolled case is RNN_CASES' (sigmoid, H = 8, n = 5, no biases): a module compiled once.
RNN_UNROLLED = ({"cell": "rnn", "activation": "sigmoid"}, "unrolled", 8, RNN_STEPS)


@pytest.mark.parametrize(
    ("cell", "mode", "hidden", "steps"),
    [(cell, "loop", HIDDEN, STEPS) for cell in CELLS]
    + [("lstm", "unrolled", HIDDEN, STEPS), (RNN, "loop", HIDDEN, STEPS), RNN_UNROLLED],
    ids=[*IDS, "lstm-unrolled", "rnn-bias", "rnn-unrolled"],
)
def test_interface_constants_and_errors_are_the_numpy_modules(cell, mode, hidden, steps):
    fast, reference = modules(cell, mode, hidden, steps)
    constants = [name for name in vars(reference) if name.isupper()]
    assert {"CELL", "STEPS", "MODE", "PARAMS", "STORED", "ACTIVATIONS", "ANALYTIC"} <= set(constants)
    for name in constants:  # every one: the RNN's POSITIONAL, ACTIVATION and BIAS too
        if name != "CHECK_PATHS":  # each module's own code paths (tests/test_check_paths.py)
            assert getattr(fast, name) == getattr(reference, name), name
    for seed in (0, 3):
        made, want = fast.init_params(seed), reference.init_params(seed)
        assert list(made) == list(want) and all(np.array_equal(made[k], want[k]) for k in want)
    x, y, params = point(fast, steps)
    one = fast.loss_and_grad(x[0], y[0], params)  # (n, D) is a batch of one
    assert one[0] == pytest.approx(fast.loss(x[:1], y[:1], params), rel=1e-15)
    integers = fast.loss_and_grad(x.astype(int), y, params)[0]
    assert integers == pytest.approx(reference.loss_and_grad(x.astype(int), y, params)[0], rel=1e-13)
    for args in _bad_arguments(fast, x, y, params):
        for function in ("loss_and_grad", "loss", "forward", "states"):
            call_args = args if function.startswith("loss") else (args[0], args[2])
            outcomes = []
            for module in (fast, reference):
                try:
                    getattr(module, function)(*call_args)
                    outcomes.append(None)
                except (ValueError, TypeError) as error:
                    outcomes.append(f"{type(error).__name__}: {error}")
            assert outcomes[0] == outcomes[1], (function, outcomes)
    if not hasattr(reference, "POSITIONAL"):
        return
    for args, keywords in _bad_positional(fast, x, y, params):
        for function in ("loss_and_grad", "loss", "forward", "states", "bptt_terms"):
            call_args = args if function in ("loss_and_grad", "loss", "bptt_terms") else args[:1] + args[2:]
            outcomes = []
            for module in (fast, reference):
                try:
                    result = getattr(module, function)(*call_args, **keywords)
                    outcomes.append(_kinds(result))
                except (ValueError, TypeError) as error:
                    outcomes.append(f"{type(error).__name__}: {error}")
            assert outcomes[0] == outcomes[1], (function, keywords, outcomes)


def _kinds(result):
    """The types and shapes of a result, nested: the two backends return the same kinds."""
    if isinstance(result, dict):
        return {key: _kinds(value) for key, value in result.items()}
    if isinstance(result, tuple):
        return tuple(_kinds(value) for value in result)
    return type(result).__name__, np.shape(result)


def _functions(source: str) -> dict:
    tree = ast.parse(source)
    return {node.name: ast.dump(node) for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("cell", [*CELLS, RNN], ids=[*IDS, "rnn-bias"])
def test_validation_and_init_params_are_copied_from_the_numpy_module(cell, mode):
    """init_params and the checks verbatim; the plain RNN's positional form (_call and the public
    functions, calling the dict implementations _dict_…) verbatim too; bptt_terms."""
    model = Model(steps=4, hidden=2, **(cell if isinstance(cell, dict) else {"cell": cell}))
    sources = generate(model, mode, backend="numba"), generate(model, mode)
    fast, reference = _functions(sources[0]), _functions(sources[1])
    copied = ["init_params", "_inputs", "_labels", "_numbers"]
    public = ["forward", "states", "loss", "loss_and_grad", "bptt_terms"]
    positional = "_call" in reference
    assert positional == (cell == RNN)
    if positional:
        copied += ["_call", *public]
        public = [f"_dict_{name}" for name in public]
    for name in copied:
        assert fast[name] == reference[name], name
    # the dict implementations: the NumPy module's names and signatures (arguments and annotations)
    signatures = [
        {
            node.name: ast.dump(node.args) + ast.dump(node.returns)
            for node in ast.parse(source).body
            if isinstance(node, ast.FunctionDef) and node.name in public
        }
        for source in sources
    ]
    assert signatures[0] == signatures[1] and len(signatures[0]) == len(public)
    # bptt_terms: the NumPy module's implementation, renamed, with what it calls
    for name in [public[-1], "_forward_values"]:
        assert f"_numpy_{name.lstrip('_')}" in fast, name
    for name in public[:-1]:
        assert f"_numpy_{name.lstrip('_')}" not in fast, name


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_no_warnings_and_exact_loss_for_huge_logits(cell):
    fast, reference = modules(cell)
    x, y, params = point(fast, STEPS, seed=4)
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e4, -1e4):
            huge = {**params, "w_y": params["w_y"] * scale}
            loss, grads = fast.loss_and_grad(x, y, huge)
            assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
            assert loss == pytest.approx(reference.loss(x, y, huge), rel=1e-12)


def _kernels(source: str) -> dict:
    """name → source of every @njit function."""
    tree = ast.parse(source)
    return {
        node.name: ast.unparse(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.decorator_list
    }


def test_kernels_are_printed_from_the_derivation():
    """Each unit's equations and adjoints as the engine derived them: the LSTM's cell path and gate
    derivatives, Cho's GRU's product U_nᵀ δa_n in the middle of the step, IndRNN's Heaviside."""
    source = generate(Model(cell="lstm", steps=5, hidden=2), "loop", "out/fast.py", backend="numba")
    assert source.splitlines()[1] == (
        "#   bptt codegen --cell lstm --steps 5 --hidden 2 --mode loop --backend numba -o out/fast.py"
    )
    tree = ast.parse(source)
    decorators = [
        ast.unparse(d) for node in tree.body if isinstance(node, ast.FunctionDef) for d in node.decorator_list
    ]
    assert len(decorators) >= 10
    # every kernel compiled with cache=True and fastmath off; only the inlined tanh/exp polynomials may
    # fuse a multiply and an add (contract: one rounding instead of two, nothing reassociated), and the
    # complex arguments' exact functions are overloads
    named = {
        node.name: [ast.unparse(d) for d in node.decorator_list]
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.decorator_list
    }
    for name, found in named.items():
        for decorator in found:
            if name in {"_exp_bounded", "_tanh_real"}:
                assert decorator == "njit(cache=True, error_model='numpy', fastmath={'contract'})", name
            elif decorator not in ("intrinsic", "overload(_tanh)", "overload(_logistic)", "overload(_exp)"):
                assert decorator.startswith("njit(cache=True") and "fastmath" not in decorator, name
    kernels = _kernels(source)
    assert "c = c_prev * f + g * i" in kernels["_forward_part_1"]
    assert "delta_c = delta_c_in + delta_tanh_c * (1 - tanh_c ** 2)" in kernels["_backward_part_1"]
    assert "delta_a_f = delta_f * f * (1 - f)" in kernels["_backward_part_1"]
    assert "incoming[1, b, k] = delta_c * f" in kernels["_backward_part_1"]  # the carousel δc_(t-1)
    cho = _kernels(generate(Model(cell=CELLS[2], steps=3, hidden=2), "loop", backend="numba"))
    assert {"_forward_part_2", "_backward_part_2"} <= set(cho) and "_forward_part_3" not in cho
    assert "_product(deltas_U_n_arg[slot], weights_U_n_arg, transposed[0])" in cho["_backward_serial"]
    indrnn = _kernels(generate(Model(cell=CELLS[4], steps=3, hidden=2), "loop", backend="numba"))
    assert "_heaviside(h, 0.0)" in indrnn["_backward_part_1"]
    assert "b_ = vectors[0, k]" in indrnn["_forward_part_1"]  # the cell's b, beside the kernel's b


def test_the_backend_names_no_cell():
    """No cell is special in the backend: no string of it is a cell's name."""
    from symbolic.cells import BUILTIN

    for path in (
        ROOT / "symbolic" / "codegen" / "numba_cells.py",
        ROOT / "templates" / "numba" / "cell.py.j2",
    ):
        text = path.read_text()
        if path.suffix == ".py":
            strings = {node.value for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Constant)}
            assert not strings & set(BUILTIN), path
        assert '"lstm"' not in text and '"gru"' not in text, path


@pytest.mark.parametrize("cell", [*CELLS, RNN], ids=[*IDS, "rnn-bias"])
def test_kernels_call_no_blas(cell, monkeypatch):
    """Products in compiled loops: no np.dot or @ (which Numba hands to BLAS through SciPy) in any
    @njit function."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a)
    )
    for mode in ("loop", "unrolled"):
        model = Model(steps=3, hidden=2, **(cell if isinstance(cell, dict) else {"cell": cell}))
        tree = ast.parse(generate(model, mode, backend="numba"))
        kernels = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.decorator_list]
        assert len(kernels) > 10
        for kernel in kernels:
            assert "np.dot" not in ast.unparse(kernel), kernel.name
            assert not any(isinstance(n, ast.MatMult) for n in ast.walk(kernel)), kernel.name


def test_without_numba_the_cell_backend_is_a_one_line_usage_error(monkeypatch, capsys):
    from symbolic.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a)
    )
    with pytest.raises(UsageError, match=r"pip install bptt\[fast\]"):
        generate(Model(cell="gru", steps=3), backend="numba")
    assert main(["codegen", "--cell", "gru", "--backend", "numba"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "pip install bptt[fast]" in error


@pytest.mark.parametrize(
    ("model", "mode", "line", "title"),
    [
        (
            Model(cell="lstm", steps=3, hidden=3),
            "unrolled",
            '        "U_f": grad_h_prev[3:6],\n',
            "cell lstm",
        ),
        (
            Model(steps=4, hidden=HIDDEN, bias=True),
            "loop",
            '        "w_h": grad_o_prev[:3],\n',
            "H = 3, with biases",
        ),
    ],
    ids=["lstm", "rnn-bias"],
)
def test_bptt_check_passes_the_module_and_rejects_a_tampered_one(model, mode, line, title, tmp_path, capsys):
    """The good module is the file ``load`` wrote (generate's source; for loop mode at n = 1), whose kernels
    the tests above compiled and Numba cached beside it: check's process loads them; the tampered copy compiles."""
    good = Path(load(model, mode, backend="numba").__file__)
    source = good.read_text()
    assert source == generate(replace(model, steps=1) if mode == "loop" else model, mode, backend="numba")
    assert run_check(good) == 0
    report = capsys.readouterr().out
    assert title in report and "complex step" in report and "passed" in report
    # the compiled loss_and_grad, which the check's small batches run, returns one gradient 0.1 % off (the
    # vjp's compiled driver returns its gradients with the same line, later in the module)
    at = source.index(line)
    enclosing = source[source.rindex("\ndef ", 0, at) + 5:]
    assert enclosing.split("(")[0] in ("loss_and_grad", "_dict_loss_and_grad")
    bad = tmp_path / "tampered.py"
    bad.write_text(source.replace(line, line.replace('": ', '": 1.001 * '), 1))
    assert run_check(bad) == 1
    failed = capsys.readouterr().out
    assert "FAIL" in failed and "1.00e-03" in failed  # the relative error put in
    assert list((good.parent / "__pycache__").glob(f"{good.stem}.*.nbi"))  # kernels cached beside the file


def _ruff(*arguments, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments], input=stdin, check=False, capture_output=True, text=True
    )


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize(
    "cell", [*CELLS, RNN, {"cell": "rnn", "activation": "relu"}], ids=[*IDS, "rnn-bias", "rnn-relu"]
)
def test_generated_source_passes_ruff(cell, mode, tmp_path):
    """ruff check clean, and ruff format changes nothing under the settings format_python pins and
    the project's configuration: the whole module, the parts shared with the NumPy module too."""
    model = Model(steps=3, hidden=2, **(cell if isinstance(cell, dict) else {"cell": cell}))
    path = tmp_path / "cell_numba.py"
    path.write_text(generate(model, mode, backend="numba"))
    result = _ruff("check", "--isolated", "--line-length", "110", "--select", "E4,E7,E9,F", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    for configuration in (SETTINGS, ("--config", str(ROOT / "pyproject.toml"))):
        result = _ruff("format", "--check", "--diff", *configuration, str(path))
        assert result.returncode == 0, result.stdout + result.stderr
