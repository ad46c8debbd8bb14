"""bptt analyze --cell C: the state Jacobian and its products against finite differences of plain step
functions written from the papers (tests/test_cell_codegen.REFERENCES: no generated or derived code),
the RNN comparison against a plain loop, the JSON, the plot and the point of it all (the LSTM's cell
path decays far slower than the RNN's product)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from symbolic.cells import cell_of
from symbolic.cli.common import derivation_for
from symbolic.engine.derivation import derive_cell
from symbolic.engine.evaluate import forward_values
from symbolic.model import Model
from symbolic.study import cell_analysis
from symbolic.study.data import encode

from .conftest import run_bptt as bptt
from .test_cell_codegen import CELLS, IDS, REFERENCES


def _analyze(model, **options):
    """analyze_cell with the model's one derivation, as bptt analyze makes it."""
    return cell_analysis.analyze_cell(model, derivation_for(model), **options)


def random_params(d, H, D, rng, scale=0.8):
    return {name: rng.normal(0, scale, shape) for name, shape in d.shapes(H, D).items()}


def state_map(cell_id, p, xs, hidden, count):
    """The stacked states at step j → the stacked states at n, over the inputs xs (one sequence)."""
    step, _ = REFERENCES[cell_id]

    def run(stacked):
        state = tuple(stacked[k * hidden:(k + 1) * hidden][None] for k in range(count))
        for x in xs:
            state = step(p, x[None], state)
        return np.concatenate([s[0] for s in state])

    return run


def finite_difference_jacobian(function, point, eps=1e-6):
    columns = []
    for k in range(len(point)):
        e = np.zeros_like(point)
        e[k] = eps
        columns.append((function(point + e) - function(point - e)) / (2 * eps))
    return np.stack(columns, axis=1)


def _setup(cell, H, seed, scale=0.8):
    d = derive_cell(cell_of(Model(cell=cell)))
    rng = np.random.default_rng(seed)
    p = random_params(d, H, 3, rng, scale)
    return d, rng, p


@pytest.mark.parametrize("H", [1, 3])
@pytest.mark.parametrize(("cell", "cell_id"), list(zip(CELLS, IDS)), ids=IDS)
def test_step_jacobian_matches_finite_differences(cell, cell_id, H):
    d, rng, p = _setup(cell, H, H, scale=0.8 if cell_id != "indrnn" else 0.3)
    xs = rng.normal(0, 1, (2, 3))
    history, states = forward_values(d, p, xs)
    blocks = cell_analysis.step_jacobians(d, p, history)
    count = len(d.states)
    previous = np.concatenate([states[s][1][0] for s in d.states])   # the states after step 1
    expected = finite_difference_jacobian(state_map(cell_id, p, xs[1:], H, count), previous)
    np.testing.assert_allclose(blocks[1], expected, rtol=1e-6, atol=1e-8)


