"""A vanilla RNN written the way CS231n's assignment 3 asks for it (rnn_layers.py): row layout,
x @ Wx, weights (Wx (D, H), Wh (H, H), b (H,)), the upstream gradient dh at every step."""
import numpy as np


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x.dot(Wx) + prev_h.dot(Wh) + b)
    cache = (x, prev_h, Wx, Wh, next_h)
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h ** 2)
    dx = da.dot(Wx.T)
    dprev_h = da.dot(Wh.T)
    dWx = x.T.dot(da)
    dWh = prev_h.T.dot(da)
    db = da.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H))
    cache = []
    prev_h = h0
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
        h[:, t, :] = prev_h
        cache.append(step_cache)
    return h, cache


def rnn_backward(dh, cache):
    N, T, H = dh.shape
    D = cache[0][0].shape[1]
    dx = np.zeros((N, T, D))
    dWx, dWh, db = np.zeros((D, H)), np.zeros((H, H)), np.zeros(H)
    dprev_h = np.zeros((N, H))
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dprev_h, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


def rnn_backward_no_carry(dh, cache):
    """The classic student bug: dprev_h is computed but not added to the next step's upstream gradient."""
    N, T, H = dh.shape
    D = cache[0][0].shape[1]
    dx = np.zeros((N, T, D))
    dWx, dWh, db = np.zeros((D, H)), np.zeros((H, H)), np.zeros(H)
    dprev_h = np.zeros((N, H))
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :], cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


def rnn_backward_off_1e6(dh, cache):
    """float64 throughout, with a deliberate 1e-6 relative error in one term (dWh)."""
    dx, dh0, dWx, dWh, db = rnn_backward(dh, cache)
    return dx, dh0, dWx, dWh * (1 + 1e-6), db


def rnn_backward_half(dh, cache):
    """Every gradient halved (a loss of ½ Σ taken twice)."""
    return tuple(0.5 * g for g in rnn_backward(dh, cache))


def rnn_backward_clipped(dh, cache):
    """The weight gradients clipped to ±0.5 inside the implementation (min-char-rnn clips to ±5)."""
    dx, dh0, dWx, dWh, db = rnn_backward(dh, cache)
    return (dx, dh0, *(np.clip(g, -0.5, 0.5) for g in (dWx, dWh, db)))


def rnn_forward_float32(x, h0, Wx, Wh, b):
    """A textbook forward that stores its states in float32 (the formulas are right)."""
    x, h0, Wx, Wh, b = (np.asarray(a, dtype=np.float32) for a in (x, h0, Wx, Wh, b))
    return rnn_forward(x, h0, Wx, Wh, b)


def rnn_backward_float32(dh, cache):
    return rnn_backward(np.asarray(dh, dtype=np.float32), cache)


def rnn_forward_one(x, h0, Wx, Wh, b):
    """One sequence: x (T, D), h0 (H,)."""
    h, cache = rnn_forward(x[np.newaxis], h0[np.newaxis], Wx, Wh, b)
    return h[0], cache


def rnn_backward_one(dh, cache):
    dx, dh0, dWx, dWh, db = rnn_backward(dh[np.newaxis], cache)
    return dx[0], dh0[0], dWx, dWh, db


def min_char_forward(xs, hprev, Wxh, Whh, bh):
    """min-char-rnn's loop: column layout, per-step column vectors xs[t] (D, 1), hprev (H, 1)."""
    hs = {-1: hprev}
    for t in range(len(xs)):
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
    return np.array([hs[t] for t in range(len(xs))]), (xs, hs, Wxh, Whh)


def min_char_backward(dh, cache):
    xs, hs, Wxh, Whh = cache
    dWxh, dWhh, dbh = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros((Whh.shape[0], 1))
    dhnext, dxs = np.zeros_like(hs[0]), []
    for t in reversed(range(len(xs))):
        dhraw = (1 - hs[t] * hs[t]) * (dh[t] + dhnext)
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
        dxs.append(np.dot(Wxh.T, dhraw))
    return np.array(dxs[::-1]), dhnext, dWxh, dWhh, dbh


def rnn_backward_no_carry_half(dh, cache):
    """Two mistakes at once: the no-carry bug, and every gradient halved."""
    return tuple(0.5 * g for g in rnn_backward_no_carry(dh, cache))


def rnn_backward_norm_clipped(dh, cache):
    """The weight gradients rescaled to a global norm of 0.5 (clip_grad_norm_ style); dx, dh0 left alone."""
    dx, dh0, *weights = rnn_backward(dh, cache)
    norm = np.sqrt(sum(np.sum(g * g) for g in weights))
    return (dx, dh0, *(g * min(1.0, 0.5 / norm) for g in weights))


def rnn_forward_pure32(x, h0, Wx, Wh, b):
    """float32 throughout: every array it returns is float32."""
    x, h0, Wx, Wh, b = (np.asarray(a, dtype=np.float32) for a in (x, h0, Wx, Wh, b))
    h, cache = rnn_forward(x, h0, Wx, Wh, b)
    return h.astype(np.float32), cache


def rnn_backward_pure32(dh, cache):
    return tuple(np.asarray(g, dtype=np.float32) for g in rnn_backward(np.asarray(dh, dtype=np.float32), cache))


def rnn_backward_pure32_no_carry(dh, cache):
    """float32 and the no-carry bug: wrong well beyond float32's reach."""
    grads = rnn_backward_no_carry(np.asarray(dh, dtype=np.float32), cache)
    return tuple(np.asarray(g, dtype=np.float32) for g in grads)


def rnn_forward_off_1e6(x, h0, Wx, Wh, b):
    """float64 with a deliberate 1e-6 error in the forward's states: not float32's rounding."""
    h, cache = rnn_forward(x, h0, Wx, Wh, b)
    return h * (1 + 1e-6), cache
