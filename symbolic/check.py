"""Gradient checks of any module with the generated interface (``bptt check FILE.py``).

``loss_and_grad`` is compared with two independent numerical derivatives of ``loss``:

* central finite differences, (L(w + h) − L(w − h)) / 2h, error O(h²) + O(ε/h): about 1e-9 relative;
* the complex step, Im L(w + ih) / h with h = 1e-20, exact to rounding for analytic activations
  (it needs the module to let complex weights flow through, as generated modules do).

Three interfaces are understood, told apart by the module's constants:

* the scalar RNN: ``loss(x, y, w_i, w_h, w_o)``, ``loss_and_grad`` → (loss, dw_i, dw_h, dw_o);
* the matrix RNN without ``CELL`` (``HIDDEN_SIZE``; ``BIAS`` adds b_h, b_o as keywords): gradients in
  that order. bptt codegen's own plain-RNN modules at H > 1 or with biases have ``CELL`` (they come from
  the generic engine and take both forms) and are checked through the dict interface; this one is for
  modules written by hand against the positional form;
* the dict interface, any cell (``CELL`` and ``PARAMS``, name → shape): ``loss(x, y, params)``,
  ``loss_and_grad(x, y, params) -> (loss, grads)`` keyed like ``PARAMS``, ``init_params(seed)``. It is
  checked per parameter name without knowing the cell, with the five-point stencil. ``HIDDEN_SIZE`` and
  ``BIAS``, when the module declares them, only describe it in the report.

At most MAX_ENTRIES entries of each parameter are differentiated numerically (drawn at random beyond
that); every entry of every returned gradient is validated (type, dtype, shape, finite). A report
passes only when every parameter was compared by every method and none of them is beyond tolerance:
a gradient that cannot be compared (NaN, wrong shape, a list, missing) fails, naming it.

The inputs are random: one-hot and dense sequences, labels 0 and 1, weights of moderate size; for a
non-analytic activation (ReLU) every pre-activation is kept away from the kink so both sides of a
finite difference stay on one branch.

``check_module`` runs in the calling process. ``run_check`` (the command) runs the module in a child
process with a time limit per call, so a module that hangs, exits or crashes cannot take the check
with it, and whatever the module prints goes to stderr, never into the report on stdout. That
mechanism, ``run_in_child``, is shared with ``bptt grade`` (``symbolic.grade.run_grade``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import keyword
import math
import os
import reprlib
import select
import signal
import subprocess
import sys
import time
import traceback
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import UsageError

#: Worst relative error accepted, per method. A 0.1% error in any parameter is far beyond both.
TOLERANCES = {"finite differences": 1e-6, "complex step": 1e-10}
PARAMETERS = ("w_i", "w_h", "w_o")
#: Entries of one parameter checked numerically at most (drawn at random beyond that).
MAX_ENTRIES = 48
INTERFACE = ("loss", "loss_and_grad", "ACTIVATION", "INPUT_SIZE", "STEPS")
#: What a module with the dict interface needs besides INTERFACE.
DICT_INTERFACE = ("CELL", "PARAMS", "init_params")
#: Sequence length used for modules that accept any length (loop mode).
LOOP_STEPS = 7
#: For non-analytic activations, |pre-activation| stays above this (the FD step is far smaller).
KINK_MARGIN = 1e-3
#: The finite-difference step for dict-interface modules, which use the five-point central stencil
#: (error O(h⁴)): some LSTM gradients are small next to the loss (saturated gates, ∂L/∂U_· over a few
#: steps from h_0 = 0), so the rounding error ε·L/h of a two-point 1e-6 step came within 4x of the
#: tolerance; at h = 1e-3 rounding (~1e-13) and truncation (h⁴ L⁽⁵⁾/30 ~ 1e-13) both stay far below it.
DICT_FD_STEP = 1e-3
#: For dict-interface modules, finite differences are measured relative to at least this fraction of
#: the largest gradient entry (see ``_compare``); a 0.1% error stays visible down to gradients 1e-6 of
#: the largest.
FD_FLOOR = 1e-3
#: ``bptt check --timeout``: seconds one call into the module (its import, init_params, loss,
#: loss_and_grad) may take. A Numba module compiles on its first call, which takes seconds, not minutes.
DEFAULT_TIMEOUT = 60.0
#: Limits on a module's sizes, so a wrong constant is a message rather than an exhausted memory.
MAX_STEPS, MAX_SIZE, MAX_PARAMETER_ENTRIES = 100_000, 100_000, 10_000_000
#: Problems named in a report per parameter and kind (the same NaN in every batch is one line).
MAX_ENTRIES_NAMED = 4


@dataclass
class Report:
    path: str
    activation: str
    steps: int
    cases: int
    #: method → parameter → worst relative error, or None when that parameter could not be compared
    errors: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    hidden: int = 1
    bias: bool = False
    #: "rnn", or the module's CELL for a module with the dict interface (CELL and PARAMS)
    cell: str = "rnn"
    #: method → parameter → gradient entries compared, summed over the batches
    compared: dict = field(default_factory=dict)
    #: what the module returned that cannot be compared (NaN, wrong shape, dtype, type or count)
    problems: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True only if every parameter was compared by every method and is within tolerance."""
        if self.cases < 1 or self.problems or not self.errors:
            return False
        for method, per_parameter in self.errors.items():
            if not per_parameter:
                return False
            for name, error in per_parameter.items():
                counted = self.compared.get(method, {}).get(name, 0)
                # written so that NaN (or None) fails: NaN <= tolerance is False
                if error is None or counted < 1 or not error <= self.tolerances[method]:
                    return False
        return True


# -- calling the module ------------------------------------------------------------------------------

#: In ``run_in_child``'s child process: writes one byte as each call into the module starts ("i" import,
#: "p" init_params, "l" loss, "g" loss_and_grad, "f" a function the parent names, as bptt grade's graded
#: function) and "." as it returns, for the parent's time limit (``call_starts``, ``call_returns``).
_WATCH = None
_CALL_CODES = {"import": b"i", "init_params": b"p", "loss": b"l", "loss_and_grad": b"g", "function": b"f"}
_CALL_NAMES = {code[0]: name for name, code in _CALL_CODES.items()}
_DESCRIPTIONS = {"import": "its import (the top-level code)"}