def test_a_wrong_block_is_caught():
    """Negative control: the LSTM's blocks computed without U_f's path disagree with the plain step."""
    d, rng, p = _setup("lstm", 2, 5)
    xs = rng.normal(0, 1, (2, 3))
    history, states = forward_values(d, p, xs)
    broken = dict(p, U_f=np.zeros((2, 2)))
    blocks = cell_analysis.step_jacobians(d, broken, history)
    previous = np.concatenate([states[s][1][0] for s in d.states])
    expected = finite_difference_jacobian(state_map("lstm", p, xs[1:], 2, 2), previous)
    assert not np.allclose(blocks[1], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("H", [1, 2])
@pytest.mark.parametrize(("cell", "cell_id"), [("lstm", "lstm"), ("gru", "gru")], ids=["lstm", "gru"])
def test_product_norms_match_the_dense_jacobian_of_the_n_step_map(cell, cell_id, H):
    n = 6
    settings = {"b_f": 2.0} if cell == "lstm" else {}
    result = _analyze(Model(cell=cell, hidden=H), steps=n, seed=3, settings=settings)
    p = result.params
    xs = encode(result.words)
    d = derive_cell(cell_of(Model(cell=cell)))
    _, states = forward_values(d, p, xs)
    count = len(d.states)
    for j in range(1, n + 1):
        point = np.concatenate([states[s][j][0] for s in d.states])
        dense = finite_difference_jacobian(state_map(cell_id, p, xs[j:], H, count), point)
        expected = {"state": np.linalg.norm(dense, 2)}
        for k, s in enumerate(d.states):
            part = slice(k * H, (k + 1) * H)
            expected[s] = np.linalg.norm(dense[part, part], 2)
        for key, value in expected.items():
            assert 10 ** result.log10[key][j - 1] == pytest.approx(value, rel=1e-5, abs=1e-9), (key, j)


def test_direct_paths_are_the_forget_gate_and_the_update_gate():
    lstm = _analyze(Model(cell="lstm", hidden=2), steps=5, seed=1)
    gru = _analyze(Model(cell="gru", hidden=2), steps=5, seed=1)
    assert set(lstm.direct) == {"c"} and lstm.direct_formulas["c"] == "f" and lstm.carried == "c"
    assert set(gru.direct) == {"h"} and gru.direct_formulas["h"] == "z"
    # the carousel alone: max over units of Π f_k, from the module's own gates
    from symbolic.codegen import load

    module = load(Model(cell="lstm", hidden=2, steps=1), "loop")
    forget = module.states(encode(lstm.words)[None], lstm.params)["f"][0]
    np.testing.assert_allclose(lstm.direct["c"], forget, rtol=1e-12)
    for j in range(1, 5):
        assert 10 ** lstm.log10["direct_c"][j - 1] == pytest.approx(np.max(np.prod(forget[j:], axis=0)), rel=1e-12)
    mgu = _analyze(Model(cell=str(CELLS[2]), hidden=2), steps=5, seed=1)
    assert set(mgu.direct) == {"h"} and mgu.direct_formulas["h"] == "1 - f"


def test_rnn_comparison_is_the_plain_tanh_product_on_the_same_words():
    result = _analyze(Model(cell="gru"), steps=8, seed=1)
    xs = encode(result.words)
    o, factors = 0.0, []
    for x in xs:  # analyze's defaults: w_i = 0.5 each word, w_h = 0.5
        o = math.tanh(0.5 * float(x.sum()) + 0.5 * o)
        factors.append((1 - o * o) * 0.5)
    for j in range(1, 9):
        expected = abs(np.prod(factors[j:])) if j < 8 else 1.0
        assert 10 ** result.rnn_log10[j - 1] == pytest.approx(expected, rel=1e-10)


def test_the_cell_path_decays_far_slower_than_the_rnn_product():
    result = _analyze(Model(cell="lstm"), steps=20, seed=0)
    assert result.log10["c"][0] - result.rnn_log10[0] > 5
    assert result.rates()["c"] > result.rates()["rnn"] + 0.3
    opened = _analyze(Model(cell="lstm", hidden=4), steps=20, seed=0, settings={"b_f": 5.0})
    assert opened.log10["direct_c"][0] > math.log10(0.85)  # σ(5)^19 ≈ 0.88 up to the inputs


@pytest.mark.parametrize("cell", ["lstm", "gru", str(CELLS[2])], ids=["lstm", "gru", "mgu"])
def test_cli_table_json_and_plot(cell, tmp_path):
    plot = tmp_path / "cell.png"
    run = bptt("analyze", "--cell", cell, "--steps", "12", "--hidden", "2", "--plot", str(plot))
    assert run.returncode == 0, run.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "‖∂h_n/∂h_j‖" in run.stdout and "RNN |Π|" in run.stdout and "regime (" in run.stdout
    assert f"wrote {plot}" in run.stderr
    run = bptt("analyze", "--cell", cell, "--steps", "12", "--hidden", "2", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["steps"] == 12 and report["hidden"] == 2
    for state in report["states"]:
        assert len(report["norms"][state]) == 12 and report["norms"][state][-1] == 1.0
    assert len(report["state_norms"]) == 12 and report["gaps"][0] == 11
    assert len(report["rnn"]["products"]) == 12 and report["rnn"]["hidden"] == 2
    assert report["regime"] in ("vanishing", "stable", "exploding")


def test_cli_settings_input_words_and_determinism():
    run = bptt("analyze", "--cell", "lstm", "--steps", "6", "--hidden", "2", "--json", "--forget-bias", "3")
    report = json.loads(run.stdout)
    assert report["settings"] == {"b_f": 3.0} and report["weights"]["b_f"] == [3.0, 3.0]
    assert report["direct_paths"] == {"c": "f"} and len(report["direct_norms"]["c"]) == 6
    same = bptt("analyze", "--cell", "lstm", "--steps", "6", "--hidden", "2", "--json", "--set", "b_f=3")
    assert same.stdout == run.stdout
    first = bptt("analyze", "--cell", "gru", "--input", "cat,mat,rat,rat", "--json")
    again = bptt("analyze", "--cell", "gru", "--input", "cat,mat,rat,rat", "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    assert json.loads(first.stdout)["input"] == ["cat", "mat", "rat", "rat"]


@pytest.mark.parametrize(
    "arguments, phrase",
    [
        (["--cell", "lstm", "--w-i", "1,1,1"], "--w-i sets a weight of the plain RNN"),
        (["--cell", "lstm", "--hidden", "2", "--w-h", "1"], "use --w-h-scale"),
        (["--cell", "lstm", "--activation", "relu"], "does not apply to --cell lstm"),
        (["--cell", "lstm", "--forget-bias", "nan"], "must be a finite number"),
        (["--cell", "gru", "--forget-bias", "1"], "cell gru has no per-unit parameter b_f"),
        (["--cell", "gru", "--set", "b_r"], "--set takes NAME=VALUE"),
        (["--forget-bias", "2"], "add --cell lstm"),
    ],
)
def test_cli_refuses_bad_combinations(arguments, phrase):
    run = bptt("analyze", "-n", "4", *arguments)
    assert run.returncode == 2 and phrase in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
