"""The bad-input table (docs/bad-input.md), through the real command line and the real generated modules.

Every command-line row: exit status 2, exactly one line on stderr containing the key phrase, no
traceback, and no file created or changed in the working directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.model import Model

from .conftest import ROOT

HUGE = "1000000000"

# (arguments, key phrase of the one-line message)
ROWS = [
    # --steps
    *[
        (["derive", "--steps", value], "number of steps must be a positive whole number")
        for value in ("0", "-1", "2.5", "abc")
    ],
    *[
        (["codegen", "--steps", value], "number of steps must be a positive whole number")
        for value in ("0", "-1", "2.5", "abc")
    ],
    (["analyze", "--steps", "0"], "--steps must be at least 1"),
    (["analyze", "--steps", "abc"], "--steps must be a whole number"),
    (["derive", "--steps", HUGE], "too many to unroll symbolically (limit 10000)"),
    (["codegen", "--steps", HUGE, "--mode", "unrolled"], "use --mode loop"),
    (["analyze", "--steps", HUGE], "too long to analyze (limit 100000"),
    # --hidden, --inputs, --cell
    *[
        ([command, *extra, "--hidden", value], "hidden size must be a positive whole number")
        for command, extra in (("derive", []), ("codegen", []), ("analyze", ["-n", "3"]), ("train", []))
        for value in ("0", "-1")
    ],
    (["analyze", "-n", "3", "--hidden", "2", "--w-h", "1"], "--w-h sets a weight of the scalar model"),
    (["analyze", "-n", "3", "--hidden", "2", "--w-h-scale", "x"], "--w-h-scale must be a number"),
    (["analyze", "-n", "10", "--hidden", "2000"], "too large to analyze"),
    (["train", "--hidden", "2", "--init-w-h", "nan"], "--init-w-h must be a finite number"),
    (["codegen", "--hidden", "2", "--backend", "fortran"], "unknown backend 'fortran'"),
    (["derive", "--inputs", "0"], "input size must be a positive whole number"),
    (["codegen", "--inputs", "0"], "input size must be a positive whole number"),
    (["derive", "--cell", "xyz"], "unknown cell 'xyz'"),
    (["codegen", "--cell", "lstm", "--steps", "300", "--mode", "unrolled"], "limited to n <= 256"),
    (["codegen", "--cell", "lstm", "--activation", "relu"], "does not apply to --cell lstm"),
    (["train", "--cell", "lstm", "--init", "identity"], "--init identity applies to the plain RNN"),
    (["train", "--cell", "lstm", "--init-w-h", "1"], "--init-w-h sets the plain RNN's w_h"),
    (["train", "--forget-bias", "5"], "--forget-bias sets a per-unit parameter of a gated cell (b_f of --cell lstm)"),
    (["analyze", "-n", "3", "--cell", "lstm", "--w-i", "1,1,1"], "--w-i sets a weight of the plain RNN"),
    (["codegen", "--cell", "lstm", "--bias", "--target", "torch"], "leaves the readout to you: drop --bias"),
    (["derive", "--cell", "lstm", "--activation", "sigmoid"], "does not apply to --cell lstm"),
    (["derive", "--cell", "lstm", "--format", "html"], "unknown format 'html'"),
    # unknown names
    *[
        ([command, *extra, "--activation", "softsign"], "unknown activation 'softsign'")
        for command, extra in (("derive", []), ("codegen", []), ("analyze", ["-n", "3"]), ("train", []))
    ],
    (["codegen", "--mode", "jit"], "unknown mode 'jit'"),
    (["derive", "--format", "docx"], "unknown format 'docx'"),
    # conflicting options
    (["train", "--clip-norm", "1", "--clip-value", "1"], "not allowed with argument --clip-norm"),
    (["analyze", "--steps", "4", "--input", "cat,mat"], "does not match the 2 words"),
    # bptt check
    (["check", "missing.py"], "does not exist"),
    (["check", "syntax.py"], "has a syntax error at line 2"),
    (["check", "plain.py"], "does not have the generated interface"),
    # bptt train --data
    (["train", "--data", "missing.csv"], "does not exist"),
    (["train", "--data", "empty.csv"], "is empty"),
    (["train", "--data", "nolabel.csv"], "missing column 'label'"),
    (["train", "--data", "label2.csv"], "label must be 0 or 1, got '2'"),
    (["train", "--data", "latin1.csv"], "not valid UTF-8"),
]

FILES = {
    "syntax.py": "x = 1\ndef broken(:\n",
    "plain.py": "def loss():\n    return 0.0\n",
    "empty.csv": "",
    "nolabel.csv": "text\ncat mat rat\n",
    "label2.csv": "text,label\ncat mat rat,1\nrat mat,2\n",
}


def _workspace(directory):
    for name, text in FILES.items():
        (directory / name).write_text(text)
    (directory / "latin1.csv").write_bytes("text,label\nchat café,1\n".encode("latin-1"))


def _snapshot(directory) -> dict:
    return {
        path.relative_to(directory).as_posix(): (
            path.read_bytes(),
            path.stat().st_mtime_ns,
            path.stat().st_mode,
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def assert_refused(result, phrase: str, before: dict, directory) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert phrase in lines[0], lines[0]
    assert lines[0].startswith("bptt: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert _snapshot(directory) == before


@pytest.mark.parametrize(
    ("arguments", "phrase"), ROWS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_command_line_row(bptt, tmp_path, arguments, phrase):
    _workspace(tmp_path)
    before = _snapshot(tmp_path)
    assert_refused(bptt(*arguments, cwd=tmp_path), phrase, before, tmp_path)


# -- -o targets, for derive and codegen --------------------------------------------------------------

GENERATED_HEADER = "% Generated by bptt -- an earlier run\n"


#: The user's notes quote a generated header on their second line: the marker must *start* the file.
QUOTING_NOTES = "My notes on bptt.\n" + GENERATED_HEADER + "more notes\n"
LONG_NAME = "n" * 300  # over NAME_MAX (255) on every common file system


def _device(directory, name: str, kind: int, device: tuple[int, int]) -> bool:
    """A device node in ``directory`` (root only); False where mknod is not allowed."""
    try:
        os.mknod(directory / name, kind | 0o666, os.makedev(*device))
    except OSError:
        return False
    return True


def _targets(directory):
    (directory / "a_directory").mkdir()
    (directory / "mine.txt").write_text("my own notes\n")
    (directory / "quoting.txt").write_text(QUOTING_NOTES)
    read_only = directory / "read_only.out"
    read_only.write_text(GENERATED_HEADER)
    read_only.chmod(0o444)
    os.mkfifo(directory / "fifo")
    # Copies of /dev/null (1, 3) and of a loop device (7, 0): bptt only stats them.
    _device(directory, "char_device", stat.S_IFCHR, (1, 3))
    _device(directory, "block_device", stat.S_IFBLK, (7, 0))


def _special(directory) -> dict:
    """What stands at each non-regular path: a replaced FIFO or device node would show here."""
    return {
        path.name: (os.stat(path).st_mode, os.stat(path).st_rdev)
        for path in sorted(directory.iterdir())
        if not path.is_file()
    }


TARGET_ROWS = [
    ("missing/out.file", "directory missing does not exist"),
    ("a_directory", "is a directory"),
    ("a_directory/", "ends in '/', so it names a directory: give a file name, e.g. -o a_directory/out."),
    ("missing/", "ends in '/', so it names a directory"),
    ("read_only.out", "is read-only"),
    ("mine.txt", "was not generated by bptt: pass --force"),
    ("quoting.txt", "was not generated by bptt: pass --force"),
    ("fifo", "fifo is a named pipe (FIFO), and bptt only writes regular files"),
    ("char_device", "char_device is a character device, and bptt only writes regular files"),
    ("block_device", "block_device is a block device, and bptt only writes regular files"),
    (LONG_NAME, "is too long (300 bytes; this file system allows 255): choose a shorter -o name"),
]
#: Rows that --force does not change: bptt never writes anything but a regular file.
FORCE_ROWS = [row for row in TARGET_ROWS if row[0] in ("a_directory", "a_directory/", "fifo", "char_device", "block_device")]


def _refused_target(bptt, directory, command, target, phrase, *extra):
    _targets(directory)
    if target.endswith("device") and not (directory / target).exists():
        pytest.skip("creating a device node needs root")
    before, special = _snapshot(directory), _special(directory)
    assert_refused(bptt(command, "--steps", "2", "-o", target, *extra, cwd=directory), phrase, before, directory)
    assert _special(directory) == special
    assert not (directory / "missing").exists()


@pytest.mark.parametrize("command", ["derive", "codegen"])
@pytest.mark.parametrize(("target", "phrase"), TARGET_ROWS, ids=[row[0][:20] for row in TARGET_ROWS])
def test_output_target_row(bptt, tmp_path, command, target, phrase):
    _refused_target(bptt, tmp_path, command, target, phrase)


@pytest.mark.parametrize("command", ["derive", "codegen"])
@pytest.mark.parametrize(("target", "phrase"), FORCE_ROWS, ids=[row[0] for row in FORCE_ROWS])
def test_force_does_not_write_over_a_directory_a_fifo_or_a_device(bptt, tmp_path, command, target, phrase):
    _refused_target(bptt, tmp_path, command, target, phrase, "--force")


@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_output_to_dash_or_dev_stdout_prints(bptt, tmp_path, target):
    _targets(tmp_path)
    before = _snapshot(tmp_path)
    result = bptt("codegen", "--steps", "2", "-o", target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == bptt("codegen", "--steps", "2", cwd=tmp_path).stdout
    assert result.stdout.startswith("# Generated by bptt") and result.stderr == ""
    assert _snapshot(tmp_path) == before


# --plot has no --force: its refusal of a foreign file must not advise it.
PLOT_ROWS = [
    ("mine.png", "mine.png exists and was not generated by bptt: choose another --plot path or remove it"),
    ("fifo.png", "fifo.png is a named pipe (FIFO), and bptt only writes regular files"),
    ("dir.png", "dir.png is a directory: give a file name, e.g. --plot dir.png/plot.png"),
]


@pytest.mark.parametrize("command", [["analyze", "--steps", "3"], ["train", "--epochs", "1"]], ids=["analyze", "train"])
@pytest.mark.parametrize(("target", "phrase"), PLOT_ROWS, ids=[row[0] for row in PLOT_ROWS])
def test_plot_target_row(bptt, tmp_path, command, target, phrase):
    (tmp_path / "mine.png").write_bytes(b"\x89PNG\r\n\x1a\n my own image, no bptt text chunk")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    before, special = _snapshot(tmp_path), _special(tmp_path)
    result = bptt(*command, "--plot", target, cwd=tmp_path)
    assert_refused(result, phrase, before, tmp_path)
    assert "--force" not in result.stderr and _special(tmp_path) == special


def test_a_plot_of_ours_is_replaced_without_force(bptt, tmp_path):
    first = bptt("analyze", "--steps", "3", "--plot", "ours.png", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = bptt("analyze", "--steps", "4", "--plot", "ours.png", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.png"]


def test_demo_refuses_a_directory_where_it_writes_a_file_before_any_work(bptt, tmp_path):
    """An earlier demo's directory with a directory where the loss plot goes: refused at once, so
    nothing is written (not even the derivation, the first file), rather than after the training."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bptt-demo").write_text("Generated by bptt demo: this directory may be rewritten by it\n")
    (out / "training_loss.png").mkdir()
    before = _snapshot(tmp_path)
    result = bptt("demo", "--out", "out", cwd=tmp_path)
    assert_refused(result, "training_loss.png is a directory where bptt demo writes a file", before, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [".bptt-demo", "training_loss.png"]


@pytest.mark.parametrize("command", ["derive", "codegen"])
def test_force_replaces_a_foreign_file_and_our_header_needs_no_force(bptt, tmp_path, command):
    foreign = tmp_path / "mine.txt"
    foreign.write_text("my own notes\n")
    forced = bptt(command, "--steps", "2", "-o", "mine.txt", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "Generated by bptt" in foreign.read_text()
    ours = tmp_path / "ours.txt"
    ours.write_text(GENERATED_HEADER + "old body\n")
    again = bptt(command, "--steps", "2", "-o", "ours.txt", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "old body" not in ours.read_text() and "Generated by bptt" in ours.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "ours.txt"]  # no temporary left


# -- sizes that are allowed --------------------------------------------------------------------------


def test_large_allowed_n_prints_the_general_form_without_the_expanded_one(bptt):
    result = bptt("derive", "--steps", "300", "--format", "md")
    assert result.returncode == 0, result.stderr
    assert "The general form for any n" in result.stdout
    assert "is not built for $n = 300$" in result.stdout
    assert "o_{300}" in result.stdout


# -- a 100 MB data file: streamed, or refused, in bounded memory ------------------------------------

_PEAK = """
import resource, subprocess, sys
run = subprocess.run([sys.executable, "-m", "symbolic", *sys.argv[1:]], capture_output=True, text=True)
sys.stdout.write(f"{run.returncode}\\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n{run.stderr}")
"""


def _peak_run(arguments, cwd):
    """Run the real command in a grandchild; (exit status, peak RSS in bytes, stderr)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    output = subprocess.run(
        [sys.executable, "-c", _PEAK, *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    code, peak, stderr = output.split("\n", 2)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    return int(code), int(peak) * scale, stderr


MB = 1 << 20


def test_a_100_megabyte_file_is_streamed_in_bounded_memory(tmp_path):
    # 100 MB of valid rows with long words (few tokens, so parsing is quick), then one bad label:
    # the whole file is read, row by row, before the refusal.
    row = ("c" * 40 + " " + "m" * 40 + " ") * 20 + ",1\n"
    path = tmp_path / "big.csv"
    with open(path, "w") as stream:
        stream.write("text,label\n")
        block = row * 1000
        stream.writelines(block for _ in range(100 * MB // len(block) + 1))
        stream.write("cat,7\n")
    assert path.stat().st_size > 100 * MB
    code, peak, stderr = _peak_run(["train", "--data", str(path)], tmp_path)
    assert code == 2 and "label must be 0 or 1, got '7'" in stderr and len(stderr.splitlines()) == 1
    # Python, NumPy and SymPy alone take ~60 MB; holding the file's text would add several hundred.
    assert peak < 200 * MB, peak / MB


def test_a_100_megabyte_line_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "oneline.csv"
    path.write_bytes(b"text,label\n" + b"cat " * (25 * MB))
    code, peak, stderr = _peak_run(["train", "--data", str(path)], tmp_path)
    assert code == 2 and "line 2: longer than 1 MB" in stderr and len(stderr.splitlines()) == 1
    assert peak < 150 * MB, peak / MB


# -- generated functions ------------------------------------------------------------------------------

X = np.eye(3)[[[0, 1, 2]]]  # (1, 3, 3)
Y = np.array([1.0])
W_I = np.array([0.5, -0.5, 0.25])

# (argument position, bad value, key phrase of the ValueError)
ARRAY_ROWS = [
    ("x", np.ones((1, 2, 3, 1)), "x must have shape"),
    ("x", np.ones((1, 3, 4)), "x must have shape"),
    ("x", np.ones(3), "x must have shape"),
    ("x", np.full((1, 3, 3), "a"), "x must hold numbers"),
    ("x", np.ones((1, 3, 3), dtype=object), "x must hold numbers"),
    ("x", [[1.0, 0.0, 0.0], [1.0, 0.0]], "x must be an array of numbers"),
    ("x", np.where(X == 1, np.nan, 0.0), "x must be finite"),
    ("x", np.where(X == 1, np.inf, 0.0), "x must be finite"),
    ("x", np.ones((0, 3, 3)), "x must have shape"),
    ("y", np.array([2.0]), "y must hold values in [0, 1]"),
    ("y", np.array([-0.5]), "y must hold values in [0, 1]"),
    ("y", np.array([np.nan]), "y must be finite"),
    ("y", np.array(["1"]), "y must hold numbers"),
    ("y", np.array([1.0, 0.0]), "y must have shape (1,)"),
    ("w_i", np.ones(2), "w_i must have shape (3,)"),
    ("w_i", "abc", "w_i must hold numbers"),
    ("w_i", np.array([1.0, np.inf, 0.0]), "w_i must be finite"),
    ("w_h", np.ones(2), "w_h must be a float"),
    ("w_h", "0.5", "w_h must hold numbers"),
    ("w_h", None, "w_h must hold numbers"),
    ("w_o", np.nan, "w_o must be finite"),
    ("w_o", -np.inf, "w_o must be finite"),
]


FUNCTION_ROWS = [
    (function, *row)
    for function in ("forward", "loss", "loss_and_grad", "bptt_terms")
    for row in ARRAY_ROWS
    if not (function == "forward" and row[0] == "y")  # forward takes no labels
]


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize(
    ("function", "argument", "value", "phrase"), FUNCTION_ROWS, ids=[f"{r[0]}: {r[3]}" for r in FUNCTION_ROWS]
)
def test_generated_function_row(mode, function, argument, value, phrase):
    module = load(Model(steps=3, activation="tanh"), mode)
    arguments = {"x": X, "y": Y, "w_i": W_I, "w_h": 0.5, "w_o": 1.0}
    arguments[argument] = value
    if function == "forward":
        del arguments["y"]
    with pytest.raises(ValueError) as raised:
        getattr(module, function)(**arguments)
    assert phrase in str(raised.value)


def test_the_committed_generated_module_validates_too():
    """generated/ is what users copy: its checks are the template's."""
    namespace = {}
    path = ROOT / "generated" / "rnn_tanh_loop.py"
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our own generated file
    with pytest.raises(ValueError, match="x must be finite"):
        namespace["loss"](np.full((1, 3, 3), np.nan), Y, W_I, 0.5, 1.0)
    with pytest.raises(ValueError, match="y must hold values"):
        namespace["loss"](X, np.array([3.0]), W_I, 0.5, 1.0)


def test_loop_code_for_a_billion_steps_is_generated(bptt):
    """Loop code does not depend on n: 10^9 steps is a valid request, answered at once."""
    result = bptt("codegen", "--steps", HUGE, "--mode", "loop")
    assert result.returncode == 0, result.stderr
    assert "STEPS: int | None = None" in result.stdout or "STEPS = None" in result.stdout
