"""The generated matrix modules against PyTorch's RNN (issue 5, "Checks"): an independent float64 oracle.

``torch.nn.RNN`` (tanh or ReLU, batch_first, with or without biases) followed by a linear output and
``BCEWithLogitsLoss``, with our weights copied in: losses and gradients equal within 1e-10 relative,
through the positional form (w_i, w_h, w_o[, b_h=, b_o=]) and the dict one every cell has.
PyTorch has two hidden biases, b_ih + b_hh; ours is b_ih and b_hh stays zero (its gradient equals
ours too, since both enter a_t the same way).

Needs the ``torch`` extra (pip install 'bptt[torch]'); CI installs it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from symbolic.codegen import load
from symbolic.model import Model

from .test_codegen_matrix import point

if os.environ.get("CI"):
    import torch  # CI installs the extra: a missing PyTorch fails there instead of skipping
else:
    torch = pytest.importorskip("torch")

SHAPES = [(1, True), (2, False), (2, True), (8, False), (8, True)]
TOLERANCE = 1e-10


def torch_loss_and_grad(x, y, parameters, activation, bias):
    hidden, inputs = parameters["w_i"].shape
    rnn = torch.nn.RNN(
        input_size=inputs, hidden_size=hidden, nonlinearity=activation, bias=bias, batch_first=True
    ).double()
    output = torch.nn.Linear(hidden, 1, bias=bias).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(parameters["w_i"]))
        rnn.weight_hh_l0.copy_(torch.from_numpy(parameters["w_h"]))
        output.weight.copy_(torch.from_numpy(parameters["w_o"][np.newaxis]))
        if bias:
            rnn.bias_ih_l0.copy_(torch.from_numpy(parameters["b_h"]))
            rnn.bias_hh_l0.zero_()
            output.bias.fill_(parameters["b_o"])
    states, _ = rnn(torch.from_numpy(x))
    logits = output(states[:, -1]).squeeze(-1)
    loss = torch.nn.BCEWithLogitsLoss()(logits, torch.from_numpy(y))
    loss.backward()
    gradients = {
        "w_i": rnn.weight_ih_l0.grad.numpy(),
        "w_h": rnn.weight_hh_l0.grad.numpy(),
        "w_o": output.weight.grad.numpy()[0],
    }
    if bias:
        gradients["b_h"] = rnn.bias_ih_l0.grad.numpy()
        gradients["b_hh"] = rnn.bias_hh_l0.grad.numpy()
        gradients["b_o"] = float(output.bias.grad.numpy()[0])
    return loss.item(), gradients


def relative(got, want):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize(("hidden", "bias"), SHAPES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_equal_to_torch_rnn(activation, hidden, bias, mode):
    steps = 6
    module = load(Model(steps=steps, activation=activation, hidden=hidden, bias=bias), mode)
    for seed in range(3):
        x, y, parameters = point(activation, hidden, bias, steps, batch=5, seed=seed)
        loss, *gradients = module.loss_and_grad(x, y, **parameters)
        want_loss, want = torch_loss_and_grad(x, y, parameters, activation, bias)
        got = dict(zip(parameters, gradients))
        assert relative(loss, want_loss) < TOLERANCE
        for name in parameters:
            assert relative(got[name], want[name]) < TOLERANCE, (name, got[name], want[name])
        if bias:  # torch's second hidden bias enters a_t like ours
            assert relative(got["b_h"], want["b_hh"]) < TOLERANCE
        # the same module's dict interface, the one every cell has: the same numbers
        loss_dict, grads = module.loss_and_grad(x, y, parameters)
        assert loss_dict == loss and list(grads) == list(module.PARAMS) and set(grads) == set(parameters)
        for name in parameters:
            assert np.array_equal(grads[name], got[name]), name
        # the gradients are not trivially zero (ReLU can switch a unit off everywhere)
        assert np.max(np.abs(got["w_h"])) > 0 or activation == "relu"
