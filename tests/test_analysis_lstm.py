"""bptt analyze --cell lstm: the state Jacobian and its products against finite differences of a plain
float LSTM step written here (no generated or derived code), the RNN comparison against a plain loop,
the JSON, the plot and the point of it all (the cell path decays far slower than the RNN's product)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from symbolic import analysis_lstm
from symbolic.data import encode

from .conftest import run_bptt as bptt

GATES = ("i", "f", "g", "o")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def step(h, c, x, p):
    """One LSTM step (h_{t−1}, c_{t−1}, x_t) → (h_t, c_t) and its gates, written out plainly."""
    i = sigmoid(p["W_i"] @ x + p["U_i"] @ h + p["b_i"])
    f = sigmoid(p["W_f"] @ x + p["U_f"] @ h + p["b_f"])
    g = np.tanh(p["W_g"] @ x + p["U_g"] @ h + p["b_g"])
    o = sigmoid(p["W_o"] @ x + p["U_o"] @ h + p["b_o"])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new, {"i": i, "f": f, "g": g, "o": o}


def random_params(H, D, rng, scale=0.8):
    p = {}
    for gate in GATES:
        p[f"W_{gate}"] = rng.normal(0, scale, (H, D))
        p[f"U_{gate}"] = rng.normal(0, scale, (H, H))
        p[f"b_{gate}"] = rng.normal(0, scale, H)
    p["w_y"] = rng.normal(0, 1, H)
    return p


def state_map(p, xs):
    """(h_j, c_j) stacked → (h_n, c_n) stacked, over the inputs xs."""

    def run(state):
        H = len(state) // 2
        h, c = state[:H], state[H:]
        for x in xs:
            h, c, _ = step(h, c, x, p)
        return np.concatenate([h, c])

    return run


def finite_difference_jacobian(function, point, eps=1e-6):
    columns = []
    for k in range(len(point)):
        e = np.zeros_like(point)
        e[k] = eps
        columns.append((function(point + e) - function(point - e)) / (2 * eps))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("H", [1, 3])
def test_jacobian_blocks_match_finite_differences_of_one_step(H):
    rng = np.random.default_rng(H)
    D = 3
    p = random_params(H, D, rng)
    h_prev, c_prev, x = rng.normal(0, 0.7, H), rng.normal(0, 1.0, H), rng.normal(0, 1, D)
    _, c, gates = step(h_prev, c_prev, x, p)
    # jacobian_blocks reads c_{t−1} from the row before: row 0 carries c_prev, row 1 the step.
    states = {gate: np.stack([np.full(H, 0.5), gates[gate]]) for gate in GATES}
    states["c"] = np.stack([c_prev, c])
    blocks = analysis_lstm.jacobian_blocks(states, p)
    expected = finite_difference_jacobian(state_map(p, [x]), np.concatenate([h_prev, c_prev]))
    np.testing.assert_allclose(blocks[1], expected, rtol=1e-6, atol=1e-8)
    # the carousel: ∂c_t/∂c_{t−1} is exactly diag(f_t)
    np.testing.assert_array_equal(blocks[1][H:, H:], np.diag(gates["f"]))


def test_a_wrong_block_is_caught():
    """Negative control: dropping the forget-gate path from ∂c_t/∂h_{t−1} breaks the agreement."""
    rng = np.random.default_rng(5)
    H, D = 2, 3
    p = random_params(H, D, rng)
    h_prev, c_prev, x = rng.normal(0, 0.7, H), rng.normal(0, 1.0, H), rng.normal(0, 1, D)
    _, c, gates = step(h_prev, c_prev, x, p)
    states = {gate: np.stack([np.full(H, 0.5), gates[gate]]) for gate in GATES}
    states["c"] = np.stack([c_prev, c])
    broken = dict(p, U_f=np.zeros((H, H)))  # the blocks then miss diag(c_{t−1} f′) U_f
    blocks = analysis_lstm.jacobian_blocks(states, broken)
    expected = finite_difference_jacobian(state_map(p, [x]), np.concatenate([h_prev, c_prev]))
    assert not np.allclose(blocks[1], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("H", [1, 2])
def test_product_norms_match_the_dense_jacobian_of_the_n_step_map(H):
    n = 6
    result = analysis_lstm.analyze_lstm(steps=n, hidden=H, seed=3, forget_bias=2.0)
    p = result.params
    xs = encode(result.words)
    # the trajectory, by the plain step
    hs, cs = [np.zeros(H)], [np.zeros(H)]
    forget = []
    for x in xs:
        h, c, gates = step(hs[-1], cs[-1], x, p)
        hs.append(h)
        cs.append(c)
        forget.append(gates["f"])
    for j in range(1, n + 1):
        dense = finite_difference_jacobian(state_map(p, xs[j:]), np.concatenate([hs[j], cs[j]]))
        expected = {
            "cc": np.linalg.norm(dense[H:, H:], 2),
            "hh": np.linalg.norm(dense[:H, :H], 2),
            "state": np.linalg.norm(dense, 2),
        }
        for key, value in expected.items():
            assert 10 ** result.log10[key][j - 1] == pytest.approx(value, rel=1e-5, abs=1e-9), (key, j)
        carousel = np.max(np.prod(np.array(forget[j:]), axis=0)) if j < n else 1.0
        assert 10 ** result.log10["carousel"][j - 1] == pytest.approx(carousel, rel=1e-12)
    np.testing.assert_allclose(result.forget, np.array(forget), rtol=1e-12)


def test_rnn_comparison_is_the_plain_tanh_product_on_the_same_words():
    result = analysis_lstm.analyze_lstm(steps=8, hidden=1, seed=1)
    xs = encode(result.words)
    o, factors = 0.0, []
    for x in xs:  # analyze's defaults: w_i = 0.5 each word, w_h = 0.5
        o = math.tanh(0.5 * float(x.sum()) + 0.5 * o)
        factors.append((1 - o * o) * 0.5)
    for j in range(1, 9):
        expected = abs(np.prod(factors[j:])) if j < 8 else 1.0
        assert 10 ** result.rnn_log10[j - 1] == pytest.approx(expected, rel=1e-10)


def test_the_cell_path_decays_far_slower_than_the_rnn_product():
    """The issue's point, at the defaults (init_params' b_f = 1) over 20 steps."""
    result = analysis_lstm.analyze_lstm(steps=20, hidden=1, seed=0)
    cell, rnn = result.log10["cc"][0], result.rnn_log10[0]
    assert cell - rnn > 5  # over 19 steps, the cell path is more than 10^5 times the RNN's product
    assert result.rates()["cell"] > result.rates()["rnn"] + 0.3
    opened = analysis_lstm.analyze_lstm(steps=20, hidden=4, seed=0, forget_bias=5.0)
    assert opened.log10["carousel"][0] > math.log10(0.85)  # σ(5)^19 ≈ 0.88 up to the inputs


def test_cli_table_json_and_plot(tmp_path):
    plot = tmp_path / "lstm.png"
    run = bptt("analyze", "--cell", "lstm", "--steps", "12", "--hidden", "2", "--plot", str(plot))
    assert run.returncode == 0, run.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "‖∂c_n/∂c_j‖" in run.stdout and "RNN |Π|" in run.stdout and "regime (LSTM cell path)" in run.stdout
    assert f"wrote {plot}" in run.stderr
    run = bptt("analyze", "--cell", "lstm", "--steps", "12", "--hidden", "2", "--json", "--forget-bias", "3")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["cell"] == "lstm" and report["steps"] == 12 and report["hidden"] == 2
    assert report["forget_bias"] == 3.0 and report["weights"]["b_f"] == [3.0, 3.0]
    for key in ("cell_norms", "hidden_norms", "carousel_norms", "state_norms", "gaps"):
        assert len(report[key]) == 12, key
    assert report["cell_norms"][-1] == 1.0 and report["gaps"][0] == 11
    assert len(report["rnn"]["products"]) == 12 and report["rnn"]["hidden"] == 2
    assert set(report["weights"]) == {f"{k}_{g}" for k in "WUb" for g in GATES} | {"w_y"}
    assert np.shape(report["weights"]["U_f"]) == (2, 2) and len(report["forget_gates"]) == 12
    assert report["regime"] in ("vanishing", "stable", "exploding")


def test_cli_input_words_and_determinism():
    first = bptt("analyze", "--cell", "lstm", "--input", "cat,mat,rat,rat", "--json")
    again = bptt("analyze", "--cell", "lstm", "--input", "cat,mat,rat,rat", "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    assert json.loads(first.stdout)["input"] == ["cat", "mat", "rat", "rat"]


@pytest.mark.parametrize(
    "arguments, phrase",
    [
        (["--w-i", "1,1,1"], "--w-i sets a weight of the plain RNN"),
        (["--hidden", "2", "--w-h", "1"], "use --w-h-scale"),
        (["--activation", "relu"], "does not apply to --cell lstm"),
        (["--bias"], "--bias does not apply to --cell lstm"),
        (["--forget-bias", "nan"], "--forget-bias must be a finite number"),
    ],
)
def test_cli_refuses_bad_combinations(arguments, phrase):
    run = bptt("analyze", "--cell", "lstm", "-n", "4", *arguments)
    assert run.returncode == 2 and phrase in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_forget_bias_needs_the_lstm():
    run = bptt("analyze", "-n", "4", "--forget-bias", "2")
    assert run.returncode == 2 and "add --cell lstm" in run.stderr
