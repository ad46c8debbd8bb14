"""Wrong, the notes' own slip: ∂L/∂w = Σ_j (∂L/∂ŷ)(∂ŷ/∂o_j) (d o_j/dw) with d o_j/dw the total
derivative (through o_(j−1) as well), where the immediate partial ∂⁺o_j/∂w belongs."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, inputs = x.shape
    o = [np.zeros(batch)]
    total_i = [np.zeros((batch, inputs))]                # d o_j/dw_i
    total_h = [np.zeros(batch)]                          # d o_j/dw_h
    for t in range(steps):
        o.append(np.tanh(x[:, t] @ w_i + w_h * o[-1]))
        f_prime = 1 - o[-1] ** 2
        total_i.append(f_prime[:, None] * (x[:, t] + w_h * total_i[-1]))
        total_h.append(f_prime * (o[-2] + w_h * total_h[-1]))
    y_hat = 1 / (1 + np.exp(-w_o * o[-1]))
    loss = -np.mean(y * np.log(y_hat) + (1 - y) * np.log(1 - y_hat))
    dw_i, dw_h = np.zeros(inputs), 0.0
    delta = (y_hat - y) * w_o                            # (∂L/∂ŷ)(∂ŷ/∂o_j) for j = n, n − 1, …
    for j in range(steps, 0, -1):
        dw_i += delta @ total_i[j]
        dw_h += np.sum(delta * total_h[j])
        delta = delta * (1 - o[j] ** 2) * w_h
    return loss, dw_i / batch, dw_h / batch, np.mean((y_hat - y) * o[-1])
