"""The Numba backend: a scalar SymPy printer and the plain context for ``templates/numba``.

The same derivation as the NumPy backend (step_jacobian, step_immediate, step_derivative,
output_factor, dL_dw_o), printed for scalars inside compiled loops. The scalar module runs a batch
in blocks of ``WIDTH`` sequences in lockstep: for each block w_i·x_t, the forward recursion storing
o_t one step at a time over the whole block, then backward carrying δ_t = δ_(t+1) ∂o_(t+1)/∂o_t from
t = n down — the cumulative product of the Σ/Π formula, one factor per step — so a block's states
and gates stay in cache whatever the batch size. f is printed as a compiled function of the module
(``KernelPrinter``: tanh and σ without libm, so the loops over a block vectorise; the exact f for
the complex step).

Beside that context, what the generic cell module (``numba_cells``) shares: the printers
(``CellKernelPrinter``: exp too), and ``vectorised``, which copies the NumPy module's own functions
into a Numba module for its wide calls.
"""

from __future__ import annotations

import ast

import sympy as sp

from ..notes.derive import Derivation
from . import numpy_backend
from .numpy_backend import NumPyCodePrinter

#: Sequences of one block of the scalar module, run in lockstep: its work arrays (w_i·x_t, states,
#: gates: about 2 (n + 1) · WIDTH floats) and its inputs stay in cache. Not a power of two: rows of
#: 2 KiB or 4 KiB (256, 512 sequences) map to the same few cache sets, and the strided writes of
#: w_i·x_t and the row-by-row passes evict each other (about 1.4× slower in bench/bench_backends.py
#: --only widths); 33 cache lines per row spread over all sets.
WIDTH = 264
#: From this batch size on runs of blocks go to Numba's threads (one run of consecutive blocks per
#: thread). bench/bench_backends.py --only parallel on 2 shared cores: quiet, parallel / serial was
#: 0.49–0.55 from B = 1024 on; loaded, 2.3–3.9 up to B = 4096, 1.7 at 10⁴, 1.06 at 10⁵ and 0.93 at
#: 10⁶ (the second thread waits for a core): so only batches this wide go parallel.
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


#: The NumPy module's functions that validate the arguments; the Numba module copies them.
VALIDATION = ("_inputs", "_labels")


def validation(numpy_source: str) -> str:
    """The NumPy module's validation functions and the module functions they call, verbatim, so
    both backends accept and reject exactly the same arguments with the same messages."""
    tree = ast.parse(numpy_source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    wanted = function_closure(functions, VALIDATION)
    return "\n\n\n".join(
        ast.get_source_segment(numpy_source, node)
        for node in tree.body
        if getattr(node, "name", None) in wanted
    )


#: The NumPy module's functions a Numba module copies to call (a cell module's bptt_terms and what it
#: calls), renamed with this prefix (``bptt_terms`` → ``_numpy_bptt_terms``, ``_sigmoid`` →
#: ``_numpy_sigmoid``).
PREFIX = "_numpy_"


def function_closure(functions: dict, roots) -> set[str]:
    """``roots`` and every module function they call, transitively."""
    wanted, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        calls = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)}
        pending.extend(sorted(calls & set(functions)))
    return wanted


def _with_comments(lines: list[str], node: ast.stmt) -> str:
    """A top-level statement's source with the comment lines right above it."""
    first = node.lineno - 1
    while first > 0 and lines[first - 1].startswith("#"):
        first -= 1
    return "\n".join(lines[first : node.end_lineno])


def vectorised(numpy_source: str, roots: tuple[str, ...], shared_roots: tuple[str, ...]) -> str:
    """The NumPy module's functions ``roots`` and the module functions they call, verbatim but for
    their names: each gets ``PREFIX`` (its calls too, found as name tokens, so docstrings and
    comments are untouched). The functions of ``shared_roots`` (the validation), which the Numba
    module copies under their own names, are shared, not copied twice; so are the constants, which
    the Numba module copies, all of them."""
    import io
    import tokenize

    tree = ast.parse(numpy_source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    shared = function_closure(functions, shared_roots)
    wanted = function_closure(functions, roots) - shared
    renamed = {name: PREFIX + name.lstrip("_") for name in wanted}
    assert len(set(renamed.values())) == len(renamed), f"two copied functions get one name: {renamed}"
    lines = numpy_source.splitlines()
    pieces = [_with_comments(lines, node) for node in tree.body if getattr(node, "name", None) in wanted]
    text = "\n\n\n".join(pieces)
    edits, previous = [], None
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and token.string in renamed and previous != ".":
            edits.append(token.start)
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token.string
    out = text.splitlines()
    for row, column in reversed(edits):
        line = out[row - 1]
        name = line[column:].split("(", 1)[0].split()[0].rstrip(":,)")
        out[row - 1] = line[:column] + renamed[name] + line[column + len(name) :]
    return "\n".join(out)


def context(derivation: Derivation, mode: str, command: str, numpy_source: str) -> dict:
    """Everything ``templates/numba/module.py.j2`` places. No SymPy objects.

    ``numpy_source`` is the NumPy module for the same model and mode, whose validation is reused.
    """
    model = derivation.model
    u = derivation.unrolled
    step = u.step
    printer = NumbaScalarPrinter()
    kernel = KernelPrinter()

    def code(expr, names=None, printer=printer):
        if names:
            expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
        return printer.doprint(expr)

    pieces = numpy_backend.factored(derivation)
    uses_derivative = pieces["shared"] != 1
    derivative_name, delta, gate = sp.Symbol("derivative"), sp.Symbol("delta"), sp.Symbol("gate")

    def with_derivative(expr):
        return expr * derivative_name if uses_derivative else expr

    local = {step.o: "o_t", step.o_prev: "o_prev"}
    projection = sp.Symbol("projection_t")
    recurrent = sp.expand(step.vector_a - step.projection)  # w_i·x_t is hoisted (one Dot)
    output = {u.o[-1]: "o_n", u.y_hat: "y_hat", u.y: "y", u.w_o: "w_o"}
    # The docstring formulas are the NumPy backend's, so the two modules read alike.
    formulas = numpy_backend.docstring_formulas(derivation)
    result = {
        "command": command,
        "mode": mode,
        "steps": derivation.n if mode == "unrolled" else None,
        "activation": model.activation,
        "input_size": model.inputs,
        "unrolled_inputs": model.inputs <= UNROLLED_INPUTS,
        "width": WIDTH,
        "parallel_batch": PARALLEL_BATCH,
        "kernel_step": code(u.activation.apply(projection + recurrent), local, kernel),
        "derivative_code": code(pieces["derivative"], local) if uses_derivative else None,
        "jacobian_code": code(with_derivative(pieces["jacobian"]), local),
        "gate_code": code(with_derivative(delta)),
        "term_h_code": code(gate * pieces["immediate_h"], local),
        "gate_i_code": code(gate * pieces["coefficient_i"], local),
        "logit_code": code(u.logit, output),
        "output_code": code(u.output_definition, output),
        "output_factor_code": code(derivation.output_factor, output),
        "dL_dw_o_code": code(derivation.dL_dw_o, output),
        "formulas": formulas,
        "validation": validation(numpy_source),
    }
    helpers = printer.helpers | kernel.helpers
    result["uses_relu"] = "relu" in helpers
    result["uses_heaviside"] = "heaviside" in helpers
    result["uses_tanh"] = "tanh" in helpers
    result["uses_logistic"] = "logistic" in helpers
    return result
