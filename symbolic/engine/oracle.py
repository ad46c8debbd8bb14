"""The proof of any cell's BPTT: the engine's recursion against sp.diff of the cell's unrolled loss.

The oracle knows nothing of the engine's derivation. It unrolls the cell's own equations
(``cell.equations``, each linear map ``M@u`` written out as Σ_k M[j,k] u_k with every entry a scalar
symbol) for n steps from zero states, for a batch of B sequences, with the notes' readout and loss

    z_b = w_yᵀ s_n (+ b),   L = (1/B) Σ_b −y_b log σ(z_b) − (1 − y_b) log(1 − σ(z_b)),

and differentiates L with respect to every parameter entry by sp.diff. Every activation of the unrolled
loss is an *atom*: a symbol A = f(a) of its own, a its argument (in weights, inputs and earlier atoms),
with dA/dθ = f′(A)·da/dθ, f′ from the oracle's own textbook rules (``_Tanh``, ``_Sigmoid``, ``_Relu``,
checked against the activation table's closed forms by ``local``). That is sp.diff of the nested loss
taken once per node of the unrolled graph instead of once per path through it: the literal nested
sp.diff costs 12 s for the LSTM at H = 1, n = 3 and nine times more per step (tests/test_oracle.py
checks that the two are the same derivative). The oracle never transposes a matrix, never writes a δ
and never runs back in time: those are what it checks.

Three checks, and a negative control:

1. ``local``: the oracle's f′ are the derivatives of the closed forms of ``activations.ACTIVATIONS``.
2. ``exact`` (H = 1, n ≤ EXACT_STEPS): the engine's own evaluation code (``engine._evaluate``) runs
   the recursion over SymPy with the oracle's atoms as its stored values: every activation the engine
   evaluates is matched to the oracle's atom of the same argument (expanded), so both gradients are
   polynomials in atoms, weights, inputs and y, the atoms independent symbols. Both are computed in
   SymPy's sparse polynomial ring (once per shared subexpression: the expressions are DAGs) and must
   be the same polynomial for every parameter entry: a proof for those sizes. ReLU's derivative
   [a > 0] is a symbol of its own, so the identity holds on both sides of the kink.
3. ``numeric`` (H ≥ 2): ``engine.evaluate`` at 60 digits at random rational points against the
   oracle's derivative evaluated at 60 digits (atoms from their definitions with mpmath): the first
   point with every weight and input positive (every ReLU open, every path carrying gradient), the
   others of any sign; no ReLU argument within 10⁻⁶ of its kink.
4. The negative control: the same exact and numeric checks on ``d.mutate("no_lag_path")`` for a cell
   that reads a state K ≥ 2 steps back (the skip path removed), else ``d.mutate("no_direct_path")`` (the
   LSTM's carousel, the GRU's z ⊙ h, IndRNN's u ⊙ h removed) or, for a cell without a direct path,
   ``d.mutate("truncated")``, at n ≥ 2; both must reject it where the mutation changes the gradient.

Both checks run at n = ``d.path_steps`` (1 + Σ_states its largest lag) where that is larger than their
usual n, so that every path of a cell with lags or copy states exists at the sizes proved (the exact one
only for a cell of at most EXACT_PATH_ACTIVATIONS activations per step); a path longer than that is said.

The derivation is per unit and does not depend on H, D or n, so ``verify`` proves it at sizes that run
in seconds (capped at EXACT_STEPS, EXACT_INPUTS, NUMERIC_HIDDEN, NUMERIC_STEPS, NUMERIC_INPUTS) and says so.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import numpy as np
import sympy as sp

from ..activations import ACTIVATIONS
from ..cells.spec import FUNCTIONS, Cell
from ..outputs import Outputs
from . import derivation as engine
from . import evaluate as evaluation
from .unrolled import (
    _FAMILY,
    _INERT,
    DIGITS,
    ORACLE_FUNCTIONS,
    Node,
    Unrolled,
    _decimal,
    _inert,
    _mp,
    _NearKink,
    _rational,
    _Relu,  # noqa: F401
    _Sigmoid,
    _Step,
    _Tanh,  # noqa: F401 - tests read the oracle's activations here
    parameter_shapes,
    value_of,
)

#: The exact identity (H = 1) is proved for n up to this.
EXACT_STEPS = 3
#: The 60-digit check runs at n = the derivation's path_steps (1 + Σ_states its largest lag) when that is
#: larger, up to this: every path of a cell with lags or copy states exists from there.
MAX_PATH_STEPS = 32
#: The exact identity runs at n = path_steps when that is larger than EXACT_STEPS, up to this, for a
#: cell of at most EXACT_PATH_ACTIVATIONS activations per step (the skip RNN at n = 11: 1 s; the
#: LSTM's polynomials at n = 4 already take 18 s, so such a cell's longer paths are left to the
#: 60-digit check).
EXACT_PATH_STEPS = 12
EXACT_PATH_ACTIVATIONS = 2
#: The 60-digit check runs at H = 2 (or the model's H up to this), n up to NUMERIC_STEPS, B sequences.
NUMERIC_HIDDEN = 3
NUMERIC_STEPS = 4
NUMERIC_BATCH = 2
NUMERIC_POINTS = 2
#: Inputs D at most this in the exact and the 60-digit check (D only widens the input maps).
EXACT_INPUTS = 2
NUMERIC_INPUTS = 3
TOLERANCE = mpmath.mpf(10) ** -(DIGITS - 15)



# -- the engine's recursion over SymPy, with the oracle's atoms as its stored values ------------------------


class _InAtoms:
    """The number interface of ``engine._evaluate`` over SymPy: every activation the engine evaluates
    becomes the oracle's atom of that argument, ReLU′ = H(A) the atom's step symbol."""

    dtype = object

    def __init__(self, unrolled: Unrolled):
        self.unrolled = unrolled

    def array(self, value):
        return np.vectorize(sp.sympify, otypes=[object])(np.asarray(value, dtype=object))

    def zeros(self, shape):
        return np.full(shape, sp.S.Zero, dtype=object)

    def _scalar(self, value: sp.Expr) -> sp.Expr:
        unrolled = self.unrolled
        value = value.replace(lambda e: isinstance(e, _INERT),
                              lambda e: unrolled.matching(_FAMILY[type(e)], e.args[0]).symbol)
        if value.has(sp.Heaviside):
            steps = {a.symbol: a.step for a in unrolled.atoms if a.step is not None}
            value = value.replace(lambda e: isinstance(e, sp.Heaviside) and e.args[0] in steps,
                                  lambda e: steps[e.args[0]])
        return value

    def function(self, arguments, expr):
        template = _inert(expr)

        def one(*values):
            return self._scalar(template.xreplace(dict(zip(arguments, values))))

        if not arguments:
            constant = one()
            return lambda: constant
        return np.frompyfunc(one, len(arguments), 1)

    def sigmoid(self, z):
        return np.frompyfunc(lambda v: self._scalar(_Sigmoid(v)), 1, 1)(z)

    def log_sigmoid_loss(self, z, y):
        def one(zv, yv):
            y_hat = self._scalar(_Sigmoid(zv))
            return -yv * sp.log(y_hat) - (1 - yv) * sp.log(1 - y_hat)

        return np.frompyfunc(one, 2, 1)(z, y)


# -- the checks ------------------------------------------------------------------------------------------------


@dataclass
class Check:
    """One step of the proof: what was checked, at what size, whether it held, the worst difference."""

    kind: str       # "local" | "exact" | "numeric"
    name: str
    passed: bool
    detail: str = ""
    worst: object = None
    seconds: float = 0.0


def local(cell: Cell | None = None) -> Check:
    """The oracle's f′ against sp.diff of the closed forms of the activation table (for ReLU on each
    side of the kink)."""
    z = sp.Symbol("z", real=True)
    failures = []
    names = sorted(set(FUNCTIONS.values()) if cell is None else _families(cell))
    for name in names:
        closed = ACTIVATIONS[name].closed_form
        function = ORACLE_FUNCTIONS[name]
        if name == "relu":
            for side, value in ((sp.Symbol("p", positive=True), 1), (sp.Symbol("m", negative=True), 0)):
                oracle = sp.diff(function(side), side).xreplace({_Step(side): value})
                if sp.diff(closed(side), side) != oracle:
                    failures.append(name)
            continue
        oracle = sp.diff(function(z), z).xreplace({function(z): closed(z)})
        if sp.simplify(oracle - sp.diff(closed(z), z)) != 0:
            failures.append(name)
    rules = {"tanh": "tanh′ = 1 − tanh²", "sigmoid": "σ′ = σ(1 − σ)", "relu": "ReLU′ = [a > 0] (a ≠ 0)"}
    return Check(
        "local", "the oracle's derivative rules", not failures,
        f"{', '.join(rules[n] for n in names)}: sp.diff of the closed forms of the activation table"
        if not failures else f"disagree with the closed forms: {', '.join(failures)}",
    )


def _families(cell: Cell) -> set:
    found = set()
    for eq in cell.equations:
        for node in sp.preorder_traversal(eq.expr):
            for function, name in FUNCTIONS.items():
                if isinstance(node, function):
                    found.add(name)
    return found | {"sigmoid"}   # the readout's σ


def _entries(gradients: dict):
    for name, value in gradients.items():
        for index in np.ndindex(value.shape):
            yield name, index


def _entry(value, index: tuple):
    """One entry of a gradient (an array, or a bare number for a scalar parameter)."""
    return np.asarray(value, dtype=object)[index]


def _label(name: str, index: tuple) -> str:
    return f"{name}[{','.join(str(i + 1) for i in index)}]" if index else name


class ExactOracle:
    """The unrolled loss at H = 1 and its gradient as polynomials over ZZ (QQ for B > 1) in the atoms
    (independent generators), weights, inputs and y; prepared once, checked against several derivations."""

    def __init__(self, cell: Cell, inputs: int, steps: int, outputs: Outputs | None = None):
        self.inputs, self.steps = inputs, steps
        self.unrolled = Unrolled(cell, 1, inputs, steps, outputs=outputs)
        self.atoms = len(self.unrolled.atoms)
        self._ring = None

    def _prepare(self):
        if self._ring is None:
            self._ring = self.unrolled.polynomial_point()
            self.memo: dict = {}
            ring, _ = self._ring
            convert = ring.domain.convert
            self._number = lambda q: ring(convert(_decimal(q)))
            self.expected = self.unrolled.gradient(self.polynomial, zero=ring(0))

    def polynomial(self, expr: sp.Expr):
        """expr as a polynomial of the ring (once per shared subexpression)."""
        return value_of(expr, self._ring[1], self.memo, self._number)

    def check(self, d: engine.CellDerivation) -> Check:
        """The engine's recursion (its own evaluation code, over the atoms) minus the oracle's gradient is
        the zero polynomial for every entry; the engine's loss is the unrolled loss."""
        started = time.perf_counter()
        unrolled = self.unrolled
        before = len(unrolled.atoms)
        ours = evaluation._evaluate(d, unrolled.parameters, unrolled.x, unrolled.y, _InAtoms(unrolled))
        foreign = len(unrolled.atoms) - before   # activations of the engine's forward pass the loss lacks
        count = sum(np.size(value) for value in ours.gradients.values())
        if foreign:
            # generators of their own: the identity holds only if they cancel (an activation of a
            # state's initial 0 times 0, which the unrolled loss never formed); another forward pass fails
            self._ring = None
        self._prepare()
        failures = [_label(name, index) for name, index in _entries(self.expected)
                    if self.polynomial(_entry(ours.gradients[name], index)) != self.expected[name][index]]
        loss_held = sp.expand(ours.loss - unrolled.in_atoms(unrolled.loss)) == 0
        seconds = time.perf_counter() - started
        passed = not failures and loss_held
        if passed:
            detail = (f"engine recursion − sp.diff(unrolled L) is the zero polynomial for all {count} "
                      f"parameter entries, in the {self.atoms} activation values (independent symbols), "
                      f"weights, inputs and y; the engine's loss is the unrolled loss ({seconds:.1f} s)")
        else:
            problems = []
            if failures:
                problems.append(f"the difference is not 0 for {len(failures)} of {count} entries "
                                f"({', '.join(failures[:4])}{', …' if len(failures) > 4 else ''})")
            if foreign:
                problems.append(f"the engine evaluates {foreign} activations the unrolled loss does not have")
            if not loss_held:
                problems.append("the engine's loss is not the unrolled loss")
            detail = "; ".join(problems)
        return Check("exact", f"exact identity (H = 1, D = {self.inputs}, n = {self.steps})", passed, detail,
                     len(failures), seconds)


