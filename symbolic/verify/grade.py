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
from .sandbox import ChannelTampered, ChildGone, Opaque, Sandbox

#: An entry is right within this relative error (float64 rounding of a BPTT stays near 1e-15).
RELATIVE = 1e-7
#: Relative errors are taken against max(|exact|, FLOOR · the case's largest |entry|), so entries that
#: are zero or tiny by cancellation are judged on the gradient's own scale.
FLOOR = 1e-4
#: Errors from RELATIVE up to this are re-judged against the exact value at DIGITS digits.
UNDECIDED = 1e-4
DIGITS = 60
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
COMPLEX_STEP = 1e-30

#: The mistakes grade can name; the engine's mutations keep the engine's names.
EXTRA_MISTAKES = {
    "no_activation_derivative_in_chain": (
        "f′ missing from ∂s_t/∂s_(t−1) only: the time recursion multiplies by the weights alone "
        "(the notes' ∂o_k/∂o_(k−1) written as w_h, not f′(a_k) w_h), the immediate partials keep f′"
    ),
    "derivative_wrong_step_in_chain": (
        "f′ at the wrong step in ∂s_t/∂s_(t−1) only: ∂o_k/∂o_(k−1) written with f′ of o_(k−1) where "
        "f′ of o_k belongs, the immediate partials right"
    ),
    "total_derivative": (
        "the total derivative where the immediate partial belongs (the notes' own slip): "
        "∂L/∂w = Σ_j δ_j · d o_j/dw with d o_j/dw through o_(j−1) too, so every long-term path is "
        "counted again; the sum needs ∂⁺o_j/∂w, o_(j−1) held fixed"
    ),
}
#: Mistakes that scale every gradient (ŷ − y negated; the batch summed): also tried on top of the others.
MODIFIERS = ("residual_sign", "no_batch_mean")
LOSS_MISTAKES = {
    "loss_summed": "the loss summed over the batch where the mean belongs",
    "loss_sign": "the loss with the wrong sign",
}


def mistakes() -> dict[str, str]:
    """The catalogue: mistake name → what it is, in the order grade tries them."""
    from ..engine.derivation import MUTATIONS

    catalogue = {name: MUTATIONS[name] for name in MODIFIERS}
    for name, text in MUTATIONS.items():
        if name not in MODIFIERS:
            catalogue[name] = text
    catalogue |= EXTRA_MISTAKES
    return catalogue


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
    use_positional = bool(positional) and (
        _takes(fn, 2 + len(positional), keywords) or not _takes(fn, 3, ()))
    if hidden is None:
        hidden = 1 if use_positional and not keywords else HIDDEN
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
    """One call: x (B, n, D), y (B,), params in the engine's shapes, and what came back."""

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
            y = rng.integers(0, 2, size=batch).astype(float)
            cases.append(Case(n, batch, "random", x, y, point()))
        if n == 3 and inputs == 3:
            from ..study.data import NOTES, encode

            x = np.stack([encode(text) for text, _ in NOTES])
            y = np.array([label for _, label in NOTES], dtype=float)
            cases.append(Case(3, len(NOTES), "notes", x, y, point()))
    return cases


def _relative(got: dict, want: dict) -> dict:
    """name → per-entry |got − want| / max(|want|, FLOOR · s); not finite → inf."""
    scale = max((float(np.max(np.abs(v))) for v in want.values() if np.size(v)), default=0.0)
    floor = max(FLOOR * scale, np.finfo(float).tiny)
    errors = {}
    with np.errstate(all="ignore"):
        for name, value in want.items():
            error = np.abs(got[name] - value) / np.maximum(np.abs(value), floor)
            errors[name] = np.where(np.isfinite(error), error, np.inf)
    return errors


def _loss_error(got: float, want: float) -> float:
    with np.errstate(all="ignore"):
        error = abs(got - want) / max(abs(want), np.finfo(float).tiny)
    return float(error) if np.isfinite(error) else float("inf")


# -- the wrong derivations ------------------------------------------------------------------------------


