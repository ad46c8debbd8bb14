"""Vanishing and exploding gradients, measured with the generated code and bounded with SymPy.

For a sequence of n steps, BPTT writes ∂L/∂w as a sum of n terms; term j (gap n − j) is

    (∂L/∂ŷ)(∂ŷ/∂o_n) · Π_{k=j+1..n} ∂o_k/∂o_{k−1} · ∂⁺o_j/∂w,

so everything the long-term terms carry passes through the product of the factors
∂o_k/∂o_{k−1} = f′(a_k) w_h. SymPy derives the bound

    |∂o_k/∂o_{k−1}| = |f′(a_k)| |w_h| ≤ γ |w_h|,   γ = sup_z |f′(z)|,

hence |Π over a gap g| ≤ (γ|w_h|)^g.

The regime is judged as follows (``classify``):

1. γ|w_h| < 1: ``vanishing``, guaranteed by the bound — every long-term product shrinks at least
   geometrically, whatever the inputs.
2. otherwise from the measured factors, by their geometric mean m = exp(mean_k log|∂o_k/∂o_{k−1}|)
   (the per-step growth rate of the product; a zero factor makes m = 0):
   m < 1 − TOLERANCE → ``vanishing``, m > 1 + TOLERANCE → ``exploding``, else ``stable``.

The label y of the analysed sequence is taken as the one the model gets wrong (y = 1 when ŷ < ½,
else 0), so |ŷ − y| ≥ ½: a saturated output never hides the terms, and the ratios between terms,
which are the subject here, do not depend on y anyway.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp
from sympy.printing.str import StrPrinter

from ..activations import ACTIVATIONS
from ..errors import UsageError
from ..model import VOCABULARY, Model

#: Width of the band around 1 in which the factors' geometric mean counts as ``stable``.
TOLERANCE = 0.05
REGIMES = ("vanishing", "exploding", "stable")

DEFAULT_W_H = 0.5
DEFAULT_W_I = (0.5, 0.5, 0.5)
DEFAULT_W_O = 1.0
DEFAULT_SEED = 0
#: Longest sequence analysed: the terms are kept per step (a few arrays of n floats) and tabulated.
STEPS_LIMIT = 100_000
#: The largest float64. The generated code computes in float64; a value beyond this overflows to
#: inf (nan where two infinities meet), so an exploding product over a long gap cannot be held.
#: |Π| and the bound are kept as logarithms and never overflow; the terms are what float64 gave.
FLOAT64_MAX = float(np.finfo(np.float64).max)
LOG10_FLOAT64_MAX = math.log10(FLOAT64_MAX)


# -- the symbolic bound ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """|∂o_k/∂o_{k−1}| ≤ γ|w_h|, derived for one activation."""

    activation: str
    gamma: sp.Expr  # sup|f′|, exact
    jacobian: sp.Expr  # ∂o_k/∂o_{k−1} written with the stored output o_k
    expression: sp.Expr  # γ |w_h|
    w_h: sp.Symbol

    def value(self, w_h: float) -> float:
        return float(self.expression.subs(self.w_h, w_h))

    @property
    def latex(self) -> str:
        """The bound as one LaTeX formula, e.g. |∂o_k/∂o_{k−1}| = |w_h (1 − o_k²)| ≤ |w_h|."""
        f = ACTIVATIONS[self.activation].latex_name
        return (
            r"\left|\frac{\partial o_k}{\partial o_{k-1}}\right| = "
            + sp.latex(sp.Abs(self.jacobian))
            + r" = \left|"
            + f
            + r"'(a_k)\right| \left|w_{h}\right| \le \gamma \left|w_{h}\right| = "
            + sp.latex(self.expression)
            + r", \qquad \gamma = \sup_z \left|"
            + f
            + r"'(z)\right| = "
            + sp.latex(self.gamma)
        )


_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class _PlainText(StrPrinter):
    """One line of plain text for a terminal: o_k², w_h·(1 − o_k), [o_k > 0] for ReLU's step."""

    def _print_Pow(self, expr):
        if expr.exp.is_Integer and 2 <= expr.exp <= 9:
            return self.parenthesize(expr.base, 60) + str(expr.exp).translate(_SUPERSCRIPTS)
        return super()._print_Pow(expr)

    def _print_Mul(self, expr):
        coefficient, factors = expr.as_coeff_mul()
        text = "·".join(self.parenthesize(f, 50) if f.is_Add else self._print(f) for f in factors)
        if coefficient == -1:
            return "−" + text
        return text if coefficient == 1 else self._print(coefficient) + "·" + text

    def _print_Add(self, expr):
        terms = [self._print(term) for term in expr.as_ordered_terms()]
        text = terms[0]
        for term in terms[1:]:
            text += " − " + term[1:] if term.startswith(("−", "-")) else " + " + term
        return text

    def _print_Heaviside(self, expr):
        return f"[{self._print(expr.args[0])} > 0]"

    def _print_Abs(self, expr):
        return f"|{self._print(expr.args[0])}|"


def plain_text(expr: sp.Expr) -> str:
    """``expr`` on one line of plain text (the reports; LaTeX is for documents only)."""
    return _PlainText().doprint(expr)


