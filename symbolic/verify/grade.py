"""Grade anyone's BPTT: a gradient implementation against the exact derivation, the mistake named.

``grade_function(fn, cell=...)`` calls a user's ``loss_and_grad`` on a fixed set of cases and compares
every returned number with the exact recursion of the generic engine (``engine.evaluate``):

1. **Compare**, per parameter and per entry, over n = 1..8, 12, 20 (LENGTHS; and n = path_steps where a
   cell's lags reach past 20, LAG_LENGTH_LIMIT), batch sizes B = 1, 2, 5 at
   random points and the notes' three sentences, at H = 3 unless told (HIDDEN; the notes' scalars for
   the plain RNN's positional form). An entry g is right when
   |g − g_exact| ≤ RELATIVE · max(|g_exact|, FLOOR · s), s the case's largest |gradient entry|.
   Where the error falls between RELATIVE and UNDECIDED, float64 cannot decide who is off, so the exact
   value is recomputed at 60 digits (mpmath) and the entry judged against that.
2. **Localise in time**: the gradient at n steps is a sum of per-timestep terms; n = 1 holds the
   short-term term alone, so "right for n = 1, wrong from n = 2" means the long-term terms are wrong.
   "Right at B = 1, wrong for B > 1" points at the batch mean.
3. **Name the mistake**: the user's numbers against the exact gradients of deliberately wrong
   derivations (``MISTAKES``: the engine's mutations, the same f′ mistakes confined to the time
   recursion, the notes' total-derivative slip computed by complex step, and combinations with a
   flipped residual or a missing batch mean); a mistake is named when it matches to RELATIVE in every
   case.

The interface is a generated module's: ``loss_and_grad(x, y, w_i, w_h, w_o) -> (loss, dw_i, dw_h,
dw_o)`` for the plain RNN (the notes' scalar shapes at H = 1; b_h=, b_o= keywords with biases), and
``loss_and_grad(x, y, params) -> (loss, grads)`` with dicts keyed by parameter name for every cell.

``grade_function`` (and ``symbolic.testing.assert_bptt``) call the function in this process. ``run_grade``
(``bptt grade FILE.py``) grades in a child process, with ``bptt check``'s mechanism
(``symbolic.verify.check.run_in_child``: each call into a user's file, the cell file too, must return within
``--timeout`` seconds, a file that hangs, exits or crashes is one line (exit 2), a signal to the command
ends every process it started), and that child runs the graded file in a sandbox process of its own
(``symbolic.verify.sandbox``) which holds no reference, tolerance or verdict and sends back plain numbers.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .check import DEFAULT_TIMEOUT, _short, _timeout
from .child import Wording, call_returns, call_starts, run_in_child
from .grade_diagnoses import (
    constant_factor,
    diagnose,
    follows_float64,
    forward_in_float32,
    low_precision,
    probed,
    within_float32,
)
from .grade_every import candidates_for, labels, localisation, retell
from .grade_report import (
    DIGITS,
    EXTRA_MISTAKES,
    FLOOR,
    LOSS_MISTAKES,
    RELATIVE,
    RELATIVE32,
    UNDECIDED,
    Finding,
    Report,
    _listed,
    _loss_error,
    _relative,
    mistakes,
)
from .sandbox import ChannelTampered, ChildGone, Opaque, Sandbox

#: The sequence lengths and batch sizes graded when the function takes any length: every n to 8 and
#: two well past it, so a gradient truncated to the last k steps, or wrong at one n only, shows.
LENGTHS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 20)
#: A cell whose lags make some path exist only from n = path_steps > 20 on (a skip K ≥ 20) is also graded
#: there, up to this length, so a function that drops that path is not called right.
LAG_LENGTH_LIMIT = 400
BATCHES = (1, 2, 5)
#: Cases at the one length of a function that takes one length (``steps``): 12 random points.
ONE_LENGTH_CASES = 4
#: The hidden size graded unless told otherwise: above 1, where a matrix and its transpose differ. The
#: plain RNN's positional form alone defaults to 1, the notes' scalar model (w_h a number).
HIDDEN = 3
#: Random points: every parameter N(0, SCALE²), x N(0, 1): long-term terms well above the tolerance,
#: gates away from saturation.
SCALE = 0.6

class FunctionUnusable(UsageError):
    """The graded function cannot be called as the interface says (missing, wrong signature, raises,
    returns something else); the CLI exits 2, ``assert_bptt`` raises AssertionError."""


# -- what is graded ----------------------------------------------------------------------------------


@dataclass
class Interface:
    """How the graded function is called: positional weights (the plain RNN) or one params dict."""

    name: str
    #: parameter name → shape the function sees (the notes' scalars at H = 1)
    shapes: dict
    #: parameter name → shape in the engine
    engine_shapes: dict
    positional: tuple = ()
    keywords: tuple = ()
    #: the hidden size graded
    hidden: int = 1

    @property
    def dict_form(self) -> bool:
        return not self.positional

    def describe(self) -> str:
        if self.dict_form:
            return f"{self.name}(x, y, params) -> (loss, grads)"
        arguments = ", ".join(self.positional) + "".join(f", {k}=" for k in self.keywords)
        returned = ", ".join(f"d{p}" for p in (*self.positional, *self.keywords))
        return f"{self.name}(x, y, {arguments}) -> (loss, {returned})"

    def to_user(self, values: dict) -> dict:
        return {name: np.asarray(values[name]).reshape(shape) for name, shape in self.shapes.items()}

    def arguments(self, params: dict):
        """params in the function's shapes → (args after x, y; keyword args)."""
        def value(name):
            array = np.array(params[name], dtype=float)
            return float(array) if array.ndim == 0 else array

        if self.dict_form:
            return (({name: value(name) for name in self.shapes}),), {}
        return tuple(value(name) for name in self.positional), {name: value(name) for name in self.keywords}

    def outputs(self, result) -> tuple[float, dict]:
        """(loss, gradients in the function's shapes) from whatever it returned; FunctionUnusable if
        that is not the interface's."""
        names = (*self.positional, *self.keywords)
        expected = "(loss, grads)" if self.dict_form else f"(loss, {', '.join('d' + n for n in names)})"
        if not isinstance(result, (tuple, list)):
            raise FunctionUnusable(f"{self.name} returns {_type_name(result)}, not the tuple {expected}")
        count = 2 if self.dict_form else 1 + len(names)
        if len(result) != count:
            raise FunctionUnusable(f"{self.name} returns {len(result)} values where {count} belong: {expected}")
        loss = _numbers(result[0], "the loss", self.name)
        if loss.size != 1:
            raise FunctionUnusable(f"{self.name} returns a loss of shape {loss.shape}: return the mean loss, one number")
        if self.dict_form:
            grads = result[1]
            if not hasattr(grads, "keys"):
                raise FunctionUnusable(
                    f"{self.name} returns {_type_name(grads)} as its gradients: return a dict keyed like params"
                )
            missing = [name for name in self.shapes if name not in grads]
            if missing:
                raise FunctionUnusable(
                    f"{self.name}'s gradients lack {', '.join(missing)}: return a dict keyed like params"
                )
            raw = {name: grads[name] for name in self.shapes}
        else:
            raw = dict(zip(names, result[1:]))
        gradients = {}
        for name, shape in self.shapes.items():
            array = _numbers(raw[name], f"dL/d{name}", self.name)
            if array.shape != shape:
                if tuple(s for s in array.shape if s != 1) != tuple(s for s in shape if s != 1):
                    raise FunctionUnusable(
                        f"{self.name} returns dL/d{name} of shape {array.shape} where {shape} belongs "
                        f"(the shape of {name})"
                    )
                array = array.reshape(shape)
            gradients[name] = array
        return float(loss.reshape(())), gradients


