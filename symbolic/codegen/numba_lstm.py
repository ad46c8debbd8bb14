"""The Numba backend for the LSTM: the context for ``templates/numba/lstm.py.j2``.

The compiled module does what the NumPy LSTM module (``templates/numpy/lstm.py.j2``) does, with the
same interface: its constants, ``init_params`` and argument validation are copied verbatim from the
NumPy module for the same model and mode, so both accept and reject exactly the same arguments with
the same messages. The work runs in ``@njit(cache=True)`` kernels, time-major (each step reads and
writes contiguous (B, H) blocks):

- forward, per step: one matrix product h_(t−1) [U_i; U_f; U_g; U_o]ᵀ for the whole batch (compiled
  loops, no BLAS: so Numba needs no SciPy), then per sequence and unit W_· x_t + b_· and the cell
  equations;
- backward, per step: δc_t and δa_·,t entry by entry, then δh_(t−1) = Σ_· U_·ᵀ δa_·,t as one matrix
  product; the weight gradients Σ_t δa_t x_tᵀ and Σ_t δa_t h_(t−1)ᵀ are taken over spans of steps,
  one product per span of about ``SPAN_ROWS`` rows.

From ``VECTORISED_ENTRIES`` entries per step (B·H) on, the module runs the NumPy LSTM module's own
functions (copied with the prefix ``_numpy_``): BLAS and NumPy's SIMD f over the whole batch beat
the compiled loops there.

Every elementwise formula is printed by SymPy (``NumbaScalarPrinter``, scalar code) from
``LSTMDerivation``'s unit formulas, with the unit symbols kept as local names (``i_t``, ``c_prev``,
``f_next``, ``delta_c_next`` …) and tanh(c_t) read from the stored forward value ``tanh_c_t``. The
unrolled mode compiles the same loop as the loop mode behind the NumPy module's fixed-length check,
as the scalar and matrix Numba modules do.
"""

from __future__ import annotations

import ast

import sympy as sp

from ..derive_lstm import GATES, LSTMDerivation
from ..model import Model
from . import lstm_backend
from .numba_backend import NumbaScalarPrinter, function_closure, vectorised

#: Sequences per chunk of the elementwise work of one step (the unit of the parallel loops).
ROWS = 64
#: From this many entries per step (B·H) on, the elementwise work of a step runs on Numba's
#: threads in chunks of ROWS sequences (the matrix products stay serial). Measured with
#: bench/bench_lstm.py on the shared 2-core machine, when the products were still BLAS's: at
#: B·H = 65 536 the parallel kernels were slower than the serial ones (forward 3.9 s against 2.6 s,
#: backward 8.9 s against 2.4 s), so they are kept for much wider steps only; arrays that wide take
#: the vectorised path (VECTORISED_ENTRIES), so in practice only list inputs reach them.
PARALLEL_ENTRIES = 1 << 20
#: The weight gradients are summed over the rows (sequences × steps) of several steps at once, in
#: one matrix product of about this many rows.
SPAN_ROWS = 4096
#: From this many entries per step (B·H) on, forward, states, loss and loss_and_grad are the NumPy
#: LSTM module's own functions. Measured (CPU time, n = 100, loss_and_grad, NumPy / compiled):
#: H = 16: 16.5 at B·H = 16, 2.5 at 256, 1.46 at 1024, 0.77 at 4096; H = 128: 1.95 at 128,
#: 0.95 at 1024, 0.59 at 4096.
VECTORISED_ENTRIES = 2048

#: What the Numba module copies from the NumPy LSTM module, verbatim: the constants (module-level
#: assignments) and these functions with the module functions they call.
COPIED_FUNCTIONS = ("init_params", "_inputs", "_labels", "_stacked")


def copied(numpy_source: str) -> dict[str, str]:
    """The NumPy LSTM module's constants and its ``init_params``/validation functions, as source.

    ``constants``: every module-level assignment (CELL, STEPS, MODE, …, PARAMS, _I…_O, _H) with the
    comment lines directly above it; ``functions``: ``COPIED_FUNCTIONS`` and the functions they call.
    """
    tree = ast.parse(numpy_source)
    lines = numpy_source.splitlines()
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    wanted = function_closure(functions, COPIED_FUNCTIONS)
    constants = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            first = node.lineno - 1
            while first > 0 and lines[first - 1].startswith("#:"):
                first -= 1  # the comment that documents the constant
            constants.append("\n".join(lines[first : node.end_lineno]))
    return {
        "constants": "\n".join(constants),
        "functions": "\n\n\n".join(
            ast.get_source_segment(numpy_source, node)
            for node in tree.body
            if getattr(node, "name", None) in wanted
        ),
    }


