"""Nested activations: 30 levels derive, generate and pass ``bptt check``, and the work grows linearly.

The cost once grew about 3× per level of f(f(…)) (11 nested tanh took 84 s, 30 never finished):
SymPy's tanh asked whether its argument is real by splitting it into real and imaginary parts, which
doubles at each level. Not timed: the depth-30 module is generated in a subprocess stopped after
minutes (the old code needed longer than the age of the universe), its gradient compared with central
differences of a forward pass written here in NumPy; the growth is counted in Python calls.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from symbolic.cells import load_cell
from symbolic.engine.derivation import derive_cell

from .conftest import ROOT, run_bptt

DEPTH = 30
HIDDEN, INPUTS, STEPS = 2, 3, 3


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


#: name → (activations from the innermost level out, per-unit scale c inside every level); a σ level is
#: 2σ(·) − 1, centred like tanh
CASES = {"tanh": (("tanh",) * DEPTH, False), "tanh_sigmoid_scaled": (("tanh", "sigmoid") * (DEPTH // 2), True)}
#: c starts at 1.2 in the module's init_params: (2σ(c u) − 1)′ = c/2 at 0, so 30 levels neither vanish
#: nor saturate
INIT = ', init={"c": 1.2}'
NUMPY = {"tanh": np.tanh, "sigmoid": _sigmoid}


def _cell_source(activations, scaled: bool) -> str:
    body = "W @ x + U @ h + b"
    for activation in activations:
        body = f"{activation}(c * ({body}))" if scaled else f"{activation}({body})"
        body = f"2 * {body} - 1" if activation == "sigmoid" else body
    return (
        "from symbolic.cells.spec import Cell, sigmoid, tanh\n\n"
        f'cell = Cell("nested", readout="w_y"{INIT if scaled else ""})\n'
        'x, h = cell.input(), cell.state("h")\n'
        'W, U, b = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H"), cell.vector("b")\n'
        + ('c = cell.vector("c")\n' if scaled else "")
        + f"cell.update(h, {body})\n\nCELL = cell\n"
    )


def _loss(params, x, y, activations, scaled: bool) -> float:
    """The mean binary cross-entropy of the nested cell, written from its equations (the oracle)."""
    h = np.zeros((x.shape[0], HIDDEN))
    for t in range(x.shape[1]):
        value = x[:, t] @ params["W"].T + h @ params["U"].T + params["b"]
        for activation in activations:
            value = NUMPY[activation](params["c"] * value if scaled else value)
            value = 2 * value - 1 if activation == "sigmoid" else value
        h = value
    z = h @ params["w_y"]
    return float(np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y)))


def _central_differences(params, x, y, activations, scaled, step=1e-6) -> dict:
    gradients = {}
    for name, value in params.items():
        gradient = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {key: array.copy() for key, array in params.items()}
            shifted[name][index] = value[index] + step
            up = _loss(shifted, x, y, activations, scaled)
            shifted[name][index] = value[index] - step
            gradient[index] = (up - _loss(shifted, x, y, activations, scaled)) / (2 * step)
        gradients[name] = gradient
    return gradients


@pytest.mark.parametrize("case", CASES)
def test_thirty_nested_activations_generate_and_match_central_differences(tmp_path, case):
    activations, scaled = CASES[case]
    cell_file, module_file = tmp_path / "nested.py", tmp_path / "nested_module.py"
    cell_file.write_text(_cell_source(activations, scaled))
    command = [sys.executable, "-m", "symbolic", "codegen", "--cell", str(cell_file), "--steps", str(STEPS),
               "--hidden", str(HIDDEN), "-o", str(module_file)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bptt codegen of {DEPTH} nested activations did not finish in 300 s")
    assert done.returncode == 0, done.stderr

    spec = importlib.util.spec_from_file_location("nested_module", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(7)
    params = {name: rng.uniform(-0.8, 0.8, shape) for name, shape in module.PARAMS.items()}
    if scaled:  # c ≈ 1.2 as INIT says
        params["c"] = rng.uniform(1.1, 1.3, module.PARAMS["c"])
    x, y = rng.normal(size=(4, STEPS, INPUTS)), np.array([0.0, 1.0, 1.0, 0.0])
    loss, gradients = module.loss_and_grad(x, y, params)
    assert loss == pytest.approx(_loss(params, x, y, activations, scaled), rel=1e-12)
    expected = _central_differences(params, x, y, activations, scaled)
    for name, value in expected.items():
        assert np.abs(value).max() > 1e-6, name  # every parameter's gradient is exercised
        np.testing.assert_allclose(gradients[name], value, rtol=1e-5, atol=1e-8, err_msg=name)

    # bptt check passes both: where its finite differences cannot resolve a gradient through 30
    # alternating σ and tanh levels (their estimates at three steps disagree more than with the gradient),
    # it says so and the complex step compares it
    checked = run_bptt("check", str(module_file))
    assert checked.returncode == 0 and checked.stdout.rstrip().endswith("passed"), checked.stdout + checked.stderr
    if scaled:  # the negative control: U's gradient 0.1 % off fails, by the complex step at least
        tampered = tmp_path / "tampered.py"
        source = module_file.read_text()
        tampered.write_text(source + '\n_right = loss_and_grad\n\n\ndef loss_and_grad(x, y, params):\n'
                            '    loss, grads = _right(x, y, params)\n    return loss, {**grads, "U": grads["U"] * 1.001}\n')
        failed = run_bptt("check", str(tampered))
        assert failed.returncode == 1 and "FAIL U" in failed.stdout, failed.stdout + failed.stderr


def _python_calls(tmp_path, depth: int) -> int:
    """Python function calls made to load and derive a cell of ``depth`` nested tanh (SymPy's cache
    cleared first, so no depth is served from another's)."""
    path = tmp_path / f"nested_{depth}.py"
    path.write_text(_cell_source(("tanh",) * depth, scaled=False))
    sp.core.cache.clear_cache()
    calls = 0

    def count(frame, event, argument):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        derive_cell(load_cell(path))
    finally:
        sys.setprofile(None)
    return calls


def test_the_work_grows_linearly_with_the_nesting_depth(tmp_path):
    _python_calls(tmp_path, 2)  # SymPy's first-use set-up is not part of either count
    four, eight = _python_calls(tmp_path, 4), _python_calls(tmp_path, 8)
    # Linear: twice the depth, under twice the work plus set-up (it was 28× from 4 to 8 levels).
    assert eight < 2.5 * four, (four, eight)
