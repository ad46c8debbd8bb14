"""The GRU in torch.nn.GRU's convention (reset gate applied after the recurrent product):

    r = σ(W_r x + b_r + U_r h),  z = σ(W_z x + b_z + U_z h),
    n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h

torch.nn.GRU holds weight_ih_l0 = [W_r; W_z; W_n], weight_hh_l0 = [U_r; U_z; U_n],
bias_ih_l0 = [b_ir; b_iz; b_in], bias_hh_l0 = [b_hr; b_hz; b_hn], with b_r = b_ir + b_hr, b_z = b_iz + b_hz.
"""

from __future__ import annotations

from .spec import Cell, sigmoid, tanh


def cell() -> Cell:
    # bptt train starts from b_z = 3: the update gate z ≈ σ(3) = 0.95 at the start keeps h over long gaps
    # (h' = (1 − z) ⊙ n + z ⊙ h), as the LSTM's forget bias does; --data long is learnt (held-out 1.0)
    # from b_z = 2 on, not at init_params' own b_z ≈ 0 (0.46) or 1 (0.58).
    gru = Cell("gru", readout="w_y", description="the GRU (torch.nn.GRU's convention)", training={"b_z": 3.0})
    x, h = gru.input(), gru.state("h")
    W = {gate: gru.matrix(f"W_{gate}", "H", "D") for gate in "rzn"}
    U = {gate: gru.matrix(f"U_{gate}", "H", "H") for gate in "rzn"}
    b_r, b_z, b_in, b_hn = (gru.vector(name) for name in ("b_r", "b_z", "b_in", "b_hn"))
    r = gru.let("r", sigmoid(W["r"] @ x + b_r + U["r"] @ h))
    z = gru.let("z", sigmoid(W["z"] @ x + b_z + U["z"] @ h))
    n = gru.let("n", tanh(W["n"] @ x + b_in + r * (U["n"] @ h + b_hn)))
    gru.update(h, (1 - z) * n + z * h)
    return gru
