"""The generated modules' backward entry point, ``vjp(x, params, upstream, initial)`` (issue 25): equal to
``torch.autograd.grad`` of ⟨upstream, states⟩, the states computed step by step from the cell's own
equations in torch float64 (``tests/export_cases.reference``, not the engine's derivation), with an
upstream gradient for every state at every step and random initial states."""

from __future__ import annotations

import functools
import types

import numpy as np
import pytest

from symbolic.cells import cell_of
from symbolic.codegen import load

from .export_cases import ROOT, B, D, H, N, model, reference

torch = pytest.importorskip("torch")

FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "exp": torch.exp}
# skip:9 at n = 4: every lagged read is before s_0 (the rows the gradient sums over are empty)
CELLS = ("rnn", "lstm", "gru", "skip:2", "skip:9", str(ROOT / "docs" / "cells" / "mgu.py"))
IDS = ("rnn", "lstm", "gru", "skip2", "skip9", "mgu")
MODES = ("unrolled", "loop")
TOLERANCE = 1e-10


def _module(cell: str, mode: str, backend: str = "numpy"):
    return load(model(cell), mode=mode, backend=backend)


def _case(generated, seed: int = 0):
    """Parameters, x (B, n, D), upstream (every state, (B, n, H)) and initial states (B, H)."""
    return _case_at(generated, B, N, seed)


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


#: The Numba module's cells: every cell above and a user's file reading h_(t−2) and h_(t−3).
NUMBA_CELLS = (*CELLS, str(ROOT / "docs" / "cells" / "gated_skip.py"))
NUMBA_IDS = (*IDS, "gated_skip")


def _case_at(generated, batch: int, steps: int, seed: int):
    """``_case`` at another batch width and length (the compiled and BLAS drivers, one span or several)."""
    rng = np.random.default_rng(seed)
    params = {name: 0.6 * rng.normal(size=shape) for name, shape in generated.PARAMS.items()}
    x = rng.normal(size=(batch, steps, D))
    upstream = {state: rng.normal(size=(batch, steps, H)) for state in generated.STATES}
    initial = {state: 0.5 * rng.normal(size=(batch, H)) for state in generated.STATES}
    return params, x, upstream, initial


def _assert_vjp(cell, generated, params, x, upstream, initial) -> None:
    """vjp against torch autograd of the cell's equations (``initial`` None: torch starts at zeros)."""
    names = _cell_parameters(cell, generated)
    grads, dx, dinitial = generated.vjp(x, params, upstream, initial)
    zeros = {state: np.zeros((x.shape[0], H)) for state in generated.STATES}
    expected, expected_dx, expected_initial = _torch_vjp(cell, names, params, x, upstream, initial or zeros)
    assert sorted(grads) == sorted(names)
    for name in names:
        assert grads[name].shape == generated.PARAMS[name]
        assert _close(grads[name], expected[name]) < TOLERANCE, name
    assert dx.shape == x.shape and _close(dx, expected_dx) < TOLERANCE
    assert sorted(dinitial) == sorted(generated.STATES)
    for state in generated.STATES:
        assert dinitial[state].shape == (x.shape[0], H)
        assert _close(dinitial[state], expected_initial[state]) < TOLERANCE, state


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", NUMBA_CELLS, ids=NUMBA_IDS)
def test_numba_module_vjp_equals_torch_autograd(cell, mode):
    """The Numba module's vjp (compiled: loss_and_grad's drivers seeded by upstream, from given initial
    states) equals torch's; with initial=None and a state left out of upstream too."""
    generated = _module(cell, mode, "numba")
    assert callable(generated._vjp_backward_serial) and not hasattr(generated, "_numpy_vjp")
    params, x, upstream, initial = _case(generated, seed=4)
    _assert_vjp(cell, generated, params, x, upstream, initial)
    output = cell_of(model(cell)).output_state
    _assert_vjp(cell, generated, params, x, {output: upstream[output]}, None)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ("lstm", "skip:2", "skip:9", str(ROOT / "docs" / "cells" / "gated_skip.py")),
                         ids=("lstm", "skip2", "skip9", "gated_skip"))
