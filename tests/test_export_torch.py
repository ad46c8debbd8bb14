"""``bptt codegen --target torch`` (issue 27): the generated autograd.Function against torch's own gradient
checker and against torch's autograd of the cell's own equations (tests/export_cases.py), for every cell."""

from __future__ import annotations

import os

import pytest

from .export_cases import CELLS, IDS, LAGGED, LAGGED_IDS, LAGGED_STEPS, B, D, H, N, module, reference

if os.environ.get("CI"):
    import torch  # CI installs the extra: a missing PyTorch fails there instead of skipping
else:
    torch = pytest.importorskip("torch")

FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "exp": torch.exp}


def _case(cell: str, dtype=torch.float64, seed: int = 0, activation: str = "tanh", steps: int = N):
    """The module, parameters, x (B, n, D) and initial states, all requiring gradients."""
    generated = module(cell, "torch", activation=activation)
    generator = torch.Generator().manual_seed(seed)
    layer = generated.Layer(D, H).to(dtype)
    with torch.no_grad():
        for name in generated.PARAMS:
            getattr(layer, name).copy_(0.6 * torch.randn(getattr(layer, name).shape, generator=generator))
    x = torch.randn(B, steps, D, generator=generator, dtype=dtype).requires_grad_()
    initial = {s: (0.5 * torch.randn(B, H, generator=generator, dtype=dtype)).requires_grad_()
               for s in generated.STATES}
    return generated, layer, x, initial


def _reference(cell: str, layer, x, initial, activation: str = "tanh"):
    params = {name: getattr(layer, name) for name in module(cell, "torch", activation=activation).PARAMS}
    run = reference(cell, FUNCTIONS, lambda u, m: u @ m.T, activation)
    output, final = run(params, x.transpose(0, 1), initial)
    return torch.stack(output).transpose(0, 1), final


def _gradients(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


def _loss(output, final, weights):
    """A loss reading the output at every step and every final state, with fixed random weights."""
    total = (output * weights["output"]).sum()
    return total + sum((final[s] * weights[s]).sum() for s in final)


def _weights(generated, dtype, seed=1, steps=N):
    generator = torch.Generator().manual_seed(seed)
    weights = {"output": torch.randn(B, steps, H, generator=generator, dtype=dtype)}
    return weights | {s: torch.randn(B, H, generator=generator, dtype=dtype) for s in generated.STATES}


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_gradcheck(cell, steps=N):
    generated, layer, x, initial = _case(cell, steps=steps)
    params = [getattr(layer, name) for name in generated.PARAMS]
    states = len(generated.STATES)

    def run(x, *rest):
        return generated.Recurrence.apply(x.transpose(0, 1), *rest[:states], *rest[states:])

    assert torch.autograd.gradcheck(run, (x, *initial.values(), *params))


def _compare(cell, dtype, tolerance, loss_of=_loss, activation="tanh", steps=N):
    generated, layer, x, initial = _case(cell, dtype, activation=activation, steps=steps)
    tensors = [x, *initial.values(), *layer.parameters()]
    weights = _weights(generated, dtype, steps=steps)
    ours = _gradients(loss_of(*layer(x, initial), weights), tensors)
    # the oracle in float64 whatever the dtype under test
    wide = generated.Layer(D, H).double()
    wide.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    wide_x = x.detach().double().requires_grad_()
    wide_initial = {s: v.detach().double().requires_grad_() for s, v in initial.items()}
    wide_tensors = [wide_x, *wide_initial.values(), *wide.parameters()]
    expected = _gradients(loss_of(*_reference(cell, wide, wide_x, wide_initial, activation),
                                  {k: v.double() for k, v in weights.items()}), wide_tensors)
    for got, want in zip(ours, expected):
        if want is None:
            assert got is None or float(got.abs().max()) == 0
            continue
        scale = max(1.0, float(want.abs().max()))
        assert float((got.double() - want).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_equals_torch_autograd_of_the_equations(cell):
    _compare(cell, torch.float64, 1e-10)


@pytest.mark.parametrize("steps", LAGGED_STEPS)
@pytest.mark.parametrize("cell", LAGGED, ids=LAGGED_IDS)
def test_lagged_cells_pass_gradcheck(cell, steps):
    """s_(t−K) of a window, δ sent K steps back through a ring: n > K and n ≤ K (only s_0 and zeros read)."""
    test_gradcheck(cell, steps)


@pytest.mark.parametrize("steps", LAGGED_STEPS)
@pytest.mark.parametrize("cell", LAGGED, ids=LAGGED_IDS)
def test_lagged_cells_equal_torch_autograd_of_the_equations(cell, steps):
    _compare(cell, torch.float64, 1e-10, steps=steps)


def test_lagged_float32_within_its_reach():
    _compare(LAGGED[-1], torch.float32, 1e-5, steps=LAGGED_STEPS[-1])


def test_negative_control_a_lagged_cell_without_its_skip_gradient_is_caught():
    """The module printed from a derivation that sends nothing K steps back fails gradcheck."""
    generated = module("skip:3", "torch", "no_lag_path")
    _, layer, x, initial = _case("skip:3", steps=6)
    params = [getattr(layer, name) for name in generated.PARAMS]

    def run(x, *rest):
        return generated.Recurrence.apply(x.transpose(0, 1), *rest[:1], *rest[1:])

    assert not torch.autograd.gradcheck(run, (x, *initial.values(), *params), raise_exception=False)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "identity"])
