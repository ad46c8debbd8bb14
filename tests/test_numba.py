"""The Numba backend of the notes' scalar model (templates/numba/module.py.j2): the same gradient checks
as the NumPy modules (finite differences, complex step), agreement with the NumPy backend, one
validation for both, bptt check, the on-disk cache, no SciPy needed. Every other model (the plain RNN
with H > 1 or biases, every cell) is the generic module's: tests/test_numba_cells.py.

Compiling costs about a second per kernel and dtype, so each module is loaded once per test session
(``load`` caches per model, mode and backend) and the unrolled modules, whose kernels are those of
loop mode behind a fixed-length check, are compiled for fewer lengths and activations than the loop ones."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from symbolic.activations import ACTIVATIONS
from symbolic.codegen import _load, generate, load
from symbolic.errors import UsageError
from symbolic.model import Model
from symbolic.verify.check import run_check

from .conftest import ACTIVATION_NAMES, ROOT
from .test_codegen import numerical_gradient, point, reference_forward, relative

if os.environ.get("CI"):
    import numba  # CI installs the extra: a missing Numba fails there instead of skipping
else:
    numba = pytest.importorskip("numba")

STEPS = (1, 3, 10, 50)
# Loop modules: one per activation, every length. Unrolled: an analytic activation and one that is not, at
# n = 3; an unrolled module's kernels are its loop module's, character for character (only STEPS and the
# length check differ), so the loop modules carry each activation and every length through them.
CASES = [(a, "loop", n) for a in ACTIVATION_NAMES for n in STEPS]
CASES += [(a, "unrolled", 3) for a in ("tanh", "relu")]


def numba_index(directory, pattern):
    """Numba's cache index files: beside the module, or under $NUMBA_CACHE_DIR when that is set."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return list(Path(os.environ["NUMBA_CACHE_DIR"]).rglob(pattern))
    return list(directory.glob(pattern))


def numba_module(activation, mode, steps):
    return load(Model(steps=steps, activation=activation), mode, backend="numba")


def numpy_module(activation, mode, steps):
    return load(Model(steps=steps, activation=activation), mode)


@pytest.mark.parametrize(("activation", "mode", "steps"), CASES)
def test_gradient_matches_finite_differences_and_complex_step(activation, mode, steps):
    module = numba_module(activation, mode, steps)
    args = point(activation, steps, seed=steps)
    _, dw_i, dw_h, dw_o = module.loss_and_grad(*args)
    assert isinstance(dw_h, float) and isinstance(dw_o, float) and dw_i.shape == (3,)
    methods = {"finite": 1e-6}
    if ACTIVATIONS[activation].analytic:
        methods["complex"] = 1e-10  # complex128 flows through the compiled kernels
    for method, tolerance in methods.items():
        want = numerical_gradient(module, args, method)
        for got, expected in zip((dw_i, dw_h, dw_o), want):
            assert relative(got, expected) < tolerance, (method, got, expected)


@pytest.mark.parametrize(("activation", "mode", "steps"), CASES)
def test_agrees_with_the_numpy_backend(activation, mode, steps):
    fast, reference = numba_module(activation, mode, steps), numpy_module(activation, mode, steps)
    x, y, w_i, w_h, w_o = point(activation, steps, batch=3, seed=11)
    for got, want in zip(
        fast.loss_and_grad(x, y, w_i, w_h, w_o), reference.loss_and_grad(x, y, w_i, w_h, w_o)
    ):
        assert relative(got, want) < 1e-13
    assert relative(fast.loss(x, y, w_i, w_h, w_o), reference.loss(x, y, w_i, w_h, w_o)) < 1e-13
    assert relative(fast.forward(x, w_i, w_h, w_o), reference.forward(x, w_i, w_h, w_o)) < 1e-13
    assert (fast.STEPS, fast.MODE, fast.ACTIVATION, fast.INPUT_SIZE) == (
        reference.STEPS,
        reference.MODE,
        reference.ACTIVATION,
        reference.INPUT_SIZE,
    )


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_bptt_terms_equal_the_numpy_backends(activation):
    fast, reference = numba_module(activation, "loop", 10), numpy_module(activation, "loop", 10)
    x, y, w_i, w_h, w_o = point(activation, 10, batch=3, seed=3)
    got, want = fast.bptt_terms(x, y, w_i, w_h, w_o), reference.bptt_terms(x, y, w_i, w_h, w_o)
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert np.allclose(got[name], want[name], rtol=1e-13, atol=1e-15), name
    assert np.allclose(got["states"], reference_forward(x, w_i, w_h, activation)[:, 1:], rtol=1e-13)


