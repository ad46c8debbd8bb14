"""The Numba LSTM module (templates/numba/lstm.py.j2): the NumPy LSTM module's interface, constants
and messages, its values and gradients to rounding, finite differences and the complex step through
``bptt check``, the parallel kernels, ruff-clean source.

Compiling costs seconds per module and dtype, so modules come from ``load`` (cached per model, mode
and backend, kernels cached on disk): one loop module per hidden size serves every length, and the
unrolled modules, whose kernels are those of loop mode behind a fixed-length check, one per length.
"""

from __future__ import annotations

import ast
import importlib.util
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
from .test_lstm_codegen import TAMPER, point

if os.environ.get("CI"):
    import numba  # CI installs the extra: a missing Numba fails there instead of skipping
else:
    numba = pytest.importorskip("numba")

HIDDEN = (1, 4)
STEPS = (1, 3, 10)
#: Loop modules are generated for the longest length and run at every length.
LOOP_STEPS = max(STEPS)
CASES = [(mode, hidden, steps) for mode in ("loop", "unrolled") for hidden in HIDDEN for steps in STEPS]


def modules(mode, hidden, steps):
    """(Numba module, NumPy module) for the same LSTM and mode."""
    model = Model(cell="lstm", hidden=hidden, steps=LOOP_STEPS if mode == "loop" else steps)
    return load(model, mode, backend="numba"), load(model, mode)


def relative(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


@pytest.mark.parametrize(("mode", "hidden", "steps"), CASES)
def test_agrees_with_the_numpy_lstm_module(mode, hidden, steps):
    fast, reference = modules(mode, hidden, steps)
    x, y, params = point(hidden, steps, batch=5, seed=10 * hidden + steps)
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert isinstance(loss, float) and loss == pytest.approx(want_loss, rel=1e-13)
    assert list(grads) == list(want_grads) == list(params)
    for name, want in want_grads.items():
        assert grads[name].shape == want.shape == params[name].shape, name
        if np.any(want):  # ∂L/∂b_f, ∂L/∂W_f and ∂L/∂U_f vanish at n = 1 (c_0 = 0): then exactly
            assert relative(grads[name], want) < 1e-12, name
        else:
            assert not np.any(grads[name]), name
    assert fast.loss(x, y, params) == pytest.approx(want_loss, rel=1e-13)
    assert relative(fast.forward(x, params), reference.forward(x, params)) < 1e-13
    states, want_states = fast.states(x, params), reference.states(x, params)
    assert list(states) == list(want_states)
    for name, want in want_states.items():
        assert states[name].shape == want.shape == (5, steps, hidden)
        assert np.max(np.abs(states[name] - want)) < 1e-13, name


@pytest.mark.parametrize(("mode", "hidden"), [("loop", 1), ("loop", 4), ("unrolled", 4)])
def test_bptt_check_finite_differences_and_complex_step(mode, hidden):
    """symbolic.check: five-point differences and the complex step (complex128 through the kernels)."""
    fast, _ = modules(mode, hidden, 3)
    report = check_module(fast, "numba lstm", seed=hidden)
    assert report.passed and report.cases == 4
    assert set(report.errors) == {"finite differences", "complex step"}
    assert max(report.errors["complex step"].values()) < 1e-12
    assert max(report.errors["finite differences"].values()) < 1e-7


def test_complex_step_flows_through_and_loss_stays_complex():
    fast, reference = modules("loop", 4, 3)
    x, y, params = point(4, 3, seed=2)
    step = 1e-20
    shifted = {**params, "U_f": params["U_f"] + 0j}
    shifted["U_f"][1, 2] += 1j * step
    got, want = fast.loss(x, y, shifted), reference.loss(x, y, shifted)
    assert isinstance(got, complex)
    assert got.imag / step == pytest.approx(want.imag / step, rel=1e-12)
    assert got.imag / step == pytest.approx(fast.loss_and_grad(x, y, params)[1]["U_f"][1, 2], rel=1e-12)


def test_parallel_kernels_agree_with_serial_and_numpy(monkeypatch):
    """The prange kernels on several chunks of sequences with a partial last one."""
    fast, reference = modules("loop", 4, 3)
    batch = 3 * fast._ROWS + 7
    x, y, params = point(4, 3, batch=batch, seed=7)
    monkeypatch.setattr(fast, "_PARALLEL_ENTRIES", 4 * batch)  # wide enough for the threads
    if numba.get_num_threads() > 1:
        assert fast._kernels(batch)[0] is fast._forward_parallel
    loss, grads = fast.loss_and_grad(x, y, params)
    want_loss, want_grads = reference.loss_and_grad(x, y, params)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    for name, want in want_grads.items():
        assert relative(grads[name], want) < 1e-12, name
    xs, _, w = fast._compiled_arguments(x, None, params)
    serial = fast._forward_serial(xs, w["W"], w["U_transposed"], w["b"])
    parallel = fast._forward_parallel(xs, w["W"], w["U_transposed"], w["b"])
    assert np.array_equal(serial, parallel)  # each chunk owns its rows: deterministic
    delta_h = np.random.default_rng(7).normal(size=(batch, 4))
    for span in (1, 2):
        one = fast._backward_serial(xs, serial, w["U"], delta_h.copy(), span)
        other = fast._backward_parallel(xs, serial, w["U"], delta_h.copy(), span)
        for got, want in zip(other, one):
            assert np.array_equal(got, want)


def test_wide_steps_run_the_numpy_modules_functions():
    """From _VECTORISED_ENTRIES entries per step (B·H) on, forward, states, loss and loss_and_grad are
    the NumPy LSTM module's own functions: its numbers exactly, and the compiled path's to rounding."""
    fast, reference = modules("loop", 4, 3)
    batch = fast._VECTORISED_ENTRIES // 4
    x, y, params = point(4, 3, batch=batch, seed=11)
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
    for name, want in grads.items():
        assert relative(compiled[name], want) < 1e-12, name


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
def test_interface_constants_and_errors_are_the_numpy_modules(mode):
    fast, reference = modules(mode, 4, 3)
    for name in ("CELL", "STEPS", "MODE", "ACTIVATION", "INPUT_SIZE", "HIDDEN_SIZE", "GATES", "PARAMS", "_H"):
        assert getattr(fast, name) == getattr(reference, name), name
    for seed in (0, 3):
        made, want = fast.init_params(seed), reference.init_params(seed)
        assert list(made) == list(want) and all(np.array_equal(made[k], want[k]) for k in want)
    x, y, params = point(4, 3)
    one = fast.loss_and_grad(x[0], y[0], params)  # (n, D) is a batch of one
    assert one[0] == pytest.approx(fast.loss(x[:1], y[:1], params), rel=1e-15)
    integers = fast.loss_and_grad(x.astype(int), y, params)[0]
    assert integers == pytest.approx(reference.loss_and_grad(x.astype(int), y, params)[0], rel=1e-13)
    bad = [
        (x[..., :2], y, params),
        (x[:, :0], y, params),
        (np.zeros((5, 4, 3)), y, params),
        (x, y[:2], params),
        (x, y + 2, params),
        (x, y, {k: v for k, v in params.items() if k != "U_f"}),
        (x, y, {**params, "V": np.ones(2)}),
        (x, y, {**params, "W_g": params["W_g"][:2]}),
        (x, y, {**params, "b_o": np.full(4, np.nan)}),
        (x, y, {**params, "w_y": np.array(["a"] * 4)}),
        (x, y, list(params.values())),
    ]
    for args in bad:
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
def test_validation_and_init_params_are_copied_from_the_numpy_module(mode):
    model = Model(cell="lstm", steps=4, hidden=2)
    fast, reference = _functions(generate(model, mode, backend="numba")), _functions(generate(model, mode))
    for name in ("init_params", "_inputs", "_labels", "_numbers", "_stacked"):
        assert fast[name] == reference[name], name


def test_no_warnings_and_exact_loss_for_huge_logits():
    fast, reference = modules("loop", 4, 3)
    x, y, params = point(4, 3, seed=4)
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e4, -1e4):
            huge = {**params, "w_y": params["w_y"] * scale}
            loss, grads = fast.loss_and_grad(x, y, huge)
            assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
            assert loss == pytest.approx(reference.loss(x, y, huge), rel=1e-12)


