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

The module is called at every width and length its code switches on (``_probes``): the base cases
(3 sequences), one sequence, lengths 1, 2 and 40, a wide batch, a wide batch of long sequences, and
each path the module declares in CHECK_PATHS. In the base cases at most MAX_ENTRIES entries of each
parameter are differentiated numerically (drawn at random beyond that); elsewhere each parameter is
compared along one random direction, a wide batch's loss against its parts', and a ReLU module's wide
gradients against its sub-batches'. Every entry of every returned gradient is validated (type, dtype,
shape, finite). A report passes only when every parameter was compared by every method and none of
them is beyond tolerance: a gradient that cannot be compared (NaN, wrong shape, a list, missing) fails,
naming it.

The inputs are random: one-hot and dense sequences, labels 0 and 1, weights of moderate size (wide
batches around three labelled centres); for a non-analytic activation (ReLU) the positional modules'
pre-activations are kept away from the kink, and a small step makes crossing one unlikely. A module
with a readout after every step (READOUT = "every") gets a label per step and, if its loss and
loss_and_grad take ``mask=``, a mask that drops one step of each sequence (``interfaces.padding``).

A module whose loss computes in float32 (``symbolic.verify.check_float32``: it loses a move of the
parameters below float32's resolution) may return float32 gradients; they are compared with its loss's
five-point finite differences at a step and tolerance within float32's reach ("right formula, float32
precision"), or at float64's tolerances with ``strict`` (``bptt check --strict``).

The module's interfaces and test points are ``symbolic.verify.interfaces`` (one adapter, shared with
``bptt train``), the numerical derivatives ``symbolic.verify.check_points``, the report's text
``symbolic.verify.check_report``. ``check_module`` runs in the calling process. ``run_check`` (the command) runs the module in a child
process with a time limit per call (``symbolic.verify.child.run_in_child``, shared with ``bptt grade``), so a
module that hangs, exits or crashes cannot take the check with it, and whatever the module prints goes
to stderr, never into the report on stdout.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from dataclasses import replace as replaced
from functools import partial

import numpy as np

from ..errors import UsageError
from .check_float32 import FLOAT32_STENCIL, FLOAT64, Precision, computes_in_float32, float32
from .check_points import (
    MAX_ENTRIES,
    Stencil,
    gradient_array,
    number,
    numerical,
    relative,
    stencil_for,
    worse,
)
from .check_report import Report, format_report
from .check_vjp import check_vjp
from .child import DEFAULT_TIMEOUT, guarded_call, run_in_child, short, time_limit
from .interfaces import (
    BASE_BATCH,
    MAX_STEPS,
    Interface,
    Wrong,
    adapt,
    analytic_of,
    load_module,
    regenerate,
    require_interface,
)

#: The names ``bptt grade`` imports from here (they live in ``child``, beside the time limit).
_short, _timeout = short, time_limit

#: Worst relative error accepted, per method. A 0.1% error in any parameter is far beyond both.
TOLERANCES = {"finite differences": 1e-6, "complex step": 1e-10, "sub-batches": 1e-8}
#: Finite differences resolve a derivative down to about FD_NOISE·ε·max(1, |L|)/h (the loss's rounding
#: over the step); a gradient entry below that is compared against that level, not its own size.
FD_NOISE = 8
#: The base cases: BASE_CASES test points of BASE_BATCH sequences, up to MAX_ENTRIES entries of each
#: parameter compared. Every other call (``_probes``) is one test point at which each parameter's
#: gradient is compared along one random direction (PROBE_ENTRIES 0: ``check_points.numerical``).
BASE_CASES, PROBE_ENTRIES = 4, 0
#: Lengths tried on a module that takes any length, besides LOOP_STEPS: the shortest ones and a long one.
PROBE_LENGTHS = (1, 2, 40)
#: A batch wider than any generated module's narrow paths (and than its blocks of 1024 sequences), for
#: modules that do not list their paths (CHECK_PATHS).
WIDE_BATCH = 1030
#: The widest batch a module may ask for, the largest call (sequences × steps × (D + 8 H)) made (a
#: longer one is shortened to fit, down to 2 steps), and the most paths a module may declare.
MAX_PROBE_BATCH, MAX_PROBE_ENTRIES, MAX_DECLARED_PATHS = 200_000, 10_000_000, 64
#: The second length at which each declared path is called, in a module that takes any length.
SHORT_STEPS = 3


