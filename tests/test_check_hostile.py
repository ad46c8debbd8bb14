"""``bptt check`` against hostile and broken modules (issue 15: a checker must never pass a wrong
gradient), every case through the real command line.

Each module is a generated one with a few lines appended that wrap or replace its functions, so the
exact gradient is the oracle (finite differences and the complex step are the checker) and each
tampered parameter is a negative control: the report must name exactly that parameter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from symbolic.codegen import generate
from symbolic.model import Model

from .conftest import ROOT, run_bptt

SCALAR = ("w_i", "w_h", "w_o")
MATRIX = ("w_i", "w_h", "w_o", "b_h", "b_o")
LSTM = tuple(f"{family}_{gate}" for family in "WUb" for gate in "ifgo") + ("w_y",)
MODELS = {
    "scalar": Model(steps=3),
    "matrix": Model(steps=3, hidden=2, bias=True),
    "lstm": Model(cell="lstm", steps=2, hidden=1),
}
# A matrix module as one written against the positional form alone would be: ACTIVATION, HIDDEN_SIZE
# and BIAS, no CELL (nor ANALYTIC), so bptt check calls loss_and_grad(x, y, w_i, w_h, w_o, b_h=, b_o=);
# the generated module, which has CELL, is checked through its dict interface.
MODELS["positional"] = MODELS["matrix"]
WITHOUT_CELL = "del CELL, ANALYTIC, ACTIVATIONS\n"


def module(tmp_path, kind: str, appended: str = "", name: str = "m.py"):
    """A generated NumPy module with ``appended`` (dedented) after it."""
    path = tmp_path / name
    prefix = WITHOUT_CELL if kind == "positional" else ""
    path.write_text(generate(MODELS[kind], "unrolled") + "\n" + prefix + textwrap.dedent(appended))
    return path


def strict_json(text: str) -> dict:
    """The report, refusing NaN and Infinity, which are not JSON."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def failing(report: dict) -> set[str]:
    return {
        name
        for method, errors in report["errors"].items()
        for name, error in errors.items()
        if error is None or error > report["tolerances"][method]
    }


def one_line_error(result, *fragments) -> str:
    """Exit 2, one line on stderr (no traceback), nothing on stdout."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bptt: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- negative controls: every parameter, one at a time ----------------------------------------------

POSITIONAL_TAMPER = """
_exact_loss_and_grad = loss_and_grad


def loss_and_grad(*args, **kwargs):
    loss, *gradients = _exact_loss_and_grad(*args, **kwargs)
    gradients[{index}] = gradients[{index}] * {factor}
    return (loss, *gradients)
"""

DICT_TAMPER = """
_exact_loss_and_grad = loss_and_grad


def loss_and_grad(x, y, params):
    loss, grads = _exact_loss_and_grad(x, y, params)
    return loss, {{**grads, {name!r}: grads[{name!r}] * {factor}}}