def test_every_activation_of_the_rnn(activation):
    _compare("rnn", torch.float64, 1e-10, activation=activation)


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_float32_within_its_reach(cell):
    _compare(cell, torch.float32, 1e-5)


@pytest.mark.parametrize("read", ["output", "final"])
def test_a_gradient_arriving_as_none(read):
    """A loss of the output alone (every final state's gradient None) or of the final states alone."""
    def partial_loss(output, final, weights):
        if read == "output":
            return (output * weights["output"]).sum()
        return sum((final[s] * weights[s]).sum() for s in final)

    _compare("lstm", torch.float64, 1e-10, partial_loss)


def test_negative_control_a_truncated_derivation_is_caught():
    """The module printed from a wrong derivation (nothing sent back to s_(t−1)) fails gradcheck."""
    generated = module("gru", "torch", "truncated")
    _, layer, x, initial = _case("gru")
    params = [getattr(layer, name) for name in generated.PARAMS]

    def run(x, *rest):
        return generated.Recurrence.apply(x.transpose(0, 1), *rest[:1], *rest[1:])

    assert not torch.autograd.gradcheck(run, (x, *initial.values(), *params), raise_exception=False)


@pytest.mark.parametrize("cell, gates", [("gru", "rzn"), ("lstm", "ifgo")])
def test_equals_torch_nn(cell, gates):
    """The generated Layer with nn.GRU's / nn.LSTM's weights: the same output and gradients."""
    generated, layer, x, _ = _case(cell)
    native = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(D, H, batch_first=True).double()
    with torch.no_grad():
        native.weight_ih_l0.copy_(torch.cat([getattr(layer, f"W_{g}") for g in gates]))
        native.weight_hh_l0.copy_(torch.cat([getattr(layer, f"U_{g}") for g in gates]))
        zeros = torch.zeros(H, dtype=torch.float64)
        biases = ["b_r", "b_z", "b_in"] if cell == "gru" else [f"b_{g}" for g in gates]
        native.bias_ih_l0.copy_(torch.cat([getattr(layer, b) for b in biases]))
        native.bias_hh_l0.copy_(torch.cat([zeros, zeros, layer.b_hn] if cell == "gru" else [zeros] * 4))
    ours, _ = layer(x)
    theirs, _ = native(x)
    assert float((ours - theirs).detach().abs().max()) < 1e-12
    weights = _weights(generated, torch.float64)["output"]
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    got = torch.cat([getattr(layer, f"W_{g}").grad for g in gates])
    assert float((got - native.weight_ih_l0.grad).abs().max()) < 1e-10


def test_layer_is_an_nn_module_with_the_cells_parameter_names():
    from symbolic.codegen import load

    from .export_cases import model

    generated = module("lstm", "torch")
    numpy_params = load(model("lstm"), mode="loop").PARAMS
    layer = generated.Layer(D, H, batch_first=False)
    assert [name for name, _ in layer.named_parameters()] == [n for n in numpy_params if n != "w_y"]
    output, final = layer(torch.randn(N, B, D))
    assert output.shape == (N, B, H) and set(final) == {"h", "c"} and final["c"].shape == (B, H)


@pytest.mark.slow   # a fresh process importing torch, 60 updates: about 10 s
def test_the_readmes_training_loop_runs_and_learns(tmp_path):
    """README's "Try next" row 12 and its five-line loop, as written, on a task a GRU learns in a few steps."""
    import re
    import subprocess
    import sys

    from .conftest import ROOT, run_bptt

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"`bptt (codegen --cell gru --target torch -o gru_torch.py)`", readme).group(1)
    assert run_bptt(*command.split(), cwd=tmp_path).returncode == 0
    loop = readme.split("Row 12 writes")[1].split("```python\n")[1].split("```")[0]
    assert len(loop.strip().splitlines()) == 6   # the import, then the five lines of the loop
    program = (
        "import torch\ntorch.manual_seed(0)\n"
        "x = torch.randn(64, 6, 3); y = (x[:, 0, 0] > 0).float()\n"
        "batches = [(x, y)] * 60\n" + loop +
        "print(float(torch.nn.functional.binary_cross_entropy_with_logits(head(layer(x)[0][:, -1])[:, 0], y)))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) < 0.4   # from log 2 = 0.69: it learnt the first input's sign
