"""bptt train --cell C: the generated gradient against plain step functions written from the papers
(tests/test_cell_codegen.REFERENCES), Adam's first step, the defaults learning the long dependency
(LSTM and GRU; the tanh RNN not), determinism, JSON and plot, and the options that belong to the plain
RNN refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symbolic.study import data, train

from .conftest import run_bptt as bptt
from .test_cell_codegen import CELLS, IDS, REFERENCES, sigmoid


def oracle_loss(cell_id, dataset, params):
    """Mean binary cross-entropy by the plain step function, one sequence at a time."""
    step, count = REFERENCES[cell_id]
    H = len(params["w_y"])
    index = {word: k for k, word in enumerate(dataset.vocabulary)}
    total = 0.0
    for text, y in zip(dataset.texts(), dataset.labels()):
        state = tuple(np.zeros((1, H)) for _ in range(count))
        for word in text.split():
            x = np.zeros((1, len(index)))
            x[0, index[word]] = 1.0
            state = step(params, x, state)
        z = float(state[0][0] @ params["w_y"])
        y_hat = sigmoid(z)
        total += -y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat)
    return total / dataset.size


def oracle_gradient(cell_id, dataset, params, eps=1e-6):
    gradient = {}
    for name, value in params.items():
        value = np.asarray(value, dtype=float)
        grad = np.zeros_like(value)
        for k in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[k] += eps
            minus[k] -= eps
            grad[k] = (oracle_loss(cell_id, dataset, dict(params, **{name: plus}))
                       - oracle_loss(cell_id, dataset, dict(params, **{name: minus}))) / (2 * eps)
        gradient[name] = grad
    return gradient


@pytest.mark.parametrize(("cell", "cell_id"), list(zip(CELLS, IDS))[:4], ids=IDS[:4])
def test_training_gradient_is_the_cells_gradient(cell, cell_id):
    """train.loss_and_grad (generated module, flattened) against finite differences of the plain loop."""
    dataset = data.notes()
    config = train.Config(cell=cell, hidden=2, seed=3)
    modules = train.Modules("tanh", 3, False, hidden=2, cell=config.cell)
    weights = train.initial_weights(config, 3, modules)
    assert isinstance(weights, train.ParamWeights)
    value, gradient = train.flat_loss_and_grad(dataset, weights, modules)
    assert value == pytest.approx(oracle_loss(cell_id, dataset, weights.params), rel=1e-12)
    expected = oracle_gradient(cell_id, dataset, weights.params)
    np.testing.assert_allclose(
        gradient, np.concatenate([expected[name].ravel() for name in weights.params]), rtol=1e-6, atol=1e-9
    )


def test_settings_and_the_cells_own_training_constants():
    lstm = train.Config(cell="lstm", hidden=2, seed=3, forget_bias=0.5)
    assert dict(lstm.settings) == {"b_f": 0.5}
    weights = train.initial_weights(lstm, 3)
    np.testing.assert_array_equal(weights.params["b_f"], [0.5, 0.5])
    assert dict(train.Config(cell="lstm").settings) == {"b_f": 5.0}   # the LSTM's own constant
    assert dict(train.Config(cell="gru").settings) == {"b_z": 3.0}
    gru = train.Config(cell="gru", hidden=2, settings=(("b_hn", -1.0),))
    assert dict(gru.settings) == {"b_z": 3.0, "b_hn": -1.0}
    assert np.all(train.initial_weights(gru, 3).params["b_hn"] == -1.0)


def test_one_adam_step_moves_each_weight_by_lr_against_the_gradient_sign():
    """Adam's first update is lr·g/(|g| + ε) componentwise (m̂ = g, v̂ = g², g clipped to norm 1)."""
    dataset = data.notes()
    config = train.Config(cell="gru", hidden=2, seed=1, epochs=1, lr=0.01)
    assert config.optimizer == "adam" and config.clip_norm == 1.0
    modules = train.Modules("tanh", 3, False, hidden=2, cell="gru")
    start = train.initial_weights(config, 3, modules)
    gradient = np.concatenate([g.ravel() for g in oracle_gradient("gru", dataset, start.params).values()])
    result = train.train(dataset, config)
    clipped = gradient * min(1.0, 1.0 / np.linalg.norm(gradient))
    moved = start.flat() - result.weights.flat()
    np.testing.assert_allclose(moved, 0.01 * clipped / (np.abs(clipped) + 1e-8), rtol=1e-5, atol=1e-9)


