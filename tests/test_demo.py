"""bptt demo: writes the whole story, every artefact usable, through the real command line."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import shutil

import numpy as np
import pytest

from symbolic import demo

from .conftest import run_bptt as bptt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED = [
    "derivation_tanh_n3.tex",
    "derivation_tanh_n3.md",
    "rnn_tanh_n3.py",
    "check_rnn_tanh_n3.txt",
    "check_rnn_tanh_n3.json",
    "analysis_tanh_w_h_0.5.txt",
    "analysis_tanh_w_h_0.5.json",
    "analysis_tanh_w_h_0.5.png",
    "analysis_relu_w_h_1.5.txt",
    "analysis_relu_w_h_1.5.json",
    "analysis_relu_w_h_1.5.png",
    "training_notes.txt",
    "training_notes.json",
    "training_loss.png",
    "analysis_lstm_n20.txt",
    "analysis_lstm_n20.json",
    "analysis_lstm_n20.png",
    "training_long_lstm.txt",
    "training_long_lstm.json",
    "training_long_rnn.txt",
    "training_long_rnn.json",
    "training_long.png",
    "index.md",
]




@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "story"
    run = bptt("demo", "--out", str(out))
    return out, run


def test_demo_writes_every_file_and_lists_it(demo_run):
    out, run = demo_run
    assert run.returncode == 0, run.stderr
    expected = EXPECTED + (["derivation_tanh_n3.pdf"] if shutil.which("pdflatex") else [])
    for name in expected:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
        assert name in run.stdout, name
    assert f"wrote {len(expected)} files" in run.stdout
    for name in expected:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if name.endswith(".json"):
            json.loads((out / name).read_text(encoding="utf-8"))
    if shutil.which("pdflatex"):
        assert (out / "derivation_tanh_n3.pdf").read_bytes()[:5] == b"%PDF-"
    assert r"\documentclass" in (out / "derivation_tanh_n3.tex").read_text(encoding="utf-8")


def test_demo_module_computes_the_notes_gradient(demo_run):
    """The written module, imported from disk, agrees with a plain NumPy loop and finite differences."""
    out, _ = demo_run
    spec = importlib.util.spec_from_file_location("demo_module", out / "rnn_tanh_n3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = np.array(
        [
            [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            [[0, 0, 1], [0, 0, 1], [0, 1, 0]],
            [[0, 1, 0], [0, 1, 0], [1, 0, 0]],
        ],
        dtype=float,
    )
    y = np.array([1.0, 1.0, 0.0])
    w_i, w_h, w_o = np.array([0.3, -0.2, 0.5]), 0.7, 1.1

    def loss(w_i, w_h, w_o):
        total = 0.0
        for sequence, label in zip(x, y):
            o = 0.0
            for x_t in sequence:
                o = math.tanh(float(w_i @ x_t) + w_h * o)
            z = w_o * o
            total += math.log1p(math.exp(-z)) + (1 - label) * z
        return total / len(x)

    h = 1e-6
    value, d_w_i, d_w_h, d_w_o = module.loss_and_grad(x, y, w_i, w_h, w_o)
    assert value == pytest.approx(loss(w_i, w_h, w_o), rel=1e-12)
    assert d_w_h == pytest.approx((loss(w_i, w_h + h, w_o) - loss(w_i, w_h - h, w_o)) / (2 * h), rel=1e-6)
    assert d_w_o == pytest.approx((loss(w_i, w_h, w_o + h) - loss(w_i, w_h, w_o - h)) / (2 * h), rel=1e-6)
    for d in range(3):
        step = np.eye(3)[d] * h
        expected = (loss(w_i + step, w_h, w_o) - loss(w_i - step, w_h, w_o)) / (2 * h)
        assert d_w_i[d] == pytest.approx(expected, rel=1e-6)


def test_demo_reports_tell_the_notes_story(demo_run):
    out, _ = demo_run
    check = json.loads((out / "check_rnn_tanh_n3.json").read_text(encoding="utf-8"))
    assert check["passed"] is True
    tanh = json.loads((out / "analysis_tanh_w_h_0.5.json").read_text(encoding="utf-8"))
    relu = json.loads((out / "analysis_relu_w_h_1.5.json").read_text(encoding="utf-8"))
    assert tanh["regime"] == "vanishing" and relu["regime"] == "exploding"
    assert tanh["input"] == relu["input"] and tanh["steps"] == demo.ANALYSIS_STEPS
    training = json.loads((out / "training_notes.json").read_text(encoding="utf-8"))
    assert training["accuracy"] == 1.0
    log = (out / "training_notes.txt").read_text(encoding="utf-8")
    assert "accuracy: 1.000" in log and "cat mat rat" in log
    index = (out / "index.md").read_text(encoding="utf-8")
    assert "![" in index and "training_loss.png" in index


def test_demo_compares_the_lstm_with_the_rnn(demo_run):
    """Issue 7's demonstration: the LSTM learns the long dependency, the tanh RNN does not, and its cell
    path keeps what the RNN's product loses, on the same words as the RNN analyses."""
    out, _ = demo_run
    lstm = json.loads((out / "training_long_lstm.json").read_text(encoding="utf-8"))
    rnn = json.loads((out / "training_long_rnn.json").read_text(encoding="utf-8"))
    assert lstm["cell"] == "lstm" and rnn["cell"] == "rnn" and rnn["activation"] == "tanh"
    assert lstm["accuracy"] >= 0.95 and rnn["accuracy"] < 0.75
    analysed = json.loads((out / "analysis_lstm_n20.json").read_text(encoding="utf-8"))
    tanh = json.loads((out / "analysis_tanh_w_h_0.5.json").read_text(encoding="utf-8"))
    assert analysed["input"] == tanh["input"] and analysed["steps"] == demo.ANALYSIS_STEPS
    assert analysed["rnn"]["products"] == pytest.approx(tanh["products"], rel=1e-12)
    assert analysed["norms"]["c"][0] > 1e5 * tanh["products"][0]
    assert "Command: bptt train --cell lstm --data long" in (out / "training_long_lstm.txt").read_text("utf-8")
    index = (out / "index.md").read_text(encoding="utf-8")
    assert "## LSTM against the plain RNN" in index
    assert "![" in index and "analysis_lstm_n20.png" in index and "training_long.png" in index
    assert f"held-out accuracy {lstm['accuracy']:.2f}" in index


def test_demo_refuses_a_foreign_directory_and_a_file(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("my work", encoding="utf-8")
    run = bptt("demo", "--out", str(foreign))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "not made by bptt demo" in run.stderr
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    run = bptt("demo", "--out", str(a_file))
    assert run.returncode == 2 and "is a file" in run.stderr


def test_demo_reruns_into_its_own_directory_without_pdflatex(demo_run, monkeypatch):
    """A second run replaces the first; without pdflatex it says why there is no PDF."""
    out, _ = demo_run
    (out / "derivation_tanh_n3.pdf").unlink(missing_ok=True)
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    listing = io.StringIO()
    written = demo.run(out, stream=listing)
    assert {item.path.name for item in written} == set(EXPECTED)
    assert "no PDF: pdflatex is not on PATH" in listing.getvalue()
    assert not (out / "derivation_tanh_n3.pdf").exists()
