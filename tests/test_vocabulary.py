"""Real vocabularies: training on thousands of words without one-hot inputs, with progress on stderr,
and a hidden size too large for memory refused up front.

The projection path (``train.Projection``) is checked against the one-hot path (the generated module
for the full input size D), which is itself checked against finite differences in test_train*.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symbolic.errors import UsageError
from symbolic.study import data, train

from .conftest import run_bptt as bptt


def random_dataset(vocabulary_size: int, sequences: int, seed: int = 0) -> data.Dataset:
    """Sequences of 1 to 6 ids over ``vocabulary_size`` words, labels at random."""
    rng = np.random.default_rng(seed)
    rows = [
        (rng.integers(0, vocabulary_size, size=rng.integers(1, 7)), int(rng.integers(0, 2)))
        for _ in range(sequences)
    ]
    return data._from_rows("random", rows, tuple(f"w{i:05d}" for i in range(vocabulary_size)))


def write_text_csv(path, rows: int = 20_000, vocabulary_size: int = 10_000, seed: int = 0) -> str:
    """A text CSV like a real one (deterministic): Zipf-like word frequencies, every word used,
    sentences of 3 to 12 words, label 1 when the sentence holds more "positive" words (the first
    fifth of the vocabulary) than "negative" ones (the second fifth)."""
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(vocabulary_size)]
    lengths = rng.integers(3, 13, size=rows)
    ids = np.minimum(rng.zipf(1.3, size=int(lengths.sum())) - 1, vocabulary_size - 1)
    ids[:vocabulary_size] = rng.permutation(vocabulary_size)  # every word appears at least once
    rng.shuffle(ids)
    lines = ["text,label"]
    start = 0
    fifth = vocabulary_size // 5
    for length in lengths:
        sentence = ids[start : start + length]
        start += length
        positive = int(np.sum(sentence < fifth)) > int(np.sum((sentence >= fifth) & (sentence < 2 * fifth)))
        lines.append(" ".join(words[i] for i in sentence) + f",{int(positive)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# -- the projection gives the one-hot path's loss, gradient and predictions ------------------------


@pytest.mark.parametrize(
    ("hidden", "bias", "steps_from_data"),
    [(1, False, False), (1, False, True), (3, False, False), (3, True, False), (2, True, True)],
)
def test_projection_equals_one_hot(hidden, bias, steps_from_data):
    D = 80
    dataset = random_dataset(D, 60)
    config = train.Config(hidden=hidden, bias=bias, seed=3)
    projection = train.projection_for(config, D)
    assert projection is not None and projection.width == (2 if config.kind == "notes" else hidden)
    weights = train.initial_weights(config, D)
    if bias:
        weights.b_h, weights.b_o = np.linspace(-0.3, 0.3, hidden), 0.2
    one_hot = train.Modules("tanh", D, steps_from_data, hidden=hidden, bias=bias)
    projected = train.Modules("tanh", projection.width, steps_from_data, hidden=hidden, bias=bias)
    loss, gradient = train.flat_loss_and_grad(dataset, weights, one_hot)
    loss_p, gradient_p = train.flat_loss_and_grad(dataset, weights, projected, projection)
    assert loss_p == pytest.approx(loss, rel=1e-13)
    assert gradient_p.shape == gradient.shape
    np.testing.assert_allclose(gradient_p, gradient, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(
        train.predict(dataset, weights, projected, projection), train.predict(dataset, weights, one_hot),
        rtol=1e-13,
    )


def test_projection_only_for_large_vocabularies():
    assert train.projection_for(train.Config(), 3) is None  # the notes
    assert train.projection_for(train.Config(), train.PROJECTED_FROM - 1) is None
    assert train.projection_for(train.Config(), train.PROJECTED_FROM) is not None
    assert train.projection_for(train.Config(cell="lstm"), 10_000) is None
    assert train.projection_for(train.Config(hidden=64), 100) is None  # not wider than 2H words
    assert train.projection_for(train.Config(hidden=64), 1000).width == 64


def test_training_loads_only_the_small_module(tmp_path):
    """A 5000-word vocabulary asks the loader for input size 2 only: nothing of size D is generated."""
    from symbolic.codegen import load

    asked = []

    def loader(model, mode=None):
        asked.append(model.inputs)
        return load(model, mode)

    dataset = random_dataset(5000, 40)
    result = train.train(dataset, train.Config(epochs=2), loader=loader)
    assert set(asked) == {2} and result.diverged_at is None
    assert np.shape(result.weights.w_i) == (5000,)


# -- a real text CSV through the command line -------------------------------------------------------


def test_twenty_thousand_rows_ten_thousand_words_train_with_progress(tmp_path):
    path = write_text_csv(tmp_path / "reviews.csv")
    dataset = data.load_csv(path)
    assert dataset.size == 20_000 and len(dataset.vocabulary) == 10_000
    run = bptt("train", "--data", path, "--epochs", "3", "--json", "--progress")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)  # stdout is the JSON alone
    assert result["epochs"] == 3 and result["diverged"] is None
    assert len(result["weights"]["w_i"]) == 10_000
    assert result["loss"][2] < result["loss"][0]
    assert result["predictions_total"] == 20_000
    lines = run.stderr.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/3"], ["epoch", "2/3"], ["epoch", "3/3"]]
    assert all("loss" in line and line.endswith(" s") for line in lines)
    text = bptt("train", "--data", path, "--epochs", "2", "--hidden", "4")
    assert text.returncode == 0, text.stderr
    assert "W_i‖" in text.stdout and "(4×10000)" in text.stdout


def test_progress_lines_only_when_asked_or_slow():
    stream = _Stream()
    progress = train.Progress(3, "slow", stream=stream, slow=3600)
    for epoch in (1, 2, 3):
        progress.update(epoch, 0.5)
    progress.close()
    assert stream.getvalue() == ""
    progress = train.Progress(3, "slow", stream=stream, slow=0.0)
    progress.update(1, 0.5)
    progress.slow = 3600  # once slow, every epoch has its line
    progress.update(2, 0.25)
    progress.close()
    assert [line.split()[:4] for line in stream.getvalue().splitlines()] == [
        ["epoch", "1/3", "loss", "0.5"], ["epoch", "2/3", "loss", "0.25"],
    ]


class _Stream:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def getvalue(self):
        return "".join(self.parts)


# -- a hidden size too large for memory -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "shape"),
    [
        (("--hidden", "10000000"), "W_h alone is 10000000×10000000"),
        (("--cell", "lstm", "--hidden", "10000000"), "each recurrent matrix is 10000000×10000000"),
    ],
)
def test_hidden_size_too_large_for_memory_is_refused_up_front(arguments, shape, tmp_path):
    run = bptt("train", *arguments, "--json", cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("bptt: error: --hidden 10000000 needs about ")
    assert " PB of memory to train" in run.stderr and shape in run.stderr
    assert "available: choose a smaller --hidden" in run.stderr


def test_memory_estimate():
    config = train.Config(hidden=1000)
    count = 1000 * 3 + 1000 * 1000 + 1000
    assert train.parameter_count(config, 3) == count
    train.check_memory(config, 3, available=8 * count * train.PARAMETER_COPIES)  # fits exactly
    with pytest.raises(UsageError, match=r"--hidden 1000 needs about 48.2 MB .* but 48.2 MB is available"):
        train.check_memory(config, 3, available=8 * count * train.PARAMETER_COPIES - 1)
    assert train.parameter_count(train.Config(), 10_000) == 10_002
    assert train.parameter_count(train.Config(cell="lstm", hidden=2), 3) == 4 * (6 + 4 + 2) + 2