@cache
def bound(activation: str) -> Bound:
    """Derive |∂o_k/∂o_{k−1}| ≤ γ|w_h| for ``activation`` with SymPy.

    ∂o_k/∂o_{k−1} is differentiated from the activation's closed form applied to
    a_k = u + w_h o_{k−1} (u = w_i·x_k does not depend on o_{k−1}); SymPy confirms it equals
    f′(a_k)·w_h, so its absolute value is |f′(a_k)| |w_h| ≤ γ |w_h| with γ = sup|f′| (also derived
    by SymPy, in the activation table).
    """
    if activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    entry = ACTIVATIONS[activation]
    u, o_prev, z = sp.symbols("u o_prev z", real=True)
    w_h = sp.Symbol("w_h", real=True)
    a = u + w_h * o_prev
    jacobian = sp.diff(entry.closed_form(a), o_prev)
    f_prime = sp.diff(entry.closed_form(z), z)
    if sp.simplify(jacobian - f_prime.subs(z, a) * w_h) != 0:  # pragma: no cover - a table bug
        raise AssertionError(f"∂o_k/∂o_(k-1) for {activation} is not f'(a_k)·w_h")
    # The same Jacobian as the derivation writes it, with the stored output o_k (tanh: w_h(1 − o_k²)).
    o_k = sp.Symbol("o_k", real=True)
    written = entry.derivative_from_output(o_k) * w_h
    return Bound(activation, entry.gamma, written, entry.gamma * sp.Abs(w_h), w_h)


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """The terms of one sequence's BPTT sums, their factors and products, the bound and the regime."""

    activation: str
    words: list[str]
    label: int
    w_i: np.ndarray
    w_h: float
    w_o: float
    y_hat: float
    factors: np.ndarray  # (n−1,) ∂o_k/∂o_{k−1} for k = 2..n
    terms_w_h: np.ndarray  # (n,) entry j−1 = term j
    terms_w_i: np.ndarray  # (n, D)
    output_factor: float
    bound: Bound
    regime: str
    reason: str
    geometric_mean: float
    states: np.ndarray | None = None  # (n,) o_t for t = 1..n

    @property
    def steps(self) -> int:
        return len(self.words)

    @property
    def gaps(self) -> np.ndarray:
        """Gap n − j for j = 1..n."""
        return self.steps - np.arange(1, self.steps + 1)

    @property
    def log10_products(self) -> np.ndarray:
        """log10 |Π_{k=j+1..n} ∂o_k/∂o_{k−1}| for j = 1..n (0 for j = n); summed, so it never overflows."""
        with np.errstate(divide="ignore"):
            logs = np.log10(np.abs(self.factors))
        # Π for j runs over factors j+1..n, i.e. indices j−1..n−2 of ``factors``.
        suffix = np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]])
        return suffix

    @property
    def products(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.power(10.0, self.log10_products)

    @property
    def norms_w_i(self) -> np.ndarray:
        return _norms(self.terms_w_i, axis=1)

    @property
    def shares(self) -> np.ndarray:
        """‖term_j for w_i‖ / Σ_j ‖term_j for w_i‖: how much of the gradient each timestep carries
        (nan where that cannot be computed: a term overflowed)."""
        return _shares(self.norms_w_i)

    @property
    def bound_value(self) -> float:
        return self.bound.value(self.w_h)

    @property
    def log10_bounds(self) -> np.ndarray:
        """log10 (γ|w_h|)^gap for j = 1..n."""
        return _log10_powers(self.bound_value, self.gaps)

    @property
    def overflow(self) -> dict | None:
        """Where float64 overflowed (None if nowhere): the first step whose state o_t, and the first
        gap whose |Π| does not fit, and the terms lost (count, smallest gap), with one sentence."""
        n = self.steps
        states = None if self.states is None else _first_lost_step(self.states)
        too_large = np.flatnonzero(self.log10_products > LOG10_FLOAT64_MAX)
        products = int(n - 1 - too_large.max()) if too_large.size else None
        terms = {"w_h": _lost_terms(self.terms_w_h), "w_i": _lost_terms(self.terms_w_i)}
        sums = _sums_overflow(self.terms_w_h, self.terms_w_i)
        if states is None and products is None and not any(t["lost"] for t in terms.values()) and not sums:
            return None
        parts = []
        if states is not None:
            parts.append(f"the states o_t from step {states} on")
        if products is not None:
            parts.append(f"|Π| from gap {products} on (printed from its logarithm)")
        parts += _lost_sentence(terms, n)
        if sums:
            parts.append("the sums")
        return _overflow_json(parts, states_from_step=states, products_from_gap=products, terms=terms)

    def as_json(self) -> dict:
        return {
            "steps": self.steps,
            "activation": self.activation,
            "weights": {"w_i": [float(v) for v in self.w_i], "w_h": self.w_h, "w_o": self.w_o},
            "input": list(self.words),
            "label": self.label,
            "y_hat": _number(self.y_hat),
            "factors": [_number(v) for v in self.factors],
            "products": [_number(v) for v in self.products],
            "log10_products": [_number(v) for v in self.log10_products],
            "terms_w_h": [_number(v) for v in self.terms_w_h],
            "terms_w_i": [[_number(v) for v in row] for row in self.terms_w_i],
            "bound": {
                "latex": self.bound.latex,
                "gamma": str(self.bound.gamma),
                "expression": str(self.bound.expression),
                "value": self.bound_value,
            },
            "regime": self.regime,
            "regime_reason": self.reason,
            "geometric_mean": _number(self.geometric_mean),
            "tolerance": TOLERANCE,
            "overflow": self.overflow,
        }


def _number(value):
    """JSON has no inf/nan: a non-finite number becomes null."""
    value = float(value)
    return value if math.isfinite(value) else None


# -- float64 overflow: what could be computed, and saying where it could not -----------------------


def _norms(values, axis) -> np.ndarray:
    """Euclidean (Frobenius) norms over ``axis``, scaled by the largest |entry| so that squaring
    entries near FLOAT64_MAX does not overflow; inf where an entry is infinite, nan where it is nan."""
    values = np.abs(np.asarray(values, dtype=float))
    largest = np.max(values, axis=axis, keepdims=True)
    scale = np.where(np.isfinite(largest) & (largest > 0), largest, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.squeeze(scale, axis=axis) * np.sqrt(np.sum((values / scale) ** 2, axis=axis))


def _shares(norms: np.ndarray) -> np.ndarray:
    """norms / Σ norms, scaled first so the sum cannot overflow; nan where a norm is not finite."""
    norms = np.asarray(norms, dtype=float)
    if not norms.size or not np.all(np.isfinite(norms)) or not np.any(norms > 0):
        return np.full(norms.shape, np.nan)
    scaled = norms / norms.max()
    return scaled / scaled.sum()


def _log10_powers(base: float, gaps: np.ndarray) -> np.ndarray:
    """log10 base^gap (−inf for base 0 and gap > 0), exact beyond float64."""
    gaps = np.asarray(gaps, dtype=float)
    if base == 0:
        return np.where(gaps == 0, 0.0, -math.inf)
    return gaps * math.log10(abs(base))


def _first_lost_step(states) -> int | None:
    """The first timestep t (1-based) whose state holds a non-finite value, or None."""
    states = np.asarray(states, dtype=float)
    lost = ~np.isfinite(states.reshape(states.shape[0], -1)).all(axis=1)
    return int(np.argmax(lost)) + 1 if lost.any() else None


def _lost_terms(terms) -> dict:
    """How many terms (entry j − 1 = term j) hold a non-finite value, and the smallest such gap."""
    terms = np.asarray(terms, dtype=float)
    lost = ~np.isfinite(terms.reshape(terms.shape[0], -1)).all(axis=1)
    n = terms.shape[0]
    return {
        "lost": int(lost.sum()),
        "of": n,
        "from_gap": int(n - 1 - np.flatnonzero(lost).max()) if lost.any() else None,
    }


def _lost_sentence(terms: dict, n: int) -> list[str]:
    return [
        f"{t['lost']} of {n} {name} terms (from gap {t['from_gap']})"
        for name, t in terms.items()
        if t["lost"]
    ]


def _sums_overflow(*term_arrays) -> bool:
    """True when a gradient sum over j is not finite (a term overflowed, or the sum did)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return not all(np.all(np.isfinite(np.sum(np.asarray(t, dtype=float), axis=0))) for t in term_arrays)


def _overflow_json(parts: list[str], **facts) -> dict:
    places = ", in ".join(parts[:-1]) + (" and in " if len(parts) > 1 else "") + parts[-1]
    message = (
        f"float64 (largest {FLOAT64_MAX:.4g}) overflowed in {places}: those values read 'overflow' and "
        "the shares '—'; every other number is as computed"
    )
    return {"dtype": "float64", "largest": FLOAT64_MAX, **facts, "message": message}


def _cell(value: float, spec: str = ".4g") -> str:
    """A measured number, or 'overflow' where float64 did not hold it."""
    value = float(value)
    return format(value, spec) if math.isfinite(value) else "overflow"


def _share_cell(share: float) -> str:
    return f"{share:.1%}" if math.isfinite(share) else "—"


def _power_of_ten(log10: float) -> str:
    """10^log10 written like '.4g', also beyond float64 (1.5^1999 is 4.8e+351); nan reads 'overflow'."""
    if math.isnan(log10):
        return "overflow"
    if log10 == -math.inf:
        return "0"
    if abs(log10) < 300:
        return f"{10.0**log10:.4g}"
    exponent = math.floor(log10)
    mantissa = 10.0 ** (log10 - exponent)
    if float(f"{mantissa:.4g}") >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.4g}e{exponent:+03d}"


def classify(factors: np.ndarray, bound_value: float, tolerance: float = TOLERANCE) -> tuple[str, str, float]:
    """(regime, reason, geometric mean of |factors|); the rule is in the module docstring."""
    factors = np.abs(np.asarray(factors, dtype=float))
    if factors.size:
        with np.errstate(divide="ignore"):
            mean = float(np.exp(np.mean(np.log(factors)))) if np.all(factors > 0) else 0.0
    else:
        mean = math.nan
    if bound_value < 1:
        return (
            "vanishing",
            (
                f"γ|w_h| = {bound_value:.4g} < 1 bounds every factor, so |Π| ≤ {bound_value:.4g}^gap → 0 "
                "for any input"
            ),
            mean,
        )
    if not factors.size:
        return "stable", "one step: there are no factors ∂o_k/∂o_(k-1) to vanish or explode", mean
    if mean < 1 - tolerance:
        return "vanishing", f"the factors' geometric mean {mean:.4g} < 1 − {tolerance:g}", mean
    if mean > 1 + tolerance:
        return "exploding", f"the factors' geometric mean {mean:.4g} > 1 + {tolerance:g}", mean
    return "stable", f"the factors' geometric mean {mean:.4g} is within {tolerance:g} of 1", mean


def random_words(steps: int, seed: int = DEFAULT_SEED) -> list[str]:
    """A random sequence over the notes' vocabulary, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [VOCABULARY[i] for i in rng.integers(0, len(VOCABULARY), size=steps)]


def analyze(
    steps: int | None = None,
    activation: str = "tanh",
    w_h: float = DEFAULT_W_H,
    w_i=DEFAULT_W_I,
    w_o: float = DEFAULT_W_O,
    words: list[str] | None = None,
    seed: int = DEFAULT_SEED,
    loader=None,
) -> Analysis:
    """Measure the BPTT terms of one sequence with the generated module's ``bptt_terms``."""
    from .data import encode

    if words is None:
        if steps is None:
            raise UsageError(
                "give the number of steps (--steps N) or an input sequence (--input cat,mat,...)"
            )
        steps = Model(steps=steps).steps
        if steps > STEPS_LIMIT:  # checked before drawing the words: 10^9 of them would exhaust memory
            raise UsageError(
                f"--steps {steps} is too long to analyze (limit {STEPS_LIMIT}; far fewer steps already "
                f"show whether the long-term terms vanish or explode): choose --steps {STEPS_LIMIT} or fewer"
            )
        words = random_words(steps, seed)
    elif steps is not None and int(steps) != len(words):
        raise UsageError(
            f"--steps {steps} does not match the {len(words)} words of --input: drop one of them"
        )
    x = encode(list(words))[None]  # (1, n, D)
    model = Model(steps=len(words), activation=activation, inputs=x.shape[2])
    w_i = np.asarray(w_i, dtype=float)
    if w_i.shape != (model.inputs,):
        raise UsageError(
            f"--w-i needs {model.inputs} numbers, one per word of the vocabulary "
            f"({', '.join(VOCABULARY)}), got {w_i.size}"
        )
    for name, value in (("--w-h", w_h), ("--w-o", w_o), ("--w-i", w_i)):
        if not np.all(np.isfinite(value)):
            raise UsageError(f"{name} must be finite, got {value!r}")
    if loader is None:
        from ..codegen import DEFAULT_UNROLLED_LIMIT, load

        if model.steps > DEFAULT_UNROLLED_LIMIT:
            # Loop code is the same for every n: generate it from one step, not n unrolled ones.
            def loader(model):
                return load(Model(steps=1, activation=model.activation, inputs=model.inputs), "loop")
        else:
            loader = load
    module = loader(model)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        y_hat = float(np.asarray(module.forward(x, w_i, float(w_h), float(w_o)))[0])
        label = 1 if y_hat < 0.5 else 0
        terms = module.bptt_terms(x, np.array([float(label)]), w_i, float(w_h), float(w_o))
    factors = np.asarray(terms["factors"], dtype=float)[0]
    the_bound = bound(activation)
    regime, reason, mean = classify(factors, the_bound.value(w_h))
    return Analysis(
        activation=activation,
        words=list(words),
        label=label,
        w_i=w_i,
        w_h=float(w_h),
        w_o=float(w_o),
        y_hat=y_hat,
        factors=factors,
        terms_w_h=np.asarray(terms["terms_w_h"], dtype=float)[0],
        terms_w_i=np.asarray(terms["terms_w_i"], dtype=float)[0],
        output_factor=float(np.asarray(terms["output_factor"], dtype=float)[0]),
        bound=the_bound,
        regime=regime,
        reason=reason,
        geometric_mean=mean,
        states=np.asarray(terms["states"], dtype=float)[0],
    )


# -- output ----------------------------------------------------------------------------------------


def _rows_shown(steps: int, limit: int = 30) -> list[int]:
    """Gaps to show: all of them for short sequences, else the first ten and a log-spaced tail."""
    if steps <= limit:
        return list(range(steps))
    tail = np.unique(np.geomspace(10, steps - 1, num=limit - 10).astype(int))
    return list(range(10)) + [int(g) for g in tail if g >= 10]


def table(analysis: Analysis) -> str:
    """A readable report: the bound, the regime and one row per gap."""
    a = analysis
    n = a.steps
    words = " ".join(a.words) if n <= 12 else " ".join(a.words[:12]) + f" … ({n} words)"
    lines = [
        f"BPTT terms for n = {n}, activation {a.activation}, input: {words}",
        (
            f"weights: w_i = [{', '.join(f'{v:g}' for v in a.w_i)}], w_h = {a.w_h:g}, w_o = {a.w_o:g};"
            f" ŷ = {_cell(a.y_hat)}, analysed with y = {a.label}"
        ),
        "",
        (
            "bound (SymPy): |∂o_k/∂o_(k-1)| = |f'(a_k)|·|w_h| ≤ γ|w_h|, "
            f"γ = sup|{a.activation}'| = {a.bound.gamma}"
        ),
        f"  here: |∂o_k/∂o_(k-1)| = {plain_text(sp.Abs(a.bound.jacobian))} ≤ {plain_text(a.bound.expression)}",
        (
            f"  γ|w_h| = {a.bound.gamma}·{abs(a.w_h):g} = {a.bound_value:.6g}"
            f"  ⇒ |Π over a gap g| ≤ {a.bound_value:.6g}^g"
        ),
        f"regime: {a.regime} — {a.reason}",
        *([f"overflow: {a.overflow['message']}"] if a.overflow else []),
        "",
        (
            "term j flows through timestep j; gap = n − j; Π = Π_(k=j+1..n) ∂o_k/∂o_(k-1); "
            "share = ‖term_j(w_i)‖ / Σ‖term(w_i)‖"
        ),
    ]
    header = (
        f"{'j':>5} {'gap':>5} {'|Π|':>11} {'bound^gap':>11} {'term w_h':>12} {'‖term w_i‖':>11} {'share':>7}"
    )
    lines += [header, "-" * len(header)]
    products, bounds, norms, shares = a.log10_products, a.log10_bounds, a.norms_w_i, a.shares
    for gap in _rows_shown(n):
        i = n - 1 - gap  # index of term j = n − gap
        lines.append(
            f"{i + 1:>5} {gap:>5} {_power_of_ten(products[i]):>11} {_power_of_ten(bounds[i]):>11} "
            f"{_cell(a.terms_w_h[i]):>12} {_cell(norms[i]):>11} {_share_cell(shares[i]):>7}"
        )
    if n > 30:
        lines.append(f"({n - len(_rows_shown(n))} rows left out; --json gives every term)")
    with np.errstate(over="ignore", invalid="ignore"):
        gradient_h = float(np.sum(a.terms_w_h))
        gradient_i = np.sum(a.terms_w_i, axis=0)
    lines += [
        "",
        f"sums: ∂L/∂w_h = {_cell(gradient_h, '.6g')}, ∂L/∂w_i = [{', '.join(_cell(v, '.6g') for v in gradient_i)}]",
        f"short-term share of ∂L/∂w_i: {_share_cell(shares[-1])}",
    ]
    return "\n".join(lines) + "\n"


def pyplot(needed_by: str = "--plot"):
    """matplotlib.pyplot on the Agg backend, imported only when a plot is asked for."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            f"{needed_by} needs matplotlib, which is not installed: pip install bptt[plot]"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: PNG text metadata; ``files.is_generated`` finds the marker, so a later run may replace the plot.
PNG_METADATA = {"Software": "Generated by bptt"}


def integer_ticks():
    """Tick positions at whole numbers only: gaps and epochs have no 2.5."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def save_figure(figure, path) -> None:
    """Render ``figure`` to PNG in memory and write it atomically."""
    from ..files import write_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata=PNG_METADATA)
    write_atomic(path, buffer.getvalue())


#: Beyond 10^±LOG_AXIS_DECADES the plots draw log10 of the magnitudes on a linear axis: float64
#: cannot hold 1.5^1999, and matplotlib's log axis overflows near 1e308 (its margins and ticks).
LOG_AXIS_DECADES = 150


def _log10_magnitudes(values) -> np.ndarray:
    """log10 |values|; −inf for 0 and nan for a value float64 did not hold (neither is drawn)."""
    values = np.abs(np.asarray(values, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(values), np.log10(values), np.nan)


def _draw_magnitudes(axes, gaps, series, ylabel: str) -> None:
    """Plot each (log10 values, line options) against ``gaps``: on a log axis while every value lies
    within 10^±LOG_AXIS_DECADES, else as log10 on a linear axis with ticks read as powers of ten."""
    from matplotlib.ticker import FuncFormatter

    kept = [(np.isfinite(logs), np.asarray(logs, dtype=float), options) for logs, options in series]
    drawn = np.concatenate([logs[keep] for keep, logs, _ in kept]) if kept else np.array([])
    wide = drawn.size and np.max(np.abs(drawn)) > LOG_AXIS_DECADES
    for keep, logs, options in kept:
        if wide:
            axes.plot(gaps[keep], logs[keep], **options)
        else:
            axes.semilogy(gaps[keep], np.power(10.0, logs[keep]), **options)
    if wide:
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"$10^{{{value:.0f}}}$"))
        ylabel = ylabel.replace("(log scale)", "(log scale, drawn from log10)")
    axes.set_ylabel(ylabel)


