"""Right: the notes' RNN written in PyTorch (float64), gradients by autograd, returned as NumPy."""

import torch


def loss_and_grad(x, y, w_i, w_h, w_o):
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    w_i = torch.tensor(w_i, dtype=torch.float64, requires_grad=True)
    w_h = torch.tensor(float(w_h), dtype=torch.float64, requires_grad=True)
    w_o = torch.tensor(float(w_o), dtype=torch.float64, requires_grad=True)
    o = torch.zeros(x.shape[0], dtype=torch.float64)
    for t in range(x.shape[1]):
        o = torch.tanh(x[:, t] @ w_i + w_h * o)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(w_o * o, y)
    loss.backward()
    return loss.item(), w_i.grad.numpy(), w_h.grad.item(), w_o.grad.item()