def _numbers(value, what: str, function: str) -> np.ndarray:
    if isinstance(value, Opaque):  # from bptt grade's sandbox: what it returned was not numbers
        raise FunctionUnusable(f"{function} returns {what} as {_given(value.type_name, value.dtype)}, not numbers")
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":  # strings ("1.5" too), objects
            raise FunctionUnusable(
                f"{function} returns {what} as {_given(type(value).__name__, str(array.dtype))}, not numbers")
        if np.iscomplexobj(array):
            if np.any(np.imag(array) != 0):
                raise FunctionUnusable(f"{function} returns complex numbers for {what}: return real ones")
            array = np.real(array)
        return np.asarray(array, dtype=float)
    except FunctionUnusable:
        raise
    except (TypeError, ValueError):
        raise FunctionUnusable(f"{function} returns {what} as {type(value).__name__}, not numbers") from None


def _given(type_name: str, dtype: str | None) -> str:
    """"strings (dtype <U3)", "ndarray of dtype object", "Foo"."""
    try:
        kind = np.dtype(dtype).kind if dtype else None
    except TypeError:
        kind = None
    if kind in ("U", "S"):
        return f"strings (dtype {dtype})"
    return f"{type_name} of dtype {dtype}" if dtype else type_name


def _type_name(value) -> str:
    return value.type_name if isinstance(value, Opaque) else type(value).__name__