def plot(analysis: Analysis, path) -> None:
    """Two panels against the gap: the terms log|term_j| (left), and the product |Π| with the bound
    (γ|w_h|)^gap that bounds it (right: both start at 1); gaps are whole numbers on both."""
    plt = pyplot()
    a = analysis
    gaps = a.gaps[::-1]  # 0..n−1
    figure, (terms, products) = plt.subplots(1, 2, figsize=(9.6, 4.4))
    marker = "o" if a.steps <= 40 else None
    line = {"marker": marker, "markersize": 3}
    _draw_magnitudes(terms, gaps, [
        (_log10_magnitudes(a.norms_w_i[::-1]), {**line, "color": "C0", "label": r"$\|$term$_j$ for $w_i\|$"}),
        (_log10_magnitudes(a.terms_w_h[::-1]), {**line, "color": "C1", "label": r"$|$term$_j$ for $w_h|$"}),
    ], "magnitude (log scale)")
    terms.set_title("the terms of the gradient", fontsize=10)
    # term_j = (∂L/∂o_n) Π ∂⁺o_j/∂w: ∂⁺o_j/∂w_h = f′(a_j) o_(j−1), so the w_h term also carries the
    # state o_(j−1), which is smaller the earlier j where the states grow (ReLU's flat w_h terms)
    note = "term$_j$ = (∂L/∂o$_n$) Π ∂⁺o$_j$/∂w; for $w_h$, ∂⁺o$_j$/∂w$_h$ = f′(a$_j$) o$_{j−1}$ (0 at j = 1)"
    _draw_magnitudes(products, gaps, [
        (a.log10_products[::-1], {**line, "color": "C2", "linewidth": 3, "alpha": 0.6,
                                  "label": r"$|\Pi_{k=j+1}^{n}\ \partial o_k/\partial o_{k-1}|$ (measured)"}),
        (a.log10_bounds[::-1], {"color": "C3", "linestyle": "--",
                                "label": rf"bound $(\gamma|w_h|)^{{gap}}$ = ${a.bound_value:.3g}^{{gap}}$"}),
    ], "magnitude (log scale)")
    products.set_title("the product over the gap and its bound", fontsize=10)
    for axes, below in ((terms, "\n" + note), (products, "\n")):
        axes.set_xlabel("gap n − j (timesteps between input j and the output)" + below, fontsize=9)
        axes.xaxis.set_major_locator(integer_ticks())
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(f"{a.activation}, w_h = {a.w_h:g}, n = {a.steps}: {a.regime}")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


