"""The controlled learning rate, measured (bptt train --lr a,b,c; symbolic/study/sweep.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from symbolic.study import data, sweep, train

from .conftest import run_bptt


def test_each_row_is_the_run_at_that_rate_alone():
    """A row holds what a run at that rate alone gives: the same losses, divergence and accuracy; the
    first loss is the same in every row (the same start), and the largest gradient norm is at least
    the first epoch's, computed here from the generated module at the initial weights."""
    dataset = data.notes()
    config = train.Config(epochs=20)
    rows, _ = sweep.sweep(dataset, config, [0.05, 5.0])
    for row in rows:
        alone = train.train(dataset, train.Config(epochs=20, lr=row.lr))
        assert row.final_loss == alone.final_loss and row.accuracy == alone.accuracy
        assert row.first_loss == alone.loss[0] == rows[0].first_loss
    from symbolic.study.train import Modules, flat_loss_and_grad, initial_weights

    modules = Modules("tanh", len(dataset.vocabulary), False)
    weights = initial_weights(config, len(dataset.vocabulary), modules)
    _, gradient = flat_loss_and_grad(dataset, weights, modules, None)
    assert all(row.largest_gradient_norm >= float(np.linalg.norm(gradient)) * (1 - 1e-12) for row in rows)


def test_a_large_rate_diverges_where_a_controlled_one_does_not():
    """The notes' exploding case (ReLU from w_h = 1.5 on the long sequences): the first gradient is
    about 1.8e9, so η = 0.5 throws the weights past ±1e6 at epoch 1, while η = 1e-9 trains."""
    dataset, held_out = data.load("long")
    config = train.Config(activation="relu", init_w_h=1.5, epochs=5)
    rows, _ = sweep.sweep(dataset, config, [0.5, 1e-9], held_out=held_out)
    assert rows[0].diverged_at == 1 and rows[0].final_loss is None and rows[0].largest_gradient_norm > 1e9
    assert rows[1].diverged_at is None and math.isfinite(rows[1].final_loss)


def test_the_command_prints_one_row_per_rate_and_json():
    result = run_bptt("train", "--lr", "0.05,0.5", "--epochs", "10")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "only η changes" in lines[0] and len(lines) == 4
    assert [line.split()[0] for line in lines[2:]] == ["0.05", "0.5"]
    assert result.stderr.count("bptt train: learning rate ") == 2
    as_json = run_bptt("train", "--lr", "0.05,0.5", "--epochs", "10", "--json")
    rows = json.loads(as_json.stdout)["rates"]
    assert [row["lr"] for row in rows] == [0.05, 0.5] and all(row["diverged_at"] is None for row in rows)


@pytest.mark.parametrize("value", ["0", "0.1,-1", "0.1,nan", "inf,0.1", ",", "0.1,,1", "a,b", ",".join(["0.1"] * 21)])
def test_bad_rates_are_one_line(value):
    result = run_bptt("train", "--lr", value, "--epochs", "2")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("bptt: error: --lr") and result.stdout == ""