# -- the comparison ------------------------------------------------------------------------------------


class _Problems:
    """Problems found, one line per parameter and kind, with the number of batches it happened in."""

    def __init__(self):
        self.found: dict[tuple, list] = {}
        self.names: set[str] = set()

    def add(self, wrong: Wrong, names) -> None:
        names = wrong.names if wrong.names is not None else names
        self.names.update(names)
        entry = self.found.setdefault((tuple(names), wrong.kind), [wrong.message, 0])
        entry[1] += 1

    def lines(self, cases: int) -> list[str]:
        return [
            message + (f" (in {count} of {cases} batches)" if count > 1 else "")
            for message, count in self.found.values()
        ]


def _result(interface: Interface, x, y, params, problems: _Problems, precision: Precision = FLOAT64) -> tuple | None:
    """``loss_and_grad`` at one point, validated: (loss, parameter name → float64 gradient) with the
    gradients that can be compared; None when the result has not even the interface's structure. A
    module that computes in float32 (``precision``) may return float32 gradients."""
    names = list(interface.shapes)
    try:
        loss, raw = interface.loss_and_grad(x, y, params)
        loss = number(loss, "loss_and_grad (its loss)")
    except Wrong as wrong:
        problems.add(wrong, names)
        return None
    if not np.isfinite(loss):
        problems.add(Wrong("loss", f"loss: loss_and_grad returns the loss {loss}"), ["loss"])
    else:
        try:
            value = number(interface.loss(x, y, params), "loss")
            if not abs(value - loss) <= precision.loss * max(1.0, abs(value)):
                message = (
                    f"loss: loss_and_grad returns the loss {loss!r}, loss returns {value!r} at the same point"
                )
                problems.add(Wrong("loss", message), ["loss"])
        except Wrong as wrong:
            problems.add(wrong, ["loss"])
    gradients = {}
    for name, shape in interface.shapes.items():
        try:
            if name not in raw:
                raise Wrong("missing", f"{name}: loss_and_grad returns no gradient for it", [name])
            gradients[name] = gradient_array(name, raw[name], shape, precision.float32)
        except Wrong as wrong:
            problems.add(wrong, [name])
    return loss, gradients


def _parts(interface: Interface, x, y, params, loss, problems: _Problems, precision: Precision = FLOAT64) -> dict:
    """Parameter name → (compare all, the gradient the module gives the batch in parts of BASE_BATCH
    sequences, combined as its loss combines them: their mean, or their sum). The parts take the narrow
    path, which the base cases compare with finite differences; for a ReLU module at a wide batch,
    where finite differences would straddle kinks, this is the reference of the wide path."""
    batch = x.shape[0]
    results = []
    for start in range(0, batch, BASE_BATCH):
        part = slice(start, start + BASE_BATCH)
        result = _result(interface, x[part], y[part], params, problems, precision)
        if result is None or set(result[1]) != set(interface.shapes):
            return {}
        results.append((x[part].shape[0], *result))
    weights = _combination(loss, [(size, part_loss) for size, part_loss, _ in results], problems, precision.loss / 10)
    if weights is None:
        return {}
    return {
        name: (lambda g: g, sum(w * grads[name].reshape(-1) for w, (_, _, grads) in zip(weights, results)))
        for name in interface.shapes
    }