def test_sgd_option_is_the_notes_rule():
    dataset = data.notes()
    config = train.Config(cell="lstm", hidden=2, seed=2, epochs=1, lr=0.1, optimizer="sgd", clip_norm=100.0)
    modules = train.Modules("tanh", 3, False, hidden=2, cell="lstm")
    start = train.initial_weights(config, 3, modules)
    gradient = np.concatenate([g.ravel() for g in oracle_gradient("lstm", dataset, start.params).values()])
    result = train.train(dataset, config)
    np.testing.assert_allclose(result.weights.flat(), start.flat() - 0.1 * gradient, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_defaults_learn_the_long_dependency(cell, tmp_path):
    """bptt train --cell C --data long, defaults only: held-out accuracy >= 0.95."""
    plot = tmp_path / "cell.png"
    run = bptt("train", "--cell", cell, "--data", "long", "--json", "--plot", str(plot))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["accuracy"] >= 0.95 and report["train_accuracy"] >= 0.95
    assert report["cell"] == cell and report["hidden"] == train.CELL_DEFAULTS["hidden"]
    assert report["optimizer"] == "adam" and report["epochs"] == train.CELL_DEFAULTS["epochs"]
    assert report["diverged"] is None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_tanh_rnn_does_not_learn_it():
    rnn = bptt("train", "--data", "long", "--json")
    assert rnn.returncode == 0, rnn.stderr
    assert json.loads(rnn.stdout)["accuracy"] < 0.75


def test_a_user_cell_trains_from_the_command_line():
    run = bptt("train", "--cell", CELLS[2], "--epochs", "5", "--hidden", "3", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["cell"].endswith("mgu.py") and len(report["loss"]) == 5
    assert report["loss"][-1] < report["loss"][0]


def test_short_runs_are_deterministic_and_summarised():
    training, held_out = data.load("long")
    config = train.Config(cell="lstm", epochs=3, hidden=4)
    first = train.train(training, config, held_out=held_out)
    again = train.train(training, config, held_out=held_out)
    assert first.loss == again.loss
    np.testing.assert_array_equal(first.weights.flat(), again.weights.flat())
    other = train.train(training, train.Config(cell="lstm", epochs=3, hidden=4, seed=1), held_out=held_out)
    assert other.loss != first.loss
    text = train.summary(first)
    assert "cell: lstm" in text and "b_f = 5" in text and "optimizer: adam" in text and "‖U_f‖" in text


@pytest.mark.parametrize(
    "arguments, phrase",
    [
        (["--cell", "lstm", "--init", "identity"], "--init identity applies to the plain RNN"),
        (["--cell", "gru", "--init-w-h", "1"], "--init-w-h sets the plain RNN's w_h"),
        (["--cell", "lstm", "--activation", "relu"], "does not apply to --cell lstm"),
        (["--cell", "lstm", "--forget-bias", "x"], "--forget-bias must be a number"),
        (["--cell", "gru", "--forget-bias", "1"], "cell gru has no per-unit parameter b_f"),
        (["--cell", "gru", "--set", "b_z"], "--set takes NAME=VALUE"),
        (["--forget-bias", "2"], "add --cell lstm"),
        (["--optimizer", "rmsprop"], "unknown --optimizer 'rmsprop'"),
    ],
)
def test_cli_refuses_bad_combinations(arguments, phrase, tmp_path):
    run = bptt("train", *arguments, cwd=tmp_path)
    assert run.returncode == 2 and phrase in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_steps_from_data_refuses_sequences_past_the_unrolled_limit(tmp_path):
    """The advice names a flag train has (not --mode): drop --steps-from-data."""
    rows = ["text,label"] + [" ".join(["cat", "mat"] * 300) + f",{k % 2}" for k in range(2)]
    csv = tmp_path / "long.csv"
    csv.write_text("\n".join(rows) + "\n")
    run = bptt("train", "--data", str(csv), "--steps-from-data", "--epochs", "1")
    assert run.returncode == 2 and "drop --steps-from-data" in run.stderr and "--mode" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
