"""NumPy code in torch.nn's conventions: an LSTM with weight_ih (4H, D), weight_hh (4H, H) applied as
W @ x (column layout), gates i, f, g, o, and the bias split in b_ih + b_hh; and an RNN with one matrix
on the concatenation [h; x] (row layout), as many tutorials write it."""
import numpy as np


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def lstm_forward(x, h0, weight_ih, weight_hh, b_ih, b_hh):
    N, T, _ = x.shape
    H = h0.shape[1]
    b = (b_ih + b_hh).reshape(-1)
    h, c, hs, cache = h0, np.zeros_like(h0), np.zeros((N, T, H)), []
    for t in range(T):
        a = x[:, t] @ weight_ih.T + h @ weight_hh.T + b
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        c_prev, h_prev = c, h
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[:, t] = h
        cache.append((x[:, t], h_prev, c_prev, i, f, g, o, c))
    return hs, (cache, weight_ih, weight_hh)


def lstm_backward(dh, stored):
    cache, weight_ih, weight_hh = stored
    N, T, H = dh.shape
    dx = np.zeros((N, T, weight_ih.shape[1]))
    dW_ih, dW_hh, db = np.zeros_like(weight_ih), np.zeros_like(weight_hh), np.zeros(4 * H)
    dh_next, dc_next = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        x_t, h_prev, c_prev, i, f, g, o, c = cache[t]
        dh_t = dh[:, t] + dh_next
        tc = np.tanh(c)
        dc = dc_next + dh_t * o * (1 - tc ** 2)
        da = np.hstack([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g ** 2),
                        dh_t * tc * o * (1 - o)])
        dW_ih += da.T @ x_t
        dW_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx[:, t] = da @ weight_ih
        dh_next, dc_next = da @ weight_hh, dc * f
    return dx, dh_next, dW_ih, dW_hh, db, db.copy()


def rnn_concat_forward(x, h0, W, b):
    T = x.shape[1]
    h, hs, cache = h0, [], []
    for t in range(T):
        hx = np.hstack([h, x[:, t]])
        h = np.tanh(hx @ W + b)
        hs.append(h)
        cache.append((hx, h))
    return np.stack(hs, axis=1), (cache, W)


def rnn_concat_backward(dh, stored):
    cache, W = stored
    N, T, H = dh.shape
    dW, db = np.zeros_like(W), np.zeros(H)
    dx = np.zeros((N, T, W.shape[0] - H))
    dh_next = np.zeros((N, H))
    for t in reversed(range(T)):
        hx, h = cache[t]
        da = (dh[:, t] + dh_next) * (1 - h ** 2)
        dW += hx.T @ da
        db += da.sum(axis=0)
        dhx = da @ W.T
        dh_next, dx[:, t] = dhx[:, :H], dhx[:, H:]
    return dx, dh_next, dW, db
