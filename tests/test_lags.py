"""Lags in the cell spec (``cell.lag(s, K)``, s_(t−K)) and the built-in skip cell (``--cell skip --skip K``).

The engine's gradient and the generated modules' (NumPy and Numba, unrolled and loop, n ≤ K and n > K)
are compared with PyTorch's autodiff of the same equations written here (float64); the proof
(``derive --verify``) is run at n ≤ K and n > K and on a copy-state cell file, and the proof's negative
control is checked to be one that the sizes proved can see; ``check`` passes the generated modules and
rejects one that drops what step t + K sends; ``grade`` names a missing skip path; ``train`` learns
``--data long`` with the skip cell.
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
from symbolic.engine import evaluate as evaluation
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
    values = evaluation.evaluate(d, params, x, y)
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
    values = evaluation.evaluate(d, params, x_values, y)
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
    two = Cell("two")
    x, c = two.input(), two.state("c")
    two.state("d")
    new = two.update(c, two.matrix("W", "H", "D") @ x)
    with pytest.raises(UsageError, match="is the new value c_t of state c .*pass the state itself"):
        two.lag(new, 2)   # c_t, not the state: was "c is not a state", which it is
    with pytest.raises(UsageError, match="new value"):
        two.lag(two.new(c), 2)
    assert two.lag(c, 2) == sp.Symbol("c_lag2") and two.lag("d", 2) == sp.Symbol("d_lag2")
    # a whole number of another type (NumPy's, SymPy's) is the same lag, named by the plain int
    assert cell.lag(h, np.int64(3)) is cell.lag(h, 3) and cell.lag(h, sp.Integer(3)) is cell.lag(h, 3)
    assert cell.lags == {("h", 3): sp.Symbol("h_lag3")} and type(next(iter(cell.lags))[1]) is int
    for bad in (np.float64(3.0), sp.Rational(5, 2), np.bool_(True)):
        with pytest.raises(UsageError, match="whole number of steps"):
            cell.lag(h, bad)
    assert cell.lag(h, 10**18) == sp.Symbol(f"h_lag{10**18}")
    with pytest.raises(UsageError, match="10\\^18"):
        cell.lag(h, 10**18 + 1)
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
        (("codegen", "--cell", "skip", "--steps", "4"), "--skip K"),
        (("train", "--cell", "skip", "--skip", "1", "--epochs", "1"), "plain RNN"),
        (("train", "--cell", "skip", "--skip", "3", "--lr", "0.1,0"), "positive"),
        (("grade", "nothing.py", "--cell", "skip", "--skip", "0"), "K >= 2"),
        # beyond the generated Numba code's 64-bit t − K, t mod K (a module that failed on its first call)
        (("codegen", "--cell", "skip", "--skip", str(10**30), "--steps", "3", "--backend", "numba"), "10^18"),
        (("train", "--cell", "skip", "--skip", str(10**18 + 1), "--epochs", "1"), "10^18"),
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


# -- generated code -------------------------------------------------------------------------------------------------

GATED_SKIP = CELL_FILES / "gated_skip.py"


def _torch_gated_skip(params, x, y):
    """docs/cells/gated_skip.py from its equations: g = σ(W_g x + U_g h + b_g), n = tanh(W_n x + U_n h + S h_(t−2)),
    h' = g ⊙ n + (1 − g) ⊙ h_(t−3), h_t = 0 for t ≤ 0, ŷ = σ(w_yᵀ h_n)."""
    p = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    x = torch.tensor(x, dtype=torch.float64)
    batch, steps, _ = x.shape
    zero = torch.zeros(batch, p["w_y"].shape[0], dtype=torch.float64)
    h = [zero]
    for t in range(1, steps + 1):
        def back(k, t=t):
            return h[t - k] if t - k >= 0 else zero
        g = torch.sigmoid(x[:, t - 1] @ p["W_g"].T + h[t - 1] @ p["U_g"].T + p["b_g"])
        n = torch.tanh(x[:, t - 1] @ p["W_n"].T + h[t - 1] @ p["U_n"].T + back(2) @ p["S"].T)
        h.append(g * n + (1 - g) * back(3))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(h[steps] @ p["w_y"], torch.tensor(y))
    loss.backward()
    return loss.item(), {name: value.grad.numpy() for name, value in p.items()}


