"""The forms of the notes' BPTT sum, as SymPy objects with no derivation behind them: the abstract
partial ∂of/∂wrt (or the immediate one ∂⁺of/∂wrt), a term j of the sum, the Σ/Π form for symbolic n,
and the limits on how far the forms are written out. ``derive`` fills them in; ``typeset.notes`` prints
them (and needs nothing else from ``derive``, so the two do not import each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

from ..errors import UsageError

#: Largest n for which the fully expanded gradient (the whole nest, differentiated) is built.
EXPANDED_LIMIT = 12
#: Largest n for which the Σ/Π form is multiplied out term by term (O(n²) factors).
MULTIPLIED_LIMIT = 400
#: Largest n unrolled symbolically at all (n·(D + 1) symbols); longer sequences are for loop code.
UNROLL_LIMIT = 10_000
#: Largest input size D for which the component-by-component checks run (``--verify`` writes the
#: unrolled loss out over the D components and checks each of them: O(D²) work).
EXPLICIT_INPUTS_LIMIT = 16

PARAMETERS = ("w_i", "w_h", "w_o")


class OutOfRange(UsageError, IndexError):
    """An index outside its range (a timestep, a gap, a component of w_i): a ``UsageError`` that
    ``except IndexError`` catches too, as for any Python sequence."""


class AbstractPartial(sp.Expr):
    """An abstract partial derivative ∂of/∂wrt, or the immediate one ∂⁺of/∂wrt.

    Non-commutative so that a product of them keeps the chain rule's order when printed.
    """

    is_commutative = False

    def __new__(cls, of, wrt, immediate=False):
        return sp.Expr.__new__(cls, sp.sympify(of), sp.sympify(wrt), sp.true if immediate else sp.false)

    @property
    def of(self):
        return self.args[0]

    @property
    def wrt(self):
        return self.args[1]

    @property
    def immediate(self) -> bool:
        return bool(self.args[2])

    def _latex(self, printer):
        mark = "^{+}" if self.immediate else ""
        return rf"\frac{{\partial{mark} {printer._print(self.of)}}}{{\partial {printer._print(self.wrt)}}}"

    def _sympystr(self, printer):
        mark = "+" if self.immediate else ""
        return f"∂{mark}{printer._print(self.of)}/∂{printer._print(self.wrt)}"


@dataclass(frozen=True)
class Term:
    """Term j of a BPTT sum: the part of the gradient that flows through timestep j."""

    j: int
    gap: int  # n − j, the number of ∂o_k/∂o_{k−1} factors

    @property
    def kind(self) -> str:
        return "short-term" if self.gap == 0 else "long-term"


@dataclass(frozen=True)
class GeneralForm:
    """The BPTT form for symbolic n, with indexed abstract partials (for typesetting and the proof)."""

    n: sp.Symbol
    j: sp.Symbol
    k: sp.Symbol
    o: sp.IndexedBase
    loss: sp.Symbol
    y_hat: sp.Symbol
    weight: sp.Symbol

    @property
    def hidden_sum(self) -> sp.Expr:
        """∂L/∂w = Σ_j (∂L/∂ŷ)(∂ŷ/∂o_n) Π_{k=j+1}^{n} (∂o_k/∂o_{k−1}) ∂⁺o_j/∂w."""
        o, n, j, k = self.o, self.n, self.j, self.k
        return sp.Sum(
            AbstractPartial(self.loss, self.y_hat)
            * AbstractPartial(self.y_hat, o[n])
            * sp.Product(AbstractPartial(o[k], o[k - 1]), (k, j + 1, n))
            * AbstractPartial(o[j], self.weight, True),
            (j, 1, n),
        )


class ComponentsOf(Sequence):
    """The D components of a vector expression linear in the vector symbol x (such as f′(a_t) x_t):
    component d has x_d for x, made when asked for."""

    def __init__(self, vector: sp.Expr, x: sp.Symbol, components: Sequence):
        self.vector, self.x, self.components = vector, x, components

    def __len__(self) -> int:
        return len(self.components)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        return self.vector.xreplace({self.x: self.components[index]})


__all__ = [
    "EXPANDED_LIMIT", "EXPLICIT_INPUTS_LIMIT", "MULTIPLIED_LIMIT", "PARAMETERS", "UNROLL_LIMIT",
    "AbstractPartial", "ComponentsOf", "GeneralForm", "OutOfRange", "Term",
]
