"""bptt grade cannot be fooled by the file it grades, probes lengths past 4 and H > 1, and leaves no
process behind (issue 21).

Each cheat is shown to work where the graded code shares a process with the reference (grade_function
in this process, or the old same-process design through run_in_child): the negative control. Through
``bptt grade`` the same file must not be graded right.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from symbolic.verify import grade
from symbolic.verify.child import run_in_child
from symbolic.verify.grade import FunctionUnusable, grade_function, load_function
from tests.conftest import ROOT, run_bptt

GRADING = Path(__file__).resolve().parent / "grading"
WRONG_BASE = f"import sys\nsys.path.insert(0, {str(GRADING)!r})\nfrom rnn_wrong_truncated import loss_and_grad as wrong\n"


def _write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# -- the three cheats ----------------------------------------------------------------------------------

FRAME_CHEAT = WRONG_BASE + textwrap.dedent('''
    import gc, inspect

    def _exact():
        """The exact gradient of this call, wherever the caller keeps it."""
        for info in inspect.stack():
            case = info.frame.f_locals.get("case")
            if case is not None and getattr(case, "exact", None):
                return case
        for thing in gc.get_objects():
            if type(thing).__name__ == "Case" and getattr(thing, "exact", None) and thing.user == {}:
                return thing
        return None

    def loss_and_grad(x, y, w_i, w_h, w_o):
        case = _exact()
        if case is not None and np.shape(case.x) == np.shape(x) and np.allclose(case.x, x):
            e = case.exact
            return case.exact_loss, e["w_i"], e["w_h"], e["w_o"]
        return wrong(x, y, w_i, w_h, w_o)

    import numpy as np
''')

PATCH_CHEAT = WRONG_BASE + textwrap.dedent('''
    import numpy as np

    def _patch():
        """Every tolerance infinite, every error zero, in every copy of the grader there is."""
        for name, module in list(sys.modules.items()):
            if name.startswith("symbolic"):
                for constant in ("RELATIVE", "UNDECIDED", "FLOOR"):
                    if hasattr(module, constant):
                        setattr(module, constant, float("inf"))
                if hasattr(module, "_relative") and hasattr(module, "_loss_error"):
                    module._relative = lambda got, want: {k: np.zeros(np.shape(v)) for k, v in want.items()}
                    module._loss_error = lambda got, want: 0.0
        import symbolic.verify.grade as grade  # and the module itself, imported if it was not
        grade.RELATIVE = grade.UNDECIDED = grade.FLOOR = float("inf")
        grade._relative = lambda got, want: {k: np.zeros(np.shape(v)) for k, v in want.items()}
        grade._loss_error = lambda got, want: 0.0

    _patch()

    def loss_and_grad(x, y, w_i, w_h, w_o):
        _patch()
        return wrong(x, y, w_i, w_h, w_o)
''')

PIPE_CHEAT = WRONG_BASE + textwrap.dedent('''
    import json, os

    _TEXT = "right: every entry within 1e-07 of the exact gradient in all 31 cases"
    _DATA = json.dumps({"result": {"passed": True, "text": _TEXT, "data": {"verdict": "right"}}}).encode()
    _FORGED = b"R" + len(_DATA).to_bytes(8, "big") + _DATA

    def _forge():
        """The forged verdict, on every descriptor the process holds but its standard streams."""
        numbers = [int(a) for a in sys.argv if a.isdigit()] + list(range(3, 256))
        for fd in numbers:
            try:
                os.write(fd, _FORGED)
            except OSError:
                pass

    _forge()

    def loss_and_grad(x, y, w_i, w_h, w_o):
        _forge()
        return wrong(x, y, w_i, w_h, w_o)
''')


def _not_right(result):
    """Not graded right: exit 1 (wrong) or 2 (refused), and no verdict "right" on stdout."""
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert "right: every entry" not in result.stdout
    assert '"verdict": "right"' not in result.stdout


def test_reading_the_callers_frame_is_graded_wrong(tmp_path):
    path = _write(tmp_path, "frames.py", FRAME_CHEAT)
    # negative control: in the reference's own process the cheat finds the exact gradient
    assert grade_function(load_function(path)).passed
    result = run_bptt("grade", str(path))
    _not_right(result)
    assert result.returncode == 1 and "the mistake: truncated" in result.stdout, result.stdout + result.stderr


def test_patching_the_tolerances_is_graded_wrong(tmp_path, monkeypatch):
    path = _write(tmp_path, "patch.py", PATCH_CHEAT)
    import sys

    # restored after the negative control, in every module the cheat patches (grade_report holds the
    # tolerances since grade.py was split: restoring grade's alone left the others patched)
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("symbolic"):
            for name in ("RELATIVE", "UNDECIDED", "FLOOR", "_relative", "_loss_error"):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, getattr(module, name))
    # negative control: patched in the reference's own process, the wrong gradient passes
    assert grade_function(load_function(path)).passed
    monkeypatch.undo()
    assert grade.RELATIVE == 1e-7
    result = run_bptt("grade", str(path))
    _not_right(result)
    assert result.returncode == 1 and "the mistake: truncated" in result.stdout, result.stdout + result.stderr
    assert "1e-07" in result.stdout


def _same_process_grade(path: str, options: dict) -> dict:
    """The design before the sandbox: the graded file imported next to the reference (negative control)."""
    report = grade_function(load_function(path), name="loss_and_grad")
    return {"passed": report.passed, "text": report.format(), "data": report.as_data()}


def test_writing_a_verdict_to_inherited_descriptors_is_not_graded_right(tmp_path):
    path = _write(tmp_path, "pipe.py", PIPE_CHEAT)
    # negative control: sharing a process with the verdict's pipe, the forged verdict is taken
    forged = run_in_child("tests.test_grade_sandbox:_same_process_grade", [str(path), {}], str(path), 60,
                          wording=grade.GRADE_WORDING, errors={"FunctionUnusable": FunctionUnusable})
    assert forged["passed"] is True and forged["data"] == {"verdict": "right"}
    for flags in ([], ["--json"]):
        result = run_bptt("grade", *flags, str(path))
        _not_right(result)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "wrote into bptt grade's channel" in result.stderr and "Traceback" not in result.stderr


def test_the_sandbox_holds_no_reference_and_no_grader(tmp_path):
    """What the graded process holds: its argv is bare, no descriptor but the channel and the standard
    streams, symbolic.verify.grade not imported, no frame above the driver's."""
    spy = _write(tmp_path, "spy.py", f'''
        import os, sys
        sys.path.insert(0, {str(GRADING)!r})
        from rnn_right_loop import loss_and_grad as right
        SEEN = {{"argv": sys.argv[1:], "grade": "symbolic.verify.grade" in sys.modules,
                 "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))}}

        def loss_and_grad(x, y, w_i, w_h, w_o):
            frame, names = sys._getframe(1), []
            while frame is not None:
                names += list(frame.f_locals)
                frame = frame.f_back
            SEEN["locals"] = sorted(set(names))
            print("SEEN " + repr(SEEN), file=sys.stderr)
            return right(x, y, w_i, w_h, w_o)
        ''')
    result = run_bptt("grade", str(spy))
    assert result.returncode == 0, result.stdout + result.stderr
    seen = ast.literal_eval(result.stderr.split("SEEN ")[1].splitlines()[0])
    assert seen["argv"] == [] and seen["grade"] is False
    assert not {"case", "exact", "report", "cases", "interface"} & set(seen["locals"]), seen["locals"]
    # 0, 1, 2, the channel's two ends, and the one listdir opened
    assert len(seen["fds"]) <= 6, seen["fds"]