def _assert_module_equals_torch(module, d, steps, batches, oracle, hidden=3, inputs=3, terms=False):
    """loss_and_grad (and with ``terms`` bptt_terms' per-step terms, summed) against ``oracle`` to 1e-10, at each
    batch width of ``batches`` (the widths reach the modules' code paths)."""
    for seed, batch in enumerate(batches):
        params, x, y = _point(d, hidden, inputs, batch, steps, seed=seed + 7)
        loss, grads = module.loss_and_grad(x, y, params)
        want_loss, want = oracle(params, x, y)
        assert abs(loss - want_loss) < 1e-10, (steps, batch)
        assert set(grads) == set(want)
        for name, gradient in want.items():
            np.testing.assert_allclose(grads[name], gradient, rtol=0, atol=1e-10, err_msg=f"{name} n={steps} B={batch}")
        if terms:
            summed = module.bptt_terms(x, y, params)["terms"]
            for name, term in summed.items():
                np.testing.assert_allclose(term.sum(axis=(0, 1)) / batch, want[name], rtol=0, atol=1e-10, err_msg=name)
        assert np.abs(want[next(iter(want))]).max() > 0


def _skip(skip, activation, bias):
    def oracle(params, x, y):
        return _torch_skip(params, x, y, skip, activation, bias)
    return oracle


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize(("skip", "steps", "activation", "bias"), [
    (3, 8, "tanh", False), (3, 4, "tanh", True), (2, 6, "sigmoid", True), (4, 9, "relu", True),
    (3, 3, "tanh", False), (5, 2, "tanh", True), (2, 1, "sigmoid", False),   # n ≤ K: the skip path carries nothing
])
def test_the_generated_numpy_skip_module_equals_torch(mode, skip, steps, activation, bias):
    """Both modes, n > K and n ≤ K; B = 1400 takes the per-step weight gradients (B·H ≥ 4096)."""
    from symbolic.codegen import load

    model = Model(cell="skip", skip=skip, steps=steps, hidden=3, activation=activation, bias=bias)
    d = derivation_for(model)
    module = load(model, mode, derivation=d)
    _assert_module_equals_torch(module, d, steps, (4, 1400), _skip(skip, activation, bias), terms=True)


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("steps", [2, 3, 7])
def test_a_lagged_cell_files_numpy_module_equals_torch(mode, steps):
    """Two lags of one state, one through a matrix, one elementwise through a gate (docs/cells/gated_skip.py)."""
    from symbolic.codegen import load

    model = Model(cell=str(GATED_SKIP), steps=steps, hidden=3)
    d = derivation_for(model)
    assert d.lags == {"h": (1, 2, 3)}
    _assert_module_equals_torch(load(model, mode, derivation=d), d, steps, (3, 800), _torch_gated_skip, terms=True)


FAR = 10**18   # the longest lag a cell may read: a ring of K rows of (B, H) would be beyond any memory


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
def test_a_lag_far_beyond_the_sequence_needs_no_ring_of_k_rows(mode):
    """--skip 10**18 is a valid cell (the skip path carries nothing): its NumPy module allocates min(K, n + 1)
    rows per ring, not K, and its gradient is torch's (B = 1400 also takes the per-step weight gradients)."""
    from symbolic.codegen import load

    model = Model(cell="skip", skip=FAR, steps=3, hidden=3, bias=True)
    d = derivation_for(model)
    _assert_module_equals_torch(load(model, mode, derivation=d), d, 3, (4, 1400), _skip(FAR, "tanh", True), terms=True)