def _short(value, limit: int = 60) -> str:
    """A repr of anything the module holds, on one line and short."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    return " ".join(shortener.repr(value).split())


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _call(path, label: str, function, *args, **kwargs):
    """Call into the module; whatever it raises or exits with is one ``UsageError`` line."""
    if _WATCH is not None:
        _WATCH(_CALL_CODES[label])
    try:
        result = function(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except SystemExit as error:
        raise UsageError(
            f"{path}: {label} called sys.exit({_short(error.code)}): a module to check must return "
            "its values, not exit"
        ) from None
    except BaseException as error:  # noqa: BLE001 - whatever the module raises is the user's file
        raise UsageError(f"{path}: {label} fails ({_one_line(error)})") from None
    if _WATCH is not None:
        _WATCH(b".")
    return result


def _module_name(path: Path) -> tuple[str, bool]:
    """(the name to load ``path`` under, whether to register it in sys.modules under that name).

    A Numba module's kernels, loaded from Numba's on-disk cache beside the file, find their module's
    globals by importing the module name that compiled them. So the file is loaded under its own
    name, as ``import m`` would: the cache then serves ``bptt check m.py`` and ``import m`` alike,
    whichever came first. Only when that name belongs to another module (the stem is not an
    identifier, or ``m`` is already imported from, or importable as, another file) a name stable for
    this path is used.
    """
    stem = path.stem
    fallback = "bptt_checked_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    if not stem.isidentifier() or keyword.iskeyword(stem):
        return fallback, True
    loaded = sys.modules.get(stem)
    if loaded is not None:
        # ``import m`` then a check of m.py in one process: the kernels find the imported m, same file
        return (stem, False) if _same_file(getattr(loaded, "__file__", None), path) else (fallback, True)
    try:
        spec = importlib.util.find_spec(stem)
    except (ImportError, ValueError):
        return fallback, True
    if spec is not None and not _same_file(spec.origin, path):
        return fallback, True
    return stem, True


def _same_file(name, path: Path) -> bool:
    try:
        return name is not None and Path(name).resolve() == path.resolve()
    except (OSError, RuntimeError, TypeError, ValueError):
        return False


def load_module(path: str | Path) -> types.ModuleType:
    """Import a module file by path; every way it can fail is one ``UsageError`` line.

    Importing runs the file's top-level code, as ``import`` does.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file: give a module made by 'bptt codegen'")
    name, register = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} cannot be imported as a Python module: give a .py file")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    # also under the name earlier versions of this checker used, which Numba caches may still name
    sys.modules["bptt_checked_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]] = module
    if _WATCH is not None:
        _WATCH(_CALL_CODES["import"])
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
    except KeyboardInterrupt:
        raise
    except SystemExit as error:
        raise UsageError(
            f"{path} calls sys.exit({_short(error.code)}) on import: a module to check must not exit"
        ) from None
    except BaseException as error:  # noqa: BLE001 - whatever the file raises on import is the user's file
        raise UsageError(f"{path} fails on import ({_one_line(error)}): regenerate it") from None
    if _WATCH is not None:
        _WATCH(b".")
    _require_interface(module, path)
    return module


# -- the module's constants ---------------------------------------------------------------------------


def _regenerate(path) -> str:
    return "regenerate the module with 'bptt codegen'"


def _whole(module, name: str, path, limit: int, none_allowed: bool = False) -> int | None:
    """A positive whole-number constant of the module (``None`` too where that means "any")."""
    value = getattr(module, name)
    if value is None and none_allowed:
        return None
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or not 1 <= value <= limit
    ):
        what = "a positive whole number" + (" or None (any length)" if none_allowed else "")
        raise UsageError(
            f"{path}: {name} must be {what} up to {limit}, got {_short(value)}: {_regenerate(path)}"
        )
    return int(value)


def _function(module, name: str, path):
    value = getattr(module, name)
    if not callable(value):
        raise UsageError(f"{path}: {name} must be a function, got {_short(value)}: {_regenerate(path)}")
    return value


def _parameter_shapes(module, path) -> dict[str, tuple[int, ...]]:
    """PARAMS of a dict-interface module, validated: parameter name → shape (a tuple of sizes)."""
    params = module.PARAMS
    if not isinstance(params, Mapping) or not params:
        raise UsageError(
            f"{path}: PARAMS must be a non-empty dict of parameter name → shape, got {_short(params)}: "
            f"{_regenerate(path)}"
        )
    shapes = {}
    for name, shape in params.items():
        if not isinstance(name, str) or not name:
            raise UsageError(f"{path}: PARAMS has the key {_short(name)}: parameter names must be strings")
        fine = isinstance(shape, tuple) and all(
            isinstance(size, (int, np.integer)) and not isinstance(size, (bool, np.bool_)) and size >= 1
            for size in shape
        )
        if not fine:
            raise UsageError(
                f"{path}: PARAMS[{name!r}] must be a shape, a tuple of positive whole numbers such as (2, 3), "
                f"got {_short(shape)}: {_regenerate(path)}"
            )
        shape = tuple(int(size) for size in shape)
        if math.prod(shape) > MAX_PARAMETER_ENTRIES:
            raise UsageError(
                f"{path}: PARAMS[{name!r}] has {math.prod(shape)} entries, more than the {MAX_PARAMETER_ENTRIES} "
                "bptt check handles: check a smaller model"
            )
        shapes[name] = shape
    return shapes


# -- the three interfaces ----------------------------------------------------------------------------


class _Wrong(Exception):
    """Something the module returned that cannot be compared; the message names it (a report line)."""

    def __init__(self, kind: str, message: str, names=None):
        super().__init__(message)
        self.kind, self.message, self.names = kind, message, names


