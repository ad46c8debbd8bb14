"""Generated modules of the built-in gated cells against PyTorch (float64): an independent oracle.

``torch.nn.LSTM`` / ``torch.nn.GRU`` (batch_first) followed by ``nn.Linear(H, 1, bias=False)`` and
``BCEWithLogitsLoss``, with our parameters copied in:

* LSTM: weight_ih_l0 = [W_i; W_f; W_g; W_o], weight_hh_l0 = [U_i; U_f; U_g; U_o], bias_ih_l0 =
  [b_i; b_f; b_g; b_o], bias_hh_l0 = 0 (only the sum counts, so the gradient of either equals ours);
* GRU: weight_ih_l0 = [W_r; W_z; W_n], weight_hh_l0 = [U_r; U_z; U_n], bias_ih_l0 = [b_r; b_z; b_in],
  bias_hh_l0 = [0; 0; b_hn] (b_r = b_ir + b_hr and b_z = b_iz + b_hz: both torch biases get our gradient).

Loss, forward and every gradient equal within 1e-10 relative. Needs the ``torch`` extra; CI installs it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.model import Model

from .test_cell_codegen import point, relative

if os.environ.get("CI"):
    import torch  # CI installs the extra: a missing PyTorch fails there instead of skipping
else:
    torch = pytest.importorskip("torch")

TOLERANCE = 1e-10
#: cell → (torch class, gates, {torch bias name: our per-gate names, None for a zero block})
LAYOUT = {
    "lstm": (lambda D, H: torch.nn.LSTM(D, H, batch_first=True), "ifgo",
             {"bias_ih_l0": ["b_i", "b_f", "b_g", "b_o"], "bias_hh_l0": [None] * 4}),
    "gru": (lambda D, H: torch.nn.GRU(D, H, batch_first=True), "rzn",
            {"bias_ih_l0": ["b_r", "b_z", "b_in"], "bias_hh_l0": [None, None, "b_hn"]}),
}


def torch_loss_and_grad(cell, x, y, params):
    make, gates, biases = LAYOUT[cell]
    hidden, inputs = params[f"W_{gates[0]}"].shape
    layer = make(inputs, hidden).double()
    output = torch.nn.Linear(hidden, 1, bias=False).double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([params[f"W_{g}"] for g in gates])))
        layer.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([params[f"U_{g}"] for g in gates])))
        for torch_name, names in biases.items():
            blocks = [params[name] if name else np.zeros(hidden) for name in names]
            getattr(layer, torch_name).copy_(torch.from_numpy(np.concatenate(blocks)))
        output.weight.copy_(torch.from_numpy(params["w_y"][np.newaxis]))
    states, _ = layer(torch.from_numpy(x))
    logits = output(states[:, -1]).squeeze(-1)
    loss = torch.nn.BCEWithLogitsLoss()(logits, torch.from_numpy(y))
    loss.backward()
    gradients = {"w_y": output.weight.grad.numpy()[0]}
    for family, weight in (("W", layer.weight_ih_l0), ("U", layer.weight_hh_l0)):
        gradients |= {f"{family}_{g}": block for g, block in zip(gates, np.split(weight.grad.numpy(), len(gates)))}
    both = {}
    for torch_name, names in biases.items():
        for name, block in zip(names, np.split(getattr(layer, torch_name).grad.numpy(), len(gates))):
            if name:
                gradients[name] = block
            both.setdefault(torch_name, []).append(block)
    return loss.item(), gradients, torch.sigmoid(logits).detach().numpy(), both


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("hidden", [1, 2, 8])
@pytest.mark.parametrize("cell", list(LAYOUT))
def test_equal_to_torch(cell, hidden, mode):
    steps = 6
    module = load(Model(cell=cell, steps=steps, hidden=hidden), mode)
    for seed in range(3):
        x, y, params = point(module, steps, batch=5, seed=seed)
        loss, grads = module.loss_and_grad(x, y, params)
        want_loss, want, want_forward, both = torch_loss_and_grad(cell, x, y, params)
        assert relative(loss, want_loss) < TOLERANCE
        assert relative(module.forward(x, params), want_forward) < TOLERANCE
        assert set(want) == set(params)
        for name in params:
            assert relative(grads[name], want[name]) < TOLERANCE, (name, grads[name], want[name])
        # torch's two biases of a gate that only enters through their sum get the same gradient
        ih, hh = both["bias_ih_l0"], both["bias_hh_l0"]
        for k in range(2):
            assert relative(ih[k], hh[k]) < TOLERANCE
