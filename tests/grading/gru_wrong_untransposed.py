"""Wrong: the GRU of gru_right.py with U_r, U_z, U_n where their transposes belong in δh_(t−1) (right at H = 1 only):

    r = σ(W_r x + b_r + U_r h), z = σ(W_z x + b_z + U_z h), n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)),
    h' = (1 − z) ⊙ n + z ⊙ h;   δh_(t−1) = z ⊙ δh_t + U_rᵀ δa_r + U_zᵀ δa_z + U_nᵀ (r ⊙ δa_n)
"""

import numpy as np


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def loss_and_grad(x, y, params, direct=True):
    x, y = np.asarray(x, float), np.asarray(y, float)
    p = {k: np.asarray(v, float) for k, v in params.items()}
    batch, steps, _ = x.shape
    h = np.zeros((batch, p["w_y"].shape[0]))
    tape = []
    for t in range(steps):
        r = sigmoid(x[:, t] @ p["W_r"].T + p["b_r"] + h @ p["U_r"].T)
        z = sigmoid(x[:, t] @ p["W_z"].T + p["b_z"] + h @ p["U_z"].T)
        recurrent = h @ p["U_n"].T + p["b_hn"]
        n = np.tanh(x[:, t] @ p["W_n"].T + p["b_in"] + r * recurrent)
        tape.append((h, r, z, n, recurrent))
        h = (1 - z) * n + z * h
    logit = h @ p["w_y"]
    y_hat = sigmoid(logit)
    loss = np.mean(y * np.logaddexp(0, -logit) + (1 - y) * np.logaddexp(0, logit))
    g = {k: np.zeros_like(v) for k, v in p.items()}
    g["w_y"] = (y_hat - y) @ h / batch
    delta = np.outer(y_hat - y, p["w_y"]) / batch
    for t in range(steps - 1, -1, -1):
        h_prev, r, z, n, recurrent = tape[t]
        delta_a_n = delta * (1 - z) * (1 - n**2)
        delta_a_z = delta * (h_prev - n) * z * (1 - z)
        delta_a_r = delta_a_n * recurrent * r * (1 - r)
        delta_recurrent = delta_a_n * r
        for gate, d_a in (("r", delta_a_r), ("z", delta_a_z), ("n", delta_a_n)):
            g["W_" + gate] += d_a.T @ x[:, t]
        g["U_r"] += delta_a_r.T @ h_prev
        g["U_z"] += delta_a_z.T @ h_prev
        g["U_n"] += delta_recurrent.T @ h_prev
        g["b_r"] += delta_a_r.sum(0)
        g["b_z"] += delta_a_z.sum(0)
        g["b_in"] += delta_a_n.sum(0)
        g["b_hn"] += delta_recurrent.sum(0)
        delta = ((delta * z) if direct else 0) + delta_a_r @ p["U_r"].T + delta_a_z @ p["U_z"].T + delta_recurrent @ p["U_n"].T
    return loss, g