class _Interface:
    """How to call one module: its parameters, its test points, its calls and their results."""

    #: "finite differences": step h and stencil (2 or 5 points); the FD floor as a fraction of the
    #: largest gradient entry (0: relative to each parameter's own largest entry)
    fd_step, fd_points, fd_floor = 1e-6, 2, 0.0

    def __init__(self, module, path, analytic: bool):
        self.module, self.path, self.analytic = module, path, analytic
        self.steps = _whole(module, "STEPS", path, MAX_STEPS, none_allowed=True) or LOOP_STEPS
        self.size = _whole(module, "INPUT_SIZE", path, MAX_SIZE)
        self.loss_function = _function(module, "loss", path)
        self.gradient_function = _function(module, "loss_and_grad", path)
        if self.steps * self.size > MAX_PARAMETER_ENTRIES:
            raise UsageError(
                f"{path}: STEPS × INPUT_SIZE = {self.steps * self.size} is more than bptt check handles "
                f"({MAX_PARAMETER_ENTRIES}): check a smaller model"
            )

    shapes: dict[str, tuple[int, ...]]

    def cases(self, rng: np.random.Generator):
        raise NotImplementedError

    def loss(self, x, y, params):
        raise NotImplementedError

    def loss_and_grad(self, x, y, params) -> tuple[object, dict]:
        """(the loss as returned, parameter name → gradient as returned); ``_Wrong`` if the result
        does not have that structure."""
        raise NotImplementedError


def _scalars(params: dict) -> dict:
    """The plain RNN's modules take w_h, w_o and b_o as numbers, not 0-d arrays."""
    return {name: value.item() if np.ndim(value) == 0 else value for name, value in params.items()}


class _Positional(_Interface):
    """loss(x, y, w_i, w_h, w_o[, b_h=, b_o=]); loss_and_grad → (loss, gradients in that order)."""

    keywords: tuple[str, ...] = ()

    def _arguments(self, params):
        params = _scalars(params)
        positional = [params[name] for name in self.shapes if name not in self.keywords]
        return positional, {name: params[name] for name in self.keywords if name in params}

    def loss(self, x, y, params):
        positional, keywords = self._arguments(params)
        return _call(self.path, "loss", self.loss_function, x, y, *positional, **keywords)

    def loss_and_grad(self, x, y, params):
        positional, keywords = self._arguments(params)
        result = _call(self.path, "loss_and_grad", self.gradient_function, x, y, *positional, **keywords)
        names = list(self.shapes)
        want = f"(loss, {', '.join('d' + name for name in names)})"
        if not isinstance(result, (tuple, list)):
            raise _Wrong("structure", f"loss_and_grad returns {type(result).__name__}, not the tuple {want}")
        if len(result) != 1 + len(names):
            raise _Wrong(
                "structure", f"loss_and_grad returns {len(result)} values, not the {1 + len(names)} of {want}"
            )
        return result[0], dict(zip(names, result[1:]))


class _Scalar(_Positional):
    def __init__(self, module, path, analytic):
        super().__init__(module, path, analytic)
        self.shapes = {"w_i": (self.size,), "w_h": (), "w_o": ()}

    def cases(self, rng):
        """(x, y, params) test points: one-hot and dense batches."""
        for dense in (False, True, False, True):
            batch = 3
            for _ in range(1000):
                x, y = _batch(rng, batch, self.steps, self.size, dense)
                w_i = rng.uniform(-1.5, 1.5, size=self.size)
                w_h = float(rng.uniform(-1.2, 1.2))
                w_o = float(rng.uniform(-2.0, 2.0))
                if self.analytic or _away_from_kink(x, w_i, w_h):
                    break
                if (
                    not self.analytic
                ):  # bias towards positive pre-activations so ReLU gradients are not all zero
                    w_i = np.abs(w_i)
            yield x, y, {"w_i": w_i, "w_h": np.array(w_h), "w_o": np.array(w_o)}


class _Matrix(_Positional):
    """A module for hidden size H (or biases): weights as matrices, gradients in MATRIX_PARAMETERS."""

    keywords = ("b_h", "b_o")

    def __init__(self, module, path, analytic):
        super().__init__(module, path, analytic)
        self.hidden = _whole(module, "HIDDEN_SIZE", path, MAX_SIZE)
        self.bias = _bias(module, path)
        hidden, size = self.hidden, self.size
        if hidden * max(hidden, size) > MAX_PARAMETER_ENTRIES:
            raise UsageError(
                f"{path}: HIDDEN_SIZE = {hidden} is more than bptt check handles: check a smaller model"
            )
        self.shapes = {"w_i": (hidden, size), "w_h": (hidden, hidden), "w_o": (hidden,)}
        if self.bias:
            self.shapes.update(b_h=(hidden,), b_o=())

    def cases(self, rng):
        """(x, y, params) test points of a matrix module: one-hot and dense batches."""
        hidden = self.hidden
        scales = {
            "w_i": 1.5,
            "w_h": 1.2 / np.sqrt(hidden),
            "w_o": 2.0 / np.sqrt(hidden),
            "b_h": 0.5,
            "b_o": 0.5,
        }
        for dense in (False, True, False, True):
            batch = 3
            for _ in range(1000):
                x, y = _batch(rng, batch, self.steps, self.size, dense)
                params = {
                    name: rng.uniform(-scales[name], scales[name], size=shape)
                    for name, shape in self.shapes.items()
                }
                if self.analytic or _matrix_away_from_kink(x, params):
                    break
            yield x, y, {name: np.asarray(value, dtype=float) for name, value in params.items()}


def _bias(module, path) -> bool:
    """The module's BIAS (False when it declares none), which must be True or False."""
    bias = getattr(module, "BIAS", False)
    if not isinstance(bias, (bool, np.bool_)):
        raise UsageError(f"{path}: BIAS must be True or False, got {_short(bias)}: {_regenerate(path)}")
    return bool(bias)


