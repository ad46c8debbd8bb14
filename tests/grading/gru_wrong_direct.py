"""Wrong: the GRU's BPTT without the direct path z ⊙ δh_t in δh_(t−1) (only the paths through the
recurrent matrices are sent back)."""

import numpy as np


def loss_and_grad(x, y, params):
    x, y = np.asarray(x, float), np.asarray(y, float)
    P = {k: np.asarray(v, float) for k, v in params.items()}
    B, T, _ = x.shape
    sig = lambda v: 1 / (1 + np.exp(-v))
    hs, cache = [np.zeros((B, P["w_y"].size))], []
    for t in range(T):
        h = hs[-1]
        r = sig(np.einsum("hd,bd->bh", P["W_r"], x[:, t]) + np.einsum("hk,bk->bh", P["U_r"], h) + P["b_r"])
        z = sig(np.einsum("hd,bd->bh", P["W_z"], x[:, t]) + np.einsum("hk,bk->bh", P["U_z"], h) + P["b_z"])
        u = np.einsum("hk,bk->bh", P["U_n"], h) + P["b_hn"]
        n = np.tanh(np.einsum("hd,bd->bh", P["W_n"], x[:, t]) + P["b_in"] + r * u)
        hs.append((1 - z) * n + z * h)
        cache.append((r, z, u, n))
    logit = hs[-1] @ P["w_y"]
    p_hat = sig(logit)
    loss = -np.mean(y * np.log(p_hat) + (1 - y) * np.log(1 - p_hat))
    G = {k: np.zeros_like(v) for k, v in P.items()}
    G["w_y"] = np.einsum("b,bh->h", p_hat - y, hs[-1]) / B
    dh = np.einsum("b,h->bh", p_hat - y, P["w_y"])
    for t in reversed(range(T)):
        r, z, u, n = cache[t]
        h = hs[t]
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * u * r * (1 - r)
        for name, d in (("r", dr), ("z", dz), ("n", dn)):
            G["W_" + name] += np.einsum("bh,bd->hd", d, x[:, t]) / B
        G["U_r"] += np.einsum("bh,bk->hk", dr, h) / B
        G["U_z"] += np.einsum("bh,bk->hk", dz, h) / B
        G["U_n"] += np.einsum("bh,bk->hk", dn * r, h) / B
        G["b_r"] += dr.sum(0) / B
        G["b_z"] += dz.sum(0) / B
        G["b_in"] += dn.sum(0) / B
        G["b_hn"] += (dn * r).sum(0) / B
        dh = dr @ P["U_r"] + dz @ P["U_z"] + (dn * r) @ P["U_n"]   # + dh * z is missing
    return loss, G
