"""The BPTT derivation: the chain-rule (Σ/Π) form, the local derivatives and the expanded form.

For a hidden-state weight w (w_h, or a component of w_i):

    ∂L/∂w = Σ_{j=1..n} (∂L/∂ŷ)(∂ŷ/∂o_n) Π_{k=j+1..n} (∂o_k/∂o_{k−1}) (∂⁺o_j/∂w)

where ∂⁺o_j/∂w is the *immediate* partial (o_{j−1} held fixed), not the total derivative the
notes write. Term j = n is the short-term dependency, j < n the long-term ones. The local
derivatives come from SymPy's ``diff`` on the defining equations, written back with the stored
outputs o_k (tanh: ∂o_k/∂o_{k−1} = (1 − o_k²) w_h).

w_i and x_t are vector symbols and w_i·x_t one ``unroll.Dot``, so the derivation is the same work
for every input size D: ∂⁺o_t/∂w_i = f′(a_t) x_t is one ``sp.diff``, and its component d is that
vector with x_{t,d} for x_t (``step_immediate["w_i"][d]``, made on demand).
"""

from __future__ import annotations

from functools import cached_property

import sympy as sp

from ..activations import sigmoid
from ..engine.derivation import CellDerivation, derive_model
from ..errors import UsageError
from ..model import Model
from .forms import (
    EXPANDED_LIMIT,
    EXPLICIT_INPUTS_LIMIT,
    MULTIPLIED_LIMIT,
    PARAMETERS,
    UNROLL_LIMIT,
    AbstractPartial,
    ComponentsOf,
    GeneralForm,
    OutOfRange,
    Term,
)
from .unroll import UnrolledScalarRNN, unroll


