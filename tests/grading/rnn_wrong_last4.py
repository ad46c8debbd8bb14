"""Wrong from n = 5: the notes' RNN with BPTT truncated to the last 4 steps (k = 4), one sequence and
one step at a time; right for every n ≤ 4, where nothing is cut."""

import math

import numpy as np

#: the steps sent back in time (the loop stops after this many)
WINDOW = 4


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
        for t in range(steps, max(steps - WINDOW, 0), -1):
            gate = delta * (1 - o[t] ** 2)
            dw_i += gate * x[b, t - 1]
            dw_h += gate * o[t - 1]
            delta = gate * w_h
    return loss / batch, dw_i / batch, dw_h / batch, dw_o / batch
