"""Wrong: the LSTM's BPTT without the carousel term δc_(t+1) ⊙ f_(t+1) in δc_t (the cell state's
gradient only through h_t); written out on its own, one step at a time."""

import numpy as np


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def loss_and_grad(x, y, params):
    x, y = np.asarray(x, float), np.asarray(y, float)
    P = {k: np.asarray(v, float) for k, v in params.items()}
    B, n, _ = x.shape
    H = P["w_y"].shape[0]
    hs, cs, gates = [np.zeros((B, H))], [np.zeros((B, H))], []
    for t in range(n):
        pre = {k: x[:, t] @ P[f"W_{k}"].T + hs[-1] @ P[f"U_{k}"].T + P[f"b_{k}"] for k in "ifgo"}
        i, f, g, o = _sigmoid(pre["i"]), _sigmoid(pre["f"]), np.tanh(pre["g"]), _sigmoid(pre["o"])
        cs.append(f * cs[-1] + i * g)
        hs.append(o * np.tanh(cs[-1]))
        gates.append((i, f, g, o))
    z = hs[-1] @ P["w_y"]
    y_hat = _sigmoid(z)
    loss = -np.mean(y * np.log(y_hat) + (1 - y) * np.log(1 - y_hat))
    G = {k: np.zeros_like(v) for k, v in P.items()}
    G["w_y"] = hs[-1].T @ (y_hat - y) / B
    dh = np.outer(y_hat - y, P["w_y"])
    for t in range(n, 0, -1):
        i, f, g, o = gates[t - 1]
        dc = dh * o * (1 - np.tanh(cs[t]) ** 2)          # + dc_next * f_next is missing
        da = {"i": dc * g * i * (1 - i), "f": dc * cs[t - 1] * f * (1 - f),
              "g": dc * i * (1 - g * g), "o": dh * np.tanh(cs[t]) * o * (1 - o)}
        dh = np.zeros_like(dh)
        for k in "ifgo":
            G[f"W_{k}"] += da[k].T @ x[:, t - 1] / B
            G[f"U_{k}"] += da[k].T @ hs[t - 1] / B
            G[f"b_{k}"] += da[k].sum(0) / B
            dh += da[k] @ P[f"U_{k}"]
    return loss, G
