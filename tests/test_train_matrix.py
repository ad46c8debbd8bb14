"""bptt train for hidden size H > 1 (and --bias): initialisation, the update rules on every parameter,
clipping by the global norm, divergence, JSON, the notes' data at --hidden 4 — against an
independent plain-NumPy oracle (its own forward pass, differentiated by central differences)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from symbolic.study import data, train

from .conftest import run_bptt as bptt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FUNCTIONS = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "identity": lambda a: a}


def oracle_mean_loss(dataset, weights: train.Weights, activation="tanh"):
    """Mean binary cross-entropy by a plain loop over the sequences (no generated code)."""
    f = FUNCTIONS[activation]
    index = {word: i for i, word in enumerate(dataset.vocabulary)}
    b_h = weights.b_h if weights.b_h is not None else 0.0
    b_o = weights.b_o if weights.b_o is not None else 0.0
    total = 0.0
    for text, y in zip(dataset.texts(), dataset.labels()):
        o = np.zeros(len(weights.w_o))
        for word in text.split():
            o = f(weights.w_i[:, index[word]] + weights.w_h @ o + b_h)
        z = float(weights.w_o @ o + b_o)
        total += np.logaddexp(0.0, z) - y * z
    return total / dataset.size


def oracle_gradient(dataset, weights, activation="tanh", h=1e-6):
    flat = weights.flat()
    gradient = np.zeros_like(flat)
    for k in range(flat.size):
        step = np.zeros_like(flat)
        step[k] = h
        gradient[k] = (
            oracle_mean_loss(dataset, weights.from_flat(flat + step), activation)
            - oracle_mean_loss(dataset, weights.from_flat(flat - step), activation)
        ) / (2 * h)
    return gradient




MIXED = data._from_rows(
    "mixed",
    [([0, 1, 2], 1), ([2, 2], 1), ([1, 1, 0, 2, 1], 0), ([0], 0), ([2, 0, 1], 0)],
    ("cat", "mat", "rat"),
)


# -- the gradients and the update rules -------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("steps_from_data", [False, True])
def test_gradient_is_the_oracle_gradient(bias, steps_from_data):
    config = train.Config(hidden=3, bias=bias, seed=4)
    weights = train.initial_weights(config, 3)
    if bias:  # not zero, so the biases' part of the forward pass is exercised
        weights.b_h, weights.b_o = np.array([0.2, -0.3, 0.1]), 0.4
    modules = train.Modules("tanh", 3, steps_from_data, hidden=3, bias=bias)
    loss, *gradients = train.loss_and_grad(MIXED, weights, modules)
    assert loss == pytest.approx(oracle_mean_loss(MIXED, weights), rel=1e-12)
    shapes = [np.shape(v) for v in weights.parameters().values()]
    assert [np.shape(g) for g in gradients] == shapes
    flat = np.concatenate([np.ravel(g) for g in gradients])
    np.testing.assert_allclose(flat, oracle_gradient(MIXED, weights), rtol=1e-6, atol=1e-9)


def test_one_epoch_applies_the_update_rule_to_every_parameter():
    config = train.Config(epochs=1, lr=0.3, seed=7, hidden=4, bias=True)
    start = train.initial_weights(config, 3)
    result = train.train(data.notes(), config)
    expected = start.flat() - 0.3 * oracle_gradient(data.notes(), start)
    np.testing.assert_allclose(result.weights.flat(), expected, rtol=1e-6, atol=1e-9)


# -- initialisation -------------------------------------------------------------------------------


def test_initialisations():
    normal = train.initial_weights(train.Config(hidden=4, seed=1), 3)
    again = train.initial_weights(train.Config(hidden=4, seed=1), 3)
    assert normal.w_i.shape == (4, 3) and normal.w_h.shape == (4, 4) and normal.w_o.shape == (4,)
    assert normal.b_h is None and np.array_equal(normal.flat(), again.flat())
    assert not np.array_equal(normal.flat(), train.initial_weights(train.Config(hidden=4, seed=2), 3).flat())
    np.testing.assert_array_equal(
        train.initial_weights(train.Config(hidden=4, init="identity"), 3).w_h, np.eye(4)
    )
    zeros = train.initial_weights(train.Config(hidden=4, init="zeros", bias=True), 3)
    assert not np.any(zeros.flat())
    assert zeros.b_h.shape == (4,) and zeros.b_o == 0.0
    scaled = train.initial_weights(train.Config(hidden=4, init_w_h=0.9), 3)
    np.testing.assert_array_equal(scaled.w_h, 0.9 * np.eye(4))
    # H = 1 with biases draws the scalar model's numbers.
    scalar = train.initial_weights(train.Config(seed=3), 3)
    one = train.initial_weights(train.Config(seed=3, hidden=1, bias=True), 3)
    np.testing.assert_array_equal(one.flat()[:5], scalar.flat())


# -- clipping -------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    gradient=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40),
    limit=st.floats(1e-3, 1e3),
)
def test_clip_by_norm_keeps_the_global_norm_at_most_c(gradient, limit):
    gradient = np.array(gradient)
    clipped, changed = train.clip(gradient, train.Config(clip_norm=limit))
    assert np.linalg.norm(clipped) <= limit * (1 + 1e-12)
    assert changed == (np.linalg.norm(gradient) > limit)
    if changed:  # the direction is kept
        np.testing.assert_allclose(clipped * np.linalg.norm(gradient) / limit, gradient, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("clipping", "limit"), [("clip_norm", 0.05), ("clip_value", 0.01)])
def test_a_clipped_step_moves_all_parameters_by_at_most_lr_c(clipping, limit):
    """The step of one epoch is lr·g_clipped over all parameters (W_i, W_h, w_o, b_h, b_o) at once."""
    config = train.Config(epochs=1, lr=0.5, hidden=4, bias=True, **{clipping: limit})
    start = train.initial_weights(config, 3)
    result = train.train(data.notes(), config)
    step = (start.flat() - result.weights.flat()) / 0.5
    gradient = oracle_gradient(data.notes(), start)
    assert result.clipped_epochs == 1
    if clipping == "clip_norm":
        assert np.linalg.norm(step) == pytest.approx(limit, rel=1e-9)
        np.testing.assert_allclose(step, gradient * limit / np.linalg.norm(gradient), rtol=1e-5, atol=1e-9)
    else:
        np.testing.assert_allclose(step, np.clip(gradient, -limit, limit), rtol=1e-5, atol=1e-9)


# -- whole runs -----------------------------------------------------------------------------------


def test_hidden_four_learns_the_notes_through_the_cli():
    run = bptt("train", "--hidden", "4", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["accuracy"] == 1.0 and result["diverged"] is None
    assert result["final_loss"] < 0.05
    assert np.array(result["weights"]["w_i"]).shape == (4, 3)
    assert np.array(result["weights"]["w_h"]).shape == (4, 4)
    assert np.array(result["weights"]["w_o"]).shape == (4,)
    assert bptt("train", "--hidden", "4", "--json").stdout == run.stdout  # deterministic with the seed
    text = bptt("train", "--hidden", "4", "--bias", "--init", "identity")
    assert text.returncode == 0 and "accuracy: 1.000" in text.stdout and "b_h = [" in text.stdout


def test_divergence_is_reported_for_matrices():
    config = train.Config(epochs=50, lr=0.5, activation="relu", init_w_h=3.0, hidden=4)
    result = train.train(data.long_dependency(size=20), config)
    assert result.diverged_at is not None
    assert "DIVERGED" in train.summary(result) and "‖W_h‖" in train.summary(result)
    assert json.dumps(result.as_json(), allow_nan=False)


@pytest.mark.parametrize(
    ("arguments", "phrase"),
    [
        (("--hidden", "4", "--clip-norm", "-1"), "--clip-norm must be a positive number"),
        (("--hidden", "4", "--clip-value", "nan"), "--clip-value must be a positive number"),
        (("--hidden", "4", "--init", "orthogonal"), "unknown --init 'orthogonal'"),
        (("--hidden", "4", "--init-w-h", "inf"), "--init-w-h must be a finite number"),
        (("--hidden", "0"), "hidden size must be a positive whole number"),
        (("--hidden", "4", "--bias", "--lr", "0"), "--lr must be a positive number"),
    ],
)
def test_cli_mistakes_are_one_line(arguments, phrase, tmp_path):
    run = bptt("train", *arguments, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("bptt: error:")
    assert phrase in run.stderr
    assert not any(tmp_path.iterdir())


def test_nonfinite_gradient_is_reported():
    class Nan:
        def loss_and_grad(self, x, y, w_i, w_h, w_o):
            return 1.0, np.zeros_like(w_i), np.full_like(w_h, math.nan), np.zeros_like(w_o)

        def forward(self, x, w_i, w_h, w_o):
            return np.full(len(x), 0.5)

    result = train.train(data.notes(), train.Config(hidden=2), loader=lambda model, mode=None: Nan())
    assert result.diverged_at == 1 and result.divergence == "the gradient became nan at epoch 1"