@pytest.mark.slow
def test_a_lag_far_beyond_the_sequence_in_the_numba_modules():
    from symbolic.codegen import load

    for mode in ("loop", "unrolled"):
        model = Model(cell="skip", skip=FAR, steps=3, hidden=3)
        d = derivation_for(model)
        _assert_module_equals_torch(load(model, mode, backend="numba", derivation=d), d, 3, (5, 400),
                                    _skip(FAR, "tanh", False))


#: Two states, each read by the other at a lag, x mapped into both (two maps of x that are not stacked).
CROSS = """from symbolic.cells.spec import Cell, sigmoid, tanh
cell = Cell("cross", readout="w_y", readout_state="b2")
x, a, b = cell.input(), cell.state("a1"), cell.state("b2")
W, V, P, Q = cell.matrix("W", "H", "D"), cell.matrix("V", "H", "D"), cell.matrix("P"), cell.matrix("Q")
cell.update(a, tanh(W @ x + P @ cell.lag(b, 2)))
cell.update(b, sigmoid(V @ x + Q @ cell.lag(a, 3)) * cell.lag(b, 4) + cell.new(a) * a)
CELL = cell
"""


def _torch_cross(params, x, y):
    p = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    xt = torch.tensor(x)
    zero = torch.zeros(x.shape[0], p["w_y"].shape[0], dtype=torch.float64)
    a, b = [zero], [zero]
    for t in range(1, x.shape[1] + 1):
        def back(s, k, t=t):
            return s[t - k] if t >= k else zero
        a.append(torch.tanh(xt[:, t - 1] @ p["W"].T + back(b, 2) @ p["P"].T))
        b.append(torch.sigmoid(xt[:, t - 1] @ p["V"].T + back(a, 3) @ p["Q"].T) * back(b, 4) + a[t] * a[t - 1])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(b[-1] @ p["w_y"], torch.tensor(y))
    loss.backward()
    return loss.item(), {name: value.grad.numpy() for name, value in p.items()}


def test_the_numba_module_names_only_its_own_helpers(tmp_path):
    """The NumPy statements a Numba module carries (bptt_terms) call the helpers under their prefix
    (_numpy_split): an undefined _split was a NameError in bptt_terms (ruff's F821 finds it)."""
    import subprocess
    import sys

    from symbolic.codegen import generate

    (cell := tmp_path / "cross.py").write_text(CROSS)
    (module := tmp_path / "cross_numba.py").write_text(generate(Model(cell=str(cell), steps=6, hidden=2), "loop",
                                                                backend="numba"))
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", str(module)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("steps", [2, 4, 5])
def test_straight_line_code_allocates_no_ring_no_step_uses(steps, tmp_path):
    """Unrolled at n ≤ K no step sends K steps back: the ring of that lag was an unused local (ruff F841 in a
    module that must be ruff-clean); lags 2, 3, 4 at n = 2 (none used), 4 (lag 4 not), 5 (all)."""
    import subprocess
    import sys

    from symbolic.codegen import generate

    (cell := tmp_path / "cross.py").write_text(CROSS)
    model = Model(cell=str(cell), steps=steps, hidden=2)
    (module := tmp_path / "cross_unrolled.py").write_text(generate(model, "unrolled"))
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", str(module)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    from symbolic.codegen import load

    d = derivation_for(model)
    _assert_module_equals_torch(load(model, "unrolled", derivation=d), d, steps, (3,), _torch_cross, hidden=2,
                                terms=True)


@pytest.mark.slow
def test_the_numba_module_of_a_two_state_lagged_cell_equals_torch_with_its_bptt_terms(tmp_path):
    from symbolic.codegen import load

    (cell := tmp_path / "cross.py").write_text(CROSS)
    model = Model(cell=str(cell), steps=6, hidden=3)
    d = derivation_for(model)
    for backend in ("numpy", "numba"):
        module = load(model, "loop", backend=backend, derivation=d)
        for steps in (3, 9):
            _assert_module_equals_torch(module, d, steps, (4, 70), _torch_cross, terms=True)