def _combination(loss, parts, problems: _Problems, tolerance: float = 1e-9) -> list[float] | None:
    """How the loss of a batch combines its parts' (size, loss): the weights of their mean, or of their
    sum; None (and a problem) when it is neither, as when a wide path computes another forward pass."""
    batch = sum(size for size, _ in parts)
    mean = sum(size * part_loss for size, part_loss in parts) / batch
    total = sum(part_loss for _, part_loss in parts)
    if abs(loss - mean) <= tolerance * max(1.0, abs(mean)):
        return [size / batch for size, _ in parts]
    if abs(loss - total) <= tolerance * max(1.0, abs(total)):
        return [1.0] * len(parts)
    problems.add(Wrong("loss", f"loss: the loss of {batch} sequences ({loss!r}) is neither the mean ({mean!r}) "
                                "nor the sum of the losses of its parts of 3 (their narrow path)"), ["loss"])
    return None


def _loss_parts(interface: Interface, x, y, params, loss, problems: _Problems, precision: Precision = FLOAT64) -> None:
    """A wide batch's loss against its parts' of BASE_BATCH sequences (the narrow path): a forward pass
    that is wrong only on a wide path gives a gradient that matches its own wrong loss, so no comparison
    of gradients sees it."""
    parts = []
    for start in range(0, x.shape[0], BASE_BATCH):
        part = slice(start, start + BASE_BATCH)
        try:
            parts.append((x[part].shape[0], number(interface.loss(x[part], y[part], params), "loss")))
        except Wrong as wrong:
            problems.add(wrong, ["loss"])
            return
    _combination(loss, parts, problems, precision.loss / 10)


def _check_case(interface: Interface, stencil: Stencil, case, methods, rng, report: Report, problems: _Problems,
                limit: int = MAX_ENTRIES, precision: Precision = FLOAT64) -> dict:
    """Compare one test point, finite differences with ``stencil``; method → the worst relative error
    found there (absent: none compared)."""
    x, y, params = case
    here = {}
    result = _result(interface, x, y, params, problems, precision)
    if result is None:
        return here
    loss, gradients = result
    if x.shape[0] > BASE_BATCH and "sub-batches" not in methods and np.isfinite(loss):
        _loss_parts(interface, x, y, params, loss, problems, precision)
    for method in methods:
        estimates = {}
        if method == "sub-batches":
            estimates = _parts(interface, x, y, params, loss, problems, precision)
        draws = {}  # the generator's state before each parameter's draw, to redraw the same entries
        for name in [] if method == "sub-batches" else interface.shapes:
            try:
                draws[name] = rng.bit_generator.state
                estimates[name] = numerical(interface.loss, stencil, case, name, method, rng, limit)
            except Wrong as wrong:
                problems.add(wrong, [name])
        # Finite differences carry an absolute rounding error of about ε·L/h whatever the size of the
        # derivative, so with a stencil's floor a parameter whose gradient is tiny here (a saturated gate) is
        # measured against FD_FLOOR times the largest gradient entry. The complex step has no such
        # error and is measured against each parameter's own size.
        floor = 0.0
        if method != "complex step" and stencil.floor and estimates:
            floor = stencil.floor * max(float(np.max(np.abs(want))) for _, want in estimates.values())
        if method == "finite differences":
            # and never below what the stencil's own rounding can resolve: every gradient can be tiny
            # at once (a saturated ŷ, 30 nested activations), under the loss's rounding ε·L/h
            noise = FD_NOISE * precision.eps * max(1.0, abs(loss)) / stencil.step
            floor = max(floor, noise / precision.reach)
        for name, (project, want) in estimates.items():
            if name not in gradients:
                continue
            error = relative(project(gradients[name].reshape(-1)), want, floor or 1e-8)
            if method == "finite differences" and not error <= TOLERANCES[method] and not precision.float32:
                error, unresolved = _finer(interface, stencil, case, name, gradients[name], draws[name], floor,
                                           limit, (error, want))
                if unresolved:
                    report.unresolved.setdefault(name, f"{x.shape[0]} × {x.shape[1]}")
            worst = report.errors[method]
            worst[name] = worse(worst[name], error)
            here[method] = worse(here.get(method), error)
            report.compared[method][name] += len(want)
    return here


