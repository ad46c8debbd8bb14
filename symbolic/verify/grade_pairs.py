"""Grade a forward/backward pair, CS231n's shape: ``rnn_forward(x, h0, Wx, Wh, b) -> (h, cache)`` and
``rnn_backward(dh, cache) -> (dx, dh0, dWx, dWh, db)`` (and the ``lstm_*`` pair), no adapter.

grade owns the loss: it draws an upstream gradient G_t = ∂L/∂h_t for EVERY step (random, so a backward
that reads only the last step's, or drops what step t + 1 sends back, shows), calls the backward with it,
and compares dx, dh0 and every weight gradient with the engine's vector–Jacobian product
(``engine.vjp``), and the forward's h with the engine's states. The weights reach the pair in a declared
layout (``grade_layouts``: row or column, the gate order, [h; x], a split bias); ``unbatched`` grades
functions of one sequence ((n, D), or with the column layout per-step columns (n, D, 1)), called once
per sequence, their gradients summed over the batch. Wrong pairs are named from the engine's wrong
derivations (the no-carry bug is "truncated"), a gate order, and ``grade_diagnoses``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .check import DEFAULT_TIMEOUT, _timeout
from .child import call_returns, call_starts, run_in_child
from .grade import BATCHES, GRADE_WORDING, HIDDEN, LENGTHS, SCALE, FunctionUnusable, _derivation, _localise
from .grade_diagnoses import (
    constant_factor,
    diagnose,
    follows_float64,
    forward_in_float32,
    low_precision,
    probed,
    within_float32,
)
from .grade_layouts import layout_of
from .grade_mistakes import _chain_only, _unsquared
from .grade_report import FLOOR, FLOOR32, RELATIVE, RELATIVE32, Finding, Report, _relative, mistakes
from .layer_pair import layer_pair
from .sandbox import ChannelTampered, ChildGone, Opaque, Remote, Sandbox

#: The engine's wrong derivations tried on a pair (the batch mean and the residual do not exist here).
PAIR_MUTATIONS = ("truncated", "no_activation_derivative", "derivative_wrong_step", "no_direct_path",
                  "untransposed")


@dataclass(eq=False)
class PairCase:
    """One batch: x (B, n, D), h0 (B, H), upstream G (B, n, H), the engine's parameters, what came back."""

    steps: int
    batch: int
    x: np.ndarray
    h0: np.ndarray
    upstream: np.ndarray
    params: dict
    data: str = "random"
    digits: int | None = None
    exact: dict = field(default_factory=dict)
    engine_exact: dict = field(default_factory=dict)
    exact_h: np.ndarray | None = None
    user: dict = field(default_factory=dict)
    user_h: np.ndarray | None = None
    #: the names of what came back in float16/float32 ("h" for the forward's states)
    low_precision: set = field(default_factory=set)

    def label(self) -> str:
        return f"n = {self.steps}, B = {self.batch}"

    def describe(self) -> dict:
        return {"steps": self.steps, "batch": self.batch, "data": self.data, "reference": "float64"}


@dataclass(frozen=True)
class Pair:
    """How to call the pair: two callables taking positional arrays (``Remote`` calls in bptt grade)."""

    forward: object
    backward: object
    forward_name: str
    backward_name: str
    unbatched: bool = False


def grade_pair(forward, backward, cell="rnn", layout="row", gates=None, params=None, concat="hx",
               hidden=None, inputs=3, activation="tanh", unbatched=False, seed=0, strict=False) -> Report:
    """Grade ``forward``/``backward`` (Python functions, called in this process) against the engine; the
    options as ``bptt grade --forward --backward`` takes them. Raises UsageError for bad options and
    FunctionUnusable when the pair cannot be called."""
    setup = _setup(cell, layout, gates, params, concat, hidden, inputs, activation, unbatched)
    pair = Pair(forward, backward, getattr(forward, "__name__", "forward"), getattr(backward, "__name__", "backward"),
                unbatched)
    return _grade_pair(pair, setup, seed, strict)


