"""A many-to-many RNN regressing a number at every step, written here in a row layout over the whole
batch (h_t = tanh(x_t w_iᵀ + h_(t−1) w_hᵀ), ŷ_t = h_t · w_o), with squared error (ŷ_t − y_t)² averaged
over every step and sequence as torch's MSELoss (``bptt codegen --readout every --loss mse --reduction
all``): x (B, n, D), y (B, n) floats, params a dict.

``loss_and_grad`` is right; ``loss_and_grad_half`` differentiates ½ (ŷ − y)² (the factor 2 lost);
``loss_and_grad_summed`` divides by B where the mean over B·n belongs."""

import numpy as np


def _loss_and_grad(x, y, params, factor=2.0, per_sequence=False):
    x, y = np.asarray(x, float), np.asarray(y, float)
    w_i, w_h, w_o = (np.asarray(params[name], float) for name in ("w_i", "w_h", "w_o"))
    batch, steps, _ = x.shape
    h = [np.zeros((batch, w_h.shape[0]))]
    for t in range(steps):
        h.append(np.tanh(x[:, t] @ w_i.T + h[-1] @ w_h.T))
    states = np.stack(h[1:], axis=1)                    # (B, n, H)
    residual = states @ w_o - y                         # (B, n)
    count = batch if per_sequence else batch * steps
    loss = np.sum(residual ** 2) / count
    error = factor * residual / count                   # ∂L/∂ŷ_t
    grads = {"w_i": np.zeros_like(w_i), "w_h": np.zeros_like(w_h), "w_o": np.einsum("bn,bnh->h", error, states)}
    delta = np.zeros((batch, w_h.shape[0]))
    for t in reversed(range(steps)):
        delta = delta + error[:, t, None] * w_o         # what step t's loss sends, plus what t + 1 sent
        raw = delta * (1 - h[t + 1] ** 2)
        grads["w_i"] += raw.T @ x[:, t]
        grads["w_h"] += raw.T @ h[t]
        delta = raw @ w_h
    return loss, grads


def loss_and_grad(x, y, params):
    return _loss_and_grad(x, y, params)


def loss_and_grad_half(x, y, params):
    return _loss_and_grad(x, y, params, factor=1.0)


def loss_and_grad_summed(x, y, params):
    return _loss_and_grad(x, y, params, per_sequence=True)
