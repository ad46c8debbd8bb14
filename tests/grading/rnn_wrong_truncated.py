"""Wrong: only the short-term term j = n of each sum (the long-term terms dropped)."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, _ = x.shape
    o = [np.zeros(batch)]
    for t in range(steps):
        o.append(np.tanh(x[:, t] @ w_i + w_h * o[-1]))
    y_hat = 1 / (1 + np.exp(-w_o * o[-1]))
    loss = -np.mean(y * np.log(y_hat) + (1 - y) * np.log(1 - y_hat))
    gate = (y_hat - y) * w_o * (1 - o[-1] ** 2)        # δ_n f′(a_n): and nothing further back
    return (loss, gate @ x[:, -1] / batch, np.mean(gate * o[-2]),
            np.mean((y_hat - y) * o[-1]))
