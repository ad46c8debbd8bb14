"""Generated modules for hidden size H > 1 and biases (issue 5): gradients, oracles, interface.

Oracles: the complex step and central finite differences of the module's own loss, an independent
plain-NumPy forward pass, sp.diff of the unrolled loss (symbolic/engine/oracle.py) at 30 digits, and the scalar
module of the notes' model (H = 1).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from symbolic.activations import ACTIVATIONS
from symbolic.cells import builtin
from symbolic.codegen import generate, load
from symbolic.codegen.format import SETTINGS
from symbolic.engine import oracle
from symbolic.model import Model
from symbolic.verify.check import check_module, format_report, load_module

from .conftest import ACTIVATION_NAMES, ROOT, run_bptt

MODES = ("unrolled", "loop")
#: (hidden, bias): H = 1 only with biases (without them it is the scalar module).
SHAPES = [(1, True), (2, False), (2, True), (8, False), (8, True)]
STEPS = 4
CASES = [(a, m, h, b) for a in ACTIVATION_NAMES for m in MODES for h, b in SHAPES]


def module_for(activation, mode, hidden, bias, steps=STEPS, inputs=3):
    return load(Model(steps=steps, activation=activation, hidden=hidden, bias=bias, inputs=inputs), mode)


def reference_forward(x, parameters, activation):
    """o[:, t] for t = 0..n, shape (B, n + 1, H): a plain loop over time, independent of the module."""
    f = {
        "tanh": np.tanh,
        "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
        "relu": lambda a: np.maximum(a, 0),
        "identity": lambda a: a,
    }[activation]
    w_i, w_h = parameters["w_i"], parameters["w_h"]
    b_h = parameters.get("b_h", 0.0)
    batch, steps, _ = x.shape
    o = np.zeros((batch, steps + 1, w_h.shape[0]))
    for t in range(1, steps + 1):
        o[:, t] = f(x[:, t - 1] @ w_i.T + o[:, t - 1] @ w_h.T + b_h)
    return o


def point(activation, hidden, bias, steps=STEPS, batch=3, seed=0, inputs=3):
    """(x, y, parameters); for ReLU every pre-activation is kept 1e-3 away from the kink."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        x = rng.normal(size=(batch, steps, inputs))
        y = rng.uniform(0, 1, size=batch)
        y[0], y[-1] = 0.0, 1.0
        parameters = {
            "w_i": rng.uniform(-1, 1, size=(hidden, inputs)),
            "w_h": rng.uniform(-1.2, 1.2, size=(hidden, hidden)) / np.sqrt(hidden),
            "w_o": rng.uniform(-2, 2, size=hidden),
        }
        if bias:
            parameters["b_h"] = rng.uniform(-0.5, 0.5, size=hidden)
            parameters["b_o"] = float(rng.uniform(-0.5, 0.5))
        if activation != "relu" or _away_from_kink(x, parameters):
            return x, y, parameters
    raise AssertionError("no point away from the ReLU kink")


def _away_from_kink(x, parameters):
    w_i, w_h, b_h = parameters["w_i"], parameters["w_h"], parameters.get("b_h", 0.0)
    o = np.zeros((x.shape[0], w_h.shape[0]))
    for t in range(x.shape[1]):
        a = x[:, t] @ w_i.T + o @ w_h.T + b_h
        if np.min(np.abs(a)) < 1e-3:
            return False
        o = np.maximum(a, 0)
    return True


def relative(got, want):
    got, want = np.asarray(got, dtype=complex), np.asarray(want, dtype=complex)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-8))


def numerical(module, x, y, parameters, method):
    result = {}
    for name, value in parameters.items():
        value = np.asarray(value, dtype=float)
        entries = []
        for index in range(value.size):

            def loss(step, name=name, value=value, index=index):
                moved = value.astype(type(step)).ravel()
                moved[index] += step
                return module.loss(x, y, **{**parameters, name: moved.reshape(value.shape)})

            if method == "complex":
                entries.append(np.imag(loss(1e-20j)) / 1e-20)
            else:
                entries.append((loss(1e-6) - loss(-1e-6)) / 2e-6)
        result[name] = np.array(entries).reshape(value.shape)
    return result