class _Dict(_Interface):
    """Any cell with CELL, PARAMS (name → shape), init_params(seed), loss(x, y, params) and
    loss_and_grad(x, y, params) -> (loss, grads): checked per parameter name."""

    fd_step, fd_points, fd_floor = DICT_FD_STEP, 5, FD_FLOOR

    def __init__(self, module, path, analytic, seed: int):
        super().__init__(module, path, analytic)
        missing = [name for name in DICT_INTERFACE if not hasattr(module, name)]
        if missing:
            raise UsageError(
                f"{path} defines CELL but lacks {', '.join(missing)}: a module with the dict interface needs "
                "CELL, PARAMS (parameter name → shape), init_params(seed), loss(x, y, params) and "
                "loss_and_grad(x, y, params)"
            )
        if not isinstance(module.CELL, str) or not module.CELL:
            raise UsageError(f"{path}: CELL must name the cell, e.g. 'lstm', got {_short(module.CELL)}")
        self.cell = module.CELL
        self.hidden = _whole(module, "HIDDEN_SIZE", path, MAX_SIZE) if hasattr(module, "HIDDEN_SIZE") else 0
        self.bias = _bias(module, path)  # for the report only: the parameters are PARAMS
        self.shapes = _parameter_shapes(module, path)
        self.initial = self._initial(seed)

    def _initial(self, seed: int) -> dict[str, np.ndarray]:
        """``init_params(seed)``, validated: the module's own idea of its parameters' sizes."""
        path = self.path
        params = _call(path, "init_params", _function(self.module, "init_params", path), seed)
        if not isinstance(params, Mapping) or set(params) != set(self.shapes):
            raise UsageError(
                f"{path}: init_params({seed}) must return a dict keyed like PARAMS "
                f"({', '.join(self.shapes)}), got {_short(params)}"
            )
        initial = {}
        for name, shape in self.shapes.items():
            try:
                value = np.asarray(params[name], dtype=float)
            except (TypeError, ValueError):
                value = None
            if value is None or value.shape != shape or not np.all(np.isfinite(value)):
                raise UsageError(
                    f"{path}: init_params({seed})[{name!r}] must be finite numbers of shape {shape} (PARAMS), "
                    f"got {_short(params[name])}"
                )
            initial[name] = value
        return initial

    def cases(self, rng):
        """(x, y, params): one-hot and dense batches; parameters uniform around 0, and around the
        module's initialisation (for the LSTM, the forget-gate bias near +1), in ± twice the
        largest initial entry of each parameter (0.5 where that is 0)."""
        scales = {}
        for name, value in self.initial.items():
            largest = float(np.max(np.abs(value)))
            scales[name] = 2.0 * largest if largest > 0 else 0.5
        for case, dense in enumerate((False, True, False, True)):
            x, y = _batch(rng, 3, self.steps, self.size, dense)
            params = {}
            for name, shape in self.shapes.items():
                centre = self.initial[name] if case % 2 else 0.0
                params[name] = centre + rng.uniform(-1, 1, size=shape) * scales[name]
            yield x, y, params

    def loss(self, x, y, params):
        return _call(self.path, "loss", self.loss_function, x, y, params)

    def loss_and_grad(self, x, y, params):
        result = _call(self.path, "loss_and_grad", self.gradient_function, x, y, params)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            got = f"{len(result)} values" if isinstance(result, (tuple, list)) else type(result).__name__
            raise _Wrong("structure", f"loss_and_grad returns {got}, not the pair (loss, grads)")
        loss, grads = result
        if not isinstance(grads, Mapping):
            raise _Wrong(
                "structure",
                f"loss_and_grad returns a {type(grads).__name__} as grads, not a dict keyed like PARAMS",
            )
        extra = [_short(name) for name in grads if name not in self.shapes]
        if extra:
            raise _Wrong(
                "structure",
                f"loss_and_grad returns gradients for {', '.join(extra)}, which are not in PARAMS",
            )
        return loss, dict(grads)


# -- test points ---------------------------------------------------------------------------------------


def _batch(rng: np.random.Generator, batch: int, steps: int, size: int, dense: bool):
    """Inputs (one-hot words, or dense normal values) and labels with both classes present."""
    if dense:
        x = rng.normal(size=(batch, steps, size))
    else:
        x = np.eye(size)[rng.integers(0, size, size=(batch, steps))]
    y = rng.integers(0, 2, size=batch).astype(float)
    y[0], y[-1] = 0.0, 1.0
    return x, y


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


# -- validating what the module returns ----------------------------------------------------------------


def _entries(mask: np.ndarray) -> str:
    """The positions where ``mask`` holds, e.g. "(0, 1), (2, 0) and 3 more"."""
    positions = [tuple(int(i) for i in index) for index in np.argwhere(mask)]
    named = ", ".join(str(position) for position in positions[:MAX_ENTRIES_NAMED])
    more = len(positions) - MAX_ENTRIES_NAMED
    return named + (f" and {more} more" if more > 0 else "")


def _not_finite(name: str, value: np.ndarray, what: str) -> _Wrong | None:
    bad = ~np.isfinite(value)
    if not bad.any():
        return None
    kinds = " or ".join(
        kind for kind, mask in (("NaN", np.isnan(value)), ("inf", np.isinf(value))) if mask.any()
    )
    where = "" if value.ndim == 0 else f" at entries {_entries(bad)}"
    return _Wrong("finite", f"{name}: {what} is {kinds}{where}", [name])


