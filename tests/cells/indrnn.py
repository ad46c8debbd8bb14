"""IndRNN (Li et al. 2018), a user's cell for the tests: each unit sees only its own past, through u.

    h_t = relu(W x_t + u ⊙ h_(t−1) + b)

ReLU is not analytic: the proof keeps its derivative [a > 0] a symbol of its own in the exact identity and
evaluates the 60-digit check away from the kink.
"""

from symbolic.cells.spec import Cell, relu

cell = Cell("indrnn", readout="w_y", description="IndRNN, h_t = relu(W x_t + u ⊙ h_(t-1) + b)")
x, h = cell.input(), cell.state("h")
W, u, b = cell.matrix("W", "H", "D"), cell.vector("u"), cell.vector("b")
cell.update(h, relu(W @ x + u * h + b))

CELL = cell
