"""Generated modules of every cell (built-in and users' files): gradients against independent oracles.

Oracles: the complex step and five-point finite differences of the module's own loss, a plain-NumPy
forward pass written here per cell for the loss value (independent of the engine), and for the
built-in gated cells PyTorch (tests/test_torch_cells.py). The mpmath evaluation of the engine's
recursion is compared too: it shares the derivation with the code, so it checks the printing only.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from symbolic.cells import cell_of
from symbolic.codegen import generate, load
from symbolic.codegen.format import SETTINGS
from symbolic.engine.derivation import derive_cell
from symbolic.engine.evaluate import evaluate
from symbolic.errors import UsageError
from symbolic.model import Model

from .conftest import ROOT, run_bptt

DOCS = ROOT / "docs" / "cells"
CELLS = ["lstm", "gru", str(DOCS / "mgu.py"), str(DOCS / "cho_gru.py"), str(DOCS / "indrnn.py")]
IDS = ["lstm", "gru", "mgu", "cho_gru", "indrnn"]
MODES = ("unrolled", "loop")


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _lstm(p, x_t, state):
    h, c = state
    a = {g: x_t @ p[f"W_{g}"].T + h @ p[f"U_{g}"].T + p[f"b_{g}"] for g in "ifgo"}
    c = sigmoid(a["f"]) * c + sigmoid(a["i"]) * np.tanh(a["g"])
    return sigmoid(a["o"]) * np.tanh(c), c


def _gru(p, x_t, state):
    (h,) = state
    r = sigmoid(x_t @ p["W_r"].T + p["b_r"] + h @ p["U_r"].T)
    z = sigmoid(x_t @ p["W_z"].T + p["b_z"] + h @ p["U_z"].T)
    n = np.tanh(x_t @ p["W_n"].T + p["b_in"] + r * (h @ p["U_n"].T + p["b_hn"]))
    return ((1 - z) * n + z * h,)


def _mgu(p, x_t, state):
    (h,) = state
    f = sigmoid(x_t @ p["W_f"].T + h @ p["U_f"].T + p["b_f"])
    n = np.tanh(x_t @ p["W_n"].T + (f * h) @ p["U_n"].T + p["b_n"])
    return ((1 - f) * h + f * n,)


def _cho(p, x_t, state):
    (h,) = state
    r = sigmoid(x_t @ p["W_r"].T + h @ p["U_r"].T + p["b_r"])
    z = sigmoid(x_t @ p["W_z"].T + h @ p["U_z"].T + p["b_z"])
    n = np.tanh(x_t @ p["W_n"].T + (r * h) @ p["U_n"].T + p["b_n"])
    return ((1 - z) * n + z * h,)


def _indrnn(p, x_t, state):
    (h,) = state
    return (np.maximum(x_t @ p["W"].T + p["u"] * h + p["b"], 0.0),)


#: cell → (step function, number of states), written from the papers' equations, not from the engine
REFERENCES = dict(zip(IDS, [(_lstm, 2), (_gru, 1), (_mgu, 1), (_cho, 1), (_indrnn, 1)]))


def reference_loss(cell_id, x, y, params):
    step, count = REFERENCES[cell_id]
    batch = x.shape[0]
    hidden = params["w_y"].shape[0]
    state = tuple(np.zeros((batch, hidden)) for _ in range(count))
    for t in range(x.shape[1]):
        state = step(params, x[:, t], state)
    y_hat = sigmoid(state[0] @ params["w_y"])
    return float(np.mean(-y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat)))


def module_for(cell, mode, hidden, steps, inputs=3):
    return load(Model(cell=cell, steps=steps, hidden=hidden, inputs=inputs), mode)


def point(module, steps, batch=4, seed=0):
    """(x, y, params): dense inputs, both labels, weights large enough that no gradient is trivial;
    for a non-analytic cell (ReLU), pre-activations kept off the kink by the bias."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, module.INPUT_SIZE))
    y = rng.uniform(0, 1, size=batch)
    y[0], y[-1] = 0.0, 1.0
    hidden = module.HIDDEN_SIZE
    params = {}
    for name, shape in module.PARAMS.items():
        scale = 1.5 / np.sqrt(hidden) if len(shape) == 2 and shape[1] == hidden else 1.0
        params[name] = np.asarray(rng.uniform(-1, 1, size=shape) * scale, dtype=float)
    if not module.ANALYTIC:
        params = {name: value * 0.3 for name, value in params.items()}
    return x, y, params