@pytest.mark.slow
def test_the_numba_skip_modules_equal_torch():
    """The loop module (one for every n) over n ≤ K and n > K and every driver: compiled (B = 5), several chunks
    (B = 70), several spans of steps (B = 120, n = 40), the BLAS drivers (B = 400, also over several spans); the
    unrolled module at n > K and n = K."""
    from symbolic.codegen import load

    for steps in (2, 3, 8, 40):
        model = Model(cell="skip", skip=3, steps=steps, hidden=3, bias=True)
        module = load(model, "loop", backend="numba", derivation=derivation_for(model))
        _assert_module_equals_torch(module, derivation_for(model), steps, (5, 70, 120, 400), _skip(3, "tanh", True))
    for steps in (8, 3):
        model = Model(cell="skip", skip=3, steps=steps, hidden=3)
        module = load(model, "unrolled", backend="numba", derivation=derivation_for(model))
        _assert_module_equals_torch(module, derivation_for(model), steps, (5, 400), _skip(3, "tanh", False))


@pytest.mark.slow
def test_a_lagged_cell_files_numba_module_equals_torch():
    from symbolic.codegen import load

    for steps in (2, 9, 30):
        model = Model(cell=str(GATED_SKIP), steps=steps, hidden=3)
        d = derivation_for(model)
        _assert_module_equals_torch(load(model, "loop", backend="numba", derivation=d), d, steps, (5, 70, 400),
                                    _torch_gated_skip)


def test_the_layout_of_a_lag_is_data():
    """A state group per (state, K), the steps that read the initial 0 (t ≤ K), receive (t + K ≤ n) and send
    (t > K), and a ring of K rows per lag; a cell without lags has none of them."""
    from symbolic.codegen.layout import layout_of

    lay = layout_of(engine.derive_cell(builtin("skip", skip=3)))
    assert [(g.operand, g.kind, g.matrices) for g in lay.groups] == [
        ("x", "x", ("w_i",)), ("o_prev", "state", ("w_h",)), ("o_lag3", "state", ("w_s",))]
    assert lay.reads == {"o_prev": ("o", 1), "o_lag3": ("o", 3)} and lay.lag(lay.groups[2]) == 3
    assert [(state, lag) for state, lag, _ in lay.rings] == [("o", 3)]
    steps = lay.forward_order(5)
    assert [step.reads_zero(3) for step in steps] == [True, True, True, False, False]
    assert [step.receives(3) for step in steps] == [True, True, False, False, False]
    assert [step.sends(3) for step in steps] == [False, False, False, True, True]
    loop = lay.forward_order(None)[0]
    assert not loop.reads_zero(3) and loop.receives(3) and loop.sends(3)
    plain = layout_of(engine.derive_cell(builtin("rnn")))
    assert plain.rings == () and set(plain.reads) == {"o_prev"}


def _module_file(tmp_path, model, mode, backend="numpy", tamper=None):
    from symbolic.codegen import generate

    source = generate(model, mode, backend=backend, derivation=derivation_for(model))
    if tamper:
        assert tamper[0] in source
        source = source.replace(*tamper)
    path = tmp_path / f"module_{mode}_{backend}{'_tampered' if tamper else ''}.py"
    path.write_text(source)
    return path


#: What step t + K sent, dropped where step t adds it: the δ then receives from step t + 1 only.
DROP_LAG = ("delta_o_in = delta_o_in + delta_o_lag3[", "delta_o_in = delta_o_in + 0 * delta_o_lag3[")


@pytest.mark.parametrize(("mode", "steps"), [("unrolled", 6), ("loop", 6), ("unrolled", 3)])
def test_check_passes_the_skip_module_and_rejects_one_without_its_skip_path(mode, steps, tmp_path, capsys):
    from symbolic.verify.check import run_check

    model = Model(cell="skip", skip=3, steps=steps, hidden=2, bias=True)
    assert run_check(_module_file(tmp_path, model, mode)) == 0
    assert "passed" in capsys.readouterr().out
    if steps > 3:   # the negative control: at n > K the skip path carries gradient, and check sees it dropped
        assert run_check(_module_file(tmp_path, model, mode, tamper=DROP_LAG)) == 1
        assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
