"""The NumPy backend for a hidden state of size H (or biases): the context for ``templates/numpy/matrix.py.j2``.

The matrix BPTT of ``MatrixDerivation``, batched over the sequences and time-major inside
(o[t] is a (B, H) block):

    a_t = W_i x_t + W_h o_(t−1) (+ b_h),  o_t = f(a_t),  ŷ = σ(w_oᵀ o_n (+ b_o))
    δ_n = (ŷ − y) w_o,  gate_t = f′(a_t) ⊙ δ_t = ∂L/∂a_t,  δ_(t−1) = W_hᵀ gate_t
    ∂L/∂W_h = Σ_t gate_t o_(t−1)ᵀ,  ∂L/∂W_i = Σ_t gate_t x_tᵀ,  ∂L/∂b_h = Σ_t gate_t

The elementwise pieces are printed by SymPy from the derivation of one hidden unit (the matrix
formulas act entry by entry there): the step o_t = f(a_t) with the activation applied to the
derivation's pre-activation, f′(a_t) written with the stored output (``derivative(t)``), the
residual ŷ − y of δ_n and the logit. A row of states times W_hᵀ prints as ``o @ w_h.T`` (a batch of
row vectors), so the recursion is one matrix product per step for all sequences at once, done in
place: row t of o holds W_i x_t (+ b_h) and becomes o_t. The weight gradients are one product over
all gates for narrow batches and sums accumulated step by step for wide ones (``PER_STEP_ENTRIES``).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from ..derive_matrix import MatrixDerivation
from ..model import Model
from .numpy_backend import NumPyCodePrinter, in_place, text


class RowsTimesTransposed(sp.Function):
    """A batch of row vectors times a matrix transposed: ``rows @ matrix.T`` (W_h o for each row o)."""

    is_commutative = True


class RowsTimes(sp.Function):
    """A batch of row vectors times a matrix: ``rows @ matrix`` (W_hᵀ g for each row g)."""

    is_commutative = True
    #: @ binds like *: as a factor of a product it is parenthesized (f′ * (g @ W), not
    #: (f′ * g) @ W), alone it is not (ruff format removes redundant parentheses).
    precedence = PRECEDENCE["Mul"]


class MatrixCodePrinter(NumPyCodePrinter):
    """The NumPy printer, with W_h o_(t−1) for a batch of states written as one matrix product."""

    def _print_RowsTimesTransposed(self, expr):
        rows, matrix = expr.args
        return f"{self._print(rows)} @ {self._print(matrix)}.T"

    def _print_RowsTimes(self, expr):
        rows, matrix = expr.args
        return f"{self._print(rows)} @ {self._print(matrix)}"


_PRINTER = MatrixCodePrinter()


def code(expr: sp.Expr, names: dict | None = None) -> str:
    if names:
        expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    return _PRINTER.doprint(expr)


def _unit(model: Model) -> MatrixDerivation:
    """The matrix derivation of one hidden unit and one input over two steps: its entries are the
    elementwise formulas every (t, h) of the generated code evaluates."""
    return MatrixDerivation(2, model.activation, hidden=1, inputs=1, bias=model.bias)


#: From this many entries per step (B·H) on, the generated loss_and_grad sums the weight gradients
#: step by step instead of keeping every gate for one product (measured with bench/bench_hidden.py:
#: the per-step sums win from about B = 48 at H = 16 and B = 12 at H = 128, and lose at B = 1).
PER_STEP_ENTRIES = 1024


def _recurrent(unit: MatrixDerivation, t: int, previous: sp.Expr | None) -> sp.Expr:
    """W_h o_(t−1) of the derivation's a_t, as a batched product with the rows ``previous``
    (0 at t = 1, where o_0 = 0); what remains of a_t, W_i x_t (+ b_h), is hoisted out."""
    a = unit.preactivation(min(t, 2))[0]
    state = unit.state(min(t, 2) - 1)[0]
    recurrent = unit.W_h[0, 0] * state
    inputs = sp.expand(a - recurrent)
    assert not (inputs.free_symbols & set(unit.o[0])), "the input part must not involve the states"
    return RowsTimesTransposed(previous, sp.Symbol("w_h")) if recurrent != 0 else sp.S.Zero


def _in_place_step(unit: MatrixDerivation, t: int, name: str, previous: str | None) -> dict:
    """The forward step on the row ``name`` of o, which holds W_i x_t (+ b_h): the statement's
    right-hand side for ``name += W_h o_(t−1)`` (None at t = 1) and f applied in place."""
    recurrent = _recurrent(unit, t, sp.Symbol(previous) if previous else None)
    return {
        "recurrent": code(recurrent) if recurrent != 0 else None,
        "activation": in_place(unit.activation, name),
    }


def context(model: Model, mode: str, command: str) -> dict:
    """Everything ``matrix.py.j2`` places: names, printed expressions, formulas. No SymPy objects."""
    unit = _unit(model)
    steps = model.steps
    o_symbol = unit.o[1][0]  # o_t of the unit, at t = 2
    derivative = unit.derivative(2)[0]
    uses_derivative = not derivative.is_number
    if derivative.is_number and derivative != 1:
        raise NotImplementedError("a constant f′ other than 1 is not supported")
    states = sp.IndexedBase("o")
    t = sp.Symbol("t")

    def gate_at(index, delta):
        """f′(a_t) ⊙ δ_t with f′ read from the stored o[index]."""
        return code(derivative.xreplace({o_symbol: states[index]}) * delta)

    # -- forward, in place: row t of o holds W_i x_t (+ b_h) and becomes o_t -----------------------
    in_place_step = _in_place_step(unit, 2, "o_t", "o_prev")
    unrolled_steps = []
    if mode == "unrolled":
        for step in range(1, steps + 1):
            # Names of rows of o (views): they hold no memory of their own.
            name = f"o_{step}"
            unrolled_steps.append(
                {
                    "t": step,
                    "name": name,
                    **_in_place_step(unit, step, name, f"o_{step - 1}" if step > 1 else None),
                }
            )
        for step in unrolled_steps:
            # The row gets a name when a later step reads it or this step changes it.
            step["bind"] = bool(step["t"] < steps or step["recurrent"] or step["activation"])

    # -- output and backward ----------------------------------------------------------------------
    residual = sp.cancel(unit.deltas[-1][0] / unit.w_o[0])  # δ_n = (ŷ − y) w_o
    output = {unit.y_hat: "y_hat", unit.y: "y"}
    backward_steps = []
    if mode == "unrolled":
        for step in range(steps, 0, -1):
            # δ_t = W_hᵀ gate_(t+1) written inline, so each step leaves only its row of gate behind.
            delta = (
                sp.Symbol("delta")
                if step == steps
                else RowsTimes(sp.IndexedBase("gate")[step], sp.Symbol("w_h"))
            )
            backward_steps.append({"t": step, "index": step - 1, "gate": gate_at(step, delta)})
    # The same gates for the per-step sums, one at a time: δ_t = W_hᵀ gate_(t+1) from the last one.
    sum_steps = []
    if mode == "unrolled":
        for step in range(steps, 0, -1):
            delta = sp.Symbol("delta") if step == steps else RowsTimes(sp.Symbol("gate_t"), sp.Symbol("w_h"))
            sum_steps.append({"index": step - 1, "gate": gate_at(step, delta)})
    local = {o_symbol: "o_t"}
    return {
        "command": command,
        "mode": mode,
        "steps": steps if mode == "unrolled" else None,
        "activation": model.activation,
        "input_size": model.inputs,
        "hidden_size": model.hidden,
        "bias": model.bias,
        "per_step_entries": PER_STEP_ENTRIES,
        "in_place_step": in_place_step,
        "unrolled_steps": unrolled_steps,
        "backward_steps": backward_steps,
        "sum_steps": sum_steps,
        "output_factor_code": code(residual, output),
        "derivative_code": code(derivative, local) if uses_derivative else None,
        "gate_loop": gate_at(t + 1, sp.Symbol("delta")),
        "gate_first": gate_at(1, sp.Symbol("delta")),
        "gate_step": gate_at(t, sp.Symbol("delta")),
        "formulas": {
            "step": text(unit.activation.apply(sp.Symbol("a_t"))),
            "derivative": text(derivative, local),
            "output_factor": text(residual, output),
        },
    }