class NumericOracle:
    """The unrolled loss at H ≥ 2 and its gradient at 60 digits at random rational points (no ReLU
    argument within KINK of 0); prepared once, checked against several derivations."""

    def __init__(self, cell: Cell, hidden: int, inputs: int, steps: int, batch: int = NUMERIC_BATCH,
                 points: int = NUMERIC_POINTS, seed: int = 0, outputs: Outputs | None = None):
        self.hidden, self.inputs, self.steps, self.batch = hidden, inputs, steps, batch
        self.outputs = outputs = outputs or Outputs()
        self.unrolled = Unrolled(cell, hidden, inputs, steps, batch, outputs=outputs)
        sizes = {"H": hidden, "D": inputs, "K": outputs.classes}
        shapes = {name: tuple(sizes[s] for s in shape) for name, shape in parameter_shapes(cell, outputs).items()}
        started = time.perf_counter()
        rng = random.Random(seed)
        self.points = []   # (parameters, x, y, expected gradient, expected loss)
        tries = 0
        with mpmath.workdps(DIGITS + 10):
            while len(self.points) < points:
                # the first point has every weight and input positive, so that every ReLU is open and
                # every path carries gradient (the negative control runs there); the others any sign
                low = 0.1 if not self.points else -0.9
                parameters = {name: np.array([_rational(rng, low, 0.9) for _ in range(int(np.prod(shape)))],
                                             dtype=object).reshape(shape) for name, shape in shapes.items()}
                x = np.array([_rational(rng, low, 1)
                              for _ in range(batch * steps * inputs)], dtype=object).reshape(batch, steps, inputs)
                y, symbols_y = _random_labels(rng, outputs, batch, steps)
                tries += 1
                try:
                    point = self.unrolled.mp_point(parameters, x, symbols_y)
                except _NearKink:
                    if tries > 20 * points:
                        raise AssertionError("no point away from the ReLU kink in 20 tries") from None
                    continue
                self.points.append((parameters, x, y, *self._expected(point)))
        self._preparation = time.perf_counter() - started   # reported with the first check

    def _expected(self, point: dict) -> tuple:
        """The oracle's gradient and loss at a point (60 digits)."""
        memo: dict = {}

        def evaluate(expr):
            return value_of(expr, point, memo, _mp)

        return self.unrolled.gradient(evaluate, mpmath.mpf(0)), evaluate(self.unrolled.loss)

    def check(self, d: engine.CellDerivation, points: int | None = None) -> Check:
        """engine.evaluate at 60 digits against the oracle at the first ``points`` points."""
        started = time.perf_counter()
        worst = worst_loss = mpmath.mpf(0)
        chosen = self.points[:points]
        with mpmath.workdps(DIGITS + 10):
            for parameters, x, y, expected, loss in chosen:
                values = evaluation.evaluate(d, parameters, x, y, digits=DIGITS)
                scale = max(abs(v) for value in expected.values() for v in value.flat) or mpmath.mpf(1)
                for name, index in _entries(expected):
                    difference = abs(mpmath.mpf(_entry(values.gradients[name], index)) - expected[name][index])
                    worst = max(worst, difference / scale)
                worst_loss = max(worst_loss, abs(mpmath.mpf(values.loss) - loss) / abs(loss))
        count = sum(value.size for value in chosen[0][3].values())
        seconds = time.perf_counter() - started + self._preparation
        self._preparation = 0.0
        passed = worst < TOLERANCE and worst_loss < TOLERANCE
        detail = (f"{len(chosen)} random rational point{'s' if len(chosen) > 1 else ''}, all {count} entries: "
                  f"worst relative difference {mpmath.nstr(worst, 3)} (loss {mpmath.nstr(worst_loss, 3)}; "
                  f"tolerance {mpmath.nstr(TOLERANCE, 1)}; {seconds:.1f} s)")
        return Check("numeric", f"{DIGITS}-digit evaluation (H = {self.hidden}, D = {self.inputs}, "
                                f"n = {self.steps}, B = {self.batch})", passed, detail, worst, seconds)


