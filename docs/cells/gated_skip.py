"""A gated skip RNN: a gate g chooses between a new value, which also reads the state two steps back
through S, and the state three steps back as it is (two lags of one state, ``cell.lag``).

    g = σ(W_g x + U_g h + b_g),  n = tanh(W_n x + U_n h + S h_(t−2)),  h' = g ⊙ n + (1 − g) ⊙ h_(t−3)

δh_t receives from step t + 1 (through U_g, U_n), from step t + 2 (through Sᵀ) and from step t + 3
(elementwise, (1 − g_(t+3)) ⊙ δh_(t+3)).
"""

from symbolic.cells.spec import Cell, sigmoid, tanh

cell = Cell("gated_skip", readout="w_y", description="a gated skip RNN reading h_(t-2) and h_(t-3)")
x, h = cell.input(), cell.state("h")
W_g, U_g, b_g = cell.matrix("W_g", "H", "D"), cell.matrix("U_g", "H", "H"), cell.vector("b_g")
W_n, U_n, S = cell.matrix("W_n", "H", "D"), cell.matrix("U_n", "H", "H"), cell.matrix("S", "H", "H")
g = cell.let("g", sigmoid(W_g @ x + U_g @ h + b_g))
n = cell.let("n", tanh(W_n @ x + U_n @ h + S @ cell.lag(h, 2)))
cell.update(h, g * n + (1 - g) * cell.lag(h, 3))

CELL = cell
