"""An adversarial pass over bptt grade's pairs: course-style RNN pairs written here (not tests/grade_cases/),
each wrong in one way a student writes it, must be graded wrong with that mistake named, and a right one
right. The oracle is an independent hand-written BPTT (``_backward``), checked against finite differences."""

import numpy as np

from symbolic.verify.grade_pairs import grade_pair


def rnn_forward(x, h0, Wx, Wh, b):
    h, prev, cache = np.zeros((*x.shape[:2], h0.shape[1])), h0, []
    for t in range(x.shape[1]):
        prev = np.tanh(x[:, t] @ Wx + prev @ Wh + b)
        h[:, t] = prev
    cache = (x, h0, Wx, Wh, h)
    return h, cache


def _backward(dh, cache, last_only=False, unsquared=False):
    x, h0, Wx, Wh, h = cache
    dx, dWx, dWh, db = np.zeros_like(x), np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1])
    dnext = np.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        upstream = dh[:, t] if (t == x.shape[1] - 1 or not last_only) else 0
        da = (upstream + dnext) * (1 - h[:, t] ** (1 if unsquared else 2))
        prev = h[:, t - 1] if t else h0
        dx[:, t], dnext = da @ Wx.T, da @ Wh.T
        dWx, dWh, db = dWx + x[:, t].T @ da, dWh + prev.T @ da, db + da.sum(0)
    return dx, dnext, dWx, dWh, db


def rnn_backward(dh, cache):
    return _backward(dh, cache)


