"""A cell whose state update has no activation, h' = U tanh(V h) + W x: δ(W x) is only what step t + 1 sends."""

from symbolic.cells.spec import Cell, tanh

c = Cell("nolin")
x, h = c.input(), c.state("h")
W, V, U = c.matrix("W", "H", "D"), c.matrix("V"), c.matrix("U")
m = c.let("m", tanh(V @ h))
c.update(h, U @ m + W @ x)
CELL = c
