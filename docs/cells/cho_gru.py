"""Cho et al.'s original GRU (2014): the reset gate acts before the recurrent product, U (r ⊙ h)."""

from symbolic.cells.spec import Cell, sigmoid, tanh

cell = Cell("cho_gru", readout="w_y", description="Cho's GRU, n = tanh(W x + U (r ⊙ h) + b)")
x, h = cell.input(), cell.state("h")
W_r, U_r, b_r = cell.matrix("W_r", "H", "D"), cell.matrix("U_r"), cell.vector("b_r")
W_z, U_z, b_z = cell.matrix("W_z", "H", "D"), cell.matrix("U_z"), cell.vector("b_z")
W_n, U_n, b_n = cell.matrix("W_n", "H", "D"), cell.matrix("U_n"), cell.vector("b_n")
r = cell.let("r", sigmoid(W_r @ x + U_r @ h + b_r))
z = cell.let("z", sigmoid(W_z @ x + U_z @ h + b_z))
n = cell.let("n", tanh(W_n @ x + U_n @ (r * h) + b_n))
cell.update(h, (1 - z) * n + z * h)

CELL = cell