def numerical_gradient(module, x, y, params, method):
    result = {}
    for name, value in params.items():
        gradient = np.empty(value.shape)
        for index in np.ndindex(value.shape):

            def shifted(step, name=name, value=value, index=index):
                moved = value.astype(complex if isinstance(step, complex) else float)
                moved[index] += step
                return module.loss(x, y, {**params, name: moved})

            if method == "complex step":
                gradient[index] = np.imag(shifted(1e-20j)) / 1e-20
            else:
                h = 1e-4 if not module.ANALYTIC else 1e-3
                near, far = shifted(h) - shifted(-h), shifted(2 * h) - shifted(-2 * h)
                gradient[index] = (8 * near - far) / (12 * h)
        result[name] = gradient
    return result


def relative(got, want, floor=0.0):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), floor, 1e-300))


CASES = [(cell, cell_id, mode, hidden, steps)
         for cell, cell_id in zip(CELLS, IDS) for mode in MODES for hidden, steps in ((1, 1), (2, 3), (3, 6))]


@pytest.mark.parametrize(("cell", "cell_id", "mode", "hidden", "steps"), CASES,
                         ids=[f"{c[1]}-{c[2]}-H{c[3]}-n{c[4]}" for c in CASES])
def test_gradient_matches_complex_step_and_finite_differences(cell, cell_id, mode, hidden, steps):
    module = module_for(cell, mode, hidden, steps)
    x, y, params = point(module, steps, seed=steps + 10 * hidden)
    loss, grads = module.loss_and_grad(x, y, params)
    assert set(grads) == set(params) == set(module.PARAMS)
    assert loss == pytest.approx(reference_loss(cell_id, x, y, params), rel=1e-13)
    finite = numerical_gradient(module, x, y, params, "finite differences")
    largest = max(float(np.max(np.abs(g))) for g in finite.values())
    complex_step = numerical_gradient(module, x, y, params, "complex step") if module.ANALYTIC else None
    for name in params:
        assert grads[name].shape == params[name].shape, name
        if complex_step is not None:
            assert relative(grads[name], complex_step[name]) <= 1e-10, name
        assert relative(grads[name], finite[name], 1e-3 * largest) <= 1e-6, name
    assert max(float(np.max(np.abs(g))) for g in grads.values()) > 1e-4


@pytest.mark.parametrize(("cell", "cell_id"), list(zip(CELLS, IDS)), ids=IDS)
def test_loop_unrolled_and_the_derivation_at_60_digits_agree(cell, cell_id):
    hidden, steps = 2, 4
    unrolled, looped = module_for(cell, "unrolled", hidden, steps), module_for(cell, "loop", hidden, steps)
    x, y, params = point(looped, steps, batch=3, seed=1)
    loss_u, grads_u = unrolled.loss_and_grad(x, y, params)
    loss_l, grads_l = looped.loss_and_grad(x, y, params)
    assert abs(loss_u - loss_l) <= 1e-12 * abs(loss_l)
    values = evaluate(derive_cell(cell_of(Model(cell=cell))), params, x, y, digits=60)
    want_loss, want = values.as_float()
    assert loss_l == pytest.approx(want_loss, rel=1e-13)
    for name in params:
        assert relative(grads_u[name], grads_l[name]) <= 1e-12, name
        assert relative(grads_l[name], want[name]) <= 1e-12, name
    np.testing.assert_allclose(unrolled.forward(x, params), looped.forward(x, params), rtol=1e-12)
    # the loop module takes any length
    assert np.isfinite(looped.loss(np.concatenate([x, x], axis=1), y, params))


