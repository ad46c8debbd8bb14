"""A loss_and_grad of one sequence, x (n, D) and y a number, as tutorials write it before batching
(the formulas of rnn_loss_and_grad_float32.py, in float64)."""
import numpy as np


def loss_and_grad(x, y, params):
    w_i, w_h, w_o = params["w_i"], params["w_h"], params["w_o"]
    o = [np.zeros(w_h.shape[0])]
    for x_t in x:
        o.append(np.tanh(w_i @ x_t + w_h @ o[-1]))
    z = w_o @ o[-1]
    y_hat = 1 / (1 + np.exp(-z))
    loss = y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)
    dw_o = (y_hat - y) * o[-1]
    delta = (y_hat - y) * w_o
    dw_i, dw_h = np.zeros_like(w_i), np.zeros_like(w_h)
    for t in range(len(x), 0, -1):
        da = delta * (1 - o[t] ** 2)
        dw_i += np.outer(da, x[t - 1])
        dw_h += np.outer(da, o[t - 1])
        delta = w_h.T @ da
    return loss, {"w_i": dw_i, "w_h": dw_h, "w_o": dw_o}


def loss_and_grad_no_carry(x, y, params):
    """The same with the recursion cut: delta is not sent back through w_h."""
    w_i, w_h, w_o = params["w_i"], params["w_h"], params["w_o"]
    o = [np.zeros(w_h.shape[0])]
    for x_t in x:
        o.append(np.tanh(w_i @ x_t + w_h @ o[-1]))
    z = w_o @ o[-1]
    y_hat = 1 / (1 + np.exp(-z))
    loss = y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)
    da = (y_hat - y) * w_o * (1 - o[-1] ** 2)
    return loss, {"w_i": np.outer(da, x[-1]), "w_h": np.outer(da, o[-2]), "w_o": (y_hat - y) * o[-1]}
