"""The generated NumPy modules: gradients against three independent oracles, shapes, numerics,
lint, code size and byte-exact drift of the committed modules."""

from __future__ import annotations

import ast
import warnings

import numpy as np
import pytest
import sympy as sp

from symbolic.activations import ACTIVATIONS
from symbolic.codegen import UNROLLED_LIMIT, generate, load, resolve_mode
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.notes.derive import Derivation

from .conftest import ACTIVATION_NAMES, ROOT, run_bptt

MODES = ("unrolled", "loop")
STEPS = (1, 2, 3, 10, 50)
CASES = [(a, m, n) for a in ACTIVATION_NAMES for m in MODES for n in STEPS]


def module_for(activation: str, mode: str, steps: int):
    return load(Model(steps=steps, activation=activation), mode)


def point(activation: str, steps: int, batch: int = 3, seed: int = 0):
    """Random inputs; for ReLU, pre-activations are kept at least 1e-3 from the kink."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        x = rng.normal(size=(batch, steps, 3))
        y = np.array([0.0, 1.0, 1.0][:batch])
        w_i = rng.uniform(-1, 1, size=3)
        w_h, w_o = float(rng.uniform(-1.1, 1.1)), float(rng.uniform(-2, 2))
        if activation != "relu":
            break
        a, _ = reference_forward(x, w_i, w_h, activation, pre=True)
        if np.min(np.abs(a)) > 1e-3:
            break
    return x, y, w_i, w_h, w_o


def reference_forward(x, w_i, w_h, activation, pre=False):
    """A plain float64 recursion, independent of the generated code: o_t = f(w_i·x_t + w_h o_(t−1))."""
    f = {
        "tanh": np.tanh,
        "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
        "relu": lambda a: np.maximum(a, 0),
        "identity": lambda a: a,
    }[activation]
    batch, steps, _ = x.shape
    o = np.zeros((batch, steps + 1))
    a = np.zeros((batch, steps))
    for t in range(steps):
        a[:, t] = x[:, t] @ w_i + w_h * o[:, t]
        o[:, t + 1] = f(a[:, t])
    return (a, o) if pre else o


def relative(got, want):
    got, want = np.atleast_1d(got), np.atleast_1d(want)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def numerical_gradient(module, args, method):
    x, y, w_i, w_h, w_o = args
    h = 1e-20 if method == "complex" else 1e-6

    def d(shifted):
        if method == "complex":
            return np.imag(shifted(1j * h)) / h
        return (shifted(h) - shifted(-h)) / (2 * h)

    def loss(wi, wh, wo):
        return module.loss(x, y, wi, wh, wo)

    return (
        np.array([d(lambda s, e=e: loss(w_i + s * e, w_h, w_o)) for e in np.eye(3)]),
        d(lambda s: loss(w_i, w_h + s, w_o)),
        d(lambda s: loss(w_i, w_h, w_o + s)),
    )


@pytest.mark.parametrize(("activation", "mode", "steps"), CASES)
def test_gradient_matches_finite_differences_and_complex_step(activation, mode, steps):
    module = module_for(activation, mode, steps)
    args = point(activation, steps, seed=steps)
    _, dw_i, dw_h, dw_o = module.loss_and_grad(*args)
    assert isinstance(dw_h, float) and isinstance(dw_o, float) and dw_i.shape == (3,)
    methods = {"finite": 1e-6}
    if ACTIVATIONS[activation].analytic:
        methods["complex"] = 1e-10
    for method, tolerance in methods.items():
        want = numerical_gradient(module, args, method)
        for got, expected in zip((dw_i, dw_h, dw_o), want):
            assert relative(got, expected) < tolerance, (method, got, expected)


@pytest.mark.parametrize(("activation", "steps"), [(a, n) for a in ACTIVATION_NAMES for n in STEPS])
def test_unrolled_and_loop_agree(activation, steps):
    args = point(activation, steps, batch=3, seed=1)
    unrolled = module_for(activation, "unrolled", steps).loss_and_grad(*args)
    looped = module_for(activation, "loop", steps).loss_and_grad(*args)
    for a, b in zip(unrolled, looped):
        assert relative(a, b) < 1e-12


@pytest.mark.parametrize(("activation", "steps"), [(a, n) for a in ACTIVATION_NAMES for n in (1, 2, 3, 5)])
def test_values_equal_the_sympy_derivation(activation, steps):
    """loss_and_grad equals derivation.bptt(...) and dL_dw_o, lambdified, at the same points."""
    derivation = Derivation(Model(steps=steps, activation=activation))
    u = derivation.unrolled
    symbols = [*u.o, u.y_hat, u.y, *u.w_i, u.w_h, u.w_o, *(s for row in u.x for s in row)]
    formulas = [derivation.bptt("w_i", d) for d in range(3)] + [derivation.bptt("w_h"), derivation.dL_dw_o]
    evaluate = sp.lambdify(symbols, formulas, modules="numpy")
    x, y, w_i, w_h, w_o = point(activation, steps, batch=3, seed=7)
    o = reference_forward(x, w_i, w_h, activation)
    for mode in MODES:
        module = module_for(activation, mode, steps)
        for b in range(3):
            y_hat = 1 / (1 + np.exp(-w_o * o[b, -1]))
            values = evaluate(*o[b, 1:], y_hat, y[b], *w_i, w_h, w_o, *x[b].ravel())
            _, dw_i, dw_h, dw_o = module.loss_and_grad(x[b], y[b], w_i, w_h, w_o)
            assert relative(dw_i, np.array(values[:3], dtype=float)) < 1e-12
            assert relative(dw_h, float(values[3])) < 1e-12
            assert relative(dw_o, float(values[4])) < 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_bptt_terms_sum_to_the_gradient(activation, mode):
    module = module_for(activation, mode, 10)
    x, y, w_i, w_h, w_o = point(activation, 10, batch=3, seed=3)
    terms = module.bptt_terms(x, y, w_i, w_h, w_o)
    assert terms["states"].shape == (3, 10) and terms["factors"].shape == (3, 9)
    assert terms["terms_w_h"].shape == (3, 10) and terms["terms_w_i"].shape == (3, 10, 3)
    assert terms["output_factor"].shape == (3,)
    assert np.allclose(terms["states"], reference_forward(x, w_i, w_h, activation)[:, 1:], rtol=1e-13)
    for b in range(3):  # per sequence: the gradient of that sequence's own loss
        _, dw_i, dw_h, _ = module.loss_and_grad(x[b : b + 1], y[b : b + 1], w_i, w_h, w_o)
        assert relative(terms["terms_w_h"][b].sum(), dw_h) < 1e-12
        assert relative(terms["terms_w_i"][b].sum(axis=0), dw_i) < 1e-12
    # term n is the short-term one: output factor · ∂⁺o_n/∂w_h, no Jacobian factor
    derivation = Derivation(Model(steps=10, activation=activation))
    assert terms["factors"].shape[1] == len([t for t in derivation.terms() if t.gap > 0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_wide_batches_run_in_place_with_the_same_results(activation, mode, monkeypatch):
    """From _IN_PLACE_BATCH sequences on, the forward recursion updates its array in place: the
    results equal the out-of-place step's to the bit, the complex step still flows through, and
    huge logits raise no NumPy warning."""
    module = module_for(activation, mode, 10)
    batch = module._IN_PLACE_BATCH + 3
    x, _, w_i, w_h, w_o = point(activation, 10, batch=batch, seed=5)
    y = np.arange(batch) % 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = module.bptt_terms(x, y, w_i, w_h, w_o)
        with monkeypatch.context() as patch:
            patch.setattr(module, "_IN_PLACE_BATCH", batch + 1)
            out_of_place = module.bptt_terms(x, y, w_i, w_h, w_o)
        for key, value in out_of_place.items():
            np.testing.assert_array_equal(wide[key], value, err_msg=key)
        want = reference_forward(x, w_i, w_h, activation)[:, 1:]
        assert relative(wide["states"], want) < 1e-14
        _, dw_i, dw_h, _ = module.loss_and_grad(x, y, w_i, w_h, w_o)
        for w_o_huge in (1e4, -1e4):
            assert np.isfinite(module.loss_and_grad(x, y, w_i, w_h, w_o_huge)[0])
        if ACTIVATIONS[activation].analytic:  # complex states through the in-place step
            stepped = module.loss(x, y, w_i, w_h + 1e-20j, w_o)
            assert relative(np.imag(stepped) / 1e-20, dw_h) < 1e-10
            stepped = module.loss(x, y, w_i + 1e-20j * np.eye(3)[1], w_h, w_o)
            assert relative(np.imag(stepped) / 1e-20, dw_i[1]) < 1e-10


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_every_backward_strategy_gives_the_gradient(activation, mode, monkeypatch):
    """The batch width picks how δ is computed (one accumulate, products over doubling distances,
    or step by step for wide batches) and x is read in blocks of _BLOCK sequences: each way, forced
    on a small batch with a partial last block, gives the gradient of ``loss`` (the forward pass
    alone) by the complex step (central differences for a kinked f); so do bptt_terms' terms, summed
    (its suffix products go by the same widths: the row-by-row one from _WIDE_BATCH)."""
    module = module_for(activation, mode, 10)
    batch = 11
    for seed in range(7, 100):  # a point whose δs reach back several steps (ReLU: active there)
        x, _, w_i, w_h, w_o = point(activation, 10, batch=batch, seed=seed)
        if (reference_forward(x, w_i, w_h, activation, pre=True)[0][:, -4:] > 0).all(axis=1).any():
            break
    y = np.linspace(0, 1, batch)
    analytic = ACTIVATIONS[activation].analytic

    def derivative(shift):
        if analytic:
            return np.imag(module.loss(x, y, *shift(1e-20j))) / 1e-20
        return (module.loss(x, y, *shift(1e-6)) - module.loss(x, y, *shift(-1e-6))) / 2e-6

    want_i = [derivative(lambda h, d=d: (w_i + h * np.eye(3)[d], w_h, w_o)) for d in range(3)]
    want_h = derivative(lambda h: (w_i, w_h + h, w_o))
    tolerance = 1e-12 if analytic else 1e-6
    strategies = {
        "accumulate": {},
        "doubling": {"_DOUBLING_BATCH": 1},
        "step by step": {"_DOUBLING_BATCH": 1, "_WIDE_BATCH": 1},
        "blocks of 4": {"_BLOCK": 4, "_WIDE_BATCH": 1},
    }
    results = {}
    for name, constants in strategies.items():
        with monkeypatch.context() as patch:
            for constant, value in constants.items():
                patch.setattr(module, constant, value)
            _, dw_i, dw_h, _ = results[name] = module.loss_and_grad(x, y, w_i, w_h, w_o)
            terms = module.bptt_terms(x, y, w_i, w_h, w_o)  # its suffix products by the same rule
        assert relative(dw_i, np.array(want_i)) < tolerance, name
        assert relative(dw_h, want_h) < tolerance, name
        assert relative(terms["terms_w_h"].sum(axis=1).mean(), want_h) < tolerance, name
        assert relative(terms["terms_w_i"].sum(axis=1).mean(axis=0), np.array(want_i)) < tolerance, name
    for name, got in results.items():  # and the ways agree with each other to rounding
        for a, b in zip(got, results["accumulate"]):
            assert relative(a, b) < 1e-13, name


@pytest.mark.parametrize("mode", MODES)
def test_integer_inputs_give_the_float_results(mode):
    """Integer x and weights are valid; the states must not be truncated to integers."""
    module = module_for("tanh", mode, 3)
    for batch in (2, module._IN_PLACE_BATCH + 1):
        x = np.arange(batch * 9).reshape(batch, 3, 3) % 3
        y = np.arange(batch) % 2
        got = module.loss_and_grad(x, y, np.array([1, 0, -1]), 1, 2)
        want = module.loss_and_grad(x.astype(float), y, np.array([1.0, 0.0, -1.0]), 1.0, 2.0)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_errors(mode):
    module = module_for("tanh", mode, 3)
    x, y, w_i, w_h, w_o = point("tanh", 3)
    assert module.forward(x, w_i, w_h, w_o).shape == (3,)
    assert isinstance(module.loss(x, y, w_i, w_h, w_o), float)
    single = module.loss_and_grad(x[0], y[0], w_i, w_h, w_o)  # (N, D) is a batch of one
    assert single[0] == pytest.approx(module.loss(x[:1], y[:1], w_i, w_h, w_o), rel=1e-15)
    bad = [
        ((x[..., :2], y, w_i, w_h, w_o), "x"),
        ((x, y, w_i[:2], w_h, w_o), "w_i"),
        ((x, y[:2], w_i, w_h, w_o), "y"),
        ((x, y, w_i, np.ones(2), w_o), "w_h"),
        ((x, y, w_i, w_h, np.ones(2)), "w_o"),
        ((x, y + 2, w_i, w_h, w_o), "y"),
        ((x[:, :0], y, w_i, w_h, w_o), "x"),
    ]
    if mode == "unrolled":
        bad.append(((np.zeros((3, 4, 3)), y, w_i, w_h, w_o), "x"))
    for args, name in bad:
        with pytest.raises(ValueError, match=name):
            module.loss_and_grad(*args)
    if mode == "loop":  # any length
        assert np.isfinite(module.loss_and_grad(np.zeros((3, 17, 3)), y, w_i, w_h, w_o)[0])
    assert (module.STEPS, module.MODE, module.ACTIVATION, module.INPUT_SIZE) == (
        3 if mode == "unrolled" else None,
        mode,
        "tanh",
        3,
    )


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_no_warnings_and_exact_loss_for_huge_logits(activation):
    module = module_for(activation, "loop", 3)
    x = np.ones((4, 3, 3))
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for w_o in (1e4, -1e4):
            o_n = reference_forward(x, np.full(3, 0.5), 0.5, activation)[:, -1]
            z = w_o * o_n
            loss, dw_i, dw_h, dw_o = module.loss_and_grad(x, y, np.full(3, 0.5), 0.5, w_o)
            want = np.mean(np.maximum(z, 0) - y * z)  # log1p(e^(−|z|)) underflows to 0 exactly
            assert loss == pytest.approx(want, rel=1e-15) and np.isfinite(loss)
            assert np.all(np.isfinite(dw_i)) and np.isfinite(dw_h) and np.isfinite(dw_o)
        module.loss(x, y, np.full(3, 0.5), 0.5 + 1e-20j, 1e4)  # complex step at a huge logit


def test_modes_and_limits():
    assert resolve_mode(Model(steps=64), None) == "unrolled"
    assert resolve_mode(Model(steps=65), None) == "loop"
    with pytest.raises(UsageError, match="--mode loop"):
        generate(Model(steps=UNROLLED_LIMIT + 1), "unrolled")
    with pytest.raises(UsageError, match="unrolled, loop"):
        generate(Model(steps=3), "vectorised")


def test_header_names_the_canonical_command():
    source = generate(Model(steps=5, activation="relu"), None, "out/model.py")
    head = source.splitlines()[:3]
    assert "Generated by bptt" in head[0] and "do not edit" in head[0]
    assert head[1] == "#   bptt codegen --steps 5 --activation relu --mode unrolled -o out/model.py"
    loop = generate(Model(steps=3, activation="tanh", inputs=4), "loop")
    assert "#   bptt codegen --steps 3 --activation tanh --inputs 4 --mode loop\n" in loop


def test_imports_only_numpy_and_no_batch_loop():
    for mode in MODES:
        tree = ast.parse(generate(Model(steps=3), mode))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
        assert imported == {"numpy", "__future__"}
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        for name in ("forward", "loss", "loss_and_grad", "bptt_terms"):
            assert ast.get_docstring(functions[name]), name
            assert functions[name].returns is not None
            assert not any(isinstance(n, (ast.For, ast.While)) for n in ast.walk(functions[name]))
        # The helpers' loops over a range go over blocks of _BLOCK sequences or count steps down
        # (rows of time-major arrays): never sequence by sequence.
        for loop in ast.walk(tree):
            if isinstance(loop, ast.For) and ast.unparse(loop.iter).startswith("range("):
                assert ast.unparse(loop.iter.args[-1]) in ("_BLOCK", "-1"), ast.unparse(loop.iter)


def unrolled_lines(steps: int) -> int:
    return len(generate(Model(steps=steps), "unrolled").splitlines())


def test_unrolled_code_grows_linearly():
    at_20, at_40, at_60 = unrolled_lines(20), unrolled_lines(40), unrolled_lines(60)
    # Four forward lines per step (one out of place, three in place), nothing quadratic.
    assert at_40 - at_20 == at_60 - at_40 == 4 * 20
    loop = [len(generate(Model(steps=n), "loop").splitlines()) for n in (20, 40)]
    assert loop[0] == loop[1]


# ruff format --check and ruff check of the generated modules: tests/test_format.py


SEEDS = {
    "rnn_tanh_n3.py": "--steps 3 --activation tanh --mode unrolled",
    "rnn_tanh_loop.py": "--steps 3 --activation tanh --mode loop",
}
#: The framework targets' modules (issue 27): generated without the framework imported; checked by
#: tests/test_export_torch.py and test_export_jax.py.
TARGET_SEEDS = {
    "gru_torch.py": "--cell gru --target torch",
    "gru_jax.py": "--cell gru --target jax",
}


@pytest.mark.parametrize("name", sorted(SEEDS | TARGET_SEEDS))
def test_committed_modules_do_not_drift(name, tmp_path):
    """Regenerate with the same argument string (from a scratch directory) under two hash seeds."""
    (tmp_path / "generated").mkdir()
    committed = (ROOT / "generated" / name).read_bytes()
    for hash_seed in ("0", "12345"):
        target = tmp_path / "generated" / name
        target.unlink(missing_ok=True)
        result = run_bptt(
            "codegen",
            *(SEEDS | TARGET_SEEDS)[name].split(),
            "-o",
            f"generated/{name}",
            cwd=tmp_path,
            env={"PYTHONHASHSEED": hash_seed},
        )
        assert result.returncode == 0, result.stderr
        assert target.read_bytes() == committed, f"generated/{name} drifted: regenerate it"


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_committed_modules_have_correct_gradients(name):
    from symbolic.verify.check import check_module, load_module

    module = load_module(ROOT / "generated" / name)
    report = check_module(module, name)
    assert report.passed and set(report.errors) == {"finite differences", "complex step"}
    assert "j = 3 (short-term)" in (ROOT / "generated" / name).read_text() or module.MODE == "loop"


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_loop_module_from_one_step_equals_module_from_all_steps(activation):
    """generate() derives loop code from one generic step; rendering from all n gives the same bytes."""
    from symbolic.codegen import command, numpy_backend
    from symbolic.codegen.format import format_python
    from symbolic.notes.derive import Derivation
    from symbolic.templating import render

    model = Model(steps=6, activation=activation)
    full = numpy_backend.context(Derivation(model), "loop", command(model, "loop", None))
    assert generate(model, mode="loop") == format_python(render("numpy", "module.py.j2", **full))
