"""Right: torch.nn.GRU (float64) holding the parameters (b_r, b_z, b_in in bias_ih, b_hn in bias_hh),
gradients by autograd, as NumPy."""

import numpy as np
import torch


def loss_and_grad(x, y, params):
    hidden, inputs = np.shape(params["W_r"])
    gru = torch.nn.GRU(inputs, hidden, batch_first=True, dtype=torch.float64)
    zeros = np.zeros(hidden)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.as_tensor(np.concatenate([params["W_r"], params["W_z"], params["W_n"]])))
        gru.weight_hh_l0.copy_(torch.as_tensor(np.concatenate([params["U_r"], params["U_z"], params["U_n"]])))
        gru.bias_ih_l0.copy_(torch.as_tensor(np.concatenate([params["b_r"], params["b_z"], params["b_in"]])))
        gru.bias_hh_l0.copy_(torch.as_tensor(np.concatenate([zeros, zeros, params["b_hn"]])))
    readout = torch.tensor(params["w_y"], dtype=torch.float64, requires_grad=True)
    _, last = gru(torch.as_tensor(x, dtype=torch.float64))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        last[0] @ readout, torch.as_tensor(y, dtype=torch.float64))
    loss.backward()
    w, u, b_ih, b_hh = (t.grad.chunk(3) for t in (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0))
    grads = {"W_r": w[0], "W_z": w[1], "W_n": w[2], "U_r": u[0], "U_z": u[1], "U_n": u[2],
             "b_r": b_ih[0], "b_z": b_ih[1], "b_in": b_ih[2], "b_hn": b_hh[2], "w_y": readout.grad}
    return loss.item(), {k: v.numpy() for k, v in grads.items()}