# -- hidden size H: Jacobian products and the condition of Pascanu, Mikolov & Bengio (2013) -------
#
# With a hidden state of size H the factor ∂o_k/∂o_{k−1} is the matrix J_k = diag(f′(a_k)) W_h, and
# term j carries the product P_j = J_n J_{n−1} ⋯ J_{j+1} = ∂o_n/∂o_j. Since ‖diag(f′(a_k))‖₂ ≤ γ,
#
#     ‖J_k‖₂ ≤ γ σ_max(W_h),   ‖P_j‖₂ ≤ (γ σ_max(W_h))^gap,
#
# so σ_max(W_h) < 1/γ is sufficient for vanishing and σ_max(W_h) > 1/γ is necessary for exploding
# (Pascanu, Mikolov & Bengio 2013, section 2.1). The regime is judged as in the scalar case:
#
# 1. γ σ_max < 1: ``vanishing``, guaranteed by the bound.
# 2. otherwise from the measured per-step growth of the product, m = ‖P_1‖₂^(1/(n−1)) (the geometric
#    mean growth per step over the longest gap; for H = 1 it is the scalar rule's geometric mean of
#    the |factors|): m < 1 − TOLERANCE → ``vanishing``, m > 1 + TOLERANCE → ``exploding``, else
#    ``stable``.