def _chain_only(d, mutation: str):
    """d with ``mutation`` applied to what each step sends back in time only: the adjoints that feed the
    gradients stay exact, a renamed copy of the mutated adjoints feeds s_(t−1)."""
    import sympy as sp

    wrong = d.mutate(mutation)
    rename = {a.symbol: sp.Symbol(f"{a.symbol}__chain") for a in wrong.adjoints}

    def renamed(adjoint, name=None):
        return replace(adjoint, name=name or adjoint.name, symbol=rename.get(adjoint.symbol, adjoint.symbol),
                       expr=adjoint.expr.xreplace(rename),
                       transposed=tuple((m, delta.xreplace(rename)) for m, delta in adjoint.transposed))

    chain = tuple(renamed(a, f"{a.name}__chain") for a in wrong.adjoints)
    sent = {state: replace(renamed(adjoint), symbol=adjoint.symbol) for state, adjoint in wrong.sent.items()}
    lagged = {key: replace(renamed(adjoint), symbol=adjoint.symbol) for key, adjoint in wrong.sent_lagged.items()}
    return replace(d, adjoints=d.adjoints + chain, sent=sent, sent_lagged=lagged, mutation=f"{mutation}_in_chain")


class _ComplexForward:
    """The cell's forward pass in complex arithmetic, for the complex step: states of every step and
    the loss of every sequence, with an optional poke i·h into one state's unit at one step."""

    def __init__(self, d):
        import sympy as sp

        self.d = d
        modules = [{"sigmoid": _sigmoid, "relu": _relu}, "numpy"]
        self.nodes = []
        for node in d.nodes:
            arguments = sorted(node.expr.free_symbols, key=str)
            self.nodes.append((node, arguments, sp.lambdify(arguments, node.expr, modules=modules)))

    def run(self, params: dict, x: np.ndarray, y: np.ndarray, poke=None):
        d, cell = self.d, self.d.cell
        batch, steps, _ = x.shape
        hidden = params[cell.readout].shape[0]
        zero = np.zeros((batch, hidden), dtype=complex)
        states = {state: [zero] for state in d.states}
        vectors = {symbol: params[name] for name, symbol in d.symbols["vectors"].items()}
        # every state read: s_(t−1) and each s_(t−K) (an initial 0 before the sequence)
        leaves = [(state, lag, d.leaf(state, lag)) for state, lags in d.lags.items() for lag in lags]
        for t in range(steps):
            known = {symbol: states[state][t + 1 - lag] if t + 1 >= lag else zero for state, lag, symbol in leaves}
            known |= vectors
            sources = {"x": x[:, t], **{str(symbol): known[symbol] for _, _, symbol in leaves}}

            for operand in ("x", *(str(symbol) for _, _, symbol in leaves)):
                self._apply_maps(operand, known, sources, params)
            for node, arguments, function in self.nodes:
                value = function(*(known[a] for a in arguments)) + zero
                if poke is not None and node.state == poke[0] and t == poke[1]:
                    value = value.copy()
                    value[:, poke[2]] += 1j * COMPLEX_STEP
                known[node.symbol] = value
                sources[node.name] = value
                self._apply_maps(node.name, known, sources, params)
            for state in d.states:
                states[state].append(known[d.state_node(state).symbol])
        z = states[d.output_state][-1] @ params[cell.readout]
        if cell.readout_bias:
            z = z + params[cell.readout_bias]
        return states, y * _softplus(-z) + (1 - y) * _softplus(z)

    def _apply_maps(self, operand: str, known: dict, sources: dict, params: dict) -> None:
        """(M u) for every linear map of the operand u, once u is known."""
        for linear in self.d.linears:
            if linear.operand == operand:
                known[linear.symbol] = sources[operand] @ params[linear.matrix].T


