"""The LSTM with forget gate, gates in torch.nn.LSTM's order i, f, g, o.

torch.nn.LSTM holds weight_ih_l0 = [W_i; W_f; W_g; W_o], weight_hh_l0 = [U_i; U_f; U_g; U_o],
bias_ih_l0 + bias_hh_l0 = [b_i; b_f; b_g; b_o]; the readout nn.Linear(H, 1, bias=False).weight = w_yᵀ.
"""

from __future__ import annotations

from .spec import Cell, sigmoid, tanh

GATES = ("i", "f", "g", "o")


def cell() -> Cell:
    # b_f = 1: the forget gate starts mostly open (f ≈ 0.73), so the cell path carries the gradient back
    # over long gaps from the first update (Gers, Schmidhuber & Cummins 2000; Jozefowicz et al. 2015);
    # bptt train starts from b_f = 5 (f ≈ 0.993: 0.993⁴⁹ ≈ 0.7 of the first step survives 49 steps,
    # where 0.73⁴⁹ ≈ 2e-7 would), which --data long needs to be learnt in seconds.
    lstm = Cell("lstm", readout="w_y", readout_state="h", init={"b_f": 1.0}, training={"b_f": 5.0},
                description="the LSTM with forget gate (torch.nn.LSTM's gates i, f, g, o)")
    x, h, c = lstm.input(), lstm.state("h"), lstm.state("c")
    W = {gate: lstm.matrix(f"W_{gate}", "H", "D") for gate in GATES}
    U = {gate: lstm.matrix(f"U_{gate}", "H", "H") for gate in GATES}
    b = {gate: lstm.vector(f"b_{gate}") for gate in GATES}
    a = {gate: W[gate] @ x + U[gate] @ h + b[gate] for gate in GATES}
    i = lstm.let("i", sigmoid(a["i"]))
    f = lstm.let("f", sigmoid(a["f"]))
    g = lstm.let("g", tanh(a["g"]))
    o = lstm.let("o", sigmoid(a["o"]))
    c_t = lstm.update(c, f * c + i * g)
    lstm.update(h, o * tanh(c_t))
    return lstm
