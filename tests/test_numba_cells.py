"""The generic Numba module of every cell (templates/numba/cell.py.j2): the generic NumPy module's
interface, constants and messages, its values and gradients to rounding, finite differences and the
complex step through ``symbolic.check`` on both paths (compiled and vectorised), the parallel kernels,
kernels printed from the derivation with no BLAS, ruff-clean source.

Compiling costs seconds per module and dtype, so modules come from ``load`` (cached per model, mode
and backend, kernels cached on disk): one loop module per cell and hidden size serves every length,
and one unrolled module per cell (its kernels are those of loop mode behind a fixed-length check).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from symbolic.check import check_module, run_check
from symbolic.codegen import generate, load
from symbolic.errors import UsageError
from symbolic.model import Model

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


def modules(cell, mode="loop", hidden=HIDDEN, steps=STEPS):
    """(Numba module, NumPy module) for the same cell and mode."""
    model = Model(cell=cell, hidden=hidden, steps=steps)
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


@pytest.mark.parametrize("path", ["compiled", "vectorised"])
@pytest.mark.parametrize("mode", ["loop", "unrolled"])
@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_bptt_check_finite_differences_and_complex_step(cell, mode, path, monkeypatch):
    """symbolic.check on both paths: five-point differences, and the complex step (complex128 through
    the kernels) where every function of the cell is analytic (not IndRNN's ReLU)."""
    fast, _ = modules(cell, mode)
    if path == "vectorised":  # every array takes the NumPy module's functions
        monkeypatch.setattr(fast, "_VECTORISED_ENTRIES", 1)
    assert fast._vectorised(np.zeros((3, STEPS, 3))) == (path == "vectorised")
    # seed 0: the check's random points keep clear of IndRNN's ReLU kinks (at seed 1 its differences
    # cross one, for the NumPy module as much as for this one)
    report = check_module(fast, f"numba {cell}", seed=0)
    assert report.passed and report.cases == 4
    assert set(report.errors) == (
        {"finite differences", "complex step"} if fast.ANALYTIC else {"finite differences"}
    )
    assert max(report.errors["finite differences"].values()) < 1e-7
    if fast.ANALYTIC:
        assert max(report.errors["complex step"].values()) < 1e-12


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
    adjoint, δm = Uᵀ δh, is a product: both written before it. symbolic.check on the compiled path."""
    path = tmp_path / "linear.py"
    path.write_text(LINEAR_CELL)
    for mode in ("loop", "unrolled"):
        fast = load(Model(cell=str(path), hidden=HIDDEN, steps=STEPS), mode, backend="numba")
        report = check_module(fast, "numba linear", seed=0)
        assert report.passed and report.cases == 4
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


@pytest.mark.parametrize("cell", ["lstm", CELLS[2], CELLS[4]], ids=["lstm", "cho_gru", "indrnn"])
def test_parallel_kernels_agree_with_serial_and_numpy(cell, monkeypatch):
    """The prange kernels on several chunks of sequences with a partial last one."""
    fast, reference = modules(cell)
    batch = 3 * fast._ROWS + 7
    x, y, params = point(fast, STEPS, batch=batch, seed=7)
    monkeypatch.setattr(fast, "_PARALLEL_ENTRIES", HIDDEN * batch)  # wide enough for the threads
    monkeypatch.setattr(fast, "_VECTORISED_ENTRIES", 10 * HIDDEN * batch)
    if numba.get_num_threads() > 1:
        assert fast._kernels(batch)[0] is fast._forward_parallel
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert_same_gradients(grads, want_grads, params)
    xs, p = fast._inputs(x, params)
    xs, _, w = fast._compiled_arguments(xs, None, p)
    names = list(inspect.signature(fast._forward_serial.py_func).parameters)
    arguments = [xs, *(w[name] for name in names[1:])]
    one, other = fast._forward_serial(*arguments), fast._forward_parallel(*arguments)
    for got, want in zip(other, one):
        assert np.array_equal(got, want)  # each chunk owns its rows: deterministic


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_wide_steps_run_the_numpy_modules_functions(cell):
    """From _VECTORISED_ENTRIES entries per step (B·H) on, forward, states, loss and loss_and_grad are
    the NumPy module's own functions: its numbers exactly, and the compiled path's to rounding."""
    fast, reference = modules(cell)
    batch = -(-fast._VECTORISED_ENTRIES // HIDDEN)
    x, y, params = point(fast, STEPS, batch=batch, seed=11)
    assert fast._vectorised(x) and not fast._vectorised(x[1:]) and not fast._vectorised(x.tolist())
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert loss == want_loss
    for name, want in want_grads.items():
        assert np.array_equal(grads[name], want), name
    assert np.array_equal(fast.forward(x, params), reference.forward(x, params))
    assert fast.loss(x, y, params) == reference.loss(x, y, params)
    states, want_states = fast.states(x, params), reference.states(x, params)
    assert all(np.array_equal(states[name], want) for name, want in want_states.items())
    # the same batch as a list takes the compiled path: the same gradient to rounding
    compiled_loss, compiled = fast.loss_and_grad(x.tolist(), y, params)
    assert compiled_loss == pytest.approx(loss, rel=1e-13)
    assert_same_gradients(compiled, grads, params)


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


@pytest.mark.parametrize(
    ("cell", "mode"), [(cell, "loop") for cell in CELLS] + [("lstm", "unrolled")], ids=[*IDS, "lstm-unrolled"]
)
def test_interface_constants_and_errors_are_the_numpy_modules(cell, mode):
    fast, reference = modules(cell, mode)
    for name in (
        "CELL",
        "STEPS",
        "MODE",
        "INPUT_SIZE",
        "HIDDEN_SIZE",
        "STATES",
        "PARAMS",
        "STORED",
        "ACTIVATIONS",
        "ANALYTIC",
    ):
        assert getattr(fast, name) == getattr(reference, name), name
    for seed in (0, 3):
        made, want = fast.init_params(seed), reference.init_params(seed)
        assert list(made) == list(want) and all(np.array_equal(made[k], want[k]) for k in want)
    x, y, params = point(fast, STEPS)
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


def _functions(source: str) -> dict:
    tree = ast.parse(source)
    return {node.name: ast.dump(node) for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_validation_and_init_params_are_copied_from_the_numpy_module(cell, mode):
    model = Model(cell=cell, steps=4, hidden=2)
    fast, reference = _functions(generate(model, mode, backend="numba")), _functions(generate(model, mode))
    for name in ("init_params", "_inputs", "_labels", "_numbers"):
        assert fast[name] == reference[name], name
    # the vectorised path: every public function of the NumPy module, renamed
    for name in ("forward", "states", "loss", "loss_and_grad", "_forward_values"):
        assert f"_numpy_{name.lstrip('_')}" in fast, name


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
    named = {node.name: [ast.unparse(d) for d in node.decorator_list] for node in tree.body
             if isinstance(node, ast.FunctionDef) and node.decorator_list}
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


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_kernels_call_no_blas(cell, monkeypatch):
    """Products in compiled loops: no np.dot or @ (which Numba hands to BLAS through SciPy) in any
    @njit function."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a)
    )
    for mode in ("loop", "unrolled"):
        tree = ast.parse(generate(Model(cell=cell, steps=3, hidden=2), mode, backend="numba"))
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


