"""Generated LSTM modules (issue 7): gradients, oracles, interface, command line.

Oracles: the complex step and five-point finite differences of the module's own loss, an independent
plain-NumPy forward pass for the loss value, and the BPTT formulas of ``LSTMDerivation`` evaluated at
60 digits with mpmath. A tampered module must be rejected by ``bptt check``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from symbolic.codegen import generate, load
from symbolic.derive_lstm import GATES, LSTMDerivation, parameter_shapes
from symbolic.errors import UsageError
from symbolic.model import Model

from .conftest import ROOT, run_bptt

MODES = ("unrolled", "loop")
HIDDEN = (1, 2, 4)
STEPS = (1, 2, 3, 10)
CASES = [(mode, hidden, steps) for mode in MODES for hidden in HIDDEN for steps in STEPS]
TAMPER = ('"U_f": d_weight_h[_F],', '"U_f": 1.001 * d_weight_h[_F],')


def module_for(mode, hidden, steps, inputs=3):
    return load(Model(cell="lstm", steps=steps, hidden=hidden, inputs=inputs), mode)


def point(hidden, steps, inputs=3, batch=4, seed=0):
    """(x, y, params): dense inputs, both labels, weights large enough that no gradient is trivial."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, inputs))
    y = rng.uniform(0, 1, size=batch)
    y[0], y[-1] = 0.0, 1.0
    scales = {"W": 1.0, "U": 1.5 / np.sqrt(hidden), "b": 0.5, "w": 2.0 / np.sqrt(hidden)}
    params = {
        name: rng.uniform(-1, 1, size=shape) * scales[name[0]]
        for name, shape in parameter_shapes(hidden, inputs).items()
    }
    params["b_f"] = params["b_f"] + 1.0
    return x, y, params


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def reference_loss(x, y, params):
    """Mean binary cross-entropy of the LSTM by a plain loop over time, independent of the module."""
    batch, steps, _ = x.shape
    hidden = params["w_y"].shape[0]
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    for t in range(steps):
        a = {
            gate: x[:, t] @ params[f"W_{gate}"].T + h @ params[f"U_{gate}"].T + params[f"b_{gate}"]
            for gate in GATES
        }
        i, f, o = sigmoid(a["i"]), sigmoid(a["f"]), sigmoid(a["o"])
        g = np.tanh(a["g"])
        c = f * c + i * g
        h = o * np.tanh(c)
    y_hat = sigmoid(h @ params["w_y"])
    return float(np.mean(-y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat)))


def numerical_gradient(module, x, y, params, method):
    """Every entry of every parameter, by the complex step or the five-point central stencil."""
    result = {}
    for name, value in params.items():
        gradient = np.empty(value.shape)
        for index in np.ndindex(value.shape):

            def shifted(step, name=name, value=value, index=index):
                moved = value.astype(complex if isinstance(step, complex) else float)
                moved[index] += step
                return module.loss(x, y, {**params, name: moved})

            if method == "complex step":
                gradient[index] = np.imag(shifted(1e-20j)) / 1e-20
            else:
                h = 1e-3
                near, far = shifted(h) - shifted(-h), shifted(2 * h) - shifted(-2 * h)
                gradient[index] = (8 * near - far) / (12 * h)
        result[name] = gradient
    return result


def relative(got, want, floor=0.0):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), floor, 1e-300))


@pytest.mark.parametrize(("mode", "hidden", "steps"), CASES)
def test_gradient_matches_complex_step_and_finite_differences(mode, hidden, steps):
    module = module_for(mode, hidden, steps)
    x, y, params = point(hidden, steps, seed=steps + 10 * hidden)
    loss, grads = module.loss_and_grad(x, y, params)
    assert set(grads) == set(params) == set(module.PARAMS)
    assert loss == pytest.approx(reference_loss(x, y, params), rel=1e-13)
    complex_step = numerical_gradient(module, x, y, params, "complex step")
    finite = numerical_gradient(module, x, y, params, "finite differences")
    largest = max(float(np.max(np.abs(g))) for g in finite.values())
    for name in params:
        assert grads[name].shape == params[name].shape, name
        assert relative(grads[name], complex_step[name]) <= 1e-10, name
        # rounding of the differences is absolute: measured against at least 1e-3 of the largest entry
        assert relative(grads[name], finite[name], 1e-3 * largest) <= 1e-6, name
    # the gradient is not trivially zero, and W_f has a gradient once c_(t−1) ≠ 0 (n ≥ 2)
    assert np.max(np.abs(grads["W_i"])) > 1e-4
    assert (np.max(np.abs(grads["W_f"])) > 0) == (steps > 1)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_loop_and_unrolled_agree(hidden, steps):
    unrolled, looped = module_for("unrolled", hidden, steps), module_for("loop", hidden, steps)
    x, y, params = point(hidden, steps, seed=1)
    loss_u, grads_u = unrolled.loss_and_grad(x, y, params)
    loss_l, grads_l = looped.loss_and_grad(x, y, params)
    assert abs(loss_u - loss_l) <= 1e-12 * abs(loss_l)
    for name in params:
        assert relative(grads_u[name], grads_l[name]) <= 1e-12, name
    np.testing.assert_allclose(unrolled.forward(x, params), looped.forward(x, params), rtol=1e-12)


