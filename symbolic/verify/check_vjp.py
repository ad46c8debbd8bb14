"""``bptt check``'s look at a module's backward entry point, ``vjp(x, params, upstream, initial)`` (issue 25).

For random upstream gradients u_s (B, n, H) of every state and random initial states s_0, the module's
own forward gives f = Σ_s Σ_t ⟨u_s[:, t], s_t⟩ (``states(x, params, initial=)``); moved along one random
direction v of each parameter, of x and of each initial state, the five-point difference quotient of f
must equal ⟨vjp's gradient, v⟩. A parameter the vjp leaves out (the readout) must not move f. A module
whose ``states`` takes no ``initial`` is compared from zero initial states, without dinitial.
"""

from __future__ import annotations

import inspect

import numpy as np

from .check_points import relative
from .check_report import VJP_TOLERANCE as TOLERANCE
from .interfaces import Wrong

#: The five-point stencil's step along a unit-size direction: its truncation (h⁴ f⁽⁵⁾) and rounding
#: (ε f / h) errors are near 1e-12 for the generated modules, far below TOLERANCE; for a module with a
#: kink (ReLU, ANALYTIC False) the step is small enough that crossing one is unlikely.
STEP, KINKED_STEP = 1e-3, 1e-6
#: What a direction that must not move f (a parameter the vjp leaves out) may move it by, relative.
UNMOVED = 1e-9


def _takes_initial(function) -> bool:
    try:
        return "initial" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _inner(interface, upstream: dict, x, params: dict, initial) -> float:
    """f = Σ_s ⟨u_s, s⟩ over every step, from the module's own states."""
    extra = {} if initial is None else {"initial": initial}
    states = interface.calls.call("states", interface.module.states, x, params, **extra)
    if not isinstance(states, dict) or not set(upstream) <= set(states):
        raise Wrong("vjp", f"vjp: states returns no {', '.join(sorted(set(upstream) - set(states or {})))}")
    return float(sum(np.sum(np.asarray(states[name], dtype=float) * value) for name, value in upstream.items()))


def _quotient(f, move, h: float) -> float:
    """The five-point central difference of f(move(ε)) at ε = 0, step h."""
    return (-f(move(2 * h)) + 8 * f(move(h)) - 8 * f(move(-h)) + f(move(-2 * h))) / (12 * h)


def _array(value, shape: tuple, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise Wrong("vjp", f"vjp: {what} is not an array of real numbers") from None
    if array.shape != shape:
        raise Wrong("vjp", f"vjp: {what} has shape {array.shape}, not {shape}")
    return array


def check_vjp(interface, rng: np.random.Generator, batch: int, steps: int) -> tuple[dict, list[str]]:
    """(what → relative error of ⟨vjp's gradient, v⟩ against the difference quotient, problems: what
    cannot be compared): one random point of ``batch`` sequences of ``steps`` steps. An error beyond
    TOLERANCE fails the report (``Report.vjp``)."""
    module = interface.module
    states_names = tuple(getattr(module, "STATES", ()))
    hidden = int(getattr(module, "HIDDEN_SIZE", 0))
    if not states_names or not hidden:
        return {}, ["vjp: the module has vjp but no STATES and HIDDEN_SIZE to feed it"]
    x, _, params = next(iter(interface.cases(rng, batch, steps, 1)))
    upstream = {name: rng.normal(size=(batch, steps, hidden)) for name in states_names}
    initial = None
    if _takes_initial(module.states) and _takes_initial(module.vjp):
        initial = {name: 0.5 * rng.normal(size=(batch, hidden)) for name in states_names}
    try:
        result = interface.calls.call("vjp", module.vjp, x, params, upstream, initial)
        if not isinstance(result, (tuple, list)) or len(result) != 3 or not isinstance(result[0], dict):
            raise Wrong("vjp", "vjp: returns no (grads, dx, dinitial) with grads a dict")
        grads, dx, dinitial = result
        grads = {name: _array(value, interface.shapes.get(name, np.shape(value)), f"grads[{name!r}]")
                 for name, value in grads.items()}
        unknown = sorted(set(grads) - set(interface.shapes))
        if unknown:
            raise Wrong("vjp", f"vjp: grads has {', '.join(unknown)}, which PARAMS does not")
        dx = _array(dx, x.shape, "dx")
        if initial is not None and (not isinstance(dinitial, dict) or set(dinitial) != set(states_names)):
            raise Wrong("vjp", f"vjp: dinitial must be a dict keyed by STATES {states_names}")
        dinitial = {} if initial is None else {name: _array(dinitial[name], (batch, hidden), f"dinitial[{name!r}]")
                                                for name in states_names}
        return _compare(interface, rng, upstream, x, params, initial, grads, dx, dinitial)
    except Wrong as wrong:
        return {}, [wrong.message]


def _compare(interface, rng, upstream, x, params, initial, grads, dx, dinitial) -> tuple[dict, list[str]]:
    """Each gradient along one random direction against the difference quotient of f."""

    def f(arguments):
        return _inner(interface, upstream, *arguments)

    moves = {}
    for name in interface.shapes:
        v = rng.normal(size=interface.shapes[name])
        moves[name] = (v, lambda e, name=name, v=v: (x, {**params, name: params[name] + e * v}, initial))
    v = rng.normal(size=x.shape)
    moves["x"] = (v, lambda e, v=v: (x + e * v, params, initial))
    for state in dinitial:
        v = rng.normal(size=initial[state].shape)
        moves[f"s_0 of {state}"] = (v, lambda e, state=state, v=v: (x, params, {**initial, state: initial[state] + e * v}))
    given = {**grads, "x": dx, **{f"s_0 of {state}": value for state, value in dinitial.items()}}
    step = STEP if interface.analytic else KINKED_STEP
    quotients = {what: _quotient(f, move, step) for what, (_, move) in moves.items()}
    floor = 1e-3 * max([abs(q) for q in quotients.values()] + [1e-8])
    errors, problems = {}, []
    for what, (v, _) in moves.items():
        if what in given:
            errors[what] = relative(float(np.sum(given[what] * v)), quotients[what], floor)
        elif abs(quotients[what]) > UNMOVED * max(1.0, floor / 1e-3):
            problems.append(f"vjp: grads has no {what}, which moves the states")
    return errors, problems


__all__ = ["TOLERANCE", "check_vjp"]
