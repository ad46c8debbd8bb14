"""--bias on a cell whose biases are in its equations (lstm, gru, a cell file): the readout's bias b_y.

The oracle is PyTorch autograd of the cell's own equations (tests/export_cases.reference) with an
``nn.Linear``-style readout z_t = W_y h_t + b_y written here, and torch's losses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.model import Model
from symbolic.outputs import Outputs

from .conftest import ROOT, run_bptt
from .export_cases import reference

torch = pytest.importorskip("torch")

FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "exp": torch.exp}
MGU = str(ROOT / "docs" / "cells" / "mgu.py")
CASES = (
    ("lstm", Outputs("every", "softmax", 4, "steps")),
    ("gru", Outputs("every", "mse", None, "all")),
    (MGU, Outputs("every", "bce", None, "steps")),
    ("gru", Outputs()),
)
IDS = ("lstm-softmax", "gru-mse-all", "mgu-bce", "gru-last")
B, N, D, H = 2, 5, 3, 3


def _torch_loss(cell, outputs, params, x, y, mask):
    tensors = {k: torch.tensor(np.asarray(v, float), requires_grad=True) for k, v in params.items()}
    run = reference(cell, FUNCTIONS, lambda u, m: u @ m.T)
    zeros = {s: torch.zeros(B, H, dtype=torch.float64) for s in ("h", "c")}
    output, _ = run(tensors, torch.tensor(x).transpose(0, 1), zeros)
    states = torch.stack(output, dim=1)                      # (B, n, H)
    if not outputs.every:
        states = states[:, -1:]
    weight, bias = tensors["w_y"], tensors["b_y"]
    z = states @ weight.T + bias if weight.dim() == 2 else states @ weight + bias
    target = torch.tensor(y if outputs.every else y[:, None])
    if outputs.loss == "softmax":
        terms = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), target.reshape(-1), reduction="none")
    elif outputs.loss == "bce":
        terms = torch.nn.functional.binary_cross_entropy_with_logits(z.reshape(-1), target.reshape(-1).double(),
                                                                      reduction="none")
    else:
        terms = (z.reshape(-1) - target.reshape(-1)) ** 2
    weights = torch.tensor(mask).reshape(-1)
    loss = (terms * weights).sum() / (weights.sum() if outputs.reduction == "all" else B)
    grads = torch.autograd.grad(loss, list(tensors.values()))
    return float(loss.detach()), {k: g.numpy() for k, g in zip(tensors, grads)}


#: Numba compiles take 15–20 s a module: two of the cases, one built-in and the cell file.
BACKENDS = [(case, "numpy") for case in CASES] + [(CASES[0], "numba"), (CASES[2], "numba")]


@pytest.mark.parametrize(("case", "backend"), BACKENDS, ids=[f"{IDS[CASES.index(c)]}-{b}" for c, b in BACKENDS])
def test_readout_bias_equals_torch(case, backend):
    cell, outputs = case
    model = Model(cell=cell, hidden=H, inputs=D, steps=1, bias=True, outputs=outputs)
    module = load(model, "loop", backend=backend)
    params = module.init_params(1)
    assert np.shape(params["b_y"]) == ((outputs.classes,) if outputs.loss == "softmax" else ())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, N, D))
    shape = (B, N) if outputs.every else (B,)
    y = (rng.integers(0, outputs.classes, size=shape) if outputs.loss == "softmax"
         else rng.normal(size=shape) if outputs.loss == "mse" else rng.integers(0, 2, size=shape).astype(float))
    mask = np.ones((B, N)) if outputs.every else np.ones((B, 1))
    keywords = {}
    if outputs.every:
        mask[1, 3:] = 0
        keywords["mask"] = mask
    loss, grads = module.loss_and_grad(x, y, params, **keywords)
    want_loss, want = _torch_loss(cell, outputs, params, x, y, mask)
    assert abs(loss - want_loss) <= 1e-10 * max(1.0, abs(want_loss))
    assert set(grads) == set(want)
    for name, value in want.items():
        assert np.max(np.abs(np.asarray(grads[name]) - value)) <= 1e-10 * max(1.0, np.max(np.abs(value))), name


def test_without_bias_there_is_no_readout_bias():
    module = load(Model(cell="lstm", hidden=H, inputs=D, steps=1, outputs=Outputs("every", "softmax", 3)), "loop")
    assert "b_y" not in module.init_params(0)


def test_a_cell_file_that_names_b_y_refuses_bias(tmp_path):
    source = (ROOT / "docs" / "cells" / "mgu.py").read_text()
    assert "b_y" not in source
    cell_file = tmp_path / "named.py"
    cell_file.write_text(source.replace('"b_f"', '"b_y"').replace("b_f", "b_y"))
    plain = run_bptt("codegen", "--cell", str(cell_file), "--hidden", "2", "--mode", "loop", "-o", "-")
    assert plain.returncode == 0, plain.stderr
    refused = run_bptt("codegen", "--cell", str(cell_file), "--hidden", "2", "--bias", "-o", "-")
    assert refused.returncode == 2 and "already has a parameter b_y" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_check_and_verify_accept_the_readout_bias(tmp_path):
    target = tmp_path / "gru_bias.py"
    made = run_bptt("codegen", "--cell", "gru", "--hidden", "2", "--bias", "--readout", "every", "--loss", "softmax",
                    "--classes", "3", "--mode", "loop", "-o", str(target))
    assert made.returncode == 0, made.stderr
    checked = run_bptt("check", str(target))
    assert checked.returncode == 0 and "b_y" in checked.stdout, checked.stdout + checked.stderr
    proved = run_bptt("derive", "--cell", "lstm", "--bias", "--steps", "2", "--verify")
    assert proved.returncode == 0 and "PROVED" in proved.stdout


def test_the_model_stays_unchanged_by_a_derivation():
    """cell_of builds a fresh cell each time: a biased model leaves no b_y behind for an unbiased one."""
    from symbolic.cells import cell_of

    model = Model(cell="gru", hidden=H, bias=True)
    assert cell_of(model).readout_bias == "b_y"
    assert cell_of(replace(model, bias=False)).readout_bias is None
