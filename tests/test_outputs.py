"""A loss at every step (many-to-many), softmax/mse/bce, both reductions and a mask: the engine's
recursion (``engine.evaluate``) and the generated NumPy modules against torch autograd in float64.

The reference is independent of the engine: ``torch.nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (or the MGU's
equations written by hand in torch) with a readout applied to every step's state and torch's own
``CrossEntropyLoss`` / ``MSELoss`` / ``BCEWithLogitsLoss`` (reduction "sum" divided by B for the
batch mean of the sum over steps, "mean" for the mean over every step; a mask by dropping the masked
rows, as torch's ``ignore_index`` does).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from symbolic.cells import cell_of
from symbolic.engine.derivation import derive_cell
from symbolic.engine.evaluate import evaluate
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.outputs import Outputs

torch = pytest.importorskip("torch")

TOLERANCE = 1e-10
MGU = os.path.join(os.path.dirname(__file__), "..", "docs", "cells", "mgu.py")
CELLS = ["rnn", "lstm", "gru", MGU]
GATES = {"lstm": "ifgo", "gru": "rzn"}


def _torch_states(cell: str, x, p):
    """(B, n, H) states of the cell in torch, from torch's own layers (the MGU by hand)."""
    t = {name: torch.tensor(value, requires_grad=True) for name, value in p.items()}
    xs = torch.from_numpy(x)
    batch, steps, inputs = x.shape
    if cell == "rnn":
        hidden = p["w_h"].shape[0]
        layer = torch.nn.RNN(inputs, hidden, bias=False, batch_first=True).double()
        layer.weight_ih_l0 = torch.nn.Parameter(t["w_i"])
        layer.weight_hh_l0 = torch.nn.Parameter(t["w_h"])
        return layer(xs)[0], t, {"w_i": layer.weight_ih_l0, "w_h": layer.weight_hh_l0}
    if cell in GATES:
        gates = GATES[cell]
        hidden = p[f"U_{gates[0]}"].shape[0]
        layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(inputs, hidden, batch_first=True).double()
        with torch.no_grad():
            layer.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([p[f"W_{g}"] for g in gates])))
            layer.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([p[f"U_{g}"] for g in gates])))
            names = ["b_i", "b_f", "b_g", "b_o"] if cell == "lstm" else ["b_r", "b_z", "b_in"]
            layer.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([p[n] for n in names])))
            hh = [np.zeros(hidden)] * 4 if cell == "lstm" else [np.zeros(hidden), np.zeros(hidden), p["b_hn"]]
            layer.bias_hh_l0.copy_(torch.from_numpy(np.concatenate(hh)))
        split = {}
        for family, weight in (("W", layer.weight_ih_l0), ("U", layer.weight_hh_l0)):
            split |= {f"{family}_{g}": (weight, k, len(gates)) for k, g in enumerate(gates)}
        for k, name in enumerate(names):
            split[name] = (layer.bias_ih_l0, k, len(gates))
        if cell == "gru":
            split["b_hn"] = (layer.bias_hh_l0, 2, 3)
        return layer(xs)[0], t, split
    h = torch.zeros(batch, p["U_f"].shape[0], dtype=torch.float64)
    out = []
    for step in range(steps):
        f = torch.sigmoid(xs[:, step] @ t["W_f"].T + h @ t["U_f"].T + t["b_f"])
        n = torch.tanh(xs[:, step] @ t["W_n"].T + (f * h) @ t["U_n"].T + t["b_n"])
        h = (1 - f) * h + f * n
        out.append(h)
    return torch.stack(out, 1), t, {}


def torch_reference(cell, outputs: Outputs, x, y, p, mask=None):
    """Loss and gradients by torch autograd (readout at every step, torch's losses)."""
    states, t, split = _torch_states(cell, x, p)
    readout = "w_o" if cell == "rnn" else "w_y"
    w = t[readout]
    keep = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else torch.from_numpy(mask.astype(bool))
    if outputs.readout == "last":
        states, keep = states[:, -1:], keep[:, -1:]
    rows = states[keep]
    targets = torch.from_numpy(np.asarray(y)).reshape(x.shape[0], -1)[keep]
    if outputs.loss == "softmax":
        loss = torch.nn.CrossEntropyLoss(reduction="sum")(rows @ w.T, targets.long())
    elif outputs.loss == "mse":
        loss = torch.nn.MSELoss(reduction="sum")(rows @ w, targets.double())
    else:
        loss = torch.nn.BCEWithLogitsLoss(reduction="sum")(rows @ w, targets.double())
    loss = loss / (rows.shape[0] if outputs.reduction == "all" else x.shape[0])
    loss.backward()
    grads = {name: value.grad.numpy() for name, value in t.items() if value.grad is not None}
    for name, layer_param in split.items():
        if isinstance(layer_param, tuple):
            weight, k, count = layer_param
            grads[name] = np.split(weight.grad.numpy(), count)[k]
        else:
            grads[name] = layer_param.grad.numpy()
    return loss.item(), grads


