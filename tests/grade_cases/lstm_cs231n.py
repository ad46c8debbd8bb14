"""An LSTM written the way CS231n's assignment 3 asks for it: row layout, the gates stacked as i, f, o, g
in Wx (D, 4H), Wh (H, 4H), b (4H,); c0 = 0."""
import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    H = prev_h.shape[1]
    a = x.dot(Wx) + prev_h.dot(Wh) + b
    i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def lstm_step_backward(dnext_h, dnext_c, cache, order=(0, 1, 2, 3), copy_bias=False):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    tc = np.tanh(next_c)
    dc = dnext_c + dnext_h * o * (1 - tc ** 2)
    blocks = [dc * g * i * (1 - i), dc * prev_c * f * (1 - f), dnext_h * tc * o * (1 - o), dc * i * (1 - g ** 2)]
    da = np.hstack(blocks)
    dx, dprev_h, dprev_c = da.dot(Wx.T), da.dot(Wh.T), dc * f
    da = np.hstack([blocks[k] for k in order])  # the blocks the weight gradients are assembled from
    db = da.sum(axis=0)
    if copy_bias:  # a copy-paste slip: db_i written as db_f
        H = prev_h.shape[1]
        db[:H] = db[H:2 * H]
    return dx, dprev_h, dprev_c, x.T.dot(da), prev_h.T.dot(da), db


def lstm_forward(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    H = h0.shape[1]
    h, cache = np.zeros((N, T, H)), []
    prev_h, prev_c = h0, np.zeros_like(h0)
    for t in range(T):
        prev_h, prev_c, step = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        cache.append(step)
    return h, cache


def lstm_backward(dh, cache, **slip):
    N, T, H = dh.shape
    D = cache[0][0].shape[1]
    dx, dWx, dWh, db = np.zeros((N, T, D)), np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), np.zeros(4 * H)
    dprev_h, dprev_c = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(dh[:, t] + dprev_h, dprev_c, cache[t],
                                                                           **slip)
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, dprev_h, dWx, dWh, db


def lstm_backward_gates_swapped(dh, cache):
    """The weight gradients assembled as i, f, g, o while the forward reads i, f, o, g."""
    return lstm_backward(dh, cache, order=(0, 1, 3, 2))


def lstm_backward_copied_bias(dh, cache):
    return lstm_backward(dh, cache, copy_bias=True)
