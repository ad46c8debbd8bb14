"""Proofs that the BPTT (Σ/Π) form equals the gradient of the unrolled loss, at three strengths.

1. ``induction``: for every n at once. SymPy checks, each against what the derivation holds: the
   activation table's f and f′(o) against the closed form of f; the one-step chain rule
   d o_t/dw = f′(a_t)(∂⁺a_t/∂w + w_h · d o_{t−1}/dw) with o_{t−1} and d o_{t−1}/dw free (the
   derivation's J_t = ∂o_t/∂o_{t−1}, p_t = ∂⁺o_t/∂w and f′); the base case d o_1/dw = p_1; the
   output factor (ŷ − y) w_o; and that the Σ/Π sum T_n = Σ_j Π_{k=j+1}^{n} J_k p_j obeys the same
   recurrence T_{n+1} = p_{n+1} + J_{n+1} T_n, with n a symbol. Then d o_n/dw = T_n for all n, and
   ∂L/∂w = (ŷ − y) w_o T_n. Each derivation-dependent step rejects a derivation that is wrong in
   what it checks (tests/test_proof.py).
2. ``exact``: for one small n, the multiplied-out Σ/Π form minus the derivative of the whole nest,
   with the nest written back in o_k, cancels to 0.
3. ``numeric``: for any n, the Σ/Π form evaluated at random rational points with mpmath at 60 digits
   against mpmath's own high-precision derivative of the unrolled loss (and the expanded
   expression, where it is built).

Each check takes ``drop_gap``: the negative control drops the term at that gap (gap 1 is the first
long-term term); every check must then fail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from fractions import Fraction

import mpmath
import sympy as sp
from sympy.simplify.simplify import product_simplify, sum_simplify

from ..activations import ACTIVATIONS, Activation, sigmoid
from .derive import EXPANDED_LIMIT, Derivation

#: Exact identities are run up to this n (cancel on the back-substituted nest); above it, for n ≤ SMALL_N.
EXACT_LIMIT = 8
SMALL_N = 6
DIGITS = 60
POINTS = 3


@dataclass
class ProofStep:
    """One proof step: what was checked, how, and whether it held."""

    strength: str  # "induction" | "exact" | "numeric"
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ProofReport:
    steps: int
    activation: str
    checks: list[ProofStep] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def by_strength(self, strength: str) -> list[ProofStep]:
        return [check for check in self.checks if check.strength == strength]


# -- 1. induction ----------------------------------------------------------------------------------


def _peel(expr: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """Split Σ_{i=a}^{b} f (or Π) into (Σ_{i=a}^{b−1} f, f(b)), confirmed by SymPy's own recombination."""
    (index, lower, upper), body = expr.limits[0], expr.function
    rest = type(expr)(body, (index, lower, upper - 1))
    last = type(expr)(body, (index, upper, upper))
    recombine = sum_simplify if isinstance(expr, sp.Sum) else product_simplify
    combined = rest + last if isinstance(expr, sp.Sum) else rest * last
    if recombine(combined) != expr:
        raise AssertionError(f"SymPy did not confirm the split of {expr}")
    return rest, last.doit()


def sum_form(n, J, p, j, k, drop_gap: int | None = None) -> sp.Expr:
    """T_n = Σ_{j=1}^{n} Π_{k=j+1}^{n} J_k p_j, optionally without its term at gap ``drop_gap``."""
    total = sp.Sum(sp.Product(J[k], (k, j + 1, n)) * p[j], (j, 1, n))
    if drop_gap:
        total -= sp.Product(J[k], (k, n - drop_gap + 1, n)).doit() * p[n - drop_gap]
    return total


def _split_products(expr: sp.Expr, top) -> sp.Expr:
    """Inside a sum, write Π_{k=j+1}^{top} J_k as (Π_{k=j+1}^{top−1} J_k) J_top."""

    def split(product):
        rest, last = _peel(product)
        return rest * last

    return expr.replace(
        lambda e: isinstance(e, sp.Product) and e.limits[0][2] == top and e.limits[0][1] != top, split
    )