def _total_derivative(d, forward: _ComplexForward, case: Case) -> dict:
    """The notes' slip, generically: ∂L/∂θ ≈ mean_b Σ_t Σ_s ⟨dL/ds_t, d s_t/dθ⟩ with both factors total
    derivatives (complex step on the forward pass); the readout's gradients are exact (no state depends
    on them)."""
    cell = d.cell
    params = {name: np.asarray(value, dtype=complex) for name, value in case.params.items()}
    x, y = case.x.astype(complex), case.y
    hidden = params[cell.readout].shape[0]
    # dL_b/ds_t[b, u], every sequence at once (their losses are independent)
    adjoint = {}
    for state in d.states:
        for t in range(case.steps):
            columns = []
            for unit in range(hidden):
                _, loss = forward.run(params, x, y, poke=(state, t, unit))
                columns.append(np.imag(loss) / COMPLEX_STEP)
            adjoint[(state, t)] = np.stack(columns, axis=1)
    readout = {cell.readout, cell.readout_bias}
    gradients = {}
    from ..engine.derivation import evaluate

    exact = evaluate(d, case.params, case.x, case.y).gradients
    for name, value in params.items():
        if name in readout:
            gradients[name] = np.asarray(exact[name], dtype=float)
            continue
        gradient = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            shifted = dict(params)
            shifted[name] = value.copy()
            shifted[name][index] += 1j * COMPLEX_STEP
            states, _ = forward.run(shifted, x, y)
            total = 0.0
            for (state, t), weight in adjoint.items():
                total += float(np.sum(weight * np.imag(states[state][t + 1]))) / COMPLEX_STEP
            gradient[index] = total / case.batch
        gradients[name] = gradient
    return gradients


def _sigmoid(z):
    positive = np.real(z) > 0
    e = np.exp(np.where(positive, -z, z))
    return np.where(positive, 1 / (1 + e), e / (1 + e))


def _relu(z):
    return np.where(np.real(z) > 0, z, 0)


def _softplus(z):
    positive = np.real(z) > 0
    return np.where(positive, z, 0) + np.log1p(np.exp(np.where(positive, -z, z)))


class _Candidates:
    """The wrong gradients, computed only when asked for: name → per case → gradients (user shapes)."""

    def __init__(self, d, interface: Interface):
        from ..engine.derivation import MUTATIONS

        self.d, self.interface = d, interface
        self.bases: dict = {}
        for name in MUTATIONS:
            if name in MODIFIERS:
                continue
            try:
                self.bases[name] = d.mutate(name)
            except ValueError:
                continue
            if name in ("no_activation_derivative", "derivative_wrong_step"):
                self.bases[f"{name}_in_chain"] = _chain_only(d, name)
        self.bases["total_derivative"] = None  # computed by complex step
        self._forward = None
        self._values: dict = {}

    def names(self) -> list[tuple[str, str | None, tuple]]:
        """(candidate name, base mistake or None for exact, modifiers), singles first."""
        singles = [(m, None, (m,)) for m in MODIFIERS]
        singles += [(base, base, ()) for base in self.bases]
        combined = [(" + ".join(MODIFIERS), None, MODIFIERS)]
        for base in self.bases:
            for modifiers in ((MODIFIERS[0],), (MODIFIERS[1],), MODIFIERS):
                combined.append((" + ".join((base, *modifiers)), base, modifiers))
        return singles + combined

    def base(self, base: str | None, case: Case) -> dict:
        if base is None:
            return case.exact_float
        key = (base, id(case))
        if key not in self._values:
            from ..engine.derivation import evaluate

            with np.errstate(all="ignore"):
                if base == "total_derivative":
                    if self._forward is None:
                        self._forward = _ComplexForward(self.d)
                    values = _total_derivative(self.d, self._forward, case)
                else:
                    values = evaluate(self.bases[base], case.params, case.x, case.y).as_float()[1]
            self._values[key] = self.interface.to_user(values)
        return self._values[key]

    def values(self, base, modifiers, case: Case) -> dict:
        factor = 1.0
        if "residual_sign" in modifiers:
            factor = -factor
        if "no_batch_mean" in modifiers:
            factor *= case.batch
        return {name: factor * value for name, value in self.base(base, case).items()}


