"""The printer of a cell's BPTT (split from ``cells.py``, which lays the document out): SymPy's LaTeX
printer for the engine's per-unit expressions, the display-only expressions that keep the order and
grouping the document shows, and the names each value prints as."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.latex import LatexPrinter, translate
from sympy.printing.precedence import PRECEDENCE

from ..engine.derivation import CellDerivation

# -- display-only expressions ------------------------------------------------------------------------------


class _Display(sp.Expr):
    """An expression that only prints; its arguments are SymPy objects."""

    def __new__(cls, *args):
        return sp.Expr.__new__(cls, *(sp.sympify(arg) if not isinstance(arg, str) else sp.Symbol(arg) for arg in args))


class Terms(_Display):
    """A sum printed in the order given (zero terms left out)."""


class At(_Display):
    """``expr`` printed at another step: At(expr, offset) at t + offset; At(expr, offset, "k") at k + offset."""


class Transposed(_Display):
    """Mᵀ δ: the matrix (a Symbol named as the parameter) transposed, applied to a vector δ."""


class Chain(_Display):
    """Factors juxtaposed (matrix products): diag(v) U, M (…)."""


class Diag(_Display):
    """diag(v); diag(1) prints as the identity I."""


class Brace(_Display):
    """An expression under a brace with a label (LaTeX, a Symbol's name)."""


class Outer(_Display):
    """δ uᵀ: an outer product of a column δ and the row uᵀ."""


class StepSum(_Display):
    """Σ_{t=1}^{n} of the expression."""


class GapProduct(_Display):
    """Π_{k=j+1}^{n} of the expression printed at step k."""


class Partial(_Display):
    """∂ of / ∂ wrt, both printed."""


class Transpose(_Display):
    """vᵀ of a vector (the readout w_yᵀ h_n)."""


# -- names ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """How a symbol prints: a letter with a qualifier (a_{i,t}), and what kind of value it is.

    kind: "value" (a value of step t), "previous" (a state at t − 1), "input", "matrix", "vector",
    "scalar" (ŷ, y, L), "lifted" (an activation node: printed as its expression), "inline" (a matrix's
    operand written in place: printed as its expression in parentheses), "linear" (M u), "delta" (δ of
    the symbol ``of``).
    """

    kind: str
    letter: str = ""
    qualifier: str = ""
    of: sp.Symbol | None = None
    expr: sp.Expr | None = None
    matrix: str = ""
    #: for a "previous" state, how many steps back it is read (1: s_(t−1); K: a lagged s_(t−K))
    back: int = 1


def _letter(base: str, bold: bool) -> str:
    tex = translate(base)
    if tex == base and len(base) > 1:
        return rf"\mathbf{{{base}}}" if bold else rf"\mathit{{{base}}}"
    if bold:
        return rf"\boldsymbol{{{tex}}}" if tex.startswith("\\") else rf"\mathbf{{{tex}}}"
    return tex


def _split(name: str) -> tuple[str, str]:
    base, *rest = name.split("_")
    return base, ",".join(rest)


def names_of(d: CellDerivation) -> dict:
    """symbol → :class:`Name` for every symbol the derivation's expressions hold."""
    cell = d.cell
    names: dict = {}
    inline = {linear.operand for linear in d.linears if linear.operand == f"{linear.matrix}_arg"}
    for node in d.nodes:
        if node.name in inline:
            names[node.symbol] = Name("inline", expr=node.expr)
        elif node.auto and node.activation:
            names[node.symbol] = Name("lifted", expr=node.expr)
        else:
            names[node.symbol] = Name("value", *_split(node.name))
    for state, symbol in d.previous.items():
        names[symbol] = Name("previous", *_split(state))
    for (state, lag), symbol in d.lagged.items():
        names[symbol] = Name("previous", *_split(state), back=lag)
    names[cell.input_symbol] = Name("input", "x")
    for name in cell.parameters:
        kind = "matrix" if name in cell.matrices else ("vector" if cell.parameters[name] == ("H",) else "scalar")
        names[sp.Symbol(name)] = Name(kind, *_split(name))
    for linear in d.linears:
        operand = {"x": cell.input_symbol} | {str(s): s for s in (*d.previous.values(), *d.lagged.values())}
        operand = operand.get(linear.operand, sp.Symbol(linear.operand))
        names[linear.symbol] = Name("linear", matrix=linear.matrix, of=operand)
        names[linear.delta] = Name("delta", of=linear.symbol)
    for node_name, delta in d.symbols["delta"].items():
        names[delta] = Name("delta", of=d.node[node_name].symbol)
    for state, delta in d.incoming.items():
        names[delta] = Name("delta", of=d.state_node(state).symbol)
    for state, adjoint in d.sent.items():
        names[adjoint.symbol] = Name("delta", of=d.previous[state])
    for key, adjoint in d.sent_lagged.items():
        names[adjoint.symbol] = Name("delta", of=d.lagged[key])
    names[d.symbols["y_hat"]] = Name("scalar", r"\hat{y}")
    names[d.symbols["y"]] = Name("scalar", "y")
    names[sp.Symbol("L")] = Name("scalar", "L")
    return names


# -- the printer ---------------------------------------------------------------------------------------------------


class CellPrinter(LatexPrinter):
    """SymPy's LaTeX printer for a cell's per-unit expressions, per unit or as vectors, at a step.

    ``step`` is (letter, offset): ("t", 0) prints c_{t}, h_{t-1}; ("t", 1) prints c_{t+1}, h_{t}.
    """

    def __init__(self, names: dict, vector: bool = False, step: tuple = ("t", 0), order: dict | None = None):
        super().__init__()
        self.names = names
        self.vector = vector
        self.step = step
        #: node symbol → its position in the step (products list the step's values in this order)
        self.positions = order or {}

    def at(self, offset: int = 0, letter: str | None = None) -> CellPrinter:
        """This printer at another step."""
        current, shift = self.step
        step = (letter, offset) if letter else (current, shift + offset)
        return CellPrinter(self.names, self.vector, step, self.positions)

    def units(self) -> CellPrinter:
        return CellPrinter(self.names, False, self.step, self.positions)

    def _index(self, back: int = 0) -> str:
        letter, offset = self.step
        offset -= back
        return letter if offset == 0 else f"{letter}{offset:+d}"

    # -- symbols -------------------------------------------------------------------------------------------

    def _print_Symbol(self, expr, style="plain"):
        name = self.names.get(expr)
        if name is None:
            return super()._print_Symbol(expr, style)
        kind = name.kind
        if kind in ("value", "previous", "input"):
            index = self._index(name.back if kind == "previous" else 0)
            subscript = f"{name.qualifier},{index}" if name.qualifier else index
            return f"{_letter(name.letter, self.vector)}_{{{subscript}}}"
        if kind in ("matrix", "vector", "scalar"):
            if kind == "scalar" and not name.qualifier and name.letter.startswith("\\"):
                return name.letter
            letter = _letter(name.letter, self.vector and kind == "vector")
            return f"{letter}_{{{name.qualifier}}}" if name.qualifier else letter
        if kind == "lifted":
            return self._print(name.expr)
        if kind == "inline":
            return rf"\left({self._print(name.expr)}\right)"
        if kind == "linear":
            return f"{self._print(sp.Symbol(name.matrix))} {self._print(name.of)}"
        if kind == "delta":
            delta = r"\boldsymbol{\delta}" if self.vector else r"\delta "
            target = self.names.get(name.of)
            printed = self._print(name.of)
            if target is not None and target.kind == "linear":
                printed = rf"\left({printed}\right)"
            return (delta + printed).replace(r"\delta \left", r"\delta\left")
        raise AssertionError(kind)

    def _is_product_like(self, expr) -> bool:
        """A symbol that prints as a product or a sum (M u, an inline operand): bracketed as a factor."""
        name = self.names.get(expr) if isinstance(expr, sp.Symbol) else None
        return name is not None and name.kind == "linear"

    # -- arithmetic -----------------------------------------------------------------------------------------

    def _rank(self, factor) -> tuple:
        """Factors of a product: δs first, then the step's values in their order, activations, previous
        states and inputs, sums and powers, parameters and matrix products."""
        if isinstance(factor, sp.Symbol):
            name = self.names.get(factor)
            kind = name.kind if name else "scalar"
            if kind == "delta":
                return (0, 0)
            if kind in ("value", "lifted", "inline"):
                return (1, self.positions.get(factor, 0))
            if kind in ("previous", "input"):
                return (3, 0)
            if kind == "scalar":
                return (0, 1)
            return (5, 0)
        if isinstance(factor, sp.Function):
            return (2, 0)
        return (4, 0)

    def _print_Mul(self, expr):
        coefficient, factors = expr.as_coeff_mul()
        factors = sorted(factors, key=lambda f: (self._rank(f), sp.default_sort_key(f)))
        prefix = ""
        if coefficient == -1:
            prefix = "- "
        elif coefficient != 1:
            prefix = self._print(coefficient) + " "
        separator = r" \odot " if self.vector else " "
        printed = []
        for factor in factors:
            tex = self.parenthesize(factor, PRECEDENCE["Mul"], strict=True)
            if len(factors) > 1 and self._is_product_like(factor):
                tex = rf"\left({tex}\right)"
            printed.append(tex)
        return prefix + separator.join(printed)

    def _term_rank(self, term) -> int:
        """Terms of a sum: linear maps of the input, other linear maps, the rest, parameters alone."""
        names = [self.names.get(s) for s in term.free_symbols]
        if any(n and n.kind == "linear" and n.of in self.names and self.names[n.of].kind == "input" for n in names):
            return 0
        if any(n and n.kind == "linear" for n in names):
            return 1
        if term.free_symbols and all(n and n.kind in ("vector", "matrix") for n in names):
            return 2
        return 3 if term.free_symbols else 4

    def _print_Add(self, expr, order=None):
        terms = list(expr.as_ordered_terms())
        terms.sort(key=lambda term: (term.could_extract_minus_sign(), self._term_rank(term)))
        tex = ""
        for index, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            if negative:
                term = -term
                tex += " - " if index else "- "
            elif index:
                tex += " + "
            if self.vector and term.is_Number:
                term_tex = r"\mathbf{1}" if term == 1 else rf"{self._print(term)} \cdot \mathbf{{1}}"
            else:
                term_tex = self._print(term)
                if self._needs_add_brackets(term):
                    term_tex = rf"\left({term_tex}\right)"
            tex += term_tex
        return tex

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.as_base_exp()
        if not (exponent.is_Integer and exponent > 0):
            return super()._print_Pow(expr, rational)
        tex = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
        if self._is_product_like(base):
            tex = rf"\left({tex}\right)"
        power = rf"\circ {exponent}" if self.vector else str(exponent)
        return f"{tex}^{{{power}}}"

    def _print_tanh(self, expr, exp=None):
        tex = rf"\tanh\left({self._print(expr.args[0])}\right)"
        return f"{tex}^{{{exp}}}" if exp else tex

    def _print_Heaviside(self, expr, exp=None):
        tex = rf"H\left({self._print(expr.args[0])}\right)"
        return f"{tex}^{{{exp}}}" if exp else tex

    # -- display-only expressions ------------------------------------------------------------------------

    def _print_Terms(self, expr):
        tex = ""
        for part in expr.args:
            if part == 0:
                continue
            printed = self._print(part)
            if tex:
                tex += " - " + printed[2:] if printed.startswith("- ") else " + " + printed
            else:
                tex = printed
        return tex or "0"

    def _print_At(self, expr):
        inner, offset, *letter = expr.args
        return self.at(int(offset), letter[0].name if letter else None)._print(inner)

    def _print_Transposed(self, expr):
        matrix, delta = expr.args
        return f"{self._print(matrix)}^{{T}} {self._print(delta)}"

    def _print_Chain(self, expr):
        printed = []
        for factor in expr.args:
            tex = self._print(factor)
            if isinstance(factor, (sp.Add, Terms)):
                tex = rf"\left({tex}\right)"
            printed.append(tex)
        return " ".join(printed)

    def _print_Diag(self, expr):
        if expr.args[0] == 1:
            return "I"
        return rf"\operatorname{{diag}}\left({self._print(expr.args[0])}\right)"

    def _print_Brace(self, expr):
        inner, label = expr.args
        return rf"\underbrace{{{self._print(inner)}}}_{{{label.name}}}"

    def _print_Outer(self, expr):
        delta, operand = expr.args
        tex = self._print(operand)
        return f"{self._print(delta)} {tex}^{{T}}"

    def _print_StepSum(self, expr):
        return rf"\sum_{{t=1}}^{{n}} {self.parenthesize(expr.args[0], PRECEDENCE['Mul'], strict=True)}"

    def _print_GapProduct(self, expr):
        return rf"\prod_{{k=j+1}}^{{n}} {self.at(0, 'k')._print(expr.args[0])}"

    def _print_Partial(self, expr):
        of, wrt = expr.args
        parts = []
        for symbol in (of, wrt):
            tex = self._print(symbol)
            name = self.names.get(symbol) if isinstance(symbol, sp.Symbol) else None
            if (name and name.kind == "linear") or isinstance(symbol, (sp.Add, Terms, Chain)):
                tex = rf"\left({tex}\right)"
            parts.append(tex)
        return rf"\frac{{\partial {parts[0]}}}{{\partial {parts[1]}}}"

    def _print_Transpose(self, expr):
        return f"{self._print(expr.args[0])}^{{T}}"