def grade_layer(cls, forward="forward", backward="backward", grads_from=None, cell="rnn", layout="row", gates=None,
                params=None, concat="hx", hidden=None, inputs=3, activation="tanh", unbatched=False, seed=0,
                strict=False) -> Report:
    """Grade a layer class built from the weights (``cls(*weights)``, ``forward(x, h0) -> h``,
    ``backward(dh) -> (dx, dh0)``) whose gradients are read as ``grads_from`` says (``layer_pair``);
    the other options as for ``grade_pair``."""
    setup = _setup(cell, layout, gates, params, concat, hidden, inputs, activation, unbatched)
    run = layer_pair(cls, forward, backward, _grads_from(grads_from), list(setup[2].names))
    pair = Pair(*run, f"{cls.__name__}.{forward}", f"{cls.__name__}.{backward}", unbatched)
    return _grade_pair(pair, setup, seed, strict)


def _setup(cell, orientation, gates, params, concat, hidden, inputs, activation, unbatched=False):
    """(the derivation, the model, the layout) from the options; UsageError for a bad one."""
    bias = params is None or any(b in params.replace(" ", "").split(",") for b in ("b", "bx", "bh"))
    d, model = _derivation(cell, activation, hidden or HIDDEN, bias if _takes_bias(cell) else False, inputs, None)
    layout = layout_of(d, orientation, gates, params, concat)
    # per-step columns (min-char-rnn's x (D, 1)) add a bias column (H, 1); a batch of rows takes (H,)
    return d, model, replace(layout, bias_column=unbatched and orientation == "column")


def _grads_from(spec: str | None) -> str | None:
    """"grads", "d{}" (with or without "layer."); UsageError for anything else."""
    if spec is None:
        return None
    text = spec.strip().removeprefix("layer.")
    if not text.replace("{}", "x").isidentifier() or text.count("{}") > 1:
        raise UsageError(f"--grads-from {spec}: give an attribute of the layer holding the gradients (layer.grads: "
                         "a list in --params order or a dict by name) or one per weight with {} for its name "
                         "(layer.d{}: layer.dWx, layer.dWh, layer.db)")
    return text


def _grade_pair(pair: Pair, setup, seed, strict) -> Report:
    from ..engine.vjp import vjp

    d, model, layout = setup
    hidden, inputs = model.hidden, model.inputs
    cases = _cases(d, hidden, inputs, seed)
    for case in cases:
        with np.errstate(all="ignore"):
            values = vjp(d, case.params, case.x, case.upstream, {d.output_state: case.h0})
        case.engine_exact = {k: np.asarray(v, dtype=float) for k, v in values.gradients.items()}
        case.exact = _user_gradients(d, layout, case.engine_exact)
        case.exact_h = np.asarray(values.forward["h"], dtype=float)
        _call(pair, layout, case)
    forward_errors = [float(np.max(_relative({"h": c.user_h}, {"h": c.exact_h}, FLOOR32)["h"], initial=0))
                      for c in cases]
    returned32 = set().union(*(c.low_precision for c in cases))
    forward32 = "h" in returned32 or (forward_in_float32(forward_errors)
                                      and not _follows_float64(d, layout, pair, cases))
    # a float64 forward's float64 gradients are graded at float64's tolerance even beside a float32 one
    report = _judge(d, layout, pair, cases, strict, forward32 or bool(returned32),
                    None if forward32 else returned32)
    report.settings = {"cell": d.cell.name, "activation": model.activation, "hidden": hidden, "inputs": inputs,
                       "layout": layout.orientation, "gates": layout.gates or None, "params": list(layout.names),
                       "unbatched": pair.unbatched, "seed": seed}
    return report