def sum_recurrence(drop_gap: int | None = None) -> ProofStep:
    """T_{n+1} − p_{n+1} − J_{n+1} T_n = 0 for symbolic n ≥ 1, and T_1 = p_1."""
    n = sp.Symbol("n", integer=True, positive=True)
    j, k = sp.symbols("j k", integer=True, positive=True)
    J, p = sp.IndexedBase("J"), sp.IndexedBase("p")
    # p_j for j < 1 does not exist (o_0 = 0 is a constant): a dropped term there is no term.
    before_start = {p[m]: 0 for m in range(1 - (drop_gap or 0), 1)}
    base = sp.simplify(sum_form(1, J, p, j, k, drop_gap).doit().xreplace(before_start) - p[1])
    following = sum_form(n + 1, J, p, j, k, drop_gap)
    # Peel the last term off the outer sum, then the last factor off each inner product.
    following = following.replace(
        lambda e: isinstance(e, sp.Sum) and e.limits[0][2] == n + 1, lambda e: sp.Add(*_peel(e))
    )
    following = _split_products(following, n + 1)
    difference = following - p[n + 1] - J[n + 1] * sum_form(n, J, p, j, k, drop_gap)
    difference = sp.simplify(sp.factor_terms(sp.expand(difference)))
    held = difference == 0 and base == 0
    detail = (
        "T_1 = p_1 and T_{n+1} = p_{n+1} + J_{n+1} T_n, with n a symbol"
        if held
        else f"T_(n+1) - p_(n+1) - J_(n+1) T_n = {difference}; T_1 - p_1 = {base}"
    )
    return ProofStep("induction", "Σ/Π recurrence", held, detail)


def activation_table(activation: str | Activation) -> ProofStep:
    """The table's f′ (written with the output) is the derivative of the independent closed form.

    ``activation`` is a name in ACTIVATIONS or an entry itself (the one a derivation used).
    """
    if isinstance(activation, str):
        activation = ACTIVATIONS[activation]
    failures = []
    z = sp.Symbol("z")
    closed = activation.closed_form(z)
    if not activation.analytic:
        # ReLU: not analytic, so check each side of the kink.
        for side in (sp.Symbol("z", positive=True), sp.Symbol("z", negative=True)):
            closed_side = activation.closed_form(side)
            if sp.simplify(activation.derivative_from_output(closed_side) - sp.diff(closed_side, side)) != 0:
                failures.append(f"f' on {side.assumptions0}")
            if sp.simplify(activation.apply(side) - closed_side) != 0:
                failures.append("f")
    else:
        derivative = activation.derivative_from_output(closed) - sp.diff(closed, z)
        if sp.simplify(derivative.rewrite(sp.exp)) != 0:
            failures.append("f'")
        if sp.simplify((activation.apply(z) - closed).rewrite(sp.exp)) != 0:
            failures.append("f")
    return ProofStep(
        "induction",
        "activation table",
        not failures,
        "f and f′(o) agree with the closed form of f" if not failures else f"disagree: {failures}",
    )


def _hidden_weights(derivation: Derivation):
    u = derivation.unrolled
    for parameter, components in (("w_h", (u.w_h,)), ("w_i", u.w_i)):
        for index, weight in enumerate(components):
            yield parameter, index, weight


def chain_rule_step(derivation: Derivation) -> ProofStep:
    """d o_t/dw = ∂⁺o_t/∂w + (∂o_t/∂o_{t−1}) d o_{t−1}/dw = f′(a_t)(∂⁺a_t/∂w + w_h d o_{t−1}/dw),
    with o_{t−1}(w) an arbitrary function, against the derivation's ∂⁺o_t/∂w, ∂o_t/∂o_{t−1} and f′."""
    u = derivation.unrolled
    step, f = u.step, u.activation
    failures = []
    for parameter, index, weight in _hidden_weights(derivation):
        earlier = sp.Function("o_earlier")(weight)
        slope = sp.Symbol("D")  # d o_{t−1}/dw, free
        total = sp.diff(f.apply(step.a.xreplace({step.o_prev: earlier})), weight)
        total = total.xreplace({sp.Derivative(earlier, weight): slope}).xreplace({earlier: step.o_prev})
        total = total.xreplace({f.apply(step.a): step.o})
        claimed = derivation.step_immediate[parameter][index] + derivation.step_jacobian * slope
        if sp.expand(total - claimed) != 0:
            failures.append(f"{weight} (∂⁺o_t/∂w + ∂o_t/∂o_(t-1)·D)")
        # The same with the derivation's f′(a_t), written with the output: the notes' form.
        factored = derivation.step_derivative * (sp.diff(step.a, weight) + u.w_h * slope)
        if sp.expand(total - factored) != 0:
            failures.append(f"{weight} (f′(a_t)(∂⁺a_t/∂w + w_h·D))")
    return ProofStep(
        "induction",
        "chain-rule step",
        not failures,
        "d o_t/dw = ∂⁺o_t/∂w + (∂o_t/∂o_(t-1)) d o_(t-1)/dw = f′(a_t)(∂⁺a_t/∂w + w_h d o_(t-1)/dw), "
        "for w_h and each w_i"
        if not failures
        else f"fails for {', '.join(failures)}",
    )