#: Default singular value s of W_h = s·Q.
DEFAULT_W_H_SCALE = 0.5
#: Standard deviations of the drawn W_i entries and biases b_h (w_o ~ N(0, 1/H)).
W_I_SCALE = 0.5
B_H_SCALE = 0.1
#: Largest n·H·max(H, D) analysed: the terms of every step are kept (arrays of n H×H matrices).
ELEMENTS_LIMIT = 20_000_000


def orthogonal(size: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """A random orthogonal matrix Q (uniform over the orthogonal group), reproducible from ``seed``;
    Q = [[1]] for size 1, so the scalar w_h = s·Q is s."""
    if size == 1:
        return np.ones((1, 1))
    rng = np.random.default_rng([seed, 1])
    q, r = np.linalg.qr(rng.normal(size=(size, size)))
    return q * np.sign(np.diag(r))  # the signs make the distribution uniform (Mezzadri 2007)


def matrix_weights(hidden: int, inputs: int, seed: int, w_h_scale: float, bias: bool) -> dict:
    """W_h = s·Q (every singular value |s|), W_i ~ N(0, 0.5²), w_o ~ N(0, 1/H), b_h ~ N(0, 0.1²),
    b_o = 0, all from ``seed`` (the input words come from the same seed, as in the scalar case)."""
    rng = np.random.default_rng([seed, 2])
    weights = {
        "w_i": rng.normal(0.0, W_I_SCALE, size=(hidden, inputs)),
        "w_h": float(w_h_scale) * orthogonal(hidden, seed),
        "w_o": rng.normal(0.0, 1.0 / math.sqrt(hidden), size=hidden),
    }
    if bias:
        weights.update(b_h=rng.normal(0.0, B_H_SCALE, size=hidden), b_o=0.0)
    return weights


def jacobian_log_norms(derivatives: np.ndarray, w_h: np.ndarray) -> np.ndarray:
    """log10 ‖Π_{k=j+1..n} diag(f′(a_k)) W_h‖₂ for j = 1..n (0 for j = n, the empty product I).

    ``derivatives`` is (n, H), row t−1 = f′(a_t). The product is built from the left end
    (P_j = P_{j+1} J_{j+1}) and rescaled to unit Frobenius norm at every step, the scales kept as
    logarithms, so it neither overflows nor underflows; the spectral norms are taken at the end.
    A zero product gives −inf from there on, a non-finite one nan.
    """
    derivatives = np.asarray(derivatives, dtype=float)
    w_h = np.asarray(w_h, dtype=float)
    n, H = derivatives.shape
    scales = np.zeros(n)
    products = np.empty((n, H, H))
    products[n - 1] = np.eye(H)
    product, log_scale = np.eye(H), 0.0
    for j in range(n - 1, 0, -1):  # 1-based j; J_{j+1} uses row j of ``derivatives``
        product = product @ (derivatives[j][:, None] * w_h)
        size = math.sqrt(float(np.sum(product * product)))
        if size == 0.0 or not math.isfinite(size):
            scales[:j] = -math.inf if size == 0.0 else math.nan
            products[:j] = np.eye(H)
            break
        product = product / size
        log_scale += math.log10(size)
        scales[j - 1] = log_scale
        products[j - 1] = product
    return scales + np.log10(np.linalg.norm(products, 2, axis=(1, 2)))


def singular_values(w_h) -> np.ndarray:
    return np.linalg.svd(np.asarray(w_h, dtype=float), compute_uv=False)


def classify_growth(
    growth: float, bound_value: float, steps: int, tolerance: float = TOLERANCE
) -> tuple[str, str]:
    """(regime, reason) from m = ‖P_1‖₂^(1/(n−1)) and γσ_max; the rule is above ``orthogonal``."""
    if bound_value < 1:
        return (
            "vanishing",
            (
                f"γ·σ_max(W_h) = {bound_value:.4g} < 1 bounds every Jacobian, so ‖Π‖₂ ≤ "
                f"{bound_value:.4g}^gap → 0 for any input"
            ),
        )
    if steps < 2:
        return "stable", "one step: there are no Jacobians ∂o_k/∂o_(k-1) to vanish or explode"
    if math.isnan(growth):
        return "exploding", "the Jacobian product is not finite (the forward pass overflowed)"
    return judge_growth(f"the product's growth per step ‖Π over n−1 steps‖₂^(1/(n−1)) = {growth:.4g}",
                        growth, tolerance)


def judge_growth(what: str, growth: float, tolerance: float = TOLERANCE) -> tuple[str, str]:
    """(regime, reason) from a growth per step: below 1 − tolerance vanishing, above 1 + tolerance
    exploding, else stable; ``what`` names the growth in the reason."""
    if growth < 1 - tolerance:
        return "vanishing", f"{what} < 1 − {tolerance:g}"
    if growth > 1 + tolerance:
        return "exploding", f"{what} > 1 + {tolerance:g}"
    return "stable", f"{what} is within {tolerance:g} of 1"


@dataclass
class MatrixAnalysis:
    """One sequence's BPTT terms for hidden size H: Jacobian products, their bound, the regime."""

    activation: str
    words: list[str]
    label: int
    weights: dict  # w_i (H, D), w_h (H, H), w_o (H,)[, b_h (H,), b_o]
    w_h_scale: float | None  # s when W_h = s·Q was drawn
    seed: int
    y_hat: float
    derivatives: np.ndarray  # (n, H) f′(a_t)
    log10_jacobian_norms: np.ndarray  # (n,) entry j−1: log10‖P_j‖₂
    terms_w_h: np.ndarray  # (n, H, H)
    terms_w_i: np.ndarray  # (n, H, D)
    gamma: sp.Expr
    singular_values: np.ndarray
    regime: str
    reason: str
    growth: float
    states: np.ndarray | None = None  # (n, H) o_t for t = 1..n

    @property
    def steps(self) -> int:
        return len(self.words)

    @property
    def hidden(self) -> int:
        return int(np.shape(self.weights["w_h"])[0])

    @property
    def gaps(self) -> np.ndarray:
        return self.steps - np.arange(1, self.steps + 1)

    @property
    def sigma_max(self) -> float:
        return float(self.singular_values[0])

    @property
    def bound_value(self) -> float:
        """γ σ_max(W_h): bounds ‖diag(f′(a_k)) W_h‖₂."""
        return float(self.gamma) * self.sigma_max

    @property
    def jacobian_norms(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.power(10.0, self.log10_jacobian_norms)

    @property
    def bounds(self) -> np.ndarray:
        """(γ σ_max)^gap for j = 1..n."""
        with np.errstate(over="ignore", under="ignore"):
            return np.power(self.bound_value, self.gaps.astype(float))

    @property
    def log10_bounds(self) -> np.ndarray:
        """log10 (γ σ_max)^gap for j = 1..n, exact beyond float64."""
        return _log10_powers(self.bound_value, self.gaps)

    @property
    def norms_w_h(self) -> np.ndarray:
        return _norms(self.terms_w_h, axis=(1, 2))

    @property
    def norms_w_i(self) -> np.ndarray:
        return _norms(self.terms_w_i, axis=(1, 2))

    @property
    def shares(self) -> np.ndarray:
        """‖term_j for W_i‖ / Σ_j ‖term_j for W_i‖ (nan where a term overflowed)."""
        return _shares(self.norms_w_i)

    @property
    def overflow(self) -> dict | None:
        """Where float64 overflowed (None if nowhere); as ``Analysis.overflow``. ‖Π‖₂ is computed
        with rescaling and only fails where f′(a_k) itself is lost (a state overflowed)."""
        n = self.steps
        states = None if self.states is None else _first_lost_step(self.states)
        lost_products = np.flatnonzero(np.isnan(self.log10_jacobian_norms))
        products = int(n - 1 - lost_products.max()) if lost_products.size else None
        terms = {"W_h": _lost_terms(self.terms_w_h), "W_i": _lost_terms(self.terms_w_i)}
        sums = _sums_overflow(self.terms_w_h, self.terms_w_i)
        y_hat_lost = not math.isfinite(self.y_hat)
        if states is None and products is None and not any(t["lost"] for t in terms.values()) and not sums:
            return None
        parts = []
        if states is not None:
            parts.append(f"the states o_t from step {states} on" + (" (and so in ŷ)" if y_hat_lost else ""))
        if products is not None:
            parts.append(f"‖Π‖₂ from gap {products} on (f′(a_k) is lost with o_k)")
        parts += _lost_sentence(terms, n)
        if sums:
            parts.append("the sums")
        return _overflow_json(parts, states_from_step=states, products_from_gap=products, terms=terms)

    def as_json(self) -> dict:
        gamma = float(self.gamma)
        return {
            "steps": self.steps,
            "activation": self.activation,
            "hidden": self.hidden,
            "bias": "b_h" in self.weights,
            "weights": {k: _nested(v) for k, v in self.weights.items()},
            "w_h_scale": self.w_h_scale,
            "seed": self.seed,
            "input": list(self.words),
            "label": self.label,
            "y_hat": _number(self.y_hat),
            "singular_values": _nested(self.singular_values),
            "gamma": str(self.gamma),
            "condition": {
                "sigma_max": self.sigma_max,
                "one_over_gamma": 1 / gamma,
                "gamma_sigma_max": self.bound_value,
                "sufficient_for_vanishing": self.sigma_max < 1 / gamma,
                "necessary_for_exploding": self.sigma_max > 1 / gamma,
            },
            "jacobian_norms": _nested(self.jacobian_norms),
            "log10_jacobian_norms": _nested(self.log10_jacobian_norms),
            "bounds": _nested(self.bounds),
            "log10_bounds": _nested(self.log10_bounds),
            "term_norms_w_h": _nested(self.norms_w_h),
            "term_norms_w_i": _nested(self.norms_w_i),
            "shares": _nested(self.shares),
            "terms_w_h": _nested(self.terms_w_h),
            "terms_w_i": _nested(self.terms_w_i),
            "regime": self.regime,
            "regime_reason": self.reason,
            "growth": _number(self.growth),
            "tolerance": TOLERANCE,
            "overflow": self.overflow,
        }


def _nested(value):
    """An array as nested lists of JSON numbers (non-finite → null)."""
    value = np.asarray(value, dtype=float)
    return _number(value) if value.ndim == 0 else [_nested(v) for v in value]


def _matrix_loader(model: Model):
    """The generated module for ``model``: unrolled up to DEFAULT_UNROLLED_LIMIT steps, else the
    loop module generated from one step."""
    from dataclasses import replace

    from ..codegen import DEFAULT_UNROLLED_LIMIT, load

    if model.steps > DEFAULT_UNROLLED_LIMIT:
        return load(replace(model, steps=1), "loop")
    return load(model)


def analyze_matrix(
    steps: int | None = None,
    activation: str = "tanh",
    hidden: int = 2,
    bias: bool = False,
    w_h_scale: float | None = DEFAULT_W_H_SCALE,
    weights: dict | None = None,
    words: list[str] | None = None,
    seed: int = DEFAULT_SEED,
    loader=None,
) -> MatrixAnalysis:
    """Measure the BPTT terms and Jacobian products of one sequence with the generated module.

    The weights are given (``weights``: w_i, w_h, w_o[, b_h, b_o]) or drawn from ``seed`` with
    W_h = ``w_h_scale``·Q (``matrix_weights``).
    """
    from .data import encode

    words = _sequence(steps, words, seed)
    x = encode(list(words))[None]  # (1, n, D)
    model = Model(steps=len(words), activation=activation, inputs=x.shape[2], hidden=hidden, bias=bias)
    if model.scalar:  # a programming error: the command line sends the notes' model to ``analyze``
        raise ValueError(
            "the notes' scalar model (H = 1, no biases) is analysed by analyze(), not analyze_matrix()"
        )
    H, D, n = model.hidden, model.inputs, model.steps
    if n * H * max(H, D) > ELEMENTS_LIMIT:
        raise UsageError(
            f"n·H·max(H, D) = {n * H * max(H, D)} is too large to analyze (limit {ELEMENTS_LIMIT}, the terms "
            f"of every step are kept): choose fewer --steps or a smaller --hidden"
        )
    if weights is None:
        if w_h_scale is None or not math.isfinite(w_h_scale):
            raise UsageError(f"--w-h-scale must be a finite number, got {w_h_scale!r}")
        weights = matrix_weights(H, D, seed, w_h_scale, model.bias)
    else:
        weights = {k: (float(v) if k == "b_o" else np.asarray(v, dtype=float)) for k, v in weights.items()}
        w_h_scale = None
    expected = {"w_i": (H, D), "w_h": (H, H), "w_o": (H,)}
    if model.bias:
        expected.update(b_h=(H,), b_o=())
    if set(weights) != set(expected) or any(np.shape(weights[k]) != s for k, s in expected.items()):
        raise UsageError(
            f"the weights must have the shapes {expected}, got "
            f"{ {k: np.shape(v) for k, v in weights.items()} }"
        )
    if not all(np.all(np.isfinite(v)) for v in weights.values()):
        raise UsageError("the weights must be finite")
    module = (loader or _matrix_loader)(model)
    arguments = (weights["w_i"], weights["w_h"], weights["w_o"])
    keywords = {"b_h": weights["b_h"], "b_o": weights["b_o"]} if model.bias else {}
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        y_hat = float(np.asarray(module.forward(x, *arguments, **keywords))[0])
        label = 1 if y_hat < 0.5 else 0
        terms = module.bptt_terms(x, np.array([float(label)]), *arguments, **keywords)
        derivatives = np.asarray(terms["derivatives"], dtype=float)[0]
        log_norms = jacobian_log_norms(derivatives, weights["w_h"])
    gamma = ACTIVATIONS[activation].gamma
    values = singular_values(weights["w_h"])
    bound_value = float(gamma) * float(values[0])
    with np.errstate(over="ignore", under="ignore"):
        growth = float(10.0 ** (log_norms[0] / (n - 1))) if n > 1 else math.nan
    regime, reason = classify_growth(growth, bound_value, n)
    return MatrixAnalysis(
        activation=activation,
        words=list(words),
        label=label,
        weights=weights,
        w_h_scale=None if w_h_scale is None else float(w_h_scale),
        seed=seed,
        y_hat=y_hat,
        derivatives=derivatives,
        log10_jacobian_norms=log_norms,
        terms_w_h=np.asarray(terms["terms_w_h"], dtype=float)[0],
        terms_w_i=np.asarray(terms["terms_w_i"], dtype=float)[0],
        gamma=gamma,
        singular_values=values,
        regime=regime,
        reason=reason,
        growth=growth,
        states=np.asarray(terms["states"], dtype=float)[0],
    )


def _sequence(steps, words, seed) -> list[str]:
    """The analysed words: given, or ``steps`` random ones from ``seed`` (checked as in ``analyze``)."""
    if words is None:
        if steps is None:
            raise UsageError(
                "give the number of steps (--steps N) or an input sequence (--input cat,mat,...)"
            )
        steps = Model(steps=steps).steps
        if steps > STEPS_LIMIT:
            raise UsageError(
                f"--steps {steps} is too long to analyze (limit {STEPS_LIMIT}; far fewer steps already "
                f"show whether the long-term terms vanish or explode): choose --steps {STEPS_LIMIT} or fewer"
            )
        return random_words(steps, seed)
    if steps is not None and int(steps) != len(words):
        raise UsageError(
            f"--steps {steps} does not match the {len(words)} words of --input: drop one of them"
        )
    return list(words)


def _values(values, limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    return shown + (f", … ({len(values)} values)" if len(values) > limit else "")


def matrix_table(analysis: MatrixAnalysis) -> str:
    """The report for hidden size H: condition, regime and one row per gap."""
    a = analysis
    n, H = a.steps, a.hidden
    words = " ".join(a.words) if n <= 12 else " ".join(a.words[:12]) + f" … ({n} words)"
    gamma = float(a.gamma)
    if a.w_h_scale is not None:
        drawn = (
            f"W_h = {a.w_h_scale:g}·Q (Q a random orthogonal {H}×{H} matrix, seed {a.seed}), "
            f"W_i ~ N(0, {W_I_SCALE:g}²), w_o ~ N(0, 1/{H})"
            + (f", b_h ~ N(0, {B_H_SCALE:g}²), b_o = 0" if "b_h" in a.weights else "")
        )
    else:
        drawn = "given"
    sigma = a.sigma_max
    if sigma < 1 / gamma:
        verdict = f"σ_max < 1/γ: sufficient for vanishing — every product shrinks at least as {a.bound_value:.4g}^gap"
    elif sigma > 1 / gamma:
        verdict = "σ_max > 1/γ: the necessary condition for exploding holds (not sufficient: see the measured norms)"
    else:
        verdict = "σ_max = 1/γ: on the boundary"
    lines = [
        f"BPTT terms for n = {n}, activation {a.activation}, hidden size H = {H}, input: {words}",
        f"weights: {drawn}; ŷ = {_cell(a.y_hat)}, analysed with y = {a.label}",
        "",
        f"singular values of W_h: {_values(a.singular_values)}",
        f"γ = sup|{a.activation}'| = {a.gamma}, 1/γ = {1 / gamma:.4g}, σ_max(W_h) = {sigma:.6g}",
        (
            "bound: ‖∂o_k/∂o_(k-1)‖₂ = ‖diag(f'(a_k)) W_h‖₂ ≤ γ·σ_max(W_h) = "
            f"{a.bound_value:.6g}  ⇒ ‖Π over a gap g‖₂ ≤ {a.bound_value:.6g}^g"
        ),
        f"Pascanu, Mikolov & Bengio (2013): {verdict}",
        f"regime: {a.regime} — {a.reason}",
        *([f"overflow: {a.overflow['message']}"] if a.overflow else []),
        "",
        (
            "term j flows through timestep j; gap = n − j; Π = Π_(k=j+1..n) diag(f'(a_k)) W_h; "
            "‖·‖₂ spectral, terms in Frobenius norm; share = ‖term_j(W_i)‖ / Σ‖term(W_i)‖"
        ),
    ]
    header = f"{'j':>5} {'gap':>5} {'‖Π‖₂':>11} {'bound^gap':>11} {'‖term W_h‖':>11} {'‖term W_i‖':>11} {'share':>7}"
    lines += [header, "-" * len(header)]
    norms, bounds = a.log10_jacobian_norms, a.log10_bounds
    norms_h, norms_i, shares = a.norms_w_h, a.norms_w_i, a.shares
    for gap in _rows_shown(n):
        i = n - 1 - gap
        lines.append(
            f"{i + 1:>5} {gap:>5} {_power_of_ten(norms[i]):>11} {_power_of_ten(bounds[i]):>11} "
            f"{_cell(norms_h[i]):>11} {_cell(norms_i[i]):>11} {_share_cell(shares[i]):>7}"
        )
    if n > 30:
        lines.append(f"({n - len(_rows_shown(n))} rows left out; --json gives every term)")
    with np.errstate(over="ignore", invalid="ignore"):
        sums = [_norms(np.sum(t, axis=0)[np.newaxis], axis=(1, 2))[0] for t in (a.terms_w_h, a.terms_w_i)]
    lines += [
        "",
        f"sums: ‖∂L/∂W_h‖ = {_cell(sums[0], '.6g')}, ‖∂L/∂W_i‖ = {_cell(sums[1], '.6g')}",
        f"short-term share of ∂L/∂W_i: {_share_cell(shares[-1])}",
    ]
    return "\n".join(lines) + "\n"


def matrix_plot(analysis: MatrixAnalysis, path) -> None:
    """‖Π‖₂ and the terms' norms against the gap, with the bound (γ σ_max)^gap."""
    plt = pyplot()
    a = analysis
    gaps = a.gaps[::-1]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    marker = "o" if a.steps <= 40 else None
    series = [
        (
            a.log10_jacobian_norms[::-1],
            {
                "marker": marker,
                "markersize": 3,
                "color": "C2",
                "label": r"$\|\prod_{k=j+1}^{n} \mathrm{diag}(f'(a_k)) W_h\|_2$",
            },
        ),
        (
            a.log10_bounds[::-1],
            {
                "color": "C3",
                "linestyle": "--",
                "label": rf"bound $(\gamma\,\sigma_{{max}})^{{gap}}$ = ${a.bound_value:.3g}^{{gap}}$",
            },
        ),
        (
            _log10_magnitudes(a.norms_w_i[::-1]),
            {
                "marker": marker,
                "markersize": 3,
                "color": "C0",
                "alpha": 0.8,
                "label": r"$\|$term$_j$ for $W_i\|$",
            },
        ),
        (
            _log10_magnitudes(a.norms_w_h[::-1]),
            {
                "marker": marker,
                "markersize": 3,
                "color": "C1",
                "alpha": 0.8,
                "label": r"$\|$term$_j$ for $W_h\|$",
            },
        ),
    ]
    _draw_magnitudes(axes, gaps, series, "norm (log scale)")
    axes.set_xlabel("gap n − j (timesteps between input j and the output)")
    axes.xaxis.set_major_locator(integer_ticks())
    axes.set_title(
        f"{a.activation}, H = {a.hidden}, σ_max(W_h) = {a.sigma_max:.3g}, n = {a.steps}: {a.regime}"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
