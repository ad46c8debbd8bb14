"""Right: the LSTM (gates i, f, g, o; torch.nn.LSTM's equations) with its BPTT written out by hand:

    δc_t = δh_t ⊙ o_t ⊙ (1 − tanh² c_t) + δc_(t+1) ⊙ f_(t+1)     (the carousel)
    δa_i = δc_t ⊙ g_t ⊙ i(1 − i), δa_f = δc_t ⊙ c_(t−1) ⊙ f(1 − f), δa_g = δc_t ⊙ i ⊙ (1 − g²),
    δa_o = δh_t ⊙ tanh c_t ⊙ o(1 − o),   δh_(t−1) = Σ_· U_·ᵀ δa_·
"""

import numpy as np

GATES = "ifgo"


def sigmoid(v):
    return 0.5 * (1 + np.tanh(0.5 * v))


def forward(x, p):
    batch, steps, _ = x.shape
    hidden = p["w_y"].shape[0]
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    tape = []
    for t in range(steps):
        a = {k: x[:, t] @ p["W_" + k].T + h @ p["U_" + k].T + p["b_" + k] for k in GATES}
        i, f, o = sigmoid(a["i"]), sigmoid(a["f"]), sigmoid(a["o"])
        g = np.tanh(a["g"])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        tape.append({"i": i, "f": f, "g": g, "o": o, "c_prev": c, "c": c_new, "h_prev": h})
        h, c = h_new, c_new
    return h, tape


def loss_and_grad(x, y, params, carousel=True):
    x, y = np.asarray(x, float), np.asarray(y, float)
    p = {k: np.asarray(v, float) for k, v in params.items()}
    batch = x.shape[0]
    h, tape = forward(x, p)
    z = h @ p["w_y"]
    y_hat = sigmoid(z)
    loss = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    grads["w_y"] = (y_hat - y) @ h / batch
    delta_h = np.outer(y_hat - y, p["w_y"]) / batch
    carry = np.zeros_like(delta_h)                       # δc_(t+1) ⊙ f_(t+1)
    for t in range(x.shape[1] - 1, -1, -1):
        s = tape[t]
        tanh_c = np.tanh(s["c"])
        delta_c = delta_h * s["o"] * (1 - tanh_c**2) + (carry if carousel else 0)
        delta_a = {
            "i": delta_c * s["g"] * s["i"] * (1 - s["i"]),
            "f": delta_c * s["c_prev"] * s["f"] * (1 - s["f"]),
            "g": delta_c * s["i"] * (1 - s["g"] ** 2),
            "o": delta_h * tanh_c * s["o"] * (1 - s["o"]),
        }
        for k in GATES:
            grads["W_" + k] += delta_a[k].T @ x[:, t]
            grads["U_" + k] += delta_a[k].T @ s["h_prev"]
            grads["b_" + k] += delta_a[k].sum(axis=0)
        delta_h = sum(delta_a[k] @ p["U_" + k] for k in GATES)
        carry = delta_c * s["f"]
    return loss, grads