def _gradient(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """The gradient ``value`` as a float64 array of ``shape``; ``_Wrong`` naming what is wrong with it."""
    scalar_types = (float, np.floating, np.integer, np.complexfloating, int, complex)
    if isinstance(value, np.ndarray):
        array = value
    elif shape == () and isinstance(value, scalar_types) and not isinstance(value, (bool, np.bool_)):
        array = np.asarray(value)
    else:
        want = "a number" if shape == () else f"a NumPy array of shape {shape}"
        if isinstance(value, (list, tuple, dict, set)):
            given = f"a {type(value).__name__} of {len(value)} items"
        else:
            given = f"{_short(value, 40)} ({type(value).__name__})"
        raise _Wrong("type", f"{name}: the gradient is {given}, not {want}", [name])
    if array.dtype.kind in "USO":  # "1.5" is not a gradient, whatever float() makes of it
        held = "strings" if array.dtype.kind in "US" else "Python objects"
        raise _Wrong("dtype", f"{name}: the gradient holds {held} (dtype {array.dtype}), not numbers", [name])
    if array.dtype.kind == "c":
        raise _Wrong(
            "dtype", f"{name}: the gradient is complex ({array.dtype}) although every input was real", [name]
        )
    if array.dtype.kind != "f" or array.dtype.itemsize < 8:
        raise _Wrong("dtype", f"{name}: the gradient has dtype {array.dtype}, not float64", [name])
    if array.shape != shape:
        raise _Wrong("shape", f"{name}: the gradient has shape {array.shape}, the parameter {shape}", [name])
    problem = _not_finite(name, array, "the gradient")
    if problem:
        raise problem
    return array.astype(float)


def _number(value, what: str, complex_allowed: bool = False):
    """One number returned by ``loss`` (complex only where a complex step went in)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    numbers = (float, int, np.floating, np.integer) + (
        (complex, np.complexfloating) if complex_allowed else ()
    )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers):
        want = "a number" if complex_allowed else "a real number"
        raise _Wrong("loss", f"{what} returns {_short(value, 40)} ({type(value).__name__}), not {want}")
    return value


# -- the comparison ------------------------------------------------------------------------------------


def _stencil(loss_at, method: str, step: float, points: int):
    """The derivative of ``loss_at(s)`` (the loss with one entry moved by s) at s = 0."""
    if method == "complex step":
        h = 1e-20
        return np.imag(loss_at(1j * h)) / h
    if points == 5:  # the five-point central stencil, error O(h⁴)
        return (8 * (loss_at(step) - loss_at(-step)) - (loss_at(2 * step) - loss_at(-2 * step))) / (12 * step)
    return (loss_at(step) - loss_at(-step)) / (2 * step)


def _numerical(
    interface: _Interface, x, y, params, name: str, method: str, rng
) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices checked, the numerical derivative of ``loss`` at each) for one parameter."""
    value = np.asarray(params[name], dtype=float)
    indices = np.arange(value.size)
    if value.size > MAX_ENTRIES:
        indices = np.sort(rng.choice(value.size, size=MAX_ENTRIES, replace=False))
    complex_step = method == "complex step"
    # For the complex step every parameter is complex (zero imaginary parts but the one entry moved):
    # a module may add one parameter's products into another's array in place, which NumPy refuses
    # for complex into float64.
    dtype = complex if complex_step else float
    others = {other: np.asarray(given, dtype=dtype) for other, given in params.items()}

    def loss_at(step, index):
        moved = value.astype(dtype)
        moved.reshape(-1)[index] += step
        result = _number(interface.loss(x, y, {**others, name: moved}), "loss", complex_allowed=complex_step)
        if complex_step and not isinstance(result, (complex, np.complexfloating)):
            raise _Wrong(
                "complex",
                f"{name}: loss returns the real {type(result).__name__} {_short(result)} for complex parameters, "
                "so the complex step cannot see its derivative: let complex numbers flow through, or declare "
                "ANALYTIC = False",
                [name],
            )
        return result

    want = np.array(
        [
            _stencil(lambda s, i=i: loss_at(s, i), method, interface.fd_step, interface.fd_points)
            for i in indices
        ],
        dtype=float,
    )
    bad = ~np.isfinite(want)
    if bad.any():
        positions = ", ".join(
            str(tuple(int(i) for i in np.unravel_index(index, value.shape)))
            for index in indices[bad][:MAX_ENTRIES_NAMED]
        )
        more = int(bad.sum()) - MAX_ENTRIES_NAMED
        kind = "complex-step" if complex_step else "finite-difference"
        raise _Wrong(
            f"numerical {method}",
            f"{name}: loss is NaN or inf near the test point, so its {kind} derivative is not finite"
            + (
                ""
                if value.ndim == 0
                else f" at entries {positions}" + (f" and {more} more" if more > 0 else "")
            ),
            [name],
        )
    return indices, want


def _relative(got, want, floor: float = 1e-8) -> float:
    got, want = np.atleast_1d(np.asarray(got, dtype=float)), np.atleast_1d(np.asarray(want, dtype=float))
    scale = max(float(np.max(np.abs(want))), floor, 1e-8)
    return float(np.max(np.abs(got - want)) / scale)


class _Problems:
    """Problems found, one line per parameter and kind, with the number of batches it happened in."""

    def __init__(self):
        self.found: dict[tuple, list] = {}
        self.names: set[str] = set()

    def add(self, wrong: _Wrong, names) -> None:
        names = wrong.names if wrong.names is not None else names
        self.names.update(names)
        entry = self.found.setdefault((tuple(names), wrong.kind), [wrong.message, 0])
        entry[1] += 1

    def lines(self, cases: int) -> list[str]:
        return [
            message + (f" (in {count} of {cases} batches)" if count > 1 else "")
            for message, count in self.found.values()
        ]


def _check_case(interface: _Interface, case, methods, rng, report: Report, problems: _Problems) -> None:
    x, y, params = case
    names = list(interface.shapes)
    try:
        loss, raw = interface.loss_and_grad(x, y, params)
        loss = _number(loss, "loss_and_grad (its loss)")
    except _Wrong as wrong:
        problems.add(wrong, names)
        return
    if not np.isfinite(loss):
        problems.add(_Wrong("loss", f"loss: loss_and_grad returns the loss {loss}"), ["loss"])
    else:
        try:
            value = _number(interface.loss(x, y, params), "loss")
            if not abs(value - loss) <= 1e-8 * max(1.0, abs(value)):
                message = (
                    f"loss: loss_and_grad returns the loss {loss!r}, loss returns {value!r} at the same point"
                )
                problems.add(_Wrong("loss", message), ["loss"])
        except _Wrong as wrong:
            problems.add(wrong, ["loss"])
    gradients = {}
    for name, shape in interface.shapes.items():
        try:
            if name not in raw:
                raise _Wrong("missing", f"{name}: loss_and_grad returns no gradient for it", [name])
            gradients[name] = _gradient(name, raw[name], shape)
        except _Wrong as wrong:
            problems.add(wrong, [name])
    for method in methods:
        numerical = {}
        for name in names:
            try:
                numerical[name] = _numerical(interface, x, y, params, name, method, rng)
            except _Wrong as wrong:
                problems.add(wrong, [name])
        # Finite differences carry an absolute rounding error of about ε·L/h whatever the size of the
        # derivative, so with fd_floor a parameter whose gradient is tiny here (a saturated gate) is
        # measured against FD_FLOOR times the largest gradient entry. The complex step has no such
        # error and is measured against each parameter's own size.
        floor = 0.0
        if method == "finite differences" and interface.fd_floor and numerical:
            floor = interface.fd_floor * max(float(np.max(np.abs(want))) for _, want in numerical.values())
        for name, (indices, want) in numerical.items():
            if name not in gradients:
                continue
            error = _relative(gradients[name].reshape(-1)[indices], want, floor or 1e-8)
            worst = report.errors[method]
            worst[name] = error if worst[name] is None else max(worst[name], error)
            report.compared[method][name] += len(indices)


def _require_interface(module, path) -> None:
    """The names every module needs: INTERFACE, where a dict-interface module (CELL) may declare
    ANALYTIC (and ACTIVATIONS) instead of one ACTIVATION."""
    dict_interface = hasattr(module, "CELL")
    missing = [
        name
        for name in INTERFACE
        if not hasattr(module, name) and not (dict_interface and name == "ACTIVATION")
    ]
    if missing:
        raise UsageError(
            f"{path} lacks {', '.join(missing)}: it does not have the generated interface "
            "(make one with 'bptt codegen')"
        )


def _analytic(module, path) -> tuple[str, bool, str]:
    """(the activation(s) to name in the report, whether the complex step applies, why not).

    A module's ANALYTIC (True when every function in it is analytic, so complex parameters flow
    through) decides; otherwise its ACTIVATION, looked up in the activation table.
    """
    names = getattr(module, "ACTIVATION", None)
    if names is None and isinstance(getattr(module, "ACTIVATIONS", None), (tuple, list)):
        names = ", ".join(str(name) for name in module.ACTIVATIONS)
    if hasattr(module, "ANALYTIC"):
        analytic = module.ANALYTIC
        if not isinstance(analytic, (bool, np.bool_)):
            raise UsageError(
                f"{path}: ANALYTIC must be True or False, got {_short(analytic)}: {_regenerate(path)}"
            )
        return str(names or "?"), bool(analytic), "the module declares ANALYTIC = False"
    if names is None:
        return "?", False, "the module declares neither ANALYTIC nor ACTIVATION"
    if not isinstance(names, str):
        raise UsageError(
            f"{path}: ACTIVATION must name the activation, got {_short(names)}: {_regenerate(path)}"
        )
    from .activations import ACTIVATIONS  # here, not on import: it needs SymPy, the command does not

    activation = ACTIVATIONS.get(names)
    if activation is None:
        return names, False, f"activation {names!r} is not one bptt knows to be analytic"
    return names, activation.analytic, f"activation {names!r} is not analytic"


def check_module(module, path: str = "<module>", seed: int = 0) -> Report:
    """Compare ``module.loss_and_grad`` with the numerical gradients on random inputs.

    Runs in this process with no time limit (``run_check`` adds one). Whatever the module raises is a
    ``UsageError``; whatever it returns that cannot be compared fails the report, named in
    ``report.problems``.
    """
    _require_interface(module, path)
    name, analytic, reason = _analytic(module, path)
    methods = ["finite differences"] + (["complex step"] if analytic else [])
    rng = np.random.default_rng(seed)
    if hasattr(module, "CELL"):
        interface = _Dict(module, path, analytic, seed)
    elif hasattr(module, "HIDDEN_SIZE"):
        interface = _Matrix(module, path, analytic)
    else:
        interface = _Scalar(module, path, analytic)
    names = list(interface.shapes)
    report = Report(
        path=str(path),
        activation=name,
        steps=interface.steps,
        cases=0,
        tolerances={method: TOLERANCES[method] for method in methods},
        errors={method: dict.fromkeys(names) for method in methods},
        compared={method: dict.fromkeys(names, 0) for method in methods},
    )
    if isinstance(interface, _Matrix):
        report.hidden, report.bias = interface.hidden, interface.bias
    if isinstance(interface, _Dict):
        report.hidden, report.bias, report.cell = interface.hidden, interface.bias, interface.cell
    if not analytic:
        report.skipped["complex step"] = reason
    problems = _Problems()
    for case in interface.cases(rng):
        report.cases += 1
        _check_case(interface, case, methods, rng, report, problems)
    # a parameter with any problem was not (fully) compared: no error is reported for it
    for method in methods:
        for name in problems.names & set(names):
            report.errors[method][name] = None
    report.problems = problems.lines(report.cases)
    return report


# -- the report ----------------------------------------------------------------------------------------


def _failed_line(report: Report) -> str:
    if report.passed:
        return "passed"
    if report.problems:
        return "FAILED: the module returned values that cannot be compared (above)"
    return "FAILED: a gradient disagrees beyond tolerance"


def _cell(error, width: int) -> str:
    return f"{'n/a':>{width}}" if error is None else f"{error:>{width}.2e}"


def _failing(report: Report, method: str) -> list[str]:
    tolerance = report.tolerances[method]
    return [name for name, error in report.errors[method].items() if error is None or not error <= tolerance]


def _format_rows(report: Report) -> str:
    """One row per parameter (an LSTM has 13), one column per method."""
    methods = list(report.errors)
    title = f"{report.path}: cell {report.cell}, n = {report.steps}" + (
        f", H = {report.hidden}" if report.hidden else ""
    )
    lines = [
        f"{title}, {report.cases} random batches",
        f"  {'parameter':<12}" + "".join(f"{method:>22}" for method in methods),
    ]
    for name in next(iter(report.errors.values()), {}):
        lines.append(f"  {name:<12}" + "".join(_cell(report.errors[m][name], 22) for m in methods))
    lines.append(f"  {'tolerance':<12}" + "".join(f"{report.tolerances[m]:>22.0e}" for m in methods))
    results = []
    for method in methods:
        failed = _failing(report, method)
        results.append("FAIL " + ",".join(failed) if failed else "ok")
    lines.append(f"  {'result':<12}" + "".join(f"{result:>22}" for result in results))
    return "\n".join(lines + _tail(report))


def _tail(report: Report) -> list[str]:
    lines = [f"  {method:<20}skipped: {reason}" for method, reason in report.skipped.items()]
    lines += [f"  FAIL {problem}" for problem in report.problems]
    return lines + [_failed_line(report)]


def format_report(report: Report) -> str:
    if report.cell != "rnn":
        return _format_rows(report)
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
        ok = not _failing(report, method)
        lines.append(
            f"  {method:<20}"
            + "".join(_cell(worst[p], 12) for p in parameters)
            + f"{report.tolerances[method]:>12.0e}  {'ok' if ok else 'FAIL'}"
        )
    return "\n".join(lines + _tail(report))


# -- a user's file in a child process, one time limit per call (bptt check, bptt grade) ---------------
#
# Why a child process: a module can hang (in Python or inside compiled code), call sys.exit or
# os._exit, crash the interpreter, or print. A signal-based alarm (SIGALRM) only interrupts Python
# bytecode, so a Numba kernel or a C call that never returns would never see it, and the module could
# install its own handler or catch the exception. A child process is ended by SIGKILL whatever it
# runs, its exit cannot end the command, and its stdout is pointed at stderr so the report (or the
# JSON) alone goes to stdout. The child reports each call's start and end as one byte on a pipe; the
# parent ends the child, its session and every process below it (the module's own children too) when
# one call has run longer than the limit, when the child answers, and on SIGINT, SIGTERM or SIGHUP;
# the child dies with the parent (PR_SET_PDEATHSIG) if the parent is killed outright. Plain subprocess, not multiprocessing: no fork of a process that holds BLAS threads,
# and the same on every start method.
#
# ``run_in_child`` is the mechanism, shared by ``bptt check`` (``_check_in_child``) and ``bptt grade``
# (``symbolic.grade._grade_in_child``): the child calls one function of ours, which reports each call
# into the user's file with ``call_starts`` / ``call_returns``, and sends back what it returns (JSON).

# the calls into a user's file that only some commands make (bptt grade's cell file)
_CALL_CODES["cell"] = b"c"
_CALL_NAMES[ord("c")] = "cell"
_DESCRIPTIONS["cell"] = "the cell file (its top-level code)"

_CHILD = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from symbolic.check import _child; _child(*sys.argv[2:])"
)