def test_header_decorators_and_the_codegen_command(tmp_path):
    source = generate(Model(cell="lstm", steps=5, hidden=2), "loop", "out/fast.py", backend="numba")
    assert source.splitlines()[1] == (
        "#   bptt codegen --cell lstm --steps 5 --hidden 2 --mode loop --backend numba -o out/fast.py"
    )
    tree = ast.parse(source)
    decorators = [
        ast.unparse(d) for node in tree.body if isinstance(node, ast.FunctionDef) for d in node.decorator_list
    ]
    assert len(decorators) >= 8
    assert all(d.startswith("njit(cache=True") and "fastmath" not in d for d in decorators)
    # the cell path and the gate derivatives, printed from the derivation
    assert "delta_c = delta_c_next * f_next + delta_h * o_t * (1 - tanh_c_t**2)" in source
    assert "delta_c = delta_h * o_t * (1 - tanh_c_t**2)" in source  # t = n: δc_(n+1) = 0
    assert "c_t = c_prev * f_t + g_t * i_t" in source


def test_without_numba_the_lstm_backend_is_a_one_line_usage_error(monkeypatch, capsys):
    from symbolic.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a)
    )
    with pytest.raises(UsageError, match=r"pip install bptt\[fast\]"):
        generate(Model(cell="lstm", steps=3), backend="numba")
    assert main(["codegen", "--cell", "lstm", "--backend", "numba"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "pip install bptt[fast]" in error


def test_bptt_check_passes_the_module_and_rejects_a_tampered_one(tmp_path, capsys):
    source = generate(Model(cell="lstm", steps=3, hidden=3), "unrolled", backend="numba")
    good = tmp_path / "lstm_fast.py"
    good.write_text(source)
    assert run_check(good) == 0
    report = capsys.readouterr().out
    assert "cell lstm" in report and "complex step" in report and "passed" in report
    # once in the NumPy module's loss_and_grad (the vectorised path's copy), last in the compiled one,
    # which the check's small batches run: that one is tampered with
    assert source.count(TAMPER[0]) == 2
    head, _, tail = source.rpartition(TAMPER[0])
    bad = tmp_path / "lstm_tampered.py"
    bad.write_text(head + TAMPER[1] + tail)
    assert run_check(bad) == 1
    assert "FAIL U_f" in capsys.readouterr().out
    assert list((tmp_path / "__pycache__").glob("lstm_fast.*.nbi"))  # kernels cached beside the file


def test_generated_source_passes_ruff(tmp_path):
    for mode in ("unrolled", "loop"):
        for hidden in HIDDEN:
            path = tmp_path / f"lstm_{mode}_h{hidden}_numba.py"
            path.write_text(generate(Model(cell="lstm", steps=3, hidden=hidden), mode, backend="numba"))
            for command in (["check"], ["format", "--check"]):
                result = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "ruff",
                        *command,
                        "--config",
                        str(ROOT / "pyproject.toml"),
                        str(path),
                    ],
                    check=False,
                    capture_output=True,
                    text=True,
                )
                assert result.returncode == 0, result.stdout + result.stderr