def _drivers(module, x, y, w_i, w_h, w_o, width):
    """The sums of the serial and the parallel gradient drivers, called directly for ``width``."""
    arguments = module._compiled_arguments(x, y, w_i, w_h, w_o)
    blocks = -(-len(x) // width)
    return {
        "serial": module._gradients_serial(*arguments, width, blocks),
        "parallel": module._gradients_parallel(*arguments, width, blocks, min(blocks, 3)),
    }


def test_blocks_agree_with_numpy_and_do_not_depend_on_threads():
    """Several blocks and a partial last one: the NumPy backend's results; the parallel driver gives
    the serial one's sums bit for bit (each block owns its row of sums, added in order), and so does
    the module with any number of threads; other block widths agree to rounding."""
    module = numba_module("tanh", "loop", 50)
    batch = 3 * module._WIDTH + 5
    _, _, w_i, w_h, w_o = point("tanh", 50, seed=5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(batch, 50, 3))
    y = rng.integers(0, 2, size=batch).astype(float)
    got = module.loss_and_grad(x, y, w_i, w_h, w_o)
    reference = numpy_module("tanh", "loop", 50)
    for value, want in zip(got, reference.loss_and_grad(x, y, w_i, w_h, w_o)):
        assert relative(value, want) < 1e-13
    assert relative(module.loss(x, y, w_i, w_h, w_o), reference.loss(x, y, w_i, w_h, w_o)) < 1e-14
    assert relative(module.forward(x, w_i, w_h, w_o), reference.forward(x, w_i, w_h, w_o)) < 1e-14
    sums = _drivers(module, x, y, w_i, w_h, w_o, module._WIDTH)
    assert np.array_equal(sums["serial"], sums["parallel"])
    threads = numba.get_num_threads()
    try:
        for count in sorted({1, threads}):
            numba.set_num_threads(count)
            saved, module._PARALLEL_BATCH = module._PARALLEL_BATCH, 0  # the parallel driver at any size
            try:
                again = module.loss_and_grad(x, y, w_i, w_h, w_o)
            finally:
                module._PARALLEL_BATCH = saved
            assert again[0] == got[0] and np.array_equal(again[1], got[1]) and again[2:] == got[2:]
    finally:
        numba.set_num_threads(threads)
    for width in (1, 7, 64, batch, batch + 3):  # one sequence per block up to one block for all
        other = _drivers(module, x, y, w_i, w_h, w_o, width)
        assert relative(other["serial"], sums["serial"]) < 1e-13, width
        assert np.array_equal(other["serial"], other["parallel"]), width


def test_kernel_f_is_within_two_ulp_of_numpy_and_exact_for_complex():
    """The compiled tanh and σ of the kernels (no libm call, so the loops vectorise) against np.tanh
    and the NumPy module's σ: at most 2 ulp over 3·10⁶ arguments spread from 10⁻³⁰⁰ to beyond where f
    saturates, and equal at the special values (±0, subnormals, ±inf, NaN, the cut-over points);
    complex arguments (the complex step) give NumPy's complex f to rounding in both parts."""
    tanh_module, sigmoid_module = numba_module("tanh", "loop", 3), numba_module("sigmoid", "loop", 3)
    tanh, logistic = tanh_module._tanh, sigmoid_module._logistic

    @numba.njit
    def apply(values, out_tanh, out_logistic):
        for i in range(values.shape[0]):
            out_tanh[i] = tanh(values[i])
            out_logistic[i] = logistic(values[i])

    def ulps(got, want):
        def ordered(a):
            bits = a.view(np.int64)
            return np.where(bits < 0, np.int64(-(2**63)) - bits, bits)

        return np.abs(ordered(got) - ordered(want))

    rng = np.random.default_rng(0)
    size = 10**6
    magnitudes = np.exp(rng.uniform(np.log(1e-300), np.log(800.0), size))
    values = np.concatenate(
        [magnitudes * rng.choice([-1.0, 1.0], size), rng.uniform(-25, 25, size), rng.uniform(-1, 1, size)]
    )
    special = [0.0, -0.0, 5e-324, -5e-324, 1e-310, 0.625, np.nextafter(0.625, 1), 19.0, 20.0, 20.5]
    special += [-745.2, -746.0, -800.0, 710.0, np.inf, -np.inf, np.nan]
    values = np.concatenate([values, special])
    out_tanh, out_logistic = np.empty_like(values), np.empty_like(values)
    apply(values, out_tanh, out_logistic)
    with np.errstate(over="ignore"):
        want_logistic = numpy_module("sigmoid", "loop", 3)._sigmoid(values)
    finite = np.isfinite(values)
    assert ulps(out_tanh[finite], np.tanh(values[finite])).max() <= 2
    assert ulps(out_logistic[finite], want_logistic[finite]).max() <= 2
    assert np.array_equal(out_tanh[-len(special) :], np.tanh(special), equal_nan=True)
    assert np.signbit(out_tanh[values == 0]).tolist() == np.signbit(values[values == 0]).tolist()
    assert out_logistic[-3:-1].tolist() == [1.0, 0.0] and np.isnan(out_logistic[-1])

    @numba.njit
    def apply_complex(values, out_tanh, out_logistic):
        for i in range(values.shape[0]):
            out_tanh[i] = tanh(values[i])
            out_logistic[i] = logistic(values[i])

    # the complex step through f: NumPy's values to rounding, both parts, for real parts far beyond
    # where tanh saturates (Numba's own complex tanh gives NaN there, and from |Re z| ≈ 20 an
    # imaginary part, the complex step's derivative, off by orders of magnitude)
    steps = values[finite][::300] + 1e-20j * rng.normal(size=values[finite][::300].size)
    complex_tanh, complex_logistic = np.empty_like(steps), np.empty_like(steps)
    apply_complex(steps, complex_tanh, complex_logistic)
    with np.errstate(over="ignore"):
        want = {"tanh": np.tanh(steps), "σ": numpy_module("sigmoid", "loop", 3)._sigmoid(steps)}
    for name, got in (("tanh", complex_tanh), ("σ", complex_logistic)):
        assert np.allclose(got.real, want[name].real, rtol=1e-15, atol=0), name
        assert np.allclose(got.imag, want[name].imag, rtol=1e-14, atol=0), name


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
def test_the_kernels_check_x_and_y_as_the_numpy_backend(mode):
    """The usual call is not checked by a pass over x: the kernels' fused check finds a NaN or an
    infinity anywhere in x (any block, the partial last one too) or w_i, and a label outside [0, 1],
    and then the NumPy backend's own checks give its message. A finite x whose w_i·x_t overflows is
    valid: no error, the NumPy backend's results."""
    steps = 3  # the unrolled module of CASES, compiled once
    module, reference = numba_module("tanh", mode, steps), numpy_module("tanh", mode, steps)
    rng = np.random.default_rng(3)
    batch = 2 * module._WIDTH + 3
    x = rng.normal(size=(batch, steps, 3))
    y = rng.integers(0, 2, size=batch).astype(float)
    w_i, w_h, w_o = np.array([0.3, -0.2, 0.5]), 0.7, -1.1

    def outcomes(*args):
        found = []
        for m in (module, reference):
            for function in ("loss_and_grad", "loss", "forward"):
                call_args = args if function != "forward" else (args[0], *args[2:])
                try:
                    getattr(m, function)(*call_args)
                    found.append(None)
                except ValueError as error:
                    found.append(str(error))
        assert found[:3] == found[3:], found
        return found[0]

    for where in [(0, 0, 0), (module._WIDTH + 1, 2, 1), (batch - 1, steps - 1, 2)]:
        for bad in (np.nan, np.inf, -np.inf):
            tampered = x.copy()
            tampered[where] = bad
            assert "x must be finite" in outcomes(tampered, y, w_i, w_h, w_o)
    # several faults: the one the NumPy backend names first
    nan_x, nan_y = x.copy(), y.copy()
    nan_x[-1, 0, 0] = nan_y[-1] = np.nan
    assert "x must be finite" in outcomes(nan_x, nan_y, w_i, np.nan, w_o)
    assert "w_h must be finite" in outcomes(x, nan_y, w_i, np.nan, w_o)
    assert "w_i must be finite" in outcomes(x, y, np.array([0.3, np.inf, 0.5]), w_h, w_o)
    assert "w_i must be finite" in outcomes(x, y, np.array([0.3, np.nan, 0.5]), w_h, w_o)
    for label in (np.nan, 1.5, -0.5, np.inf):
        labels = y.copy()
        labels[-1] = label
        assert "y must" in outcomes(x, labels, w_i, w_h, w_o)
    assert "w_h must be finite" in outcomes(x, y, w_i, np.inf, w_o)
    huge = np.full((3, steps, 3), 1e300)
    with np.errstate(all="ignore"):  # the NumPy module's w_i·x_t overflows too
        assert outcomes(huge, y[:3], np.array([1e10, -1e10, 1e10]), w_h, w_o) is None
        for got, want in zip(
            module.loss_and_grad(huge, y[:3], np.array([1e10, 1e10, 1e10]), w_h, w_o),
            reference.loss_and_grad(huge, y[:3], np.array([1e10, 1e10, 1e10]), w_h, w_o),
        ):
            assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
def test_shapes_and_errors_are_the_numpy_backends(mode):
    fast, reference = numba_module("tanh", mode, 3), numpy_module("tanh", mode, 3)
    x, y, w_i, w_h, w_o = point("tanh", 3)
    assert fast.forward(x, w_i, w_h, w_o).shape == (3,)
    assert isinstance(fast.loss(x, y, w_i, w_h, w_o), float)
    single = fast.loss_and_grad(x[0], y[0], w_i, w_h, w_o)  # (N, D) is a batch of one
    assert single[0] == pytest.approx(fast.loss(x[:1], y[:1], w_i, w_h, w_o), rel=1e-15)
    assert fast.loss_and_grad(x.astype(int), y, w_i, w_h, w_o)[0] == pytest.approx(
        reference.loss_and_grad(x.astype(int), y, w_i, w_h, w_o)[0], rel=1e-14
    )
    bad = [
        (x[..., :2], y, w_i, w_h, w_o),
        (x, y, w_i[:2], w_h, w_o),
        (x, y[:2], w_i, w_h, w_o),
        (x, y, w_i, np.ones(2), w_o),
        (x, y, w_i, w_h, np.ones(2)),
        (x, y + 2, w_i, w_h, w_o),
        (x[:, :0], y, w_i, w_h, w_o),
        (np.zeros((3, 4, 3)), y, w_i, w_h, w_o),
    ]
    for args in bad:
        for function in ("loss_and_grad", "loss", "bptt_terms"):
            outcomes = []
            for module in (fast, reference):
                try:
                    getattr(module, function)(*args)
                    outcomes.append(None)
                except ValueError as error:
                    outcomes.append(str(error))
            assert outcomes[0] == outcomes[1], (function, outcomes)
            assert mode == "loop" and args[0].shape == (3, 4, 3) or outcomes[0] is not None


def _helpers(source: str) -> dict:
    tree = ast.parse(source)
    return {
        node.name: ast.dump(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in ("_inputs", "_labels")
    }


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
def test_validation_is_the_numpy_backends(mode):
    """Both backends validate with the same functions; if the NumPy ones change, move them into
    templates/numpy/macros.j2 and import them in templates/numba/module.py.j2."""
    model = Model(steps=4, activation="sigmoid")
    numba_helpers = _helpers(generate(model, mode, backend="numba"))
    assert set(numba_helpers) == {"_inputs", "_labels"}
    assert numba_helpers == _helpers(generate(model, mode))


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_no_warnings_and_exact_loss_for_huge_logits(activation):
    module = numba_module(activation, "loop", 3)
    x = np.ones((4, 3, 3))
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for w_o in (1e4, -1e4):
            o_n = reference_forward(x, np.full(3, 0.5), 0.5, activation)[:, -1]
            z = w_o * o_n
            loss, dw_i, dw_h, dw_o = module.loss_and_grad(x, y, np.full(3, 0.5), 0.5, w_o)
            want = np.mean(np.maximum(z, 0) - y * z)
            assert loss == pytest.approx(want, rel=1e-15) and np.isfinite(loss)
            assert np.all(np.isfinite(dw_i)) and np.isfinite(dw_h) and np.isfinite(dw_o)
        if ACTIVATIONS[activation].analytic:  # complex step at a huge logit
            assert np.isfinite(module.loss(x, y, np.full(3, 0.5), 0.5 + 1e-20j, 1e4))


def test_header_and_imports():
    numba_source = generate(Model(steps=5), "loop", "out/fast.py", backend="numba")
    assert numba_source.splitlines()[1] == (
        "#   bptt codegen --steps 5 --activation tanh --mode loop --backend numba -o out/fast.py"
    )
    assert "--backend" not in generate(Model(steps=5), "loop", "out/model.py").splitlines()[1]
    tree = ast.parse(numba_source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "numba" in imported
    decorators = {
        node.name: ast.unparse(d)
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        for d in node.decorator_list
    }
    # Every kernel compiled with cache=True and fastmath off; only tanh's own polynomial may fuse a
    # multiply and an add (contract: one rounding instead of two, nothing reassociated).
    contracted = {"_exp_bounded", "_tanh_real"}
    assert contracted <= set(decorators)
    for name, decorator in decorators.items():
        if name in contracted:
            assert decorator == "njit(cache=True, error_model='numpy', fastmath={'contract'})", name
        elif decorator not in ("intrinsic", "overload(_tanh)"):
            assert decorator.startswith("njit(cache=True") and "fastmath" not in decorator, name


def test_without_numba_the_backend_is_a_one_line_usage_error(monkeypatch, capsys):
    from symbolic.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a)
    )
    with pytest.raises(UsageError, match=r"pip install bptt\[fast\]"):
        generate(Model(steps=3), backend="numba")
    assert main(["codegen", "--steps", "3", "--backend", "numba"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "pip install bptt[fast]" in error
    assert main(["codegen", "--steps", "3", "--backend", "fortran"]) == 2
    assert "numpy, numba" in capsys.readouterr().err


def test_bptt_check_passes_numba_modules_and_rejects_a_tampered_one(tmp_path, capsys):
    """The good module is the file ``load`` wrote for the tanh loop module of CASES (generate's source at
    n = 1), its kernels cached beside it by the tests above; the tampered copy compiles in check's process."""
    good = Path(numba_module("tanh", "loop", 4).__file__)
    source = good.read_text()
    assert source == generate(Model(steps=1, activation="tanh"), "loop", backend="numba")
    assert run_check(good) == 0
    report = capsys.readouterr().out
    assert "complex step" in report and "passed" in report
    tamper = ("terms[_W_H, c] += gate * o_prev", "terms[_W_H, c] += 1.001 * gate * o_prev")
    assert source.count(tamper[0]) == 1
    bad = tmp_path / "tampered.py"
    bad.write_text(source.replace(*tamper))
    assert run_check(bad) == 1
    assert "FAIL" in capsys.readouterr().out
    assert run_check(good) == 0  # again, from Numba's on-disk cache beside the file
    assert numba_index(good.parent / "__pycache__", f"{good.stem}.*.nbi")


def test_load_writes_a_cached_file_and_falls_back_without_one(tmp_path, monkeypatch):
    model = Model(steps=2, activation="identity")
    monkeypatch.setenv("BPTT_CACHE_DIR", str(tmp_path / "cache"))
    module = _load.__wrapped__(model, "loop", "numba")
    assert module.__file__.startswith(str(tmp_path / "cache"))
    args = point("identity", 2)
    want = numpy_module("identity", "loop", 2).loss_and_grad(*args)
    assert relative(module.loss_and_grad(*args)[2], want[2]) < 1e-13
    assert numba_index(tmp_path / "cache" / "numba" / "__pycache__", "*.nbi")
    # nowhere writable (a file where the directories should be): compiled without a disk cache
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setattr("symbolic.codegen.cache_directories", lambda: [blocker / "a", blocker / "b"])
    memory = _load.__wrapped__(model, "loop", "numba")
    assert memory.__file__.startswith("<")
    assert relative(memory.loss_and_grad(*args)[2], want[2]) < 1e-13


# ruff format --check and ruff check of the generated modules: tests/test_format.py


NO_SCIPY = """
import sys
sys.modules["scipy"] = None  # as if SciPy were not installed: Numba's BLAS (np.dot) is unavailable
import numpy as np
from symbolic.codegen import load
from symbolic.model import Model
rng = np.random.default_rng(0)
x, y = rng.normal(size=(3, 4, 3)), np.array([0.0, 1.0, 1.0])
scalar = load(Model(steps=4), "loop", backend="numba")
print(scalar.loss_and_grad(x, y, rng.normal(size=3), 0.7, 1.2)[0])
rnn = load(Model(steps=4, hidden=2), "loop", backend="numba")  # the generic module, positional form
print(rnn.loss_and_grad(x, y, rng.normal(size=(2, 3)), rng.normal(size=(2, 2)), rng.normal(size=2))[0])
lstm = load(Model(steps=4, cell="lstm", hidden=2), "loop", backend="numba")
print(lstm.loss_and_grad(x, y, lstm.init_params(0))[0])
"""


def test_every_numba_module_runs_without_scipy():
    """With SciPy unimportable, the scalar Numba module and the generic one (the plain RNN at H = 2, the
    LSTM) compile (or load) and run: none needs BLAS, so the `fast` extra needs no SciPy and the first
    call does not import it (tests/test_numba_cells.py: no np.dot or @ in any kernel)."""
    result = subprocess.run(
        [sys.executable, "-c", NO_SCIPY], capture_output=True, text=True, check=False, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.split()) == 3