def test_lstm_interface_init_and_states():
    module = module_for("lstm", "loop", 2, 5)
    params = module.init_params(seed=3)
    assert params.keys() == module.PARAMS.keys()
    for name, value in params.items():
        assert value.shape == module.PARAMS[name]
        if name != "b_f":
            assert np.all(np.abs(value) <= 1 / np.sqrt(2))
    assert np.all(params["b_f"] == 1.0)
    again = module.init_params(seed=3)
    assert all(np.array_equal(params[name], again[name]) for name in params)
    assert not np.array_equal(module.init_params(seed=4)["W_i"], params["W_i"])
    x = np.random.default_rng(0).normal(size=(5, 3))
    assert module.forward(x, params).shape == (1,)
    assert module.loss(x, 1.0, params) == pytest.approx(module.loss(x[np.newaxis], [1.0], params))
    states = module.states(x, params)
    assert set(states) == {"i", "f", "g", "o", "c", "tanh_c", "h"}
    assert all(value.shape == (1, 5, 2) for value in states.values())
    np.testing.assert_allclose(states["h"], states["o"] * np.tanh(states["c"]), rtol=1e-14)
    constants = (module.CELL, module.STEPS, module.MODE, module.HIDDEN_SIZE, module.INPUT_SIZE)
    assert constants == ("lstm", None, "loop", 2, 3)
    assert module.ACTIVATIONS == ("sigmoid", "tanh") and module.ANALYTIC
    assert module.STATES == ("h", "c")


@pytest.mark.parametrize(("cell", "cell_id"), list(zip(CELLS, IDS)), ids=IDS)
def test_loss_is_finite_for_huge_logits(cell, cell_id):
    module = module_for(cell, "loop", 2, 4)
    x, y, params = point(module, 4)
    params["w_y"] = params["w_y"] * 1e5
    loss, grads = module.loss_and_grad(x, y, params)
    assert np.isfinite(loss) and loss > 1
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("cell", "cell_id"), list(zip(CELLS, IDS)), ids=IDS)
def test_bad_input_is_a_value_error_naming_it(cell, cell_id, mode):
    module = module_for(cell, mode, 2, 3)
    x, y, params = point(module, 3)
    matrix = next(name for name, shape in module.PARAMS.items() if len(shape) == 2)
    with pytest.raises(ValueError, match=rf"params\['{matrix}'\] must have shape"):
        module.loss(x, y, {**params, matrix: np.zeros((2, 7))})
    with pytest.raises(ValueError, match="params lacks 'w_y'"):
        module.loss_and_grad(x, y, {name: v for name, v in params.items() if name != "w_y"})
    with pytest.raises(ValueError, match="unknown key 'W_zz'"):
        module.forward(x, {**params, "W_zz": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"params\['w_y'\] must be finite"):
        module.loss(x, y, {**params, "w_y": np.array([np.nan, 0.0])})
    with pytest.raises(ValueError, match="x must have shape"):
        module.loss(x[:, :, :2], y, params)
    with pytest.raises(ValueError, match="y must have shape"):
        module.loss(x, y[:2], params)
    with pytest.raises(TypeError, match="params must be a dict"):
        module.loss(x, y, list(params.values()))
    if mode == "unrolled":
        with pytest.raises(ValueError, match="unrolled for exactly 3 steps"):
            module.loss(x[:, :2], y, params)


@pytest.mark.parametrize(("cell", "mode", "hidden", "steps"), [
    ("lstm", "unrolled", 1, 1), ("lstm", "loop", 4, 3), ("lstm", "unrolled", 8, 4), ("gru", "unrolled", 2, 3),
    ("gru", "loop", 1, 1), ("gru", "unrolled", 8, 4), (str(DOCS / "mgu.py"), "loop", 8, 4),
    (str(DOCS / "mgu.py"), "unrolled", 3, 2), (str(DOCS / "cho_gru.py"), "unrolled", 2, 2),
    (str(DOCS / "indrnn.py"), "loop", 2, 2), (str(ROOT / "tests" / "cells" / "peephole_lstm.py"), "unrolled", 5, 3),
    (str(ROOT / "tests" / "cells" / "residual.py"), "loop", 6, 1),
])
def test_generated_source_passes_ruff(cell, mode, hidden, steps, tmp_path):
    """ruff check is clean and ruff format changes nothing, under the settings format_python pins and
    under the project's configuration: long statements come split as ruff splits them."""
    path = tmp_path / "cell_module.py"
    path.write_text(generate(Model(cell=cell, steps=steps, hidden=hidden), mode))
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--line-length", "200",
                             "--select", "F,E9", str(path)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    project = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["check", "--isolated"], ["check", *project], ["format", "--check", "--diff", *SETTINGS],
                    ["format", "--check", "--diff", *project]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, str(path)],
                                check=False, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_unrolled_code_comes_from_the_derivation():
    source = generate(Model(cell="lstm", steps=3, hidden=2), "unrolled")
    # c_0 = 0 substituted at t = 1; the cell path δc_(t+1) ⊙ f_(t+1) sent back; f′ from the stored gate
    assert "c[1] = g[1] * i[1]" in source
    assert "delta_c_in * f[" not in source and "delta_c * f[3]" in source
    assert "np.multiply(delta_g, 1 - g[2] ** 2, out=delta_a_g)" in source
    lines = [len(generate(Model(cell="gru", steps=n), "unrolled").splitlines()) for n in (10, 20, 30)]
    assert lines[2] - lines[1] == lines[1] - lines[0]  # linear in n