class Derivation:
    """Everything derived for one model; expressions are SymPy objects, nothing is printed here."""

    def __init__(self, model: Model, engine: CellDerivation | None = None):
        """``engine``: the engine's derivation of ``cell_of(model)`` when the command already has it
        (derived here otherwise)."""
        model.require_scalar("this derivation")
        if model.steps > UNROLL_LIMIT:
            raise UsageError(
                f"--steps {model.steps} is too many to unroll symbolically (limit {UNROLL_LIMIT}): the "
                "general Σ/Π form holds for every n (see --steps 3); for long sequences generate code "
                "with bptt codegen --mode loop"
            )
        self.model = model
        self.unrolled: UnrolledScalarRNN = unroll(model)
        u = self.unrolled
        self.n = model.steps
        # The notes' own output factors ∂L/∂ŷ and ∂ŷ/∂o_n, as the document writes them one by one.
        self.dL_dyhat = sp.diff(u.loss, u.y_hat)
        self.dyhat_do_n = self._written_with_outputs(sp.diff(u.output_definition, u.o[-1]))
        self.dyhat_dw_o = self._written_with_outputs(sp.diff(u.output_definition, u.w_o))
        # One generic step, read from the engine's derivation of the rnn cell at H = 1 (this class
        # is a view on it, not a second derivation): ∂o_t/∂o_{t−1}, f′(a_t) and ∂⁺o_t/∂w, written
        # with the output o_t; every timestep is an instance of these (linear in n).
        self.engine = derive_model(model) if engine is None else engine
        self.step_derivative, self.step_jacobian, self.step_immediate_vector = _step_partials(self.engine, u)
        # The output: the engine's ∂L/∂z (z = w_o o_n, simplified for sigmoid + cross-entropy) times
        # ∂z/∂o_n = w_o, and ∂z/∂w_o = o_n.
        residual = self.engine.output_factor.xreplace(_engine_output_symbols(self.engine, u))
        self.output_factor = sp.factor(sp.cancel(residual * u.w_o))
        self.dL_dw_o = sp.factor(sp.cancel(residual * u.o[-1]))
        self.step_immediate = {
            "w_h": (self.step_immediate_vector["w_h"],),
            "w_i": ComponentsOf(self.step_immediate_vector["w_i"], u.step.x_vector, u.step.x),
        }

    # -- building blocks -------------------------------------------------------------------------

    def _written_with_outputs(self, expr: sp.Expr) -> sp.Expr:
        """Write σ(w_o o_n) as ŷ, so derivatives read the stored output."""
        return self.unrolled.back_substitute(expr, ())

    @property
    def parameters(self) -> dict[str, tuple[sp.Symbol, ...]]:
        """Parameter name → its scalar components, in the notes' order (i) w_i, (ii) w_h, (iii) w_o."""
        u = self.unrolled
        return {"w_i": u.w_i, "w_h": (u.w_h,), "w_o": (u.w_o,)}

    def jacobian(self, k: int) -> sp.Expr:
        """∂o_k/∂o_{k−1} = f′(a_k) w_h for k = 1..n (the products of the BPTT sums use k = 2..n)."""
        return self._instance(self.step_jacobian, self._timestep(k, "k", "jacobian"))

    def immediate(self, parameter: str, j: int, component: int = 0) -> sp.Expr:
        """∂⁺o_j/∂w for a component of w_h or w_i, with o_{j−1} held fixed (∂⁺o_1/∂w_h = 0)."""
        component = self._component(parameter, component, hidden=True)
        return self._instance(self.step_immediate[parameter][component], self._timestep(j, "j", "immediate"))

    def _instance(self, expr: sp.Expr, t: int) -> sp.Expr:
        return expr.xreplace(self.unrolled.step.at(self.unrolled, t))

    def terms(self) -> list[Term]:
        """The terms of a hidden-weight sum, short-term (j = n) first as in the notes."""
        return [Term(j, self.n - j) for j in range(self.n, 0, -1)]

    # -- the three forms -------------------------------------------------------------------------

    def abstract_term(self, parameter: str, j: int, weight: sp.Expr | None = None) -> sp.Expr:
        """Term j with abstract partials, in chain-rule order, e.g. ∂L/∂ŷ ∂ŷ/∂o_3 ∂o_3/∂o_2 ∂⁺o_2/∂w."""
        u, n = self.unrolled, self.n
        self._component(parameter, 0, hidden=True)
        j = self._timestep(j, "j", "abstract_term")
        weight = u.w_h if weight is None else weight
        loss = sp.Symbol("L")
        factors = [AbstractPartial(loss, u.y_hat), AbstractPartial(u.y_hat, u.o[-1])]
        factors += [AbstractPartial(u.o[k - 1], u.o[k - 2]) for k in range(n, j, -1)]
        factors.append(AbstractPartial(u.o[j - 1], weight, True))
        return sp.Mul(*factors)

    def term(self, parameter: str, j: int, component: int = 0) -> sp.Expr:
        """Term j with the local derivatives substituted: (ŷ − y) w_o Π_k ∂o_k/∂o_{k−1} · ∂⁺o_j/∂w."""
        component = self._component(parameter, component, hidden=True)
        j = self._timestep(j, "j", "term")
        product = sp.Mul(*(self.jacobian(k) for k in range(j + 1, self.n + 1)))
        return self.output_factor * product * self.immediate(parameter, j, component)

    def bptt(self, parameter: str, component: int = 0) -> sp.Expr:
        """The whole Σ/Π form for one weight component, multiplied out (o_k kept as symbols)."""
        component = self._component(parameter, component)
        if parameter == "w_o":
            return self.dL_dw_o
        if self.n > MULTIPLIED_LIMIT:
            raise UsageError(
                f"the multiplied-out BPTT form has O(n²) factors; n = {self.n} is above "
                f"{MULTIPLIED_LIMIT}: use the Σ/Π form or the generated code"
            )
        return sp.Add(*(self.term(parameter, t.j, component) for t in self.terms()))

    def expanded(self, parameter: str, component: int = 0) -> sp.Expr:
        """∂L/∂w by differentiating the fully nested loss directly (small n only), with every w_i·x_t
        written out over the D components: SymPy's own derivative, the proofs' oracle (O(nD) each)."""
        self._require_expanded()
        component = self._component(parameter, component)
        weight = self.parameters[parameter][component]
        return sp.diff(self._nested_loss, weight)

    def vector_expanded(self, parameter: str) -> sp.Expr:
        """∂L/∂w of the nested loss with each w_i·x_t one Dot (small n only; the same work for every D).
        For w_i a vector expression, linear in the x_t outside the Dots (``unrolled.component``)."""
        self._require_expanded()
        self._component(parameter, 0)
        weight = {"w_i": self.unrolled.w_i_vector, "w_h": self.unrolled.w_h, "w_o": self.unrolled.w_o}[parameter]
        return sp.diff(self._vector_nested_loss, weight)

    def _require_expanded(self) -> None:
        if self.n > EXPANDED_LIMIT:
            raise UsageError(
                f"the fully expanded gradient is only built for n ≤ {EXPANDED_LIMIT} (it grows "
                f"exponentially); n = {self.n} keeps the Σ/Π form"
            )

    def require_components(self, what: str = "--verify") -> None:
        """Refuse work that writes w_i·x_t out over the D components when D is large."""
        D = self.model.inputs
        if D > EXPLICIT_INPUTS_LIMIT:
            raise UsageError(
                f"{what} checks each of the D = {D} components of w_i against the unrolled loss written out "
                f"component by component (limit D = {EXPLICIT_INPUTS_LIMIT}); the derivation treats w_i as one "
                "vector and is the same for every D: verify it with --inputs 3"
            )

    @cached_property
    def _nested_loss(self) -> sp.Expr:
        return self.unrolled.nested_loss()

    @cached_property
    def _vector_nested_loss(self) -> sp.Expr:
        return self.unrolled.nested_loss(vector=True)

    def general(self, weight: sp.Symbol | None = None) -> GeneralForm:
        """The Σ/Π form for symbolic n (index symbols n, j, k; o as an IndexedBase)."""
        integer = {"integer": True, "positive": True}
        return GeneralForm(
            n=sp.Symbol("n", **integer),
            j=sp.Symbol("j", **integer),
            k=sp.Symbol("k", **integer),
            o=sp.IndexedBase("o"),
            loss=sp.Symbol("L"),
            y_hat=self.unrolled.y_hat,
            weight=self.unrolled.w_h if weight is None else weight,
        )

    def _timestep(self, t, name: str, method: str) -> int:
        """``t`` as a timestep 1..n, else a one-line error naming the range."""
        if isinstance(t, bool) or not hasattr(type(t), "__index__"):
            raise UsageError(f"{method}({t!r}): the timestep {name} must be a whole number from 1 to {self.n}")
        t = int(t)
        if not 1 <= t <= self.n:
            raise OutOfRange(
                f"{method}({t}): the timestep {name} must be in 1..{self.n} (n = {self.n} steps), got {t}"
            )
        return t

    def _component(self, parameter: str, component, hidden: bool = False) -> int:
        """Check a parameter name (w_i, w_h, or w_o unless ``hidden``) and its component index."""
        names = ("w_i", "w_h") if hidden else PARAMETERS
        if parameter not in names:
            if parameter == "w_o":
                raise UsageError(
                    "'w_o' is not a hidden-state weight (w_h or w_i): it has no BPTT terms; "
                    "∂L/∂w_o is bptt('w_o') or .dL_dw_o"
                )
            raise UsageError(f"unknown parameter {parameter!r}: choose one of {', '.join(names)}")
        size = len(self.parameters[parameter])
        if isinstance(component, bool) or not hasattr(type(component), "__index__"):
            raise UsageError(
                f"the component of {parameter} must be a whole number from 0 to {size - 1}, got {component!r}"
            )
        component = int(component)
        if not 0 <= component < size:
            valid = "0" if size == 1 else f"0..{size - 1}"
            raise OutOfRange(
                f"component {component} of {parameter} does not exist: {parameter} has {size} "
                f"component{'s' if size > 1 else ''} (index {valid})"
            )
        return component

    def _repr_latex_(self) -> str:
        from ..typeset.notes import summary

        return summary(self)