def test_numba_vjp_every_driver(cell):
    """The compiled drivers over several spans of steps (n = 40), the BLAS drivers over one and over
    spans of one step (a batch past _SPAN_ROWS): each equal to torch's."""
    generated = _module(cell, "loop", "numba")
    blas = -(-generated._BLAS_ENTRIES // H)
    assert (blas - 1) * H < generated._BLAS_ENTRIES <= blas * H
    for batch, steps in ((blas - 1, 40), (blas, 4), (generated._SPAN_ROWS + 1, 4)):
        _assert_vjp(cell, generated, *_case_at(generated, batch, steps, seed=batch))


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


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
def test_vjp_refuses_bad_upstream(backend):
    generated = _module("lstm", "loop", backend)
    params, x, upstream, initial = _case(generated)
    with pytest.raises(ValueError, match="unknown state 'q'"):
        generated.vjp(x, params, {"q": upstream["h"]})
    with pytest.raises(ValueError, match=r"upstream\['h'\] must have shape"):
        generated.vjp(x, params, {"h": upstream["h"][:, :2]})
    with pytest.raises(ValueError, match=r"initial\['c'\] must have shape"):
        generated.vjp(x, params, upstream, {"c": initial["c"][:1]})


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", ("rnn", "lstm", "skip:2"), ids=("rnn", "lstm", "skip2"))
def test_initial_states_in_states_and_loss_and_grad(cell, mode, backend):
    """``initial=`` on states, forward, loss and loss_and_grad: the states and the gradient of the mean
    binary cross-entropy of σ(readout · s_n) equal torch's from the cell's equations started there (the
    Numba module's compiled default path is compared at zero initial states)."""
    generated = _module(cell, mode, backend)
    params, x, _, initial = _case(generated, seed=2)
    y = np.array([0.0, 1.0])
    spec = cell_of(model(cell))
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    xs = torch.tensor(x)
    trace: list = []
    starts = {state: torch.tensor(value) for state, value in initial.items()}
    reference(cell, FUNCTIONS, lambda u, m: u @ m.T)(tensors, xs.transpose(0, 1), starts, trace)
    states = generated.states(x, params, initial=initial)
    for state in generated.STATES:
        expected = torch.stack([step[state] for step in trace], dim=1).detach().numpy()
        assert _close(states[state], expected) < TOLERANCE, state
    logit = trace[-1][spec.output_state] @ tensors[spec.readout]
    if spec.readout_bias:
        logit = logit + tensors[spec.readout_bias]
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.from_numpy(y))
    expected_grads = dict(zip(tensors, torch.autograd.grad(expected_loss, list(tensors.values()), allow_unused=True)))
    value, grads = generated.loss_and_grad(x, y, params, initial=initial)
    assert abs(value - expected_loss.item()) < TOLERANCE
    assert abs(generated.loss(x, y, params, initial=initial) - expected_loss.item()) < TOLERANCE
    assert _close(generated.forward(x, params, initial=initial), torch.sigmoid(logit).detach().numpy()) < TOLERANCE
    for name, expected in expected_grads.items():
        expected = np.zeros(generated.PARAMS[name]) if expected is None else expected.numpy()
        assert _close(grads[name], expected) < TOLERANCE, name
    # zero initial states are the default's
    zeros = {state: np.zeros((B, H)) for state in generated.STATES}
    value, grads = generated.loss_and_grad(x, y, params, initial=zeros)
    default_value, default_grads = generated.loss_and_grad(x, y, params)
    assert abs(value - default_value) < TOLERANCE
    assert all(_close(grads[name], default_grads[name]) < TOLERANCE for name in grads)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
@pytest.mark.parametrize("mode", MODES)
def test_many_to_many_module_has_vjp_and_initial(mode, backend):
    """A module with a readout after every step: the same vjp (the readout is no parameter of it), and
    loss_and_grad from zero initial states is the default's."""
    from symbolic.model import Model
    from symbolic.outputs import Outputs

    generated = load(Model(steps=N, hidden=H, inputs=D, cell="gru",
                           outputs=Outputs(readout="every", loss="softmax", classes=3)), mode=mode, backend=backend)
    params, x, upstream, initial = _case(generated, seed=3)
    names = _cell_parameters("gru", generated)
    grads, dx, dinitial = generated.vjp(x, params, upstream, initial)
    expected, expected_dx, expected_initial = _torch_vjp("gru", names, params, x, upstream, initial)
    assert all(_close(grads[name], expected[name]) < TOLERANCE for name in names)
    assert _close(dx, expected_dx) < TOLERANCE and _close(dinitial["h"], expected_initial["h"]) < TOLERANCE
    y = np.array([[0, 1, 2, 1], [2, 2, 0, 1]])
    mask = np.array([[1, 1, 0, 1], [1, 0, 1, 1]])
    zeros = {"h": np.zeros((B, H))}
    value, grads = generated.loss_and_grad(x, y, params, mask=mask, initial=zeros)
    default_value, default_grads = generated.loss_and_grad(x, y, params, mask=mask)
    assert abs(value - default_value) < TOLERANCE
    assert all(_close(grads[name], default_grads[name]) < TOLERANCE for name in default_grads)


