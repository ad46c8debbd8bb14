"""Gradient checks of any module with the generated interface (``bptt check FILE.py``).

``loss_and_grad`` is compared with two independent numerical derivatives of ``loss``:

* central finite differences, (L(w + h) − L(w − h)) / 2h, error O(h²) + O(ε/h): about 1e-9 relative;
* the complex step, Im L(w + ih) / h with h = 1e-20, exact to rounding for analytic activations
  (it needs the module to let complex weights flow through, as generated modules do).

The inputs are random: one-hot and dense sequences, labels 0 and 1, weights of moderate size; for a
non-analytic activation (ReLU) every pre-activation is kept away from the kink so both sides of a
finite difference stay on one branch.

LSTM modules (``CELL = "lstm"``) have the dict interface: ``loss(x, y, params)`` and
``loss_and_grad(x, y, params) -> (loss, grads)`` keyed like ``PARAMS``; they are checked per parameter
name, at most MAX_ENTRIES entries of each, with the five-point stencil for the finite differences.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .activations import ACTIVATIONS
from .errors import UsageError

#: Worst relative error accepted, per method. A 0.1% error in any parameter is far beyond both.
TOLERANCES = {"finite differences": 1e-6, "complex step": 1e-10}
PARAMETERS = ("w_i", "w_h", "w_o")
#: A matrix module's parameters (hidden size H, optional biases), in the order of its gradients.
MATRIX_PARAMETERS = ("w_i", "w_h", "w_o", "b_h", "b_o")
#: Entries of one parameter checked numerically at most (drawn at random beyond that).
MAX_ENTRIES = 48
INTERFACE = ("loss", "loss_and_grad", "ACTIVATION", "INPUT_SIZE", "STEPS")
#: Sequence length used for modules that accept any length (loop mode).
LOOP_STEPS = 7
#: For non-analytic activations, |pre-activation| stays above this (the FD step is far smaller).
KINK_MARGIN = 1e-3
#: The finite-difference step for LSTM modules, which use the five-point central stencil (error
#: O(h⁴)): some LSTM gradients are small next to the loss (saturated gates, ∂L/∂U_· over a few steps
#: from h_0 = 0), so the rounding error ε·L/h of a two-point 1e-6 step came within 4x of the tolerance;
#: at h = 1e-3 rounding (~1e-13) and truncation (h⁴ L⁽⁵⁾/30 ~ 1e-13) both stay far below it.
LSTM_FD_STEP = 1e-3
#: For LSTM modules, finite differences are measured relative to at least this fraction of the largest
#: gradient entry (see ``_check_lstm``); a 0.1% error stays visible down to gradients 1e-6 of the largest.
FD_FLOOR = 1e-3


@dataclass
class Report:
    path: str
    activation: str
    steps: int
    cases: int
    #: method → parameter → worst relative error
    errors: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    hidden: int = 1
    bias: bool = False
    #: "rnn", or "lstm" for a module with the dict interface (CELL = "lstm")
    cell: str = "rnn"

    @property
    def passed(self) -> bool:
        return all(
            error <= self.tolerances[method]
            for method, per_parameter in self.errors.items()
            for error in per_parameter.values()
        )


def load_module(path: str | Path) -> types.ModuleType:
    """Import a module file by path; every way it can fail is one ``UsageError`` line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file: give a module made by 'bptt codegen'")
    # A name stable for this file and registered in sys.modules: the kernels of a Numba module,
    # loaded from Numba's on-disk cache, find their module's globals by importing that name.
    name = "bptt_checked_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} cannot be imported as a Python module: give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UsageError(f"{path} has a syntax error at line {error.lineno}: regenerate it") from None
    except ModuleNotFoundError as error:
        if error.name == "numba":
            raise UsageError(
                f"{path} is a Numba module and Numba is not installed: pip install bptt[fast]"
            ) from None
        raise UsageError(f"{path} fails on import (ModuleNotFoundError: {error}): regenerate it") from None
    except Exception as error:  # noqa: BLE001 - whatever the file raises on import is the user's file
        raise UsageError(f"{path} fails on import ({type(error).__name__}: {error}): regenerate it") from None
    missing = [name for name in INTERFACE if not hasattr(module, name)]
    if missing:
        raise UsageError(
            f"{path} lacks {', '.join(missing)}: it does not have the generated interface "
            "(make one with 'bptt codegen')"
        )
    return module


