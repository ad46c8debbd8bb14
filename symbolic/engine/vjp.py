"""The vector–Jacobian product of a cell's forward map in grade's pair form: what a framework's
backward (CS231n's ``rnn_backward(dh, cache)``) computes, graded by ``bptt grade --forward/--backward``.

The forward map is (x_1..x_n, s_0, θ) ↦ (h_1..h_n), h the cell's output state; given upstream gradients
G_t = ∂L/∂h_t for every step, L = Σ_t ⟨G_t, h_t⟩ and the derived δ recursion gives ∂L/∂θ, ∂L/∂x_t and
∂L/∂s_0. No readout, no batch mean: the caller owns the loss. The recursion is ``evaluate.vjp``'s (one
implementation, ``vjp_with_states``); this module packs it as ``Values`` for the pairs.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .derivation import CellDerivation
from .evaluate import Values, vjp_with_states


def vjp(d: CellDerivation, params: dict, x, upstream, initial: dict | None = None,
        digits: int | None = None) -> Values:
    """``params``: the cell's parameters (the readout's too: it is not used); ``x`` (B, n, D);
    ``upstream`` (B, n, H); ``initial``: state → s_0 (B, H), zeros where absent. Returns Values with
    loss = Σ ⟨G, h⟩, gradients = every parameter the steps use, "x" (B, n, D) and "<state>_0" per state,
    and forward = {"h": (B, n, H), "states": state → [s_0, …, s_n]}. float64, or mpmath at ``digits``."""
    grads, dx, dinitial, states = vjp_with_states(d, params, x, {d.output_state: upstream}, initial, digits)
    h = np.stack(states[d.output_state][1:], axis=1)
    gradients = grads | {"x": dx} | {f"{state}_0": value for state, value in dinitial.items()}
    with _precision(digits):  # Σ ⟨G, h⟩ at the digits h was computed at
        loss = (h * np.asarray(upstream)).sum()
    return Values(loss=loss, gradients=gradients, forward={"h": h, "states": states})


def _precision(digits: int | None):
    if digits is None:
        return contextlib.nullcontext()
    import mpmath

    return mpmath.workdps(digits)


__all__ = ["vjp"]
