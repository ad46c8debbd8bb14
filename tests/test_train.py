"""bptt train and the data it reads: the notes' update rules on the generated gradients, clipping,
divergence, the long-dependency set, CSV files (good and bad), against independent oracles."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tracemalloc

import numpy as np
import pytest

from symbolic import cli
from symbolic.errors import UsageError
from symbolic.study import data, train

from .conftest import run_bptt as bptt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def oracle_mean_loss(dataset, w_i, w_h, w_o, activation="tanh"):
    """Mean binary cross-entropy by a plain loop over the sequences (no generated code)."""
    f = {"tanh": math.tanh, "relu": lambda a: max(a, 0.0), "identity": lambda a: a}[activation]
    index = {word: i for i, word in enumerate(dataset.vocabulary)}
    total = 0.0
    for text, y in zip(dataset.texts(), dataset.labels()):
        o = 0.0
        for word in text.split():
            o = f(w_i[index[word]] + w_h * o)
        z = w_o * o
        total += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - y * z
    return total / dataset.size


def oracle_gradient(dataset, weights, activation="tanh", h=1e-6):
    flat = np.concatenate([weights.w_i, [weights.w_h, weights.w_o]])
    D = len(weights.w_i)

    def loss(v):
        return oracle_mean_loss(dataset, v[:D], v[D], v[D + 1], activation)

    gradient = np.zeros_like(flat)
    for k in range(flat.size):
        step = np.zeros_like(flat)
        step[k] = h
        gradient[k] = (loss(flat + step) - loss(flat - step)) / (2 * h)
    return gradient




def write_csv(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return str(path)


# -- the notes' data -------------------------------------------------------------------------------


def test_notes_data_is_the_notes_table():
    notes = data.notes()
    assert notes.texts() == ["cat mat rat", "rat rat mat", "mat mat cat"]
    assert list(notes.labels()) == [1, 1, 0]
    (bucket,) = notes.buckets
    x, y = next(bucket.chunks(3))
    # The notes' one-hot table: x_1 = [1 0 0] [0 1 0] [0 0 1], x_2 = [0 0 1] [0 0 1] [0 1 0], …
    expected = [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 0, 1], [0, 1, 0]],
        [[0, 1, 0], [0, 1, 0], [1, 0, 0]],
    ]
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, [1, 1, 0])


def test_defaults_reach_accuracy_one_on_the_notes():
    result = train.train(data.notes())
    assert result.diverged_at is None
    assert result.accuracy == 1.0
    assert [p["predicted"] for p in result.predictions] == [1, 1, 0]
    assert result.final_loss < result.loss[0]
    assert len(result.loss) == train.DEFAULT_EPOCHS
    # The reported weights really classify the notes (an independent forward pass).
    w = result.weights
    assert oracle_mean_loss(data.notes(), w.w_i, w.w_h, w.w_o) == pytest.approx(result.final_loss, rel=1e-10)


def test_full_data_set_gradient_matches_finite_differences(monkeypatch):
    """Chunks and length buckets are weighted correctly: the mean over everything, as the oracle."""
    dataset = data._from_rows(
        "mixed",
        [([0, 1, 2], 1), ([2, 2], 1), ([1, 1, 0, 2, 1], 0), ([0], 0), ([2, 0, 1], 0)],
        ("cat", "mat", "rat"),
    )
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 9)  # forces chunks of one sequence for n = 3
    weights = train.Weights(np.array([0.4, -0.7, 0.9]), 0.6, -1.2)
    for steps_from_data in (False, True):
        modules = train.Modules("tanh", 3, steps_from_data)
        loss, g_i, g_h, g_o = train.loss_and_grad(dataset, weights, modules)
        assert loss == pytest.approx(oracle_mean_loss(dataset, weights.w_i, 0.6, -1.2), rel=1e-12)
        np.testing.assert_allclose(
            np.concatenate([g_i, [g_h, g_o]]), oracle_gradient(dataset, weights), rtol=1e-6, atol=1e-10
        )


def test_one_epoch_applies_the_update_rules():
    """w ← w − η ∂L/∂w for (i) w_i, (ii) w_h, (iii) w_o, with the oracle's gradient."""
    config = train.Config(epochs=1, lr=0.3, seed=7)
    start = train.initial_weights(config, 3)
    gradient = oracle_gradient(data.notes(), start)
    result = train.train(data.notes(), config)
    after = result.weights
    np.testing.assert_allclose(after.w_i, start.w_i - 0.3 * gradient[:3], rtol=1e-6, atol=1e-9)
    assert after.w_h == pytest.approx(start.w_h - 0.3 * gradient[3], rel=1e-6, abs=1e-9)
    assert after.w_o == pytest.approx(start.w_o - 0.3 * gradient[4], rel=1e-6, abs=1e-9)


