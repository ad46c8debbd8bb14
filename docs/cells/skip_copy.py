"""The skip RNN with K = 3 written without lags: two copy states carry o back, o1_t = o_(t−1),
o2_t = o_(t−2), so w_s @ o2 reads o_(t−3) (the built-in ``--cell skip --skip 3`` reads it in one term,
``cell.lag(o, 3)``).

    o' = tanh(w_i x + w_h o + w_s o2),   o1' = o,   o2' = o1
"""

from symbolic.cells.spec import Cell, tanh

cell = Cell("skip_copy", readout="w_o", description="the skip RNN with K = 3 by copy states o1' = o, o2' = o1")
x, o, o1, o2 = cell.input(), cell.state("o"), cell.state("o1"), cell.state("o2")
w_i, w_h, w_s = cell.matrix("w_i", "H", "D"), cell.matrix("w_h"), cell.matrix("w_s")
cell.update(o, tanh(w_i @ x + w_h @ o + w_s @ o2))
cell.update(o1, o)
cell.update(o2, o1)

CELL = cell
