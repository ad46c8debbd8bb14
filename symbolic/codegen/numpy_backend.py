"""The NumPy backend: a SymPy code printer and the plain context for ``templates/numpy``.

Every expression in the generated module is printed by SymPy from the derivation:

* the forward step o_t = f(w_i·x_t + w_h o_{t−1}) from the unrolled definitions (unrolled mode) or
  the one generic step (loop mode), with the input projection w_i·x_t hoisted out of the recursion;
* f′(a_t) written with the stored output o_t, ∂o_k/∂o_{k−1} and ∂⁺o_j/∂w from
  ``derivation.step_derivative``, ``step_jacobian`` and ``step_immediate``;
* (∂L/∂ŷ)(∂ŷ/∂o_n) and ∂L/∂w_o from ``derivation.output_factor`` and ``dL_dw_o``.

For wide batches the forward step also has an in-place form (``in_place``): o_t starts as
w_i·x_t, gets w_h o_{t−1} added and f applied where it lies (``np.tanh(o_t, out=o_t)``).

The structure of the Σ/Π formula shapes the code: δ_j = (∂L/∂ŷ)(∂ŷ/∂o_n) Π_{k=j+1..n} ∂o_k/∂o_{k−1}
is a suffix (reversed cumulative) product, so the backward pass needs no Python loop, and each
immediate partial is factored as f′(a_t) times what multiplies it, so both weights share one
array δ_j f′(a_j).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import precedence

from ..activations import Activation, relu
from ..notes.derive import Derivation
from .notes_module import NotesModule, prepare


class NumPyCodePrinter(NumPyPrinter):
    """SymPy's NumPy printer writing ``np.``, with our activations and the step function."""

    def __init__(self, settings=None):
        super().__init__({"fully_qualified_modules": True, **(settings or {})})

    def _module_format(self, fqn, register=True):
        # The generated module imports NumPy once, as np.
        module, _, name = fqn.rpartition(".")
        if module == "numpy":
            return f"np.{name}"
        return super()._module_format(fqn, register)

    def _print_sigmoid(self, expr):
        # A helper of the generated module: exp of a non-positive real part only, so no overflow.
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_relu(self, expr):
        return f"np.maximum({self._print(expr.args[0])}, 0.0)"

    def _print_Heaviside(self, expr):
        value, at_zero = expr.args if len(expr.args) == 2 else (expr.args[0], sp.S.Half)
        return f"np.heaviside({self._print(value)}, {self._print(sp.Float(at_zero))})"

    def _print_Float(self, expr):
        return repr(float(expr))

    # The layout ``ruff format`` gives: spaces around * and /, and around ** unless both operands
    # are simple (a name or a number), so the generated module is stable under the formatter.

    def _print_Rational(self, expr):
        return f"{expr.p} / {expr.q}"

    def _print_Mul(self, expr):
        coefficient, factors = expr.as_coeff_mul()
        sign = ""
        if coefficient.is_negative:
            sign, coefficient = "-", -coefficient
        numerator, denominator = [], []
        if coefficient != 1:
            numerator.extend([sp.Integer(coefficient.p)] if coefficient.is_Rational else [coefficient])
            if coefficient.is_Rational and coefficient.q != 1:
                denominator.append(sp.Integer(coefficient.q))
        for factor in sp.Mul.make_args(sp.Mul(*factors)) if factors else ():
            if factor.is_Pow and factor.exp.is_negative and factor.exp.is_Rational:
                denominator.append(factor.base**-factor.exp)
            else:
                numerator.append(factor)
        level = precedence(expr)
        top = " * ".join(self.parenthesize(f, level) for f in numerator) if numerator else "1"
        if not denominator:
            return sign + top
        if len(denominator) == 1:
            bottom = self.parenthesize(denominator[0], level + 1)
        else:
            bottom = "(" + " * ".join(self.parenthesize(f, level) for f in denominator) + ")"
        return f"{sign}{top} / {bottom}"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            return f"np.sqrt({self._print(expr.base)})"
        if expr.exp.is_negative and expr.exp.is_Rational:
            return self._print_Mul(sp.Mul(expr, evaluate=False))
        level = precedence(expr)
        base = self.parenthesize(expr.base, level, strict=True)
        exponent = self.parenthesize(expr.exp, level, strict=False)
        simple = all((part.is_Symbol and str(part).isidentifier()) or (part.is_Integer and part >= 0)
                     for part in (expr.base, expr.exp))
        return f"{base}**{exponent}" if simple else f"{base} ** {exponent}"


_PRINTER = NumPyCodePrinter()


class InPlacePrinter(NumPyCodePrinter):
    """Prints f(o), for an activation f that is a NumPy ufunc, as the call writing f(o) over o."""

    #: The activations printed here; ``in_place`` assigns any other back into the array.
    ufuncs = (sp.tanh, relu)

    def _print_tanh(self, expr):
        target = self._print(expr.args[0])
        return f"np.tanh({target}, out={target})"

    def _print_relu(self, expr):
        target = self._print(expr.args[0])
        return f"np.maximum({target}, 0.0, out={target})"


_IN_PLACE_PRINTER = InPlacePrinter()


def code(expr: sp.Expr, names: dict | None = None) -> str:
    """Print ``expr`` as NumPy code, renaming symbols to the local variable names in ``names``."""
    if names:
        expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    return _PRINTER.doprint(expr)


def atom(expr: sp.Expr, names: dict | None = None) -> str:
    """Printed code safe to follow with ``.T`` or ``[…]``: parenthesized unless a bare name."""
    printed = code(expr, names)
    return printed if printed.isidentifier() else f"({printed})"


