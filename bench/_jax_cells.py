"""The built-in cells' steps written in JAX, for the benchmarks' JAX columns (bench_lstm, bench_outputs)."""

from __future__ import annotations


def step(cell: str):
    """The cell's step in JAX, (params, states tuple, x_t) → states tuple, and its number of states;
    the modules' parameter names and equations (docs/cells.md; torch's gate conventions)."""
    import jax
    import jax.numpy as jnp

    def rnn(p, carry, x_t):
        return (jnp.tanh(x_t @ p["w_i"].T + carry[0] @ p["w_h"].T),)

    def lstm(p, carry, x_t):
        h, c = carry
        i = jax.nn.sigmoid(x_t @ p["W_i"].T + h @ p["U_i"].T + p["b_i"])
        f = jax.nn.sigmoid(x_t @ p["W_f"].T + h @ p["U_f"].T + p["b_f"])
        g = jnp.tanh(x_t @ p["W_g"].T + h @ p["U_g"].T + p["b_g"])
        o = jax.nn.sigmoid(x_t @ p["W_o"].T + h @ p["U_o"].T + p["b_o"])
        c = f * c + i * g
        return (o * jnp.tanh(c), c)

    def gru(p, carry, x_t):
        (h,) = carry
        r = jax.nn.sigmoid(x_t @ p["W_r"].T + p["b_r"] + h @ p["U_r"].T)
        z = jax.nn.sigmoid(x_t @ p["W_z"].T + p["b_z"] + h @ p["U_z"].T)
        n = jnp.tanh(x_t @ p["W_n"].T + p["b_in"] + r * (h @ p["U_n"].T + p["b_hn"]))
        return ((1 - z) * n + z * h,)

    return {"rnn": (rnn, 1), "lstm": (lstm, 2), "gru": (gru, 1)}[cell]
