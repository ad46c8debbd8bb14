"""bptt grade and symbolic.testing.assert_bptt against hand-written implementations (tests/grading/).

Every wrong implementation is written by hand in plain NumPy, independently of the engine; grade must
name its mistake. Every right one (loops, vectorised, forward mode, PyTorch autograd) must pass.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from symbolic import UsageError
from symbolic.testing import assert_bptt
from symbolic.verify.grade import FunctionUnusable, grade_function, load_function, mistakes
from tests.conftest import run_bptt

GRADING = Path(__file__).resolve().parent / "grading"

#: file → (cell, hidden size)
RIGHT = {
    "rnn_right_loop.py": ("rnn", 1),
    "rnn_right_vectorised.py": ("rnn", 1),
    "rnn_right_forward_mode.py": ("rnn", 1),
    "rnn_right_torch.py": ("rnn", 1),
    "rnn3_right_loop.py": ("rnn", 3),
    "rnn3_right_torch.py": ("rnn", 3),
    "lstm_right.py": ("lstm", 3),
    "lstm_right_torch.py": ("lstm", 2),
    "gru_right.py": ("gru", 3),
    "gru_right_torch.py": ("gru", 2),
}
#: file → (cell, hidden size, the mistake grade must name, the localisation it must print)
WRONG = {
    "rnn_wrong_truncated.py": ("rnn", 1, "truncated", "right for n = 1, wrong from n = 2"),
    "rnn_wrong_no_fprime.py": ("rnn", 1, "no_activation_derivative_in_chain", "right for n = 1, wrong from n = 2"),
    "rnn_wrong_fprime_step.py": ("rnn", 1, "derivative_wrong_step_in_chain", "right for n = 1, wrong from n = 2"),
    "rnn_wrong_total_derivative.py": ("rnn", 1, "total_derivative", "right for n = 1, wrong from n = 2"),
    "rnn_wrong_no_mean.py": ("rnn", 1, "no_batch_mean", "right at B = 1 for every n, wrong for B > 1"),
    "rnn_wrong_sign.py": ("rnn", 1, "residual_sign", "wrong already at n = 1"),
    "rnn3_wrong_untransposed.py": ("rnn", 3, "untransposed", "right for n = 1, wrong from n = 2"),
    "lstm_wrong_carousel.py": ("lstm", 3, "no_direct_path", "right for n = 1, wrong from n = 2"),
    "gru_wrong_direct.py": ("gru", 2, "no_direct_path", "right for n = 1, wrong from n = 2"),
}


def _function(name: str):
    return load_function(GRADING / name)


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"graded_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_right_implementations_pass(name):
    cell, hidden = RIGHT[name]
    if "torch" in name:
        pytest.importorskip("torch")
    report = grade_function(_function(name), cell=cell, hidden=hidden)
    assert report.passed, report.format()
    assert all(f.worst_relative_error < 1e-12 for f in report.findings), report.format()
    assert_bptt(_function(name), cell=cell, hidden=hidden)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_implementations_are_named(name):
    cell, hidden, mistake, where = WRONG[name]
    report = grade_function(_function(name), cell=cell, hidden=hidden)
    assert not report.passed
    assert report.mistake == mistake, report.format()
    assert report.localisation.startswith(where), report.format()
    text = report.format()
    assert f"the mistake: {mistake}: {mistakes()[mistake]}" in text
    with pytest.raises(AssertionError, match=f"the mistake: {mistake}:"):
        assert_bptt(_function(name), cell=cell, hidden=hidden)


def test_the_catalogue_has_a_wrong_implementation_for_each_mistake():
    named = {mistake for _, _, mistake, _ in WRONG.values()}
    required = {"truncated", "no_activation_derivative_in_chain", "derivative_wrong_step_in_chain",
                "total_derivative", "untransposed", "no_batch_mean", "no_direct_path", "residual_sign"}
    assert required <= named <= set(mistakes())


def test_wrong_parameters_and_their_first_failing_length():
    report = grade_function(_function("rnn_wrong_truncated.py"))
    by_name = {f.parameter: f for f in report.findings}
    assert by_name["loss"].right and by_name["w_o"].right
    # w_i's long-term terms start at n = 2; w_h's at n = 3 (its term j = 1 has o_0 = 0)
    assert (by_name["w_i"].first_failing_steps, by_name["w_h"].first_failing_steps) == (2, 3)
    assert by_name["w_i"].entries == [(0,), (1,), (2,)]
    assert by_name["w_i"].worst_relative_error > 1e-2


def _scaled(function, name: str, factor: float):
    """function with dL/dname multiplied by factor."""
    def scaled(x, y, w_i, w_h, w_o):
        loss, dw_i, dw_h, dw_o = function(x, y, w_i, w_h, w_o)
        grads = {"w_i": dw_i, "w_h": dw_h, "w_o": dw_o}
        grads[name] = np.asarray(grads[name]) * factor
        return loss, grads["w_i"], grads["w_h"], grads["w_o"]
    return scaled


def test_tolerance_separates_rounding_from_a_mistake():
    right = _function("rnn_right_loop.py")
    assert grade_function(_scaled(right, "w_h", 1 + 1e-12)).passed
    report = grade_function(_scaled(right, "w_h", 1 + 1e-5))
    assert not report.passed
    assert [f.parameter for f in report.findings if not f.right] == ["w_h"]
    assert report.mistake is None
    # an error below 1e-4 sends the case to the 60-digit reference
    assert any(case.digits == 60 for case in report.cases)
    assert "not a known mistake" in report.format()


def test_a_mistake_in_one_parameter_only_is_named_for_it():
    right, truncated = _function("rnn_right_loop.py"), _function("rnn_wrong_truncated.py")

    def mixed(x, y, w_i, w_h, w_o):
        loss, dw_i, _, dw_o = right(x, y, w_i, w_h, w_o)
        return loss, dw_i, truncated(x, y, w_i, w_h, w_o)[2], dw_o

    report = grade_function(mixed)
    assert [(f.parameter, f.mistake) for f in report.findings if not f.right] == [("w_h", "truncated")]


def test_two_mistakes_at_once():
    truncated = _function("rnn_wrong_truncated.py")

    def flipped(x, y, w_i, w_h, w_o):
        loss, *grads = truncated(x, y, w_i, w_h, w_o)
        return (loss, *(-np.asarray(g) for g in grads))

    assert grade_function(flipped).mistake == "truncated + residual_sign"


def test_the_loss_is_graded_too():
    right = _function("rnn_right_loop.py")

    def summed(x, y, w_i, w_h, w_o):
        loss, *grads = right(x, y, w_i, w_h, w_o)
        return (loss * np.shape(x)[0], *grads)

    report = grade_function(summed)
    assert not report.passed
    assert report.findings[0].parameter == "loss" and report.findings[0].mistake == "loss_summed"
    assert report.localisation == "the gradients are right, the loss is not"


def test_returns_may_be_lists_and_arrays_of_any_dtype():
    right = _function("rnn3_right_loop.py")

    def listed(x, y, w_i, w_h, w_o):
        loss, *grads = right(x, y, w_i, w_h, w_o)
        return [np.float64(loss), *(np.asarray(g).tolist() for g in grads)]

    assert_bptt(listed, hidden=3)


def test_the_rnn_in_the_dict_interface():
    right = _function("rnn3_right_loop.py")

    def with_params(x, y, params):
        loss, dw_i, dw_h, dw_o = right(x, y, params["w_i"], params["w_h"], params["w_o"])
        return loss, {"w_i": dw_i, "w_h": dw_h, "w_o": dw_o}

    assert_bptt(with_params, hidden=3)


def test_generated_modules_pass():
    root = Path(__file__).resolve().parent.parent / "generated"
    assert_bptt(_module(root / "rnn_tanh_loop.py").loss_and_grad)
    unrolled = _module(root / "rnn_tanh_n3.py").loss_and_grad
    assert_bptt(unrolled, steps=3)
    # at another length the unrolled module raises: unusable, and the message says how to grade it
    with pytest.raises(AssertionError, match=r"raises ValueError at n = 1, B = 1: .*steps=N"):
        assert_bptt(unrolled)


def test_unusable_functions():
    right = _function("rnn_right_loop.py")
    with pytest.raises(FunctionUnusable, match=r"cannot be called as loss_and_grad\(x, y, w_i, w_h, w_o\)"):
        grade_function(lambda x, y: 0.0, name="loss_and_grad")
    with pytest.raises(FunctionUnusable, match="returns 3 values where 4 belong"):
        grade_function(lambda x, y, w_i, w_h, w_o: right(x, y, w_i, w_h, w_o)[:3])
    with pytest.raises(FunctionUnusable, match=r"dL/dw_i of shape \(2,\) where \(3,\) belongs"):
        grade_function(lambda x, y, w_i, w_h, w_o: (0.0, np.zeros(2), 0.0, 0.0))
    with pytest.raises(FunctionUnusable, match="gradients lack U_f"):
        grade_function(lambda x, y, params: (0.0, {k: v for k, v in params.items() if k != "U_f"}), cell="lstm")
    with pytest.raises(AssertionError, match="cannot grade: .* raises ZeroDivisionError at n = 1, B = 1"):
        assert_bptt(lambda x, y, w_i, w_h, w_o: 1 / 0)


def test_bad_options_are_usage_errors():
    right = _function("rnn_right_loop.py")
    with pytest.raises(UsageError, match="unknown cell"):
        assert_bptt(right, cell="transformer")
    with pytest.raises(UsageError, match="hidden size must be a positive whole number"):
        assert_bptt(right, hidden=0)


# -- the command line ----------------------------------------------------------------------------------


def test_cli_names_the_mistake_and_exits_1():
    result = run_bptt("grade", str(GRADING / "rnn_wrong_total_derivative.py"))
    assert result.returncode == 1, result.stderr
    assert "right for n = 1, wrong from n = 2: the long-term terms are wrong" in result.stdout
    assert "the mistake: total_derivative" in result.stdout
    assert "tolerance:" in result.stdout and "60 digits" in result.stdout


def test_cli_json():
    result = run_bptt("grade", str(GRADING / "lstm_wrong_carousel.py"), "--cell", "lstm", "--hidden", "2", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "wrong" and report["mistake"] == "no_direct_path"
    findings = {f["parameter"]: f for f in report["findings"]}
    assert findings["w_y"]["right"] and findings["loss"]["right"]
    assert findings["U_f"]["mistake"] == "no_direct_path"
    assert findings["W_i"]["first_failing_steps"] == 2
    assert len(findings["W_i"]["entries"]) == 6 and findings["W_i"]["worst_relative_error"] > 1e-3
    assert report["tolerance"]["relative"] == 1e-7


def test_cli_passes_a_right_file():
    result = run_bptt("grade", str(GRADING / "gru_right.py"), "--cell", "gru", "--hidden", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "right: every entry within 1e-07" in result.stdout


def test_cli_unusable_input_exits_2(tmp_path):
    raising = tmp_path / "raising.py"
    raising.write_text("def loss_and_grad(x, y, w_i, w_h, w_o):\n    raise RuntimeError('not written yet')\n")
    result = run_bptt("grade", str(raising))
    assert result.returncode == 2
    assert "loss_and_grad raises RuntimeError at n = 1, B = 1: not written yet" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

    result = run_bptt("grade", str(raising), "--function", "backward")
    assert result.returncode == 2 and "has no function backward (it defines loss_and_grad)" in result.stderr


# -- the worked example of docs/grading.md -------------------------------------------------------------------


def test_readme_worked_example_is_what_grade_prints():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "docs" / "grading.md").read_text(encoding="utf-8")
    source = (root / "docs" / "grading" / "notes_by_hand.py").read_text(encoding="utf-8")
    code = source[source.index("def loss_and_grad"):source.index("    return loss, dw_i, dw_h, dw_o")]
    assert code in readme
    report = grade_function(load_function(root / "docs" / "grading" / "notes_by_hand.py"))
    report.source = "docs/grading/notes_by_hand.py"
    assert f"$ bptt grade docs/grading/notes_by_hand.py\n{report.format()}\n```" in readme
    assert report.mistake == "total_derivative"


def test_readme_worked_example_fixed_passes(tmp_path):
    root = Path(__file__).resolve().parent.parent
    source = (root / "docs" / "grading" / "notes_by_hand.py").read_text(encoding="utf-8")
    fixed = source.replace(" + w_h * do_dw_i[-1]", "").replace(" + w_h * do_dw_h[-1]", "")
    assert fixed != source
    (tmp_path / "fixed.py").write_text(fixed, encoding="utf-8")
    assert_bptt(load_function(tmp_path / "fixed.py"))


def test_cli_json_stays_json_when_the_file_prints(tmp_path):
    noisy = tmp_path / "noisy.py"
    noisy.write_text(
        f"import sys\nsys.path.insert(0, {str(GRADING)!r})\nprint('imported')\n"
        "from rnn_wrong_sign import loss_and_grad as wrong\n\n"
        "def loss_and_grad(*arguments):\n    print('called')\n    return wrong(*arguments)\n"
    )
    result = run_bptt("grade", str(noisy), "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["mistake"] == "residual_sign"
    assert "imported" in result.stderr and "called" in result.stderr


# -- a graded file that hangs, exits, crashes or prints: one child process, a time limit per call ------


def one_line_error(result, *fragments) -> str:
    """Exit 2, one line on stderr (no traceback), nothing on stdout."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bptt: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


