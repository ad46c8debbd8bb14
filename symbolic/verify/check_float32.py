"""``bptt check`` on a module that computes in float32: how it is told from a float64 one, and the
finite differences within float32's reach that its gradient is judged against.

A float32 loss is rounded to about 6e-8 of its size, so the float64 check's finite differences (a
step of 1e-3 and a tolerance of 1e-6) measure that rounding, not the gradient. The module's loss is
the only reference ``check`` has, so its gradient is judged against the five-point stencil at a step
of 1e-2 (rounding ε₃₂·L/h ≈ 1e-5, truncation h⁴ L⁽⁵⁾/30 ≈ 3e-10), within FLOAT32_TOLERANCE of
max(|the estimate|, the rounding floor): a right formula computed in float32 passes ("right formula,
float32 precision"); a 1 % error or a missing recurrent term is far beyond it. ``--strict`` keeps
float64's tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .check_points import Stencil, number
from .grade_diagnoses import probed
from .interfaces import Wrong

#: The float32 stencil: five points at 1e-2 (see the module's docstring).
FLOAT32_STENCIL = Stencil(1e-2, 5, 0.0)
#: float32's reach for a gradient measured by FLOAT32_STENCIL: a 1 % error is ten times beyond it.
FLOAT32_TOLERANCE = 1e-3
#: Two float32 losses of the same batch (loss and loss_and_grad's; a wide batch and its parts) agree to this.
FLOAT32_LOSS = 1e-5


@dataclass(frozen=True)
class Precision:
    """What the check assumes of the module's arithmetic: its name, its rounding ε, the relative error
    the finite differences can resolve (``reach``), and how closely two of its losses agree."""

    name: str = "float64"
    eps: float = float(np.finfo(float).eps)
    reach: float = 1e-6
    loss: float = 1e-8
    strict: bool = False

    @property
    def float32(self) -> bool:
        return self.name == "float32"


FLOAT64 = Precision()


def float32(strict: bool) -> Precision:
    return Precision("float32", float(np.finfo(np.float32).eps), FLOAT32_TOLERANCE, FLOAT32_LOSS, strict)


def computes_in_float32(loss, case, seed: int = 0) -> bool:
    """Whether ``loss`` at ``case`` = (x, y, params) loses a move of every parameter far below float32's
    resolution (``grade_diagnoses.PROBE``): a float64 loss changes in proportion to the move (t = 1, 2,
    −1), a float32 one not at all or by whole ulps, and its values are float32 numbers. A loss that
    returns no number is not judged here."""
    x, y, params = case
    moved = probed(params, seed)
    base = {name: np.asarray(value, dtype=float) for name, value in params.items()}

    def at(t):
        point = {name: base[name] + t * (moved[name] - base[name]) for name in base}
        return float(number(loss(x, y, point), "loss"))

    try:
        values = [at(t) for t in (0.0, 1.0, 2.0, -1.0)]
    except (Wrong, TypeError, ValueError):
        return False
    if not np.isfinite(values).all():
        return False
    start = values[0]
    one, two, back = (value - start for value in values[1:])
    linear = one != 0 and abs(two - 2 * one) <= 2e-2 * abs(one) and abs(back + one) <= 1e-2 * abs(one)
    # and the evidence of float32 itself, so that a float64 loss too flat to follow the move is not
    # judged at float32's tolerance: float32 numbers (a float64 one is one with chance 2⁻²⁹), or no change
    rounded = all(float(np.float32(value)) == value for value in values)
    return not linear and (rounded or one == two == back == 0)


def verdict(precision: Precision, passed: bool, tolerance: float) -> str:
    """The report's last line for a module that computes in float32."""
    how = (f"it computes in float32 (its loss does not follow a move of the parameters below float32's "
           f"resolution), so its gradient is compared with finite differences at h = {FLOAT32_STENCIL.step:g}")
    if passed:
        return (f"passed: right formula, float32 precision: {how}, every one within {tolerance:.0e} (float32's "
                "reach; --strict applies float64's tolerance)")
    if precision.strict:
        return f"FAILED (--strict): {how}, judged at float64's tolerance {tolerance:.0e}"
    return f"FAILED: a gradient disagrees beyond float32's reach ({tolerance:.0e}): {how}; the formula is wrong"


__all__ = ["FLOAT32_STENCIL", "FLOAT32_TOLERANCE", "FLOAT64", "Precision", "computes_in_float32", "float32",
           "verdict"]