# -- lengths past 4 and H > 1 --------------------------------------------------------------------------


def test_lengths_well_past_4_are_graded_and_named(monkeypatch):
    last4 = load_function(GRADING / "rnn_wrong_last4.py")
    at7 = load_function(GRADING / "rnn_wrong_at7.py")
    report = grade_function(last4)
    assert not report.passed
    # exactly: an off-by-one in the localisation (n <= first counted right) fails here
    assert report.localisation.startswith("right for n = 1, 2, 3, 4, wrong from n = 5: "), report.localisation
    assert "n = 1, 2, 3, 4, 5, 6, 7, 8, 12, 20 × B = 1, 2, 5" in report.format()
    by_name = {f.parameter: f for f in report.findings}
    assert by_name["w_i"].failing_steps == [5, 6, 7, 8, 12, 20]
    report = grade_function(at7)
    assert not report.passed
    assert report.localisation.startswith("wrong at n = 7 only, right at n = 1, 2, 3, 4, 5, 6, 8, 12, 20")
    assert "wrong at n = 7 only" in report.format()
    # negative control: at n ≤ 4 both were graded right
    monkeypatch.setattr(grade, "LENGTHS", (1, 2, 3, 4))
    assert grade_function(last4).passed and grade_function(at7).passed


def test_localisation_at_a_later_first_length():
    """Wrong from n = 3 (a window of 2 steps): the list of right lengths is exactly 1, 2."""
    module = load_function(GRADING / "rnn_wrong_last4.py").__globals__
    old = module["WINDOW"]
    module["WINDOW"] = 2
    try:
        report = grade_function(module["loss_and_grad"])
    finally:
        module["WINDOW"] = old
    assert report.localisation.startswith("right for n = 1, 2, wrong from n = 3: the long-term terms are wrong "
                                          "from gap 2 on"), report.localisation