def base_case(derivation: Derivation) -> ProofStep:
    """d o_1/dw = ∂⁺o_1/∂w: o_0 = 0 is a constant, so the first step has only the immediate partial."""
    u = derivation.unrolled
    failures = []
    for parameter, index, weight in _hidden_weights(derivation):
        first = sp.diff(u.definition(1), weight).xreplace({u.definition(1): u.o[0]})
        if sp.expand(first - derivation.immediate(parameter, 1, index)) != 0:
            failures.append(str(weight))
    return ProofStep(
        "induction",
        "base case",
        not failures,
        "d o_1/dw = ∂⁺o_1/∂w (o_0 = 0), for w_h and each w_i"
        if not failures
        else f"d o_1/dw ≠ ∂⁺o_1/∂w for {', '.join(failures)}",
    )


def output_factor(derivation: Derivation) -> ProofStep:
    """(∂L/∂ŷ)(∂ŷ/∂o_n) = (ŷ − y) w_o and ∂L/∂w_o = (ŷ − y) o_n, checked on the closed-form sigmoid."""
    u = derivation.unrolled
    z = sp.Symbol("z")
    closed = 1 / (1 + sp.exp(-z))
    loss = -u.y * sp.log(closed) - (1 - u.y) * sp.log(1 - closed)
    dL_dz = sp.simplify(sp.diff(loss, z) - (closed - u.y))
    derived = derivation.output_factor.xreplace({u.y_hat: closed}) - (closed - u.y) * u.w_o
    derived_w_o = derivation.dL_dw_o.xreplace({u.y_hat: closed}) - (closed - u.y) * u.o[-1]
    failures = [
        name
        for name, difference in (("(∂L/∂ŷ)(∂ŷ/∂o_n)", derived), ("∂L/∂w_o", derived_w_o))
        if sp.simplify(difference) != 0
    ]
    if dL_dz != 0:  # pragma: no cover - SymPy's calculus, not the derivation
        failures.append("dL/dz")
    return ProofStep(
        "induction",
        "sigmoid + cross-entropy",
        not failures,
        "(∂L/∂ŷ)(∂ŷ/∂o_n) = (ŷ − y) w_o and ∂L/∂w_o = (ŷ − y) o_n"
        if not failures
        else f"the derivation's {' and '.join(failures)} differ from dL/dz = σ(z) − y",
    )


def induction(derivation: Derivation, drop_gap: int | None = None) -> list[ProofStep]:
    """The proof for every n at once (strength 1); the Σ/Π recurrence comes last."""
    return [
        activation_table(derivation.unrolled.activation),
        chain_rule_step(derivation),
        base_case(derivation),
        output_factor(derivation),
        sum_recurrence(drop_gap),
    ]


# -- 2. exact identity for one small n --------------------------------------------------------------


def _components(derivation: Derivation):
    for parameter, components in derivation.parameters.items():
        for index, weight in enumerate(components):
            yield parameter, index, weight


def _bptt(derivation: Derivation, parameter: str, index: int, drop_gap: int | None) -> sp.Expr:
    value = derivation.bptt(parameter, index)
    if drop_gap and parameter != "w_o" and drop_gap < derivation.n:
        value -= derivation.term(parameter, derivation.n - drop_gap, index)
    return value


def exact(derivation: Derivation, drop_gap: int | None = None) -> ProofStep:
    """The multiplied-out Σ/Π form equals the derivative of the whole nest (strength 2)."""
    n = derivation.n
    if n > EXACT_LIMIT:
        # Too large to cancel exactly: prove the identity for the small n instead (the given n is
        # covered by the induction and the high-precision evaluation).
        model = derivation.model
        small = [exact(Derivation(replace(model, steps=m)), drop_gap) for m in range(1, SMALL_N + 1)]
        failed = [c.name for c in small if not c.passed]
        return ProofStep(
            "exact",
            f"exact identity (n = 1..{SMALL_N}; n = {n} is above {EXACT_LIMIT})",
            not failed,
            f"Σ/Π form − d(nested L)/dw cancels to 0 for every weight at n = 1..{SMALL_N}"
            if not failed
            else f"does not cancel: {', '.join(failed)}",
        )
    u = derivation.unrolled
    nested = u.nested_states()
    unrolled = dict(zip(u.o, nested))
    unrolled[u.y_hat] = sigmoid(u.w_o * nested[-1])
    failures = []
    for parameter, index, weight in _components(derivation):
        # Both sides as functions of the weights, then both written back in o_k and ŷ.
        bptt = _bptt(derivation, parameter, index, drop_gap).xreplace(unrolled)
        difference = u.back_substitute(bptt - derivation.expanded(parameter, index))
        difference = sp.cancel(sp.expand(difference))
        if difference != 0:
            failures.append(str(weight))
    names = ", ".join(str(weight) for _, _, weight in _components(derivation))
    return ProofStep(
        "exact",
        f"exact identity (n = {n})",
        not failures,
        f"Σ/Π form − d(nested L)/dw cancels to 0 for {names}"
        if not failures
        else f"does not cancel for {', '.join(failures)}",
    )


