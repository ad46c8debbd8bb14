"""Wrong: the loss is averaged over the batch but the gradients are summed."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, inputs = x.shape
    o = np.zeros((steps + 1, batch))
    for t in range(1, steps + 1):
        o[t] = np.tanh(x[:, t - 1] @ w_i + w_h * o[t - 1])
    z = w_o * o[steps]
    y_hat = 1 / (1 + np.exp(-z))
    loss = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
    dw_i, dw_h = np.zeros(inputs), 0.0
    delta = (y_hat - y) * w_o
    for t in range(steps, 0, -1):
        gate = delta * (1 - o[t] ** 2)
        dw_i += gate @ x[:, t - 1]
        dw_h += gate @ o[t - 1]
        delta = gate * w_h
    return loss, dw_i, dw_h, (y_hat - y) @ o[steps]     # sums: no / batch