HOSTILE = {
    "sleeps": (
        "import time\n\ndef loss_and_grad(x, y, w_i, w_h, w_o):\n    time.sleep(10_000)\n",
        ["loss_and_grad did not return within 2 s, so the grading was stopped", "raise --timeout"],
    ),
    "sleeps on import": (
        "import time\ntime.sleep(10_000)\n",
        ["its import (the top-level code) did not return within 2 s"],
    ),
    "os-exit": (
        "import os\n\ndef loss_and_grad(x, y, w_i, w_h, w_o):\n    os._exit(3)\n",
        ["the file ended the grading process (exit status 3) during loss_and_grad"],
    ),
    "killed": (
        "import os, signal\n\ndef loss_and_grad(x, y, w_i, w_h, w_o):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        ["ended the grading process (killed by signal SIGKILL) during loss_and_grad"],
    ),
    "sys-exit": (
        "import sys\n\ndef loss_and_grad(x, y, w_i, w_h, w_o):\n    sys.exit(0)\n",
        ["loss_and_grad called sys.exit(0) at n = 1, B = 1: a graded function must return its values, not exit"],
    ),
    "sys-exit on import": ("import sys\nsys.exit(3)\n", ["fails on import (SystemExit: 3)"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_cli_a_file_that_hangs_exits_or_crashes_is_one_line(case, tmp_path):
    source, fragments = HOSTILE[case]
    path = tmp_path / "hostile.py"
    path.write_text(source)
    for json_flag in (["--json"],) if "sleeps" in case else ([], ["--json"]):
        result = run_bptt("grade", "--timeout", "2", *json_flag, str(path))
        line = one_line_error(result, *fragments)
        assert line.startswith(f"bptt: error: {path}") or "sys.exit(0)" in line


def test_cli_the_time_limit_is_per_call_and_validated(tmp_path):
    # 31 calls of 0.2 s each: 6 s in all, more than the limit of 2 s, but each call is within it
    slow = tmp_path / "slow.py"
    slow.write_text(
        f"import sys, time\nsys.path.insert(0, {str(GRADING)!r})\n"
        "from rnn_right_loop import loss_and_grad as right\n\n"
        "def loss_and_grad(*arguments):\n    time.sleep(0.2)\n    return right(*arguments)\n"
    )
    result = run_bptt("grade", "--timeout", "2", str(slow))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "right: every entry within 1e-07" in result.stdout
    for value in ("0", "abc", "nan"):
        one_line_error(run_bptt("grade", "--timeout", value, str(slow)),
                       f"the time limit must be a positive number of seconds, got {value!r}")
    text = " ".join(run_bptt("grade", "--help").stdout.split())
    assert "--timeout SECONDS" in text and "default: 60" in text


def test_cli_json_stays_json_when_the_file_writes_to_stdout(tmp_path):
    """Python's print, sys.stdout.write and a raw write to file descriptor 1, on import and in every call:
    all of it goes to stderr, stdout holds the JSON alone."""
    noisy = tmp_path / "noisy.py"
    noisy.write_text(
        f"import os, sys\nsys.path.insert(0, {str(GRADING)!r})\n"
        "print('{imported')\nos.write(1, b'[raw import')\n"
        "from rnn_right_loop import loss_and_grad as right\n\n"
        "def loss_and_grad(*arguments):\n"
        "    print('called')\n    sys.stdout.write('{not json')\n    os.write(1, b'raw call]')\n"
        "    return right(*arguments)\n"
    )
    result = run_bptt("grade", str(noisy), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "right"
    assert all(text in result.stderr for text in ("{imported", "[raw import", "called", "{not json", "raw call]"))


def test_assert_bptt_stays_in_process_and_names_an_exit():
    import os

    pid = os.getpid()

    def exits(x, y, w_i, w_h, w_o):
        assert os.getpid() == pid  # called in this process
        raise SystemExit(4)

    with pytest.raises(AssertionError, match=r"cannot grade: .*called sys.exit\(4\) at n = 1, B = 1"):
        assert_bptt(exits)
