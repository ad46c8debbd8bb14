"""Right: the RNN with hidden size H as torch.nn.RNN (tanh, no biases, float64) and a bias-free
readout; gradients by autograd, returned as NumPy."""

import numpy as np
import torch


def loss_and_grad(x, y, w_i, w_h, w_o):
    hidden, inputs = np.shape(w_i)
    rnn = torch.nn.RNN(inputs, hidden, bias=False, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.as_tensor(w_i))
        rnn.weight_hh_l0.copy_(torch.as_tensor(w_h))
    readout = torch.tensor(w_o, dtype=torch.float64, requires_grad=True)
    _, last = rnn(torch.as_tensor(x, dtype=torch.float64))
    z = last[0] @ readout
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.as_tensor(y, dtype=torch.float64))
    loss.backward()
    return (loss.item(), rnn.weight_ih_l0.grad.numpy(), rnn.weight_hh_l0.grad.numpy(),
            readout.grad.numpy())
