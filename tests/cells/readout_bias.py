"""A cell with a readout bias, ŷ = σ(w_yᵀ h_n + b_y): a parameter of shape ()."""

from symbolic.cells.spec import Cell, tanh

c = Cell("robias", readout="w_y", readout_bias="b_y")
x, h = c.input(), c.state("h")
W, U, b = c.matrix("W", "H", "D"), c.matrix("U"), c.vector("b")
c.update(h, tanh(W @ x + U @ h + b))
CELL = c
