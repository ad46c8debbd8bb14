"""Wrong: the δ recursion multiplies by w_h where w_hᵀ belongs."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, _ = x.shape
    o = np.zeros((steps + 1, batch, w_h.shape[0]))
    for t in range(steps):
        o[t + 1] = np.tanh(np.einsum("hd,bd->bh", w_i, x[:, t]) + np.einsum("hk,bk->bh", w_h, o[t]))
    z = o[-1] @ w_o
    y_hat = 1 / (1 + np.exp(-z))
    loss = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
    dw_i, dw_h = np.zeros_like(w_i), np.zeros_like(w_h)
    delta = (y_hat - y)[:, None] * w_o
    for t in range(steps, 0, -1):
        gate = delta * (1 - o[t] ** 2)
        dw_i += np.einsum("bh,bd->hd", gate, x[:, t - 1])
        dw_h += np.einsum("bh,bk->hk", gate, o[t - 1])
        delta = np.einsum("hk,bk->bh", w_h, gate)       # the slip: w_h gate, not w_hᵀ gate
    return loss, dw_i / batch, dw_h / batch, (y_hat - y) @ o[-1] / batch