def test_check_sees_a_lag_longer_than_its_own_lengths(backend, tmp_path, capsys):
    """K = 50 is beyond every length check tries by itself (at most 41): the loop module declares the length
    from which its lag's path exists (CHECK_PATHS), so check rejects a module that drops what step t + K
    sends, on every driver (negative control), and passes the module itself."""
    from symbolic.verify.check import run_check

    model = Model(cell="skip", skip=50, steps=6, hidden=2)
    drop = {"numpy": ("delta_o_in = delta_o_in + delta_o_lag50[", "delta_o_in = delta_o_in + 0 * delta_o_lag50["),
            "numba": ("+ incoming[1 + t % 50, b, k]", "+ 0 * incoming[1 + t % 50, b, k]")}[backend]
    assert run_check(_module_file(tmp_path, model, "loop", backend)) == 0
    assert "every lag's path" in capsys.readouterr().out
    assert run_check(_module_file(tmp_path, model, "loop", backend, tamper=drop)) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if "FAIL" in line and " × " in line]
    assert failed and all("× 51" in line and "every lag's path" in line for line in failed), failed


def test_check_passes_a_lagged_cell_files_module(tmp_path, capsys):
    from symbolic.verify.check import run_check

    assert run_check(_module_file(tmp_path, Model(cell=str(GATED_SKIP), steps=7, hidden=2), "loop")) == 0
    assert "passed" in capsys.readouterr().out


@pytest.mark.slow
def test_check_passes_the_numba_skip_module(capsys):
    """The file ``load`` wrote for test_the_numba_skip_modules_equal_torch's loop module (generate's source for
    the model at n = 1): its float64 kernels are compiled once, cached on disk beside it for check's process."""
    from symbolic.codegen import load
    from symbolic.verify.check import run_check

    model = Model(cell="skip", skip=3, steps=6, hidden=3, bias=True)
    path = load(model, "loop", backend="numba", derivation=derivation_for(model)).__file__
    assert run_check(path) == 0
    assert "passed" in capsys.readouterr().out


def test_grade_passes_the_skip_module_and_names_a_missing_skip_path():
    from symbolic.codegen import load
    from symbolic.verify.grade import grade_function

    model = Model(cell="skip", skip=3, steps=4, hidden=2)
    d = derivation_for(model)
    right = load(model, "loop", derivation=d).loss_and_grad
    assert grade_function(lambda x, y, params: right(x, y, params), cell="skip", skip=3, hidden=2).passed
    wrong = d.mutate("no_lag_path")
    report = grade_function(lambda x, y, params: evaluation.evaluate(wrong, params, x, y).as_float(), cell="skip",
                            skip=3, hidden=2)
    assert not report.passed and report.mistake == "no_lag_path"


def test_grade_sees_a_skip_path_longer_than_its_lengths(tmp_path):
    """K = 30: the skip path exists only from n = 31 on, past grade's lengths 1..8, 12, 20; a function that
    drops it (a torch oracle with w_s's path cut where it sends back, and the tampered module) is wrong there."""
    import importlib.util

    from symbolic.verify.grade import grade_function

    model = Model(cell="skip", skip=30, steps=4, hidden=2)
    drop = ("delta_o_in = delta_o_in + delta_o_lag30[", "delta_o_in = delta_o_in + 0 * delta_o_lag30[")
    spec = importlib.util.spec_from_file_location("tampered", _module_file(tmp_path, model, "loop", tamper=drop))
    spec.loader.exec_module(tampered := importlib.util.module_from_spec(spec))
    report = grade_function(tampered.loss_and_grad, cell="skip", skip=30, hidden=2)
    assert not report.passed and report.mistake == "no_lag_path"

    def detached(params, x, y):
        """torch's gradient with o_(t−K) detached: w_s's own term kept, nothing sent back K steps."""
        p = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
        xt, zero = torch.tensor(x), torch.zeros(x.shape[0], 2, dtype=torch.float64)
        o = [zero]
        for t in range(1, x.shape[1] + 1):
            back = o[t - 30].detach() if t >= 30 else zero
            o.append(torch.tanh(xt[:, t - 1] @ p["w_i"].T + o[t - 1] @ p["w_h"].T + back @ p["w_s"].T))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(o[-1] @ p["w_o"], torch.tensor(y))
        loss.backward()
        return loss.item(), {name: value.grad.numpy() for name, value in p.items()}

    assert not grade_function(lambda x, y, params: detached(params, x, y), cell="skip", skip=30, hidden=2).passed
    assert grade_function(lambda x, y, params: _torch_skip(params, x, y, 30, "tanh", False), cell="skip", skip=30,
                          hidden=2).passed


