"""The generated LSTM modules against PyTorch's LSTM (issue 7): an independent float64 oracle.

``torch.nn.LSTM`` (batch_first) followed by ``nn.Linear(H, 1, bias=False)`` and ``BCEWithLogitsLoss``,
with our parameters copied in: weight_ih_l0 = [W_i; W_f; W_g; W_o], weight_hh_l0 = [U_i; U_f; U_g; U_o],
bias_ih_l0 = [b_i; b_f; b_g; b_o] and bias_hh_l0 = 0 (only their sum counts, so the gradient of either
equals ours). Loss and every gradient equal within 1e-10 relative.

Needs the ``torch`` extra (pip install 'bptt[torch]'); CI installs it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.derive_lstm import GATES
from symbolic.model import Model

from .test_lstm_codegen import point, relative

if os.environ.get("CI"):
    import torch  # CI installs the extra: a missing PyTorch fails there instead of skipping
else:
    torch = pytest.importorskip("torch")

TOLERANCE = 1e-10


def torch_modules(params):
    """torch.nn.LSTM and the output layer holding our parameters (float64)."""
    hidden, inputs = params["W_i"].shape
    lstm = torch.nn.LSTM(input_size=inputs, hidden_size=hidden, batch_first=True).double()
    output = torch.nn.Linear(hidden, 1, bias=False).double()

    def stacked(family):
        return torch.from_numpy(np.concatenate([params[f"{family}_{gate}"] for gate in GATES]))

    with torch.no_grad():
        lstm.weight_ih_l0.copy_(stacked("W"))
        lstm.weight_hh_l0.copy_(stacked("U"))
        lstm.bias_ih_l0.copy_(stacked("b"))
        lstm.bias_hh_l0.zero_()
        output.weight.copy_(torch.from_numpy(params["w_y"][np.newaxis]))
    return lstm, output


def torch_loss_and_grad(x, y, params):
    lstm, output = torch_modules(params)
    states, _ = lstm(torch.from_numpy(x))
    logits = output(states[:, -1]).squeeze(-1)
    loss = torch.nn.BCEWithLogitsLoss()(logits, torch.from_numpy(y))
    loss.backward()

    def split(gradient):
        return dict(zip(GATES, np.split(gradient.numpy(), len(GATES))))

    gradients = {}
    families = (("W", lstm.weight_ih_l0), ("U", lstm.weight_hh_l0), ("b", lstm.bias_ih_l0))
    for family, weight in families:
        gradients.update({f"{family}_{gate}": value for gate, value in split(weight.grad).items()})
    gradients["w_y"] = output.weight.grad.numpy()[0]
    gradients["b_hh"] = split(lstm.bias_hh_l0.grad)
    return loss.item(), gradients, torch.sigmoid(logits).detach().numpy()


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("hidden", [1, 2, 8])
def test_equal_to_torch_lstm(hidden, mode):
    steps = 6
    module = load(Model(cell="lstm", steps=steps, hidden=hidden), mode)
    for seed in range(3):
        x, y, params = point(hidden, steps, batch=5, seed=seed)
        loss, grads = module.loss_and_grad(x, y, params)
        want_loss, want, want_forward = torch_loss_and_grad(x, y, params)
        assert relative(loss, want_loss) < TOLERANCE
        assert relative(module.forward(x, params), want_forward) < TOLERANCE
        for name in params:
            assert relative(grads[name], want[name]) < TOLERANCE, (name, grads[name], want[name])
        for gate in GATES:  # torch's second bias enters a_·,t like ours
            assert relative(grads[f"b_{gate}"], want["b_hh"][gate]) < TOLERANCE
        assert np.max(np.abs(grads["U_f"])) > 0