def test_the_hand_written_oracle_is_finite_differences():
    rng = np.random.default_rng(3)
    x, h0, Wx, Wh, b = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 3)), *rng.normal(0, 0.6, (2, 3, 3)), \
        rng.normal(0, 0.6, 3)
    G = rng.normal(size=(2, 4, 3))
    grads = rnn_backward(G, rnn_forward(x, h0, Wx, Wh, b)[1])
    eps = 1e-6
    for k, array in enumerate((x, h0, Wx, Wh, b)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            array[index] += eps
            up = (rnn_forward(x, h0, Wx, Wh, b)[0] * G).sum()
            array[index] -= 2 * eps
            down = (rnn_forward(x, h0, Wx, Wh, b)[0] * G).sum()
            array[index] += eps
            numeric[index] = (up - down) / (2 * eps)
        assert np.allclose(grads[k], numeric, atol=1e-7)


def test_right_pair_passes():
    assert grade_pair(rnn_forward, rnn_backward).passed


def test_dx_not_computed_is_named_not_a_factor_of_zero():
    def rnn_backward_no_dx(dh, cache):
        dx, *rest = rnn_backward(dh, cache)
        return (np.zeros_like(dx), *rest)

    report = grade_pair(rnn_forward, rnn_backward_no_dx)
    assert not report.passed
    assert "0 ×" not in (report.diagnosis or "") and "clipped" not in (report.diagnosis or "")
    assert "dx" in report.diagnosis and "zero" in report.diagnosis


def test_dh0_zero_is_named():
    def rnn_backward_no_dh0(dh, cache):
        dx, dh0, *rest = rnn_backward(dh, cache)
        return (dx, np.zeros_like(dh0), *rest)

    report = grade_pair(rnn_forward, rnn_backward_no_dh0)
    assert not report.passed
    assert report.mistake is None and "dh0" in report.diagnosis and "zero" in report.diagnosis


def test_transposed_dWh_is_named():
    def rnn_backward_transposed(dh, cache):
        dx, dh0, dWx, dWh, db = rnn_backward(dh, cache)
        return dx, dh0, dWx, dWh.T, db

    report = grade_pair(rnn_forward, rnn_backward_transposed)
    assert not report.passed
    assert "dWh" in report.diagnosis and "transpose" in report.diagnosis


def test_only_the_last_steps_upstream_gradient_is_named():
    report = grade_pair(rnn_forward, lambda dh, cache: _backward(dh, cache, last_only=True))
    assert not report.passed
    assert "last step" in report.diagnosis


def test_nan_gradient_is_wrong_and_named():
    def rnn_backward_nan(dh, cache):
        dx, dh0, dWx, dWh, db = rnn_backward(dh, cache)
        return dx, dh0, dWx * np.nan, dWh, db

    report = grade_pair(rnn_forward, rnn_backward_nan)
    assert not report.passed
    assert "dWx" in report.diagnosis and "NaN" in report.diagnosis


def test_tanh_derivative_without_its_square_is_named():
    def rnn_backward_unsquared(dh, cache):
        x, h0, Wx, Wh, h = cache
        # 1 − h where 1 − h² belongs: tanh(a) = h makes the wrong derivative (1 − h), i.e. h² → h
        return _backward(dh, (x, h0, Wx, Wh, h), unsquared=True)

    report = grade_pair(rnn_forward, rnn_backward_unsquared)
    assert not report.passed
    assert report.mistake == "tanh_derivative_unsquared"


def test_a_missing_backward_or_layer_names_its_own_flag(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "pair.py"
    path.write_text("def rnn_forward(x, h0, Wx, Wh, b):\n    return x, None\n")
    for flags, wanted in ((["--forward", "rnn_forward", "--backward", "rnn_backwards"], "--backward"),
                          (["--forward", "rnn_fwd", "--backward", "rnn_forward"], "--forward"),
                          (["--forward", "forward", "--backward", "backward", "--layer", "RNN"], "--layer")):
        result = subprocess.run([sys.executable, "-m", "symbolic", "grade", str(path), *flags], capture_output=True,
                                text=True, timeout=300, check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert wanted in result.stderr and "--function" not in result.stderr, result.stderr


LAYERS = '''
import numpy as np


class RNN:
    def __init__(self, Wx, Wh, b):
        self.Wx, self.Wh, self.b = Wx, Wh, b

    def forward(self, x, h0):
        self.x, self.hs = x, [h0]
        for t in range(x.shape[1]):
            self.hs.append(np.tanh(x[:, t] @ self.Wx + self.hs[-1] @ self.Wh + self.b))
        return np.stack(self.hs[1:], 1)

    def backward(self, dh):
        self.grads = {"Wx": 0, "Wh": 0}
        dx, dnext = np.zeros_like(self.x), 0
        for t in reversed(range(dh.shape[1])):
            da = (dh[:, t] + dnext) * (1 - self.hs[t + 1] ** 2)
            dx[:, t], dnext = da @ self.Wx.T, da @ self.Wh.T
        return dx
'''


def test_a_layer_without_dh0_or_a_wrong_grads_from_says_what_is_missing(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "layers.py"
    path.write_text(LAYERS)
    base = [sys.executable, "-m", "symbolic", "grade", str(path), "--layer", "RNN", "--forward", "forward",
            "--backward", "backward"]
    result = subprocess.run([*base, "--grads-from", "grads"], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 2 and "dh0" in result.stderr and "StopIteration" not in result.stderr, result.stderr
    path.write_text(LAYERS.replace("        return dx\n", "        self.dh0 = dnext\n        return dx\n"))
    for flags, wanted in ((["--grads-from", "gradients"], "--grads-from"), (["--grads-from", "d{}"], "--grads-from"),
                          (["--grads-from", "grads"], "grads has no b")):
        result = subprocess.run([*base, *flags], capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert wanted in result.stderr, result.stderr


def test_a_float64_gradient_off_by_1e6_stays_wrong_beside_a_float32_dx():
    def rnn_backward_off(dh, cache):
        dx, dh0, dWx, dWh, db = rnn_backward(dh, cache)
        dWh = dWh.copy()
        dWh[0, 1] *= 1 + 1e-6
        return dx.astype(np.float32), dh0, dWx, dWh, db

    def rnn_backward_dx32(dh, cache):
        dx, *rest = rnn_backward(dh, cache)
        return (dx.astype(np.float32), *rest)

    report = grade_pair(rnn_forward, rnn_backward_off)
    assert not report.passed
    assert [f.parameter for f in report.findings if not f.right] == ["dWh"]
    assert grade_pair(rnn_forward, rnn_backward_dx32).passed  # the float32 dx itself is within its reach


def test_float32_forward_and_backward_still_pass():
    def forward32(x, h0, Wx, Wh, b):
        return rnn_forward(*(a.astype(np.float32) for a in (x, h0, Wx, Wh, b)))

    def backward32(dh, cache):
        return tuple(a.astype(np.float32) for a in rnn_backward(dh.astype(np.float32), cache))

    report = grade_pair(forward32, backward32)
    assert report.passed and report.precision == "float32"