def test_initialisations():
    normal, again = (train.initial_weights(train.Config(seed=1), 3) for _ in range(2))
    assert np.array_equal(normal.w_i, again.w_i) and (normal.w_h, normal.w_o) == (again.w_h, again.w_o)
    assert not np.array_equal(normal.w_i, train.initial_weights(train.Config(seed=2), 3).w_i)
    identity = train.initial_weights(train.Config(init="identity"), 3)
    assert identity.w_h == 1.0
    zeros = train.initial_weights(train.Config(init="zeros"), 3)
    assert not np.any(zeros.w_i) and zeros.w_h == 0.0 and zeros.w_o == 0.0
    assert train.initial_weights(train.Config(init="zeros", init_w_h=1.5), 3).w_h == 1.5


# -- clipping and divergence -----------------------------------------------------------------------


def test_clip_by_norm_keeps_the_direction_and_by_value_each_component():
    g = np.array([3.0, -4.0, 0.0])
    clipped, changed = train.clip(g, train.Config(clip_norm=1.0))
    assert changed and np.linalg.norm(clipped) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped, g / 5.0)
    small, changed = train.clip(np.array([0.1, 0.2]), train.Config(clip_norm=1.0))
    assert not changed and list(small) == [0.1, 0.2]
    clipped, changed = train.clip(g, train.Config(clip_value=2.0))
    assert changed and list(clipped) == [2.0, -2.0, 0.0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"clip_norm": 1.0, "clip_value": 1.0}, "mutually exclusive"),
        ({"clip_norm": -1.0}, "--clip-norm must be a positive"),
        ({"lr": 0.0}, "--lr"),
        ({"epochs": 0}, "--epochs"),
        ({"init": "ones"}, "unknown --init"),
        ({"activation": "softsign"}, "unknown activation"),
    ],
)
def test_bad_configurations(arguments, message):
    with pytest.raises(UsageError, match=message):
        train.Config(**arguments)


def test_long_relu_at_one_and_a_half_diverges_without_clipping_and_not_with_it():
    training, held_out = data.load("long")
    unclipped = train.train(training, train.Config(activation="relu", init_w_h=1.5), held_out=held_out)
    assert unclipped.diverged_at == 1
    assert "exploding gradient" in unclipped.divergence
    assert math.isnan(unclipped.accuracy)
    report = train.summary(unclipped)
    assert "DIVERGED at epoch 1" in report and "--clip-norm" in report
    json.dumps(unclipped.as_json(), allow_nan=False)

    clipped = train.train(
        training, train.Config(activation="relu", init_w_h=1.5, clip_norm=1.0), held_out=held_out
    )
    assert clipped.diverged_at is None
    assert len(clipped.loss) == train.DEFAULT_EPOCHS and all(math.isfinite(v) for v in clipped.loss)
    assert clipped.clipped_epochs >= 1
    assert math.isfinite(clipped.accuracy) and clipped.train_accuracy is not None


class _Nan:
    """A module with the generated interface whose loss turns non-finite at the third call."""

    def __init__(self):
        self.calls = 0

    def loss_and_grad(self, x, y, w_i, w_h, w_o):
        self.calls += 1
        loss = math.inf if self.calls >= 3 else 1.0
        return loss, np.full(len(w_i), 0.01), 0.01, 0.01

    def forward(self, x, w_i, w_h, w_o):
        return np.full(len(x), 0.5)


def test_non_finite_loss_is_reported_at_its_epoch():
    module = _Nan()
    result = train.train(data.notes(), train.Config(epochs=10), loader=lambda model, mode=None: module)
    assert result.diverged_at == 3
    assert result.divergence == "the loss became inf at epoch 3"
    assert result.as_json()["loss"] == [1.0, 1.0, None]