def _is_matrix(module) -> bool:
    """A module for hidden size H (or biases): weights as matrices, gradients in MATRIX_PARAMETERS."""
    return hasattr(module, "HIDDEN_SIZE")


def _is_lstm(module) -> bool:
    """An LSTM module: parameters in a dict keyed like its PARAMS, gradients in a dict keyed alike."""
    return getattr(module, "CELL", None) == "lstm"


def _lstm_cases(module, rng: np.random.Generator):
    """(x, y, params) test points of an LSTM module: one-hot and dense batches, parameters uniform
    in ±scale with the forget-gate bias drawn around +1 as well as around 0."""
    steps = module.STEPS or LOOP_STEPS
    size, hidden = int(module.INPUT_SIZE), int(module.HIDDEN_SIZE)
    shapes = {name: tuple(shape) for name, shape in module.PARAMS.items()}
    scales = {"W": 2.0, "U": 2.0 / np.sqrt(hidden), "b": 1.0, "w": 3.0 / np.sqrt(hidden)}
    for case, dense in enumerate((False, True, False, True)):
        x, y = _batch(rng, 3, steps, size, dense)
        params = {name: rng.uniform(-1, 1, size=shape) * scales[name[0]] for name, shape in shapes.items()}
        if case % 2 and "b_f" in params:
            params["b_f"] = params["b_f"] + 1.0
        yield x, y, params


def _lstm_numerical(module, case, method: str, rng: np.random.Generator) -> dict:
    """Per parameter: (flat indices checked, the numerical derivative of ``loss`` at each)."""
    x, y, params = case

    def derivative(shifted):
        if method == "complex step":
            h = 1e-20
            return np.imag(shifted(1j * h)) / h
        # the five-point central stencil, error O(h⁴): a step large enough for rounding to stay small
        h = LSTM_FD_STEP
        return (8 * (shifted(h) - shifted(-h)) - (shifted(2 * h) - shifted(-2 * h))) / (12 * h)

    result = {}
    for name, value in params.items():
        indices = np.arange(value.size)
        if value.size > MAX_ENTRIES:
            indices = np.sort(rng.choice(value.size, size=MAX_ENTRIES, replace=False))

        def shifted(step, index, name=name, value=value):
            moved = value.astype(complex if np.iscomplexobj(step) else float).ravel()
            moved[index] += step
            return module.loss(x, y, {**params, name: moved.reshape(value.shape)})

        result[name] = (indices, np.array([derivative(lambda s, i=i: shifted(s, i)) for i in indices]))
    return result


def _check_lstm(module, report: Report, methods, rng, path) -> None:
    names = list(module.PARAMS)
    report.hidden, report.cell = int(module.HIDDEN_SIZE), "lstm"
    report.errors = {method: dict.fromkeys(names, 0.0) for method in methods}
    for case in _lstm_cases(module, rng):
        report.cases += 1
        x, y, params = case
        try:
            _, gradients = module.loss_and_grad(x, y, params)
        except Exception as error:  # noqa: BLE001 - a broken module is the user's file, not our bug
            raise UsageError(f"{path}: loss_and_grad fails ({type(error).__name__}: {error})") from None
        missing = [name for name in names if name not in gradients]
        if missing:
            raise UsageError(f"{path}: loss_and_grad returns no gradient for {', '.join(missing)}: regenerate it")
        for method in methods:
            numerical = _lstm_numerical(module, case, method, rng)
            # Finite differences carry an absolute rounding error of about ε·L/h whatever the size of
            # the derivative, so a parameter whose gradient is tiny here (a saturated gate) is measured
            # against a floor: FD_FLOOR times the largest gradient entry. The complex step has no such
            # error and is measured against each parameter's own size.
            largest = max(float(np.max(np.abs(want))) for _, want in numerical.values())
            floor = FD_FLOOR * largest if method == "finite differences" else 0.0
            for name, (indices, want) in numerical.items():
                got = np.ravel(gradients[name])
                if got.size != params[name].size:
                    raise UsageError(
                        f"{path}: the gradient {name} has {got.size} entries, the parameter {params[name].size}"
                    )
                error = _relative(got[indices], want, floor)
                report.errors[method][name] = max(report.errors[method][name], error)


