"""A textbook loss_and_grad (the notes' RNN, H = 3, y = σ(w_o·o_n), mean BCE) whose forward stores the
states in float32; formulas right. With HALF = True the loss and every gradient are halved."""
import numpy as np

DTYPE = np.float32
HALF = False


def loss_and_grad(x, y, params):
    w_i, w_h, w_o = params["w_i"], params["w_h"], params["w_o"]
    B, n, _ = x.shape
    H = w_h.shape[0]
    o = np.zeros((n + 1, B, H), dtype=DTYPE)
    for t in range(n):
        o[t + 1] = np.tanh(x[:, t] @ w_i.T + o[t] @ w_h.T)
    z = o[n] @ w_o
    y_hat = 1 / (1 + np.exp(-z))
    loss = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
    r = (y_hat - y) / B
    dw_o = r @ o[n]
    delta = r[:, None] * w_o
    dw_i, dw_h = np.zeros_like(w_i), np.zeros_like(w_h)
    for t in range(n, 0, -1):
        da = delta * (1 - o[t] ** 2)
        dw_i += da.T @ x[:, t - 1]
        dw_h += da.T @ o[t - 1]
        delta = da @ w_h
    scale = 0.5 if HALF else 1.0
    return scale * loss, {"w_i": scale * dw_i, "w_h": scale * dw_h, "w_o": scale * dw_o}


def loss_and_grad_off_1e6(x, y, params):
    """float64 throughout, with the loss and every gradient off by a deliberate 1e-6 (not a simple factor
    of a scaled loss, not float32's rounding)."""
    global DTYPE
    DTYPE, saved = np.float64, DTYPE
    try:
        loss, grads = loss_and_grad(x, y, params)
    finally:
        DTYPE = saved
    return loss * (1 + 1e-6), {name: g * (1 + 1.3e-6) for name, g in grads.items()}
