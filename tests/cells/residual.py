"""A residual cell whose recurrent matrix U acts on a value that depends on h only through another
matrix: h_t = h_(t−1) + tanh(W x_t + U (m_t ⊙ m_t)), m_t = tanh(V h_(t−1)); not a built-in cell."""

from symbolic.cells.spec import Cell, tanh

cell = Cell("residual", readout="w_y", description="a residual cell, h' = h + tanh(W x + U (m ⊙ m)), m = tanh(V h)")
x, h = cell.input(), cell.state("h")
W, U, V = cell.matrix("W", "H", "D"), cell.matrix("U"), cell.matrix("V")
m = cell.let("m", tanh(V @ h))
cell.update(h, h + tanh(W @ x + U @ (m * m)))

CELL = cell