def _shapes(module) -> dict[str, tuple[int, ...]]:
    """Parameter name → shape of a matrix module."""
    hidden, size = int(module.HIDDEN_SIZE), int(module.INPUT_SIZE)
    shapes = {"w_i": (hidden, size), "w_h": (hidden, hidden), "w_o": (hidden,)}
    if getattr(module, "BIAS", False):
        shapes.update(b_h=(hidden,), b_o=())
    return shapes


def _batch(rng: np.random.Generator, batch: int, steps: int, size: int, dense: bool):
    """Inputs (one-hot words, or dense normal values) and labels with both classes present."""
    if dense:
        x = rng.normal(size=(batch, steps, size))
    else:
        x = np.eye(size)[rng.integers(0, size, size=(batch, steps))]
    y = rng.integers(0, 2, size=batch).astype(float)
    y[0], y[-1] = 0.0, 1.0
    return x, y


def _matrix_cases(module, rng: np.random.Generator, analytic: bool):
    """(x, y, parameters) test points of a matrix module: one-hot and dense batches."""
    steps = module.STEPS or LOOP_STEPS
    size, hidden = int(module.INPUT_SIZE), int(module.HIDDEN_SIZE)
    scales = {"w_i": 1.5, "w_h": 1.2 / np.sqrt(hidden), "w_o": 2.0 / np.sqrt(hidden), "b_h": 0.5, "b_o": 0.5}
    for dense in (False, True, False, True):
        batch = 3
        for _ in range(1000):
            x, y = _batch(rng, batch, steps, size, dense)
            parameters = {
                name: rng.uniform(-scales[name], scales[name], size=shape)
                for name, shape in _shapes(module).items()
            }
            if "b_o" in parameters:
                parameters["b_o"] = float(parameters["b_o"])
            if analytic or _matrix_away_from_kink(x, parameters):
                break
        yield x, y, parameters


def _matrix_away_from_kink(x, parameters) -> bool:
    """True when every pre-activation of a ReLU recursion is at least KINK_MARGIN from 0."""
    w_i, w_h = parameters["w_i"], parameters["w_h"]
    b_h = parameters.get("b_h", 0.0)
    o_prev = np.zeros((x.shape[0], w_h.shape[0]))
    for t in range(x.shape[1]):
        a = x[:, t] @ w_i.T + o_prev @ w_h.T + b_h
        if np.min(np.abs(a)) < KINK_MARGIN:
            return False
        o_prev = np.maximum(a, 0.0)
    return True


def _matrix_numerical(module, case, method: str, rng: np.random.Generator) -> dict:
    """Per parameter: (flat indices checked, the numerical derivative at each)."""
    x, y, parameters = case

    def derivative(shifted):
        if method == "complex step":
            h = 1e-20
            return np.imag(shifted(1j * h)) / h
        h = 1e-6
        return (shifted(h) - shifted(-h)) / (2 * h)

    result = {}
    for name, value in parameters.items():
        value = np.asarray(value, dtype=float)
        indices = np.arange(value.size)
        if value.size > MAX_ENTRIES:
            indices = np.sort(rng.choice(value.size, size=MAX_ENTRIES, replace=False))

        def shifted(step, index, name=name, value=value):
            moved = value.astype(complex if np.iscomplexobj(step) else float).ravel()
            moved[index] += step
            return module.loss(x, y, **{**parameters, name: moved.reshape(value.shape)})

        result[name] = (indices, np.array([derivative(lambda s, i=i: shifted(s, i)) for i in indices]))
    return result