@pytest.mark.parametrize(("hidden", "steps"), [(1, 3), (2, 2)])
def test_gradient_equals_the_derivation_at_60_digits(hidden, steps):
    module = module_for("loop", hidden, steps)
    x, y, params = point(hidden, steps, batch=2, seed=5)
    loss, grads = module.loss_and_grad(x, y, params)
    values = LSTMDerivation(Model(cell="lstm", steps=steps, hidden=hidden)).evaluate(params, x, y)
    want_loss, want = values.as_float()
    assert loss == pytest.approx(want_loss, rel=1e-13)
    for name in params:
        assert relative(grads[name], want[name]) <= 1e-12, name


def test_one_sequence_states_and_init_params():
    module = module_for("loop", 2, 5)
    params = module.init_params(seed=3)
    assert params.keys() == module.PARAMS.keys()
    for name, value in params.items():
        assert value.shape == module.PARAMS[name]
        if name != "b_f":
            assert np.all(np.abs(value) <= 1 / np.sqrt(2))
    assert np.all(params["b_f"] == 1.0)
    again = module.init_params(seed=3)
    assert all(np.array_equal(params[name], again[name]) for name in params)
    assert not np.array_equal(module.init_params(seed=4)["W_i"], params["W_i"])
    x = np.random.default_rng(0).normal(size=(5, 3))
    assert module.forward(x, params).shape == (1,)
    assert module.loss(x, 1.0, params) == pytest.approx(module.loss(x[np.newaxis], [1.0], params))
    states = module.states(x, params)
    assert set(states) == {"i", "f", "g", "o", "c", "tanh_c", "h"}
    assert all(value.shape == (1, 5, 2) for value in states.values())
    np.testing.assert_allclose(states["h"], states["o"] * np.tanh(states["c"]), rtol=1e-14)
    constants = (module.CELL, module.STEPS, module.MODE, module.HIDDEN_SIZE, module.INPUT_SIZE)
    assert constants == ("lstm", None, "loop", 2, 3)
    assert module.ACTIVATION == "tanh"


