"""The numbers at one test point of ``bptt check``: what the module returns, validated (a gradient must
be a finite float64 array of its parameter's shape), and the numerical derivatives of its loss that
the gradient is compared with, by central finite differences (two- or five-point ``Stencil``) or the
complex step, per entry or along one random direction, with the relative error that measures them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .child import short
from .interfaces import Wrong

#: Entries of one parameter checked numerically at most (drawn at random beyond that).
MAX_ENTRIES = 48
#: Problems named in a report per parameter and kind (the same NaN in every batch is one line).
MAX_ENTRIES_NAMED = 4
#: The finite-difference step for dict-interface modules, which use the five-point central stencil
#: (error O(h⁴)): some LSTM gradients are small next to the loss (saturated gates, ∂L/∂U_· over a few
#: steps from h_0 = 0), so the rounding error ε·L/h of a two-point 1e-6 step came within 4x of the
#: tolerance; at h = 1e-3 rounding (~1e-13) and truncation (h⁴ L⁽⁵⁾/30 ~ 1e-13) both stay far below it.
DICT_FD_STEP = 1e-3
#: For dict-interface modules, finite differences are measured relative to at least this fraction of
#: the largest gradient entry (see ``bptt check``'s ``_check_case``); a 0.1% error stays visible down to
#: gradients 1e-6 of the largest.
FD_FLOOR = 1e-3
#: The complex step's h: Im L(w + ih) / h has no cancellation, so h can be far below rounding.
COMPLEX_STEP = 1e-20


@dataclass(frozen=True)
class Stencil:
    """Finite differences: the step h, the points of the central stencil (2 or 5), and the floor of
    their relative error as a fraction of the largest gradient entry (0: each parameter's own)."""

    step: float = 1e-6
    points: int = 2
    floor: float = 0.0


#: The positional interfaces' stencil (two points, 1e-6), the dict interface's (five points).
TWO_POINT, FIVE_POINT = Stencil(), Stencil(DICT_FD_STEP, 5, FD_FLOOR)


def stencil_for(kind: str, analytic: bool, wide: bool) -> Stencil:
    """The stencil for a probe of a module with interface ``kind``. Beyond the base cases (``wide``) a
    wide batch's mean can make one parameter's gradient tiny next to the others', so it is measured
    against FD_FLOOR times the largest entry, and with the five-point stencil where the activations
    are analytic; a ReLU module's short batches with the two-point 1e-6 step, which straddles a kink
    with a small chance only (its wide ones are compared with their sub-batches)."""
    if wide:
        return FIVE_POINT if analytic else Stencil(floor=FD_FLOOR)
    if kind == "dict" and not analytic:
        # a dict module's base cases draw no point away from ReLU's kinks: a 1e-3 step crossed them
        return Stencil(floor=FD_FLOOR)
    return FIVE_POINT if kind == "dict" else TWO_POINT


# -- validating what the module returns ----------------------------------------------------------------


def entries(mask: np.ndarray) -> str:
    """The positions where ``mask`` holds, e.g. "(0, 1), (2, 0) and 3 more"."""
    positions = [tuple(int(i) for i in index) for index in np.argwhere(mask)]
    named = ", ".join(str(position) for position in positions[:MAX_ENTRIES_NAMED])
    more = len(positions) - MAX_ENTRIES_NAMED
    return named + (f" and {more} more" if more > 0 else "")


def _not_finite(name: str, value: np.ndarray, what: str) -> Wrong | None:
    bad = ~np.isfinite(value)
    if not bad.any():
        return None
    kinds = " or ".join(
        kind for kind, mask in (("NaN", np.isnan(value)), ("inf", np.isinf(value))) if mask.any()
    )
    where = "" if value.ndim == 0 else f" at entries {entries(bad)}"
    return Wrong("finite", f"{name}: {what} is {kinds}{where}", [name])


def gradient_array(name: str, value, shape: tuple[int, ...], float32: bool = False) -> np.ndarray:
    """The gradient ``value`` as a float64 array of ``shape``; ``Wrong`` naming what is wrong with it.
    ``float32``: the module computes in float32, so float32 gradients are its own precision."""
    scalar_types = (float, np.floating, np.integer, np.complexfloating, int, complex)
    if isinstance(value, np.ndarray):
        array = value
    elif shape == () and isinstance(value, scalar_types) and not isinstance(value, (bool, np.bool_)):
        array = np.asarray(value)
    else:
        want = "a number" if shape == () else f"a NumPy array of shape {shape}"
        if isinstance(value, (list, tuple, dict, set)):
            given = f"a {type(value).__name__} of {len(value)} items"
        else:
            given = f"{short(value, 40)} ({type(value).__name__})"
        raise Wrong("type", f"{name}: the gradient is {given}, not {want}", [name])
    if array.dtype.kind in "USO":  # "1.5" is not a gradient, whatever float() makes of it
        held = "strings" if array.dtype.kind in "US" else "Python objects"
        raise Wrong("dtype", f"{name}: the gradient holds {held} (dtype {array.dtype}), not numbers", [name])
    if array.dtype.kind == "c":
        raise Wrong(
            "dtype", f"{name}: the gradient is complex ({array.dtype}) although every input was real", [name]
        )
    if array.dtype.kind != "f" or array.dtype.itemsize < (4 if float32 else 8):
        raise Wrong("dtype", f"{name}: the gradient has dtype {array.dtype}, not float64", [name])
    if array.shape != shape:
        raise Wrong("shape", f"{name}: the gradient has shape {array.shape}, the parameter {shape}", [name])
    problem = _not_finite(name, array, "the gradient")
    if problem:
        raise problem
    return array.astype(float)


def number(value, what: str, complex_allowed: bool = False):
    """One number returned by ``loss`` (complex only where a complex step went in)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    numbers = (float, int, np.floating, np.integer) + (
        (complex, np.complexfloating) if complex_allowed else ()
    )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers):
        want = "a number" if complex_allowed else "a real number"
        raise Wrong("loss", f"{what} returns {short(value, 40)} ({type(value).__name__}), not {want}")
    return value


# -- the numerical derivatives ------------------------------------------------------------------------------------


def derivative(loss_at, method: str, stencil: Stencil):
    """The derivative of ``loss_at(s)`` (the loss with one entry moved by s) at s = 0."""
    if method == "complex step":
        return np.imag(loss_at(1j * COMPLEX_STEP)) / COMPLEX_STEP
    step = stencil.step
    if stencil.points == 5:  # the five-point central stencil, error O(h⁴)
        return (8 * (loss_at(step) - loss_at(-step)) - (loss_at(2 * step) - loss_at(-2 * step))) / (12 * step)
    return (loss_at(step) - loss_at(-step)) / (2 * step)


def numerical(loss: Callable, stencil: Stencil, case, name: str, method: str, rng, limit: int = MAX_ENTRIES) -> tuple:
    """(what to compare of the flat gradient: a function, the numerical derivatives of ``loss`` it must
    equal) for one parameter: at most ``limit`` entries, drawn at random beyond that, or with
    ``limit`` 0 the derivative along one random direction of the whole parameter, which every entry
    moves (one stencil instead of one per entry: the probes at wide batches and long sequences).
    ``loss(x, y, params)`` at the test point ``case`` = (x, y, params)."""
    value = np.asarray(case[2][name], dtype=float)
    if limit == 0:
        direction = rng.normal(size=value.size)
        direction /= np.linalg.norm(direction)
        return _derivatives(loss, stencil, case, name, method, [direction], lambda g: [g @ direction])
    indices = np.arange(value.size)
    if value.size > limit:
        indices = np.sort(rng.choice(value.size, size=limit, replace=False))
    return _derivatives(loss, stencil, case, name, method, list(indices), lambda g: g[indices], indices)


def _derivatives(loss, stencil, case, name, method, moves, project, indices=None) -> tuple:
    """The numerical derivative of ``loss`` along each of ``moves`` (a flat index, or a direction)."""
    x, y, params = case
    value = np.asarray(params[name], dtype=float)
    complex_step = method == "complex step"
    # For the complex step every parameter is complex (zero imaginary parts but the one entry moved):
    # a module may add one parameter's products into another's array in place, which NumPy refuses
    # for complex into float64.
    dtype = complex if complex_step else float
    others = {other: np.asarray(given, dtype=dtype) for other, given in params.items()}

    def loss_at(step, move):
        moved = value.astype(dtype)
        if isinstance(move, np.ndarray):
            moved = moved + step * move.reshape(value.shape)
        else:
            moved.reshape(-1)[move] += step
        result = number(loss(x, y, {**others, name: moved}), "loss", complex_allowed=complex_step)
        if complex_step and not isinstance(result, (complex, np.complexfloating)):
            raise Wrong(
                "complex",
                f"{name}: loss returns the real {type(result).__name__} {short(result)} for complex parameters, "
                "so the complex step cannot see its derivative: let complex numbers flow through, or declare "
                "ANALYTIC = False",
                [name],
            )
        return result

    want = np.array(
        [
            derivative(lambda s, m=m: loss_at(s, m), method, stencil)
            for m in moves
        ],
        dtype=float,
    )
    bad = ~np.isfinite(want)
    if bad.any() and indices is None:
        raise Wrong(
            f"numerical {method}",
            f"{name}: loss is NaN or inf near the test point, so its numerical derivative is not finite",
            [name],
        )
    if bad.any():
        positions = ", ".join(
            str(tuple(int(i) for i in np.unravel_index(index, value.shape)))
            for index in indices[bad][:MAX_ENTRIES_NAMED]
        )
        more = int(bad.sum()) - MAX_ENTRIES_NAMED
        kind = "complex-step" if complex_step else "finite-difference"
        raise Wrong(
            f"numerical {method}",
            f"{name}: loss is NaN or inf near the test point, so its {kind} derivative is not finite"
            + (
                ""
                if value.ndim == 0
                else f" at entries {positions}" + (f" and {more} more" if more > 0 else "")
            ),
            [name],
        )
    return project, want


def relative(got, want, floor: float = 1e-8) -> float:
    got, want = np.atleast_1d(np.asarray(got, dtype=float)), np.atleast_1d(np.asarray(want, dtype=float))
    scale = max(float(np.max(np.abs(want))), floor, 1e-8)
    return float(np.max(np.abs(got - want)) / scale)


def worse(worst: float | None, error: float) -> float:
    """The larger of the two, NaN counting as the worst of all (max() would keep or drop a NaN by
    argument order, since NaN compares false with anything)."""
    if worst is None or math.isnan(error):
        return error
    return worst if math.isnan(worst) else max(worst, error)


__all__ = [
    "FD_FLOOR", "FIVE_POINT", "MAX_ENTRIES", "TWO_POINT", "Stencil", "derivative", "gradient_array", "number",
    "numerical", "relative", "stencil_for", "worse",
]
