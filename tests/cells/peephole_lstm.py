"""An LSTM read out from its cell state c, with a peephole w_p ⊙ c_(t−1) into the input gate and a
residual h; not a built-in cell. Its readout state has uses within the step, its direct path
∂c_t/∂c_(t−1) = f + (peephole term) is not a single gate, and h has an identity direct path."""

from symbolic.cells.spec import Cell, sigmoid, tanh

cell = Cell("peephole_lstm", readout="w_y", readout_state="c", description="an LSTM with a peephole, read out from c")
x, h, c = cell.input(), cell.state("h"), cell.state("c")
w_p = cell.vector("w_p")
W = {gate: cell.matrix(f"W_{gate}", "H", "D") for gate in "ifgo"}
U = {gate: cell.matrix(f"U_{gate}", "H", "H") for gate in "ifgo"}
i = cell.let("i", sigmoid(W["i"] @ x + U["i"] @ h + w_p * c))
f = cell.let("f", sigmoid(W["f"] @ x + U["f"] @ h))
g = cell.let("g", tanh(W["g"] @ x + U["g"] @ h))
o = cell.let("o", sigmoid(W["o"] @ x + U["o"] @ h))
c_t = cell.update(c, f * c + i * g)
cell.update(h, o * tanh(c_t) + h)

CELL = cell
