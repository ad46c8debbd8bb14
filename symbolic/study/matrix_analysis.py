"""The plain RNN at hidden size H (or with biases): state-Jacobian products ‖Π diag(f′) W_h‖₂ measured
with the generated code, against the bound (γ σ_max(W_h))^gap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..activations import ACTIVATIONS
from ..errors import UsageError
from ..model import Model
from ..notes import is_notes_model
from .figures import (
    _draw_magnitudes,
    _log10_magnitudes,
    integer_ticks,
    pyplot,
    save_figure,
)
from .measures import (
    DEFAULT_SEED,
    STEPS_LIMIT,
    TOLERANCE,
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
    random_words,
)

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
    if is_notes_model(model):  # a programming error: the command line sends the notes' model to ``analyze``
        raise ValueError(
            "the notes' scalar model (H = 1, no biases) is analysed by analyze(), not analyze_matrix()"
        )
    H, D, n = model.hidden, model.inputs, model.steps
    if n * H * max(H, D) > ELEMENTS_LIMIT:
        raise UsageError(
            f"n·H·max(H, D) = {n * H * max(H, D)} is too large to analyze (limit {ELEMENTS_LIMIT}, the terms "
            f"of every step are kept): choose fewer --steps or a smaller --hidden"
        )
    weights, w_h_scale = _checked_weights(model, weights, w_h_scale, seed)
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


def _checked_weights(model: Model, weights: dict | None, w_h_scale: float | None, seed: int):
    """(weights, w_h_scale): the given weights checked for shape and finiteness (scale None), or the
    ones drawn from ``seed`` with W_h = ``w_h_scale``·Q."""
    H, D = model.hidden, model.inputs
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
    return weights, w_h_scale


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