@dataclass(frozen=True)
class Wording:
    """How ``run_in_child``'s messages name the command's work (check and grade word them apart)."""

    #: after "PATH: CALL did not return within N s, "
    stopped: str
    #: "PATH: {who} ended the {process} (exit status 3) during CALL: {must}"
    who: str
    process: str
    must: str
    #: what the child is doing between calls
    work: str
    #: the first line of a bug of ours in the child (its traceback follows)
    bug: str


CHECK_WORDING = Wording(
    stopped="so the check was stopped: fix the module, or if it is only slow (a Numba module compiles on its "
    "first call) raise --timeout",
    who="the module",
    process="checking process",
    must="a module to check must return from its calls",
    work="the check",
    bug="bptt check failed while checking the module:",
)


def call_starts(label: str) -> None:
    """In ``run_in_child``'s child: a call into the user's file starts (its time limit runs). ``label``:
    "import", "cell", "init_params", "loss", "loss_and_grad", or "function" (named by the parent's
    ``descriptions``). Does nothing outside a child."""
    if _WATCH is not None:
        _WATCH(_CALL_CODES[label])


def call_returns() -> None:
    """In ``run_in_child``'s child: the call into the user's file has returned."""
    if _WATCH is not None:
        _WATCH(b".")


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG), so a parent
    killed by a signal it cannot catch leaves no child running; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _adopt_orphans() -> None:
    """Linux: processes orphaned below this one (a daemon's double fork) become its children
    (PR_SET_CHILD_SUBREAPER), so ``end_tree`` of this process still finds them."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # 36: PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            pass


def _proc_table() -> dict[int, tuple[int, int]] | None:
    """pid → (parent pid, session id) of every process, from /proc; None where there is no /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":  # a zombie has ended already
            table[int(name)] = (int(fields[1]), int(fields[3]))
    return table


