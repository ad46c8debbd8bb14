"""Right: the notes' RNN vectorised over the batch; the backward pass as the notes' sum of terms
Σ_j δ_j ∂⁺o_j/∂w with δ_j = (ŷ − y) w_o Π_(k=j+1..n) (1 − o_k²) w_h (a reversed cumulative product)."""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    steps = x.shape[1]
    projected = np.einsum("bnd,d->nb", x, w_i)          # w_i·x_t, (n, B)
    o = np.zeros((steps + 1, x.shape[0]))
    for t in range(steps):
        o[t + 1] = np.tanh(projected[t] + w_h * o[t])
    z = w_o * o[-1]
    y_hat = 1 / (1 + np.exp(-z))
    loss = np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))
    derivative = 1 - o[1:] ** 2                         # f′(a_j), (n, B)
    factors = np.ones_like(derivative)                  # Π_(k=j+1..n) ∂o_k/∂o_(k−1)
    factors[:-1] = np.cumprod((derivative[1:] * w_h)[::-1], axis=0)[::-1]
    delta = (y_hat - y) * w_o * factors                 # δ_j, (n, B)
    immediate = delta * derivative                      # δ_j f′(a_j)
    dw_i = np.einsum("nb,bnd->d", immediate, x) / x.shape[0]
    dw_h = np.sum(immediate * o[:-1]) / x.shape[0]
    dw_o = np.mean((y_hat - y) * o[-1])
    return loss, dw_i, dw_h, dw_o
