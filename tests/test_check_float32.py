"""``bptt check`` on a module that computes in float32 (issue 26): a right formula passes as "right
formula, float32 precision", a wrong one still fails, ``--strict`` keeps float64's tolerances.

The module is a hand-written tanh RNN with the dict interface, its gradient derived by hand; the
oracle is the check's own finite differences of the module's loss, and every mistake (1 % in one
gradient, the recurrent term dropped, 1e-6 in one gradient of the float64 twin) is a negative control.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import run_bptt

RNN = '''
"""A hand-written tanh RNN, h_t = tanh(W x_t + U h_(t-1) + b), loss = mean log(1 + e^z) - y z, z = v.h_n + c."""
import numpy as np

CELL = "rnn"
ACTIVATION = "tanh"
ANALYTIC = True
INPUT_SIZE = 3
HIDDEN_SIZE = 4
STEPS = None
PARAMS = {{"W": (4, 3), "U": (4, 4), "b": (4,), "v": (4,), "c": ()}}
DTYPE = {dtype}
SCALE = {scale}
TRUNCATE = {truncate}


def _cast(value):
    return np.asarray(value) if DTYPE is None else np.asarray(value, dtype=DTYPE)


def init_params(seed):
    rng = np.random.default_rng(seed)
    return {{"W": rng.normal(0, 0.3, (4, 3)), "U": rng.normal(0, 0.15, (4, 4)), "b": np.zeros(4),
            "v": rng.normal(0, 0.5, 4), "c": np.zeros(())}}


def _forward(x, params):
    W, U, b, v, c = (_cast(params[k]) for k in ("W", "U", "b", "v", "c"))
    x = _cast(x)
    batch, steps, _ = x.shape
    hs = [np.zeros((batch, 4), dtype=np.result_type(W, U, x))]
    for t in range(steps):
        hs.append(np.tanh(x[:, t] @ W.T + hs[-1] @ U.T + b))
    return x, hs, hs[-1] @ v + c


def loss(x, y, params):
    _, _, z = _forward(x, params)
    return np.mean(np.log(1 + np.exp(z)) - _cast(y) * z)


def loss_and_grad(x, y, params):
    x, hs, z = _forward(x, params)
    U, v = _cast(params["U"]), _cast(params["v"])
    batch, steps, _ = x.shape
    value = np.mean(np.log(1 + np.exp(z)) - _cast(y) * z)
    dz = (1 / (1 + np.exp(-z)) - _cast(y)) / batch
    grads = {{"v": hs[-1].T @ dz, "c": np.sum(dz), "W": 0 * U[:, :3], "U": 0 * U, "b": 0 * v}}
    dh = np.outer(dz, v)
    for t in range(steps - 1, -1, -1):
        da = dh * (1 - hs[t + 1] ** 2)
        grads["W"] = grads["W"] + da.T @ x[:, t]
        grads["U"] = grads["U"] + da.T @ hs[t]
        grads["b"] = grads["b"] + da.sum(0)
        dh = 0 * da @ U if TRUNCATE else da @ U
    for name, factor in SCALE.items():
        grads[name] = grads[name] * factor
    return value, {{name: _cast(gradient) for name, gradient in grads.items()}}
'''


def rnn(tmp_path, dtype="np.float32", scale=None, truncate=False):
    path = tmp_path / "rnn_f32.py"
    path.write_text(RNN.format(dtype=dtype, scale=scale or {}, truncate=truncate))
    return path


def checked(path, *options):
    result = run_bptt("check", "--json", *options, str(path))
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result, report


def failing(report: dict) -> set[str]:
    return {name for method, errors in report["errors"].items() for name, error in errors.items()
            if error is None or not error <= report["tolerances"][method]}


def test_the_module_really_computes_in_float32(tmp_path):
    """The premise: its float32 gradient is off by float32 rounding, not by its formula."""
    namespace: dict = {}
    exec(RNN.format(dtype="np.float32", scale={}, truncate=False), namespace)  # noqa: S102 - the test's own module
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 7, 3)), np.array([0.0, 1.0, 1.0])
    params = namespace["init_params"](0)
    loss, grads = namespace["loss_and_grad"](x, y, params)
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    namespace["DTYPE"] = np.float64
    exact = namespace["loss_and_grad"](x, y, params)[1]
    errors = [float(np.max(np.abs(grads[k] - exact[k]))) for k in exact]
    assert 0 < max(errors) < 1e-5


def test_a_right_float32_module_passes_as_float32_precision(tmp_path):
    path = rnn(tmp_path)
    result, report = checked(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["passed"] and report["precision"] == "float32" and not report["problems"]
    text = run_bptt("check", str(path))
    assert text.returncode == 0
    assert "right formula, float32 precision" in text.stdout.splitlines()[-1]


def test_strict_fails_the_right_float32_module(tmp_path):
    result, report = checked(rnn(tmp_path), "--strict")
    assert result.returncode == 1, result.stdout + result.stderr
    assert report["precision"] == "float32" and report["strict"] and report["tolerances"]["finite differences"] == 1e-6
    text = run_bptt("check", "--strict", str(rnn(tmp_path)))
    assert text.returncode == 1 and text.stdout.splitlines()[-1].startswith("FAILED (--strict)")


@pytest.mark.parametrize("name", ["U", "W"])
def test_one_gradient_off_by_one_percent_fails_naming_it(tmp_path, name):
    result, report = checked(rnn(tmp_path, scale={name: 1.01}))
    assert result.returncode == 1, result.stdout + result.stderr
    assert report["precision"] == "float32" and failing(report) == {name}
    assert report["errors"]["finite differences"][name] > 5e-3


def test_a_missing_recurrent_term_fails_in_float32(tmp_path):
    """Truncated BPTT (∂L/∂h_(t-1) dropped): W, U and b are wrong, v and c (read at the last step) right."""
    result, report = checked(rnn(tmp_path, truncate=True))
    assert result.returncode == 1, result.stdout + result.stderr
    assert report["precision"] == "float32" and failing(report) == {"W", "U", "b"}


def test_a_float64_module_is_not_taken_for_float32(tmp_path):
    """The float64 twin passes at float64's tolerances, with the complex step."""
    result, report = checked(rnn(tmp_path, dtype="None"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["precision"] == "float64" and "complex step" in report["errors"]


def test_a_float64_module_off_by_1e_6_in_one_gradient_still_fails(tmp_path):
    result, report = checked(rnn(tmp_path, dtype="None", scale={"U": 1 + 1e-6}))
    assert result.returncode == 1, result.stdout + result.stderr
    assert report["precision"] == "float64" and failing(report) == {"U"}
    assert 5e-7 < report["errors"]["complex step"]["U"] < 2e-6


def test_float32_gradients_of_a_float64_loss_are_still_refused(tmp_path):
    """Only a module whose loss computes in float32 may return float32 gradients: a float64 module that
    rounds one gradient to float32 still fails on its dtype (tests/test_check_hostile.py's case too)."""
    source = RNN.format(dtype="None", scale={}, truncate=False) + (
        "\n_exact = loss_and_grad\n\n\ndef loss_and_grad(x, y, params):\n    value, grads = _exact(x, y, params)\n"
        "    return value, {**grads, 'W': grads['W'].astype(np.float32)}\n")
    path = tmp_path / "mixed.py"
    path.write_text(source)
    result, report = checked(path)
    assert result.returncode == 1 and report["precision"] == "float64"
    assert any("float32" in problem and problem.startswith("W:") for problem in report["problems"])


def test_the_float32_evidence_in_process():
    """``computes_in_float32`` on losses written here: float32 throughout, float32 summed in float64, a
    float64 one, and a float64 one rounded to float32 at the end (float32 numbers: float32's precision)."""
    from symbolic.verify.check_float32 import computes_in_float32

    rng = np.random.default_rng(1)
    x, y, params = rng.normal(size=(3, 5, 2)), np.array([0.0, 1.0, 0.0]), {"w": rng.normal(size=(2,))}

    def loss64(x, y, params):
        return float(np.mean(np.tanh(x @ params["w"]) ** 2))

    def loss32(x, y, params):
        return np.mean(np.tanh(x.astype(np.float32) @ params["w"].astype(np.float32)) ** 2)

    def summed64(x, y, params):
        return float(np.mean(loss32(x, y, params), dtype=np.float64) + 0.1)

    def rounded(x, y, params):
        return float(np.float32(loss64(x, y, params)))

    assert not computes_in_float32(loss64, (x, y, params))
    assert computes_in_float32(loss32, (x, y, params))
    assert computes_in_float32(summed64, (x, y, params))
    assert computes_in_float32(rounded, (x, y, params))
