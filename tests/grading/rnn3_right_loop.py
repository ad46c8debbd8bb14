"""Right: the RNN with hidden size H (w_i (H, D), w_h (H, H), w_o (H,)), step by step:
δh_n = (ŷ − y) w_o, gate_t = (1 − o_t²) ⊙ δh_t, δh_(t−1) = w_hᵀ gate_t."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, _ = x.shape
    hidden = w_h.shape[0]
    o = [np.zeros((batch, hidden))]
    for t in range(steps):
        o.append(np.tanh(x[:, t] @ w_i.T + o[-1] @ w_h.T))
    z = o[-1] @ w_o
    y_hat = 1 / (1 + np.exp(-z))
    loss = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
    dw_i, dw_h = np.zeros_like(w_i), np.zeros_like(w_h)
    delta = np.outer(y_hat - y, w_o)                    # (B, H)
    for t in range(steps, 0, -1):
        gate = delta * (1 - o[t] ** 2)
        dw_i += gate.T @ x[:, t - 1]
        dw_h += gate.T @ o[t - 1]
        delta = gate @ w_h                              # rows: w_hᵀ gate
    return loss, dw_i / batch, dw_h / batch, (y_hat - y) @ o[-1] / batch