# -- bptt check compares vjp with finite differences -----------------------------------------------------


def _tampered(generated, vjp):
    """A copy of ``generated`` whose vjp is ``vjp(original)``."""
    copy = types.ModuleType(f"{generated.__name__}_tampered")
    copy.__dict__.update(generated.__dict__)
    copy.vjp = vjp(generated.vjp)
    return copy


@pytest.fixture(scope="module")
def checked():
    from symbolic.verify.check import check_module

    return check_module


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
@pytest.mark.parametrize("cell", ("gru", "skip:2"), ids=("gru", "skip2"))
def test_check_compares_vjp(checked, cell, backend):
    generated = _module(cell, "loop", backend)
    report = checked(generated, "<generated>")
    assert report.passed, report.problems
    names = _cell_parameters(cell, generated)
    assert set(report.vjp) == {*names, "x", *(f"s_0 of {state}" for state in generated.STATES)}
    assert max(report.vjp.values()) < 1e-8


def _wrong_dx(vjp):
    @functools.wraps(vjp)
    def wrong(*args, **kwargs):
        grads, dx, dinitial = vjp(*args, **kwargs)
        dx = dx.copy()
        dx[0, -1, 0] += 0.1
        return grads, dx, dinitial
    return wrong


def _wrong_initial(vjp):
    @functools.wraps(vjp)
    def wrong(*args, **kwargs):
        grads, dx, dinitial = vjp(*args, **kwargs)
        return grads, dx, {state: 0.5 * value for state, value in dinitial.items()}
    return wrong


def _missing_parameter(vjp):
    @functools.wraps(vjp)
    def wrong(*args, **kwargs):
        grads, dx, dinitial = vjp(*args, **kwargs)
        return {name: value for name, value in grads.items() if name != "U_z"}, dx, dinitial
    return wrong


@pytest.mark.parametrize(("tamper", "wrong"), [
    (_wrong_dx, "x"),
    (_wrong_initial, "s_0 of h"),
    (_missing_parameter, None),
], ids=("dx", "dinitial", "missing"))
def test_check_fails_a_wrong_vjp(checked, tamper, wrong):
    """Negative controls: a vjp whose dx, dinitial or parameter set is wrong fails bptt check, named."""
    from symbolic.verify.check_report import VJP_TOLERANCE, format_report

    report = checked(_tampered(_module("gru", "loop"), tamper), "<tampered>")
    assert not report.passed
    if wrong is None:
        assert report.problems == ["vjp: grads has no U_z, which moves the states"]
    else:
        assert report.vjp[wrong] > VJP_TOLERANCE
        assert all(error <= VJP_TOLERANCE for what, error in report.vjp.items() if what != wrong)
        assert f"FAIL vjp: {wrong} beyond tolerance" in format_report(report)


@pytest.mark.slow
def test_bptt_check_command_fails_a_module_with_a_wrong_dx(tmp_path):
    """End to end: a generated file whose vjp scales dx by 1.01 fails ``bptt check`` (exit 1), naming x."""
    import subprocess
    import sys

    path = tmp_path / "gru.py"
    command = [sys.executable, "-m", "symbolic", "codegen", "--cell", "gru", "--mode", "loop", "--hidden", "3",
               "-o", str(path)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    source = path.read_text()
    line = "dx = (delta_maps_x @ weights_x).transpose(1, 0, 2)"
    assert source.count(line) == 1
    path.write_text(source.replace(line, "dx = 1.01 * (delta_maps_x @ weights_x).transpose(1, 0, 2)"))
    result = subprocess.run([sys.executable, "-m", "symbolic", "check", str(path)], check=False,
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL vjp: x beyond tolerance" in result.stdout
    path.write_text(source)
    result = subprocess.run([sys.executable, "-m", "symbolic", "check", str(path)], check=False,
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vjp" in result.stdout