def _check_matrix(module, report: Report, methods, rng, analytic: bool, path) -> None:
    names = list(_shapes(module))
    report.hidden, report.bias = int(module.HIDDEN_SIZE), bool(getattr(module, "BIAS", False))
    report.errors = {method: dict.fromkeys(names, 0.0) for method in methods}
    for case in _matrix_cases(module, rng, analytic):
        report.cases += 1
        x, y, parameters = case
        try:
            _, *gradients = module.loss_and_grad(x, y, **parameters)
        except Exception as error:  # noqa: BLE001 - a broken module is the user's file, not our bug
            raise UsageError(f"{path}: loss_and_grad fails ({type(error).__name__}: {error})") from None
        got = dict(zip(names, gradients))
        for method in methods:
            for name, (indices, want) in _matrix_numerical(module, case, method, rng).items():
                error = _relative(np.ravel(got[name])[indices], want)
                report.errors[method][name] = max(report.errors[method][name], error)


def _cases(module, rng: np.random.Generator, analytic: bool):
    """(x, y, w_i, w_h, w_o) test points: one-hot and dense batches."""
    steps = module.STEPS or LOOP_STEPS
    size = int(module.INPUT_SIZE)
    for dense in (False, True, False, True):
        batch = 3
        for _ in range(1000):
            x, y = _batch(rng, batch, steps, size, dense)
            w_i = rng.uniform(-1.5, 1.5, size=size)
            w_h = float(rng.uniform(-1.2, 1.2))
            w_o = float(rng.uniform(-2.0, 2.0))
            if analytic or _away_from_kink(x, w_i, w_h):
                break
            if not analytic:  # bias towards positive pre-activations so ReLU gradients are not all zero
                w_i = np.abs(w_i)
        yield x, y, w_i, w_h, w_o


def _away_from_kink(x, w_i, w_h) -> bool:
    """True when every pre-activation a_t of a ReLU recursion is at least KINK_MARGIN from 0."""
    projection = x @ w_i
    o_prev = np.zeros(x.shape[0])
    for t in range(x.shape[1]):
        a = projection[:, t] + w_h * o_prev
        if np.min(np.abs(a)) < KINK_MARGIN:
            return False
        o_prev = np.maximum(a, 0.0)
    return True


def _relative(got, want, floor: float = 1e-8) -> float:
    got, want = np.atleast_1d(np.asarray(got, dtype=float)), np.atleast_1d(np.asarray(want, dtype=float))
    scale = max(float(np.max(np.abs(want))), floor, 1e-8)
    return float(np.max(np.abs(got - want)) / scale)


def _numerical(module, case, method: str):
    """The gradient of ``loss`` by finite differences or the complex step, per parameter."""
    x, y, w_i, w_h, w_o = case

    def loss(w_i, w_h, w_o):
        return module.loss(x, y, w_i, w_h, w_o)

    def derivative(shifted):
        if method == "complex step":
            h = 1e-20
            return np.imag(shifted(1j * h)) / h
        h = 1e-6
        return (shifted(h) - shifted(-h)) / (2 * h)

    basis = np.eye(len(w_i))
    return {
        "w_i": np.array([derivative(lambda s, e=e: loss(w_i + s * e, w_h, w_o)) for e in basis]),
        "w_h": derivative(lambda s: loss(w_i, w_h + s, w_o)),
        "w_o": derivative(lambda s: loss(w_i, w_h, w_o + s)),
    }


