"""The notes' RNN: o_t = f(w_i x_t + w_h o_(t−1) [+ b_h]), ŷ = σ(w_oᵀ o_n [+ b_o]).

At H = 1 without biases this is the notes' model exactly; ``symbolic.notes`` adds its Σ/Π story on top.
"""

from __future__ import annotations

from ..activations import ACTIVATIONS
from .spec import Cell


def cell(activation: str = "tanh", bias: bool = False) -> Cell:
    f = ACTIVATIONS[activation].apply
    rnn = Cell("rnn", readout="w_o", readout_bias="b_o" if bias else None,
               description=f"the notes' RNN, o_t = {activation}(w_i x_t + w_h o_(t-1)"
                           + (" + b_h)" if bias else ")"),
               positional=("w_i", "w_h", "w_o", "b_h", "b_o") if bias else ("w_i", "w_h", "w_o"),
               constants={"ACTIVATION": activation, "BIAS": bias})
    x, o = rnn.input(), rnn.state("o")
    w_i, w_h = rnn.matrix("w_i", "H", "D"), rnn.matrix("w_h", "H", "H")
    a = w_i @ x + w_h @ o
    if bias:
        a += rnn.vector("b_h")
    rnn.update(o, f(a))
    return rnn
