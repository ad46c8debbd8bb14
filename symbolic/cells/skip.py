"""The skip RNN: the notes' RNN with a connection K steps back through time,

    o_t = f(w_i x_t + w_h o_(t−1) + w_s o_(t−K) [+ b_h]),   ŷ = σ(w_oᵀ o_n [+ b_o]),   o_t = 0 for t ≤ 0.

The gradient from o_n reaches o_j through ⌊gap/K⌋ skips and the remaining single steps instead of one
factor per step: the notes' "different type of RNN (skip RNN)" remedy for vanishing gradients.
"""

from __future__ import annotations

from ..activations import ACTIVATIONS
from .spec import Cell


def cell(activation: str = "tanh", bias: bool = False, skip: int = 2) -> Cell:
    f = ACTIVATIONS[activation].apply
    names = ("w_i", "w_h", "w_s", "w_o", "b_h", "b_o") if bias else ("w_i", "w_h", "w_s", "w_o")
    rnn = Cell("skip", readout="w_o", readout_bias="b_o" if bias else None,
               description=f"the skip RNN, o_t = {activation}(w_i x_t + w_h o_(t-1) + w_s o_(t-{skip})"
                           + (" + b_h)" if bias else ")"),
               positional=names, constants={"ACTIVATION": activation, "BIAS": bias, "SKIP": skip})
    x, o = rnn.input(), rnn.state("o")
    w_i, w_h, w_s = rnn.matrix("w_i", "H", "D"), rnn.matrix("w_h", "H", "H"), rnn.matrix("w_s", "H", "H")
    a = w_i @ x + w_h @ o + w_s @ rnn.lag(o, skip)
    if bias:
        a += rnn.vector("b_h")
    rnn.update(o, f(a))
    return rnn
