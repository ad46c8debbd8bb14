"""Symbolic unrolling: the symbols of an n-step model and the equations that define o_t.

The hidden states o_1..o_n stay symbols, each with its defining equation o_t = f(a_t),
a_t = w_i·x_t + w_h o_{t−1}. Full substitution (the nest o_n = f(…f(…))) is built only on request,
for small n: that is what keeps n = 1000 fast and free of RecursionError.

The input weights w_i and each input x_t are one vector symbol, and w_i·x_t is :class:`Dot`, whose
one rule ∂(w·x)/∂w = x is all the derivation needs: nothing it derives grows with the input size D
(``vector_a``, ``vector_definition``, ``vector_nested_loss``). The D scalar components w_{i,d},
x_{t,d} are made on demand (:class:`Components`), and the explicit sums Σ_d w_{i,d} x_{t,d} (``a``,
``definition``, ``nested_loss``) only when a proof asks for them, for small D.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from ..activations import ACTIVATIONS, Activation, sigmoid
from ..model import Model


def _real(name: str) -> sp.Symbol:
    return sp.Symbol(name)


class Dot(sp.Function):
    """w·x, the inner product of two vector symbols (a scalar): ∂(w·x)/∂w = x, ∂(w·x)/∂x = w."""

    nargs = 2
    is_commutative = True

    def fdiff(self, argindex=1):
        return self.args[1] if argindex == 1 else self.args[0]

    def _sympystr(self, printer):
        return f"{printer._print(self.args[0])}·{printer._print(self.args[1])}"

    def _latex(self, printer):
        return rf"{printer._print(self.args[0])} \cdot {printer._print(self.args[1])}"


class Components(Sequence):
    """The D scalar components ``prefix_1`` … ``prefix_D`` of a vector symbol, each made when asked
    for: indexing, ``len`` and ``in`` cost the same for D = 3 and D = 50 000 (iterating is O(D))."""

    def __init__(self, prefix: str, size: int):
        self.prefix, self.size = prefix, size
        self._pattern = re.compile(re.escape(prefix) + r"_([1-9][0-9]*)")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self.size)))
        index = range(self.size)[index]  # negative indices, and IndexError past the end
        return sp.Symbol(f"{self.prefix}_{index + 1}")

    def index(self, symbol, *bounds) -> int:
        """d − 1 for the symbol ``prefix_d``, without a search (ValueError for any other symbol)."""
        match = self._pattern.fullmatch(getattr(symbol, "name", "")) if isinstance(symbol, sp.Symbol) else None
        if match is None or int(match.group(1)) > self.size or symbol != self[int(match.group(1)) - 1]:
            raise ValueError(f"{symbol!r} is not a component of {self.prefix}")
        return int(match.group(1)) - 1

    def __contains__(self, symbol) -> bool:
        try:
            self.index(symbol)
        except ValueError:
            return False
        return True

    def __eq__(self, other):
        if isinstance(other, Components):
            return (self.prefix, self.size) == (other.prefix, other.size)
        return isinstance(other, (tuple, list)) and tuple(self) == tuple(other)

    def __hash__(self):
        return hash((Components, self.prefix, self.size))

    def __repr__(self) -> str:
        return f"Components({self.prefix!r}, {self.size})"


class LatexNames(dict):
    """Symbol → LaTeX name; the components w_{i,d}, x_{t,d} (numbered or at step t) are named when
    looked up, so the table does not grow with D."""

    _COMPONENT = re.compile(r"(w_i|x_[0-9]+|x_t)_([1-9][0-9]*)")

    def _component(self, symbol):
        match = self._COMPONENT.fullmatch(symbol.name) if isinstance(symbol, sp.Symbol) else None
        if match is None:
            return None
        vector, d = match.groups()
        return f"w_{{i,{d}}}" if vector == "w_i" else f"x_{{{vector[2:]},{d}}}"

    def __missing__(self, symbol):
        name = self._component(symbol)
        if name is None:
            raise KeyError(symbol)
        return name

    def __contains__(self, symbol) -> bool:
        return dict.__contains__(self, symbol) or self._component(symbol) is not None

    def get(self, symbol, default=None):
        try:
            return self[symbol]
        except KeyError:
            return default

    def copy(self) -> LatexNames:
        return LatexNames(self)


def explicit_dot(w: Components, x: Components) -> sp.Expr:
    """Σ_d w_d x_d: a Dot written out over its D components (O(D): proofs at small D only)."""
    return sp.Add(*(wd * xd for wd, xd in zip(w, x)))


@dataclass(frozen=True)
class Step:
    """One generic timestep t: o_t = f(a_t), a_t = w_i·x_t + w_h o_{t−1}, all as free symbols.

    Local derivatives are derived once here, from ``vector_a``, and instantiated at each t by
    substitution.
    """

    o: sp.Symbol  # o_t
    o_prev: sp.Symbol  # o_{t−1}
    x: Components  # x_{t,1} … x_{t,D}
    x_vector: sp.Symbol  # x_t, the vector
    w_i: Components
    w_i_vector: sp.Symbol
    w_h: sp.Symbol

    @property
    def projection(self) -> sp.Expr:
        """w_i·x_t, one Dot of the vector symbols."""
        return Dot(self.w_i_vector, self.x_vector)

    @property
    def vector_a(self) -> sp.Expr:
        """a_t = w_i·x_t + w_h o_{t−1}, the same size for every D."""
        return self.projection + self.w_h * self.o_prev

    @cached_property
    def a(self) -> sp.Expr:
        """a_t with w_i·x_t written out as Σ_d w_{i,d} x_{t,d} (O(D); for the proofs)."""
        return explicit_dot(self.w_i, self.x) + self.w_h * self.o_prev

    def at(self, unrolled: UnrolledScalarRNN, t: int) -> dict:
        """The substitution that turns this generic step into timestep t of ``unrolled``: o_t, o_{t−1},
        the vector x_t and, looked up on demand, each component x_{t,d}."""
        mapping = {self.o: unrolled.state(t), self.o_prev: unrolled.state(t - 1),
                   self.x_vector: unrolled.x_vectors[t - 1]}
        return _StepMapping(mapping, self.x, unrolled.x[t - 1])


class _StepMapping(dict):
    """A substitution for ``xreplace`` that also maps the step's x_{t,d} to timestep t's x_{t,d},
    without listing all D of them (xreplace only asks ``in`` and ``[]``)."""

    def __init__(self, mapping: dict, generic: Components, specific: Components):
        super().__init__(mapping)
        self.generic, self.specific = generic, specific

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in self.generic

    def __missing__(self, key):
        try:
            return self.specific[self.generic.index(key)]
        except ValueError:
            raise KeyError(key) from None

    def get(self, key, default=None):  # Atom.xreplace asks rule.get(atom, atom)
        try:
            return self[key]
        except KeyError:
            return default

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class UnrolledScalarRNN:
    """The symbols and definitions of the model unrolled over ``model.steps`` timesteps."""

    model: Model
    x: tuple[Components, ...]  # x[t-1][d-1] = x_{t,d}
    w_i: Components  # w_{i,1} … w_{i,D}
    w_h: sp.Symbol
    w_o: sp.Symbol
    y: sp.Symbol
    y_hat: sp.Symbol
    o: tuple[sp.Symbol, ...]  # o[t-1] = o_t
    step: Step
    latex_names: LatexNames
    #: The vector symbols: w_i, and x_t for t = 1..n.
    w_i_vector: sp.Symbol
    x_vectors: tuple[sp.Symbol, ...]

    @property
    def inputs(self) -> int:
        """The input size D."""
        return self.model.inputs

    def projection(self, t: int) -> sp.Expr:
        """w_i·x_t as one Dot of the vector symbols."""
        return Dot(self.w_i_vector, self.x_vectors[t - 1])

    @cached_property
    def vector_a(self) -> tuple[sp.Expr, ...]:
        """vector_a[t-1] = a_t = w_i·x_t + w_h o_{t−1} (one Dot), written with the symbol o_{t−1}."""
        return tuple(
            self.projection(t) + (self.w_h * self.o[t - 2] if t > 1 else 0) for t in range(1, self.steps + 1)
        )

    @cached_property
    def a(self) -> tuple[sp.Expr, ...]:
        """a[t-1] = a_t with w_i·x_t written out over the D components (O(nD): for the proofs)."""
        return tuple(
            explicit_dot(self.w_i, self.x[t - 1]) + (self.w_h * self.o[t - 2] if t > 1 else 0)
            for t in range(1, self.steps + 1)
        )

    @property
    def activation(self) -> Activation:
        return ACTIVATIONS[self.model.activation]

    @property
    def steps(self) -> int:
        return self.model.steps

    @property
    def logit(self) -> sp.Expr:
        """z = w_o o_n, the argument of the output sigmoid."""
        return self.w_o * self.o[-1]

    def state(self, t: int) -> sp.Expr:
        """o_t as a symbol (o_0 = 0)."""
        return sp.S.Zero if t == 0 else self.o[t - 1]

    def definition(self, t: int) -> sp.Expr:
        """The right-hand side of o_t = f(a_t), with w_i·x_t written out (see ``vector_definition``)."""
        return self.activation.apply(self.a[t - 1])

    def vector_definition(self, t: int) -> sp.Expr:
        """The right-hand side of o_t = f(w_i·x_t + w_h o_{t−1}), with one Dot."""
        return self.activation.apply(self.vector_a[t - 1])

    @property
    def output_definition(self) -> sp.Expr:
        """ŷ = σ(w_o o_n)."""
        return sigmoid(self.logit)

    @property
    def loss(self) -> sp.Expr:
        """L = −y log ŷ − (1 − y) log(1 − ŷ), with ŷ a symbol."""
        return -self.y * sp.log(self.y_hat) - (1 - self.y) * sp.log(1 - self.y_hat)

    def nested_states(self, vector: bool = False) -> list[sp.Expr]:
        """o_1..o_n with every o_{t−1} substituted: only for small n. ``vector``: with w_i·x_t as one
        Dot (the same size for every D), else written out over the components."""
        a = self.vector_a if vector else self.a
        states: list[sp.Expr] = []
        previous: sp.Expr = sp.S.Zero
        for t in range(1, self.steps + 1):
            inner = a[t - 1].xreplace({self.state(t - 1): previous}) if t > 1 else a[0]
            previous = self.activation.apply(inner)
            states.append(previous)
        return states

    def nested_loss(self, vector: bool = False) -> sp.Expr:
        """L as an explicit function of the weights, inputs and label (the whole nest)."""
        o_n = self.nested_states(vector)[-1]
        return self.loss.xreplace({self.y_hat: sigmoid(self.w_o * o_n)})

    def component(self, expr: sp.Expr, d: int) -> sp.Expr:
        """Component d (0-based) of a vector expression linear in the x_t outside the Dots, such as
        ∂L/∂w_i = Σ_t c_t x_t: each x_t outside a Dot becomes x_{t,d}; each w_i·x_t stays."""
        dots = {dot: sp.Dummy() for dot in expr.atoms(Dot)}
        picked = {x: row[d] for x, row in zip(self.x_vectors, self.x)}
        picked[self.step.x_vector] = self.step.x[d]
        return expr.xreplace(dots).xreplace(picked).xreplace({dummy: dot for dot, dummy in dots.items()})

    def back_substitute(self, expr: sp.Expr, steps=None) -> sp.Expr:
        """Replace each nested f(a_t) by the symbol o_t, innermost first, and σ(w_o o_n) by ŷ.

        Two expressions that agree after this rewriting agree as functions of the weights, since
        substituting o_t = f(a_t) back undoes it. ``steps`` limits the rewriting to those t (a local
        derivative at step t holds only f(a_t), so n = 1000 stays linear).
        """
        for t in range(1, self.steps + 1) if steps is None else steps:
            definition = self.definition(t)
            if isinstance(definition, sp.Function):  # the identity leaves a polynomial: nothing to name
                expr = expr.xreplace({definition: self.o[t - 1]})
        return expr.xreplace({self.output_definition: self.y_hat})


def unroll(model: Model) -> UnrolledScalarRNN:
    """Make the symbols and the defining equations for ``model`` (O(n), whatever D is)."""
    n, inputs = model.steps, model.inputs
    latex_names = LatexNames()  # the components w_{i,d}, x_{t,d} are named on lookup
    x = tuple(Components(f"x_{t}", inputs) for t in range(1, n + 1))
    x_vectors = tuple(_real(f"x_{t}") for t in range(1, n + 1))
    for t, symbol in enumerate(x_vectors, start=1):
        latex_names[symbol] = rf"\mathbf{{x}}_{{{t}}}"
    w_i = Components("w_i", inputs)
    w_i_vector = _real("w_i")
    latex_names[w_i_vector] = r"\mathbf{w}_{i}"
    w_h, w_o, y = _real("w_h"), _real("w_o"), _real("y")
    latex_names.update({w_h: "w_h", w_o: "w_o", y: "y"})
    y_hat = _real("y_hat")
    latex_names[y_hat] = r"\hat{y}"
    o = tuple(_real(f"o_{t}") for t in range(1, n + 1))
    for t, symbol in enumerate(o, start=1):
        latex_names[symbol] = f"o_{{{t}}}"
    step = Step(
        o=_real("o_t"),
        o_prev=_real("o_prev"),
        x=Components("x_t", inputs),
        x_vector=_real("x_t"),
        w_i=w_i,
        w_i_vector=w_i_vector,
        w_h=w_h,
    )
    latex_names.update({step.o: "o_{t}", step.o_prev: "o_{t-1}", step.x_vector: r"\mathbf{x}_{t}"})
    return UnrolledScalarRNN(model, x, w_i, w_h, w_o, y, y_hat, o, step, latex_names, w_i_vector, x_vectors)
