"""A minimal gated unit (Zhou et al. 2016), a user's cell for the tests, exactly as in the docstring of
symbolic/cells/spec.py: one gate f that both keeps and writes, and a map applied to f ⊙ h.

    f = σ(W_f x + U_f h + b_f),  n = tanh(W_h x + U_h (f ⊙ h) + b_h),  h' = (1 − f) ⊙ h + f ⊙ n
"""

from symbolic.cells.spec import Cell, sigmoid, tanh

cell = Cell("mgu", readout="w_y")
x, h = cell.input(), cell.state("h")
W_f, U_f, b_f = cell.matrix("W_f", "H", "D"), cell.matrix("U_f", "H", "H"), cell.vector("b_f")
W_h, U_h, b_h = cell.matrix("W_h", "H", "D"), cell.matrix("U_h", "H", "H"), cell.vector("b_h")
f = cell.let("f", sigmoid(W_f @ x + U_f @ h + b_f))
n = cell.let("n", tanh(W_h @ x + U_h @ (f * h) + b_h))
cell.update(h, (1 - f) * h + f * n)

CELL = cell
