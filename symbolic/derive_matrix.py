"""BPTT for a hidden state of any size H: the matrix form, derived and checked elementwise.

    o_0 = 0,  a_t = W_i x_t + W_h o_{t−1} (+ b_h),  o_t = f(a_t),  ŷ = σ(w_oᵀ o_n (+ b_o))

    δ_n = (ŷ − y) w_o,   δ_t = W_hᵀ (f′(a_{t+1}) ⊙ δ_{t+1})          (δ_t = ∂L/∂o_t, total)
    ∂L/∂W_h = Σ_t (f′(a_t) ⊙ δ_t) o_{t−1}ᵀ,   ∂L/∂W_i = Σ_t (f′(a_t) ⊙ δ_t) x_tᵀ
    ∂L/∂b_h = Σ_t f′(a_t) ⊙ δ_t,   ∂L/∂w_o = (ŷ − y) o_n,   ∂L/∂b_o = ŷ − y

The Jacobian ∂o_k/∂o_{k−1} = diag(f′(a_k)) W_h replaces the notes' scalar factor; their product over
a gap is what vanishes or explodes. For H = 1 (no bias) every formula is the scalar derivation's.

Two representations: display formulas with SymPy matrix symbols (for typesetting), and explicit
matrices of scalar symbols for given (n, H, D), with o_t kept as a vector of symbols, for the proofs
and code generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from .activations import ACTIVATIONS, sigmoid
from .errors import UsageError

#: Largest n·H² for which the explicit matrices are built (they are only needed for small sizes).
EXPLICIT_LIMIT = 20_000
#: Largest n for which the nested loss is differentiated elementwise.
EXPANDED_LIMIT = 4


@dataclass(frozen=True)
class Formulas:
    """The matrix BPTT formulas with matrix symbols, for typesetting (any size: nothing explicit)."""

    delta_n: sp.Expr
    delta_t: sp.Expr
    jacobian: sp.Expr
    dW_h: sp.Expr
    dW_i: sp.Expr
    dw_o: sp.Expr
    db_h: sp.Expr | None
    db_o: sp.Expr | None
    #: Short name → matrix symbol (W_i, W_h, w_o, b_h, x_t, o_t, o_{t−1}, o_n, δ_t, f′(a_k), …).
    symbols: dict
    #: Matrix symbol → its LaTeX (bold vectors, f′(a_t) for the derivative vectors).
    names: dict
    #: The derivative vectors f′(a_·), written first in a Hadamard product.
    derivative_vectors: tuple


def _vector(name: str, size: int) -> sp.Matrix:
    return sp.Matrix(size, 1, lambda r, _: sp.Symbol(f"{name}_{r + 1}"))


class MatrixDerivation:
    """The BPTT derivation for hidden size H, input size D, n steps, optional biases."""

    def __init__(self, steps: int, activation: str = "tanh", hidden: int = 2, inputs: int = 2,
                 bias: bool = False):
        self.n, self.H, self.D, self.bias = steps, hidden, inputs, bias
        self.activation = ACTIVATIONS[activation]
        self.y, self.y_hat = sp.Symbol("y"), sp.Symbol("y_hat")

    # The explicit matrices are built on first use only: the display formulas (``formulas``) need
    # none of them, so a document for H = 128, n = 1000 costs no more than one for H = 2.

    @property
    def explicit(self) -> bool:
        """Whether the explicit matrices of scalar symbols can be built (n·H² ≤ EXPLICIT_LIMIT)."""
        return self.n * self.H * self.H <= EXPLICIT_LIMIT

    def _require_explicit(self) -> None:
        if not self.explicit:
            raise UsageError(
                f"n·H² = {self.n * self.H * self.H} is too large to derive elementwise (limit "
                f"{EXPLICIT_LIMIT}): the matrix formulas hold for every size; generate code instead"
            )

    @cached_property
    def W_i(self) -> sp.Matrix:
        self._require_explicit()
        return sp.Matrix(self.H, self.D, lambda r, c: sp.Symbol(f"W_i_{r + 1}_{c + 1}"))

    @cached_property
    def W_h(self) -> sp.Matrix:
        self._require_explicit()
        return sp.Matrix(self.H, self.H, lambda r, c: sp.Symbol(f"W_h_{r + 1}_{c + 1}"))

    @cached_property
    def w_o(self) -> sp.Matrix:
        self._require_explicit()
        return _vector("w_o", self.H)

    @cached_property
    def b_h(self) -> sp.Matrix:
        self._require_explicit()
        return _vector("b_h", self.H) if self.bias else sp.zeros(self.H, 1)

    @property
    def b_o(self) -> sp.Expr:
        return sp.Symbol("b_o") if self.bias else sp.S.Zero

    @cached_property
    def x(self) -> list[sp.Matrix]:
        self._require_explicit()
        return [_vector(f"x_{t}", self.D) for t in range(1, self.n + 1)]

    @cached_property
    def o(self) -> list[sp.Matrix]:
        self._require_explicit()
        return [_vector(f"o_{t}", self.H) for t in range(1, self.n + 1)]

    # -- the model ---------------------------------------------------------------------------------

    def state(self, t: int) -> sp.Matrix:
        return sp.zeros(self.H, 1) if t == 0 else self.o[t - 1]

    def preactivation(self, t: int, previous: sp.Matrix | None = None) -> sp.Matrix:
        """a_t = W_i x_t + W_h o_{t−1} + b_h (o_{t−1} as symbols unless given)."""
        previous = self.state(t - 1) if previous is None else previous
        return self.W_i * self.x[t - 1] + self.W_h * previous + self.b_h

    def logit(self, o_n: sp.Matrix | None = None) -> sp.Expr:
        o_n = self.o[-1] if o_n is None else o_n
        return (self.w_o.T * o_n)[0, 0] + self.b_o

    @property
    def parameters(self) -> dict[str, sp.Matrix]:
        """Name → matrix of scalar symbols, in the order the generated code returns gradients."""
        parameters = {"w_i": self.W_i, "w_h": self.W_h, "w_o": self.w_o}
        if self.bias:
            parameters.update(b_h=self.b_h, b_o=sp.Matrix([[self.b_o]]))
        return parameters

    # -- the BPTT form -----------------------------------------------------------------------------

    def derivative(self, t: int) -> sp.Matrix:
        """f′(a_t) elementwise, written with the stored outputs o_t."""
        return self.o[t - 1].applyfunc(self.activation.derivative_from_output)

    def jacobian(self, k: int) -> sp.Matrix:
        """∂o_k/∂o_{k−1} = diag(f′(a_k)) W_h."""
        return sp.diag(*self.derivative(k)) * self.W_h

    @cached_property
    def deltas(self) -> list[sp.Matrix]:
        """δ_t = ∂L/∂o_t for t = 1..n: δ_n = (ŷ − y) w_o, δ_t = W_hᵀ (f′(a_{t+1}) ⊙ δ_{t+1})."""
        deltas = [None] * self.n
        deltas[-1] = (self.y_hat - self.y) * self.w_o
        for t in range(self.n - 1, 0, -1):
            deltas[t - 1] = self.W_h.T * self.derivative(t + 1).multiply_elementwise(deltas[t])
        return deltas

    def gate(self, t: int) -> sp.Matrix:
        """f′(a_t) ⊙ δ_t = ∂L/∂a_t."""
        return self.derivative(t).multiply_elementwise(self.deltas[t - 1])

    @cached_property
    def gradients(self) -> dict[str, sp.Matrix]:
        """The matrix formulas, as explicit matrices in the o_t symbols and ŷ."""
        gates = [self.gate(t) for t in range(1, self.n + 1)]
        gradients = {
            "w_i": sum((g * x.T for g, x in zip(gates, self.x)), sp.zeros(self.H, self.D)),
            "w_h": sum((g * self.state(t).T for t, g in enumerate(gates)), sp.zeros(self.H, self.H)),
            "w_o": (self.y_hat - self.y) * self.o[-1],
        }
        if self.bias:
            gradients["b_h"] = sum(gates, sp.zeros(self.H, 1))
            gradients["b_o"] = sp.Matrix([[self.y_hat - self.y]])
        return gradients

    # -- the unrolled loss, for the proofs ---------------------------------------------------------

    def nested_states(self) -> list[sp.Matrix]:
        f = self.activation.apply
        states, previous = [], sp.zeros(self.H, 1)
        for t in range(1, self.n + 1):
            previous = self.preactivation(t, previous).applyfunc(f)
            states.append(previous)
        return states

    @cached_property
    def nested_loss(self) -> sp.Expr:
        y_hat = sigmoid(self.logit(self.nested_states()[-1]))
        return -self.y * sp.log(y_hat) - (1 - self.y) * sp.log(1 - y_hat)

    def expanded(self, name: str) -> sp.Matrix:
        """∂L/∂(each element) by differentiating the nested loss directly."""
        if self.n > EXPANDED_LIMIT:
            raise UsageError(f"the elementwise expanded gradient is built only for n ≤ {EXPANDED_LIMIT}")
        return self.parameters[name].applyfunc(lambda p: sp.diff(self.nested_loss, p))

    def back_substitute(self, expr: sp.Expr) -> sp.Expr:
        """f(a_{t,h}) → o_{t,h}, innermost first, then σ(w_oᵀ o_n + b_o) → ŷ."""
        f = self.activation.apply
        for t in range(1, self.n + 1):
            a = self.preactivation(t)
            rules = {f(a[h]): self.o[t - 1][h] for h in range(self.H)}
            rules = {k: v for k, v in rules.items() if isinstance(k, sp.Function)}
            expr = expr.xreplace(rules)
        return expr.xreplace({sigmoid(self.logit()): self.y_hat})

    # -- display -------------------------------------------------------------------------------------

    @cached_property
    def formulas(self) -> Formulas:
        """δ_n = (ŷ − y) w_o, δ_t = W_hᵀ (f′(a_{t+1}) ⊙ δ_{t+1}), diag(f′(a_k)) W_h and the summands
        of the gradients, with SymPy's matrix symbols of the right shapes."""
        H, D = self.H, self.D
        shapes = {"W_i": (H, D), "W_h": (H, H), "x_t": (D, 1)}
        latex = {
            "W_i": "W_{i}", "W_h": "W_{h}", "w_o": r"\mathbf{w}_{o}", "b_h": r"\mathbf{b}_{h}",
            "x_t": r"\mathbf{x}_{t}", "o_0": r"\mathbf{o}_{0}", "o_t": r"\mathbf{o}_{t}",
            "o_prev": r"\mathbf{o}_{t-1}", "o_n": r"\mathbf{o}_{n}", "o_k": r"\mathbf{o}_{k}",
            "o_k-1": r"\mathbf{o}_{k-1}", "delta_n": r"\boldsymbol{\delta}_{n}",
            "delta_t": r"\boldsymbol{\delta}_{t}", "delta_t+1": r"\boldsymbol{\delta}_{t+1}",
            "f'(a_t)": r"f'\left(\mathbf{a}_{t}\right)", "f'(a_t+1)": r"f'\left(\mathbf{a}_{t+1}\right)",
            "f'(a_k)": r"f'\left(\mathbf{a}_{k}\right)",
        }
        s = {name: sp.MatrixSymbol(name, *shapes.get(name, (H, 1))) for name in latex}
        residual = self.y_hat - self.y
        gate = sp.HadamardProduct(s["f'(a_t)"], s["delta_t"])
        return Formulas(
            delta_n=residual * s["w_o"],
            delta_t=s["W_h"].T * sp.HadamardProduct(s["f'(a_t+1)"], s["delta_t+1"]),
            jacobian=sp.DiagMatrix(s["f'(a_k)"]) * s["W_h"],
            dW_h=gate * s["o_prev"].T,
            dW_i=gate * s["x_t"].T,
            dw_o=residual * s["o_n"],
            db_h=gate if self.bias else None,
            db_o=residual if self.bias else None,
            symbols=s,
            names={s[name]: tex for name, tex in latex.items()} | {self.y_hat: r"\hat{y}"},
            derivative_vectors=(s["f'(a_t)"], s["f'(a_t+1)"], s["f'(a_k)"]),
        )