def test_unrolled_limit_is_a_usage_error():
    with pytest.raises(UsageError, match="limited to n <= 256"):
        generate(Model(cell="gru", steps=300), "unrolled")
    assert 'MODE = "loop"' in generate(Model(cell="gru", steps=300))  # the default for long sequences


@pytest.mark.parametrize(("cell", "cell_id"), [("gru", "gru"), (str(DOCS / "mgu.py"), "mgu")], ids=["gru", "mgu"])
def test_codegen_and_check_command_line(cell, cell_id, tmp_path):
    target = tmp_path / "module.py"
    made = run_bptt("codegen", "--cell", cell, "--hidden", "2", "--steps", "4", "-o", str(target))
    assert made.returncode == 0, made.stderr
    head = target.read_text().splitlines()[:2]
    assert "do not edit" in head[0] and "--cell" in head[1] and "--hidden 2" in head[1]
    good = run_bptt("check", str(target))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "passed" in good.stdout


EXTRA = [str(ROOT / "tests" / "cells" / name) for name in ("passthrough.py", "readout_bias.py")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", EXTRA, ids=["passthrough", "readout_bias"])
def test_a_map_whose_delta_is_only_what_the_next_step_sends_and_a_scalar_readout_bias(cell, mode):
    """Negative space of the layout: δ(W x) = δh_in is copied into its slot (not left as np.empty),
    and a () parameter keeps its shape; against the complex step and finite differences."""
    module = module_for(cell, mode, 3, 4)
    x, y, params = point(module, 4, seed=2)
    _, grads = module.loss_and_grad(x, y, params)
    complex_step = numerical_gradient(module, x, y, params, "complex step")
    finite = numerical_gradient(module, x, y, params, "finite differences")
    for name in params:
        assert grads[name].shape == params[name].shape == module.PARAMS[name], name
        assert relative(grads[name], complex_step[name]) <= 1e-10, name
        assert relative(grads[name], finite[name], 1e-3) <= 1e-6, name


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", str(ROOT / "docs" / "cells" / "mgu.py")])
def test_the_docstring_names_each_adjoint_as_the_text_does(cell):
    """The adjoint of a map M u reads δ(M u) in the generated docstring, as the δh_(t-1) line beside it
    writes it; no engine-internal name (δdelta_U_n@h_prev) is printed."""
    from symbolic.codegen import generate as generate_module
    from symbolic.model import Model as CellModel

    source = generate_module(CellModel(cell=cell, hidden=2, steps=3), "loop")
    docstring = source.split('"""')[1]
    assert "δdelta_" not in docstring and "@" not in docstring, docstring
