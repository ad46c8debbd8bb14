"""Diagnoses beyond the catalogue of wrong derivations: float32, a constant factor, clipping, copies.

Each reads only the graded cases (``case.user`` and ``case.exact``: name → array, ``case.batch``,
``case.steps``) and says in words what it finds, or None:

- **float32**: the implementation computes in float32 (a returned array is float32, or its forward
  values, the loss or the states, are off by more than float64 rounding and do not follow a move of
  the parameters far below float32's resolution, ``PROBE``, as a float64 function does) and every entry
  is within float32's reach of the exact gradient: the formula is right, the precision is float32's.
- **a constant factor**: every wrong gradient is c · the exact one with c the same in every case, or
  c/B, c/n, c/(B n): the loss was scaled (½, a sum for a mean, a mean over the steps).
- **clipping**: the wrong entries sit at ±c, every one whose exact value is beyond c (np.clip); or the
  gradients are the exact ones rescaled to a norm of exactly c (clipping by norm).
- **copies**: one parameter's gradient is another's (the LSTM's ∂L/∂b_i returned for ∂L/∂b_f).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .grade_report import FLOOR32, RELATIVE, RELATIVE32, _relative

#: Forward values (a loss, the states) off by more than this relative error are not float64 rounding.
FORWARD64 = 1e-11
LOW_PRECISION = ("float16", "float32")


def low_precision(value) -> bool:
    """Whether a returned value (a tuple, a dict, an array) holds float16 or float32 numbers."""
    if isinstance(value, (tuple, list)):
        return any(low_precision(item) for item in value)
    if isinstance(value, dict):
        return any(low_precision(item) for item in value.values())
    return getattr(getattr(value, "dtype", None), "name", None) in LOW_PRECISION


def forward_in_float32(errors) -> bool:
    """Forward values' relative errors (the loss, the states) that only float32 rounding explains."""
    errors = [e for e in errors if e > 0]
    return bool(errors) and max(errors) > FORWARD64 and max(errors) <= RELATIVE32


#: The probe that tells float32 rounding from a small mistake: every parameter moved by PROBE times its
#: scale, far below float32's resolution (6e-8) and far above float64's (1e-16): a float64 function's
#: output follows the move smoothly, one that rounds its states to float32 loses it or jumps by an ulp.
PROBE = 1e-9


def probed(params: dict, seed: int = 0) -> dict:
    """The parameters moved by the probe (a fixed random direction)."""
    rng = np.random.default_rng(seed)
    return {name: np.asarray(value, dtype=float)
            + PROBE * max(float(np.max(np.abs(value), initial=0)), 1.0) * rng.normal(size=np.shape(value))
            for name, value in params.items()}


def follows_float64(user_change, exact_change) -> bool:
    """Whether the user's output moved with the probe as the exact one does (to 1 %)."""
    user_change, exact_change = np.ravel(user_change), np.ravel(exact_change)
    scale = max(float(np.max(np.abs(exact_change), initial=0)), np.finfo(float).tiny)
    return float(np.max(np.abs(user_change - exact_change), initial=0)) <= 1e-2 * scale


def within_float32(cases, names) -> bool:
    return all(float(np.max(_relative(c.user, c.exact, FLOOR32)[name], initial=0)) <= RELATIVE32
               for c in cases for name in names)


def _flat(values: dict, names) -> np.ndarray:
    return np.concatenate([np.ravel(values[name]) for name in names]) if names else np.zeros(0)


def constant_factor(cases, names, tolerance: float = RELATIVE) -> str | None:
    """"½ (the loss was scaled by ½)"-like words when user = c · exact in every case for the names."""
    ratios = []
    for case in cases:
        user, exact = _flat(case.user, names), _flat(case.exact, names)
        norm = float(exact @ exact)
        if norm == 0:
            continue
        ratio = float(user @ exact) / norm
        if not np.allclose(user, ratio * exact, rtol=tolerance, atol=tolerance * np.sqrt(norm / exact.size)):
            return None
        ratios.append((ratio, case))
    if not ratios or all(abs(r - 1) <= tolerance for r, _ in ratios):
        return None
    for text, scale in (("", lambda c: 1), ("/B", lambda c: c.batch), ("/n", lambda c: c.steps),
                        ("/(B·n)", lambda c: c.batch * c.steps), ("·B", lambda c: 1 / c.batch),
                        ("·n", lambda c: 1 / c.steps)):
        factors = [r * scale(c) for r, c in ratios]
        if max(factors) - min(factors) <= 10 * tolerance * max(abs(f) for f in factors):
            if text and all(c.batch == 1 for _, c in ratios) and "B" in text:
                continue
            factor = _fraction(factors[0])
            if factor is None or factor in ("0", "-0") or (factor == "1" and not text):
                return None  # near 1 but not a simple factor: an error in a term, not a scaled loss
            factor += text
            return (f"every gradient is {factor} × the exact one in every case (a constant factor: the loss was "
                    f"scaled by {factor}, such as ½ Σ or a sum for a mean); scale the loss or the gradients back")
    return None


def _fraction(value: float) -> str | None:
    fraction = Fraction(value).limit_denominator(16)
    if abs(float(fraction) - value) > 1e-9 * abs(value):
        return None
    words = {Fraction(1, 2): "½", Fraction(-1, 2): "−½", Fraction(1, 4): "¼"}
    return words.get(fraction, str(fraction))