# -- 3. high precision at random rational points ----------------------------------------------------

_MP_FUNCTIONS = {
    "sigmoid": lambda z: 1 / (1 + mpmath.exp(-z)),
    "relu": lambda z: z if z > 0 else mpmath.mpf(0),
    "Heaviside": lambda z, h0=0: mpmath.mpf(1) if z > 0 else (mpmath.mpf(0) if z < 0 else mpmath.mpf(h0)),
}


def _mp_lambdify(arguments, expr):
    return sp.lambdify(arguments, expr, modules=[_MP_FUNCTIONS, "mpmath"])


def random_point(derivation: Derivation, rng: random.Random) -> dict:
    """Random rationals for the weights and label, and a random one-hot input as in the notes."""
    u = derivation.unrolled

    def rational(low, high):
        return Fraction(rng.randint(int(low * 1000), int(high * 1000)), 1000)

    point = {w: rational(0.1, 1.0) for w in u.w_i}
    point[u.w_h] = rational(-0.95, 0.95)
    point[u.w_o] = rational(-2, 2)
    point[u.y] = Fraction(rng.randint(0, 1))
    for row in u.x:
        hot = rng.randrange(len(row))
        point.update({symbol: Fraction(int(d == hot)) for d, symbol in enumerate(row)})
    return point


class HighPrecision:
    """Evaluates the model's pieces at one point with mpmath, one generic step at a time (O(n))."""

    def __init__(self, derivation: Derivation, digits: int = DIGITS):
        self.derivation = derivation
        u = derivation.unrolled
        step = u.step
        self.digits = digits
        self.weights = (*u.w_i, u.w_h, u.w_o)
        step_arguments = (step.o, step.o_prev, *step.x, *self.weights)
        self.step_value = _mp_lambdify((step.o_prev, *step.x, *self.weights), u.activation.apply(step.a))
        self.jacobian = _mp_lambdify(step_arguments, derivation.step_jacobian)
        self.immediate = {
            name: [_mp_lambdify(step_arguments, expr) for expr in exprs]
            for name, exprs in derivation.step_immediate.items()
        }
        output_arguments = (u.y_hat, u.y, u.o[-1], *self.weights)
        self.output_factor = _mp_lambdify(output_arguments, derivation.output_factor)
        self.dL_dw_o = _mp_lambdify(output_arguments, derivation.dL_dw_o)

    def _mp(self, value):
        return mpmath.mpf(value.numerator) / value.denominator

    def states(self, point: dict, weights: list) -> list:
        u = self.derivation.unrolled
        states, previous = [], mpmath.mpf(0)
        for row in u.x:
            previous = self.step_value(previous, *(self._mp(point[s]) for s in row), *weights)
            states.append(previous)
        return states

    def loss(self, point: dict, weights: list):
        o_n = self.states(point, weights)[-1]
        z = weights[-1] * o_n
        y = self._mp(point[self.derivation.unrolled.y])
        # log σ(z) = −log(1 + e^{−z}); at 60 digits nothing here cancels badly.
        return y * mpmath.log1p(mpmath.exp(-z)) + (1 - y) * mpmath.log1p(mpmath.exp(z))

    def bptt(self, point: dict, drop_gap: int | None = None) -> list:
        """The Σ/Π form: G Σ_j (Π_{k>j} J_k) p_j, per weight component, in order (w_i…, w_h, w_o)."""
        u, n = self.derivation.unrolled, self.derivation.n
        with mpmath.workdps(self.digits):
            weights = [self._mp(point[w]) for w in self.weights]
            states = self.states(point, weights)
            y = self._mp(point[u.y])
            y_hat = 1 / (1 + mpmath.exp(-weights[-1] * states[-1]))
            arguments = (y_hat, y, states[-1], *weights)
            factor = self.output_factor(*arguments)
            sums = {name: [mpmath.mpf(0)] * len(fs) for name, fs in self.immediate.items()}
            suffix = mpmath.mpf(1)  # Π_{k=j+1}^{n} J_k
            for j in range(n, 0, -1):
                previous = states[j - 2] if j > 1 else mpmath.mpf(0)
                step_arguments = (states[j - 1], previous, *(self._mp(point[s]) for s in u.x[j - 1]), *weights)
                if drop_gap != n - j:
                    for name, functions in self.immediate.items():
                        for index, function in enumerate(functions):
                            sums[name][index] += suffix * function(*step_arguments)
                suffix *= self.jacobian(*step_arguments)
            return [factor * s for s in sums["w_i"]] + [factor * sums["w_h"][0], self.dL_dw_o(*arguments)]

    def derivative(self, point: dict) -> list:
        """mpmath's own numerical derivative of the unrolled loss, at 2× the digits (the oracle)."""
        with mpmath.workdps(2 * self.digits):
            base = [self._mp(point[w]) for w in self.weights]
            gradient = []
            for index in range(len(base)):

                def along(value, index=index):
                    weights = list(base)
                    weights[index] = value
                    return self.loss(point, weights)

                gradient.append(mpmath.diff(along, base[index]))
            return gradient


