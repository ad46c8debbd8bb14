"""One table of activations: f, f′ written with the output o = f(a), γ = sup|f′|, analytic?

Adding an activation means adding one entry to ``ACTIVATIONS`` (and its name to
``model.ACTIVATION_NAMES``, which validates models without importing SymPy). Each entry also carries an
independent closed form of f (plain SymPy, no custom classes), which the tests and the proof use
to confirm that the derivative written with the output is the true derivative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from .model import ACTIVATION_NAMES


class sigmoid(sp.Function):
    """The logistic function σ(z) = 1/(1 + e^{−z}), with σ′ = σ(1 − σ) written with itself."""

    @classmethod
    def eval(cls, z):
        if z.is_zero:
            return sp.S.Half
        if z.is_Float:
            return 1 / (1 + sp.exp(-z))

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))

    def _eval_evalf(self, prec):
        return self.rewrite(sp.exp)._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real

    def _latex(self, printer):
        return rf"\sigma\left({printer._print(self.args[0])}\right)"


class tanh(sp.tanh):
    """SymPy's tanh with its facts (real, finite, sign) read from its argument's: SymPy's own split the
    argument into real and imaginary parts, which doubles in size at each level of tanh(tanh(…))."""

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        return 1 - self**2

    def _eval_is_real(self):
        return True if self.args[0].is_real else None

    def _eval_is_finite(self):
        return True if self.args[0].is_extended_real else None


class relu(sp.Function):
    """max(0, z), with ReLU′ = H(ReLU(z)) written with the output (H(0) = 0: the kink counts as off)."""

    @classmethod
    def eval(cls, z):
        if z.is_Number:
            return sp.Max(0, z)
        if z.is_nonnegative:
            return z
        if z.is_nonpositive:
            return sp.S.Zero

    def fdiff(self, argindex=1):
        return sp.Heaviside(self, 0)

    def _eval_rewrite_as_Max(self, z, **kwargs):
        return sp.Max(0, z)

    def _eval_evalf(self, prec):
        return sp.Max(0, self.args[0])._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_nonnegative(self):
        return True if self.args[0].is_real else None

    def _latex(self, printer):
        return rf"\operatorname{{ReLU}}\left({printer._print(self.args[0])}\right)"


def _sup_abs(expr: sp.Expr, z: sp.Symbol) -> sp.Expr:
    """sup over the reals of |expr(z)|, piece by piece for a Piecewise."""
    expr = expr.rewrite(sp.Piecewise)
    if isinstance(expr, sp.Piecewise):
        best = sp.S.Zero
        rest = sp.S.Reals
        for piece, condition in expr.args:
            domain = sp.Intersection(condition.as_set(), rest)
            rest = sp.Complement(rest, domain)
            if domain.is_empty:
                continue
            if piece.is_number:
                best = sp.Max(best, sp.Abs(piece))
            else:
                best = sp.Max(best, sp.calculus.util.function_range(sp.Abs(piece), z, domain).sup)
        return best
    if expr.is_number:
        return sp.Abs(expr)
    # sup|g| = max(|inf g|, |sup g|) over g's range: several times faster than maximizing |g|.
    values = sp.calculus.util.function_range(expr, z, sp.S.Reals)
    return sp.Max(sp.Abs(values.inf), sp.Abs(values.sup))


@dataclass(frozen=True)
class Activation:
    """One activation f: how to apply it, its derivative from the output, and facts about it."""

    name: str
    apply: Callable[[sp.Expr], sp.Expr]
    #: f′(a) written with the output o = f(a) (tanh: 1 − o²): the backward pass reads stored o_t.
    derivative_from_output: Callable[[sp.Expr], sp.Expr]
    #: An independent plain-SymPy formula for f, to check the two entries above against.
    closed_form: Callable[[sp.Expr], sp.Expr]
    #: Analytic on the real line, so the complex step applies.
    analytic: bool
    latex_name: str

    @cached_property
    def gamma(self) -> sp.Expr:
        """γ = sup_z |f′(z)|, derived by SymPy from the closed form."""
        z = sp.Symbol("z", real=True)
        return sp.nsimplify(_sup_abs(sp.diff(self.closed_form(z), z), z))


ACTIVATIONS: dict[str, Activation] = {
    activation.name: activation
    for activation in (
        Activation(
            "tanh",
            apply=tanh,
            derivative_from_output=lambda o: 1 - o**2,
            closed_form=lambda z: (sp.exp(z) - sp.exp(-z)) / (sp.exp(z) + sp.exp(-z)),
            analytic=True,
            latex_name=r"\tanh",
        ),
        Activation(
            "sigmoid",
            apply=sigmoid,
            derivative_from_output=lambda o: o * (1 - o),
            closed_form=lambda z: 1 / (1 + sp.exp(-z)),
            analytic=True,
            latex_name=r"\sigma",
        ),
        Activation(
            "relu",
            apply=relu,
            derivative_from_output=lambda o: sp.Heaviside(o, 0),
            closed_form=lambda z: sp.Max(0, z),
            analytic=False,
            latex_name=r"\operatorname{ReLU}",
        ),
        Activation(
            "identity",
            apply=lambda z: z,
            derivative_from_output=lambda o: sp.S.One,
            closed_form=lambda z: z,
            analytic=True,
            latex_name=r"\operatorname{id}",
        ),
    )
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, (
    f"model.ACTIVATION_NAMES {ACTIVATION_NAMES} must list the activations of ACTIVATIONS, in order: "
    f"{tuple(ACTIVATIONS)}"
)
