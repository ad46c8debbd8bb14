"""Wrong at n = 7 only: the notes' RNN, right, except that a special case for sequences of 7 steps
drops the first step's term (as a hard-coded loop bound would): ∂L/∂w_i is wrong there, ∂L/∂w_h not
(its first term holds o_0 = 0)."""

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
        last = 2 if steps == 7 else 1
        for t in range(steps, last - 1, -1):
            gate = delta * (1 - o[t] ** 2)
            dw_i += gate * x[b, t - 1]
            dw_h += gate * o[t - 1]
            delta = gate * w_h
    return loss / batch, dw_i / batch, dw_h / batch, dw_o / batch
