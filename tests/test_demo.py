"""bptt demo: writes the whole story, every artefact usable, through the real command line."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import shutil

import numpy as np
import pytest

from symbolic.cli import demo

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
    "remedies.txt",
    "remedies.png",
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


def test_demo_shows_its_progress_on_stderr(demo_run):
    """About 6 s of work: one line per stage on stderr, none on stdout (which lists the files)."""
    _, run = demo_run
    stages = [line for line in run.stderr.splitlines() if line.startswith("bptt demo: ")]
    assert [line.split()[2] for line in stages] == [f"{k}/{demo.STAGES}" for k in range(1, demo.STAGES + 1)]
    assert "bptt demo: " not in run.stdout


def test_the_training_log_agrees_with_itself(demo_run):
    """The summary's first and last losses are the table's first row and its last ("after"), the last
    the JSON's final loss: each per-epoch loss is taken before that epoch's update, and says so."""
    out, _ = demo_run
    log = (out / "training_notes.txt").read_text(encoding="utf-8")
    summary = next(line for line in log.splitlines() if line.startswith("epochs: "))
    first, last = re.search(r"loss: (\S+) before the first update → (\S+) after the last", summary).groups()
    rows = log.split("loss before the epoch's update\n")[1].split()
    assert rows[:2] == ["1", first] and rows[-2:] == ["after", last]
    final = json.loads((out / "training_notes.json").read_text(encoding="utf-8"))["final_loss"]
    assert f"{final:.6g}" == last


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


def test_demo_measures_the_remedies(demo_run):
    """bptt remedies' table in the demo: both blocks, every row, under the command that made it."""
    from symbolic.study import remedies

    out, _ = demo_run
    text = (out / "remedies.txt").read_text(encoding="utf-8")
    assert "Command: bptt remedies -o remedies.png" in text
    for block in remedies.BLOCKS:
        assert f"baseline: {remedies.describe(block)}" in text
        assert all(f"  {row.name} " in text for row in block.rows)


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


def _quick_remedies(monkeypatch) -> None:
    """A rerun's remedies stage at 1 seed and 2 epochs: the module fixture's run measured the full
    table once (test_demo_measures_the_remedies); these tests are about the folder, not the figures."""
    from functools import partial

    from symbolic.study import remedies

    monkeypatch.setattr(remedies, "run", partial(remedies.run, seeds=1, epochs=2))


def test_demo_reruns_into_its_own_directory_without_pdflatex(demo_run, monkeypatch):
    """A second run replaces the first; without pdflatex it says why there is no PDF."""
    out, _ = demo_run
    (out / "derivation_tanh_n3.pdf").unlink(missing_ok=True)
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    _quick_remedies(monkeypatch)
    listing = io.StringIO()
    written = demo.run(out, stream=listing)
    assert {item.path.name for item in written} == set(EXPECTED)
    assert "no PDF: pdflatex is not on PATH" in listing.getvalue()
    assert not (out / "derivation_tanh_n3.pdf").exists()


# -- a demo folder the user edited, and an interrupted demo (issue 21) --------------------------------


def _snapshot(directory) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _copy_of_a_demo(demo_run, tmp_path):
    out, _ = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


@pytest.mark.parametrize("change", ["edited", "added", "linked"])
def test_demo_refuses_a_folder_with_files_it_did_not_write(demo_run, tmp_path, change):
    """An earlier demo's folder in which the user edited a file, added one, or put a link where a demo
    file was: refused in one line naming --force and --out, before any work, nothing changed."""
    copy = _copy_of_a_demo(demo_run, tmp_path)
    name = {"edited": "derivation_tanh_n3.tex", "added": "my_notes.txt", "linked": "index.md"}[change]
    if change == "edited":
        with open(copy / name, "a", encoding="utf-8") as stream:
            stream.write("% my own remark\n")
    elif change == "added":
        (copy / name).write_text("mine", encoding="utf-8")
    else:
        (copy / name).unlink()
        (copy / name).symlink_to(copy / "derivation_tanh_n3.md")
    before = _snapshot(copy)
    run = bptt("demo", "--out", str(copy))
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert f"{copy / name} was not written by bptt demo or was edited since" in lines[0]
    assert "--force" in lines[0] and "--out" in lines[0] and run.stdout == ""
    assert _snapshot(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no staging folder left beside


def test_demo_force_replaces_its_edited_files_and_keeps_the_users(demo_run, tmp_path, monkeypatch):
    copy = _copy_of_a_demo(demo_run, tmp_path)
    (copy / "my_notes.txt").write_text("mine", encoding="utf-8")
    original = (copy / "rnn_tanh_n3.py").read_bytes()
    (copy / "rnn_tanh_n3.py").write_text("# Generated by bptt, then edited\n", encoding="utf-8")
    _quick_remedies(monkeypatch)
    demo.run(copy, stream=io.StringIO(), force=True)
    assert (copy / "my_notes.txt").read_text(encoding="utf-8") == "mine"
    assert (copy / "rnn_tanh_n3.py").read_bytes() == original  # the module is reproducible
    manifest = demo.read_manifest(copy)
    assert set(manifest) | {"my_notes.txt", demo.DIRECTORY_MARKER} == {p.name for p in copy.iterdir()}
    assert all(demo.file_hash(copy / name) == digest for name, digest in manifest.items())
    again = bptt("demo", "--out", str(copy))  # the user's file is still not the demo's
    assert again.returncode == 2 and "my_notes.txt was not written by bptt demo" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "earlier_demo"])
def test_an_interrupted_demo_leaves_the_folder_as_it_was(demo_run, tmp_path, monkeypatch, existing):
    """Ctrl-C after the derivation is written (while the module is checked): the target is as before
    (absent, or the earlier demo byte for byte) and no staging folder is left beside it."""
    target = _copy_of_a_demo(demo_run, tmp_path) if existing else tmp_path / "fresh"
    before = _snapshot(target) if existing else None

    def interrupted(module_path):
        assert (module_path.parent / "derivation_tanh_n3.tex").is_file()  # work was done before this
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_check", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run(target, stream=io.StringIO())
    assert sorted(p.name for p in tmp_path.iterdir()) == (["copy"] if existing else [])
    if existing:
        assert _snapshot(target) == before


def test_sigterm_to_a_demo_leaves_nothing(tmp_path):
    """bptt demo stopped by SIGTERM while it builds: exit 130, no folder, no staging folder, no child."""
    import signal
    import subprocess
    import sys
    import time

    from .conftest import ROOT as PACKAGE_ROOT

    environment = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "symbolic", "demo", "--out", "story"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    staged = []
    while time.monotonic() < deadline and process.poll() is None:
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(".story.bptt-demo-")]
        if staged and (staged[0] / "derivation_tanh_n3.tex").exists():
            break
        time.sleep(0.05)
    assert staged, "the demo never started building"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    # its progress lines, then the one line of the interruption
    assert stderr.strip().splitlines()[-1] == "bptt: interrupted"
    assert all(line.startswith("bptt demo: ") for line in stderr.strip().splitlines()[:-1]), stderr
    assert list(tmp_path.iterdir()) == []
    time.sleep(0.5)
    left = []  # the demo's `bptt check` children ran in the staging folder: none may be running
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd").startswith(str(tmp_path)):
                left.append(entry)
        except OSError:
            pass
    assert left == []


def test_signals_wait_for_the_renames():
    """files.deferred_signals: a Ctrl-C during the renames is acted on once they are done."""
    import signal

    from symbolic.files import deferred_signals

    done = []
    # Python's handler, even where the run was started in the background with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("renamed")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["renamed"]