def point(d, outputs: Outputs, hidden=3, inputs=2, steps=5, batch=4, seed=0, masked=False):
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(0, 0.6, shape) for name, shape in d.shapes(hidden, inputs).items()}
    x = rng.normal(size=(batch, steps, inputs))
    shape = (batch, steps) if outputs.every else (batch,)
    if outputs.loss == "softmax":
        y = rng.integers(0, outputs.classes, shape)
    elif outputs.loss == "bce":
        y = rng.integers(0, 2, shape).astype(float)
    else:
        y = rng.normal(size=shape)
    mask = None
    if masked:
        mask = (rng.random((batch, steps)) < 0.7).astype(float)
        mask[0, :] = 1.0
    return params, x, y, mask


def relative(ours, want) -> float:
    ours, want = np.asarray(ours, float), np.asarray(want, float)
    return float(np.max(np.abs(ours - want)) / max(1.0, float(np.max(np.abs(want)))))


SETTINGS = [Outputs("every", "softmax", 3), Outputs("every", "mse"), Outputs("every", "bce"),
            Outputs("every", "softmax", 3, "all"), Outputs("every", "mse", reduction="all"),
            Outputs("last", "softmax", 4), Outputs("last", "mse")]


#: A mask is of a readout after every step: masked cases of the others are not drawn.
MASKED_SETTINGS = [(outputs, masked) for masked in (False, True) for outputs in SETTINGS if outputs.every or not masked]


@pytest.mark.parametrize(("outputs", "masked"), MASKED_SETTINGS,
                         ids=[o.flags.replace("--", "").replace(" ", "-") + ("-masked" if m else "")
                              for o, m in MASKED_SETTINGS])
@pytest.mark.parametrize("cell", CELLS, ids=os.path.basename)
def test_engine_equals_torch(cell, outputs, masked):
    model = Model(cell=cell, hidden=3, inputs=2, steps=5, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=model.outputs)
    params, x, y, mask = point(d, outputs, masked=masked)
    ours = evaluate(d, params, x, y, mask=mask)
    loss, grads = torch_reference(cell, outputs, x, y, params, mask)
    assert relative(ours.loss, loss) < TOLERANCE
    assert set(grads) == set(ours.gradients)
    for name, want in grads.items():
        assert relative(ours.gradients[name], want) < TOLERANCE, name


def test_wrong_recursion_is_caught():
    """Negative control: the readout's error at every step but the last dropped is visibly wrong."""
    outputs = Outputs("every", "softmax", 3)
    d = derive_cell(cell_of(Model(cell="lstm", outputs=outputs)), outputs=Outputs("last", "softmax", 3))
    params, x, y, _ = point(d, outputs)
    ours = evaluate(d, params, x, y[:, -1])
    _, grads = torch_reference("lstm", outputs, x, y, params)
    assert relative(ours.gradients["U_f"], grads["U_f"]) > 1e-3


@pytest.mark.parametrize("kwargs", [{"readout": "sometimes"}, {"loss": "hinge"}, {"loss": "softmax", "classes": 1},
                                    {"loss": "mse", "classes": 3}, {"reduction": "all"},
                                    {"loss": "softmax", "classes": "many"}])
def test_bad_outputs(kwargs):
    with pytest.raises(UsageError):
        Outputs(**kwargs)


# -- the generated NumPy modules --------------------------------------------------------------------------

MODULE_SETTINGS = [Outputs("every", "softmax", 3), Outputs("every", "mse"), Outputs("every", "bce", reduction="all"),
                   Outputs("every", "softmax", 3, "all"), Outputs("last", "softmax", 3), Outputs("last", "mse")]


def _module(cell, outputs, mode, steps=5, hidden=3, inputs=2, bias=False):
    from symbolic.codegen import load

    return load(Model(cell=cell, hidden=hidden, inputs=inputs, steps=steps, outputs=outputs, bias=bias), mode)