"""

NAMES = {"scalar": SCALAR, "matrix": MATRIX, "positional": MATRIX, "lstm": LSTM}
#: The modules checked through the dict interface (the others through the positional form).
DICT_KINDS = ("matrix", "lstm")
TAMPERED = [(kind, name) for kind, names in NAMES.items() for name in names]


def test_the_interfaces_checked(tmp_path):
    """The generated matrix module is checked through its dict interface (and reported with its H and
    biases), the one without CELL through the positional form with b_h, b_o as keywords."""
    from symbolic.verify.check import check_module, load_module

    for kind in ("matrix", "positional"):
        checked = load_module(module(tmp_path, kind, name=f"{kind}.py"))
        assert hasattr(checked, "CELL") == (kind in DICT_KINDS)
        calls = []
        exact = checked.loss_and_grad

        def recording(*args, exact=exact, calls=calls, **kwargs):
            calls.append((len(args), tuple(sorted(kwargs))))
            return exact(*args, **kwargs)

        checked.loss_and_grad = recording
        report = check_module(checked, kind)
        assert report.passed and report.cell == "rnn" and (report.hidden, report.bias) == (2, True)
        want = (3, ()) if kind in DICT_KINDS else (5, ("b_h", "b_o"))
        assert calls and set(calls) == {want}


@pytest.mark.parametrize(("kind", "name"), TAMPERED)
def test_a_tampered_parameter_is_named_and_nothing_else(kind, name, tmp_path):
    names = NAMES[kind]
    if kind in DICT_KINDS:
        appended = DICT_TAMPER.format(name=name, factor=1.001)
    else:
        appended = POSITIONAL_TAMPER.format(index=names.index(name), factor=1.001)
    result = run_bptt("check", "--json", str(module(tmp_path, kind, appended)))
    assert result.returncode == 1, result.stdout + result.stderr
    report = strict_json(result.stdout)
    assert report["passed"] is False and failing(report) == {name}
    # 0.1 % of that gradient, measured by the complex step against the parameter's own size
    assert 5e-4 < report["errors"]["complex step"][name] < 2e-3
    assert all(report["compared"][method][name] > 0 for method in report["compared"])


@pytest.mark.parametrize("kind", list(NAMES))
def test_the_tamper_wrapper_alone_passes(kind, tmp_path):
    """The negative controls' wrapper with factor 1 changes nothing: the check passes."""
    if kind in DICT_KINDS:
        appended = DICT_TAMPER.format(name=NAMES[kind][-1], factor=1)
    else:
        appended = POSITIONAL_TAMPER.format(index=0, factor=1)
    result = run_bptt("check", "--json", str(module(tmp_path, kind, appended)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = strict_json(result.stdout)
    assert report["passed"] is True and not report["problems"] and not failing(report)


# -- returned values that cannot be compared: exit 1, named ---------------------------------------

SCALAR_WRAPPER = """
import numpy as np

_exact_loss_and_grad = loss_and_grad


def loss_and_grad(x, y, w_i, w_h, w_o):
    loss, dw_i, dw_h, dw_o = _exact_loss_and_grad(x, y, w_i, w_h, w_o)
    dw_i = np.array(dw_i)
{change}
    return {returned}
"""

UNCOMPARABLE = {
    # change (indented into the wrapper), returned, the parameter named, words in its report line
    "nan entry": ("    dw_i[1] = np.nan", "loss, dw_i, dw_h, dw_o", "w_i", ["NaN", "(1,)"]),
    "inf scalar": ("    dw_h = np.inf", "loss, dw_i, dw_h, dw_o", "w_h", ["inf"]),
    "wrong shape": ("    dw_i = dw_i[:2]", "loss, dw_i, dw_h, dw_o", "w_i", ["shape (2,)", "(3,)"]),
    "shape (1,)": ("    dw_o = np.array([dw_o])", "loss, dw_i, dw_h, dw_o", "w_o", ["shape (1,)"]),
    "float32": ("    dw_i = dw_i.astype(np.float32)", "loss, dw_i, dw_h, dw_o", "w_i", ["float32"]),
    "integers": ("    dw_i = np.zeros(3, dtype=int)", "loss, dw_i, dw_h, dw_o", "w_i", ["int"]),
    "complex": ("    dw_i = dw_i + 0j", "loss, dw_i, dw_h, dw_o", "w_i", ["complex"]),
    "a list": ("    dw_i = dw_i.tolist()", "loss, dw_i, dw_h, dw_o", "w_i", ["list", "not a NumPy array"]),
    "a string": ("    dw_h = str(dw_h)", "loss, dw_i, dw_h, dw_o", "w_h", ["str", "not a number"]),
    "None": ("    dw_o = None", "loss, dw_i, dw_h, dw_o", "w_o", ["None"]),
    "too few": ("    pass", "loss, dw_i, dw_h", None, ["3 values", "not the 4"]),
    "too many": ("    pass", "loss, dw_i, dw_h, dw_o, dw_o", None, ["5 values"]),
    "not a tuple": ("    pass", "dw_i", None, ["ndarray", "not the tuple"]),
    "nan loss": ("    loss = float('nan')", "loss, dw_i, dw_h, dw_o", "loss", ["loss", "nan"]),
}


@pytest.mark.parametrize("case", sorted(UNCOMPARABLE))
def test_uncomparable_gradients_fail_naming_the_parameter(case, tmp_path):
    change, returned, name, words = UNCOMPARABLE[case]
    path = module(tmp_path, "scalar", SCALAR_WRAPPER.format(change=change, returned=returned))
    text = run_bptt("check", str(path))
    assert text.returncode == 1, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[-1].startswith("FAILED") and "passed" not in text.stdout
    problems = [line.strip() for line in lines if line.strip().startswith("FAIL ")]
    assert problems, text.stdout
    if name is not None:
        assert any(line.startswith(f"FAIL {name}:") for line in problems), problems
    assert all(any(word in line for line in problems) for word in words), problems

    as_json = run_bptt("check", "--json", str(path))
    assert as_json.returncode == 1
    report = strict_json(as_json.stdout)
    assert report["passed"] is False and report["problems"]
    if name in SCALAR:
        # that parameter is not reported as compared; the others still are, and within tolerance
        assert failing(report) == {name}
        assert all(report["errors"][method][name] is None for method in report["errors"])
    elif name is None:  # a wrong count: no parameter could be compared
        assert failing(report) == set(SCALAR)
    else:  # the loss: every gradient was still compared, and agrees
        assert failing(report) == set()


def test_a_loss_that_is_nan_fails_every_parameter(tmp_path):
    """``loss`` (the finite differences' function) NaN everywhere: nothing can be compared."""
    path = module(tmp_path, "scalar", "def loss(x, y, w_i, w_h, w_o):\n    return float('nan')\n")
    result = run_bptt("check", "--json", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    report = strict_json(result.stdout)
    assert report["passed"] is False and failing(report) == set(SCALAR)
    assert any(problem.startswith("w_h: loss is NaN or inf") for problem in report["problems"])


DICT_WRAPPER = """
import numpy as np

_exact_loss_and_grad = loss_and_grad


def loss_and_grad(x, y, params):
    loss, grads = _exact_loss_and_grad(x, y, params)
    grads = dict(grads)
{change}
    return {returned}
"""

DICT_UNCOMPARABLE = {
    "missing": ("    del grads['b_f']", "loss, grads", {"b_f"}, "b_f: loss_and_grad returns no gradient"),
    "nan": ("    grads['U_o'] = grads['U_o'] * np.nan", "loss, grads", {"U_o"}, "U_o: the gradient is NaN"),
    "extra": ("    grads['v'] = grads['w_y']", "loss, grads", set(LSTM), "gradients for 'v'"),
    "a list": ("    pass", "loss, list(grads.values())", set(LSTM), "not a dict keyed like PARAMS"),
    "one value": ("    pass", "grads", set(LSTM), "not the pair (loss, grads)"),
}


@pytest.mark.parametrize("case", sorted(DICT_UNCOMPARABLE))
def test_dict_interface_uncomparable_gradients_fail(case, tmp_path):
    change, returned, names, words = DICT_UNCOMPARABLE[case]
    path = module(tmp_path, "lstm", DICT_WRAPPER.format(change=change, returned=returned))
    result = run_bptt("check", "--json", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    report = strict_json(result.stdout)
    assert report["passed"] is False and failing(report) == names
    assert any(words in problem for problem in report["problems"]), report["problems"]


# -- modules that cannot be checked: exit 2, one line ----------------------------------------------


@pytest.mark.parametrize(
    ("appended", "fragments"),
    [
        ("def loss_and_grad(*args):\n    return 1 / 0\n", ["loss_and_grad fails (ZeroDivisionError"]),
        ("def loss(*args):\n    raise RuntimeError('no\\nway')\n", ["loss fails (RuntimeError: no way)"]),
        ("import sys\ndef loss_and_grad(*args):\n    sys.exit(3)\n", ["loss_and_grad called sys.exit(3)"]),
        ("import sys\nsys.exit('bye')\n", ["calls sys.exit('bye') on import"]),
        ("raise KeyError('top level')\n", ["fails on import (KeyError"]),
        (
            "import os\ndef loss(*args):\n    os._exit(0)\n",
            ["ended the checking process (exit status 0) during loss"],
        ),
        (
            "import os, signal\ndef loss_and_grad(*args):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
            ["killed by signal SIGKILL", "during loss_and_grad"],
        ),
    ],
    ids=["raises", "raises-multiline", "sys-exit", "exit-on-import", "raises-on-import", "os-exit", "killed"],
)
def test_a_module_that_raises_exits_or_crashes_is_one_line(appended, fragments, tmp_path):
    path = module(tmp_path, "scalar", appended)
    one_line_error(run_bptt("check", str(path)), *fragments)
    one_line_error(run_bptt("check", "--json", str(path)), *fragments)


HANGS = {
    "sleeps": "import time\ndef loss_and_grad(*args):\n    time.sleep(10_000)\n",
    # swallows every exception and ignores SIGALRM: only ending the process stops it
    "stubborn": """
        import signal
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        def loss(*args):
            while True:
                try:
                    sum(range(10**6))
                except BaseException:
                    pass
        """,
    "on import": "import time\ntime.sleep(10_000)\n",
}


@pytest.mark.parametrize("case", sorted(HANGS))
def test_a_module_that_never_returns_is_stopped_by_the_time_limit(case, tmp_path):
    path = module(tmp_path, "scalar", HANGS[case])
    what = {"sleeps": "loss_and_grad", "stubborn": "loss", "on import": "its import"}[case]
    one_line_error(
        run_bptt("check", "--timeout", "1", str(path)), f"{what}", "did not return within 1 s", "--timeout"
    )


def test_the_time_limit_is_documented():
    result = run_bptt("check", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--timeout SECONDS" in text and "default: 60" in text
    assert "top-level code runs" in text


def test_prints_go_to_stderr_and_the_json_stays_clean(tmp_path):
    appended = """
        import sys
        print("hello from the top level")
        _exact_loss = loss


        def loss(*args, **kwargs):
            print("in loss")
            sys.stdout.write("{not json")
            return _exact_loss(*args, **kwargs)
        """
    path = module(tmp_path, "scalar", appended)
    result = run_bptt("check", "--json", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert strict_json(result.stdout)["passed"] is True
    assert "hello from the top level" in result.stderr and "in loss" in result.stderr


# -- bad constants and options: exit 2, one line ---------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "appended", "fragment"),
    [
        ("scalar", "STEPS = 'three'", "STEPS must be a positive whole number or None (any length)"),
        ("scalar", "STEPS = -4", "STEPS must be a positive whole number"),
        ("scalar", "INPUT_SIZE = 0", "INPUT_SIZE must be a positive whole number"),
        ("scalar", "INPUT_SIZE = 2.5", "INPUT_SIZE must be a positive whole number"),
        ("scalar", "ACTIVATION = 3", "ACTIVATION must name the activation"),
        ("scalar", "loss = 4", "loss must be a function"),
        ("matrix", "HIDDEN_SIZE = '2'", "HIDDEN_SIZE must be a positive whole number"),
        ("matrix", "BIAS = 'yes'", "BIAS must be True or False"),
        ("positional", "HIDDEN_SIZE = '2'", "HIDDEN_SIZE must be a positive whole number"),
        ("positional", "BIAS = 'yes'", "BIAS must be True or False"),
        ("positional", "ACTIVATION = 3", "ACTIVATION must name the activation"),
        ("scalar", "CELL = 'gru'", "defines CELL but lacks PARAMS, init_params"),
        ("lstm", "PARAMS = {**PARAMS, 'W_i': [1, 3]}", "PARAMS['W_i'] must be a shape, a tuple"),
        ("lstm", "PARAMS = {**PARAMS, 'W_i': (1, 0)}", "PARAMS['W_i'] must be a shape"),
        ("lstm", "PARAMS = [('W_i', (1, 3))]", "PARAMS must be a non-empty dict"),
        ("lstm", "ANALYTIC = 'yes'", "ANALYTIC must be True or False"),
        (
            "lstm",
            "def init_params(seed=0):\n    return {}",
            "init_params(0) must return a dict keyed like PARAMS",
        ),
        (
            "lstm",
            "init_params = lambda seed=0: {**_init(seed), 'w_y': [1, 2]}",
            "init_params(0)['w_y'] must be",
        ),
    ],
)
def test_bad_constants_are_one_line(kind, appended, fragment, tmp_path):
    if "_init(" in appended:
        appended = "_init = init_params\n" + appended
    one_line_error(run_bptt("check", str(module(tmp_path, kind, appended + "\n"))), fragment)


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--seed", "-1"], "the seed must be a whole number from 0, got '-1'"),
        (["--seed", "1.5"], "the seed must be a whole number"),
        (["--timeout", "0"], "the time limit must be a positive number of seconds"),
        (["--timeout", "abc"], "the time limit must be a positive number of seconds"),
        (["--timeout", "nan"], "the time limit must be a positive number of seconds"),
    ],
)
def test_bad_options_are_one_line(option, fragment):
    one_line_error(run_bptt("check", *option, str(ROOT / "generated" / "rnn_tanh_n3.py")), fragment)


# -- a cell the checker has never heard of ---------------------------------------------------------

BAG_CELL = '''
"""A user's cell with the dict interface: z = w · Σ_t x_t + c, L = mean(softplus(z) − y z)."""
import numpy as np

CELL = "bag"
STEPS = None
INPUT_SIZE = 3
ANALYTIC = True
PARAMS = {"w": (3,), "c": ()}


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.uniform(-0.5, 0.5, size=3), "c": np.array(0.0)}


def loss(x, y, params):
    z = np.asarray(x).sum(axis=1) @ params["w"] + params["c"]
    return np.mean(np.log1p(np.exp(z)) - y * z)


def loss_and_grad(x, y, params):
    totals = np.asarray(x).sum(axis=1)
    z = totals @ params["w"] + params["c"]
    error = 1 / (1 + np.exp(-z)) - y
    grads = {"w": {w_factor} * error @ totals / len(y), "c": np.array({c_factor} * np.mean(error))}
    return loss(x, y, params), grads
'''


@pytest.mark.parametrize(("tampered", "factors"), [(None, (1, 1)), ("w", (1.001, 1)), ("c", (1, 1.001))])
def test_a_users_cell_is_checked_per_parameter_name(tampered, factors, tmp_path):
    path = tmp_path / "bag.py"
    path.write_text(BAG_CELL.replace("{w_factor}", str(factors[0])).replace("{c_factor}", str(factors[1])))
    result = run_bptt("check", "--json", str(path))
    report = strict_json(result.stdout)
    assert report["cell"] == "bag" and set(report["errors"]) == {"finite differences", "complex step"}
    assert all(report["compared"][method][name] > 0 for method in report["compared"] for name in ("w", "c"))
    if tampered is None:
        assert result.returncode == 0 and report["passed"] is True, result.stdout
    else:
        assert result.returncode == 1 and failing(report) == {tampered}


# -- a Numba module, however it was first loaded -----------------------------------------------------

USE = """
import sys
import numpy as np
import m

x = np.eye(3)[[[0, 1, 2]]]
loss, dw_i, dw_h, dw_o = m.loss_and_grad(x, np.array([1.0]), np.ones(3), 0.5, -0.5)
assert np.isfinite(loss), loss
if sys.argv[1:] == ["check"]:  # then check it from this very script, both ways
    from symbolic.verify.check import check_module, load_module, run_check

    assert check_module(load_module("m.py"), "m.py").passed
    sys.exit(run_check("m.py"))
print("ok")
"""


def _script(directory, *args):
    return subprocess.run(
        [sys.executable, str(directory / "use.py"), *args],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("order", ["import first", "check first", "import then check in one script"])
def test_a_numba_module_works_however_it_was_first_loaded(order, tmp_path):
    pytest.importorskip("numba")
    (tmp_path / "m.py").write_text(generate(Model(steps=3), "loop", backend="numba"))
    (tmp_path / "use.py").write_text(USE)
    # the command runs from the repository, where "m" is not importable: only the cache can name it
    if order == "import first":
        first = _script(tmp_path)
        assert first.returncode == 0 and first.stdout.strip() == "ok", first.stderr
        checked = run_bptt("check", str(tmp_path / "m.py"))
        assert checked.returncode == 0 and checked.stdout.splitlines()[-1] == "passed", checked.stderr
    elif order == "check first":
        checked = run_bptt("check", str(tmp_path / "m.py"))
        assert checked.returncode == 0 and checked.stdout.splitlines()[-1] == "passed", checked.stderr
        second = _script(tmp_path)
        assert second.returncode == 0 and second.stdout.strip() == "ok", second.stderr
    else:
        both = _script(tmp_path, "check")
        assert both.returncode == 0 and both.stdout.splitlines()[-1] == "passed", both.stdout + both.stderr
        again = run_bptt("check", str(tmp_path / "m.py"))
        assert again.returncode == 0, again.stderr
    assert list((tmp_path / "__pycache__").glob("m.*.nbi")) or os.environ.get("NUMBA_CACHE_DIR")
