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
    """The matrix BPTT formulas with matrix symbols, for typesetting."""

    delta_n: sp.Expr
    delta_t: sp.Expr
    jacobian: sp.Expr
    dW_h: sp.Expr
    dW_i: sp.Expr
    dw_o: sp.Expr
    db_h: sp.Expr | None
    db_o: sp.Expr | None
    symbols: dict


def _vector(name: str, size: int) -> sp.Matrix:
    return sp.Matrix(size, 1, lambda r, _: sp.Symbol(f"{name}_{r + 1}"))


class MatrixDerivation:
    """The BPTT derivation for hidden size H, input size D, n steps, optional biases."""

    def __init__(self, steps: int, activation: str = "tanh", hidden: int = 2, inputs: int = 2,
                 bias: bool = False):
        if steps * hidden * hidden > EXPLICIT_LIMIT:
            raise UsageError(
                f"n·H² = {steps * hidden * hidden} is too large to derive elementwise (limit "
                f"{EXPLICIT_LIMIT}): the matrix formulas hold for every size; generate code instead"
            )
        self.n, self.H, self.D, self.bias = steps, hidden, inputs, bias
        self.activation = ACTIVATIONS[activation]
        H, D = hidden, inputs
        self.W_i = sp.Matrix(H, D, lambda r, c: sp.Symbol(f"W_i_{r + 1}_{c + 1}"))
        self.W_h = sp.Matrix(H, H, lambda r, c: sp.Symbol(f"W_h_{r + 1}_{c + 1}"))
        self.w_o = _vector("w_o", H)
        self.b_h = _vector("b_h", H) if bias else sp.zeros(H, 1)
        self.b_o = sp.Symbol("b_o") if bias else sp.S.Zero
        self.y, self.y_hat = sp.Symbol("y"), sp.Symbol("y_hat")
        self.x = [_vector(f"x_{t}", D) for t in range(1, steps + 1)]
        self.o = [_vector(f"o_{t}", H) for t in range(1, steps + 1)]

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
        H, D = self.H, self.D
        W_i, W_h = sp.MatrixSymbol("W_i", H, D), sp.MatrixSymbol("W_h", H, H)
        w_o, x_t = sp.MatrixSymbol("w_o", H, 1), sp.MatrixSymbol("x_t", D, 1)
        o_prev = sp.MatrixSymbol("o_{t-1}", H, 1)
        delta_t, delta_next = sp.MatrixSymbol(r"\delta_t", H, 1), sp.MatrixSymbol(r"\delta_{t+1}", H, 1)
        fprime_t = sp.MatrixSymbol(r"f'(a_t)", H, 1)
        fprime_next = sp.MatrixSymbol(r"f'(a_{t+1})", H, 1)
        fprime_k = sp.MatrixSymbol(r"f'(a_k)", H, 1)
        o_n = sp.MatrixSymbol("o_n", H, 1)
        residual = self.y_hat - self.y
        gate = sp.HadamardProduct(fprime_t, delta_t)
        return Formulas(
            delta_n=residual * w_o,
            delta_t=W_h.T * sp.HadamardProduct(fprime_next, delta_next),
            jacobian=sp.DiagMatrix(fprime_k) * W_h,
            dW_h=gate * o_prev.T,
            dW_i=gate * x_t.T,
            dw_o=residual * o_n,
            db_h=gate if self.bias else None,
            db_o=residual if self.bias else None,
            symbols={"W_i": W_i, "W_h": W_h, "w_o": w_o},
        )
