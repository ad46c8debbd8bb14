"""bptt analyze with a loss at every step: ∂L/∂θ split by the gap t − j each part crosses (study/reach).

The oracle is truncated BPTT in PyTorch, from the cell's own equations (tests/export_cases.reference):
the gradient of L_t when the state before step t − G is a constant holds exactly the parts of gap ≤ G,
so the part of gap G is the difference of two truncations, summed over t."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.engine.derivation import derive_model
from symbolic.model import Model
from symbolic.outputs import Outputs
from symbolic.study import reach

from .conftest import ROOT
from .conftest import run_bptt as run_cli
from .export_cases import reference

torch = pytest.importorskip("torch")

FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "exp": torch.exp}
MGU = str(ROOT / "docs" / "cells" / "mgu.py")
#: Each cell with one of the losses and reductions, so that every loss and both reductions are met.
CASES = (
    ("rnn", Outputs("every", "softmax", 3, "steps")),
    ("lstm", Outputs("every", "mse", None, "all")),
    ("gru", Outputs("every", "bce", None, "steps")),
    (MGU, Outputs("every", "softmax", 4, "all")),
)
IDS = ("rnn-softmax", "lstm-mse-all", "gru-bce", "mgu-softmax-all")
H, N = 3, 6


def _model(cell: str, outputs: Outputs, steps: int = N) -> Model:
    return Model(cell=cell, hidden=H, inputs=3, steps=steps, bias=cell == "rnn", outputs=outputs)


def _torch_loss(z, label, loss: str):
    if loss == "softmax":
        return -torch.log_softmax(z, dim=-1)[0, int(label)]
    if loss == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(z.reshape(()), torch.tensor(float(label),
                                                                    dtype=torch.float64))
    return (z.reshape(()) - float(label)) ** 2


def _truncated_parts(cell, d, params, x, labels, outputs) -> dict:
    """Per cell parameter and gap G, Σ_t [∇L_t truncated at gap G − ∇L_t truncated at gap G − 1]."""
    tensors = {k: torch.tensor(np.asarray(v, float), requires_grad=True) for k, v in params.items()}
    readout, bias = d.cell.readout, d.cell.readout_bias
    names = [k for k in params if k not in (readout, bias)]
    run = reference(cell, FUNCTIONS, lambda u, m: u @ m.T)
    steps = torch.tensor(x[0])[:, None, :]   # (n, 1, D)
    zeros = {s: torch.zeros(1, H, dtype=torch.float64) for s in d.states}
    trace: list = []
    with torch.no_grad():
        run(tensors, steps, zeros, trace)
    n = x.shape[1]
    parts = {k: np.zeros((n, *np.shape(params[k]))) for k in names}
    for t in range(n) if outputs.every else [n - 1]:   # the steps that have a loss term
        before = {k: np.zeros(np.shape(params[k])) for k in names}
        for gap in range(t + 1):
            start = t - gap
            initial = zeros if start == 0 else {s: v.detach() for s, v in trace[start - 1].items()}
            output, _ = run(tensors, steps[start:t + 1], initial)
            h = output[-1]
            weight = tensors[readout]
            z = h @ weight.T if weight.dim() == 2 else (h * weight).sum(-1, keepdim=True)
            if bias:
                z = z + tensors[bias]
            label = labels[0, t] if outputs.every else labels[0]
            value = _torch_loss(z, label, outputs.loss) / (n if outputs.reduction == "all" else 1)
            grads = torch.autograd.grad(value, [tensors[k] for k in names], allow_unused=True)
            for k, g in zip(names, grads):
                now = np.zeros(np.shape(params[k])) if g is None else g.numpy()
                parts[k][gap] += now - before[k]
                before[k] = now
    return parts


@pytest.mark.parametrize(("cell", "outputs"), CASES, ids=IDS)
def test_parts_per_gap_equal_truncated_torch_gradients(cell, outputs):
    model = _model(cell, outputs)
    d = derive_model(model)
    result = reach.analyze_reach(model, d, steps=N, seed=3)
    x = np.eye(3)[[("cat", "mat", "rat").index(w) for w in result.words]][None]
    labels = np.array([result.labels])
    expected = _truncated_parts(cell, d, result.params, x, labels, outputs)
    assert set(expected) == set(result.parts)
    for name, want in expected.items():
        assert np.max(np.abs(result.parts[name] - want)) <= 1e-10 * max(1.0, np.max(np.abs(want))), name
    # and their sum is the whole gradient of the generated module (the readout's aside)
    module = load(replace(model, steps=1), "loop")
    _, grads = module.loss_and_grad(x, labels, result.params)
    for name in expected:
        assert np.allclose(result.parts[name].sum(axis=0), grads[name], rtol=1e-10, atol=1e-12)


def test_a_truncation_that_keeps_a_gap_too_many_is_told_apart():
    """Negative control: the oracle sees one gap moved (the part of gap 1 counted at gap 0)."""
    cell, outputs = CASES[0]
    model = _model(cell, outputs)
    d = derive_model(model)
    result = reach.analyze_reach(model, d, steps=N, seed=3)
    x = np.eye(3)[[("cat", "mat", "rat").index(w) for w in result.words]][None]
    expected = _truncated_parts(cell, d, result.params, x, np.array([result.labels]), outputs)
    moved = result.parts["w_h"].copy()
    moved[0] += moved[1]
    moved[1] = 0
    assert np.max(np.abs(moved - expected["w_h"])) > 1e-6


def test_the_skip_path_alone_crosses_only_multiples_of_its_lag():
    """With w_h = 0 the skip RNN o_t = f(w_i x_t + w_s o_(t−K)) links step t only to t − K, t − 2K, …"""
    lag = 3
    model = Model(cell="skip", skip=lag, hidden=H, inputs=3, steps=10, outputs=Outputs("every", "mse"))
    d = derive_model(model)
    module = load(replace(model, steps=1), "loop")
    params = {k: np.array(v, float) for k, v in module.init_params(1).items()}
    params["w_h"][:] = 0.0
    x = np.eye(3)[np.arange(10) % 3][None]
    labels = np.linspace(-1, 1, 10)[None]
    with np.errstate(all="ignore"):
        parts, _ = reach._split_by_gap(module, x, labels, params, d)
    # w_s meets step j in o_(j−K), zero for j < K: its part of gap 9 (t = 9, j = 0) is zero too
    for name, crossed in (("w_i", (3, 6, 9)), ("w_s", (3, 6))):
        sizes = np.abs(parts[name]).reshape(10, -1).max(axis=1)
        assert np.all(sizes[[g for g in range(10) if g % lag]] == 0), name
        assert np.all(sizes[list(crossed)] > 0), name


def test_a_lagged_cell_sums_to_its_gradient():
    model = Model(cell="skip", skip=2, hidden=H, inputs=3, steps=7, outputs=Outputs("every", "softmax", 3))
    result = reach.analyze_reach(model, derive_model(model), steps=7, seed=2)
    module = load(replace(model, steps=1), "loop")
    x = np.eye(3)[[("cat", "mat", "rat").index(w) for w in result.words]][None]
    _, grads = module.loss_and_grad(x, np.array([result.labels]), result.params)
    for name, part in result.parts.items():
        assert np.allclose(part.sum(axis=0), grads[name], rtol=1e-10, atol=1e-12)


def test_regimes_follow_the_recurrent_scale():
    outputs = Outputs("every", "mse")
    model = Model(cell="rnn", hidden=4, inputs=3, steps=12, activation="identity", outputs=outputs)
    d = derive_model(model)
    small = reach.analyze_reach(model, d, steps=12, w_h_scale=0.3)
    large = reach.analyze_reach(model, d, steps=12, w_h_scale=2.0)
    none = reach.analyze_reach(model, d, steps=12, w_h_scale=0.0)
    assert small.regime == "vanishing" and large.regime == "exploding" and none.regime == "vanishing"
    # identity f and W_h = s·Q: every δ ratio is exactly s^gap (Q orthogonal keeps norms)
    assert np.allclose(10 ** large.reach_log10, 2.0 ** np.arange(12), rtol=1e-9)
    assert np.isclose(large.growth, 2.0, rtol=1e-9)
    assert none.horizon(0.99) == 0


def test_cli_table_json_and_plot(tmp_path):
    args = ["analyze", "--cell", "gru", "--hidden", "3", "--readout", "every", "--loss", "softmax",
            "--classes", "3", "-n", "9", "--seed", "4"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert "share" in first.stdout and "regime:" in first.stdout
    target = tmp_path / "reach.png"
    plotted = run_cli(*args, "--json", "--plot", str(target))
    assert plotted.returncode == 0 and target.stat().st_size > 1000
    data = json.loads(plotted.stdout)
    assert np.isclose(sum(data["gradient_shares"]), 1.0)
    assert data["steps"] == 9 and len(data["labels"]) == 9 and all(0 <= y < 3 for y in data["labels"])


@pytest.mark.parametrize("extra", [
    ["--w-i", "1,1,1"],
    ["--w-o", "2"],
    ["--hidden", "3", "--w-h", "0.5"],
    ["--cell", "lstm", "--hidden", "2", "--set", "b_q=1"],
    ["--w-h-scale", "nan"],
    ["--cell", "gru", "--hidden", "2", "--forget-bias", "inf"],
])
def test_cli_mistakes_are_one_line(extra):
    result = run_cli("analyze", "--readout", "every", "-n", "4", *extra)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_loss_after_the_last_step_only_is_split_by_n_minus_j():
    """--loss mse without --readout every: one loss term, at step n, split by n − j as truncated BPTT
    in PyTorch splits it."""
    outputs = Outputs("last", "mse")
    model = _model("gru", outputs)
    d = derive_model(model)
    result = reach.analyze_reach(model, d, steps=N, seed=1)
    x = np.eye(3)[[("cat", "mat", "rat").index(w) for w in result.words]][None]
    expected = _truncated_parts("gru", d, result.params, x, np.array(result.labels), outputs)
    assert len(result.labels) == 1 and "after the last step" in reach.table(result)
    for name, want in expected.items():
        assert np.max(np.abs(result.parts[name] - want)) <= 1e-10 * max(1.0, np.max(np.abs(want))), name
