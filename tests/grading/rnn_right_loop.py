"""Right: the notes' RNN, one sequence and one step at a time (plain Python floats).

δ_n = (ŷ − y) w_o, then for t = n..1: gate_t = δ_t (1 − o_t²), ∂L/∂w_i += gate_t x_t,
∂L/∂w_h += gate_t o_(t−1), δ_(t−1) = gate_t w_h.
"""

import math

import numpy as np


def loss_and_grad(x, y, w_i, w_h, w_o):
    x, y, w_i = np.asarray(x, float), np.asarray(y, float), np.asarray(w_i, float)
    batch, steps, inputs = x.shape
    loss, dw_i, dw_h, dw_o = 0.0, np.zeros(inputs), 0.0, 0.0
    for b in range(batch):
        o = [0.0]
        for t in range(steps):
            o.append(math.tanh(float(x[b, t] @ w_i) + w_h * o[-1]))
        y_hat = 1 / (1 + math.exp(-w_o * o[steps]))
        loss += -y[b] * math.log(y_hat) - (1 - y[b]) * math.log(1 - y_hat)
        dw_o += (y_hat - y[b]) * o[steps]
        delta = (y_hat - y[b]) * w_o
        for t in range(steps, 0, -1):
            gate = delta * (1 - o[t] ** 2)
            dw_i += gate * x[b, t - 1]
            dw_h += gate * o[t - 1]
            delta = gate * w_h
    return loss / batch, dw_i / batch, dw_h / batch, dw_o / batch
