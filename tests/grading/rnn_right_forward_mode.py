"""Right, forward mode (real-time recurrent learning): carry the total derivatives
s_t = d o_t/dw = f′(a_t)(∂⁺a_t/∂w + w_h s_(t−1)) forward, then ∂L/∂w = (ŷ − y) w_o s_n.
(Here the total derivative of o_n is the right thing: it is the whole chain, used once.)"""

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y = np.asarray(x, float), np.asarray(y, float)
    batch, steps, inputs = x.shape
    o = np.zeros(batch)
    s_i = np.zeros((batch, inputs))     # d o_t / d w_i
    s_h = np.zeros(batch)               # d o_t / d w_h
    for t in range(steps):
        o_new = np.tanh(x[:, t] @ w_i + w_h * o)
        f_prime = 1 - o_new**2
        s_i = f_prime[:, None] * (x[:, t] + w_h * s_i)
        s_h = f_prime * (o + w_h * s_h)
        o = o_new
    y_hat = 1 / (1 + np.exp(-w_o * o))
    loss = -np.mean(y * np.log(y_hat) + (1 - y) * np.log(1 - y_hat))
    residual = y_hat - y
    return (loss, (residual * w_o) @ s_i / batch, np.mean(residual * w_o * s_h),
            np.mean(residual * o))
