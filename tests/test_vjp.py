"""The generated modules' backward entry point, ``vjp(x, params, upstream, initial)`` (issue 25): equal to
``torch.autograd.grad`` of ⟨upstream, states⟩, the states computed step by step from the cell's own
equations in torch float64 (``tests/export_cases.reference``, not the engine's derivation), with an
upstream gradient for every state at every step and random initial states."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic.cells import cell_of
from symbolic.codegen import load

from .export_cases import ROOT, B, D, H, N, model, reference

torch = pytest.importorskip("torch")

FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "exp": torch.exp}
CELLS = ("rnn", "lstm", "gru", "skip:2", str(ROOT / "docs" / "cells" / "mgu.py"))
IDS = ("rnn", "lstm", "gru", "skip2", "mgu")
MODES = ("unrolled", "loop")
TOLERANCE = 1e-10


def _module(cell: str, mode: str):
    return load(model(cell), mode=mode)


def _case(generated, seed: int = 0):
    """Parameters, x (B, n, D), upstream (every state, (B, n, H)) and initial states (B, H)."""
    rng = np.random.default_rng(seed)
    params = {name: 0.6 * rng.normal(size=shape) for name, shape in generated.PARAMS.items()}
    x = rng.normal(size=(B, N, D))
    upstream = {state: rng.normal(size=(B, N, H)) for state in generated.STATES}
    initial = {state: 0.5 * rng.normal(size=(B, H)) for state in generated.STATES}
    return params, x, upstream, initial


def _cell_parameters(cell: str, generated) -> list[str]:
    spec = cell_of(model(cell))
    return [name for name in generated.PARAMS if name not in (spec.readout, spec.readout_bias)]


def _torch_vjp(cell: str, names: list[str], params, x, upstream, initial):
    """(grads, dx, dinitial) by torch autograd of Σ_t Σ_s ⟨upstream_s[:, t], s_t⟩ over the cell's equations."""
    tensors = {name: torch.tensor(params[name], requires_grad=True) for name in names}
    xs = torch.tensor(x, requires_grad=True)
    starts = {state: torch.tensor(value, requires_grad=True) for state, value in initial.items()}
    trace: list = []
    reference(cell, FUNCTIONS, lambda u, m: u @ m.T)(tensors, xs.transpose(0, 1), starts, trace)
    total = sum((torch.from_numpy(upstream[state][:, t]) * states[state]).sum()
                for t, states in enumerate(trace) for state in upstream)
    inputs = [*tensors.values(), xs, *starts.values()]
    found = torch.autograd.grad(total, inputs, allow_unused=True)
    found = [np.zeros(tuple(v.shape)) if g is None else g.numpy() for g, v in zip(found, inputs)]
    grads = dict(zip(tensors, found))
    return grads, found[len(tensors)], dict(zip(starts, found[len(tensors) + 1:]))


def _close(ours, theirs) -> float:
    return float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs)))) if np.size(ours) else 0.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_vjp_equals_torch_autograd(cell, mode):
    generated = _module(cell, mode)
    params, x, upstream, initial = _case(generated)
    names = _cell_parameters(cell, generated)
    grads, dx, dinitial = generated.vjp(x, params, upstream, initial)
    expected, expected_dx, expected_initial = _torch_vjp(cell, names, params, x, upstream, initial)
    assert sorted(grads) == sorted(names)   # the cell's parameters, not the readout
    for name in names:
        assert grads[name].shape == generated.PARAMS[name]
        assert _close(grads[name], expected[name]) < TOLERANCE, name
    assert dx.shape == (B, N, D) and _close(dx, expected_dx) < TOLERANCE
    assert sorted(dinitial) == sorted(generated.STATES)
    for state in generated.STATES:
        assert dinitial[state].shape == (B, H)
        assert _close(dinitial[state], expected_initial[state]) < TOLERANCE, state


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", ("lstm", "skip:2"), ids=("lstm", "skip2"))
def test_missing_states_and_initial_are_zero(cell, mode):
    """A state left out of ``upstream`` sends nothing; initial=None starts from zeros (torch: zeros)."""
    generated = _module(cell, mode)
    params, x, upstream, _ = _case(generated, seed=1)
    output = cell_of(model(cell)).output_state
    some = {output: upstream[output]}
    zeros = {state: np.zeros((B, H)) for state in generated.STATES}
    grads, dx, dinitial = generated.vjp(x, params, some)
    names = _cell_parameters(cell, generated)
    expected, expected_dx, expected_initial = _torch_vjp(cell, names, params, x, some, zeros)
    for name in names:
        assert _close(grads[name], expected[name]) < TOLERANCE, name
    assert _close(dx, expected_dx) < TOLERANCE
    for state in generated.STATES:
        assert _close(dinitial[state], expected_initial[state]) < TOLERANCE, state
    # the same call with every state given (zeros) and explicit zero initial states
    full = {state: some.get(state, np.zeros((B, N, H))) for state in generated.STATES}
    again = generated.vjp(x, params, full, zeros)
    assert all(_close(again[0][name], grads[name]) == 0 for name in names) and _close(again[1], dx) == 0


def test_vjp_refuses_bad_upstream():
    generated = _module("lstm", "loop")
    params, x, upstream, initial = _case(generated)
    with pytest.raises(ValueError, match="unknown state 'q'"):
        generated.vjp(x, params, {"q": upstream["h"]})
    with pytest.raises(ValueError, match=r"upstream\['h'\] must have shape"):
        generated.vjp(x, params, {"h": upstream["h"][:, :2]})
    with pytest.raises(ValueError, match=r"initial\['c'\] must have shape"):
        generated.vjp(x, params, upstream, {"c": initial["c"][:1]})
