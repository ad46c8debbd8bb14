"""Right: torch.nn.LSTM (float64) holding the parameters, gradients by autograd, as NumPy."""

import numpy as np
import torch

GATES = "ifgo"


def loss_and_grad(x, y, params):
    hidden, inputs = np.shape(params["W_i"])
    lstm = torch.nn.LSTM(inputs, hidden, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.as_tensor(np.concatenate([params["W_" + k] for k in GATES])))
        lstm.weight_hh_l0.copy_(torch.as_tensor(np.concatenate([params["U_" + k] for k in GATES])))
        lstm.bias_ih_l0.copy_(torch.as_tensor(np.concatenate([params["b_" + k] for k in GATES])))
        lstm.bias_hh_l0.zero_()
    readout = torch.tensor(params["w_y"], dtype=torch.float64, requires_grad=True)
    _, (last, _) = lstm(torch.as_tensor(x, dtype=torch.float64))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        last[0] @ readout, torch.as_tensor(y, dtype=torch.float64))
    loss.backward()
    grads = {"w_y": readout.grad.numpy()}
    for k, w, u, b in zip(GATES, lstm.weight_ih_l0.grad.chunk(4), lstm.weight_hh_l0.grad.chunk(4),
                          lstm.bias_ih_l0.grad.chunk(4)):
        grads["W_" + k], grads["U_" + k], grads["b_" + k] = w.numpy(), u.numpy(), b.numpy()
    return loss.item(), grads
