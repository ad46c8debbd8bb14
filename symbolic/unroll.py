"""Symbolic unrolling: the symbols of an n-step model and the equations that define o_t.

The hidden states o_1..o_n stay symbols, each with its defining equation o_t = f(a_t),
a_t = w_i·x_t + w_h o_{t−1}. Full substitution (the nest o_n = f(…f(…))) is built only on request,
for small n: that is what keeps n = 1000 fast and free of RecursionError.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .activations import ACTIVATIONS, Activation, sigmoid
from .model import Model


def _real(name: str) -> sp.Symbol:
    return sp.Symbol(name)


@dataclass(frozen=True)
class Step:
    """One generic timestep t: o_t = f(a_t), a_t = w_i·x_t + w_h o_{t−1}, all as free symbols.

    Local derivatives are derived once here and instantiated at each t by substitution.
    """

    o: sp.Symbol  # o_t
    o_prev: sp.Symbol  # o_{t−1}
    x: tuple[sp.Symbol, ...]  # x_{t,1} … x_{t,D}
    a: sp.Expr

    def at(self, unrolled: Unrolled, t: int) -> dict:
        """The substitution that turns this generic step into timestep t of ``unrolled``."""
        mapping = {self.o: unrolled.state(t), self.o_prev: unrolled.state(t - 1)}
        mapping.update(zip(self.x, unrolled.x[t - 1]))
        return mapping


@dataclass(frozen=True)
class Unrolled:
    """The symbols and definitions of the model unrolled over ``model.steps`` timesteps."""

    model: Model
    x: tuple[tuple[sp.Symbol, ...], ...]  # x[t-1][d-1] = x_{t,d}
    w_i: tuple[sp.Symbol, ...]  # w_{i,1} … w_{i,D}
    w_h: sp.Symbol
    w_o: sp.Symbol
    y: sp.Symbol
    y_hat: sp.Symbol
    o: tuple[sp.Symbol, ...]  # o[t-1] = o_t
    a: tuple[sp.Expr, ...]  # a[t-1] = a_t, written with the symbol o_{t-1}
    step: Step
    latex_names: dict

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
        """The right-hand side of o_t = f(a_t)."""
        return self.activation.apply(self.a[t - 1])

    @property
    def output_definition(self) -> sp.Expr:
        """ŷ = σ(w_o o_n)."""
        return sigmoid(self.logit)

    @property
    def loss(self) -> sp.Expr:
        """L = −y log ŷ − (1 − y) log(1 − ŷ), with ŷ a symbol."""
        return -self.y * sp.log(self.y_hat) - (1 - self.y) * sp.log(1 - self.y_hat)

    def nested_states(self) -> list[sp.Expr]:
        """o_1..o_n with every o_{t−1} substituted: only for small n."""
        states: list[sp.Expr] = []
        previous: sp.Expr = sp.S.Zero
        for t in range(1, self.steps + 1):
            inner = self.a[t - 1].xreplace({self.state(t - 1): previous}) if t > 1 else self.a[0]
            previous = self.activation.apply(inner)
            states.append(previous)
        return states

    def nested_loss(self) -> sp.Expr:
        """L as an explicit function of the weights, inputs and label (the whole nest)."""
        o_n = self.nested_states()[-1]
        return self.loss.xreplace({self.y_hat: sigmoid(self.w_o * o_n)})

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


def unroll(model: Model) -> Unrolled:
    """Make the symbols and the defining equations for ``model``."""
    n, inputs = model.steps, model.inputs
    latex_names: dict = {}
    x = tuple(tuple(_real(f"x_{t}_{d}") for d in range(1, inputs + 1)) for t in range(1, n + 1))
    for t, row in enumerate(x, start=1):
        for d, symbol in enumerate(row, start=1):
            latex_names[symbol] = f"x_{{{t},{d}}}"
    w_i = tuple(_real(f"w_i_{d}") for d in range(1, inputs + 1))
    for d, symbol in enumerate(w_i, start=1):
        latex_names[symbol] = f"w_{{i,{d}}}"
    w_h, w_o, y = _real("w_h"), _real("w_o"), _real("y")
    latex_names.update({w_h: "w_h", w_o: "w_o", y: "y"})
    y_hat = _real("y_hat")
    latex_names[y_hat] = r"\hat{y}"
    o = tuple(_real(f"o_{t}") for t in range(1, n + 1))
    for t, symbol in enumerate(o, start=1):
        latex_names[symbol] = f"o_{{{t}}}"
    a = []
    for t in range(1, n + 1):
        projection = sp.Add(*(w * xi for w, xi in zip(w_i, x[t - 1])))
        a.append(projection + (w_h * o[t - 2] if t > 1 else 0))
    step_x = tuple(_real(f"x_t_{d}") for d in range(1, inputs + 1))
    step = Step(
        o=_real("o_t"),
        o_prev=_real("o_prev"),
        x=step_x,
        a=sp.Add(*(w * xi for w, xi in zip(w_i, step_x))) + w_h * _real("o_prev"),
    )
    latex_names.update({step.o: "o_{t}", step.o_prev: "o_{t-1}"})
    for d, symbol in enumerate(step_x, start=1):
        latex_names[symbol] = f"x_{{t,{d}}}"
    return Unrolled(model, x, w_i, w_h, w_o, y, y_hat, o, tuple(a), step, latex_names)