def _engine_output_symbols(engine: CellDerivation, u: UnrolledScalarRNN) -> dict:
    """The engine's ŷ and y as the notes' symbols."""
    return {engine.symbols["y_hat"]: u.y_hat, engine.symbols["y"]: u.y}


def _step_partials(engine: CellDerivation, u: UnrolledScalarRNN) -> tuple[sp.Expr, sp.Expr, dict]:
    """f′(a_t), ∂o_t/∂o_{t−1} and ∂⁺o_t/∂w (w_h, and w_i as a vector) from the engine's rnn cell at H = 1.

    The engine keeps w_h o_{t−1} as one linear symbol; at H = 1 its transpose rule is a product with
    w_h, and ∂⁺o_t/∂M = δ(M u) u (the outer product's one entry) with the operand u = o_{t−1} or x_t.
    """
    step = u.step
    names = {engine.node["o"].symbol: step.o, engine.previous["o"]: step.o_prev}
    direct, through = engine.state_jacobian[("o", "o")]
    assert direct == 0, "the plain RNN has no direct path from o_(t−1) to o_t"
    linear = {linear.matrix: linear for linear in engine.linears}
    derivative = through[linear["w_h"].symbol].xreplace(names)
    operands = {"x": step.x_vector, "o_prev": step.o_prev}
    immediate = {}
    for parameter in ("w_h", "w_i"):
        ((kind, _delta, operand),) = engine.gradients[parameter]
        assert kind == "outer"
        immediate[parameter] = derivative * operands[operand]
    return derivative, derivative * step.w_h, immediate


def derive(steps: int = 3, activation: str = "tanh", inputs: int = 3) -> Derivation:
    """Derive the exact gradients of the notes' RNN unrolled over ``steps`` timesteps."""
    return Derivation(Model(steps=steps, activation=activation, inputs=inputs))


__all__ = ["AbstractPartial", "Derivation", "OutOfRange", "Term", "derive", "sigmoid"]