def _doomed(root: int, session: int | None) -> set[int] | None:
    """The processes below ``root`` (its descendants) and in ``session``, never this one."""
    table = _proc_table()
    if table is None:
        return None
    found = {root} if root in table else set()
    found |= {pid for pid, (_, sid) in table.items() if session is not None and sid == session}
    grew = True
    while grew:
        below = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found - {os.getpid()}


def end_tree(root: int, session: int | None = None) -> None:
    """SIGKILL ``root``, every process below it and every process of ``session``: first stopped
    (SIGSTOP), rescanned until no new one appears, so none forks a survivor in between."""
    stopped: set[int] = set()
    for _ in range(50):
        found = _doomed(root, session)
        if found is None:  # no /proc: the process group of a session leader is the best there is
            with _suppress_gone():
                os.killpg(session if session is not None else root, signal.SIGKILL)
            return
        new = found - stopped
        if not new:
            break
        for pid in new:
            with _suppress_gone():
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        with _suppress_gone():
            os.kill(pid, signal.SIGKILL)


class _suppress_gone:
    """Ignore a process that has ended meanwhile (or is not ours to signal)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


def ended_message(path, status: int, during: str, wording: Wording) -> str:
    """"PATH: the file ended the grading process (exit status 3) during CALL: …"."""
    how = f"exit status {status}"
    if status < 0 and -status in signal.valid_signals():
        how = f"killed by signal {signal.Signals(-status).name}"
    return f"{path}: {wording.who} ended the {wording.process} ({how}) during {during}: {wording.must}"


def _child(entry: str, fd: str, arguments: str, parent: str = "") -> None:
    """The child process of ``run_in_child``: call ``entry`` ("module:function") with ``arguments`` (a
    JSON list), send what it returns on ``fd``, exit."""
    global _WATCH
    if parent:
        die_with_parent(int(parent))
    _adopt_orphans()
    output = int(fd)
    os.set_inheritable(output, False)  # the module's own subprocesses must not hold the pipe open
    del sys.argv[1:]  # what our caller passed is none of the user's file's business

    def watch(code: bytes) -> None:
        os.write(output, code)

    _WATCH = watch
    try:
        module_name, function_name = entry.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        payload = {"result": function(*json.loads(arguments))}
    except UsageError as error:
        payload = {"usage": str(error), "error": type(error).__name__}
    except KeyboardInterrupt:
        os._exit(130)
    except BaseException:  # noqa: BLE001 - a bug of ours: the parent shows the traceback
        payload = {"bug": traceback.format_exc()}
    data = json.dumps(payload).encode()
    end_tree(os.getpid())  # what the user's file started, orphans included, ends before the answer
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        with open(output, "wb", closefd=True) as pipe:
            pipe.write(b"R" + len(data).to_bytes(8, "big") + data)
    except OSError:  # the parent has stopped listening (it has an answer, or is ending us)
        os._exit(0)
    # no atexit handlers, no waiting for threads the module may have left running
    os._exit(0)


def _ended(process: subprocess.Popen) -> None:
    """Kill the child, everything below it and its whole session (it is a session leader), and reap it."""
    end_tree(process.pid, process.pid)
    if process.poll() is None:
        with _suppress_gone():
            process.kill()
    process.wait()


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived while a child ran: unwind (the child is ended), then die of it."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number = number


class _signals_end_children:
    """While a child runs, SIGTERM and SIGHUP end it (and what it started) before this process ends as
    the signal says; SIGINT does already (KeyboardInterrupt unwinds through ``_ended``)."""

    def __enter__(self):
        import threading

        self.previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers
        for number in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(number) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                self.previous[number] = signal.signal(number, self._handler)
        return self

    @staticmethod
    def _handler(number, frame):
        raise _Signalled(number)

    def __exit__(self, kind, error, trace):
        for number, old in self.previous.items():
            signal.signal(number, old)
        if isinstance(error, _Signalled):  # the child is ended by now: end as the signal says
            signal.raise_signal(error.number)
            raise UsageError(f"stopped by {signal.Signals(error.number).name}") from None
        return False


def run_in_child(entry: str, arguments: list, path: str, timeout: float, wording: Wording = CHECK_WORDING,
                 descriptions: Mapping[str, str] | None = None, errors: Mapping[str, type] | None = None):
    """Call ``entry`` ("module:function", of ours) with ``arguments`` (JSON values) in a child process and
    return what it returns (a JSON value).

    Each call into the user's file at ``path`` that the child reports (``call_starts``) must return
    within ``timeout`` seconds; the child's stdout goes to stderr. A ``UsageError`` in the child is
    raised here with its message (as the class ``errors`` maps its class name to, if any); a call that
    does not return in time, or a child that exits or is killed before it answers, is a ``UsageError``
    naming the call (``descriptions``: call label → how to name it). However it ends (a result, an
    error, SIGINT, SIGTERM, SIGHUP), the child and every process it started are killed first.
    """
    names = {**_DESCRIPTIONS, **(descriptions or {})}
    with _signals_end_children():
        payload = _watch_child(entry, arguments, path, timeout, wording, names)
    result = json.loads(bytes(payload[8 : 8 + int.from_bytes(payload[:8], "big")]))
    if "usage" in result:
        raise (errors or {}).get(result.get("error"), UsageError)(result["usage"])
    if "bug" in result:
        raise RuntimeError(f"{wording.bug}\n" + result["bug"])
    return result["result"]


def _watch_child(entry: str, arguments: list, path: str, timeout: float, wording: Wording, names: dict):
    """Start the child, time each call it reports, and return its answer (8 bytes of length, JSON)."""
    read_end, write_end = os.pipe()
    command = [
        sys.executable,
        *subprocess._args_from_interpreter_flags(),  # as multiprocessing does
        "-c",
        _CHILD,
        json.dumps(sys.path),
        entry,
        str(write_end),
        json.dumps(arguments),
        str(os.getpid()),
    ]
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=2, pass_fds=(write_end,), start_new_session=True
        )
    finally:
        os.close(write_end)
    call, started, payload = None, 0.0, None
    try:
        while not _complete(payload):
            waiting = 1.0 if call is None else max(0.0, min(1.0, started + timeout - time.monotonic()))
            ready, _, _ = select.select([read_end], [], [], waiting)
            chunk = os.read(read_end, 1 << 16) if ready else None
            if chunk == b"" or (chunk is None and process.poll() is not None):
                break  # the child has gone (every write end closed, or it exited)
            if chunk and payload is not None:
                payload += chunk
            elif chunk:
                marker = chunk.find(b"R")
                for code in chunk if marker < 0 else chunk[:marker]:
                    if code == ord("."):
                        call = None
                    elif code in _CALL_NAMES:
                        call, started = _CALL_NAMES[code], time.monotonic()
                if marker >= 0:
                    payload = bytearray(chunk[marker + 1 :])
            if call is not None and payload is None and time.monotonic() - started > timeout:
                raise UsageError(
                    f"{path}: {names.get(call, call)} did not return within {timeout:g} s, {wording.stopped}"
                )
        if not _complete(payload):
            during = names.get(call, call) if call else wording.work
            raise UsageError(ended_message(path, process.wait(), during, wording))
    finally:
        os.close(read_end)
        _exited(process, 5 if _complete(payload) else 0)
        _ended(process)
    return payload


def _exited(process: subprocess.Popen, seconds: float) -> None:
    """Wait up to ``seconds`` for the child to exit without reaping it: its pid (and session id) cannot
    be reused by an unrelated process before ``_ended`` has looked for what it left."""
    deadline = time.monotonic() + seconds
    while hasattr(os, "waitid"):
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return
        except ChildProcessError:
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _check_in_child(path: str, seed: int) -> dict:
    """``bptt check``'s work in the child of ``run_in_child``: the report as data."""
    with np.errstate(all="ignore"):
        report = check_module(load_module(path), path, seed)
    return {**asdict(report), "passed": report.passed}


