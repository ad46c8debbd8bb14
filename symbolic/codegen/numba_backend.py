"""The Numba backend: a scalar SymPy printer and the plain context for ``templates/numba``.

The same derivation as the NumPy backend (step_jacobian, step_immediate, step_derivative,
output_factor, dL_dw_o), printed for scalars inside compiled loops. The scalar module runs a batch
in blocks of ``WIDTH`` sequences in lockstep: for each block w_i·x_t, the forward recursion storing
o_t one step at a time over the whole block, then backward carrying δ_t = δ_(t+1) ∂o_(t+1)/∂o_t from
t = n down — the cumulative product of the Σ/Π formula, one factor per step — so a block's states
and gates stay in cache whatever the batch size. f is printed as a compiled function of the module
(``KernelPrinter``: tanh and σ without libm, so the loops over a block vectorise; the exact f for
the complex step).

Both backends print the same ``notes_module.NotesModule``; neither reads the other's text. The
generic cell module (``numba_cells``) shares the printers (``CellKernelPrinter``: exp too).
"""

from __future__ import annotations

import sympy as sp

from ..notes.derive import Derivation
from .notes_module import prepare
from .numpy_backend import NumPyCodePrinter

#: Sequences of one block of the scalar module, run in lockstep so its work arrays stay in cache; not a
#: power of two, whose rows map to the same cache sets (bench/bench_backends.py --only widths; the
#: figures are in docs/performance.md).
WIDTH = 264
#: From this batch size on runs of blocks go to Numba's threads: on two shared cores the second thread
#: pays off only for batches this wide (bench/bench_backends.py --only parallel, docs/performance.md).
PARALLEL_BATCH = 100_000
#: Up to this input size the input gradient keeps one running sum per input in registers.
UNROLLED_INPUTS = 8


class NumbaScalarPrinter(NumPyCodePrinter):
    """NumPy's printer for scalar code in ``@njit`` functions: ``np.tanh``, ``np.exp`` work on
    scalars (float64 and complex128) there; ReLU and Heaviside become small compiled helpers,
    written on the real part so a complex step does not stop the compilation."""

    def __init__(self, settings=None):
        super().__init__(settings)
        self.helpers: set[str] = set()

    def _print_relu(self, expr):
        self.helpers.add("relu")
        return f"_relu({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        self.helpers.add("heaviside")
        value, at_zero = expr.args if len(expr.args) == 2 else (expr.args[0], sp.S.Half)
        return f"_heaviside({self._print(value)}, {self._print(sp.Float(at_zero))})"


class KernelPrinter(NumbaScalarPrinter):
    """The scalar printer for the scalar module's loops over a block: tanh and σ become the module's
    compiled ``_tanh`` and ``_logistic`` (no libm call per value, so the loops vectorise; the exact f
    for complex arguments)."""

    def _print_tanh(self, expr):
        self.helpers.add("tanh")
        return f"_tanh({self._print(expr.args[0])})"

    def _print_sigmoid(self, expr):
        self.helpers.add("logistic")
        return f"_logistic({self._print(expr.args[0])})"


class CellKernelPrinter(KernelPrinter):
    """``KernelPrinter`` for the generic cell module's kernels (``templates/numba/cell.py.j2``), which
    also turns exp into the module's compiled ``_exp`` (no libm call for real arguments; NumPy's exp,
    exact, for the complex step)."""

    def _print_exp(self, expr):
        self.helpers.add("exp")
        return f"_exp({self._print(expr.args[0])})"


def context(derivation: Derivation, mode: str, command: str) -> dict:
    """Everything ``templates/numba/module.py.j2`` places, printed from the same ``NotesModule`` as the
    NumPy module (its validation is printed by the NumPy template's own macros)."""
    notes = prepare(derivation, mode)
    printer, kernel = NumbaScalarPrinter(), KernelPrinter()
    result = {
        "command": command,
        "mode": mode,
        "steps": notes.steps,
        "activation": derivation.model.activation,
        "input_size": notes.input_size,
        "unrolled_inputs": notes.input_size <= UNROLLED_INPUTS,
        "width": WIDTH,
        "parallel_batch": PARALLEL_BATCH,
        "kernel_step": kernel.doprint(notes.step),
        "derivative_code": printer.doprint(notes.derivative) if notes.derivative is not None else None,
        "jacobian_code": printer.doprint(notes.jacobian),
        "gate_code": printer.doprint(notes.gate),
        "term_h_code": printer.doprint(notes.term_h),
        "gate_i_code": printer.doprint(notes.gate_i),
        "logit_code": printer.doprint(notes.logit),
        "output_code": printer.doprint(notes.output),
        "output_factor_code": printer.doprint(notes.output_factor),
        "dL_dw_o_code": printer.doprint(notes.dL_dw_o),
        # The docstring formulas are the NumPy module's, so the two modules read alike.
        "formulas": notes.formulas,
    }
    helpers = printer.helpers | kernel.helpers
    result.update({f"uses_{name}": name in helpers for name in ("relu", "heaviside", "tanh", "logistic")})
    return result