def _follows_float64(d, layout, pair: Pair, cases: list) -> bool:
    """Whether the forward's h follows the probe (``grade_diagnoses.PROBE``) as a float64 function's does,
    at the three longest cases (their first sequence when unbatched)."""
    from ..engine.vjp import vjp

    for case in sorted(cases, key=lambda c: c.steps)[-3:]:
        moved = probed(case.params)
        one = slice(0, 1) if pair.unbatched else slice(None)
        x, h0, upstream = case.x[one], case.h0[one], case.upstream[one]
        if pair.unbatched:
            x, h0 = x[0], h0[0]
            if layout.orientation == "column":
                x, h0 = x[:, :, np.newaxis], h0[:, np.newaxis]
        weights = layout.to_user(moved)
        result = _invoke(pair.forward, pair.forward_name, case, (x, h0, *(weights[n] for n in layout.names)), keep=1)
        try:
            h = np.asarray(result[0], dtype=float).reshape(case.user_h[one].shape)
        except (TypeError, ValueError, IndexError):  # not (h, cache) this time: no evidence either way
            return True
        with np.errstate(all="ignore"):
            exact = (np.asarray(vjp(d, moved, case.x[one], upstream, {d.output_state: case.h0[one]}).forward["h"],
                                dtype=float) - case.exact_h[one])
        if not follows_float64(h - case.user_h[one], exact):
            return False
    return True


def _takes_bias(cell) -> bool:
    """Whether --bias applies (the configurable cells); other cells' biases are in their equations."""
    from ..model import CONFIGURABLE_CELLS

    return isinstance(cell, str) and cell in CONFIGURABLE_CELLS


def _user_gradients(d, layout, engine: dict) -> dict:
    gradients = {"dx": engine["x"], "dh0": engine[f"{d.output_state}_0"]}
    return gradients | {f"d{name}": value for name, value in layout.gradients_to_user(engine).items()}


def _cases(d, hidden: int, inputs: int, seed: int) -> list[PairCase]:
    rng = np.random.default_rng(seed)
    shapes = d.shapes(hidden, inputs)
    cases = []
    for steps in LENGTHS:
        for batch in BATCHES:
            params = {name: rng.normal(0.0, SCALE, shape) for name, shape in shapes.items()}
            cases.append(PairCase(steps, batch, rng.normal(size=(batch, steps, inputs)),
                                  rng.normal(0.0, 0.5, (batch, hidden)), rng.normal(size=(batch, steps, hidden)),
                                  params))
    return cases


# -- calling the pair ---------------------------------------------------------------------------------


def _call(pair: Pair, layout, case: PairCase) -> None:
    """The pair on the case's batch (or on each sequence, ``unbatched``): case.user_h, case.user."""
    weights = [layout.to_user(case.params)[name] for name in layout.names]
    if not pair.unbatched:
        case.user_h, case.user, case.low_precision = _call_once(pair, layout, case, case.x, case.h0,
                                                                case.upstream, weights)
        return
    results = []
    for b in range(case.batch):
        x, h0, dh = case.x[b], case.h0[b], case.upstream[b]
        if layout.orientation == "column":  # min-char-rnn's per-step column vectors
            x, h0, dh = x[:, :, np.newaxis], h0[:, np.newaxis], dh[:, :, np.newaxis]
        results.append(_call_once(pair, layout, case, x, h0, dh, weights, one=True))
    grads = {name: np.stack([r[1][name] for r in results]) for name in ("dx", "dh0")}
    # the batch's weight gradient is the sum of its sequences' (the loss is a sum)
    grads |= {name: sum(r[1][name] for r in results) for name in results[0][1] if name not in grads}
    case.user_h, case.user = np.stack([r[0] for r in results]), grads
    case.low_precision = set().union(*(r[2] for r in results))


