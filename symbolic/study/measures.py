"""What the three analyses share (the notes' scalar one, the plain RNN's matrices, any cell): the
symbolic bound γ = sup|f′|, the analysed words, the norms and shares of the terms, where float64
overflowed, and the cells of their tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp
from sympy.printing.str import StrPrinter

from ..activations import ACTIVATIONS
from ..errors import UsageError
from ..model import VOCABULARY

#: Width of the band around 1 in which the factors' geometric mean counts as ``stable``.
TOLERANCE = 0.05
REGIMES = ("vanishing", "exploding", "stable")

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


def random_words(steps: int, seed: int = DEFAULT_SEED) -> list[str]:
    """A random sequence over the notes' vocabulary, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [VOCABULARY[i] for i in rng.integers(0, len(VOCABULARY), size=steps)]


def _number(value):
    """JSON has no inf/nan: a non-finite number becomes null."""
    value = float(value)
    return value if math.isfinite(value) else None


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


# -- float64 overflow: what could be computed, and saying where it could not -----------------------


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


# -- table cells -----------------------------------------------------------------------------------


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


def _rows_shown(steps: int, limit: int = 30) -> list[int]:
    """Gaps to show: all of them for short sequences, else the first ten and a log-spaced tail."""
    if steps <= limit:
        return list(range(steps))
    tail = np.unique(np.geomspace(10, steps - 1, num=limit - 10).astype(int))
    return list(range(10)) + [int(g) for g in tail if g >= 10]