def _run_child(path: str, seed: int, timeout: float) -> Report:
    """Run ``check_module`` on ``path`` in a child process; each call into the module ends within
    ``timeout`` seconds or the check ends with a ``UsageError``."""
    result = run_in_child("symbolic.check:_check_in_child", [path, seed], path, timeout)
    fields = {key: value for key, value in result.items() if key != "passed"}
    return Report(**fields)


def _complete(payload) -> bool:
    """Whether the child's result (8 bytes of length, then JSON) has arrived whole."""
    return (
        payload is not None and len(payload) >= 8 and len(payload) >= 8 + int.from_bytes(payload[:8], "big")
    )


def _seed(seed) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        value = None
    if value is None or isinstance(seed, float) or value < 0:
        raise UsageError(f"the seed must be a whole number from 0, got {seed!r}: pass e.g. --seed 0")
    return value


def _timeout(timeout) -> float:
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if not (0 < value < math.inf):
        raise UsageError(
            f"the time limit must be a positive number of seconds, got {timeout!r}: pass e.g. --timeout 60"
        )
    return value


def run_check(path, as_json: bool = False, seed=0, timeout=DEFAULT_TIMEOUT) -> int:
    """``bptt check``: print the worst relative error per parameter and method; 0 if all pass, 1 if not.

    The module runs in a child process: it is imported (its top-level code runs) and each call into it
    must return within ``timeout`` seconds. A module that raises, exits, crashes or hangs is a
    ``UsageError`` (exit 2); one that returns wrong or uncomparable gradients fails (1).
    """
    seed, timeout = _seed(seed), _timeout(timeout)
    report = _run_child(str(path), seed, timeout)
    if as_json:
        print(json.dumps({**asdict(report), "passed": report.passed}, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    sys.stdout.flush()
    return 0 if report.passed else 1


__all__ = ["DEFAULT_TIMEOUT", "Report", "check_module", "format_report", "load_module", "run_check"]