def _interface(d, hidden: int | None, inputs: int, name: str, fn) -> Interface:
    """The plain RNN's positional form when the cell has one and fn takes it, else the dict form;
    hidden None: 1 for the positional form without biases (the notes' scalars), else HIDDEN."""
    cell = d.cell
    positional = tuple(cell.positional)
    keywords = tuple(p for p in positional if p in cell.vectors or p == cell.readout_bias)
    positional = tuple(p for p in positional if p not in keywords)
    # the dict form for a function of (x, y, params) exactly; *args takes the positional form
    use_positional = bool(positional) and not _third_is_params(fn) and (
        _takes(fn, 2 + len(positional), keywords) or not _takes(fn, 3, ()))
    if hidden is None:  # the notes' scalars only with their readout
        hidden = 1 if use_positional and not keywords and d.outputs.default else HIDDEN
    engine_shapes = d.shapes(hidden, inputs)
    if use_positional and hidden == 1 and not keywords:
        # the notes' scalar model: w_i (D,), w_h and w_o numbers
        shapes = {p: tuple(size for size, symbol in zip(engine_shapes[p], cell.parameters[p]) if symbol != "H")
                  for p in positional}
    else:
        shapes = dict(engine_shapes)
    if use_positional:
        order = (*positional, *keywords)
        shapes = {p: shapes[p] for p in order}
        return Interface(name, shapes, {p: engine_shapes[p] for p in order}, positional, keywords, hidden)
    return Interface(name, shapes, engine_shapes, hidden=hidden)


def _third_is_params(fn) -> bool:
    """fn(x, y, params, …): the dict form, even where mask=, initial= would take the positional weights."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) >= 3 and names[2] == "params"


def _takes(fn, count: int, keywords: tuple) -> bool:
    """Whether fn can be called with ``count`` positional arguments and these keywords."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(*range(count), **{k: None for k in keywords})
    except TypeError:
        return False
    return True


# -- the cases ----------------------------------------------------------------------------------------


@dataclass(eq=False)  # cases are told apart by identity (their arrays have no truth value)
class Case:
    """One call: x (B, n, D), y (B,) ((B, n) with a readout after every step), params in the engine's
    shapes, and what came back."""

    steps: int
    batch: int
    data: str
    x: np.ndarray
    y: np.ndarray
    params: dict
    exact: dict = field(default_factory=dict)
    exact_loss: float = 0.0
    #: the float64 reference (what the wrong derivations are computed in)
    exact_float: dict = field(default_factory=dict)
    user: dict = field(default_factory=dict)
    user_loss: float = 0.0
    #: it returned float16/float32 numbers
    low_precision: bool = False
    #: None: judged against the float64 reference; DIGITS: against the 60-digit one
    digits: int | None = None

    def label(self) -> str:
        return f"n = {self.steps}, B = {self.batch}" + (", the notes' sentences" if self.data == "notes" else "")

    def describe(self) -> dict:
        return {"steps": self.steps, "batch": self.batch, "data": self.data,
                "reference": f"{self.digits} digits" if self.digits else "float64"}


