"""The vector–Jacobian product of a cell's forward map, by the derived recursion: what a framework's
backward (CS231n's ``rnn_backward(dh, cache)``) computes, graded by ``bptt grade --forward/--backward``.

The forward map is (x_1..x_n, s_0, θ) ↦ (h_1..h_n), h the cell's output state; given upstream gradients
G_t = ∂L/∂h_t for every step, L = Σ_t ⟨G_t, h_t⟩ and the derived δ recursion (``derivation._backward``)
gives ∂L/∂θ, ∂L/∂x_t and ∂L/∂s_0. No readout, no batch mean: the caller owns the loss.
"""

from __future__ import annotations

import numpy as np

from .derivation import CellDerivation
from .evaluate import Values, _backward, _Float64, _forward, _Mpmath, _transpose_apply


def vjp(d: CellDerivation, params: dict, x, upstream, initial: dict | None = None,
        digits: int | None = None) -> Values:
    """``params``: the cell's parameters (the readout's too: it sets H and is not used); ``x`` (B, n, D);
    ``upstream`` (B, n, H); ``initial``: state → s_0 (B, H), zeros where absent. Returns Values with
    loss = Σ ⟨G, h⟩, gradients = every parameter the steps use, "x" (B, n, D) and "<state>_0" per state,
    and forward = {"h": (B, n, H), "states": state → [s_0, …, s_n]}. float64, or mpmath at ``digits``."""
    if digits is None:
        return _vjp(d, params, x, upstream, initial, _Float64())
    import mpmath

    with mpmath.workdps(digits):
        return _vjp(d, params, x, upstream, initial, _Mpmath())


def _vjp(d: CellDerivation, params: dict, x, upstream, initial, numbers) -> Values:
    cell = d.cell
    x, upstream = numbers.array(x), numbers.array(upstream)
    batch, steps, inputs = x.shape
    p = {name: numbers.array(params[name]) for name in cell.parameters}
    zero = numbers.zeros((batch, p[cell.readout].shape[0]))
    start = {state: numbers.array(value) + zero for state, value in (initial or {}).items()}
    history, states = _forward(d, p, x, numbers, start)
    h = np.stack(states[d.output_state][1:], axis=1)
    gradients = {name: numbers.zeros(p[name].shape) for name in d.gradients}
    received = {state: [zero] * (steps + 1) for state in d.states}
    received[d.output_state] = [zero] + [upstream[:, t] + zero for t in range(steps)]
    inputs_delta = [numbers.zeros((batch, inputs)) for _ in range(steps)]
    maps = [(linear.matrix, d.symbols["linear_delta"][linear.symbol]) for linear in d.linears
            if linear.operand == "x"]

    def on_step(t, resolve):
        for matrix, delta in maps:
            if delta != 0:  # the input's own map is applied transposed in every derivation, wrong ones too
                inputs_delta[t] = inputs_delta[t] + _transpose_apply(resolve(delta) + zero, p[matrix], True)

    _backward(d, p, x, history, received, gradients, numbers, on_step=on_step)
    gradients["x"] = np.stack(inputs_delta, axis=1)
    for state in d.states:
        gradients[f"{state}_0"] = received[state][0]
    return Values(loss=(upstream * h).sum(), gradients=gradients, forward={"h": h, "states": states})


__all__ = ["vjp"]
