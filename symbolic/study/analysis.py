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

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..errors import UsageError
from ..model import VOCABULARY, Model
from .figures import (
    _draw_magnitudes,
    _log10_magnitudes,
    integer_ticks,
    pyplot,
    save_figure,
)

# The plain RNN at H > 1 is analysed in matrix_analysis; its names are here too for the command line.
from .matrix_analysis import (
    DEFAULT_W_H_SCALE,
    MatrixAnalysis,
    analyze_matrix,
    classify_growth,
    jacobian_log_norms,
    matrix_plot,
    matrix_table,
    orthogonal,
)
from .measures import (
    DEFAULT_SEED,
    LOG10_FLOAT64_MAX,
    STEPS_LIMIT,
    TOLERANCE,
    Bound,
    _cell,
    _first_lost_step,
    _log10_powers,
    _lost_sentence,
    _lost_terms,
    _norms,
    _number,
    _overflow_json,
    _power_of_ten,
    _rows_shown,
    _share_cell,
    _shares,
    _sums_overflow,
    bound,
    plain_text,
    random_words,
)

DEFAULT_W_H = 0.5
DEFAULT_W_I = (0.5, 0.5, 0.5)
DEFAULT_W_O = 1.0


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


__all__ = [
    "DEFAULT_W_H", "DEFAULT_W_H_SCALE", "DEFAULT_W_I", "DEFAULT_W_O", "Analysis", "MatrixAnalysis", "analyze",
    "analyze_matrix", "bound", "classify", "classify_growth", "jacobian_log_norms", "matrix_plot", "matrix_table",
    "orthogonal", "plot", "pyplot", "random_words", "table",
]