def test_long_data_set():
    training, held_out = data.load("long")
    assert training.size == data.LONG_TRAIN and held_out.size == data.LONG_HELD_OUT
    assert training.lengths == [50] and held_out.lengths == [50]
    for dataset in (training, held_out):
        first_words = [text.split()[0] for text in dataset.texts()]
        assert list(dataset.labels()) == [int(word == "cat") for word in first_words]
    assert training.texts() != held_out.texts()
    assert data.long_dependency().texts() == training.texts()  # fixed seed


# -- CSV -------------------------------------------------------------------------------------------


def test_csv_vocabulary_lengths_and_labels(tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        'label,text,extra\n1,"the cat  sat",x\n0,dog,y\n\n1,"cat, dog",z\n0,sat the dog,w\n',
    )
    dataset = data.load_csv(path)
    assert dataset.vocabulary == ("cat", "cat,", "dog", "sat", "the")  # sorted; "cat," is a word
    assert dataset.texts() == ["the cat sat", "dog", "cat, dog", "sat the dog"]
    assert list(dataset.labels()) == [1, 0, 1, 0]
    assert dataset.lengths == [1, 2, 3]


def test_csv_trains_with_both_module_kinds(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label\ncat mat rat,1\nrat mat,1\nmat mat cat,0\ncat,0\n")
    for steps_from_data in (False, True):
        result = train.train(data.load_csv(path), train.Config(epochs=300, steps_from_data=steps_from_data))
        assert result.accuracy == 1.0
        assert set(result.modes.values()) == {"unrolled" if steps_from_data else "loop"}


def test_csv_is_streamed(tmp_path, monkeypatch):
    """Loading stops at the bad line without reading the rest, and never calls read() on everything."""
    good = b"cat mat rat,1\n" * 20000
    path = write_csv(tmp_path / "big.csv", b"text,label\ncat,1\nmat,7\n" + good)
    consumed = []
    real_open = open

    class Watched:
        def __init__(self, handle):
            self.handle = handle

        def __iter__(self):
            for line in self.handle:
                consumed.append(len(line))
                yield line

        def read(self, *args):  # pragma: no cover - the failure this test exists for
            raise AssertionError("the CSV was read in one piece")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(data, "open", lambda *a, **k: Watched(real_open(*a, **k)), raising=False)
    with pytest.raises(UsageError, match="line 3: label must be 0 or 1, got '7'"):
        data.load_csv(path)
    assert sum(consumed) < 10_000 < os.path.getsize(path)


def test_csv_memory_stays_near_the_file_size(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    lines = ["text,label"]
    for i in range(20000):
        lines.append(" ".join(rng.choice(words, size=rng.integers(3, 9))) + f",{i % 2}")
    path = write_csv(tmp_path / "m.csv", "\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        dataset = data.load_csv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dataset.size == 20000 and len(dataset.vocabulary) == 300
    assert peak < 2 * os.path.getsize(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,labels\ncat,1\n", "line 1: missing column 'label'"),
        ("words,label\ncat,1\n", "line 1: missing column 'text'"),
        ("text,label\ncat,1\nmat,2\n", "line 3: label must be 0 or 1, got '2'"),
        ("text,label\ncat,1\nmat,yes\n", "line 3: label must be 0 or 1"),
        ("text,label\ncat,1\n   ,0\n", "line 3: the text is empty"),
        ("text,label\ncat,1\nmat\n", "line 3: expected columns text,label"),
        (b"text,label\ncat,1\nm\xe4t,0\n", "line 3: not valid UTF-8"),
        ("", "is empty"),
        ("text,label\n", "no data rows"),
    ],
)
def test_bad_csv_through_the_command_line(tmp_path, content, message):
    path = write_csv(tmp_path / "bad.csv", content)
    run = bptt("train", "--data", path, "--epochs", "1")
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert message in run.stderr and run.stderr.startswith("bptt: error: ")


def test_missing_csv_through_the_command_line(tmp_path):
    run = bptt("train", "--data", str(tmp_path / "nothere.csv"))
    assert run.returncode == 2 and "does not exist" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


# -- the command line ------------------------------------------------------------------------------


def test_cli_json_on_the_notes_with_plot(tmp_path):
    plot = tmp_path / "loss.png"
    run = bptt("train", "--json", "--plot", str(plot))
    assert run.returncode == 0, run.stderr
    assert "epoch" not in run.stderr  # no progress bar: not a terminal, and --json
    result = json.loads(run.stdout)
    assert {"epochs", "loss", "accuracy", "predictions", "weights"} <= set(result)
    assert "train_accuracy" not in result
    assert result["epochs"] == 200 and len(result["loss"]) == 200 and result["accuracy"] == 1.0
    assert [p["text"] for p in result["predictions"]] == ["cat mat rat", "rat rat mat", "mat mat cat"]
    assert set(result["weights"]) == {"w_i", "w_h", "w_o"} and len(result["weights"]["w_i"]) == 3
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_long_divergence_and_clipping():
    run = bptt("train", "--data", "long", "-a", "relu", "--init-w-h", "1.5", "--json")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    result = json.loads(run.stdout)
    assert result["diverged"]["epoch"] == 1 and result["accuracy"] is None
    text = bptt("train", "--data", "long", "-a", "relu", "--init-w-h", "1.5")
    assert text.returncode == 1 and "DIVERGED at epoch 1" in text.stdout
    clipped = bptt("train", "--data", "long", "-a", "relu", "--init-w-h", "1.5", "--clip-norm", "1", "--json")
    assert clipped.returncode == 0, clipped.stderr
    result = json.loads(clipped.stdout)
    assert result["diverged"] is None and None not in result["loss"]
    assert "train_accuracy" in result and len(result["predictions"]) == data.LONG_HELD_OUT


@pytest.mark.parametrize(
    "arguments",
    [
        ("--clip-norm", "1", "--clip-value", "1"),
        ("--clip-norm", "0"),
        ("--lr", "fast"),
        ("--epochs", "-3"),
        ("--init", "ones"),
        ("--data", "nonsense"),
        ("--plot", "loss.pdf"),
    ],
)
def test_cli_mistakes_are_one_line(arguments, tmp_path):
    run = bptt("train", *arguments, cwd=tmp_path)
    assert run.returncode == 2, run.stdout
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("bptt: error:")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("as_json", "bar_shown"), [(False, True), (True, False)])
def test_progress_bar_only_on_a_terminal_without_json(monkeypatch, capsys, as_json, bar_shown):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    arguments = ["train", "--epochs", "20"] + (["--json"] if as_json else [])
    assert cli.main(arguments) == 0
    assert ("epoch 20/20" in terminal.getvalue()) is bar_shown


def test_parser_defaults_match_the_training_defaults():
    """epochs, lr, optimizer and hidden are left to Config, which picks the cell's defaults; --help
    states the same numbers."""
    args = cli.build_parser().parse_args(["train"])
    assert args.epochs is None and args.lr is None and args.optimizer is None and args.hidden is None
    assert int(args.seed) == train.DEFAULT_SEED
    rnn, lstm = train.Config(), train.Config(cell="lstm")
    assert (rnn.epochs, rnn.lr, rnn.optimizer, rnn.hidden) == (train.DEFAULT_EPOCHS, train.DEFAULT_LR, "sgd", 1)
    d = train.CELL_DEFAULTS
    assert (lstm.epochs, lstm.lr, lstm.optimizer, lstm.hidden) == (d["epochs"], d["lr"], d["optimizer"], d["hidden"])
    assert (lstm.forget_bias, lstm.clip_norm, lstm.init) == (5.0, d["clip_norm"], train.CELL_INIT)
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert f"(default: {train.DEFAULT_EPOCHS}; --cell lstm: {d['epochs']})" in help_text
    assert f"(default: {train.DEFAULT_LR:g}; --cell lstm: {d['lr']:g} with Adam)" in help_text
    assert f"--cell lstm: {d['hidden']})" in help_text and "--cell lstm; default 5" in help_text


def test_the_notes_model_is_chosen_at_one_point():
    """``symbolic.notes.is_notes_model`` decides the notes' view for a Model and for a training Config
    alike; Config.kind names the weights each kind of run trains."""
    from symbolic.model import Model
    from symbolic.notes import is_notes_model

    assert is_notes_model(Model()) and Model().scalar
    assert not any(is_notes_model(m) for m in (Model(hidden=2), Model(bias=True), Model(cell="lstm")))
    assert train.Config().kind == "notes"
    assert train.Config(hidden=2).kind == "matrices" and train.Config(bias=True).kind == "matrices"
    assert train.Config(cell="gru").kind == "cell"
