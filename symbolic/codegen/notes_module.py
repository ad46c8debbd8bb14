"""The notes' scalar module as data both backends print: SymPy expressions over the generated code's
own names (``o_t``, ``o_prev``, ``derivative``, ``delta``, ``gate``…), taken from the derivation once.

``numpy_backend`` prints them with NumPy's printer into ``templates/numpy/module.py.j2`` (arrays of
the whole batch, the suffix product), ``numba_backend`` with the scalar printers into
``templates/numba/module.py.j2`` (compiled loops over a block, the cumulative product step by step).
Neither reads the other's text.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..notes.derive import Derivation


def named(expr: sp.Expr, names: dict) -> sp.Expr:
    """``expr`` with its symbols replaced by symbols named as the generated code's variables."""
    return sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})


def _factor_out(expr: sp.Expr, factor: sp.Expr) -> sp.Expr | None:
    """expr / factor when that quotient no longer involves the factor's symbols, else None."""
    if factor == 1:
        return expr
    quotient = sp.cancel(expr / factor)
    if quotient.free_symbols & factor.free_symbols:
        return None
    return quotient


def _linear_coefficient(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr | None:
    """c when expr = c·symbol with c free of symbol, else None."""
    coefficient = sp.cancel(expr / symbol)
    if symbol in coefficient.free_symbols:
        return None
    return coefficient


def factored(derivation: Derivation) -> dict:
    """The local derivatives with f′(a_t) as a shared factor (SymPy expressions, for every backend).

    "shared" is f′(a_t) (1 when it is a number), "jacobian" and "immediate_h" are ∂o_t/∂o_(t−1)
    and ∂⁺o_t/∂w_h divided by it, "coefficient_i" the c of ∂⁺o_t/∂w_i[d] = c·f′(a_t)·x_t_d.
    """
    step = derivation.unrolled.step
    derivative = derivation.step_derivative
    shared = derivative if not derivative.is_number else sp.S.One
    jacobian = _factor_out(derivation.step_jacobian, shared)
    immediate_h = _factor_out(derivation.step_immediate["w_h"][0], shared)
    # ∂⁺o_t/∂w_i for the vector w_i (f′(a_t) x_t with the vector symbol x_t): the same for every D.
    immediate_i = _factor_out(derivation.step_immediate_vector["w_i"], shared)
    if jacobian is None or immediate_h is None or immediate_i is None:
        raise NotImplementedError("local derivatives that do not share f'(a_t) are not supported yet")
    coefficient_i = _linear_coefficient(immediate_i, step.x_vector)
    if coefficient_i is None:
        raise NotImplementedError("∂⁺o_t/∂w_i is not (coefficient)·x_t: not supported yet")
    return {
        "derivative": derivative,
        "shared": shared,
        "jacobian": jacobian,
        "immediate_h": immediate_h,
        "coefficient_i": coefficient_i,
    }


def docstring_formulas(derivation: Derivation) -> dict:
    """The plain one-line formulas of the module docstring (shared by every backend)."""
    u = derivation.unrolled
    step = u.step
    local = {step.o: "o_t", step.o_prev: "o_prev"}
    output = {u.o[-1]: "o_n", u.y_hat: "y_hat", u.y: "y", u.w_o: "w_o"}
    return {
        "step": sp.sstr(named(u.activation.apply(step.vector_a), local)),
        "derivative": sp.sstr(named(derivation.step_derivative, local)),
        "jacobian": sp.sstr(named(derivation.step_jacobian, local)),
        "immediate_h": sp.sstr(named(derivation.step_immediate["w_h"][0], local)),
        "immediate_i": sp.sstr(named(derivation.step_immediate["w_i"][0], {**local, step.x[0]: "x_t_d"})),
        "output_factor": sp.sstr(named(derivation.output_factor, output)),
        "dL_dw_o": sp.sstr(named(derivation.dL_dw_o, output)),
    }


@dataclass(frozen=True)
class UnrolledStep:
    """Step t of the unrolled forward pass: o_t (named ``name``) = f(projection[t − 1] + hidden)."""

    t: int
    name: str
    value: sp.Expr
    hidden: sp.Expr


@dataclass(frozen=True)
class NotesModule:
    """What both backends print, as expressions over the generated code's names.

    With ``derivative`` = f′(a_t) written with o_t (None when f′ is a number), the gate is δ_t f′(a_t),
    ``jacobian`` ∂o_t/∂o_(t−1) = derivative · ``cofactor``, and each immediate partial is the gate times
    what multiplies f′(a_t) in it (``term_h``: ∂⁺o_t/∂w_h, ``gate_i``: ∂⁺o_t/∂w_i[d] / x_t_d)."""

    mode: str
    steps: int | None
    activation: object
    input_size: int
    step: sp.Expr
    recurrent: sp.Expr
    unrolled: tuple[UnrolledStep, ...]
    derivative: sp.Expr | None
    cofactor: sp.Expr
    jacobian: sp.Expr
    gate: sp.Expr
    term_h: sp.Expr
    gate_i: sp.Expr
    logit: sp.Expr
    output: sp.Expr
    output_factor: sp.Expr
    dL_dw_o: sp.Expr
    formulas: dict
    terms: tuple[dict, ...]


def _unrolled(derivation: Derivation) -> tuple[UnrolledStep, ...]:
    """The forward steps of the unrolled mode, each with w_i·x_t as the row projection[t − 1]."""
    u = derivation.unrolled
    rows = sp.IndexedBase("projection")
    steps = []
    for t in range(1, derivation.n + 1):
        hidden = sp.expand(u.vector_a[t - 1] - u.projection(t))
        steps.append(UnrolledStep(t, str(u.o[t - 1]), u.activation.apply(rows[t - 1] + hidden), hidden))
    return tuple(steps)


def _terms(derivation: Derivation) -> tuple[dict, ...]:
    """The terms of each sum for the docstring (short sequences only): j, kind, w_h's and w_i[1]'s."""
    return tuple(
        {
            "j": term.j,
            "kind": term.kind,
            "w_h": sp.sstr(derivation.term("w_h", term.j)),
            "w_i": sp.sstr(derivation.term("w_i", term.j, 0)),
        }
        for term in derivation.terms()
    )


def prepare(derivation: Derivation, mode: str) -> NotesModule:
    """The notes' module for ``mode`` ("loop" or "unrolled") from the derivation."""
    model, u = derivation.model, derivation.unrolled
    step = u.step
    local = {step.o: "o_t", step.o_prev: "o_prev"}
    output = {u.o[-1]: "o_n", u.y_hat: "y_hat", u.y: "y", u.w_o: "w_o"}
    pieces = factored(derivation)
    uses_derivative = pieces["shared"] != 1
    derivative = sp.Symbol("derivative") if uses_derivative else sp.S.One
    gate = sp.Symbol("gate")
    recurrent = sp.expand(step.vector_a - step.projection)  # w_i·x_t is one Dot, whatever D is
    return NotesModule(
        mode=mode,
        steps=derivation.n if mode == "unrolled" else None,
        activation=u.activation,
        input_size=model.inputs,
        # the forward step, with the input projection w_i·x_t hoisted out of the recursion
        step=named(u.activation.apply(sp.Symbol("projection_t") + recurrent), local),
        recurrent=named(recurrent, local),
        unrolled=_unrolled(derivation) if mode == "unrolled" else (),
        derivative=named(pieces["derivative"], local) if uses_derivative else None,
        cofactor=named(pieces["jacobian"], local),
        jacobian=named(pieces["jacobian"] * derivative, local),
        gate=sp.Symbol("delta") * derivative,
        term_h=named(gate * pieces["immediate_h"], local),
        gate_i=named(gate * pieces["coefficient_i"], local),
        logit=named(u.logit, output),
        output=named(u.output_definition, output),
        output_factor=named(derivation.output_factor, output),
        dL_dw_o=named(derivation.dL_dw_o, output),
        formulas=docstring_formulas(derivation),
        terms=_terms(derivation) if mode == "unrolled" and derivation.n <= 4 else (),
    )
