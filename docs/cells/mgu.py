"""A minimal gated unit (Zhou et al. 2016): one forget gate f that both keeps and writes.

    f = σ(W_f x + U_f h + b_f),  n = tanh(W_n x + U_n (f ⊙ h) + b_n),  h' = (1 − f) ⊙ h + f ⊙ n
"""

from symbolic.cells.spec import Cell, sigmoid, tanh

# bptt train starts from b_f = -3: f ≈ 0.05, so h is mostly kept ((1 − f) ⊙ h) over long gaps at first.
cell = Cell("mgu", readout="w_y", description="a minimal gated unit", training={"b_f": -3.0})
x, h = cell.input(), cell.state("h")
W_f, U_f, b_f = cell.matrix("W_f", "H", "D"), cell.matrix("U_f", "H", "H"), cell.vector("b_f")
W_n, U_n, b_n = cell.matrix("W_n", "H", "D"), cell.matrix("U_n", "H", "H"), cell.vector("b_n")
f = cell.let("f", sigmoid(W_f @ x + U_f @ h + b_f))
n = cell.let("n", tanh(W_n @ x + U_n @ (f * h) + b_n))
cell.update(h, (1 - f) * h + f * n)

CELL = cell