def test_bptt_check_passes_the_module_and_rejects_a_tampered_one(tmp_path, capsys):
    source = generate(Model(cell="lstm", steps=3, hidden=3), "unrolled", backend="numba")
    good = tmp_path / "lstm_fast.py"
    good.write_text(source)
    assert run_check(good) == 0
    report = capsys.readouterr().out
    assert "cell lstm" in report and "complex step" in report and "passed" in report
    # the compiled loss_and_grad, which the check's small batches run, returns ∂L/∂U_f 0.1 % off
    line = '        "U_f": grad_h_prev[3:6],\n'
    assert source.count(line) == 1
    bad = tmp_path / "lstm_tampered.py"
    bad.write_text(source.replace(line, line.replace('"U_f": ', '"U_f": 1.001 * ')))
    assert run_check(bad) == 1
    assert "FAIL U_f" in capsys.readouterr().out
    assert list((tmp_path / "__pycache__").glob("lstm_fast.*.nbi"))  # kernels cached beside the file


def _ruff(*arguments, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments], input=stdin, check=False, capture_output=True, text=True
    )


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_generated_source_passes_ruff(cell, mode, tmp_path):
    """ruff check, and stable under ruff format but for lines copied from the NumPy module (whose
    own layout is its template's)."""
    model = Model(cell=cell, steps=3, hidden=2)
    source, numpy_source = generate(model, mode, backend="numba"), generate(model, mode)
    path = tmp_path / "cell_numba.py"
    path.write_text(source)
    result = _ruff("check", "--isolated", "--line-length", "110", "--select", "E4,E7,E9,F", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    formatted = _ruff("format", "--isolated", "--line-length", "110", "-", stdin=source)
    assert formatted.returncode == 0, formatted.stderr
    # the lines of what is copied from the NumPy module: its constants, functions and the vectorised path
    numpy_names = {node.name for node in ast.parse(numpy_source).body if isinstance(node, ast.FunctionDef)}
    numpy_names |= {
        target.id
        for node in ast.parse(numpy_source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    numpy_names |= {"PARAMS", "STEPS"}
    copied = set()
    for node in ast.parse(source).body:
        names = (
            [node.name]
            if isinstance(node, ast.FunctionDef)
            else [
                t.id
                for t in getattr(node, "targets", [getattr(node, "target", None)])
                if isinstance(t, ast.Name)
            ]
        )
        if any(name in numpy_names or name.startswith("_numpy_") for name in names):
            copied.update(range(node.lineno - 1, node.end_lineno))
    lines = source.splitlines()
    matcher = difflib.SequenceMatcher(None, lines, formatted.stdout.splitlines(), autojunk=False)
    changed = {
        i for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for i in range(i1, max(i2, i1 + 1))
    }
    assert changed <= copied, [lines[i] for i in sorted(changed - copied)]