def _random_labels(rng: random.Random, outputs: Outputs, batch: int, steps: int) -> tuple:
    """(y as the engine takes it, y as the unrolled loss's symbols take it): 0/1 for bce, a class index
    (its one-hot row for the unrolled loss) for softmax, a rational for mse; (B,) or (B, n)."""
    shape = (batch, steps) if outputs.every else (batch,)
    count = int(np.prod(shape))
    if outputs.loss == "softmax":
        classes = [rng.randrange(outputs.classes) for _ in range(count)]
        onehot = [[Fraction(int(k == c)) for k in range(outputs.classes)] for c in classes]
        return np.array(classes).reshape(shape), np.array(onehot, dtype=object).reshape(*shape, outputs.classes)
    if outputs.loss == "mse":
        values = [_rational(rng, -1, 1) for _ in range(count)]
    else:
        values = [Fraction(rng.randint(0, 1)) for _ in range(count)]
    y = np.array(values, dtype=object).reshape(shape)
    return y, y


def exact(d: engine.CellDerivation, inputs: int = 2, steps: int = 2) -> Check:
    """H = 1: the engine's recursion minus sp.diff of the unrolled loss is the zero polynomial."""
    return ExactOracle(d.cell, inputs, steps, d.outputs).check(d)


def numeric(d: engine.CellDerivation, hidden: int = 2, inputs: int = 2, steps: int = 3,
            batch: int = NUMERIC_BATCH, points: int = NUMERIC_POINTS, seed: int = 0) -> Check:
    """engine.evaluate at 60 digits against the oracle's derivative at 60 digits, at random rationals."""
    return NumericOracle(d.cell, hidden, inputs, steps, batch, points, seed, d.outputs).check(d)