# -- the report ----------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One parameter (or the loss): right or not, where, how far off, and the mistake it matches."""

    parameter: str
    shape: tuple
    right: bool
    entries: list = field(default_factory=list)
    first_failing_steps: int | None = None
    #: every length n at which it is wrong
    failing_steps: list = field(default_factory=list)
    worst_relative_error: float = 0.0
    worst_case: dict | None = None
    mistake: str | None = None

    def as_data(self) -> dict:
        return {"parameter": self.parameter, "shape": list(self.shape), "right": self.right,
                "entries": [list(index) for index in self.entries],
                "first_failing_steps": self.first_failing_steps, "failing_steps": self.failing_steps,
                "worst_relative_error": self.worst_relative_error, "worst_case": self.worst_case,
                "mistake": self.mistake}


@dataclass
class Report:
    function: str
    interface: str
    model: str
    settings: dict
    cases: list
    findings: list
    localisation: str = ""
    mistake: str | None = None
    also: list = field(default_factory=list)
    source: str | None = None

    @property
    def passed(self) -> bool:
        return all(finding.right for finding in self.findings)

    def as_data(self) -> dict:
        catalogue = {**mistakes(), **LOSS_MISTAKES}
        return {
            "file": self.source, "function": self.function, "interface": self.interface, "model": self.model,
            **self.settings,
            "passed": self.passed, "verdict": "right" if self.passed else "wrong",
            "tolerance": {"relative": RELATIVE, "floor": FLOOR, "undecided_up_to": UNDECIDED, "digits": DIGITS},
            "cases": [case.describe() for case in self.cases],
            "findings": [finding.as_data() for finding in self.findings],
            "localisation": self.localisation or None,
            "mistake": self.mistake,
            "mistake_description": _describe(self.mistake, catalogue) if self.mistake else None,
            "also_consistent_with": self.also,
        }

    def format(self) -> str:
        catalogue = {**mistakes(), **LOSS_MISTAKES}
        lengths = sorted({case.steps for case in self.cases})
        batches = sorted({case.batch for case in self.cases if case.data == "random"})
        notes = any(case.data == "notes" for case in self.cases)
        decided = sum(1 for case in self.cases if case.digits)
        lines = [
            f"grade {self.interface}" + (f" from {self.source}" if self.source else ""),
            f"model: {self.model}",
            f"{len(self.cases)} cases: n = {', '.join(map(str, lengths))} × B = {', '.join(map(str, batches))} "
            "at random points" + (", and the notes' three sentences (n = 3)" if notes else ""),
            f"tolerance: an entry g is right when |g − g_exact| ≤ {RELATIVE:.0e} · max(|g_exact|, {FLOOR:.0e} · s),",
            "  s the case's largest |entry| (float64 rounding stays near 1e-15); errors up to "
            f"{UNDECIDED:.0e} are re-judged at {DIGITS} digits"
            + (f" ({decided} case{'s' if decided != 1 else ''} so judged)" if decided else ""),
            "",
        ]
        width = max(len(f.parameter) for f in self.findings)
        for finding in self.findings:
            if finding.right:
                lines.append(f"  {finding.parameter:<{width}}  right   worst relative error "
                             f"{finding.worst_relative_error:.1e}")
                continue
            where = ""
            if finding.failing_steps and len(lengths) > 1:
                first = finding.failing_steps[0]
                if finding.failing_steps != [n for n in lengths if n >= first]:
                    where = f"; wrong at n = {_listed(finding.failing_steps)} only"
                else:
                    where = f"; wrong from n = {first}" if first > lengths[0] else f"; wrong at n = {lengths[0]}"
            worst = finding.worst_case or {}
            case_text = f"n = {worst.get('steps')}, B = {worst.get('batch')}" + (
                ", the notes' sentences" if worst.get("data") == "notes" else "")
            lines.append(
                f"  {finding.parameter:<{width}}  WRONG   {_entries_text(finding)}{where}; worst relative error "
                f"{_error_text(finding.worst_relative_error)} ({case_text})"
                + (f"; matches {finding.mistake}" if finding.mistake and finding.mistake != self.mistake else "")
            )
        lines.append("")
        if self.passed:
            lines.append(f"right: every entry within {RELATIVE:.0e} of the exact gradient in all "
                         f"{len(self.cases)} cases")
            return "\n".join(lines)
        lines.append(f"wrong: {self.localisation}" if self.localisation else "wrong")
        if self.mistake:
            parameters = [f.parameter for f in self.findings if not f.right]
            lines.append(f"the mistake: {self.mistake}: {_describe(self.mistake, catalogue)}")
            lines.append(f"  ({', '.join(parameters)} match it within {RELATIVE:.0e} in every case"
                         + (f"; also consistent with {', '.join(self.also)}" if self.also else "") + ")")
        else:
            named = [f for f in self.findings if not f.right and f.mistake]
            if named:
                lines.append("no single known mistake explains every wrong parameter; per parameter: "
                             + "; ".join(f"{f.parameter}: {f.mistake}" for f in named))
            else:
                lines.append("not a known mistake: it matches none of " + ", ".join(mistakes()))
        return "\n".join(lines)