def in_place(activation: Activation, target: str, printer: NumPyPrinter | None = None) -> str | None:
    """The statement applying ``activation`` to the array named ``target`` where it lies, or None
    when f is the identity (nothing to do). ``printer`` prints an f that is no ufunc (the sigmoid
    helper) when the module names its helpers otherwise."""
    array = sp.Symbol(target)
    applied = activation.apply(array)
    if applied == array:
        return None
    if isinstance(applied, InPlacePrinter.ufuncs):
        return _IN_PLACE_PRINTER.doprint(applied)
    # No ufunc to write through out= (the sigmoid helper selects between two branches): assign
    # the result back into the array's memory.
    return f"{target}[...] = {(printer or _PRINTER).doprint(applied)}"


def text(expr: sp.Expr, names: dict | None = None) -> str:
    """A plain one-line formula for a docstring or comment."""
    if names:
        expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    return sp.sstr(expr)


def _chain(jacobian: sp.Expr) -> tuple[str, str]:
    """The statement filling chain[:-1] with ∂o_k/∂o_(k−1) for k = 2..n, and the arguments of
    np.result_type that give the chain's dtype.

    ``jacobian`` is written with the stored arrays (``derivative``, o_t, o_prev), each read from
    its row 1 on (k = 2). A product of two factors is written by np.multiply straight into the
    chain (no temporary the size of the states)."""
    arrays = {"derivative", "o_t", "o_prev"}
    from_k2 = jacobian.xreplace({s: sp.Symbol(f"{s}[1:]") for s in jacobian.free_symbols if str(s) in arrays})
    if from_k2.is_Mul and len(from_k2.args) == 2:
        first, second = (code(factor) for factor in from_k2.args)
        statement = f"np.multiply({first}, {second}, out=chain[:-1])"
    else:
        statement = f"chain[:-1] = {code(from_k2)}"
    # The states' dtype and every other name the factor reads (w_h, say).
    others = sorted(str(s) for s in jacobian.free_symbols if str(s) not in arrays)
    return statement, ", ".join(["o_t", *others])


def _sum_of_products(expr: sp.Expr) -> str:
    """Σ over all entries of ``expr``: a dot product of the two raveled arrays when expr is a
    product of two names (no temporary product array), else np.sum of the printed expression."""
    if expr.is_Mul and len(expr.args) == 2 and all(arg.is_Symbol for arg in expr.args):
        first, second = sorted(str(arg) for arg in expr.args)
        return f"{first}.ravel() @ {second}.ravel()"
    return f"np.sum({code(expr)})"


def _forward(notes: NotesModule) -> dict:
    """The forward step, out of place (narrow batches) and in place (wide ones: o_t starts as w_i·x_t,
    gets w_h o_(t−1) added, then f where it lies), in loop mode or as the unrolled steps."""
    steps = []
    for step in notes.unrolled:
        steps.append(
            {
                "t": step.t,
                "name": step.name,
                "code": code(step.value),
                "recurrent": code(step.hidden) if step.hidden != 0 else None,
                "activation": in_place(notes.activation, step.name),
            }
        )
    for step in steps:
        # In place, the row gets a name when a later step reads it or this step changes it.
        step["bind"] = bool(step["t"] < len(steps) or step["recurrent"] or step["activation"])
    return {
        "loop_step": code(notes.step),
        "in_place_step": {"recurrent": code(notes.recurrent), "activation": in_place(notes.activation, "o_t")},
        "unrolled_steps": steps,
    }


def _backward(notes: NotesModule) -> dict:
    """The printed pieces of the backward pass (``macros.j2``'s ``backward``)."""
    rows = {sp.Symbol("o_t"): "o[t]", sp.Symbol("o_prev"): "o[t - 1]"}
    chain_code, chain_dtype = _chain(notes.jacobian)
    return {
        "logit_code": code(notes.logit),
        "output_factor_code": code(notes.output_factor),
        "derivative_code": code(notes.derivative) if notes.derivative is not None else None,
        "jacobian_code": code(notes.jacobian),
        "gate_code": code(notes.gate),
        "chain_code": chain_code,
        "chain_dtype": chain_dtype,
        # In loss_and_grad δ_t is not needed after the gate, so the gate is written over it (δ has the
        # chain's dtype, which holds f′(a_t)'s: real states with a complex w_o give a complex δ).
        "gate_in_place_code": "np.multiply(delta, derivative, out=delta)" if notes.derivative is not None else None,
        # The same local derivatives for one step's rows (wide batches, step by step).
        "derivative_row_code": code(notes.derivative, rows) if notes.derivative is not None else None,
        "cofactor_row_code": code(notes.cofactor, rows),
    }


def context(derivation: Derivation, mode: str, command: str) -> dict:
    """Everything ``templates/numpy/module.py.j2`` places: names, printed expressions, formulas."""
    notes = prepare(derivation, mode)
    backward = _backward(notes)
    return {
        "command": command,
        "mode": mode,
        "steps": notes.steps,
        "activation": derivation.model.activation,
        "input_size": notes.input_size,
        **_forward(notes),
        "backward": backward,
        "gate_i_code": code(notes.gate_i),
        "term_h_atom": atom(notes.term_h),
        "gate_i_atom": atom(notes.gate_i),
        "output_code": code(notes.output),
        "dw_h_code": _sum_of_products(notes.term_h),
        "dL_dw_o_code": code(notes.dL_dw_o),
        "formulas": notes.formulas,
        "terms": list(notes.terms),
    }