@pytest.mark.parametrize(("activation", "mode", "hidden", "bias"), CASES)
def test_gradient_matches_complex_step_and_finite_differences(activation, mode, hidden, bias):
    module = module_for(activation, mode, hidden, bias)
    x, y, parameters = point(activation, hidden, bias, seed=hidden)
    loss, *gradients = module.loss_and_grad(x, y, **parameters)
    assert len(gradients) == len(parameters)
    got = dict(zip(parameters, gradients))
    for name, value in parameters.items():
        assert np.shape(got[name]) == np.shape(value), name
    assert isinstance(loss, float) and (not bias or isinstance(got["b_o"], float))
    methods = {"finite": 1e-6}
    if ACTIVATIONS[activation].analytic:
        methods["complex"] = 1e-10
    for method, tolerance in methods.items():
        for name, want in numerical(module, x, y, parameters, method).items():
            assert relative(got[name], want) < tolerance, (method, name, got[name], want)


@pytest.mark.parametrize(("hidden", "bias"), SHAPES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_unrolled_and_loop_agree(activation, hidden, bias):
    x, y, parameters = point(activation, hidden, bias, steps=6, seed=1)
    unrolled = module_for(activation, "unrolled", hidden, bias, steps=6).loss_and_grad(x, y, **parameters)
    looped = module_for(activation, "loop", hidden, bias, steps=6).loss_and_grad(x, y, **parameters)
    for a, b in zip(unrolled, looped):
        assert relative(a, b) < 1e-12


def _exact(value):
    """Floats as the Fractions they are (the oracle evaluates exact inputs)."""
    return np.vectorize(Fraction, otypes=[object])(np.asarray(value, dtype=float))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_values_equal_sp_diff_of_the_unrolled_loss(activation, bias):
    """loss_and_grad equals sp.diff of the unrolled loss (symbolic/engine/oracle.py: the rnn cell's equations written
    out entry by entry for n steps, no δ, no transpose, no recursion), evaluated at 30 digits."""
    steps, hidden, inputs = 3, 2, 2
    unrolled = oracle.Unrolled(builtin("rnn", activation=activation, bias=bias), hidden, inputs, steps)
    names = ["w_i", "w_h", "w_o"] + (["b_h", "b_o"] if bias else [])
    x, y, values = point(activation, hidden, bias, steps=steps, seed=7, inputs=inputs)
    wanted = []
    with mpmath.workdps(30):
        for b in range(3):
            at = unrolled.mp_point({name: _exact(values[name]) for name in names}, _exact(x[b:b + 1]),
                                   [Fraction(float(y[b]))])
            memo: dict = {}
            gradient = unrolled.gradient(lambda expr, at=at, memo=memo: oracle.value_of(expr, at, memo, oracle._mp),
                                         mpmath.mpf(0))
            wanted.append({name: np.array(gradient[name], dtype=float) for name in names})
    for name in names:  # every gradient is somewhere not 0 (ReLU may shut a whole sequence)
        assert max(np.abs(want[name]).max() for want in wanted) > 1e-6, name
    for mode in MODES:
        module = module_for(activation, mode, hidden, bias, steps=steps, inputs=inputs)
        for b in range(3):
            _, *got = module.loss_and_grad(x[b], y[b], **values)
            for name, g in zip(names, got):
                want = wanted[b][name].reshape(np.shape(values[name]))
                assert relative(g, want) < 1e-12, (mode, name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_hidden_one_with_zero_biases_is_the_scalar_module(activation, mode):
    scalar = load(Model(steps=5, activation=activation), mode)
    matrix = module_for(activation, mode, 1, True, steps=5)
    x, y, parameters = point(activation, 1, True, steps=5, seed=4)
    w_i, w_h, w_o = parameters["w_i"][0], float(parameters["w_h"][0, 0]), float(parameters["w_o"][0])
    want = scalar.loss_and_grad(x, y, w_i, w_h, w_o)
    got = matrix.loss_and_grad(
        x, y, parameters["w_i"], parameters["w_h"], parameters["w_o"], b_h=[0.0], b_o=0.0
    )
    assert relative(got[0], want[0]) < 1e-13
    assert relative(got[1][0], want[1]) < 1e-12
    assert relative(got[2][0, 0], want[2]) < 1e-12 and relative(got[3][0], want[3]) < 1e-12
    assert np.allclose(
        matrix.forward(x, parameters["w_i"], parameters["w_h"], parameters["w_o"], b_h=[0], b_o=0),
        scalar.forward(x, w_i, w_h, w_o),
        rtol=1e-14,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_bptt_terms_sum_to_the_gradient(activation, mode):
    hidden, bias, steps = 3, True, 5
    module = module_for(activation, mode, hidden, bias, steps=steps)
    x, y, parameters = point(activation, hidden, bias, steps=steps, seed=3)
    terms = module.bptt_terms(x, y, **parameters)
    assert set(terms) == {"states", "derivatives", "deltas", "terms_w_h", "terms_w_i", "output_factor"}
    assert terms["states"].shape == terms["derivatives"].shape == terms["deltas"].shape == (3, steps, hidden)
    assert terms["terms_w_h"].shape == (3, steps, hidden, hidden)
    assert terms["terms_w_i"].shape == (3, steps, hidden, 3)
    assert terms["output_factor"].shape == (3,)
    o = reference_forward(x, parameters, activation)
    assert np.allclose(terms["states"], o[:, 1:], rtol=1e-13, atol=1e-15)
    derivative = {
        "tanh": 1 - o[:, 1:] ** 2,
        "sigmoid": o[:, 1:] * (1 - o[:, 1:]),
        "relu": (o[:, 1:] > 0) * 1.0,
        "identity": np.ones_like(o[:, 1:]),
    }[activation]
    assert np.allclose(terms["derivatives"], derivative, rtol=1e-13, atol=1e-15)
    for b in range(3):  # per sequence: the gradient of that sequence's own loss
        _, dw_i, dw_h, dw_o, db_h, db_o = module.loss_and_grad(x[b : b + 1], y[b : b + 1], **parameters)
        assert relative(terms["terms_w_h"][b].sum(axis=0), dw_h) < 1e-12
        assert relative(terms["terms_w_i"][b].sum(axis=0), dw_i) < 1e-12
        assert relative(terms["output_factor"][b], db_o) < 1e-12
        assert relative(terms["output_factor"][b] * terms["states"][b, -1], dw_o) < 1e-12
        assert relative(terms["deltas"][b, -1], terms["output_factor"][b] * parameters["w_o"]) < 1e-12
        # δ_t = W_hᵀ (f′(a_(t+1)) ⊙ δ_(t+1))
        gates = terms["derivatives"][b] * terms["deltas"][b]
        assert relative(terms["deltas"][b, :-1], gates[1:] @ parameters["w_h"]) < 1e-12
        assert relative(gates.sum(axis=0), db_h) < 1e-12


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_wide_batches_sum_step_by_step_with_the_same_results(activation, mode, bias, monkeypatch):
    """From _PER_STEP_ENTRIES entries per step (B·H) on, loss_and_grad sums the weight gradients
    step by step: the same gradient as one product over all gates (forced by raising the
    threshold), complex inputs included, integer inputs as floats, no NumPy warnings."""
    hidden = 8
    module = module_for(activation, mode, hidden, bias)
    batch = 16  # made wide by lowering the threshold to B·H (a batch of B·H ≥ 4096 has ReLU kinks)
    x, y, parameters = point(activation, hidden, bias, batch=batch, seed=11)
    # Complex inputs (the complex step) for analytic activations only, as everywhere.
    cases = [parameters]
    if ACTIVATIONS[activation].analytic:
        cases.append({**parameters, "w_h": parameters["w_h"] + 1e-20j})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with monkeypatch.context() as patch:
            patch.setattr(module, "_PER_STEP_ENTRIES", batch * hidden)
            wide = [module.loss_and_grad(x, y, **case) for case in cases]
        with monkeypatch.context() as patch:
            patch.setattr(module, "_PER_STEP_ENTRIES", batch * hidden + 1)
            narrow = [module.loss_and_grad(x, y, **case) for case in cases]
    for got, want in zip(wide[0], narrow[0]):
        assert relative(got, want) < 1e-13
    for got, want in zip(wide[-1], narrow[-1]):
        assert relative(np.real(got), np.real(want)) < 1e-13
        assert relative(np.imag(got), np.imag(want)) < 1e-12
    integers = {name: np.round(4 * np.asarray(value)).astype(int) for name, value in parameters.items()}
    floats = {name: value.astype(float) for name, value in integers.items()}
    x_integers = np.round(x).astype(int)
    for size in (batch * hidden, batch * hidden + 1):  # step by step, then one product at the end
        monkeypatch.setattr(module, "_PER_STEP_ENTRIES", size)
        got = module.loss_and_grad(x_integers, y, **integers)
        want = module.loss_and_grad(x_integers.astype(float), y, **floats)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_shapes_and_errors():
    module = module_for("tanh", "loop", 2, True)
    x, y, parameters = point("tanh", 2, True)
    assert module.HIDDEN_SIZE == 2 and module.BIAS is True and module.STEPS is None and module.MODE == "loop"
    assert module.forward(x, **parameters).shape == (3,)
    assert isinstance(module.loss(x, y, **parameters), float)
    single = module.loss_and_grad(x[0], y[0], **parameters)  # (n, D) is a batch of one
    assert single[0] == pytest.approx(module.loss(x[:1], y[:1], **parameters), rel=1e-15)
    bad = {
        "w_i": np.zeros((3, 2)),
        "w_h": np.zeros((2, 3)),
        "w_o": np.zeros((2, 1)),
        "b_h": np.zeros(3),
        "b_o": np.zeros(2),
    }
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            module.loss_and_grad(x, y, **{**parameters, name: value})
    for name in ("b_h", "b_o"):
        with pytest.raises(ValueError, match=f"{name} is required"):
            module.loss(x, y, **{k: v for k, v in parameters.items() if k != name})
    with pytest.raises(ValueError, match="w_h must be finite"):
        module.loss(x, y, **{**parameters, "w_h": np.full((2, 2), np.nan)})
    with pytest.raises(ValueError, match="w_i must hold numbers"):
        module.loss(x, y, **{**parameters, "w_i": np.full((2, 3), "a")})
    with pytest.raises(ValueError, match=r"y must hold values in \[0, 1\]"):
        module.loss(x, y + 2, **parameters)
    with pytest.raises(ValueError, match="x must have shape"):
        module.loss(x[:0], y[:0], **parameters)
    unrolled = module_for("tanh", "unrolled", 2, False)
    no_bias = {k: v for k, v in parameters.items() if not k.startswith("b_")}
    with pytest.raises(ValueError, match="unrolled for exactly"):
        unrolled.loss(x[:, :2], y, **no_bias)
    with pytest.raises(TypeError):
        unrolled.loss(x, y, **parameters)  # no biases in a bias-free module


@pytest.mark.parametrize(
    ("activation", "mode", "hidden", "bias"),
    [
        ("tanh", "unrolled", 2, True),
        ("relu", "loop", 3, False),
        ("identity", "loop", 1, True),
        ("identity", "unrolled", 8, True),
        ("sigmoid", "unrolled", 4, False),
    ],
)
def test_generated_source_passes_ruff(activation, mode, hidden, bias, tmp_path):
    path = tmp_path / "rnn_matrix.py"
    path.write_text(generate(Model(steps=4, activation=activation, hidden=hidden, bias=bias), mode))
    project = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["check", "--isolated"], ["check", *project], ["format", "--check", *SETTINGS],
                    ["format", "--check", *project]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, str(path)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_unrolled_code_grows_linearly_and_has_no_batch_loop():
    def lines(n):
        return len(generate(Model(steps=n, hidden=4), "unrolled").splitlines())

    # Per step: the forward step in place (a comment, the input's map, the row, matmul, +=, tanh), the
    # backward step (a comment, the δ's slot, its product, what is sent back) and vjp's backward step
    # (the same, with the upstream gradient added as the step begins).
    assert lines(40) - lines(20) == lines(60) - lines(40) <= 20 * 18
    source = generate(Model(steps=4, hidden=4, bias=True), "loop")
    # for statements (a docstring's line may begin with the word too)
    loops = [line.strip() for line in source.splitlines() if line.strip().startswith("for ") and line.endswith(":")]
    # loops over time, and over the few names and shapes of the parameters: never over the batch
    assert loops and all(
        line in ("for t in range(1, steps + 1):", "for t in range(steps, 0, -1):")
        or line.startswith(("for name", "for shape", "for length", "for key"))
        for line in loops
    ), loops


def test_header_command_and_cli(tmp_path):
    source = generate(Model(steps=3, hidden=4, bias=True), "loop")
    assert (
        source.splitlines()[1] == "#   bptt codegen --steps 3 --activation tanh --hidden 4 --bias --mode loop"
    )
    assert "--hidden" not in generate(Model(steps=3), "loop").splitlines()[1]
    result = run_bptt("codegen", "--hidden", "3", "--bias", "--steps", "5", "-o", "m.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "m.py").read_text()
    assert "--steps 5 --activation tanh --hidden 3 --bias --mode unrolled -o m.py" in written
    checked = run_bptt("check", str(tmp_path / "m.py"))
    assert checked.returncode == 0 and "H = 3" in checked.stdout and "b_h" in checked.stdout and "b_o" in checked.stdout


@pytest.mark.parametrize(("activation", "hidden", "bias"), [("tanh", 8, True), ("relu", 2, False)])
def test_check_passes_good_and_rejects_tampered(activation, hidden, bias, tmp_path):
    source = generate(Model(steps=4, activation=activation, hidden=hidden, bias=bias), "loop")
    good = tmp_path / "good.py"
    good.write_text(source)
    report = check_module(load_module(good), str(good))
    assert report.passed and report.hidden == hidden, format_report(report)
    names = {"w_i", "w_h", "w_o"} | ({"b_h", "b_o"} if bias else set())
    assert all(set(errors) == names for errors in report.errors.values())
    assert ("complex step" in report.errors) == ACTIVATIONS[activation].analytic
    # ∂L/∂W_h scaled by 1.001 where the module sums it (over all steps at once, or step by step, and
    # in vjp)
    lines = source.splitlines()
    marked = [k for k, line in enumerate(lines) if line.strip().startswith('grads["w_h"] = ')]
    assert len(marked) == 3, marked
    for k in marked:
        lines[k] = lines[k].replace('grads["w_h"] = ', 'grads["w_h"] = 1.001 * ', 1)
    tampered = tmp_path / "tampered.py"
    tampered.write_text("\n".join(lines) + "\n")
    report = check_module(load_module(tampered), str(tampered))
    assert not report.passed
    worst = report.errors["finite differences"]
    assert 5e-4 < worst["w_h"] < 2e-3 and worst["w_i"] < 1e-6
