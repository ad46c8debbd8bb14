"""The notes' remedies side by side (bptt remedies; symbolic/study/remedies.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from symbolic.cli import main
from symbolic.study import data, remedies, train

from .conftest import run_bptt


def _changed(block, row) -> set[str]:
    baseline, settings = block.settings(block.rows[0]), block.settings(row)
    return {key for key in baseline.keys() | settings.keys() if baseline.get(key) != settings.get(key)}


@pytest.mark.parametrize("block", remedies.BLOCKS, ids=lambda block: block.name)
def test_each_row_differs_from_its_baseline_only_in_its_remedy(block):
    """From the row data alone: the first row is the baseline (no change), every other row changes
    something, only settings the block names as remedies, never a fixed one; fixed and remedy settings
    are apart and together cover the baseline."""
    assert block.rows[0].changes == () and "baseline" in block.rows[0].name
    assert not set(block.fixed) & set(block.remedies)
    assert set(dict(block.base)) <= set(block.fixed) | set(block.remedies)
    for row in block.rows[1:]:
        changed = _changed(block, row)
        assert changed, row.name
        assert changed <= set(block.remedies), (row.name, changed)
        assert not changed & set(block.fixed), (row.name, changed)
    names = [row.name for row in block.rows]
    assert len(set(names)) == len(names)


def test_the_blocks_hold_what_the_issue_lists():
    """Vanishing: H, optimiser, learning rate, epochs and clipping fixed; tanh, sigmoid, ReLU, ReLU with
    W_h = I, skip K = 3 and 10, LSTM, GRU. Exploding: plain gradient descent everywhere, ReLU from
    W_h = 1.5·I without clipping, then clipping by norm and by value, smaller rates, W_h = I, LSTM."""
    vanishing, exploding = remedies.BLOCKS
    assert set(vanishing.fixed) >= {"hidden", "optimizer", "lr", "epochs", "clip_norm", "clip_value"}
    rows = [vanishing.settings(row) for row in vanishing.rows]
    assert [(row["cell"], row["activation"], row.get("init"), row.get("skip")) for row in rows] == [
        ("rnn", "tanh", None, None), ("rnn", "sigmoid", None, None), ("rnn", "relu", None, None),
        ("rnn", "relu", "identity", None), ("skip", "tanh", None, 3), ("skip", "tanh", None, 10),
        ("lstm", "tanh", None, None), ("gru", "tanh", None, None),
    ]
    rows = [exploding.settings(row) for row in exploding.rows]
    assert {row["optimizer"] for row in rows} == {"sgd"} and "optimizer" in exploding.fixed
    baseline = rows[0]
    assert (baseline["activation"], baseline["init_w_h"], baseline["clip_norm"], baseline["clip_value"]) == (
        "relu", 1.5, None, None)
    assert any(row["clip_norm"] is not None for row in rows) and any(row["clip_value"] is not None for row in rows)
    assert sum(row["lr"] < baseline["lr"] for row in rows) >= 2
    assert any(row["cell"] == "rnn" and row["init_w_h"] == 1.0 for row in rows)
    assert any(row["cell"] == "lstm" for row in rows)


@pytest.mark.parametrize("block", remedies.BLOCKS, ids=lambda block: block.name)
def test_the_configs_trained_hold_the_fixed_settings(block):
    """The train.Config each row runs with: the fixed settings as the baseline's, also where a cell's
    own defaults differ (the LSTM's default clip-norm 1 must not enter the block without clipping)."""
    baseline = remedies.config_for(block, block.rows[0], seed=3)
    for row in block.rows:
        config = remedies.config_for(block, row, seed=3)
        settings = block.settings(row)
        assert config.seed == 3
        for name in block.fixed:
            assert getattr(config, name) == getattr(baseline, name), (row.name, name)
        for name in ("lr", "clip_norm", "clip_value", "optimizer", "hidden", "epochs"):
            assert getattr(config, name) == settings[name], (row.name, name)


def _skip_forward(x, params, lag):
    """o_t = tanh(W_i x_t + W_h o_(t−1) + W_s o_(t−K)), o_t = 0 for t ≤ 0, ŷ = σ(w_oᵀ o_n): by hand."""
    batch, steps, _ = x.shape
    hidden = params["w_h"].shape[0]
    states = [np.zeros((batch, hidden))] * lag
    for t in range(steps):
        states.append(np.tanh(x[:, t] @ params["w_i"].T + states[-1] @ params["w_h"].T
                              + states[-lag] @ params["w_s"].T))
    return 1 / (1 + np.exp(-(states[-1] @ params["w_o"])))


@pytest.mark.parametrize("lag", [3, 10])
def test_the_skip_rows_train_the_skip_rnn_of_their_lag(lag):
    """A skip row's Config is the built-in skip cell of its lag, whose generated forward pass equals the
    skip RNN written by hand with the same weights, and not the one of the next lag (the negative
    control: an off-by-one lag is seen)."""
    from symbolic.codegen import load

    row = next(row for row in remedies.VANISHING.rows if dict(row.changes).get("skip") == lag)
    config = remedies.config_for(remedies.VANISHING, row, seed=0)
    assert (config.cell, config.skip) == ("skip", lag)
    steps = lag + 5
    model = replace(config.model(steps), hidden=3, inputs=2)
    module = load(model, mode="loop")
    params = {name: np.asarray(value, dtype=float) for name, value in module.init_params(1).items()}
    params = {name: value * 3 for name, value in params.items()}  # large enough that the lag matters
    x = np.random.default_rng(0).normal(size=(4, steps, 2))
    assert sorted(params) == ["w_h", "w_i", "w_o", "w_s"]
    np.testing.assert_allclose(module.forward(x, params), _skip_forward(x, params, lag), rtol=1e-12)
    assert not np.allclose(module.forward(x, params), _skip_forward(x, params, lag + 1), rtol=1e-6)


def test_a_row_is_the_runs_trained_alone():
    """A row's numbers are those of train.train with the Config written out here by hand, per seed."""
    dataset, held_out = data.load("long")
    block = remedies.EXPLODING
    row = next(row for row in block.rows if row.name.startswith("clip by norm"))
    measured = remedies.measure(block, row, dataset, held_out, seeds=2, epochs=3)
    for seed in (0, 1):
        alone = train.train(dataset, train.Config(activation="relu", hidden=16, init_w_h=1.5, optimizer="sgd",
                                                  lr=0.1, epochs=3, clip_norm=1.0, seed=seed), held_out=held_out)
        assert measured.accuracies[seed] == alone.accuracy and measured.final_losses[seed] == alone.final_loss
        assert measured.largest_gradient_norms[seed] == alone.largest_gradient_norm
    baseline = remedies.measure(block, block.rows[0], dataset, held_out, seeds=2, epochs=3)
    assert baseline.diverged == 2 and baseline.finished == [] and baseline.accuracies == [None, None]


def test_same_seeds_give_the_same_numbers():
    """Two runs of a block with the same seeds: every number equal (the seconds aside); another seed
    count changes the runs (the measurement sees the seeds)."""
    dataset, held_out = data.load("long")

    def numbers(seeds):
        results = remedies.run(dataset, held_out, (remedies.VANISHING,), seeds=seeds, epochs=2)
        rows = remedies.as_json(results, "long", seeds, 2)["blocks"][0]["rows"]
        return [{**row, "seconds": None} for row in rows]

    first = numbers(2)
    assert first == numbers(2)
    assert first != numbers(1)


def test_a_tiny_run_prints_the_settings_rows_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "remedies.png"
    assert main(["remedies", "--seeds", "1", "--epochs", "2", "--data", "notes", "-o", str(plot)]) == 0
    out, err = capsys.readouterr()
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "baseline: rnn tanh, H = 16, Adam η = 0.03, 2 epochs, clip-norm 1" in out
    assert "baseline: rnn relu, W_h = 1.5·I, H = 16, plain gradient descent η = 0.1, 2 epochs, no clipping" in out
    for block in remedies.BLOCKS:
        for row in block.rows:
            assert f"  {row.name} " in out
    assert err.count("bptt remedies: ") == sum(len(block.rows) for block in remedies.BLOCKS)
    assert main(["remedies", "--seeds", "2", "--epochs", "2", "--data", "notes", "--block", "exploding", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["blocks"]
    assert [block["name"] for block in rows] == ["exploding"]
    assert len(rows[0]["rows"]) == len(remedies.EXPLODING.rows)
    assert all([run["seed"] for run in row["runs"]] == [0, 1] for row in rows[0]["rows"])


@pytest.mark.parametrize("arguments", [
    ["--seeds", "0"], ["--seeds", "two"], ["--epochs", "0"], ["--epochs", "1.5"], ["--block", "both"],
    ["--backend", "torch"], ["--data", "nothing"], ["-o", "table.txt"],
])
def test_bad_values_are_one_line(arguments):
    result = run_bptt("remedies", *arguments)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("bptt: error: ") and not result.stdout


def test_a_skip_cell_of_lag_one_is_refused():
    with pytest.raises(remedies.UsageError, match="K >= 2"):
        train.Config(cell="skip", skip=1)