def _finer(interface: Interface, stencil: Stencil, case, name: str, gradient, draw, floor: float, limit: int,
           first) -> tuple:
    """(the error of ``name``'s gradient against finite differences at steps 10 and 100 times smaller, on
    the same entries or direction, whether they cannot resolve it). The stencil's truncation error
    (h⁴ L⁽⁵⁾) can exceed the tolerance where the loss bends sharply (30 nested activations), while a
    wrong gradient is wrong at every step: the smallest error is kept, each measured against the floor
    its own rounding allows. Where even that exceeds the tolerance but the estimates at the three steps
    differ among themselves by more (the stencil has not converged) and the complex step applies, the
    gradient is within what finite differences can tell: the tolerance is reported, and why."""
    best, first_want = first
    wants = [np.asarray(first_want, dtype=float)]
    for factor in (10, 100):
        finer = replaced(stencil, step=stencil.step / factor)
        rng = np.random.default_rng()
        rng.bit_generator.state = draw
        try:
            project, want = numerical(interface.loss, finer, case, name, "finite differences", rng, limit)
        except Wrong:
            continue
        wants.append(np.asarray(want, dtype=float))
        best = min(best, relative(project(gradient.reshape(-1)), want, floor * factor or 1e-8))
    tolerance = TOLERANCES["finite differences"]
    if best <= tolerance or not interface.analytic or len(wants) < 3:
        return best, False
    spread = max(relative(a, b, floor * 100 or 1e-8) for a in wants for b in wants)
    return (tolerance, True) if best <= spread else (best, False)



def _declared_paths(module, path, interface) -> list[tuple[str, int, int]]:
    """The module's CHECK_PATHS, validated: (what, batch, steps) for each code path it can take, steps
    None where any length reaches it (the module's own, or LOOP_STEPS)."""
    declared = getattr(module, "CHECK_PATHS", ())
    paths = []
    if isinstance(declared, (tuple, list)) and len(declared) > MAX_DECLARED_PATHS:
        raise UsageError(f"{path}: CHECK_PATHS lists {len(declared)} paths, more than the {MAX_DECLARED_PATHS} "
                         f"bptt check calls: {regenerate(path)}")
    for entry in declared if isinstance(declared, (tuple, list)) else [declared]:
        fine = isinstance(entry, (tuple, list)) and len(entry) == 3 and isinstance(entry[0], str)
        batch, steps = (entry[1], entry[2]) if fine else (None, None)
        fine = fine and _whole_number(batch, MAX_PROBE_BATCH) and (steps is None or _whole_number(steps, MAX_STEPS))
        if not fine or (steps is not None and not interface.any_length and steps != interface.steps):
            raise UsageError(
                f"{path}: CHECK_PATHS must list (what, batch, steps or None) for each code path, the steps "
                f"the module's STEPS when it has one, got {short(entry)}: {regenerate(path)}"
            )
        what = " ".join(entry[0].split())[:80] or "a declared path"  # one line of the report each
        paths.append((what, int(batch), None if steps is None else int(steps)))
    return paths