def check_module(module, path: str = "<module>", seed: int = 0) -> Report:
    """Compare ``module.loss_and_grad`` with the numerical gradients on random inputs."""
    name = str(getattr(module, "ACTIVATION", "?"))
    activation = ACTIVATIONS.get(name)
    analytic = bool(activation and activation.analytic)
    methods = ["finite differences"] + (["complex step"] if analytic else [])
    rng = np.random.default_rng(seed)
    report = Report(
        path=str(path),
        activation=name,
        steps=int(module.STEPS or LOOP_STEPS),
        cases=0,
        tolerances={method: TOLERANCES[method] for method in methods},
    )
    if not analytic:
        report.skipped["complex step"] = f"activation {name!r} is not analytic"
    if _is_lstm(module):
        _check_lstm(module, report, methods, rng, path)
        return report
    if _is_matrix(module):
        _check_matrix(module, report, methods, rng, analytic, path)
        return report
    report.errors = {method: dict.fromkeys(PARAMETERS, 0.0) for method in methods}
    for case in _cases(module, rng, analytic):
        report.cases += 1
        try:
            _, dw_i, dw_h, dw_o = module.loss_and_grad(*case)
        except Exception as error:  # noqa: BLE001 - a broken module is the user's file, not our bug
            raise UsageError(f"{path}: loss_and_grad fails ({type(error).__name__}: {error})") from None
        got = {"w_i": dw_i, "w_h": dw_h, "w_o": dw_o}
        for method in methods:
            want = _numerical(module, case, method)
            for parameter in PARAMETERS:
                error = _relative(got[parameter], want[parameter])
                worst = report.errors[method]
                worst[parameter] = max(worst[parameter], error)
    return report


def _format_lstm_report(report: Report) -> str:
    """One row per parameter (an LSTM has 13), one column per method."""
    methods = list(report.errors)
    title = f"{report.path}: cell lstm, n = {report.steps}, H = {report.hidden}"
    lines = [
        f"{title}, {report.cases} random batches",
        f"  {'parameter':<12}" + "".join(f"{method:>22}" for method in methods),
    ]
    for name in next(iter(report.errors.values()), {}):
        lines.append(f"  {name:<12}" + "".join(f"{report.errors[m][name]:>22.2e}" for m in methods))
    lines.append(f"  {'tolerance':<12}" + "".join(f"{report.tolerances[m]:>22.0e}" for m in methods))
    results = []
    for method in methods:
        failed = [name for name, error in report.errors[method].items() if error > report.tolerances[method]]
        results.append("FAIL " + ",".join(failed) if failed else "ok")
    lines.append(f"  {'result':<12}" + "".join(f"{result:>22}" for result in results))
    for method, reason in report.skipped.items():
        lines.append(f"  {method:<20}skipped: {reason}")
    lines.append("passed" if report.passed else "FAILED: a gradient disagrees beyond tolerance")
    return "\n".join(lines)


def format_report(report: Report) -> str:
    if report.cell == "lstm":
        return _format_lstm_report(report)
    parameters = list(next(iter(report.errors.values()), {})) or list(PARAMETERS)
    shape = ""
    if report.hidden != 1 or report.bias:
        shape = f", H = {report.hidden}" + (", with biases" if report.bias else "")
    title = f"{report.path}: activation {report.activation}, n = {report.steps}{shape}"
    lines = [
        f"{title}, {report.cases} random batches",
        f"  {'method':<20}" + "".join(f"{p:>12}" for p in parameters) + f"{'tolerance':>12}  result",
    ]
    for method, worst in report.errors.items():
        tolerance = report.tolerances[method]
        ok = all(error <= tolerance for error in worst.values())
        lines.append(
            f"  {method:<20}"
            + "".join(f"{worst[p]:>12.2e}" for p in parameters)
            + f"{tolerance:>12.0e}  {'ok' if ok else 'FAIL'}"
        )
    for method, reason in report.skipped.items():
        lines.append(f"  {method:<20}skipped: {reason}")
    lines.append("passed" if report.passed else "FAILED: a gradient disagrees beyond tolerance")
    return "\n".join(lines)


def run_check(path, as_json: bool = False, seed=0) -> int:
    """``bptt check``: print the worst relative error per parameter and method; 0 if all pass, 1 if not."""
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise UsageError(f"the seed must be a whole number, got {seed!r}: pass e.g. --seed 0") from None
    module = load_module(path)
    with np.errstate(all="ignore"):
        report = check_module(module, str(path), seed)
    if as_json:
        print(json.dumps({**asdict(report), "passed": report.passed}, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    sys.stdout.flush()
    return 0 if report.passed else 1


__all__ = ["Report", "check_module", "format_report", "load_module", "run_check"]