# -- verify -------------------------------------------------------------------------------------------------------


def control_mutation(d: engine.CellDerivation) -> str:
    """The path the negative control removes: a lagged state's (what step t sends to s_(t−K)) where there
    is one, else the direct path between states where there is one, else every path back in time."""
    if d.sent_lagged:
        return "no_lag_path"
    try:
        d.mutate("no_direct_path")
    except ValueError:
        return "truncated"
    return "no_direct_path"


@dataclass
class Control:
    """The negative control: the checks run on a derivation with one path removed; all must fail."""

    mutation: str
    description: str
    checks: list = field(default_factory=list)
    #: the sizes at which the mutation changes no gradient, so no check of it could reject it there
    invisible: list = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return bool(self.checks) and not any(check.passed for check in self.checks)

    @property
    def visible(self) -> bool:
        """Whether the mutation changes the gradient at some size checked (else there is no control)."""
        return bool(self.checks)


@dataclass
class Report:
    """What ``verify`` proved: the cell, the checks with their sizes, the negative control."""

    cell: str
    description: str
    requested: dict
    checks: list = field(default_factory=list)
    control: Control | None = None
    seconds: float = 0.0
    #: what the sizes proved leave out (a path longer than the longest sequence checked), or ""
    note: str = ""
    #: the output side proved, when it is not the notes' (``Outputs.describe``), or ""
    outputs: str = ""

    @property
    def proved(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def passed(self) -> bool:
        """Proved, and the negative control rejected where it was run and its mutation changes the
        gradient (a mutation invisible at every size checked is said, not counted as a disagreement)."""
        return self.proved and (self.control is None or not self.control.visible or self.control.rejected)

    @property
    def worst(self):
        """The worst relative difference of the 60-digit check (None when it did not run)."""
        return next((check.worst for check in self.checks if check.kind == "numeric"), None)

    def __str__(self) -> str:
        return format_report(self)


def _sizes(derivation, model, steps, hidden, inputs):
    """(cell, steps, hidden, inputs): the derivation's cell at the ``Model``'s sizes where one is given."""
    cell = derivation.cell
    if model is not None:
        steps = model.steps if steps is None else steps
        hidden = model.hidden if hidden is None else hidden
        inputs = model.inputs if inputs is None else inputs
    return cell, steps or EXACT_STEPS, hidden or 1, inputs or 2


def verify(derivation: engine.CellDerivation, model=None, steps: int | None = None, hidden: int | None = None,
           inputs: int | None = None, points: int = NUMERIC_POINTS, control: bool = True, seed: int = 0,
           progress=None) -> Report:
    """Prove the engine's BPTT of a cell against sp.diff of its unrolled loss, and reject a control.

    ``derivation``: the command's one derivation of the cell; ``model``: the ``Model`` whose sizes are
    proved (else ``steps``, ``hidden``, ``inputs``, which override the model's). The exact
    identity runs at H = 1, n = min(steps, EXACT_STEPS); the 60-digit check at H = min(max(hidden, 2),
    NUMERIC_HIDDEN), n = min(steps, NUMERIC_STEPS) or, where larger, the cell's states + 1 (up to
    MAX_PATH_STEPS), where every path of the cell exists; D = min(inputs, EXACT_INPUTS) and min(inputs, NUMERIC_INPUTS). The
    negative control runs the same checks with one path removed, at n ≥ 2. ``progress(k, what)``, if
    given, is called as each of the four stages begins.
    """
    progress = progress or (lambda stage, what: None)
    started = time.perf_counter()
    cell, steps, hidden, inputs = _sizes(derivation, model, steps, hidden, inputs)
    d = derivation
    exact_inputs, numeric_inputs = min(inputs, EXACT_INPUTS), min(inputs, NUMERIC_INPUTS)
    # every path of the cell exists from n = (its states) + 1 on: a chain of copy states (a lag written
    # as o1' = o, o2' = o1) reaches the update only then
    numeric_steps = max(min(steps, NUMERIC_STEPS), min(d.path_steps, MAX_PATH_STEPS))
    exact_steps = min(steps, EXACT_STEPS)
    if sum(node.activation is not None for node in d.nodes) <= EXACT_PATH_ACTIVATIONS:
        exact_steps = max(exact_steps, min(d.path_steps, EXACT_PATH_STEPS))
    numeric_hidden = min(max(hidden, 2), NUMERIC_HIDDEN)
    report = Report(cell.name, cell.description, {"steps": steps, "hidden": hidden, "inputs": inputs},
                    outputs="" if d.outputs.default else d.outputs.describe)
    if d.path_steps > numeric_steps:
        report.note = (f"every path of the cell exists from n = {d.path_steps} on (its lags and copy states), "
                       f"beyond the largest size checked (n = {numeric_steps}): the paths that need more steps are "
                       "not covered by this proof")
    outputs = d.outputs
    if outputs.loss == "softmax":
        # the softmax's exp(z_k)/Σ exp(z_j) is no polynomial in independent atoms: the 60-digit check proves it
        softmax = ("with --loss softmax the exact identity is not run (the softmax is not a polynomial in its "
                   "atoms): the 60-digit check proves it")
        report.note = " ".join(filter(None, (report.note, softmax)))
    progress(1, "the oracle's local derivatives")
    report.checks.append(local(cell))
    exact_oracle = None if outputs.loss == "softmax" else ExactOracle(cell, exact_inputs, exact_steps, outputs)
    numeric_oracle = NumericOracle(cell, numeric_hidden, numeric_inputs, numeric_steps, points=points, seed=seed,
                                   outputs=outputs)
    progress(2, "the exact identity")
    if exact_oracle is not None:
        report.checks.append(exact_oracle.check(d))
    progress(3, "the 60-digit evaluation")
    report.checks.append(numeric_oracle.check(d))
    if control:
        progress(4, "the negative control")
        # a path back in time exists from n = 2 on: the control runs there at least
        if exact_steps < 2 and exact_oracle is not None:
            exact_oracle = ExactOracle(cell, exact_inputs, 2, outputs)
        if numeric_steps < 2:
            numeric_oracle = NumericOracle(cell, numeric_hidden, numeric_inputs, 2, points=1, seed=seed,
                                           outputs=outputs)
        report.control = _control(d, exact_oracle, numeric_oracle, numeric_hidden, seed)
    report.seconds = time.perf_counter() - started
    return report


def _control(d, exact_oracle, numeric_oracle, numeric_hidden: int, seed: int) -> Control:
    """The negative control: the direct path removed first; where that changes no gradient at the sizes
    checked (a direct path of a state the readout never sees, a path that does not exist yet), the
    truncated recursion, then the residual's sign. Each check runs where its mutation changes the
    gradient; the first mutation that does is the control (rejected or not: a visible mutation that
    is not rejected is a failure, not a reason to try another)."""
    control = None
    for mutation in dict.fromkeys((control_mutation(d), "truncated", "residual_sign")):
        try:
            wrong = d.mutate(mutation)
        except ValueError:
            continue
        control = Control(mutation, engine.MUTATIONS[mutation])
        for oracle, hidden_size in ((exact_oracle, 1), (numeric_oracle, numeric_hidden)):
            if oracle is None:
                continue
            sizes = f"H = {hidden_size}, D = {oracle.inputs}, n = {oracle.steps}"
            if not _changes_gradient(d, wrong, hidden_size, oracle.inputs, oracle.steps, seed):
                control.invisible.append(sizes)
            elif oracle is exact_oracle:
                control.checks.append(oracle.check(wrong))
            else:
                control.checks.append(oracle.check(wrong, points=1))
        if control.visible:
            break
    return control


def _changes_gradient(d, wrong, hidden: int, inputs: int, steps: int, seed: int) -> bool:
    """Whether ``wrong``'s gradient differs from ``d``'s at a random float64 point of these sizes, every
    weight and input positive (every ReLU open, every path carrying gradient)."""
    rng = np.random.default_rng(seed)
    params = {name: rng.uniform(0.1, 0.9, size=shape) for name, shape in d.shapes(hidden, inputs).items()}
    x = rng.uniform(0.1, 1.0, size=(2, steps, inputs))
    y, _ = _random_labels(random.Random(seed), d.outputs, 2, steps)
    y = y if d.outputs.loss == "softmax" else np.asarray(y, dtype=float)
    if d.outputs.default:
        y = np.array([0.0, 1.0])   # one sequence of each label
    with np.errstate(all="ignore"):
        right, other = evaluation.evaluate(d, params, x, y), evaluation.evaluate(wrong, params, x, y)
    scale = max(float(np.max(np.abs(g))) for g in right.gradients.values()) or 1.0
    return any(not np.allclose(other.gradients[name], g, rtol=0, atol=1e-9 * scale)
               for name, g in right.gradients.items())


HEADINGS = {"local": "1. The oracle's local derivatives",
            "exact": "2. Exact identity against sp.diff of the unrolled loss",
            "numeric": "3. High-precision evaluation"}


def format_report(report: Report) -> str:
    """The report as printed by ``bptt derive --cell C --verify``."""
    requested = report.requested
    lines = [(f"Proof that the BPTT recursion of cell {report.cell} (symbolic.engine.derivation) equals ∂L/∂θ of its "
              f"unrolled loss — model H = {requested['hidden']}, D = {requested['inputs']}, n = {requested['steps']}"
              + (f"; outputs: {report.outputs}" if report.outputs else ""))]
    for kind, heading in HEADINGS.items():
        lines.append(heading)
        if not any(check.kind == kind for check in report.checks):
            lines.append("   [----] not run (see the note)")
        for check in report.checks:
            if check.kind == kind:
                mark = "ok  " if check.passed else "FAIL"
                lines.append(f"   [{mark}] {check.name}: {check.detail}")
    if report.control is not None:
        control = report.control
        lines.append(f"4. Negative control: {control.mutation} ({control.description})")
        for check in control.checks:
            mark = "ok  " if not check.passed else "FAIL"
            verdict = "rejected" if not check.passed else "NOT rejected"
            lines.append(f"   [{mark}] {check.name} {verdict}: {check.detail}")
        for sizes in control.invisible:
            lines.append(f"   [----] at {sizes} the mutation changes no gradient (the path it removes does not "
                         "exist yet): not a control there")
    if report.note:
        lines.append(f"Note: {report.note}")
    held = sum(check.passed for check in report.checks)
    if report.passed:
        verdict = f"PROVED: {held} of {len(report.checks)} checks hold"
    else:
        verdict = f"DISAGREEMENT: {held} of {len(report.checks)} checks hold"
    if report.control is not None and not report.control.visible:
        verdict += ", no negative control (its mutation changes nothing at the sizes checked)"
    elif report.control is not None:
        verdict += ", negative control " + ("rejected" if report.control.rejected else "NOT rejected")
    if report.worst is not None:
        verdict += f"; worst 60-digit difference {mpmath.nstr(report.worst, 3)}"
    lines.append(f"{verdict} ({report.seconds:.1f} s). The derivation is per unit, the same for every H, D "
                 "and n: it is proved at the sizes shown.")
    return "\n".join(lines)


__all__ = ["Check", "Control", "ExactOracle", "Node", "NumericOracle", "Report", "Unrolled", "control_mutation",
           "exact", "format_report", "local", "numeric", "value_of", "verify"]
