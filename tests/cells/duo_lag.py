"""Two states and a lag, with a readout bias: a gate g mixes the cell state c with a candidate that
reads h two steps back, and h adds a per-unit recurrence (IndRNN's u ⊙ h) to tanh(c_t).

    g = σ(W_g x + U_g h + b_g),  c' = g ⊙ c + (1 − g) ⊙ tanh(W_c x + S h_(t−2)),  h' = tanh(c') + u ⊙ h
"""

from symbolic.cells.spec import Cell, sigmoid, tanh

cell = Cell("duo", readout="w_y", readout_bias="b_y", readout_state="h", description="two states and a lag")
x, h, c = cell.input(), cell.state("h"), cell.state("c")
W_g, U_g, b_g = cell.matrix("W_g", "H", "D"), cell.matrix("U_g", "H", "H"), cell.vector("b_g")
W_c, S, u = cell.matrix("W_c", "H", "D"), cell.matrix("S", "H", "H"), cell.vector("u")
g = cell.let("g", sigmoid(W_g @ x + U_g @ h + b_g))
c_t = cell.update(c, g * c + (1 - g) * tanh(W_c @ x + S @ cell.lag(h, 2)))
cell.update(h, tanh(c_t) + u * h)

CELL = cell