def _call_once(pair: Pair, layout, case: PairCase, x, h0, dh, weights, one: bool = False):
    """(h, gradients by name, whether it computed in float32), for a batch (h (B, n, H)) or ``one``
    sequence (h (n, H))."""
    batch_shape = () if one else (case.batch,)
    hidden, inputs = case.h0.shape[1], case.x.shape[2]
    result = _invoke(pair.forward, pair.forward_name, case, (x, h0, *weights), keep=1)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise FunctionUnusable(f"{pair.forward_name} returns {_kind(result)}: return (h, cache), h of shape "
                               f"{(*batch_shape, case.steps, hidden)}")
    h = _array(result[0], (*batch_shape, case.steps, hidden), f"h from {pair.forward_name}")
    names = ("dx", "dh0", *(f"d{name}" for name in layout.names))
    returned = _invoke(pair.backward, pair.backward_name, case, (dh, result[1]))
    if not isinstance(returned, (tuple, list)) or len(returned) != len(names):
        raise FunctionUnusable(f"{pair.backward_name} returns {_kind(returned)}: return ({', '.join(names)})")
    shapes = {"dx": (*batch_shape, case.steps, inputs), "dh0": (*batch_shape, hidden)}
    shapes |= {f"d{name}": shape for name, shape in layout.shapes(hidden, inputs).items()}
    grads = {name: _array(value, shapes[name], f"{name} from {pair.backward_name}")
             for name, value in zip(names, returned)}
    low = {name for name, value in zip(names, returned) if low_precision(value)}
    return h, grads, low | ({"h"} if low_precision(result[0]) else set())


def _invoke(function, name: str, case: PairCase, args, keep=None):
    call_starts("function")
    try:
        if hasattr(function, "_sandbox"):  # bptt grade: the sandbox keeps the cache, we hold its number
            result = function._sandbox.call_positional(function.__name__, args, keep)
        else:
            result = function(*args)
    except (KeyboardInterrupt, ChildGone, ChannelTampered):
        raise
    except SystemExit:
        raise FunctionUnusable(f"{name} called sys.exit at {case.label()}: return the values, not exit") from None
    except Exception as error:  # whatever the graded function raises is its own
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FunctionUnusable(
            f"{name} raises {type(error).__name__} at {case.label()}: {first} (check --layout, --gates, --params "
            "and --unbatched against how it takes its arguments)") from error
    call_returns()
    return result


