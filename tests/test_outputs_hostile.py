"""Hostile inputs to the output side (issue 25): users' cells whose names meet the output side's and the
vjp's own locals, labels and masks a module must refuse, all-masked reductions, text files for the
character model, and the command line's contradictions. The references are independent of the code
under test: torch autograd of the cells' equations written by hand, and the engine's float64
recursion where torch is not needed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from symbolic.cells import cell_of
from symbolic.engine.derivation import derive_cell
from symbolic.engine.evaluate import evaluate
from symbolic.engine.evaluate import vjp as engine_vjp
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.outputs import Outputs

from .conftest import ROOT, identifiers, run_bptt

torch = pytest.importorskip("torch")

DUO = str(ROOT / "tests" / "cells" / "duo_lag.py")

# -- a user's cell may not take a name the output side or the vjp reads after unpacking the parameters ------

#: A cell with two states whose vector takes the name under test ({0}); h reads it, c does not.
_NAMED = '''
from symbolic.cells.spec import Cell, sigmoid, tanh
cell = Cell("named", readout="w_y")
x, h, c = cell.input(), cell.state("h"), cell.state("c")
W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")
v = cell.vector("{0}")
g = cell.let("g", sigmoid(W @ x + v))
c_t = cell.update(c, g * c + (1 - g) * tanh(U @ h))
cell.update(h, tanh(c_t) * v)
CELL = cell
'''


@pytest.mark.parametrize("name", ["errors", "start", "upstream_h", "upstream_c"])
def test_names_the_output_side_and_vjp_read_are_refused(tmp_path, name):
    """Before: a vector named ``start`` replaced the vjp's initial states (wrong gradients, silently),
    ``errors`` replaced bptt_terms' output factor, ``upstream_h`` a state's upstream gradient."""
    from symbolic.cells import load_cell

    path = tmp_path / f"cell_{name}.py"
    path.write_text(_NAMED.format(name))
    with pytest.raises(UsageError) as raised:
        load_cell(str(path))
    assert repr(name) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("name", ["mask", "weight", "sent", "shift", "normaliser", "upstream", "initial", "dx",
                                  "seeds", "READOUT", "CLASSES"])
def test_names_near_the_output_side_work(tmp_path, name):
    """Names the output side and the vjp also use that a cell may keep: loss_and_grad with a mask and
    initial states, vjp and bptt_terms equal the engine's recursion."""
    from symbolic.codegen import load

    path = tmp_path / f"cell_{name}.py"
    path.write_text(_NAMED.format(name))
    outputs = Outputs("every", "softmax", 3, "all")
    model = Model(cell=str(path), hidden=2, inputs=2, steps=4, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    rng = np.random.default_rng(1)
    params = {key: rng.normal(0, 0.6, shape) for key, shape in d.shapes(2, 2).items()}
    x, y = rng.normal(size=(3, 4, 2)), rng.integers(0, 3, (3, 4))
    mask = (rng.random((3, 4)) < 0.7).astype(float)
    mask[0] = 1
    initial = {"h": rng.normal(size=(3, 2)), "c": rng.normal(size=(3, 2))}
    upstream = {"h": rng.normal(size=(3, 4, 2)), "c": rng.normal(size=(3, 4, 2))}
    for mode in ("loop", "unrolled"):
        module = load(model, mode)
        loss, grads = module.loss_and_grad(x, y, params, mask=mask)
        want = evaluate(d, params, x, y, mask=mask)
        assert abs(loss - want.loss) < 1e-12
        for key, value in want.gradients.items():
            np.testing.assert_allclose(grads[key], value, atol=1e-12, rtol=0)
        grads, dx, dinitial = module.vjp(x, params, upstream, initial)
        want_grads, want_dx, want_initial = engine_vjp(d, params, x, upstream, initial)
        np.testing.assert_allclose(dx, want_dx, atol=1e-12, rtol=0)
        for key, value in grads.items():
            np.testing.assert_allclose(value, want_grads[key], atol=1e-12, rtol=0)
        for state, value in dinitial.items():
            np.testing.assert_allclose(value, want_initial[state], atol=1e-12, rtol=0)
        assert module.bptt_terms(x, y, params, mask=mask)["output_factor"].shape == (3, 4, 3)


# -- the character model's text files ----------------------------------------------------------------------

def test_a_byte_order_mark_is_not_a_character(tmp_path):
    from symbolic.study import many

    path = tmp_path / "bom.txt"
    path.write_text("héllo wörld ✓ " * 10, encoding="utf-8-sig")
    data = many.text_task(str(path), 5)
    assert "\ufeff" not in data.vocabulary and sorted(data.vocabulary) == sorted(set("héllo wörld ✓ "))


@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_windows_and_old_mac_line_ends_are_one_newline(tmp_path, end):
    from symbolic.study import many

    path = tmp_path / "lines.txt"
    path.write_bytes(("first line" + end + "second line" + end).encode() * 10)
    assert many.read_text(str(path)) == "first line\nsecond line\n" * 10
    assert "\r" not in many.text_task(str(path), 5).vocabulary


@pytest.mark.parametrize("content, phrase", [(b"a" * 500, "one character"), (b"\xef\xbb\xbf" + b"x" * 40, "one character"),
                                             (b"\r\n" * 30, "empty"), (b"\xef\xbb\xbf", "empty")],
                         ids=["repeated", "bom-repeated", "line-ends", "bom"])
def test_a_text_without_two_characters_is_one_line(tmp_path, content, phrase):
    """Before: a file of one repeated character asked for --classes, which the user never passed."""
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    result = run_bptt("train", "--data", "text", str(path))
    assert result.returncode == 2 and phrase in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--classes" not in result.stderr


def test_multibyte_text_trains_and_samples_its_own_characters(tmp_path):
    path = tmp_path / "jp.txt"
    path.write_text("日本語のテキスト。かな、カナ。" * 40, encoding="utf-8")
    args = ("train", "--data", "text", str(path), "--epochs", "2", "--sample", "40", "--json")
    first, second = run_bptt(*args), run_bptt(*args)
    assert first.returncode == 0, first.stderr
    run, again = json.loads(first.stdout), json.loads(second.stdout)
    assert set(run["sample"]) <= set("日本語のテキスト。かな、カナ") and len(run["sample"]) == 41
    assert run["sample"] == again["sample"] and run["losses"] == again["losses"]   # same seed, same run


def test_steps_longer_than_the_text_train_on_shorter_chunks(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("the cat sat on the mat. " * 5)
    result = run_bptt("train", "--data", "text", str(path), "--steps", "100000", "--epochs", "2", "--sample", "30")
    assert result.returncode == 0, result.stderr
    chunk = int(result.stdout.split("chunks of ")[1].split(")")[0])
    assert 1 <= chunk < 120 * 0.1


# -- the command line: --data copy and --data text against the other options -------------------------------------

def test_data_copy_implies_a_readout_at_every_step():
    """Before: --data copy without --readout every was 'unknown data'."""
    result = run_bptt("train", "--data", "copy", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "copy" in result.stdout and "after every step" in result.stdout


@pytest.mark.parametrize("args, phrase", [(["--data", "copy", "--readout", "last"], "--readout"),
                                          (["--data", "text", "docs/data/bptt.txt", "--readout", "last"], "--readout"),
                                          (["--data", "text", "docs/data/bptt.txt", "--loss", "mse"], "--loss"),
                                          (["--data", "copy", "--reduction", "all", "--readout", "last"], "--reduction"),
                                          (["--data", "copy", "--sample", "5"], "--sample"),
                                          (["--data", "copy", "--loss", "mse", "--classes", "3"], "--classes"),
                                          (["--data", "text", "docs/data/bptt.txt", "--steps", "0"], "--steps"),
                                          (["--data", "copy", "--steps", "1"], "--steps"),
                                          (["--data", "notes", "--readout", "every"], "one label per sequence"),
                                          (["--data", "text", "docs/data/bptt.txt", "--sample", "1000000000"],
                                           "--sample 100000 or fewer"),
                                          (["--data", "long", "--loss", "softmax"], "one label per sequence")])
def test_contradictions_are_one_line(args, phrase):
    """Before: --data text silently dropped --readout last."""
    result = run_bptt("train", *args)
    assert result.returncode == 2 and phrase in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# -- the generated module says which output side it computes (tests/test_module_docstrings.py: the module's) ----

@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("outputs, says", [
    (Outputs("every", "softmax", 3), "(B, n, K)"), (Outputs("every", "mse", reduction="all"), "(B, n),"),
    (Outputs("last", "softmax", 4), "(B, 1, K)"),
], ids=["every-softmax", "every-mse-all", "last-softmax"])
def test_bptt_terms_says_the_shape_of_its_output_factor(outputs, says, backend):
    """Before: bptt_terms' output factor was 'ŷ − y per sequence, (B,)' whatever the output side."""
    import ast

    from symbolic.codegen import generate

    source = generate(Model(cell=DUO, hidden=2, steps=3, outputs=outputs), "loop", backend=backend)
    tree = ast.parse(source)
    text = " ".join("".join(ast.get_docstring(node) for node in tree.body if isinstance(node, ast.FunctionDef)
                            and node.name in ("bptt_terms", "_numpy_bptt_terms")).split())
    assert "ŷ − y per sequence" not in text and f"of each readout, {says}" in text
    assert " ".join(ast.get_docstring(tree).split()).startswith("A many-to-many" if outputs.every else "A many-to-one")


# -- bptt check masks a readout after every step ----------------------------------------------------------------

@pytest.mark.slow
def test_check_sees_a_gradient_that_ignores_the_mask(tmp_path, capsys):
    """Before: check never passed a mask, so a module whose loss reads the mask and whose gradient does
    not passed. Now the generated module passes and that one fails."""
    from symbolic.codegen import generate
    from symbolic.verify.check import run_check

    source = generate(Model(cell=DUO, hidden=2, outputs=Outputs("every", "softmax", 5, "all")), "loop")
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(source)
    line = "weight = batch / count if mask is None else mask * (batch / count)"
    assert line in source
    bad.write_text(source.replace(line, "weight = batch / count + 0 * (1.0 if mask is None else mask)"))
    assert run_check(good) == 0
    assert "with a mask dropping one step" in capsys.readouterr().out
    assert run_check(bad) == 1


def test_padding_drops_one_step_of_each_sequence_by_its_own_inputs():
    from symbolic.verify.interfaces import padding

    x = np.random.default_rng(0).normal(size=(6, 5, 3))
    mask = padding(x)
    assert mask.shape == (6, 5) and set(np.unique(mask)) == {0.0, 1.0}
    assert (mask.sum(axis=1) == 4).all()   # n − 1 steps each: parts of a batch combine as a mean
    np.testing.assert_array_equal(padding(x[2:4]), mask[2:4])


# -- a user's cell with two states and a lag against torch: every loss, both reductions, hostile masks ---------


def _duo_torch(x, t, initial=None, both=False):
    """tests/cells/duo_lag.py's h_t (and c_t: ``both``), (B, n, H), in torch from its equations; ``initial``
    h_0 and c_0 (zero when None), h_(−1) = 0 (a lagged read before s_0)."""
    xs = x if torch.is_tensor(x) else torch.from_numpy(x)
    zero = torch.zeros(x.shape[0], t["U_g"].shape[0], dtype=torch.float64)
    h, c = (zero, zero) if initial is None else (initial["h"], initial["c"])
    before, hs, cs = zero, [], []
    for step in range(x.shape[1]):
        g = torch.sigmoid(xs[:, step] @ t["W_g"].T + h @ t["U_g"].T + t["b_g"])
        c = g * c + (1 - g) * torch.tanh(xs[:, step] @ t["W_c"].T + before @ t["S"].T)
        before, h = h, torch.tanh(c) + t["u"] * h
        hs.append(h)
        cs.append(c)
    return (torch.stack(hs, 1), torch.stack(cs, 1)) if both else torch.stack(hs, 1)


def _duo_reference(outputs: Outputs, x, y, params, mask, initial=None):
    """Loss and gradients by torch autograd: torch's own losses on the kept rows (sum, then / B or / rows)."""
    t = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    states = _duo_torch(x, t, None if initial is None else {k: torch.from_numpy(v) for k, v in initial.items()})
    keep = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else torch.from_numpy(np.asarray(mask) > 0)
    if not outputs.every:
        states, keep = states[:, -1:], keep[:, -1:]
    rows, targets = states[keep], torch.from_numpy(np.asarray(y)).reshape(x.shape[0], -1)[keep]
    if outputs.loss == "softmax":
        loss = torch.nn.CrossEntropyLoss(reduction="sum")(rows @ t["w_y"].T + t["b_y"], targets.long())
    elif outputs.loss == "mse":
        loss = torch.nn.MSELoss(reduction="sum")(rows @ t["w_y"] + t["b_y"], targets.double())
    else:
        loss = torch.nn.BCEWithLogitsLoss(reduction="sum")(rows @ t["w_y"] + t["b_y"], targets.double())
    loss = loss / (rows.shape[0] if outputs.reduction == "all" else x.shape[0])
    found = torch.autograd.grad(loss, list(t.values()))
    return loss.item(), {name: g.numpy() for name, g in zip(t, found)}


def _duo_point(d, outputs: Outputs, mask_kind: str, batch=4, steps=5, seed=7):
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(0, 0.6, shape) for name, shape in d.shapes(3, 2).items()}
    x = rng.normal(size=(batch, steps, 2))
    shape = (batch, steps) if outputs.every else (batch,)
    y = {"softmax": lambda: rng.integers(0, outputs.classes or 2, shape),
         "bce": lambda: rng.random(shape),        # probabilities, as torch's BCELoss takes them
         "mse": lambda: rng.normal(size=shape)}[outputs.loss]()
    mask = None
    if mask_kind != "none":
        mask = (rng.random((batch, steps)) < 0.6).astype(float)
        mask[0] = 1
        mask[1] = 0                               # a padded-out sequence: no loss, no gradient
        if mask_kind == "bool":
            mask = mask > 0
    return params, x, y, mask


DUO_SETTINGS = [Outputs("every", loss, classes, reduction) for loss, classes in
                [("bce", None), ("softmax", 2), ("softmax", 5), ("mse", None)] for reduction in ("steps", "all")]


@pytest.mark.parametrize("outputs", DUO_SETTINGS, ids=lambda o: o.flags.replace("--", "").replace(" ", "-"))
def test_a_user_cell_with_two_states_and_a_lag_equals_torch(outputs):
    from symbolic.codegen import load

    model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    modules = [load(model, mode) for mode in ("loop", "unrolled")]
    for mask_kind in ("none", "float", "bool"):
        params, x, y, mask = _duo_point(d, outputs, mask_kind)
        want_loss, want = _duo_reference(outputs, x, y, params, mask)
        ours = evaluate(d, params, x, y, mask=None if mask is None else mask.astype(float))
        results = [(ours.loss, ours.gradients)] + [m.loss_and_grad(x, y, params, mask=mask) for m in modules]
        for loss, grads in results:
            assert abs(loss - want_loss) < 1e-10 * max(1.0, abs(want_loss)), mask_kind
            for name, value in want.items():
                np.testing.assert_allclose(grads[name], value, atol=1e-10 * max(1.0, np.abs(value).max()), rtol=0)


@pytest.mark.parametrize("loss", ["bce", "softmax", "mse"])
def test_every_step_masked(loss):
    """The batch mean of the sum over steps of no step is 0 with no gradient (torch: 0 / B); the mean
    over no step is a ValueError in the module and the engine alike (torch's ignore_index: NaN)."""
    from symbolic.codegen import load

    for reduction in ("steps", "all"):
        outputs = Outputs("every", loss, 3 if loss == "softmax" else None, reduction)
        model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=outputs)
        d = derive_cell(cell_of(model), outputs=outputs)
        params, x, y, _ = _duo_point(d, outputs, "none")
        mask = np.zeros((4, 5))
        for module in (load(model, "loop"), load(model, "unrolled")):
            if reduction == "all":
                for call in (module.loss, module.loss_and_grad):
                    with pytest.raises(ValueError, match="no step"):
                        call(x, y, params, mask=mask)
                continue
            value, grads = module.loss_and_grad(x, y, params, mask=mask)
            assert value == 0 == module.loss(x, y, params, mask=mask)
            assert all(not np.any(g) for g in grads.values())
        if reduction == "all":
            with pytest.raises(ValueError, match="no step"):
                evaluate(d, params, x, y, mask=mask)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
def test_the_vjp_of_a_user_cell_with_two_states_and_a_lag_equals_torch(backend):
    """grads, dx and dinitial of Σ_t ⟨upstream_t, s_t⟩ for both states from given initial states; a
    state left out of upstream is zero (torch: no term for it)."""
    pytest.importorskip(backend)
    from symbolic.codegen import load

    model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=Outputs("every", "mse"))
    d = derive_cell(cell_of(model), outputs=model.outputs)
    rng = np.random.default_rng(11)
    params = {name: rng.normal(0, 0.6, shape) for name, shape in d.shapes(3, 2).items()}
    x = rng.normal(size=(4, 5, 2))
    initial = {"h": rng.normal(size=(4, 3)), "c": rng.normal(size=(4, 3))}
    for upstream in ({"h": rng.normal(size=(4, 5, 3)), "c": rng.normal(size=(4, 5, 3))}, {"c": rng.normal(size=(4, 5, 3))}):
        t = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
        xs = torch.tensor(x, requires_grad=True)
        start = {name: torch.tensor(value, requires_grad=True) for name, value in initial.items()}
        hs, cs = _duo_torch(xs, t, start, both=True)
        total = sum((states * torch.from_numpy(upstream[name])).sum() for name, states in (("h", hs), ("c", cs))
                    if name in upstream)
        names = [name for name in t if name not in ("w_y", "b_y")]
        found = torch.autograd.grad(total, [t[n] for n in names] + [xs, start["h"], start["c"]])
        for mode in ("loop", "unrolled"):
            grads, dx, dinitial = load(model, mode, backend=backend).vjp(x, params, upstream, initial)
            assert set(grads) == set(names)
            for name, want in zip(names, found):
                np.testing.assert_allclose(grads[name], want.numpy(), atol=1e-10, rtol=0, err_msg=name)
            np.testing.assert_allclose(dx, found[len(names)].numpy(), atol=1e-10, rtol=0)
            np.testing.assert_allclose(dinitial["h"], found[-2].numpy(), atol=1e-10, rtol=0)
            np.testing.assert_allclose(dinitial["c"], found[-1].numpy(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("outputs", [Outputs("every", "softmax", 5, "all"), Outputs("last", "bce")],
                         ids=["every-softmax-all", "last-bce"])
def test_loss_and_grad_from_initial_states_equals_torch(outputs):
    from symbolic.codegen import load

    model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    params, x, y, mask = _duo_point(d, outputs, "float" if outputs.every else "none")
    rng = np.random.default_rng(3)
    initial = {"h": rng.normal(size=(4, 3)), "c": rng.normal(size=(4, 3))}
    want_loss, want = _duo_reference(outputs, x, y, params, mask, initial)
    masked = {"mask": mask} if outputs.every else {}
    for mode in ("loop", "unrolled"):
        module = load(model, mode)
        loss, grads = module.loss_and_grad(x, y, params, initial=initial, **masked)
        assert abs(loss - want_loss) < 1e-10 and abs(module.loss(x, y, params, initial=initial, **masked) - loss) < 1e-12
        for name, value in want.items():
            np.testing.assert_allclose(grads[name], value, atol=1e-10, rtol=0, err_msg=name)


@pytest.mark.parametrize("content, phrase", [("x y z".encode("utf-16"), "UTF-16"),
                                             (b"ab" * 10_000_001, "one-hot")], ids=["utf-16", "huge"])
def test_utf16_and_huge_texts_are_one_line(tmp_path, content, phrase):
    """Before: UTF-16 was 'a binary file'; a text of 2·10^7 characters built its one-hot inputs (320 MB
    here, a MemoryError with more distinct characters) and trained for minutes."""
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    result = run_bptt("train", "--data", "text", str(path))
    assert result.returncode == 2 and phrase in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- the generated module's own checks of y and the mask ------------------------------------------------------

@pytest.mark.parametrize("loss, y, mask, phrase", [
    ("softmax", [[0, 1, 2, 0, 1], [0, 1]] * 2, None, "y must be an array of class indices"),
    ("softmax", np.ones((4, 5)), None, "integers"),                       # floats are not class indices (torch too)
    ("softmax", np.full((4, 5), True), None, "integers"),
    ("softmax", np.full((4, 5), 3), None, "0..2"),                        # a class index >= K
    ("softmax", np.full((4, 5), -1), None, "0..2"),
    ("softmax", np.zeros((4, 5, 1), int), None, "shape"),
    ("mse", np.full((4, 5), 1j), None, "real"),                           # before: numpy's casting error
    ("bce", np.full((4, 5), 0.5 + 0j), None, "real"),                     # before: skipped the [0, 1] check
    ("bce", np.full((4, 5), 1.5), None, "[0, 1]"),
    ("bce", np.full((4, 5), np.nan), None, "finite"),
    ("mse", np.zeros((4, 5)), [[1] * 5, [1] * 4] * 2, "mask must be an array"),
    ("mse", np.zeros((4, 5)), np.ones((4, 5), dtype=object), "dtype object"),   # before: 'only 0 and 1'
    ("mse", np.zeros((4, 5)), np.full((4, 5), "1"), "dtype <U1"),
    ("mse", np.zeros((4, 5)), np.full((4, 5), np.nan), "only 0 and 1"),
    ("mse", np.zeros((4, 5)), np.full((4, 5), 2), "only 0 and 1"),
    ("mse", np.zeros((4, 5)), np.ones((5, 4)), "shape"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_module_refuses_hostile_labels_and_masks(loss, y, mask, phrase):
    from symbolic.codegen import load

    outputs = Outputs("every", loss, 3 if loss == "softmax" else None)
    model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    params, x, _, _ = _duo_point(d, outputs, "none")
    for mode in ("loop", "unrolled"):
        module = load(model, mode)
        for call in (module.loss, module.loss_and_grad, module.bptt_terms):
            with pytest.raises(ValueError) as raised:
                call(x, y, params, mask=mask)
            assert phrase in str(raised.value) and type(raised.value) is ValueError, str(raised.value)


@pytest.mark.parametrize("flag, value", [("--classes", "10000000000"), ("--hidden", "10000000000"),
                                         ("--steps", "10000000000")])
def test_a_run_too_large_for_memory_is_one_line(flag, value):
    """Before: numpy's 'array is too big' or an allocation error, with a traceback."""
    extra = ["--loss", "softmax"] if flag == "--classes" else []
    result = run_bptt("train", "--data", "copy", *extra, flag, value)
    assert result.returncode == 2 and "memory" in result.stderr and flag in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_memory_counts_weights_and_data():
    from symbolic.study.many import check_memory

    check_memory({"w": (10, 10)}, 100, available=8 * (5 * 100 + 100))
    with pytest.raises(UsageError, match="memory"):
        check_memory({"w": (10, 10)}, 101, available=8 * (5 * 100 + 100))


@pytest.mark.parametrize("data", [["copy"], ["text", "docs/data/bptt.txt", "--sample", "5"]], ids=["copy", "text"])
def test_a_diverged_run_is_reported_not_a_traceback(data):
    """Before: weights that overflowed went into the module, which refused them with a ValueError
    traceback after NumPy's overflow warnings. Now the run stops, says where, and exits 1 (no held-out
    loss, no sample), its JSON without NaN."""
    result = run_bptt("train", "--data", *data, "--lr", "1.7e308", "--epochs", "3", "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    run = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert run["diverged_at"] == 1 and run["sample"] is None and run["held_out_loss"] is None


@pytest.mark.parametrize("outputs", [Outputs("every", "softmax", 5, "all"), Outputs("every", "bce")], ids=["softmax", "bce"])
def test_float32_inputs_with_a_mask_compute_in_float32(outputs):
    """Before: the one-hot labels and the mask were float64, so the readout's gradients (and with a mask
    every gradient's readout part) came back float64 beside the cell's float32 ones. The float32 result
    is the float64 one to float32's reach."""
    from symbolic.codegen import load

    model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    params, x, y, mask = _duo_point(d, outputs, "bool")
    module = load(model, "loop")
    want_loss, want = module.loss_and_grad(x, y, params, mask=mask)
    small = {name: value.astype(np.float32) for name, value in params.items()}
    y32 = y if outputs.loss == "softmax" else y.astype(np.float32)
    loss, grads = module.loss_and_grad(x.astype(np.float32), y32, small, mask=mask)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    assert abs(loss - want_loss) < 1e-5 * max(1.0, abs(want_loss))
    for name, value in want.items():
        np.testing.assert_allclose(grads[name], value, atol=1e-4 * max(1.0, np.abs(value).max()), rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("outputs", [Outputs("every", "softmax", 5, "all")], ids=["softmax-all"])
def test_the_numba_module_of_a_user_cell_with_two_states_and_a_lag_equals_torch(outputs):
    """Both compiled paths (serial kernels for a narrow batch, BLAS drivers for a wide one), a padded-out
    sequence and a bool mask (the Numba module's bce and mse readouts: tests/test_outputs.py, built-in cells;
    this cell's every loss in NumPy above)."""
    pytest.importorskip("numba")
    from symbolic.codegen import load

    model = Model(cell=DUO, hidden=3, inputs=2, steps=5, outputs=outputs)
    d = derive_cell(cell_of(model), outputs=outputs)
    for mode in ("loop", "unrolled"):
        module = load(model, mode, backend="numba")
        for batch in (4, 700):
            params, x, y, mask = _duo_point(d, outputs, "bool", batch=batch, seed=batch)
            want_loss, want = _duo_reference(outputs, x, y, params, mask)
            loss, grads = module.loss_and_grad(x, y, params, mask=mask)
            assert abs(loss - want_loss) < 1e-10 * max(1.0, abs(want_loss))
            for name, value in want.items():
                np.testing.assert_allclose(grads[name], value, atol=1e-10 * max(1.0, np.abs(value).max()), rtol=0)


def test_a_never_ending_text_file_is_read_in_bounded_memory():
    """Before: /dev/zero was read whole, until the memory ran out."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    result = run_bptt("train", "--data", "text", "/dev/zero")
    assert result.returncode == 2 and "larger than 64 MB" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_every_name_an_output_side_module_uses_is_refused_or_keeps_vjp_and_terms_right(tmp_path):
    """Every identifier of the NumPy and Numba modules with a readout after every step (and the vjp), as a
    cell's vector: refused at load, or loss_and_grad with a mask, vjp from initial states and bptt_terms
    equal the engine (tests/test_cells_hostile.py holds loss_and_grad of the notes' output side to torch)."""
    from symbolic.cells import load_cell
    from symbolic.codegen import generate

    words = set()
    for outputs in (Outputs("every", "softmax", 3, "all"), Outputs("every", "mse"), Outputs("last", "bce")):
        for mode in ("loop", "unrolled"):
            for backend in ("numpy", "numba"):
                words |= identifiers(generate(Model(cell=DUO, hidden=2, steps=2, inputs=2, outputs=outputs), mode,
                                               backend=backend))
    accepted = []
    for word in sorted(w for w in words if not w.startswith("_")):
        path = tmp_path / f"w_{word}.py"
        path.write_text(_NAMED.format(word))
        try:
            load_cell(str(path))
        except UsageError as error:
            assert "\n" not in str(error)
            continue
        accepted.append(word)
    assert {"start", "errors", "upstream_h", "mask"} & set(words) == {"start", "errors", "upstream_h", "mask"}
    assert "start" not in accepted and "errors" not in accepted and len(accepted) > 20
    for word in accepted:
        test_names_near_the_output_side_work(tmp_path, word)