@pytest.mark.parametrize("outputs", MODULE_SETTINGS, ids=lambda o: o.flags.replace("--", "").replace(" ", "-"))
@pytest.mark.parametrize("cell", CELLS, ids=os.path.basename)
@pytest.mark.parametrize("mode", ["loop", "unrolled"])
def test_module_equals_torch(cell, outputs, mode):
    module = _module(cell, outputs, mode)
    d = derive_cell(cell_of(Model(cell=cell, outputs=outputs)), outputs=outputs)
    for masked in ([False, True] if outputs.every else [False]):
        params, x, y, mask = point(d, outputs, masked=masked, seed=3)
        loss, grads = module.loss_and_grad(x, y, params, mask=mask)
        want_loss, want = torch_reference(cell, outputs, x, y, params, mask)
        assert relative(loss, want_loss) < TOLERANCE
        assert relative(module.loss(x, y, params, mask=mask), want_loss) < TOLERANCE
        for name, value in want.items():
            assert relative(grads[name], value) < TOLERANCE, name


def test_module_with_biases_and_wide_batches_equals_torch():
    """The rnn with --bias (its readout bias (K,)) and a batch wide enough for the per-step gradients."""
    outputs = Outputs("every", "softmax", 4)
    module = _module("rnn", outputs, "loop", hidden=16, bias=True)
    d = derive_cell(cell_of(Model(cell="rnn", outputs=outputs, bias=True)), outputs=outputs)
    params, x, y, mask = point(d, outputs, hidden=16, batch=300, masked=True)
    loss, grads = module.loss_and_grad(x, y, params, mask=mask)
    ours = evaluate(d, params, x, y, mask=mask)
    assert relative(loss, ours.loss) < TOLERANCE
    for name, value in ours.gradients.items():
        assert relative(grads[name], value) < TOLERANCE, name
    assert grads["b_o"].shape == (4,) and grads["w_o"].shape == (4, 16)


@pytest.mark.parametrize("mutate, phrase", [
    (lambda y, m: y[:, :-1], "shape"),
    (lambda y, m: y + 3, "class indices"),
    (lambda y, m: y - 1, "class indices"),
    (lambda y, m: y.astype(float), "integers"),
])
def test_module_refuses_bad_labels(mutate, phrase):
    outputs = Outputs("every", "softmax", 3)
    module = _module("gru", outputs, "loop")
    d = derive_cell(cell_of(Model(cell="gru", outputs=outputs)), outputs=outputs)
    params, x, y, mask = point(d, outputs)
    y[0, 0] = 2
    with pytest.raises(ValueError, match=phrase):
        module.loss_and_grad(x, mutate(y, mask), params)


@pytest.mark.parametrize("mask, phrase", [(np.ones((4, 4)), "shape"), (np.full((4, 5), 0.5), "only 0 and 1"),
                                          (np.zeros((4, 5)), None)])
def test_module_refuses_bad_masks(mask, phrase):
    outputs = Outputs("every", "mse", reduction="all")
    module = _module("rnn", outputs, "loop")
    d = derive_cell(cell_of(Model(cell="rnn", outputs=outputs)), outputs=outputs)
    params, x, y, _ = point(d, outputs)
    with pytest.raises(ValueError, match=phrase or "no step"):
        module.loss_and_grad(x, y, params, mask=mask)


# -- bptt check, and the command line ----------------------------------------------------------------------

CHECKED = [("lstm", Outputs("every", "softmax", 3)), ("gru", Outputs("every", "mse", reduction="all")),
           (MGU, Outputs("every", "bce")), ("rnn", Outputs("last", "softmax", 4))]


@pytest.mark.slow
@pytest.mark.parametrize("cell, outputs", CHECKED, ids=lambda v: os.path.basename(v) if isinstance(v, str) else v.loss)
def test_check_passes_generated_and_fails_tampered(cell, outputs, tmp_path, capsys):
    """check reads READOUT/LOSS/CLASSES and feeds y of that shape; a module whose per-step error is
    scaled by 0.9 (the loss terms of every step) fails."""
    from symbolic.codegen import generate
    from symbolic.verify.check import run_check

    source = generate(Model(cell=cell, hidden=2, outputs=outputs), "loop")
    good = tmp_path / "good.py"
    good.write_text(source)
    assert run_check(good) == 0, capsys.readouterr().out
    line = next(line for line in source.splitlines() if "+ residual[t - 1]" in line)
    bad = tmp_path / "bad.py"
    bad.write_text(source.replace(line, line.replace("+ residual[t - 1]", "+ 0.9 * residual[t - 1]")))
    assert run_check(bad) == 1


