"""bptt grade --readout every: many-to-many implementations written here (tests/grade_cases/), graded by
the command line against the engine's exact derivation.

The right cases are first held to finite differences of their own loss (so a grade that passes them
could not pass a wrong gradient by sharing its mistake), the wrong ones are held away from them (the
negative control); then grade must pass the right ones and name the wrong ones' mistakes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_bptt

CASES = Path(__file__).resolve().parent / "grade_cases"
MINCHAR = ("grade_cases/minchar_every.py", "--readout", "every", "--loss", "softmax", "--classes", "4", "--bias")
SQUARED = ("grade_cases/squared_every.py", "--readout", "every", "--loss", "mse", "--reduction", "all")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, CASES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _point(loss: str, seed: int = 1, batch: int = 3, steps: int = 5, hidden: int = 3, inputs: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, inputs))
    params = {"w_i": rng.normal(0, 0.6, (hidden, inputs)), "w_h": rng.normal(0, 0.6, (hidden, hidden))}
    if loss == "softmax":
        params |= {"b_h": rng.normal(0, 0.6, hidden), "w_o": rng.normal(0, 0.6, (4, hidden)),
                   "b_o": rng.normal(0, 0.6, 4)}
        y = rng.integers(0, 4, size=(batch, steps))
    else:
        params["w_o"] = rng.normal(0, 0.6, hidden)
        y = rng.normal(size=(batch, steps))
    return x, y, params


def _finite_differences(fn, x, y, params, step=1e-6) -> dict:
    """Central differences of fn's own loss, entry by entry."""
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            moved = {k: v.copy() for k, v in params.items()}
            moved[name][index] += step
            up = fn(x, y, moved)[0]
            moved[name][index] -= 2 * step
            grad[index] = (up - fn(x, y, moved)[0]) / (2 * step)
        grads[name] = grad
    return grads


@pytest.mark.parametrize(("case", "loss", "right", "wrong"), [
    ("minchar_every", "softmax", "loss_and_grad", ("loss_and_grad_no_carry", "loss_and_grad_no_target")),
    ("minchar_every", "softmax", "loss_and_grad_last_only", ()),
    ("squared_every", "mse", "loss_and_grad", ("loss_and_grad_half",)),
    ("squared_every", "mse", "loss_and_grad_summed", ()),
])
def test_the_cases_against_finite_differences(case, loss, right, wrong):
    """``right``: its gradient is its own loss's; each of ``wrong`` is off its own loss's derivative."""
    module = _module(case)
    x, y, params = _point(loss)
    numeric = _finite_differences(getattr(module, right), x, y, params)
    _, grads = getattr(module, right)(x, y, params)
    for name in params:
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-8)
    for name in wrong:
        _, grads = getattr(module, name)(x, y, params)
        numeric = _finite_differences(getattr(module, name), x, y, params)
        assert any(not np.allclose(grads[k], numeric[k], rtol=1e-4, atol=1e-6) for k in params), name


def test_the_consistent_wrong_cases_compute_another_loss():
    """last_only and summed differentiate their own loss rightly; their loss is not the graded one's:
    by hand, the summed one is n times the mean over B·n, the last step's term is below the sum of all."""
    x, y, params = _point("mse", steps=5)
    squared = _module("squared_every")
    assert squared.loss_and_grad_summed(x, y, params)[0] == pytest.approx(5 * squared.loss_and_grad(x, y, params)[0])
    x, y, params = _point("softmax", steps=5)
    minchar = _module("minchar_every")
    assert minchar.loss_and_grad_last_only(x, y, params)[0] < minchar.loss_and_grad(x, y, params)[0]


@pytest.mark.parametrize(("arguments", "function"), [
    (MINCHAR, "loss_and_grad"),
    (MINCHAR + ("--unbatched",), "loss_and_grad_one_sequence"),
    (SQUARED, "loss_and_grad"),
])
def test_right_cases_pass(arguments, function):
    result = run_bptt("grade", *_at_tests(arguments), "--function", function)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "right: every entry within 1e-07" in result.stdout
    assert "after every step" in result.stdout


@pytest.mark.parametrize(("arguments", "function", "mistake", "where"), [
    (MINCHAR, "loss_and_grad_no_carry", "truncated", "wrong: right for n = 1, wrong from n = 2: the long-term terms"),
    (MINCHAR, "loss_and_grad_no_target", "softmax_without_target", "wrong: wrong already at n = 1"),
    (SQUARED, "loss_and_grad_half", "squared_error_half", None),
    (SQUARED, "loss_and_grad_summed", "reduction_steps", "where the two reductions agree, wrong from n = 2 by the factor n"),
])
def test_wrong_cases_are_named(arguments, function, mistake, where):
    result = run_bptt("grade", *_at_tests(arguments), "--function", function)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the mistake: {mistake}: " in result.stdout
    if where:
        assert where in result.stdout


def test_the_carry_missing_is_located_in_time_as_json():
    result = run_bptt("grade", *_at_tests(MINCHAR), "--function", "loss_and_grad_no_carry", "--json")
    data = json.loads(result.stdout)
    assert data["outputs"] == "--readout every --loss softmax --classes 4"
    findings = {f["parameter"]: f for f in data["findings"]}
    assert findings["loss"]["right"] and findings["w_o"]["right"] and findings["b_o"]["right"]
    assert findings["w_i"]["first_failing_steps"] == 2 and not findings["w_i"]["right"]
    # a diagnosis of the notes' readout only is not claimed (nor tried)
    assert data["mistake"] == "truncated" and "total_derivative" not in data["also_consistent_with"]


def test_a_many_to_one_function_is_named_last_step_only():
    """The readout after the last step only, graded as one after every step."""
    result = run_bptt("grade", *_at_tests(MINCHAR), "--function", "loss_and_grad_last_only")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the mistake: last_step_only: " in result.stdout
    assert "wrong: right for n = 1, where the last step is the only one" in result.stdout


@pytest.mark.parametrize(("extra", "words"), [
    (("--loss", "mse", "--classes", "4"), "--classes is the K of --loss softmax"),
    (("--loss", "softmax", "--classes", "1"), "--classes must be a whole number K >= 2"),
    (("--loss", "mse", "--forward", "f", "--backward", "b"), "a forward/backward pair"),
])
def test_bad_options_are_one_line(extra, words):
    result = run_bptt("grade", str(CASES / "squared_every.py"), "--readout", "every", *extra)
    assert result.returncode == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _at_tests(arguments: tuple) -> tuple:
    return (str(CASES.parent / arguments[0]), *arguments[1:])


def test_the_docs_example_is_the_command_output():
    command = ("grade", "tests/grade_cases/minchar_every.py", *MINCHAR[1:], "--function", "loss_and_grad_no_carry")
    result = run_bptt(*command)
    page = (CASES.parent.parent / "docs" / "grading.md").read_text(encoding="utf-8")
    assert f"$ bptt {' '.join(command)}\n{result.stdout}```" in page


def test_assert_bptt_takes_the_outputs():
    from symbolic.outputs import Outputs
    from symbolic.testing import assert_bptt

    squared = _module("squared_every")
    outputs = Outputs(readout="every", loss="mse", reduction="all")
    assert_bptt(squared.loss_and_grad, outputs=outputs)
    with pytest.raises(AssertionError, match="the mistake: squared_error_half"):
        assert_bptt(squared.loss_and_grad_half, outputs=outputs)
