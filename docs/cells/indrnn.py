"""IndRNN (Li et al. 2018): each unit sees only its own past, through the per-unit weight u.

    h' = relu(W x + u ⊙ h + b)
"""

from symbolic.cells.spec import Cell, relu

cell = Cell("indrnn", readout="w_y", description="IndRNN, h_t = relu(W x_t + u ⊙ h_(t-1) + b)")
x, h = cell.input(), cell.state("h")
W, u, b = cell.matrix("W", "H", "D"), cell.vector("u"), cell.vector("b")
cell.update(h, relu(W @ x + u * h + b))

CELL = cell
