"""``bptt check``: passes good modules, rejects a 0.1% error, names bad files in one line."""

from __future__ import annotations

import json

import pytest

from symbolic.codegen import generate
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.verify.check import run_check

from .conftest import ACTIVATION_NAMES, ROOT, run_bptt

TAMPER = ("    dw_h = ", "    dw_h = 1.001 * ")


def write_module(tmp_path, activation="tanh", mode="loop", steps=4, tamper=False):
    source = generate(Model(steps=steps, activation=activation), mode)
    if tamper:
        assert source.count(TAMPER[0]) == 1
        source = source.replace(*TAMPER)
    path = tmp_path / f"rnn_{activation}_{mode}{'_tampered' if tamper else ''}.py"
    path.write_text(source)
    return path


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_good_modules_pass_and_tampered_fail(activation, mode, tmp_path, capsys):
    assert run_check(write_module(tmp_path, activation, mode)) == 0
    good = capsys.readouterr().out
    assert "passed" in good and "w_h" in good
    assert ("skipped" in good) == (activation == "relu")
    assert run_check(write_module(tmp_path, activation, mode, tamper=True)) == 1
    bad = capsys.readouterr().out
    assert "FAIL" in bad
    # the error is reported against w_h, at about the 0.1% introduced
    row = next(line for line in bad.splitlines() if line.strip().startswith("finite differences"))
    assert 5e-4 < float(row.split()[3]) < 2e-3


def test_json_report(tmp_path, capsys):
    assert run_check(write_module(tmp_path), as_json=True, seed=3) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True and report["activation"] == "tanh"
    assert set(report["errors"]) == {"finite differences", "complex step"}
    assert set(report["errors"]["complex step"]) == {"w_i", "w_h", "w_o"}
    assert report["errors"]["complex step"]["w_h"] < 1e-10


def test_bad_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        run_check(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def (\n")
    with pytest.raises(UsageError, match="syntax error"):
        run_check(broken)
    other = tmp_path / "other.py"
    other.write_text("x = 1\n")
    with pytest.raises(UsageError, match="generated interface"):
        run_check(other)
    with pytest.raises(UsageError, match="seed"):
        run_check(write_module(tmp_path), seed="one")


def test_command_line(tmp_path):
    good = run_bptt("check", str(ROOT / "generated" / "rnn_tanh_n3.py"))
    assert good.returncode == 0, good.stderr
    assert "complex step" in good.stdout and "passed" in good.stdout
    tampered = run_bptt("check", str(write_module(tmp_path, "tanh", "unrolled", 3, tamper=True)))
    assert tampered.returncode == 1 and "FAILED" in tampered.stdout
    missing = run_bptt("check", str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    as_json = run_bptt("check", "--json", "--seed", "5", str(ROOT / "generated" / "rnn_tanh_loop.py"))
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["passed"] is True


def test_a_file_imports_the_files_beside_it_as_python_runs_it(tmp_path):
    """wrapper.py does ``import my_module`` from its own folder: checked from another working directory
    it passes (its folder is first on sys.path, as when Python runs it); and only a file bptt codegen
    wrote is told to regenerate itself."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_module.py").write_text(generate(Model(steps=3), "loop"))
    (folder / "wrapper.py").write_text("from my_module import *  # noqa\nfrom my_module import _BLOCK  # noqa\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_bptt("check", str(folder / "wrapper.py"), cwd=elsewhere)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("passed"), result.stdout + result.stderr
    # a hand-written file that fails on import is told to fix itself, not to regenerate
    (folder / "mine.py").write_text("import not_a_module_anywhere\n")
    result = run_bptt("check", str(folder / "mine.py"), cwd=elsewhere)
    assert result.returncode == 2 and "fix the file" in result.stderr and "regenerate" not in result.stderr
    # a generated file that no longer imports is told to regenerate
    broken = folder / "broken.py"
    broken.write_text(generate(Model(steps=3), "loop") + "\nimport not_a_module_anywhere\n")
    result = run_bptt("check", str(broken), cwd=elsewhere)
    assert result.returncode == 2 and "regenerate the module with 'bptt codegen'" in result.stderr


def test_a_slow_first_call_says_so_on_stderr(tmp_path):
    """A call that runs past check.SLOW_CALL (a Numba module compiling) gets one progress line on stderr,
    never on stdout; a quick module gets none (the negative control)."""
    (tmp_path / "quick.py").write_text(generate(Model(steps=3), "loop"))
    (tmp_path / "slow.py").write_text(
        "import time\nfrom quick import *  # noqa\nfrom quick import loss_and_grad as _fast\n_first = [True]\n\n"
        "def loss_and_grad(*args):\n    if _first:\n        _first.clear()\n        time.sleep(2.5)\n"
        "    return _fast(*args)\n"
    )
    slow = run_bptt("check", str(tmp_path / "slow.py"))
    assert slow.returncode == 0, slow.stderr
    lines = [line for line in slow.stderr.splitlines() if line.startswith("bptt check: loss_and_grad has run")]
    assert len(lines) == 1 and "compiles" in lines[0] and "bptt check:" not in slow.stdout
    quick = run_bptt("check", str(tmp_path / "quick.py"))
    assert quick.returncode == 0 and "has run" not in quick.stderr