def _cases(d, hidden: int, inputs: int, steps: int | None, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    shapes = d.shapes(hidden, inputs)
    lengths = LENGTHS if steps is None else (steps,)
    if steps is None and LENGTHS[-1] < d.path_steps <= LAG_LENGTH_LIMIT:
        lengths = (*LENGTHS, d.path_steps)
    cases = []

    def point():
        return {name: rng.normal(0.0, SCALE, shape) for name, shape in shapes.items()}

    # at one length only, more points stand in for the lengths not graded
    batches = BATCHES if steps is None else BATCHES * ONE_LENGTH_CASES
    for n in lengths:
        for batch in batches:
            x = rng.normal(size=(batch, n, inputs))
            y = labels(d.outputs, rng, batch, n)
            cases.append(Case(n, batch, "random", x, y, point()))
        if n == 3 and inputs == 3 and d.outputs.default:
            from ..study.data import NOTES, encode

            x = np.stack([encode(text) for text, _ in NOTES])
            y = np.array([label for _, label in NOTES], dtype=float)
            cases.append(Case(3, len(NOTES), "notes", x, y, point()))
    return cases


# -- grading -------------------------------------------------------------------------------------------


def _derivation(cell, activation: str, hidden, bias: bool, inputs, steps, skip=None, outputs=None):
    """The exact derivation and the validated sizes; options a user gets wrong raise UsageError."""
    from ..cells import BUILTIN, cell_of
    from ..cells.spec import Cell
    from ..engine.derivation import derive_cell
    from ..model import Model

    model = Model(steps=steps if steps is not None else 3, activation=activation, inputs=inputs,
                  hidden=1 if hidden is None else hidden, cell="rnn" if isinstance(cell, Cell) else cell, bias=bias,
                  skip=skip, outputs=outputs)
    if isinstance(cell, Cell) or model.cell in BUILTIN:
        chosen = cell if isinstance(cell, Cell) else cell_of(model)
    else:
        call_starts("cell")  # in bptt grade's child process, a cell file's top-level code is timed too
        chosen = cell_of(model)
        call_returns()
    return derive_cell(chosen, outputs=model.outputs), model


def grade_function(fn, cell="rnn", steps: int | None = None, hidden: int | None = None, activation: str = "tanh",
                   bias: bool = False, inputs: int = 3, seed: int = 0, name: str | None = None,
                   steps_hint: str = "steps=N", strict: bool = False, unbatched: bool = False,
                   skip: int | None = None, outputs=None) -> Report:
    """Grade ``fn`` (a generated module's ``loss_and_grad`` interface) against the exact BPTT of ``cell``.

    ``cell``: a built-in name, a cell file's path, or a ``Cell``; ``steps``: None to grade every length
    in LENGTHS (the function must take any n), or the one length it takes; ``hidden``: None for HIDDEN
    (1 for the plain RNN's positional form, the notes' scalar model); ``outputs``: a
    ``symbolic.outputs.Outputs`` (None: the notes' readout after the last step). Raises UsageError for bad options
    and FunctionUnusable when fn cannot be graded. fn runs in this process (``bptt grade`` runs it in a
    sandbox process of its own).
    """
    d, model = _derivation(cell, activation, hidden, bias, inputs, steps, skip, outputs)
    report = _grade(d, model, fn, hidden, steps, seed, name, steps_hint, strict=strict, unbatched=unbatched)
    return report


def _grade(d, model, fn, hidden, steps, seed: int, name, steps_hint: str, cell_hint: str = "",
           strict: bool = False, unbatched: bool = False) -> Report:
    """grade_function's work once the cell is derived; ``cell_hint``, when the file names another cell,
    is the fix to name if the function cannot be called (rather than the length)."""
    hidden = None if hidden is None else model.hidden
    steps = None if steps is None else model.steps
    name = name or getattr(fn, "__name__", "the function")
    if not callable(fn):
        raise FunctionUnusable(f"{name} is {type(fn).__name__}, not a function")
    interface = _interface(d, hidden, model.inputs, name, fn)
    probe = (2 + len(interface.positional)) if not interface.dict_form else 3
    if not _takes(fn, probe, interface.keywords) and _signature_known(fn):
        raise FunctionUnusable(
            f"{name}{_signature_text(fn)} cannot be called as {interface.describe()}: give it that signature"
            + (" or choose the cell with --cell" if not interface.dict_form else "")
        )
    if unbatched:
        fn = _per_sequence(fn, interface)
        interface.name = f"{name} per sequence"
    cases = _cases(d, interface.hidden, model.inputs, steps, seed)
    lengths_text = ", ".join(map(str, sorted({case.steps for case in cases})))
    from ..engine.evaluate import evaluate

    for case in cases:
        with np.errstate(all="ignore"):
            loss, exact = evaluate(d, case.params, case.x, case.y).as_float()
        case.exact_loss, case.exact = loss, interface.to_user(exact)
        case.exact_float = case.exact
        user_params = interface.to_user(case.params)
        args, kwargs = interface.arguments(user_params)
        call_starts("function")  # in bptt grade's child process, the call's time limit runs
        try:
            result = fn(case.x.copy(), case.y.copy(), *args, **kwargs)
        except (KeyboardInterrupt, ChildGone, ChannelTampered):
            raise
        except SystemExit as error:
            raise FunctionUnusable(
                f"{name} called sys.exit({_short(error.code)}) at {case.label()}: a graded function must return "
                "its values, not exit"
            ) from None
        except Exception as error:  # whatever the graded function raises is its own
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            one = "; if it takes one sequence, x (n, D), with --unbatched" if (
                steps_hint == "--steps N" and not unbatched) else ""
            hint = (f" (grade calls it with n = {lengths_text}: if it takes one sequence length only, give it "
                    f"with {steps_hint}{one})") if steps is None else ""
            # a parameter of another cell (by name: the sandbox re-raises the file's KeyError as its own class)
            if type(error).__name__ == "KeyError" and not cell_hint:
                cell_hint = (f" (it asks for a parameter the cell {d.cell.name} does not have: if it is for "
                             "another cell, pass --cell lstm, gru or its cell file)")
            hint = cell_hint or hint
            raise FunctionUnusable(
                f"{name} raises {type(error).__name__} at {case.label()}: {first}{hint}"
            ) from error
        case.low_precision = low_precision(result)
        case.user_loss, case.user = interface.outputs(result)  # what it returned may run its code too
        call_returns()
        errors = _relative(case.user, case.exact)
        worst = max(float(np.max(e)) if e.size else 0.0 for e in errors.values())
        loss_error = _loss_error(case.user_loss, case.exact_loss)
        if not case.low_precision and (RELATIVE < max(worst, loss_error) <= UNDECIDED or any(
                np.any((e > RELATIVE) & (e <= UNDECIDED)) for e in errors.values())):
            precise = evaluate(d, case.params, case.x, case.y, digits=DIGITS)
            case.exact_loss = float(precise.loss)
            case.exact = interface.to_user({k: np.asarray(v, dtype=float) for k, v in precise.gradients.items()})
            case.digits = DIGITS
    float32 = any(c.low_precision for c in cases) or (
        forward_in_float32([_loss_error(c.user_loss, c.exact_loss) for c in cases])
        and not _follows_float64(d, interface, fn, cases))
    report = _judge(d, interface, cases, steps, strict, float32)
    report.settings = {"cell": d.cell.name, "activation": model.activation, "hidden": interface.hidden,
                       "inputs": model.inputs, "bias": model.bias, "steps": steps, "seed": seed,
                       **({} if d.outputs.default else {"outputs": d.outputs.flags})}
    return report


def _follows_float64(d, interface: Interface, fn, cases: list[Case]) -> bool:
    """Whether the loss follows the probe (``grade_diagnoses.PROBE``) as a float64 function's does, at
    the three longest cases: a loss off by float32 rounding that does not is float32's."""
    from ..engine.evaluate import evaluate

    for case in sorted(cases, key=lambda c: c.steps)[-3:]:
        moved = probed(case.params)
        args, kwargs = interface.arguments(interface.to_user(moved))
        call_starts("function")
        try:
            loss, _ = interface.outputs(fn(case.x.copy(), case.y.copy(), *args, **kwargs))
        except (KeyboardInterrupt, ChildGone, ChannelTampered):
            raise
        except Exception:  # noqa: BLE001 - the graded function's own; no evidence either way
            return True
        finally:
            call_returns()
        with np.errstate(all="ignore"):
            exact = float(evaluate(d, moved, case.x, case.y).loss) - float(evaluate(d, case.params, case.x, case.y).loss)
        if not follows_float64(loss - case.user_loss, exact):
            return False
    return True


def _per_sequence(fn, interface: Interface):
    """``fn`` of one sequence (x (n, D), y a number) as a function of a batch: the mean of its losses and
    gradients, returned as fn returns them (float32 kept, for the float32 diagnosis)."""
    def batched(x, y, *args, **kwargs):
        raw = [fn(x[b], y[b] if np.ndim(y) > 1 else float(y[b]), *args, **kwargs) for b in range(len(x))]
        outputs = [interface.outputs(result) for result in raw]
        dtype = np.float32 if low_precision(raw) else float
        loss = np.mean([loss for loss, _ in outputs]).astype(dtype)
        grads = {name: np.mean([g[name] for _, g in outputs], axis=0).astype(dtype) for name in interface.shapes}
        if interface.dict_form:
            return loss, grads
        return (loss, *(grads[name] for name in (*interface.positional, *interface.keywords)))

    return batched


def _signature_known(fn) -> bool:
    try:
        inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return True


def _signature_text(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return ""


def _judge(d, interface: Interface, cases: list[Case], steps, strict: bool = False, float32: bool = False) -> Report:
    findings = [_loss_finding(cases)]
    for name, shape in interface.shapes.items():
        finding = Finding(name, shape, True)
        wrong_entries = np.zeros(shape, dtype=bool)
        for case in cases:
            error = _relative(case.user, case.exact)[name]
            worst = float(np.max(error)) if error.size else 0.0
            if worst > finding.worst_relative_error or finding.worst_case is None:
                finding.worst_relative_error, finding.worst_case = worst, case.describe()
            if worst > RELATIVE:
                finding.right = False
                wrong_entries |= error > RELATIVE
                finding.failing_steps = sorted({*finding.failing_steps, case.steps})
                finding.first_failing_steps = finding.failing_steps[0]
        finding.entries = [tuple(int(i) for i in index) for index in zip(*np.nonzero(wrong_entries))] if shape else (
            [()] if not finding.right else [])
        findings.append(finding)
    model = f"{d.cell.description} (cell {d.cell.name})" if d.cell.description else f"cell {d.cell.name}"
    hidden = cases[0].params[d.cell.readout].shape[-1]
    inputs = cases[0].x.shape[2]
    outputs = "" if d.outputs.default else f"; {d.outputs.describe}"
    report = Report(interface.name, interface.describe(), f"{model}, H = {hidden}, D = {inputs}{outputs}", {},
                    cases, findings)
    if report.passed:
        return report
    names = [f.parameter for f in findings[1:]]
    if float32 and within_float32(cases, names) and all(
            _loss_error(c.user_loss, c.exact_loss) <= RELATIVE32 for c in cases):
        report.precision, report.strict = "float32", strict
        if strict:
            report.localisation = ("every entry is within float32's reach of the exact gradient and it computes in "
                                   "float32: right formula, float32 precision (--strict grades at float64's tolerance)")
        else:
            for finding in findings:
                finding.right, finding.entries, finding.failing_steps = True, [], []
        return report
    report.localisation = localisation(_localise(findings, cases, steps), d.outputs.every)
    _name_mistakes(d, interface, cases, report)
    retell(report)
    if report.mistake is None:
        wrong = [f.parameter for f in findings[1:] if not f.right]
        report.diagnosis = diagnose(cases, wrong, [(c.user, c.exact) for c in cases]) if wrong else None
        if report.diagnosis and ("factor" in report.diagnosis or "clipped" in report.diagnosis):
            report.localisation = ""  # a scaled or clipped gradient is off in every case: time is not at fault
    return report


def _loss_finding(cases: list[Case]) -> Finding:
    finding = Finding("loss", (), True)
    for case in cases:
        error = _loss_error(case.user_loss, case.exact_loss)
        if error > finding.worst_relative_error or finding.worst_case is None:
            finding.worst_relative_error, finding.worst_case = error, case.describe()
        if error > RELATIVE:
            finding.right = False
            finding.entries = [()]
            finding.failing_steps = sorted({*finding.failing_steps, case.steps})
            finding.first_failing_steps = finding.failing_steps[0]
    if not finding.right:
        for name, factor in (("loss_summed", lambda c: c.batch), ("loss_sign", lambda c: -1)):
            if all(_loss_error(c.user_loss, factor(c) * c.exact_loss) <= RELATIVE for c in cases):
                if name == "loss_summed" and all(c.batch == 1 for c in cases):
                    continue
                finding.mistake = name
                break
        losses = [replace(c, user={"loss": np.array([c.user_loss])}, exact={"loss": np.array([c.exact_loss])})
                  for c in cases]
        if finding.mistake is None and constant_factor(losses, ["loss"]):
            finding.mistake = "loss_scaled"
    return finding


def _localise(findings: list[Finding], cases: list[Case], steps) -> str:
    wrong = [f for f in findings if not f.right and f.parameter != "loss"]
    if not wrong:
        return "the gradients are right, the loss is not"
    loss = findings[0]
    if not loss.right and loss.mistake is None:
        return ("the loss is wrong too, so the forward pass is not the graded model's: check the cell, "
                "the activation, the hidden size and the biases")
    failing = [c for c in cases if any(np.max(_relative(c.user, c.exact)[f.parameter], initial=0) > RELATIVE
                                       for f in wrong)]
    singles = [c for c in cases if c.batch == 1]
    if singles and all(c.batch > 1 for c in failing):
        return ("right at B = 1 for every n, wrong for B > 1: the batch is handled wrongly "
                "(the gradient is the mean over the batch)")
    if steps is not None:
        return f"graded at n = {steps} only (the function takes that length): no localisation in time"
    lengths = sorted({c.steps for c in cases})
    wrong_at = sorted({c.steps for c in failing})
    first = wrong_at[0]
    right = [n for n in lengths if n not in wrong_at]
    if wrong_at != [n for n in lengths if n >= first]:
        return (f"wrong at n = {_listed(wrong_at)} only, right at n = {_listed(right)}: a mistake in the "
                "long-term terms' form would stay wrong at every longer n, so this one depends on n itself "
                "(a case or a loop bound for some lengths)")
    if first == lengths[0]:
        return (f"wrong already at n = {first}, where the gradient is the short-term term alone: the "
                "short-term term (the output factor, f′ or the immediate partials) is wrong")
    if first == 2:
        return "right for n = 1, wrong from n = 2: the long-term terms are wrong"
    return (f"right for n = {_listed(right)}, wrong from n = {first}: the long-term terms are wrong from gap "
            f"{first - 1} on (a product of {first - 1} or more factors ∂s_k/∂s_(k−1)), as in BPTT truncated "
            f"to the last {first - 1} steps")


def _name_mistakes(d, interface: Interface, cases: list[Case], report: Report) -> None:
    """Per wrong parameter, the first candidate that matches it in every case; overall, the first that
    matches every wrong parameter."""
    wrong = [f.parameter for f in report.findings if not f.right and f.parameter != "loss"]
    if not wrong:
        loss = report.findings[0]
        report.mistake = loss.mistake
        return
    candidates = candidates_for(d, interface)
    if not d.outputs.default:  # the notes' catalogue does not all apply: name what was tried
        report.tried = candidates.tried()
    failing = [c for c in cases if any(np.max(_relative(c.user, c.exact)[p], initial=0) > RELATIVE for p in wrong)]
    ordered = failing + [c for c in cases if c not in failing]
    matches = []
    for name, base, modifiers in candidates.names():
        matched = set(wrong)
        for case in ordered:
            values = candidates.values(base, modifiers, case)
            errors = _relative(case.user, values)
            matched = {p for p in matched if float(np.max(errors[p], initial=0)) <= RELATIVE}
            if not matched:
                break
        if matched:
            matches.append((name, matched))
    for finding in report.findings:
        if finding.parameter in wrong:
            finding.mistake = next((name for name, matched in matches if finding.parameter in matched), None)
    complete = [name for name, matched in matches if matched == set(wrong)]
    if complete:
        report.mistake = complete[0]
        singles = [name for name in complete[1:] if " + " not in name]
        report.also = singles


# -- files and the command line -------------------------------------------------------------------------


def load_function(path, name: str = "loss_and_grad"):
    """Import the file (its top-level code runs) and return its function ``name``; UsageError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file: give the .py file that defines {name}")
    module_name = "bptt_graded_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} cannot be imported as a Python module: give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.resolve().parent))  # its own imports of neighbouring files
    call_starts("import")  # in bptt grade's child process, the import's time limit runs
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UsageError(f"{path} has a syntax error at line {error.lineno}: {error.msg}") from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the file's top-level code is the user's
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"{path} fails on import ({type(error).__name__}: {first}): fix the file") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path.resolve().parent))
    call_returns()
    if not hasattr(module, name):
        functions = sorted(n for n, v in vars(module).items()
                           if inspect.isfunction(v) and v.__module__ == module_name and not n.startswith("_"))
        known = f" (it defines {', '.join(functions)})" if functions else ""
        raise FunctionUnusable(f"{path} has no function {name}{known}: name the function with --function NAME")
    function = getattr(module, name)
    if not callable(function):
        raise FunctionUnusable(f"{path}: {name} is {type(function).__name__}, not a function")
    return function


#: How ``run_in_child`` words a graded file that hangs, exits or crashes.
GRADE_WORDING = Wording(
    stopped="so the grading was stopped: fix the file, or if it is only slow raise --timeout",
    who="the file",
    process="grading process",
    must="a file to grade must return from its calls",
    work="the grading",
    bug="bptt grade failed while grading the file:",
    command="bptt grade",
)


def run_grade(path, cell="rnn", activation="tanh", hidden=None, function="loss_and_grad", as_json=False,
              steps=None, bias=False, inputs=3, seed=0, timeout=DEFAULT_TIMEOUT, strict=False,
              unbatched=False, skip=None, outputs=None) -> int:
    """``bptt grade``: print the diagnosis; 0 right, 1 wrong. Unusable input raises UsageError (exit 2).

    The grading runs in one child process (``symbolic.verify.check.run_in_child``, as ``bptt check``): the file
    is imported there (its top-level code runs) and each call into it (the import, each call of the
    function) must return within ``timeout`` seconds. A file that hangs, exits, crashes or raises is a
    ``UsageError`` (``FunctionUnusable`` when the function cannot be graded); what it prints goes to
    stderr, so that --json output stays one JSON document. ``outputs``: an ``Outputs`` (None: the notes').
    """
    try:
        seed = int(str(seed).strip())
    except ValueError:
        raise UsageError(f"--seed must be a whole number, got {seed!r}") from None
    if seed < 0:
        raise UsageError(f"--seed must be a whole number ≥ 0, got {seed}")
    timeout = _timeout(timeout)
    options = {"cell": os.fspath(cell) if isinstance(cell, os.PathLike) else cell, "activation": activation,
               "hidden": hidden, "function": function, "steps": steps, "bias": bias, "inputs": inputs,
               "seed": seed, "strict": strict, "unbatched": unbatched, "skip": skip,
               "outputs": None if outputs is None else vars(outputs)}
    descriptions = {"function": str(function), "cell": f"the cell file {cell} (its top-level code)"}
    result = run_in_child("symbolic.verify.grade:_grade_in_child", [str(path), options], str(path), timeout,
                          wording=GRADE_WORDING, descriptions=descriptions,
                          errors={"FunctionUnusable": FunctionUnusable})
    if as_json:
        print(json.dumps(result["data"], indent=2))
    else:
        print(result["text"])
    return 0 if result["passed"] else 1


def _cell_hint(path: str, graded: str) -> str:
    """" (the file declares CELL = 'lstm': pass --cell lstm)" when the file's own top-level CELL constant
    (read from its syntax, not run) names a cell other than the one graded; else ""."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CELL" for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            declared = node.value.value
            if declared != graded:
                fix = f"--cell {declared}" if declared in ("rnn", "lstm", "gru") else "--cell FILE.py (its cell file)"
                return f" (the file declares CELL = {declared!r} and is graded as the cell {graded}: pass {fix})"
    return ""


def _grade_in_child(path: str, options: dict) -> dict:
    """``bptt grade``'s work in the child of ``run_in_child``: the reference, the tolerances and the
    verdict stay here; the graded file runs in a sandbox process of its own (``symbolic.verify.sandbox``), which
    returns plain numbers. The report as text and as data."""
    cell, activation, hidden, bias = options["cell"], options["activation"], options["hidden"], options["bias"]
    inputs, steps, function = options["inputs"], options["steps"], options["function"]
    # options first: a bad --cell is reported before the file runs
    from ..outputs import Outputs

    outputs = Outputs(**options["outputs"]) if options.get("outputs") else None
    d, model = _derivation(cell, activation, hidden, bias, inputs, steps, options["skip"], outputs)
    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist or is not a file: give the .py file that defines {function}")
    with Sandbox(path, function, GRADE_WORDING, {"FunctionUnusable": FunctionUnusable}) as sandbox:
        fn = sandbox.open()
        report = _grade(d, model, fn, hidden, steps, options["seed"], function, "--steps N",
                        _cell_hint(path, d.cell.name), options.get("strict", False), options.get("unbatched", False))
    report.source = str(path)
    return {"passed": report.passed, "text": report.format(), "data": report.as_data()}


__all__ = ["BATCHES", "DIGITS", "EXTRA_MISTAKES", "FLOOR", "LENGTHS", "LOSS_MISTAKES", "RELATIVE", "UNDECIDED",
           "Finding", "FunctionUnusable", "Report", "grade_function", "load_function", "mistakes", "run_grade"]