def numeric(derivation: Derivation, drop_gap: int | None = None, points: int = POINTS, seed: int = 0) -> ProofStep:
    """The Σ/Π form against the high-precision derivative of the unrolled loss (strength 3)."""
    rng = random.Random(seed)
    evaluator = HighPrecision(derivation)
    worst = mpmath.mpf(0)
    with mpmath.workdps(DIGITS):
        for _ in range(points):
            point = random_point(derivation, rng)
            ours = evaluator.bptt(point, drop_gap)
            oracle = evaluator.derivative(point)
            if derivation.n <= EXPANDED_LIMIT:
                oracle_expanded = _expanded_values(derivation, point)
                worst = max(worst, _relative(ours, oracle_expanded))
            worst = max(worst, _relative(ours, oracle))
    tolerance = mpmath.mpf(10) ** -(DIGITS - 15)
    held = worst < tolerance
    return ProofStep(
        "numeric",
        f"{DIGITS}-digit evaluation (n = {derivation.n})",
        held,
        f"{points} random rational points: worst relative difference {mpmath.nstr(worst, 3)} "
        f"(tolerance {mpmath.nstr(tolerance, 1)})",
    )


def _expanded_values(derivation: Derivation, point: dict) -> list:
    """The expanded (nest-differentiated) gradient at ``point``, through mpmath."""
    symbols = sorted(point, key=str)
    arguments = [mpmath.mpf(point[s].numerator) / point[s].denominator for s in symbols]
    return [
        _mp_lambdify(symbols, derivation.expanded(parameter, index))(*arguments)
        for parameter, index, _ in _components(derivation)
    ]


def _relative(ours: list, reference: list):
    scale = max(abs(v) for v in reference) or mpmath.mpf(1)
    return max(abs(a - b) for a, b in zip(ours, reference)) / scale


def prove(derivation: Derivation, drop_gap: int | None = None, progress=None) -> ProofReport:
    """Run all three strengths; ``drop_gap`` runs them on the deliberately wrong variant instead.
    ``progress(k, what)``, if given, is called as each of the three begins."""
    progress = progress or (lambda stage, what: None)
    report = ProofReport(derivation.n, derivation.model.activation)
    progress(1, "the induction")
    report.checks += induction(derivation, drop_gap)
    progress(2, "the exact identity")
    report.checks.append(exact(derivation, drop_gap))
    progress(3, "the 60-digit evaluation")
    report.checks.append(numeric(derivation, drop_gap))
    return report


SCALAR_HEADINGS = {
    "induction": "1. By induction, for every n",
    "exact": "2. Exact identity",
    "numeric": "3. High-precision evaluation",
}


def format_report(report: ProofReport) -> str:
    """A readable account of what was proved and how."""
    lines = [f"Proof that the BPTT (Σ/Π) form equals ∂L/∂w — activation {report.activation}, n = {report.steps}"]
    for strength, heading in SCALAR_HEADINGS.items():
        lines.append(heading)
        for check in report.by_strength(strength):
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"   [{mark}] {check.name}: {check.detail}")
    verdict = "PROVED" if report.passed else "DISAGREEMENT"
    lines.append(f"{verdict}: {sum(c.passed for c in report.checks)} of {len(report.checks)} checks hold")
    return "\n".join(lines) + "\n"


__all__ = ["ProofReport", "ProofStep", "exact", "format_report", "induction", "numeric", "prove", "sigmoid"]