def _describe(name: str, catalogue: dict) -> str:
    return "; and ".join(catalogue[part] for part in name.split(" + "))


def _error_text(error: float) -> str:
    return "inf (not finite)" if not np.isfinite(error) else f"{error:.1e}"


def _entries_text(finding: Finding) -> str:
    total = int(np.prod(finding.shape)) if finding.shape else 1
    if total == 1:
        return "its value"
    if len(finding.entries) == total:
        return f"all {total} entries"
    shown = ", ".join(str(list(e)) if len(e) > 1 else str(e[0]) for e in finding.entries[:6])
    more = ", …" if len(finding.entries) > 6 else ""
    return f"{len(finding.entries)} of {total} entries ({shown}{more})"


# -- grading -------------------------------------------------------------------------------------------


def _derivation(cell, activation: str, hidden, bias: bool, inputs, steps, skip=None):
    """The exact derivation and the validated sizes; options a user gets wrong raise UsageError."""
    from ..cells import BUILTIN, cell_of
    from ..cells.spec import Cell
    from ..engine.derivation import derive_cell
    from ..model import Model

    model = Model(steps=steps if steps is not None else 3, activation=activation, inputs=inputs,
                  hidden=1 if hidden is None else hidden, cell="rnn" if isinstance(cell, Cell) else cell, bias=bias,
                  skip=skip)
    if isinstance(cell, Cell) or model.cell in BUILTIN:
        chosen = cell if isinstance(cell, Cell) else cell_of(model)
    else:
        call_starts("cell")  # in bptt grade's child process, a cell file's top-level code is timed too
        chosen = cell_of(model)
        call_returns()
    return derive_cell(chosen), model


def grade_function(fn, cell="rnn", steps: int | None = None, hidden: int | None = None, activation: str = "tanh",
                   bias: bool = False, inputs: int = 3, seed: int = 0, name: str | None = None,
                   steps_hint: str = "steps=N", skip: int | None = None) -> Report:
    """Grade ``fn`` (a generated module's ``loss_and_grad`` interface) against the exact BPTT of ``cell``.

    ``cell``: a built-in name, a cell file's path, or a ``Cell``; ``steps``: None to grade every length
    in LENGTHS (the function must take any n), or the one length it takes; ``hidden``: None for HIDDEN
    (1 for the plain RNN's positional form, the notes' scalar model). Raises UsageError for bad options
    and FunctionUnusable when fn cannot be graded. fn runs in this process (``bptt grade`` runs it in a
    sandbox process of its own).
    """
    d, model = _derivation(cell, activation, hidden, bias, inputs, steps, skip)
    report = _grade(d, model, fn, hidden, steps, seed, name, steps_hint)
    return report