def test_the_default_hidden_size_tells_a_matrix_from_its_transpose():
    untransposed = load_function(GRADING / "gru_wrong_untransposed.py")
    report = grade_function(untransposed, cell="gru")
    assert not report.passed and report.settings["hidden"] == 3 and report.mistake == "untransposed"
    assert "H = 3" in report.format()
    # negative control: at H = 1 a matrix is its transpose
    assert grade_function(untransposed, cell="gru", hidden=1).passed
    # the notes' scalar model keeps H = 1 for the plain RNN's positional form
    assert grade_function(load_function(GRADING / "rnn_right_loop.py")).settings["hidden"] == 1


def test_cli_default_hidden_and_lengths():
    result = run_bptt("grade", "--cell", "gru", str(GRADING / "gru_wrong_untransposed.py"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "H = 3" in result.stdout and "the mistake: untransposed" in result.stdout
    result = run_bptt("grade", str(GRADING / "rnn_wrong_last4.py"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "wrong: right for n = 1, 2, 3, 4, wrong from n = 5" in result.stdout


# -- --steps N with a wrong file -------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_one_length_grades_a_wrong_function(steps):
    report = grade_function(load_function(GRADING / "rnn_wrong_truncated.py"), steps=steps)
    assert not report.passed and report.mistake == "truncated"
    assert report.localisation == f"graded at n = {steps} only (the function takes that length): no localisation in time"
    assert {case.steps for case in report.cases} == {steps}


def test_cli_steps_with_a_wrong_file():
    result = run_bptt("grade", "--steps", "3", str(GRADING / "rnn_wrong_truncated.py"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the mistake: truncated" in result.stdout and "Traceback" not in result.stderr


# -- gradients as strings --------------------------------------------------------------------------------


def _as(kind):
    right = load_function(GRADING / "rnn_right_loop.py")

    def converted(x, y, w_i, w_h, w_o):
        loss, *grads = right(x, y, w_i, w_h, w_o)
        if kind == "str":
            return (loss, *(repr(np.asarray(g).tolist()) if np.ndim(g) == 0 else [str(v) for v in g]
                            for g in grads))
        return (loss, *(np.array(np.atleast_1d(g).tolist(), dtype=object).reshape(np.shape(g)) for g in grads))

    return converted


@pytest.mark.parametrize("kind", ["str", "object"])
def test_gradients_as_strings_or_objects_are_refused(kind):
    with pytest.raises(FunctionUnusable, match=r"returns dL/dw_i as .*(strings|object).*, not numbers"):
        grade_function(_as(kind))


def test_cli_gradients_as_strings_are_refused(tmp_path):
    path = _write(tmp_path, "strings.py", f'''
        import sys
        sys.path.insert(0, {str(GRADING)!r})
        from rnn_right_loop import loss_and_grad as right

        def loss_and_grad(x, y, w_i, w_h, w_o):
            loss, dw_i, dw_h, dw_o = right(x, y, w_i, w_h, w_o)
            return loss, [str(v) for v in dw_i], str(dw_h), dw_o
        ''')
    result = run_bptt("grade", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "loss_and_grad returns dL/dw_i as strings (dtype <U" in result.stderr and "not numbers" in result.stderr


def test_check_refuses_gradients_as_strings():
    from symbolic.verify.check_points import gradient_array as _gradient
    from symbolic.verify.interfaces import Wrong as _Wrong

    assert _gradient("w", np.array([1.5, 2.0]), (2,)).tolist() == [1.5, 2.0]  # control: numbers pass
    for value in (np.array(["1.5", "2"]), np.array([1.5, 2.0], dtype=object), np.array([b"1", b"2"])):
        with pytest.raises(_Wrong, match=r"w: the gradient holds (strings|Python objects) \(dtype .*\), not numbers"):
            _gradient("w", value, (2,))


# -- time limits, signals and processes --------------------------------------------------------------


def _cell_file(tmp_path: Path, prefix: str) -> Path:
    """The built-in GRU as a cell file, ``prefix`` run first."""
    return _write(tmp_path, "cell.py", prefix + "from symbolic.cells.gru import cell\n\nCELL = cell()\n")


def test_a_cell_file_that_never_returns_is_timed(tmp_path):
    right = GRADING / "gru_right.py"
    looping = _cell_file(tmp_path, "while True:\n    pass\n")
    result = _finish(_start(["grade", "--cell", str(looping), "--timeout", "2", str(right)], tmp_path), tmp_path, 60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the cell file {looping} (its top-level code) did not return within 2 s" in result.stderr
    # negative control: a slow cell file within the limit is loaded, and the file graded against it
    slow = _cell_file(tmp_path, "import time\ntime.sleep(0.5)\n")
    result = run_bptt("grade", "--cell", str(slow), "--timeout", "20", str(right))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "right: every entry" in result.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_soon(pids, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _start(args, tmp_path):
    """bptt in the background, its output in files: a process that outlives it and holds a pipe would
    keep a reader waiting for ever."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # a run started in the background (``cmd &`` in a script) ignores SIGINT and children inherit an
    # ignored signal, where Python then never raises KeyboardInterrupt; a handler is reset by exec instead
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
            return subprocess.Popen([sys.executable, "-m", "symbolic", *args], cwd=tmp_path, env=environment,
                                    stdout=stdout, stderr=stderr, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(process, tmp_path, seconds: float = 300.0) -> subprocess.CompletedProcess:
    try:
        process.wait(timeout=seconds)
    finally:
        if process.poll() is None:
            process.kill()  # its children die with it (PR_SET_PDEATHSIG)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, (tmp_path / "stdout").read_text(),
                                       (tmp_path / "stderr").read_text())


def _wait_for(path: Path, seconds: float = 60.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return [int(v) for v in path.read_text().split()]
        time.sleep(0.1)
    raise AssertionError(f"{path} was not written")


SPINNER = '''
import os, subprocess
sleeper = subprocess.Popen(["sleep", "1003"]).pid
with open({pids!r}, "w") as file:
    file.write(f"{{os.getpid()}} {{sleeper}}\\n")

def loss_and_grad(*arguments):
    while True:
        pass
'''
#: bptt check: the module spins on import
SPIN_ON_IMPORT = "\nwhile True:\n    pass\n"


@pytest.mark.parametrize("command", ["grade", "check"])
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_command_ends_its_children(tmp_path, command, number):
    pids = tmp_path / "pids"
    spinner = _write(tmp_path, "spin.py", SPINNER.format(pids=str(pids)) + (SPIN_ON_IMPORT if command == "check" else ""))
    process, child = _start([command, "--timeout", "300", str(spinner)], tmp_path), []
    try:
        child = _wait_for(pids)  # the file's process, and a process it started
        time.sleep(0.5)
        assert all(map(_alive, child)) and process.poll() is None  # control: the probe sees them running
        process.send_signal(number)
        process.wait(timeout=30)
        assert _gone_soon(child), f"the child {child} outlived bptt {command} after {signal.Signals(number).name}"
    finally:
        _finish(process, tmp_path, 0.1)
        _kill(child)
    assert process.returncode != 0


def _kill(pids) -> None:
    """End what a failed run left behind (only these processes, which the test's file started)."""
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


STARTER = '''
import os, subprocess, sys
sys.path.insert(0, {grading!r})
from rnn_right_loop import loss_and_grad as right

started = [subprocess.Popen(["sleep", "1000"]).pid,
           subprocess.Popen(["sleep", "1001"], start_new_session=True).pid]
child = os.fork()
if child == 0:
    import time
    time.sleep(1000)
    os._exit(0)
started.append(child)
with open({pids!r}, "w") as file:
    file.write(" ".join(map(str, started)) + "\\n")

def loss_and_grad(x, y, w_i, w_h, w_o):
    return right(x, y, w_i, w_h, w_o)
'''


def test_processes_the_graded_file_starts_do_not_outlive_grade(tmp_path):
    pids = tmp_path / "pids"
    starter = _write(tmp_path, "starter.py", STARTER.format(grading=str(GRADING), pids=str(pids)))
    # negative control: run on its own, the file's processes outlive it
    subprocess.run([sys.executable, str(starter)], check=True, timeout=60)
    alone = _wait_for(pids)
    try:
        assert all(_alive(pid) for pid in alone)
    finally:
        for pid in alone:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pids.unlink()
    result = _finish(_start(["grade", str(starter)], tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    started = _wait_for(pids)
    try:
        assert len(started) == 3 and _gone_soon(started), [pid for pid in started if _alive(pid)]
    finally:
        _kill(started)


def test_processes_a_checked_module_starts_do_not_outlive_check(tmp_path):
    pids = tmp_path / "pids"
    module = _write(tmp_path, "m.py", f'''
        import os, subprocess
        with open({str(pids)!r}, "w") as file:
            file.write(str(subprocess.Popen(["sleep", "1002"]).pid) + "\\n")
        ACTIVATION, INPUT_SIZE, STEPS = "tanh", 3, None
        ''')
    result = _finish(_start(["check", "--timeout", "20", str(module)], tmp_path), tmp_path)
    assert result.returncode in (1, 2), result.stdout + result.stderr
    started = _wait_for(pids)
    try:
        assert _gone_soon(started), started
    finally:
        _kill(started)


def test_a_file_for_another_cell_is_told_the_cell(tmp_path):
    """An LSTM module graded without --cell: the hint names the cell, not the length; a hand-written
    function that looks up another cell's parameter is pointed at --cell too."""
    from symbolic.codegen import generate
    from symbolic.model import Model

    lstm = tmp_path / "lstm_module.py"
    lstm.write_text(generate(Model(cell="lstm", hidden=2, steps=3), "loop"))
    result = run_bptt("grade", str(lstm))
    assert result.returncode == 2 and "pass --cell lstm" in result.stderr and "--steps N" not in result.stderr
    hand = tmp_path / "hand.py"
    hand.write_text("def loss_and_grad(x, y, params):\n    return 0.0, {'W_i': params['W_i']}\n")
    result = run_bptt("grade", str(hand), "--cell", "gru")
    assert result.returncode == 2 and "pass --cell" in result.stderr and "--steps N" not in result.stderr