def test_the_module_header_regenerates_the_module(tmp_path, monkeypatch):
    """The command in a skip module's header (its K, activation and bias) writes the same bytes again."""
    import shlex

    from symbolic.cli import main
    from symbolic.codegen import generate

    model = Model(cell="skip", skip=4, steps=6, hidden=2, activation="relu", bias=True)
    source = generate(model, "loop", output="skip.py", derivation=derivation_for(model))
    words = shlex.split(source.splitlines()[1].lstrip("# "))
    assert words[:2] == ["bptt", "codegen"] and "--skip" in words and "relu" in words and "--bias" in words
    monkeypatch.chdir(tmp_path)
    assert main(words[1:]) == 0
    assert (tmp_path / "skip.py").read_text() == source


def test_train_learns_the_long_task_with_the_skip_cell():
    """The issue's target: held-out accuracy ≥ 0.9 on --data long with K = 10 (the defaults of every cell but
    the plain RNN: H = 16, Adam η = 0.03, 80 epochs, clip-norm 1)."""
    from symbolic.study import data, train

    dataset, held_out = data.load("long")
    result = train.train(dataset, train.Config(cell="skip", skip=10), held_out=held_out)
    assert result.diverged_at is None and result.accuracy >= 0.9, result.accuracy
    assert set(result.weights.as_dict()) == {"w_i", "w_h", "w_s", "w_o"}


def test_train_lr_rows_for_the_skip_cell():
    import json

    run = run_bptt("train", "--cell", "skip", "--skip", "3", "--lr", "0.01,0.1", "--data", "long", "--epochs", "5",
                   "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["settings"]["cell"] == "skip" and report["settings"]["skip"] == 3
    assert [row["lr"] for row in report["rates"]] == [0.01, 0.1]
    assert all(row["diverged_at"] is None and 0 <= row["accuracy"] <= 1 for row in report["rates"])


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
def test_bptt_terms_deltas_are_torchs_state_gradients(mode):
    """δo_t = ∂L_b/∂o_t (each sequence's own loss), which totals what steps t + 1 and t + K send."""
    from symbolic.codegen import load

    skip, steps, hidden, batch = 3, 8, 3, 4
    model = Model(cell="skip", skip=skip, steps=steps, hidden=hidden)
    d = derivation_for(model)
    params, x, y = _point(d, hidden, model.inputs, batch, steps, seed=5)
    deltas = load(model, mode, derivation=d).bptt_terms(x, y, params)["deltas"]["o"]
    p = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    inputs, zero = torch.tensor(x), torch.zeros(batch, hidden, dtype=torch.float64)
    o = [zero]
    for t in range(1, steps + 1):
        o.append(torch.tanh(inputs[:, t - 1] @ p["w_i"].T + o[t - 1] @ p["w_h"].T
                            + (o[t - skip] if t >= skip else zero) @ p["w_s"].T))
        o[-1].retain_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(o[steps] @ p["w_o"], torch.tensor(y), reduction="sum").backward()
    want = np.stack([o[t].grad.numpy() for t in range(1, steps + 1)], axis=1)
    np.testing.assert_allclose(deltas, want, rtol=0, atol=1e-12)