@pytest.mark.parametrize("args, phrase", [
    (["--readout", "every", "--loss", "mse", "--classes", "3"], "--classes"),
    (["--reduction", "all"], "--readout every"),
    (["--loss", "softmax", "--classes", "1"], "K >= 2"),
    (["--readout", "every", "--loss", "softmax", "--classes", "x"], "--classes"),
])
def test_bad_options_are_one_line(args, phrase):
    from .conftest import run_bptt

    result = run_bptt("codegen", "--cell", "gru", *args)
    assert result.returncode == 2 and phrase in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- bptt train with a loss at every step -----------------------------------------------------------------

def test_train_learns_the_copy_task():
    """The label at step t is the symbol of step t − 1: a cell without memory is at chance (1/3)."""
    from .conftest import run_bptt

    result = run_bptt("train", "--cell", "gru", "--readout", "every", "--loss", "softmax", "--classes", "3")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("held-out accuracy (unmasked steps):")[1].split()[0])
    assert accuracy > 0.9


def test_train_a_character_model(tmp_path):
    from .conftest import ROOT, run_bptt

    result = run_bptt("train", "--data", "text", str(ROOT / "docs" / "data" / "bptt.txt"), "--sample", "30",
                      "--epochs", "10", "--json")
    assert result.returncode == 0, result.stderr
    import json

    run = json.loads(result.stdout)
    assert run["bits_per_character"] < np.log2(30)   # better than uniform over its 30 characters
    assert len(run["sample"]) == 31


@pytest.mark.parametrize("content, phrase", [(b"", "empty"), (b"\x00\x01binary\x00", "binary"),
                                             (b"\xff\xfe\xfa not utf8 at all, really", "UTF-8"), (b"short", "too few")])
def test_train_refuses_bad_text(tmp_path, content, phrase):
    from .conftest import run_bptt

    path = tmp_path / "t.txt"
    path.write_bytes(content)
    result = run_bptt("train", "--data", "text", str(path))
    assert result.returncode == 2 and phrase in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- the Numba modules ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cell, outputs", [("lstm", Outputs("every", "softmax", 3)),
                                           ("rnn", Outputs("every", "mse", reduction="all")),
                                           ("gru", Outputs("last", "softmax", 3))],
                         ids=lambda v: os.path.basename(v) if isinstance(v, str) else v.loss)
def test_numba_module_equals_torch(cell, outputs):
    """Both compiled paths (the serial kernels for a small batch, the BLAS drivers for a wide one)."""
    pytest.importorskip("numba")
    from symbolic.codegen import load

    module = load(Model(cell=cell, hidden=3, inputs=2, steps=5, outputs=outputs), "loop", backend="numba")
    d = derive_cell(cell_of(Model(cell=cell, outputs=outputs)), outputs=outputs)
    for batch in (4, 1500):
        params, x, y, mask = point(d, outputs, batch=batch, masked=outputs.every, seed=batch)
        loss, grads = module.loss_and_grad(x, y, params, mask=mask)
        want_loss, want = torch_reference(cell, outputs, x, y, params, mask)
        assert relative(loss, want_loss) < TOLERANCE
        for name, value in want.items():
            assert relative(grads[name], value) < TOLERANCE, name


# -- the backward entry point: vjp (the engine's reference) ----------------------------------------------------