def context(model: Model, mode: str, command: str, numpy_source: str) -> dict:
    """Everything ``templates/numba/lstm.py.j2`` places. No SymPy objects.

    ``numpy_source`` is the NumPy LSTM module for the same model and mode; its constants,
    ``init_params`` and validation are copied, its docstring formulas are the same (``lstm_backend``).
    """
    d = LSTMDerivation(model)
    printer = NumbaScalarPrinter()
    tanh_c = sp.Symbol("tanh_c_t")
    stored = {d.tanh_c: tanh_c}  # tanh(c_t) → the forward value stored in the forward pass

    def code(expr) -> str:
        return printer.doprint(sp.sympify(expr).xreplace(stored))

    # The formulas the kernels print must be the unit's own: δh_n = (ŷ − y) w_y, the gradient
    # summands δa_· x, δa_· h_(t−1), δa_·, and δh_(t−1) = Σ_· U_· δa_· (entry by entry).
    residual = sp.cancel(d.delta_h_n / d.w_y)
    assert residual == d.output_factor and not residual.has(d.w_y)
    for gate in GATES:
        delta = d.delta_a_symbol[gate]
        assert d.summands[f"W_{gate}"] == delta * d.x and d.summands[f"U_{gate}"] == delta * d.h_prev
        assert d.summands[f"b_{gate}"] == delta
        assert sp.diff(d.delta_h_prev, delta) == d.U[gate]
        assert d.preactivation[gate] == d.W[gate] * d.x + d.U[gate] * d.h_prev + d.b[gate]
    assert d.dL_dw_y == d.output_factor * d.h_n
    # The last step's δc_t: δc_(n+1) = 0 substituted (there is no f_(n+1) to read).
    last_delta_c = d.delta_c_formula.xreplace({d.delta_c_next: sp.S.Zero})
    assert not last_delta_c.has(d.f_next)

    # The stored forward values the backward formulas read, as (local name, row of values, step).
    backward = [d.delta_c_formula, last_delta_c, *d.delta_a.values()]
    read = set().union(*(sp.sympify(e).xreplace(stored).free_symbols for e in backward))
    rows = {**{d.gate[gate]: k for k, gate in enumerate(GATES)}, d.c: 4, tanh_c: 5, d.c_prev: 4}
    backward_loads = [
        {"name": str(symbol), "row": row, "time": "t - 1" if symbol == d.c_prev else "t"}
        for symbol, row in rows.items()
        if symbol in read
    ]

    formulas = lstm_backend.context(model, "loop", command)["formulas"]
    pieces = copied(numpy_source)
    return {
        "command": command,
        "mode": mode,
        "steps": model.steps if mode == "unrolled" else None,
        "input_size": model.inputs,
        "hidden_size": model.hidden,
        "gates": list(GATES),
        "rows": ROWS,
        "parallel_entries": PARALLEL_ENTRIES,
        "span_rows": SPAN_ROWS,
        "vectorised_entries": VECTORISED_ENTRIES,
        "vectorised": vectorised(
            numpy_source, ("forward", "states", "loss", "loss_and_grad"), COPIED_FUNCTIONS, constants=False
        ),
        "gate_code": [{"name": gate, "code": code(d.gate_value[gate])} for gate in GATES],
        "cell_code": code(d.cell_state),
        "tanh_c_code": printer.doprint(d.tanh_c),
        "hidden_code": code(d.hidden_state),
        "delta_c_code": code(d.delta_c_formula),
        "last_delta_c_code": code(last_delta_c),
        "delta_a_code": [{"name": gate, "code": code(d.delta_a[gate])} for gate in GATES],
        "backward_loads": backward_loads,
        "output_factor_code": printer.doprint(d.output_factor),
        "formulas": formulas,
        "constants": pieces["constants"],
        "functions": pieces["functions"],
        "uses_relu": "relu" in printer.helpers,
        "uses_heaviside": "heaviside" in printer.helpers,
    }


__all__ = ["PARALLEL_ENTRIES", "ROWS", "SPAN_ROWS", "VECTORISED_ENTRIES", "context", "copied"]
