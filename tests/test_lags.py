"""Lags in the cell spec (``cell.lag(s, K)``, s_(t−K)) and the built-in skip cell (``--cell skip --skip K``).

The engine's gradient is compared with PyTorch's autodiff of the same equations written here (float64),
the proof (``derive --verify``) is run at n ≤ K and n > K and on a copy-state cell file, and the proof's
negative control is checked to be one that the sizes proved can see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symbolic.cells import builtin, load_cell
from symbolic.cells.spec import Cell, sigmoid, tanh
from symbolic.cli.common import derivation_for
from symbolic.engine import derivation as engine
from symbolic.engine import oracle
from symbolic.errors import UsageError
from symbolic.model import Model

from .conftest import run_bptt

torch = pytest.importorskip("torch")
CELL_FILES = Path(__file__).resolve().parent.parent / "docs" / "cells"
ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "identity": lambda z: z}


def _point(d, hidden, inputs, batch, steps, seed=1):
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(size=shape) * 0.7 for name, shape in d.shapes(hidden, inputs).items()}
    return params, rng.normal(size=(batch, steps, inputs)), rng.integers(0, 2, batch).astype(float)


def _torch_skip(params, x, y, skip, activation, bias):
    """The skip RNN from its equations: o_t = f(w_i x_t + w_h o_(t−1) + w_s o_(t−K) [+ b_h]), o_t = 0 for t ≤ 0."""
    p = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    x = torch.tensor(x, dtype=torch.float64)
    batch, steps, _ = x.shape
    hidden = p["w_o"].shape[0]
    o = [torch.zeros(batch, hidden, dtype=torch.float64)]
    for t in range(1, steps + 1):
        back = o[t - skip] if t - skip >= 0 else torch.zeros(batch, hidden, dtype=torch.float64)
        a = x[:, t - 1] @ p["w_i"].T + o[t - 1] @ p["w_h"].T + back @ p["w_s"].T
        o.append(ACTIVATIONS[activation](a + p["b_h"] if bias else a))
    z = o[steps] @ p["w_o"] + (p["b_o"] if bias else 0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y, dtype=torch.float64))
    loss.backward()
    return loss.item(), {name: value.grad.numpy() for name, value in p.items()}


def _document(model):
    from symbolic.typeset.cells import document

    return document(model, derivation_for(model), "md")


@pytest.mark.parametrize(("skip", "steps", "activation", "bias"), [
    (3, 8, "tanh", False), (2, 5, "sigmoid", True), (4, 9, "relu", True), (10, 23, "tanh", True),
    (5, 3, "tanh", False),   # K ≥ n: the skip path carries nothing
])
def test_skip_gradient_equals_torch(skip, steps, activation, bias):
    d = engine.derive_cell(builtin("skip", activation=activation, bias=bias, skip=skip))
    params, x, y = _point(d, 3, 2, 4, steps)
    values = engine.evaluate(d, params, x, y)
    loss, expected = _torch_skip(params, x, y, skip, activation, bias)
    assert abs(float(values.loss) - loss) < 1e-10
    assert set(values.gradients) == set(expected) == set(d.parameters)
    for name, gradient in expected.items():
        np.testing.assert_allclose(values.gradients[name], gradient, rtol=0, atol=1e-10, err_msg=name)
    if steps > skip:
        assert np.abs(values.gradients["w_s"]).max() > 1e-3   # the skip path carries gradient


def test_a_lagged_cell_file_with_several_lags_and_an_elementwise_read_equals_torch(tmp_path):
    """Two lags of one state (2 and 3), one read elementwise through a gate: δs_t receives from t + 1,
    t + 2 and t + 3."""
    cell = Cell("lagged", readout="w_y")
    x, h = cell.input(), cell.state("h")
    W, U, S, G = cell.matrix("W", "H", "D"), cell.matrix("U"), cell.matrix("S"), cell.matrix("G", "H", "D")
    g = cell.let("g", sigmoid(G @ x))
    cell.update(h, tanh(W @ x + U @ h + S @ cell.lag(h, 3)) + g * cell.lag(h, 2))
    d = engine.derive_cell(cell)
    assert d.lags == {"h": (1, 2, 3)} and d.max_lag == 3 and d.path_steps == 4
    params, x_values, y = _point(d, 2, 3, 3, 9, seed=4)
    values = engine.evaluate(d, params, x_values, y)
    p = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    xt = torch.tensor(x_values)
    hs = [torch.zeros(3, 2, dtype=torch.float64)]
    for t in range(1, 10):
        def back(k, t=t):
            return hs[t - k] if t - k >= 0 else torch.zeros(3, 2, dtype=torch.float64)
        gate = torch.sigmoid(xt[:, t - 1] @ p["G"].T)
        hs.append(torch.tanh(xt[:, t - 1] @ p["W"].T + hs[t - 1] @ p["U"].T + back(3) @ p["S"].T) + gate * back(2))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(hs[-1] @ p["w_y"], torch.tensor(y))
    loss.backward()
    for name in params:
        np.testing.assert_allclose(values.gradients[name], p[name].grad.numpy(), rtol=0, atol=1e-10, err_msg=name)
    # the state Jacobian per lag: the elementwise read is a direct path of lag 2, S a path of lag 3
    assert sp.simplify(d.lag_jacobian[("h", "h", 2)][0] - sp.Symbol("g")) == 0
    assert d.lag_jacobian[("h", "h", 3)][0] == 0 and len(d.lag_jacobian[("h", "h", 3)][1]) == 1


def test_the_lag_is_data_the_stages_can_read():
    d = engine.derive_cell(builtin("skip", skip=4))
    assert d.lagged == {("o", 4): sp.Symbol("o_lag4")}
    assert d.lags == {"o": (1, 4)} and d.leaf("o", 1) == d.previous["o"] and d.leaf("o", 4) == sp.Symbol("o_lag4")
    adjoint = d.sent_at("o", 4)
    assert adjoint.expr == 0 and [matrix for matrix, _ in adjoint.transposed] == ["w_s"]
    assert [matrix for matrix, _ in d.sent_at("o", 1).transposed] == ["w_h"]
    assert set(d.lag_jacobian) == {("o", "o", 1), ("o", "o", 4)}
    assert d.state_jacobian == {("o", "o"): d.lag_jacobian[("o", "o", 1)]}
    assert list(d.parameters) == ["w_i", "w_h", "w_s", "w_o"]
    biased = builtin("skip", bias=True, skip=2)
    assert list(biased.parameters) == ["w_i", "w_h", "w_s", "b_h", "w_o", "b_o"]


def test_the_spec_refuses_bad_lags():
    cell = Cell("c")
    h = cell.state("h")
    assert cell.lag(h, 1) is h and cell.lag("h", 3) is cell.lag(h, 3)
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(UsageError, match="whole number of steps"):
            cell.lag(h, bad)
    with pytest.raises(UsageError, match="not a state"):
        cell.lag("g", 2)
    with pytest.raises(UsageError, match="lagged state"):
        cell.let("h_lag2", h)


# -- the proof --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 5])
def test_skip_is_proved_at_sizes_where_its_skip_path_exists(steps):
    """n ≤ K and n > K alike: the proof runs where o_(t−K) reaches an update (n ≥ K + 1), and its
    negative control (the skip path removed) is rejected there."""
    report = oracle.verify(derivation_for(model := Model(cell="skip", skip=3, steps=steps)), model)
    assert report.passed, oracle.format_report(report)
    sizes = {check.kind: check.name for check in report.checks}
    assert "n = 4" in sizes["exact"] and "n = 4" in sizes["numeric"]
    assert report.control.mutation == "no_lag_path" and report.control.rejected and not report.control.invisible
    assert not report.note


def test_a_wrong_lagged_derivation_is_a_disagreement():
    d = engine.derive_cell(builtin("skip", skip=3))
    report = oracle.verify(d.mutate("no_lag_path"), control=False)
    assert not report.passed


def test_the_copy_state_skip_cell_is_proved():
    """The issue's cell: o1' = o, o2' = o1, w_s @ o2. Its w_s path exists from n = 4 only; at n = 3 the
    control removed a path that did not exist yet and a right derivation was reported wrong."""
    d = engine.derive_cell(load_cell(CELL_FILES / "skip_copy.py"))
    assert d.path_steps == 4
    report = oracle.verify(d, steps=3)
    assert report.passed and report.control.rejected, oracle.format_report(report)
    assert all("n = 4" in check.name for check in report.checks if check.kind != "local")
    assert not report.control.invisible


def test_a_path_beyond_the_sizes_proved_is_said_not_reported_as_a_disagreement(monkeypatch):
    """With the sizes capped below K + 1 the skip path's removal is invisible: the report says so (and
    picks a control that is visible) instead of failing a right derivation."""
    monkeypatch.setattr(oracle, "MAX_PATH_STEPS", 3)
    monkeypatch.setattr(oracle, "EXACT_PATH_STEPS", 3)
    report = oracle.verify(derivation_for(model := Model(cell="skip", skip=5, steps=3)), model)
    text = oracle.format_report(report)
    assert report.passed, text
    assert "from n = 6" in text and "not covered" in text
    assert report.control.mutation != "no_lag_path" and report.control.rejected


# -- the command line ----------------------------------------------------------------------------------------------


def test_cli_proves_the_skip_cell_and_refuses_bad_values():
    run = run_bptt("derive", "--cell", "skip", "--skip", "3", "--verify")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PROVED" in run.stdout and "no_lag_path" in run.stdout
    for args, message in [
        (("derive", "--cell", "skip", "--skip", "1"), "plain RNN"),
        (("derive", "--cell", "skip", "--skip", "0"), "K >= 2"),
        (("derive", "--cell", "skip", "--skip", "two"), "whole number"),
        (("derive", "--cell", "skip"), "--skip K"),
        (("derive", "--cell", "gru", "--skip", "3"), "does not apply"),
        (("analyze", "--cell", "lstm", "--skip", "3", "--steps", "4"), "does not apply"),
        (("codegen", "--cell", "skip", "--skip", "3"), "does not handle lagged states"),
        (("train", "--cell", "skip", "--skip", "3", "--epochs", "1"), "does not handle lagged states"),
        (("grade", "nothing.py", "--cell", "skip", "--skip", "3"), "does not handle lagged states"),
    ]:
        run = run_bptt(*args)
        assert run.returncode == 2 and run.stdout == "", (args, run.stdout, run.stderr)
        assert len(run.stderr.splitlines()) == 1 and message in run.stderr, (args, run.stderr)


# -- analyze --cell skip --------------------------------------------------------------------------------------------


def test_analyze_skip_gap_norms_equal_torch_jacobians():
    """‖∂o_n/∂o_j‖₂ per gap against torch.autograd's Jacobian of o_n with o_j made a leaf (every path through
    o_j, the other states held); the single-step part against the product of diag(1 − o_k²) w_h."""
    from symbolic.study import cell_analysis

    K, n, H = 3, 9, 3
    result = cell_analysis.analyze_cell(model := Model(cell="skip", skip=K, hidden=H), derivation_for(model), steps=n,
                                           seed=2)
    p = {name: torch.tensor(np.asarray(value, dtype=float)) for name, value in result.params.items()}
    from symbolic.study.data import encode

    x = torch.tensor(encode(result.words))
    zero = torch.zeros(H, dtype=torch.float64)

    def run(j=None, leaf=None):
        o = [zero]
        for t in range(1, n + 1):
            value = torch.tanh(p["w_i"] @ x[t - 1] + p["w_h"] @ o[t - 1] + p["w_s"] @ (o[t - K] if t >= K else zero))
            o.append(leaf if t == j else value)
        return o

    states = [value.detach() for value in run()]
    for j in range(1, n + 1):
        jacobian = torch.autograd.functional.jacobian(lambda leaf, j=j: run(j, leaf)[n], states[j]).numpy()
        expected = np.linalg.norm(jacobian, 2)
        assert result.norms("o")[j - 1] == pytest.approx(expected, rel=1e-9), j
        single = np.eye(H)
        for k in range(n, j, -1):
            single = single @ (np.diag(1 - states[k].numpy() ** 2) @ result.params["w_h"])
        assert 10 ** result.log10["skips"][j - 1, 0] == pytest.approx(np.linalg.norm(single, 2), rel=1e-9), j
    shares = result.path_shares()
    assert np.allclose(shares.sum(axis=1), 1)
    assert result.shortest() == [cell_analysis.shortest_path(n - j, (1, K)) for j in range(1, n + 1)]
    assert result.shortest()[:3] == [4, 3, 2]   # gaps 8, 7, 6 with K = 3: 2 + 2, 2 + 1, 2 skips


def test_analyze_skip_cli_table_and_json():
    run = run_bptt("analyze", "--cell", "skip", "--skip", "3", "--steps", "8", "--hidden", "2")
    assert run.returncode == 0, run.stderr
    assert "skip share" in run.stdout and "factors" in run.stdout and "RNN |Π|" in run.stdout
    run = run_bptt("analyze", "--cell", "skip", "--skip", "3", "--steps", "8", "--hidden", "2", "--json")
    import json

    data = json.loads(run.stdout)
    assert set(data["growth_per_step"]) == {"o", "rnn"}
    assert data["lags"] == [1, 3] and data["shortest_path_factors"][0] == 3   # gap 7 = 3 + 3 + 1
    assert len(data["path_norms_by_skips"]) == 8


# -- the document ---------------------------------------------------------------------------------------------------


def test_the_document_shows_what_step_t_plus_k_sends_and_when_the_skip_path_carries_nothing():

    long = _document(Model(cell="skip", skip=3, steps=5, hidden=2))
    assert r"\text{through the weights, from step } t+3" in long
    assert r"w_{s}^{T} \boldsymbol{\delta}\mathbf{a}_{o,t+3}" in long
    assert r"\frac{\partial \mathbf{o}_{t}}{\partial \mathbf{o}_{t-3}}" in long
    assert "carries nothing" not in long and "--skip 3 --verify" in long
    short = _document(Model(cell="skip", skip=3, steps=3, hidden=2))
    assert "the skip path carries nothing" in short and "from $n = 4$ on" in short
    plain = _document(Model(cell="gru", steps=3))
    assert "from step } t+3" not in plain and "carries nothing" not in plain and "step $n + 1$ equal to" in plain