def _torch_vjp(cell: str, x, p, upstream, initial):
    """grads, dx, dinitial by torch.autograd.grad of Σ_t ⟨upstream_t, s_t⟩ (torch's layers; the MGU by hand)."""
    t = {name: torch.tensor(value, requires_grad=True) for name, value in p.items()}
    xs = torch.tensor(x, requires_grad=True)
    init = {name: torch.tensor(value, requires_grad=True) for name, value in initial.items()}
    if cell in GATES:   # torch's own layer, called with our tensors (torch.func.functional_call)
        gates = GATES[cell]
        hidden = p[f"U_{gates[0]}"].shape[0]
        layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(x.shape[2], hidden, batch_first=True).double()
        zero = torch.zeros(hidden, dtype=torch.float64)
        names = ["b_i", "b_f", "b_g", "b_o"] if cell == "lstm" else ["b_r", "b_z", "b_in"]
        weights = {"weight_ih_l0": torch.cat([t[f"W_{g}"] for g in gates]),
                   "weight_hh_l0": torch.cat([t[f"U_{g}"] for g in gates]),
                   "bias_ih_l0": torch.cat([t[n] for n in names]),
                   "bias_hh_l0": torch.cat([zero] * 4 if cell == "lstm" else [zero, zero, t["b_hn"]])}
        start = (init["h"][None], init["c"][None]) if cell == "lstm" else init["h"][None]
        out, _ = torch.func.functional_call(layer, weights, (xs, start))
        outputs = {"h": out}
    else:   # the MGU by hand
        h, hs = init["h"], []
        for step in range(x.shape[1]):
            f = torch.sigmoid(xs[:, step] @ t["W_f"].T + h @ t["U_f"].T + t["b_f"])
            n = torch.tanh(xs[:, step] @ t["W_n"].T + (f * h) @ t["U_n"].T + t["b_n"])
            h = (1 - f) * h + f * n
            hs.append(h)
        outputs = {"h": torch.stack(hs, 1)}
    total = sum((outputs[s] * torch.from_numpy(u)).sum() for s, u in upstream.items())
    names = [n for n in t if n != "w_y"]
    found = torch.autograd.grad(total, [t[n] for n in names] + [xs] + [init[s] for s in initial])
    grads = {n: g.numpy() for n, g in zip(names, found)}
    return grads, found[len(names)].numpy(), {s: g.numpy() for s, g in zip(initial, found[len(names) + 1:])}


@pytest.mark.parametrize("cell", ["gru", "lstm", MGU], ids=os.path.basename)
def test_engine_vjp_equals_torch_autograd(cell):
    from symbolic.engine.evaluate import vjp

    d = derive_cell(cell_of(Model(cell=cell)))
    rng = np.random.default_rng(5)
    params, x, _, _ = point(d, Outputs(), hidden=3, inputs=2, steps=6, batch=4)
    upstream = {"h": rng.normal(size=(4, 6, 3))}
    initial = {state: rng.normal(size=(4, 3)) for state in d.states}
    grads, dx, dinitial = vjp(d, params, x, upstream, initial)
    want, want_dx, want_initial = _torch_vjp(cell, x, params, upstream, initial)
    assert relative(dx, want_dx) < TOLERANCE
    for state in d.states:
        assert relative(dinitial[state], want_initial[state]) < TOLERANCE, state
    for name, value in want.items():
        assert relative(grads[name], value) < TOLERANCE, name
    # negative control: the initial state matters (the same call from zero states differs)
    assert relative(vjp(d, params, x, upstream)[0]["U_f" if "U_f" in grads else "U_z"],
                    want["U_f" if "U_f" in want else "U_z"]) > 1e-6


@pytest.mark.parametrize("constants, phrase", [({"READOUT": "sometimes"}, "READOUT"),
                                               ({"LOSS": "softmax", "CLASSES": 1}, "CLASSES")])
def test_check_refuses_a_module_whose_output_constants_are_wrong(tmp_path, constants, phrase):
    from symbolic.codegen import generate
    from symbolic.verify.check import run_check

    source = generate(Model(cell="gru", hidden=2, outputs=Outputs("every", "mse")), "loop")
    source += "".join(f"\n{name} = {value!r}\n" for name, value in constants.items())
    path = tmp_path / "m.py"
    path.write_text(source)
    with pytest.raises(UsageError, match=phrase):
        run_check(path)


@pytest.mark.parametrize("cell, outputs", [("gru", Outputs("every", "bce")), ("lstm", Outputs("every", "softmax", 3, "all")),
                                           (MGU, Outputs("last", "mse"))],
                         ids=lambda v: os.path.basename(v) if isinstance(v, str) else v.loss)
def test_the_document_compiles_and_shows_both_terms(cell, outputs, tmp_path):
    """The δ of the output state receives from the loss at step t and from step t + 1 (every step), and
    the LaTeX compiles (its prose is pdflatex's: no raw σ)."""
    import shutil
    import subprocess

    from symbolic.typeset.cells import document

    model = Model(cell=cell, hidden=2, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    tex = document(model, d, "tex")
    assert ("from the loss at step } t" in tex) == outputs.every
    assert "from step } t+1" in tex or not outputs.every
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    (tmp_path / "d.tex").write_text(tex)
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "d.tex"], cwd=tmp_path, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