def _grade(d, model, fn, hidden, steps, seed: int, name, steps_hint: str, cell_hint: str = "") -> Report:
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
    cases = _cases(d, interface.hidden, model.inputs, steps, seed)
    lengths_text = ", ".join(map(str, sorted({case.steps for case in cases})))
    from ..engine.derivation import evaluate

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
            hint = (f" (grade calls it with n = {lengths_text}: if it takes one sequence length only, give it "
                    f"with {steps_hint})") if steps is None else ""
            # a parameter of another cell (by name: the sandbox re-raises the file's KeyError as its own class)
            if type(error).__name__ == "KeyError" and not cell_hint:
                cell_hint = (f" (it asks for a parameter the cell {d.cell.name} does not have: if it is for "
                             "another cell, pass --cell lstm, gru or its cell file)")
            hint = cell_hint or hint
            raise FunctionUnusable(
                f"{name} raises {type(error).__name__} at {case.label()}: {first}{hint}"
            ) from error
        case.user_loss, case.user = interface.outputs(result)  # what it returned may run its code too
        call_returns()
        errors = _relative(case.user, case.exact)
        worst = max(float(np.max(e)) if e.size else 0.0 for e in errors.values())
        loss_error = _loss_error(case.user_loss, case.exact_loss)
        if RELATIVE < max(worst, loss_error) <= UNDECIDED or any(
                np.any((e > RELATIVE) & (e <= UNDECIDED)) for e in errors.values()):
            precise = evaluate(d, case.params, case.x, case.y, digits=DIGITS)
            case.exact_loss = float(precise.loss)
            case.exact = interface.to_user({k: np.asarray(v, dtype=float) for k, v in precise.gradients.items()})
            case.digits = DIGITS
    report = _judge(d, interface, cases, steps)
    report.settings = {"cell": d.cell.name, "activation": model.activation, "hidden": interface.hidden,
                       "inputs": model.inputs, "bias": model.bias, "steps": steps, "seed": seed}
    return report


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


def _judge(d, interface: Interface, cases: list[Case], steps) -> Report:
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
    hidden = cases[0].params[d.cell.readout].shape[0]
    inputs = cases[0].x.shape[2]
    report = Report(interface.name, interface.describe(), f"{model}, H = {hidden}, D = {inputs}", {}, cases,
                    findings)
    if report.passed:
        return report
    report.localisation = _localise(findings, cases, steps)
    _name_mistakes(d, interface, cases, report)
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


def _listed(numbers) -> str:
    return ", ".join(map(str, numbers))


def _name_mistakes(d, interface: Interface, cases: list[Case], report: Report) -> None:
    """Per wrong parameter, the first candidate that matches it in every case; overall, the first that
    matches every wrong parameter."""
    wrong = [f.parameter for f in report.findings if not f.right and f.parameter != "loss"]
    if not wrong:
        loss = report.findings[0]
        report.mistake = loss.mistake
        return
    candidates = _Candidates(d, interface)
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
              steps=None, bias=False, inputs=3, seed=0, timeout=DEFAULT_TIMEOUT, skip=None) -> int:
    """``bptt grade``: print the diagnosis; 0 right, 1 wrong. Unusable input raises UsageError (exit 2).

    The grading runs in one child process (``symbolic.verify.check.run_in_child``, as ``bptt check``): the file
    is imported there (its top-level code runs) and each call into it (the import, each call of the
    function) must return within ``timeout`` seconds. A file that hangs, exits, crashes or raises is a
    ``UsageError`` (``FunctionUnusable`` when the function cannot be graded); what it prints goes to
    stderr, so that --json output stays one JSON document.
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
               "seed": seed, "skip": skip}
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
    d, model = _derivation(cell, activation, hidden, bias, inputs, steps, options["skip"])
    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist or is not a file: give the .py file that defines {function}")
    with Sandbox(path, function, GRADE_WORDING, {"FunctionUnusable": FunctionUnusable}) as sandbox:
        fn = sandbox.open()
        report = _grade(d, model, fn, hidden, steps, options["seed"], function, "--steps N",
                        _cell_hint(path, d.cell.name))
    report.source = str(path)
    return {"passed": report.passed, "text": report.format(), "data": report.as_data()}


__all__ = ["BATCHES", "DIGITS", "EXTRA_MISTAKES", "FLOOR", "LENGTHS", "LOSS_MISTAKES", "RELATIVE", "UNDECIDED",
           "Finding", "FunctionUnusable", "Report", "grade_function", "load_function", "mistakes", "run_grade"]
