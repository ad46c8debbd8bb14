"""The notes' BPTT by hand: o_t = tanh(w_i·x_t + w_h o_(t−1)), ŷ = σ(w_o o_n), update rules (i)–(iii)."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    batch, steps, inputs = x.shape
    o = [np.zeros(batch)]
    for t in range(steps):
        o.append(np.tanh(x[:, t] @ w_i + w_h * o[-1]))
    y_hat = 1 / (1 + np.exp(-w_o * o[steps]))
    loss = np.mean(-y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat))
    # (iii): ∂L/∂w_o = ∂L/∂ŷ · ∂ŷ/∂w_o
    dw_o = np.mean((y_hat - y) * o[steps])
    # ∂o_j/∂w_i and ∂o_j/∂w_h from o_j = tanh(x_j·w_i + o_(j−1) w_h)
    do_dw_i, do_dw_h = [np.zeros((batch, inputs))], [np.zeros(batch)]
    for j in range(1, steps + 1):
        f_prime = 1 - o[j] ** 2
        do_dw_i.append(f_prime[:, None] * (x[:, j - 1] + w_h * do_dw_i[-1]))
        do_dw_h.append(f_prime * (o[j - 1] + w_h * do_dw_h[-1]))
    # (i), (ii): ∂L/∂w = Σ_j ∂L/∂ŷ · ∂ŷ/∂o_j · ∂o_j/∂w
    dw_i, dw_h = np.zeros(inputs), 0.0
    dL_do = (y_hat - y) * w_o                    # ∂L/∂ŷ · ∂ŷ/∂o_n
    for j in range(steps, 0, -1):
        dw_i += dL_do @ do_dw_i[j] / batch
        dw_h += dL_do @ do_dw_h[j] / batch
        dL_do = dL_do * (1 - o[j] ** 2) * w_h    # · ∂o_j/∂o_(j−1)
    return loss, dw_i, dw_h, dw_o


def update(x, y, w_i, w_h, w_o, learning_rate=0.5):
    """One step of gradient descent: the notes' rules (i), (ii), (iii)."""
    loss, dw_i, dw_h, dw_o = loss_and_grad(x, y, w_i, w_h, w_o)
    return w_i - learning_rate * dw_i, w_h - learning_rate * dw_h, w_o - learning_rate * dw_o, loss