def _kind(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"{len(value)} values"
    return value.type_name if isinstance(value, Opaque) else type(value).__name__


def _array(value, shape: tuple, what: str) -> np.ndarray:
    if isinstance(value, Opaque):
        raise FunctionUnusable(f"{what} is {value.type_name}, not numbers")
    try:
        array = np.asarray(value)
        numeric = array.dtype.kind in "biuf"
    except (TypeError, ValueError):
        numeric = False
    if not numeric or array.size != int(np.prod(shape)):
        got = array.shape if numeric else type(value).__name__
        raise FunctionUnusable(f"{what} has shape {got} where {shape} belongs")
    if array.shape != shape and tuple(s for s in array.shape if s != 1) != tuple(s for s in shape if s != 1):
        raise FunctionUnusable(f"{what} has shape {array.shape} where {shape} belongs")
    return array.reshape(shape)


# -- the verdict --------------------------------------------------------------------------------------


def _judge(d, layout, pair: Pair, cases: list, strict: bool, float32: bool, loose=None) -> Report:
    """The verdict: float32 (told apart by its evidence) first, then the forward, then the backward's mistake;
    ``loose``: the names graded at float32's tolerance (None: all, when float32)."""
    relative, floor = (RELATIVE32, FLOOR32) if float32 and not strict else (RELATIVE, FLOOR)

    def tolerance(name):
        return (relative, floor) if loose is None or name in loose else (RELATIVE, FLOOR)

    findings = [_finding("h", cases, lambda c: ({"h": c.user_h}, {"h": c.exact_h}), *tolerance("h"))]
    for name in cases[0].exact:
        findings.append(_finding(name, cases, lambda c: (c.user, c.exact), *tolerance(name)))
    args = ", ".join(layout.names)
    interface = (f"{pair.forward_name}(x, h0, {args}) -> (h, cache); {pair.backward_name}(dh, cache) -> "
                 f"(dx, dh0, {', '.join('d' + n for n in layout.names)})" + (" per sequence" if pair.unbatched else ""))
    model = f"{d.cell.description or 'cell ' + d.cell.name}, H = {cases[0].h0.shape[1]}, D = {cases[0].x.shape[2]}, " \
            f"{layout.orientation} layout" + (f", gates {layout.gates}" if layout.gates else "")
    report = Report(pair.backward_name, interface, model, {}, cases, findings,
                    precision="float32" if float32 else None, strict=strict, rejudged=False)
    if report.passed:
        return report
    wrong = [f.parameter for f in findings if not f.right and f.parameter != "h"]
    if float32 and strict and within_float32(cases, [f.parameter for f in findings[1:]]):
        report.localisation = ("every entry is within float32's reach of the exact gradient and it computes in "
                               "float32: right formula, float32 precision (--strict grades at float64's tolerance)")
        return report
    if not findings[0].right:
        report.localisation = "the forward pass is not the graded model's: h differs from the exact states"
        report.diagnosis = _forward_layout(d, layout, cases, relative, floor)
        return report
    report.localisation = _localise(findings, cases, None) if not float32 or loose is not None else (
        "wrong beyond float32's reach (it computes in float32)")
    report.mistake, report.diagnosis = _mutation(d, layout, cases, wrong, relative, floor)
    if report.mistake is None:
        report.diagnosis = _last_step_only(d, layout, cases, wrong, relative, floor) or _backward_gate_order(
            layout, cases, wrong, relative, floor) or diagnose(
            cases, wrong, [(_pieces(layout, c.user), _pieces(layout, c.exact)) for c in cases])
    if report.diagnosis and ("factor" in report.diagnosis or "clipped" in report.diagnosis):
        report.localisation = ""  # a scaled or clipped gradient is off in every case: time is not at fault
    return report


def _finding(name: str, cases, values, relative: float, floor: float) -> Finding:
    # per-sequence arrays (h, dx, dh0) are judged per unit: their leading axes are the batch and time
    shape = np.shape(values(cases[0])[1][name])
    shape = shape[-1:] if name in ("h", "dx", "dh0") else shape
    wrong_entries = np.zeros(shape, dtype=bool)
    finding = Finding(name, shape, True)
    for case in cases:
        got, want = values(case)
        errors = _relative(got, want, floor)[name]
        error = float(np.max(errors, initial=0))
        wrong_entries |= (errors > relative).reshape((-1, *shape)).any(axis=0)
        if error > finding.worst_relative_error or finding.worst_case is None:
            finding.worst_relative_error, finding.worst_case = error, case.describe()
        if error > relative:
            finding.right = False
            finding.failing_steps = sorted({*finding.failing_steps, case.steps})
            finding.first_failing_steps = finding.failing_steps[0]
    finding.entries = [tuple(int(i) for i in index) for index in zip(*np.nonzero(wrong_entries))]
    return finding


def _matches(cases, names, candidate, relative, floor) -> bool:
    for case in cases:
        errors = _relative(case.user, candidate(case), floor)
        if any(float(np.max(errors[n], initial=0)) > relative for n in names):
            return False
    return True


def _mutation(d, layout, cases, wrong, relative, floor) -> tuple:
    """(the wrong derivation the gradients match, or None; words for it times a constant factor, or None)."""
    from ..engine.vjp import vjp

    candidates = []
    for name in PAIR_MUTATIONS:
        try:
            candidates.append((name, d.mutate(name)))
        except ValueError:
            continue
        if name in ("no_activation_derivative", "derivative_wrong_step"):
            candidates.append((f"{name}_in_chain", _chain_only(d, name)))
    try:
        candidates.append(("tanh_derivative_unsquared", _unsquared(d)))
    except ValueError:
        pass
    for name, wrong_d in candidates:
        def gradients(case, wrong_d=wrong_d, sent=name == "truncated"):
            with np.errstate(all="ignore"):
                values = vjp(wrong_d, case.params, case.x, case.upstream, {d.output_state: case.h0})
                engine = {k: np.asarray(v, dtype=float) for k, v in values.gradients.items()}
                if sent:  # what step 1 sends back, computed though never carried (dprev_h of the no-carry bug)
                    first = vjp(d, case.params, case.x[:, :1], case.upstream[:, :1], {d.output_state: case.h0})
                    engine[f"{d.output_state}_0"] = np.asarray(first.gradients[f"{d.output_state}_0"], dtype=float)
            return _user_gradients(d, layout, engine)
        if _matches(cases, wrong, gradients, relative, floor):
            return name, None
        scaled = constant_factor([replace(c, exact=gradients(c)) for c in cases], wrong)
        if scaled:  # two mistakes the catalogue separates: a wrong derivation, and a scaled loss on top
            return name, f"{name} ({mistakes()[name]}), and {scaled.replace('the exact one', 'that one')}"
    return None, None


def _last_step_only(d, layout, cases, wrong, relative, floor) -> str | None:
    """The backward reads dh only at the last step (a many-to-one habit): its gradients are the exact
    ones of an upstream gradient zero before step n."""
    from ..engine.vjp import vjp

    def gradients(case):
        upstream = np.zeros_like(case.upstream)
        upstream[:, -1] = case.upstream[:, -1]
        with np.errstate(all="ignore"):
            values = vjp(d, case.params, case.x, upstream, {d.output_state: case.h0})
        return _user_gradients(d, layout, {k: np.asarray(v, dtype=float) for k, v in values.gradients.items()})

    if _matches(cases, wrong, gradients, relative, floor):
        return ("only the last step's upstream gradient is used: dh[:, t] is added at every step t, not only at "
                "the last (the loss has a term at every step)")
    return None


def _orders(layout):
    return [] if not layout.gates else ["".join(p) for p in itertools.permutations(layout.gates)
                                        if "".join(p) != layout.gates]


def _reordered(layout, order: str):
    by_letter = {g: k for k, g in enumerate(layout.gates)}
    pick = [by_letter[g] for g in order]
    return replace(layout, inputs=tuple(layout.inputs[k] for k in pick),
                   recurrent=tuple(layout.recurrent[k] for k in pick),
                   biases=tuple(layout.biases[k] for k in pick) if layout.biases else (), gates=order)


def _backward_gate_order(layout, cases, wrong, relative, floor) -> str | None:
    """The weight gradients stacked in another gate order than the forward's (and --gates)."""
    for order in _orders(layout):
        other = _reordered(layout, order)
        if _matches(cases, wrong, lambda c, o=other: {**c.exact, **{f"d{n}": v for n, v in
                                                                     o.gradients_to_user(c.engine_exact).items()}},
                    relative, floor):
            return (f"a wrong gate order: the backward stacks the gate gradients as {order} where the forward "
                    f"(and --gates) stacks them as {layout.gates}")
    return None


def _forward_layout(d, layout, cases, relative, floor) -> str | None:
    """A forward that reads the arrays in another declared layout (another gate order, the other
    concatenation): its h is the engine's at the parameters that layout reads from the same arrays."""
    from ..engine.vjp import vjp

    hypotheses = []
    for order in _orders(layout):
        other = _reordered(layout, order)
        hypotheses.append((other, (f"a wrong gate order: the forward reads the stacked gates as {order}, not "
                                  f"{layout.gates}: if that is its convention, grade it with --gates {order}")))
    if "W" in layout.names and cases[0].x.shape[2] == cases[0].h0.shape[1]:
        flipped = "xh" if layout.concat == "hx" else "hx"
        hypotheses.append((replace(layout, concat=flipped),
                           (f"the concatenation the other way round: the forward multiplies W by [{flipped[0]}; "
                           f"{flipped[1]}], not [{layout.concat[0]}; {layout.concat[1]}]: if that is its convention, "
                           f"grade it with --concat {flipped}")))
    for other, text in hypotheses:
        if all(_reads_as(d, layout, other, case, vjp, relative, floor) for case in cases[:6]):
            return text
    return None


def _reads_as(d, layout, other, case, vjp, relative, floor) -> bool:
    """Whether the user's h is the engine's at the parameters ``other`` reads from the arrays sent."""
    pairs = list(zip((*layout.inputs, *layout.recurrent, *layout.biases),
                     (*other.inputs, *other.recurrent, *other.biases)))
    if other.concat != layout.concat:  # [h; x] read as [x; h] (H = D): the two maps trade places
        pairs = list(zip((*layout.inputs, *layout.recurrent), (*layout.recurrent, *layout.inputs)))
        pairs += list(zip(layout.biases, layout.biases))
    read = dict(case.params) | {theirs: case.params[ours] for ours, theirs in pairs}
    h = vjp(d, read, case.x, case.upstream, {d.output_state: case.h0}).forward["h"]
    error = _relative({"h": case.user_h}, {"h": np.asarray(h, dtype=float)}, floor)["h"]
    return float(np.max(error, initial=0)) <= relative


def _pieces(layout, gradients: dict) -> dict:
    """Each gradient, and each gate's block of a stacked one ("db[i]")."""
    pieces = dict(gradients)
    if not layout.gates:
        return pieces
    count = len(layout.gates)
    for name in layout.names:
        value = gradients[f"d{name}"]
        axis = 0 if (name.startswith("b") or layout.orientation == "column") else 1
        for gate, block in zip(layout.gates, np.split(value, count, axis=axis)):
            pieces[f"d{name}[{gate}]"] = block
    return pieces


# -- bptt grade --forward/--backward ---------------------------------------------------------------


def run_pair_grade(path, forward, backward, options: dict, as_json=False, timeout=DEFAULT_TIMEOUT) -> int:
    """``bptt grade FILE.py --forward F --backward B``: 0 right (or right in float32), 1 wrong."""
    timeout = _timeout(timeout)
    options = {**options, "forward": forward, "backward": backward}
    result = run_in_child("symbolic.verify.grade_pairs:_pair_in_child", [str(path), options], str(path), timeout,
                          wording=GRADE_WORDING, descriptions={"function": f"{forward} or {backward}"},
                          errors={"FunctionUnusable": FunctionUnusable})
    print(json.dumps(result["data"], indent=2) if as_json else result["text"])
    return 0 if result["passed"] else 1


def _pair_in_child(path: str, options: dict) -> dict:
    forward, backward = options["forward"], options["backward"]
    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist or is not a file: give the .py file that defines {forward}")
    setup = _setup(options["cell"], options["layout"], options["gates"], options["params"], options["concat"],
                   options["hidden"], options["inputs"], options["activation"], options["unbatched"])
    layer, unbatched = options.get("layer"), options["unbatched"]
    if layer:
        spec = {"forward": forward, "backward": backward, "grads_from": _grads_from(options.get("grads_from")),
                "names": list(setup[2].names)}
        with Sandbox(path, layer, GRADE_WORDING, {"FunctionUnusable": FunctionUnusable}, layer=spec) as sandbox:
            sandbox.open()
            pair = Pair(Remote(sandbox, "layer.forward", None), Remote(sandbox, "layer.backward", None),
                        f"{layer}.{forward}", f"{layer}.{backward}", unbatched)
            report = _grade_pair(pair, setup, options["seed"], options["strict"])
    else:
        with Sandbox(path, forward, GRADE_WORDING, {"FunctionUnusable": FunctionUnusable},
                     also=(backward,)) as sandbox:
            pair = Pair(sandbox.open(), sandbox.others[backward], forward, backward, unbatched)
            report = _grade_pair(pair, setup, options["seed"], options["strict"])
    report.source = str(path)
    return {"passed": report.passed, "text": report.format(), "data": report.as_data()}


__all__ = ["PairCase", "grade_layer", "grade_pair", "run_pair_grade"]