def test_loss_is_finite_for_huge_logits():
    module = module_for("loop", 2, 4)
    x, y, params = point(2, 4)
    params["w_y"] = params["w_y"] * 1e5
    loss, grads = module.loss_and_grad(x, y, params)
    assert np.isfinite(loss) and loss > 1
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.parametrize("mode", MODES)
def test_bad_input_is_a_value_error_naming_it(mode):
    module = module_for(mode, 2, 3)
    x, y, params = point(2, 3)
    with pytest.raises(ValueError, match=r"params\['U_f'\] must have shape \(2, 2\), got \(2, 3\)"):
        module.loss(x, y, {**params, "U_f": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="params lacks 'b_o'"):
        module.loss_and_grad(x, y, {name: v for name, v in params.items() if name != "b_o"})
    with pytest.raises(ValueError, match="unknown key 'W_x'"):
        module.forward(x, {**params, "W_x": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"params\['w_y'\] must be finite"):
        module.loss(x, y, {**params, "w_y": np.array([np.nan, 0.0])})
    with pytest.raises(ValueError, match="x must have shape"):
        module.loss(x[:, :, :2], y, params)
    with pytest.raises(ValueError, match="y must have shape"):
        module.loss(x, y[:2], params)
    with pytest.raises(TypeError, match="params must be a dict"):
        module.loss(x, y, list(params.values()))
    if mode == "unrolled":
        with pytest.raises(ValueError, match="unrolled for exactly 3 steps"):
            module.loss(x[:, :2], y, params)


@pytest.mark.parametrize(
    ("mode", "hidden", "steps"), [("unrolled", 1, 1), ("unrolled", 2, 3), ("loop", 4, 3), ("loop", 1, 1)]
)
def test_generated_source_passes_ruff(mode, hidden, steps, tmp_path):
    path = tmp_path / "lstm.py"
    path.write_text(generate(Model(cell="lstm", steps=steps, hidden=hidden), mode))
    for config in (["--isolated"], ["--config", str(ROOT / "pyproject.toml")]):
        for command in (["check"], ["format", "--check"]):
            result = subprocess.run(
                [sys.executable, "-m", "ruff", *command, *config, str(path)],
                check=False,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stdout + result.stderr


def test_unrolled_code_comes_from_the_derivation():
    source = generate(Model(cell="lstm", steps=3, hidden=2), "unrolled")
    # c_0 = 0 substituted at t = 1, δc_4 = 0 at t = n, δa_f,1 = δc_1 c_0 … = 0
    assert "c[1] = g[1] * i[1]" in source
    assert "delta_c = delta_h * (1 - tanh_c[3] ** 2) * o[3]" in source
    assert "delta_a_f[0] = 0" in source
    # the cell path δc_(t+1) ⊙ f_(t+1) in the recursion, gate derivatives from the stored gates
    assert "delta_c = delta_c * f[3] + delta_h * (1 - tanh_c[2] ** 2) * o[2]" in source
    assert "delta_a_g[1] = delta_c * (1 - g[2] ** 2) * i[2]" in source
    lines = [len(generate(Model(cell="lstm", steps=n), "unrolled").splitlines()) for n in (10, 20, 30)]
    assert lines[2] - lines[1] == lines[1] - lines[0]  # linear in n


def test_unrolled_limit_and_numba_are_usage_errors():
    with pytest.raises(UsageError, match="limited to n <= 256"):
        generate(Model(cell="lstm", steps=300), "unrolled")
    assert "MODE = \"loop\"" in generate(Model(cell="lstm", steps=300))  # the default for long sequences
    # --backend numba renders templates/numba/lstm.py.j2 (checked in tests/test_numba_lstm.py)
    assert "@njit(cache=True)" in generate(Model(cell="lstm", steps=3), "loop", backend="numba")


def test_codegen_and_check_command_line(tmp_path):
    target = tmp_path / "lstm.py"
    made = run_bptt("codegen", "--cell", "lstm", "--hidden", "2", "--steps", "4", "-o", str(target))
    assert made.returncode == 0, made.stderr
    head = target.read_text().splitlines()[:2]
    assert "do not edit" in head[0] and "--cell lstm" in head[1] and "--hidden 2" in head[1]
    good = run_bptt("check", str(target))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "cell lstm" in good.stdout and "passed" in good.stdout
    for name in ("W_i", "U_f", "b_o", "w_y"):
        assert any(line.split()[:1] == [name] for line in good.stdout.splitlines())
    as_json = run_bptt("check", "--json", "--seed", "2", str(target))
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["passed"] is True and report["cell"] == "lstm"
    assert set(report["errors"]["complex step"]) == set(parameter_shapes(2, 3))
    assert report["errors"]["complex step"]["U_f"] < 1e-10

    source = target.read_text()
    assert source.count(TAMPER[0]) == 1
    tampered = tmp_path / "lstm_tampered.py"
    tampered.write_text(source.replace(*TAMPER))
    bad = run_bptt("check", str(tampered))
    assert bad.returncode == 1 and "FAILED" in bad.stdout
    row = next(line for line in bad.stdout.splitlines() if line.split()[:1] == ["U_f"])
    assert 5e-4 < float(row.split()[1]) < 2e-3 and 5e-4 < float(row.split()[2]) < 2e-3
    assert "FAIL U_f" in bad.stdout
    others = [line for line in bad.stdout.splitlines() if line.split()[:1] == ["U_i"]]
    assert float(others[0].split()[1]) < 1e-6

    numba = run_bptt("codegen", "--cell", "lstm", "--backend", "numba")
    assert numba.returncode == 0 and "from numba import njit" in numba.stdout, numba.stderr