def _whole_number(value, limit: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and 1 <= value <= limit


def _probes(module, path, interface) -> list[dict]:
    """Every call the check makes, as {"path", "batch", "steps", "cases", "entries", "free"}: the base
    cases, one sequence, short and long sequences (a module that takes any length), a wide batch, and
    each path the module declares (CHECK_PATHS), so code a module switches to by batch width, hidden size
    or length is compared with the numerical derivatives too; "free" when any length reaches the path.
    Calls at one width and length are one probe."""
    steps = interface.steps
    wanted = [("the base cases", BASE_BATCH, steps, BASE_CASES, MAX_ENTRIES, True),
              ("one sequence", 1, steps, 1, PROBE_ENTRIES, True)]
    if interface.any_length:
        wanted += [(f"length {length}", 2, length, 1, PROBE_ENTRIES, False) for length in PROBE_LENGTHS]
    wanted.append(("a wide batch", WIDE_BATCH, steps, 1, PROBE_ENTRIES, True))
    if interface.any_length:  # wide and long at once (a module wrong only for B > 64 and n > 10)
        wanted.append(("a wide batch of long sequences", WIDE_BATCH, PROBE_LENGTHS[-1] + 1, 1, PROBE_ENTRIES, True))
    for what, batch, length in _declared_paths(module, path, interface):
        # a path any length takes runs at two: widths and lengths meet (a strategy wrong at n = 3 only)
        lengths = [length] if length is not None else [steps] + ([SHORT_STEPS] if interface.any_length else [])
        wanted += [(what, batch, n, 1, PROBE_ENTRIES, length is None) for n in lengths]
    probes: dict[tuple[int, int], dict] = {}
    for what, batch, length, cases, entries, free in wanted:
        probe = probes.setdefault((batch, length), {"path": [], "batch": batch, "steps": length, "cases": cases,
                                                    "entries": entries, "errors": {}, "free": free})
        probe["free"] = probe["free"] and free
        if what not in probe["path"]:
            probe["path"].append(what)
    return [{**probe, "path": "; ".join(probe["path"])} for probe in probes.values()]


def _width(interface) -> int:
    """Values a call holds per sequence and step, roughly: the inputs, and a few arrays of the states."""
    hidden = getattr(interface, "hidden", 0) or 1
    return interface.size + 8 * hidden


def _fit(interface, probe) -> None:
    """A call too large to make is shortened (a module that takes any length), down to 2 steps."""
    if interface.any_length and probe["free"] and _too_large(interface, probe):
        probe["steps"] = max(2, MAX_PROBE_ENTRIES // (probe["batch"] * _width(interface)))


def _too_large(interface, probe) -> bool:
    return probe["batch"] * probe["steps"] * _width(interface) > MAX_PROBE_ENTRIES



def check_module(module, path: str = "<module>", seed: int = 0, strict: bool = False) -> Report:
    """Compare ``module.loss_and_grad`` with the numerical gradients on random inputs, at every width and
    length in ``_probes`` (B = 1 included, and every code path the module declares).

    A module whose loss computes in float32 (``check_float32``) is compared with finite differences
    within float32's reach, or at float64's tolerances with ``strict``.

    Runs in this process with no time limit (``run_check`` adds one). Whatever the module raises is a
    ``UsageError``; whatever it returns that cannot be compared fails the report, named in
    ``report.problems``.
    """
    require_interface(module, path)
    name, analytic, reason = analytic_of(module, path)
    rng = np.random.default_rng(seed)
    interface = adapt(module, path, analytic=analytic, seed=seed, call=partial(guarded_call, path))
    names = interface.names
    # its own draw, so that the test points of a float64 module stay those of every other check
    first = next(iter(interface.cases(np.random.default_rng([seed, 32]), BASE_BATCH, interface.steps, 1)))
    precision = float32(strict) if computes_in_float32(interface.loss, first, seed) else FLOAT64
    methods = ["finite differences"] + (["complex step"] if analytic and not precision.float32 else [])
    methods += [] if analytic else ["sub-batches"]
    tolerances = {method: TOLERANCES[method] for method in methods}
    if precision.float32 and not strict:
        tolerances = dict.fromkeys(methods, precision.reach)
    report = Report(
        path=str(path),
        activation=name,
        steps=interface.steps,
        cases=0,
        tolerances=tolerances,
        errors={method: dict.fromkeys(names) for method in methods},
        compared={method: dict.fromkeys(names, 0) for method in methods},
    )
    report.hidden, report.bias, report.cell = interface.hidden, interface.bias, interface.cell
    report.masked = getattr(interface, "masked", False)
    report.precision, report.strict = precision.name, strict
    if not analytic:
        report.skipped["complex step"] = reason + "; wide batches are compared with their sub-batches"
    elif precision.float32:
        report.skipped["complex step"] = "the module computes in float32, which drops the imaginary step"
    problems = _Problems()
    for probe in _probes(module, path, interface):
        _fit(interface, probe)
        if _too_large(interface, probe):
            report.skipped[f"{probe['batch']} × {probe['steps']}"] = f"{probe['path']}: too large to check here"
            continue
        base = probe["entries"] == MAX_ENTRIES
        stencil = FLOAT32_STENCIL if precision.float32 else stencil_for(interface.kind, analytic, wide=not base)
        here = methods
        if not analytic:  # finite differences at a wide batch would straddle some kink of f
            here = ["finite differences"] if base or probe["batch"] <= BASE_BATCH else ["sub-batches"]
        for case in interface.cases(rng, probe["batch"], probe["steps"], probe["cases"]):
            report.cases += 1
            found = _check_case(interface, stencil, case, here, rng, report, problems, probe["entries"], precision)
            for method, error in found.items():
                probe["errors"][method] = worse(probe["errors"].get(method), error)
        report.paths.append({key: value for key, value in probe.items() if key not in ("entries", "free")})
    if interface.kind == "dict" and callable(getattr(module, "vjp", None)) and callable(getattr(module, "states", None)):
        # the backward entry point against finite differences of ⟨upstream, states⟩ (check_vjp)
        report.vjp, found = check_vjp(interface, np.random.default_rng([seed, 25]), BASE_BATCH, interface.steps)
        for line in found:
            problems.add(Wrong("vjp", line), [line])
    # a parameter with any problem was not (fully) compared: no error is reported for it
    for method in methods:
        for name in problems.names & set(names):
            report.errors[method][name] = None
    report.problems = problems.lines(report.cases)
    return report



# -- the command ---------------------------------------------------------------------------------------


def _check_in_child(path: str, seed: int, strict: bool = False) -> dict:
    """``bptt check``'s work in the child of ``run_in_child``: the report as data."""
    with np.errstate(all="ignore"):
        report = check_module(load_module(path), path, seed, strict)
    return {**asdict(report), "passed": report.passed}


def _run_child(path: str, seed: int, timeout: float, strict: bool = False) -> Report:
    """Run ``check_module`` on ``path`` in a child process; each call into the module ends within
    ``timeout`` seconds or the check ends with a ``UsageError``."""
    result = run_in_child("symbolic.verify.check:_check_in_child", [path, seed, strict], path, timeout)
    fields = {key: value for key, value in result.items() if key != "passed"}
    return Report(**fields)


def _seed(seed) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        value = None
    if value is None or isinstance(seed, float) or value < 0:
        raise UsageError(f"the seed must be a whole number from 0, got {seed!r}: pass e.g. --seed 0")
    return value


def run_check(path, as_json: bool = False, seed=0, timeout=DEFAULT_TIMEOUT, strict: bool = False) -> int:
    """``bptt check``: print the worst relative error per parameter and method; 0 if all pass, 1 if not.

    The module runs in a child process: it is imported (its top-level code runs) and each call into it
    must return within ``timeout`` seconds. A module that raises, exits, crashes or hangs is a
    ``UsageError`` (exit 2); one that returns wrong or uncomparable gradients fails (1); ``strict`` judges
    a module that computes in float32 at float64's tolerances.
    """
    seed, timeout = _seed(seed), _timeout(timeout)
    report = _run_child(str(path), seed, timeout, bool(strict))
    if as_json:
        print(json.dumps({**asdict(report), "passed": report.passed}, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    sys.stdout.flush()
    return 0 if report.passed else 1


__all__ = ["DEFAULT_TIMEOUT", "Report", "check_module", "format_report", "load_module", "run_check"]