def clipping(cases, names) -> str | None:
    """Entries held at ±c, or the gradients rescaled to norm c (the same c in every case)."""
    levels, norms, elementwise = set(), [], True
    for case in cases:
        user, exact = _flat(case.user, names), _flat(case.exact, names)
        wrong = ~np.isclose(user, exact, rtol=RELATIVE, atol=0)
        if not wrong.any():
            continue
        levels |= {round(float(v), 12) for v in np.abs(user[wrong])}
        right_beyond = np.abs(exact[~wrong]) > min(levels) * (1 + 1e-9)
        if right_beyond.any() or np.any(np.abs(exact[wrong]) < np.abs(user[wrong]) * (1 - 1e-9)):
            elementwise = False
        norms.append((float(np.linalg.norm(user)), float(np.linalg.norm(exact)), user, exact))
    if elementwise and len(levels) == 1 and min(levels) > 0:
        c = levels.pop()
        return (f"the gradients are clipped to ±{c:g}: every wrong entry sits at ±{c:g} where the exact one is "
                "beyond it (np.clip), every other is right; the unclipped gradient cannot be recovered from a "
                "clipped entry: grade the gradient before clipping")
    if norms and all(abs(n - norms[0][0]) <= 1e-9 * norms[0][0] and e > n for n, e, _, _ in norms):
        direction = all(np.allclose(u / n, x / e, rtol=RELATIVE, atol=RELATIVE / np.sqrt(u.size))
                        for n, e, u, x in norms)
        recovered = ("recovered by undoing the rescaling, the gradient is right" if direction else
                     "even recovered by undoing the rescaling, the gradient is wrong")
        return (f"the gradients are clipped by norm to {norms[0][0]:g} (rescaled so that ‖g‖ = {norms[0][0]:g} "
                f"wherever the exact norm is larger): {recovered}")
    return None


def copies(cases, pieces: dict, wrong) -> str | None:
    """``pieces``: per case, name → array (a parameter's gradient, or one gate's block of a stacked one);
    a wrong piece equal to another piece in every case, where the exact ones differ."""
    found = []
    names = list(pieces[0][0])
    for name in names:
        if not any(w in name for w in wrong) or all(np.allclose(user[name], exact[name], rtol=RELATIVE, atol=0)
                                                     for user, exact in pieces):
            continue
        # a source that is right itself first: b_o copied from b_f, not from b_i (a copy too)
        right = [n for n in names if all(np.allclose(u[n], e[n], rtol=RELATIVE, atol=0) for u, e in pieces)]
        for other in right + [n for n in names if n not in right]:
            if other == name or np.shape(pieces[0][0][other]) != np.shape(pieces[0][0][name]):
                continue
            same = all(np.allclose(user[name], user[other], rtol=RELATIVE, atol=0)
                       and not np.allclose(exact[name], exact[other], rtol=RELATIVE, atol=0)
                       for user, exact in pieces)
            if same:
                found.append((name, other))
                break
    if not found:
        return None
    return "copied gradients: " + "; ".join(f"∂L/∂{a} is returned as a copy of ∂L/∂{b}" for a, b in found) + (
        " (the exact ones differ): compute each from its own gate")


def not_finite(cases, names) -> str | None:
    """The wrong gradients holding NaN or inf (a division by zero, an overflow, an uninitialised array)."""
    found = [n for n in names if any(not np.all(np.isfinite(c.user[n])) for c in cases)]
    return (f"{', '.join(found)} holds NaN or inf where the exact gradient is finite: look for a division by "
            "zero, an overflow or np.empty left unfilled") if found else None


def zeros(cases, names) -> str | None:
    """Wrong gradients that are all zeros in every case: never computed (np.zeros_like returned)."""
    found = [n for n in names if all(not np.any(c.user[n]) for c in cases)]
    return (f"{', '.join(found)} is zero in every case where the exact gradient is not: it is never computed "
            "(or never accumulated into the array returned)") if found else None


def transposed(cases, names) -> str | None:
    """Wrong square gradients that are the exact ones transposed (a product in the wrong order)."""
    found = [n for n in names if all(np.ndim(c.user[n]) == 2 and np.shape(c.user[n])[0] == np.shape(c.user[n])[1]
                                     and np.allclose(c.user[n], np.transpose(c.exact[n]), rtol=RELATIVE, atol=0)
                                     for c in cases)]
    return (f"{', '.join(found)} is the exact gradient transposed: the outer product is taken in the wrong "
            "order (h_prev.T @ da for a row layout, da @ h_prev.T for a column one)") if found else None


def diagnose(cases, names, pieces=None) -> str | None:
    """The first of the diagnoses that explains the wrong ``names``; ``pieces`` as for ``copies``."""
    return (not_finite(cases, names) or zeros(cases, names) or constant_factor(cases, names)
            or transposed(cases, names) or clipping(cases, names)
            or (copies(cases, pieces, names) if pieces else None))


__all__ = [
    "FORWARD64",
    "PROBE",
    "clipping",
    "constant_factor",
    "copies",
    "diagnose",
    "follows_float64",
    "forward_in_float32",
    "low_precision",
    "not_finite",
    "probed",
    "transposed",
    "within_float32",
    "zeros",
]
