"""Wrong: ∂o_k/∂o_(k−1) = (1 − o_(k−1)²) w_h, tanh′ taken one step too early."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, inputs = x.shape
    o = np.zeros((steps + 1, batch))
    for t in range(1, steps + 1):
        o[t] = np.tanh(x[:, t - 1] @ w_i + w_h * o[t - 1])
    y_hat = 1 / (1 + np.exp(-w_o * o[steps]))
    loss = -np.mean(y * np.log(y_hat) + (1 - y) * np.log(1 - y_hat))
    dw_i, dw_h = np.zeros(inputs), 0.0
    delta = (y_hat - y) * w_o
    for k in range(steps, 0, -1):
        dw_i += (delta * (1 - o[k] ** 2)) @ x[:, k - 1]
        dw_h += np.sum(delta * (1 - o[k] ** 2) * o[k - 1])
        delta = delta * (1 - o[k - 1] ** 2) * w_h       # the slip: o[k - 1] where o[k] belongs
    return loss, dw_i / batch, dw_h / batch, np.mean((y_hat - y) * o[steps])
