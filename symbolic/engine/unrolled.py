"""The oracle's unrolled loss (split from ``oracle.py``, which holds the checks): the cell's own
equations written out for n steps with the oracle's inert activations, differentiated by sp.diff once
per node of the unrolled graph, and the exact and 60-digit evaluation of what it builds."""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import mpmath
import numpy as np
import sympy as sp

from ..cells.spec import FUNCTIONS, Cell
from ..outputs import Outputs

DIGITS = 60
#: ReLU arguments closer than this to 0 are avoided in the 60-digit check (the kink).
KINK = mpmath.mpf(10) ** -6


# -- the oracle's own activations: inert (nothing evaluates automatically), textbook derivatives ----------


class _Tanh(sp.Function):
    """tanh with d tanh(a)/da = 1 − tanh(a)²."""

    def fdiff(self, argindex=1):
        return 1 - self**2


class _Sigmoid(sp.Function):
    """σ(a) = 1/(1 + e^{−a}) with dσ/da = σ(1 − σ)."""

    def fdiff(self, argindex=1):
        return self * (1 - self)


class _Step(sp.Function):
    """[a > 0]: the derivative of max(0, a) away from a = 0."""

    def fdiff(self, argindex=1):
        return sp.S.Zero


class _Relu(sp.Function):
    """max(0, a) with derivative [a > 0] (undefined at the kink a = 0, which the checks avoid)."""

    def fdiff(self, argindex=1):
        return _Step(self.args[0])


ORACLE_FUNCTIONS = {"tanh": _Tanh, "sigmoid": _Sigmoid, "relu": _Relu}
_FAMILY = {function: name for name, function in ORACLE_FUNCTIONS.items()}
_INERT = tuple(ORACLE_FUNCTIONS.values())


def _inert(expr: sp.Expr) -> sp.Expr:
    """expr with the spec's activations (tanh, σ, ReLU) replaced by the oracle's inert ones."""
    for function, name in FUNCTIONS.items():
        expr = expr.replace(function, ORACLE_FUNCTIONS[name])
    return expr


#: f′ of each activation written with its output A (and ReLU's step symbol S), from the oracle's rules.
_A, _S = sp.Symbol("A"), sp.Symbol("S")


def _slope_template(family: str) -> sp.Expr:
    function, w = ORACLE_FUNCTIONS[family], sp.Dummy("w")
    derivative = sp.diff(function(w), w).xreplace({function(w): _A, _Step(w): _S})
    assert w not in derivative.free_symbols, (family, derivative)
    return derivative


_SLOPES = {family: _slope_template(family) for family in ORACLE_FUNCTIONS}


@dataclass(frozen=True)
class Node:
    """One value of the unrolled graph: ``symbol`` = ``definition`` (in earlier nodes, weights, inputs),
    or for an activation (``family``) ``symbol`` = f(``definition``); ``step`` = [definition > 0] for ReLU."""

    symbol: sp.Symbol
    definition: sp.Expr
    family: str | None = None
    step: sp.Symbol | None = None

    @property
    def slope(self) -> sp.Expr:
        """f′ written with the node's value (tanh: 1 − A², σ: A(1 − A), ReLU: its step symbol)."""
        return _SLOPES[self.family].xreplace({_A: self.symbol, _S: self.step})


# -- the unrolled loss --------------------------------------------------------------------------------------


class Unrolled:
    """The cell unrolled for ``steps`` steps over ``batch`` sequences, with explicit scalar symbols.

    ``parameters``: name → object array of symbols of the parameter's shape; ``x`` (B, n, D) and ``y``
    (B,) symbols; ``nodes``: the unrolled graph in evaluation order, one node per equation, unit, step
    and sequence and one per activation (its *atoms*: A = f(a)); ``loss`` the mean loss written with the
    readout's σ nodes. ``nested(loss)`` is the literal nest.
    """

    def __init__(self, cell: Cell, hidden: int, inputs: int, steps: int, batch: int = 1,
                 outputs: Outputs | None = None):
        self.cell, self.hidden, self.inputs, self.steps, self.batch = cell, hidden, inputs, steps, batch
        self.outputs = outputs = outputs or Outputs()
        sizes = {"H": hidden, "D": inputs, "K": outputs.classes}
        self.parameters = {}
        for name, shape in parameter_shapes(cell, outputs).items():
            dims = tuple(sizes[s] for s in shape)
            entries = [sp.Symbol(f"{name}[{','.join(str(i + 1) for i in index)}]" if dims else name)
                       for index in np.ndindex(dims)]
            self.parameters[name] = np.array(entries, dtype=object).reshape(dims)
        self.x = np.array([sp.Symbol(f"x[{b + 1},{t + 1},{d + 1}]") for b in range(batch) for t in range(steps)
                           for d in range(inputs)], dtype=object).reshape(batch, steps, inputs)
        self.y = _labels(outputs, batch, steps)
        self.parameter_symbols = {s for value in self.parameters.values() for s in value.flat}
        self.nodes: list[Node] = []
        self.node: dict = {}          # symbol → Node
        self._activation: dict = {}   # (family, argument) → Node, as built
        self._expanded: dict = {}     # (family, argument in atoms, expanded) → Node, to match the engine's
        self._flat: dict = {}         # plain node symbol → its value in atoms
        templates = [(eq, _inert(eq.expr)) for eq in cell.equations]
        applications = {a.symbol: a for a in cell.applications}
        update_of = {eq.state: eq.name for eq in cell.equations if eq.state}
        losses = []
        for b in range(batch):
            previous = {state: [sp.S.Zero] * hidden for state in cell.states}
            history = {state: [] for state in cell.states}   # s_1, s_2, … of this sequence
            for t in range(steps):
                values = {"x": list(self.x[b, t])}
                values |= {str(symbol): previous[state] for state, symbol in cell.states.items()}
                # s_(t−K) (``Cell.lag``): K steps back in this sequence, the zero state before it starts
                values |= {str(symbol): history[state][t - lag] if t - lag >= 0 else [sp.S.Zero] * hidden
                           for (state, lag), symbol in cell.lags.items()}
                for eq, template in templates:
                    column = []
                    for j in range(hidden):
                        env = {}
                        for symbol in template.free_symbols:
                            if symbol in applications:
                                application = applications[symbol]
                                matrix, operand = self.parameters[application.matrix], values[application.operand]
                                env[symbol] = sp.Add(*(matrix[j, k] * operand[k] for k in range(len(operand))))
                            elif str(symbol) in cell.vectors:
                                env[symbol] = self.parameters[str(symbol)][j]
                            else:
                                env[symbol] = values[str(symbol)][j]
                        value = self._lifted(template.xreplace(env))
                        if not (value.is_Symbol or value.is_Number):
                            value = self._add(Node(sp.Symbol(f"{eq.name}⟨{b + 1},{t + 1},{j + 1}⟩"), value)).symbol
                        column.append(value)
                    values[eq.name] = column
                previous = {state: values[update_of[state]] for state in cell.states}
                for state in cell.states:
                    history[state].append(previous[state])
            read = range(steps) if outputs.every else (steps - 1,)
            losses += [self._step_loss(history[cell.output_state][t], self.y[b, t] if outputs.every else self.y[b])
                       for t in read]
        self.loss = sp.Add(*losses) / (batch * steps if outputs.reduction == "all" else batch)

    def _step_loss(self, state: list, y) -> sp.Expr:
        """The loss of one readout of ``state`` (H values) against ``y`` (a one-hot row for softmax)."""
        cell, loss = self.cell, self.outputs.loss
        weight = self.parameters[cell.readout]
        bias = self.parameters[cell.readout_bias] if cell.readout_bias else None
        if loss == "softmax":
            z = [sp.Add(*(w * s for w, s in zip(row, state))) + (bias[k] if bias is not None else 0)
                 for k, row in enumerate(weight)]
            return sp.log(sp.Add(*(sp.exp(v) for v in z))) - sp.Add(*(label * v for label, v in zip(y, z)))
        z = sp.Add(*(w * s for w, s in zip(weight, state)))
        if bias is not None:
            z += bias[()]
        if loss == "mse":
            return (z - y) ** 2
        y_hat = self.activation("sigmoid", z).symbol
        return -y * sp.log(y_hat) - (1 - y) * sp.log(1 - y_hat)

    @property
    def atoms(self) -> list[Node]:
        """The activation nodes."""
        return [node for node in self.nodes if node.family]

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.node[node.symbol] = node
        return node

    def activation(self, family: str, argument: sp.Expr) -> Node:
        """The node f(argument), made on first use."""
        key = (family, argument)
        if key not in self._activation:
            k = len(self._activation) + 1
            step = sp.Symbol(f"step⟨{k}⟩") if family == "relu" else None
            self._activation[key] = self._add(Node(sp.Symbol(f"{family}⟨{k}⟩"), argument, family, step))
        return self._activation[key]

    def _lifted(self, expr: sp.Expr) -> sp.Expr:
        """expr with every inert activation replaced by its node (innermost first)."""
        return expr.replace(lambda e: isinstance(e, _INERT),
                            lambda e: self.activation(_FAMILY[type(e)], e.args[0]).symbol)

    # -- matching the engine's values --------------------------------------------------------------------

    def in_atoms(self, expr: sp.Expr) -> sp.Expr:
        """expr with every plain node written out, down to the activation nodes, weights and inputs."""
        missing = [node for node in self.nodes if not node.family and node.symbol not in self._flat]
        for node in missing:
            self._flat[node.symbol] = node.definition.xreplace(self._flat)
        return expr.xreplace(self._flat)

    def matching(self, family: str, argument: sp.Expr) -> Node:
        """The activation node whose argument, in atoms, expands to the same polynomial as ``argument``
        (in atoms: the engine's values); a new node if there is none (then the engine evaluated an
        activation the unrolled loss does not have, and the check fails)."""
        if not self._expanded:
            self._expanded = {(a.family, sp.expand(self.in_atoms(a.definition))): a for a in self.atoms}
        key = (family, sp.expand(argument))
        if key not in self._expanded:
            self._expanded[key] = self.activation(family, argument)
        return self._expanded[key]

    def nested(self, expr: sp.Expr, inert: bool = False) -> sp.Expr:
        """expr with every node replaced by its definition, recursively: the literal nest, for checking the
        oracle against plain sp.diff. Activations as SymPy's tanh, 1/(1 + exp(−a)) and Max(0, a), or with
        ``inert`` the oracle's own (SymPy's tanh asks assumptions of its whole nest: the GRU's n = 2 nest
        takes 16 s to differentiate so, under a second with the inert functions)."""
        closed = {"tanh": sp.tanh, "sigmoid": lambda a: 1 / (1 + sp.exp(-a)), "relu": lambda a: sp.Max(0, a)}
        nest: dict = {}
        for node in self.nodes:
            value = node.definition.xreplace(nest)
            if node.family:
                value = ORACLE_FUNCTIONS[node.family](value) if inert else closed[node.family](value)
            nest[node.symbol] = value
        return expr.xreplace(nest)

    # -- the derivative ------------------------------------------------------------------------------------

    @cached_property
    def chain(self) -> tuple:
        """The local partials of the unrolled graph by sp.diff, once: per node (symbol, [(u, ∂definition/∂u)],
        f′ for an activation), and the loss's [(u, ∂L/∂u)], u a weight or an earlier node. The loss reaches
        each readout σ node ŷ through its argument z, with ∂L/∂ŷ·ŷ(1 − ŷ) cancelled to ŷ − y (its log
        written away, so that the derivative is a polynomial)."""
        known = set(self.parameter_symbols)
        steps = []
        for node in self.nodes:
            partials = [(u, sp.diff(node.definition, u))
                        for u in sorted(node.definition.free_symbols & known, key=sp.default_sort_key)]
            steps.append((node.symbol, [(u, partial) for u, partial in partials if partial != 0],
                          node.slope if node.family else None))
            known.add(node.symbol)
        loss = []
        for u in sorted(self.loss.free_symbols & known, key=sp.default_sort_key):
            partial = sp.diff(self.loss, u)
            node = self.node.get(u)
            if node is not None and node.family:
                loss.append((("argument", u), sp.cancel(partial * node.slope)))
            else:
                loss.append((u, partial))
        return steps, loss

    def derivative(self, evaluate=None) -> dict:
        """{θ: dL/dθ} for every weight entry θ that L depends on: the chain rule forward through the
        unrolled graph, per θ, on the partials of ``chain``, in the arithmetic of ``evaluate`` (a partial's
        value: a polynomial, a 60-digit number; by default the SymPy expression itself)."""
        evaluate = evaluate or (lambda expr: expr)
        steps, loss = self.chain
        parameters = self.parameter_symbols
        derivative: dict = {}   # node symbol (or ("argument", activation)) → {θ: d/dθ}

        def through(partials) -> dict:
            terms: dict = {}
            for u, partial in partials:
                value = evaluate(partial)
                if u in parameters:
                    terms.setdefault(u, []).append(value)
                else:
                    for theta, inner in derivative[u].items():
                        terms.setdefault(theta, []).append(value * inner)
            return {theta: _total(values) for theta, values in terms.items()}

        for symbol, partials, slope in steps:
            result = through(partials)
            if slope is not None:
                derivative[("argument", symbol)] = result
                slope = evaluate(slope)
                result = {theta: slope * value for theta, value in result.items()}
            derivative[symbol] = result
        return through(loss)

    def gradient(self, evaluate=None, zero=sp.S.Zero) -> dict:
        """name → object array of dL/dθ (``derivative`` arranged by parameter)."""
        derivative = self.derivative(evaluate)
        return {name: np.array([derivative.get(theta, zero) for theta in value.flat],
                               dtype=object).reshape(value.shape)
                for name, value in self.parameters.items()}

    # -- points ----------------------------------------------------------------------------------------------

    def values(self, point: dict, memo: dict, number, activations: dict) -> dict:
        """``point`` completed with every node's value: plain nodes from their definitions, activations by
        ``activations[family](argument value, node)`` (which may set the step too)."""
        for node in self.nodes:
            value = value_of(node.definition, point, memo, number)
            if node.family:
                activations[node.family](value, node, point)
            else:
                point[node.symbol] = value
        return point

    def mp_point(self, parameters: dict, x, y) -> dict:
        """mpmath values of every symbol at the given weights, inputs and labels (Fractions), nodes from
        their definitions. Raises _NearKink when a ReLU argument is within KINK of 0."""
        point = {}
        for name, value in self.parameters.items():
            point.update({s: _mp(v) for s, v in zip(value.flat, np.asarray(parameters[name], dtype=object).flat)})
        point.update({s: _mp(v) for s, v in zip(self.x.flat, np.asarray(x, dtype=object).flat)})
        point.update({s: _mp(v) for s, v in zip(self.y.flat, np.asarray(y, dtype=object).flat)})

        def tanh(a, node, point):
            point[node.symbol] = mpmath.tanh(a)

        def sigmoid(a, node, point):
            point[node.symbol] = 1 / (1 + mpmath.exp(-a))

        def relu(a, node, point):
            # exactly 0 (relu of a state's initial 0 at t = 1, at every point): ReLU′(0) = 0, the
            # engine's and the modules' convention; only an argument merely near 0 is a kink to avoid
            if a != 0 and abs(a) < KINK:
                raise _NearKink
            point[node.symbol] = a if a > 0 else mpmath.mpf(0)
            point[node.step] = mpmath.mpf(1 if a > 0 else 0)

        return self.values(point, {}, _mp, {"tanh": tanh, "sigmoid": sigmoid, "relu": relu})

    def polynomial_point(self):
        """The polynomial ring over QQ in the atoms (and steps), weights, inputs and y, and the point
        that maps each of those to its generator and each plain node to its polynomial."""
        from sympy.polys.rings import ring

        generators = [s for value in self.parameters.values() for s in value.flat]
        generators += list(self.x.flat) + list(self.y.flat)
        for node in self.atoms:
            generators += [node.symbol] + ([node.step] if node.step is not None else [])
        # integer coefficients (B = 1, the readout's ŷ − y, integer equations) multiply several times
        # faster than rationals
        numbers = {n for eq in self.cell.equations for n in eq.expr.atoms(sp.Number, sp.NumberSymbol)}
        domain = sp.ZZ if self.batch == 1 and self.outputs.reduction != "all" and all(n.is_Integer for n in numbers) else sp.QQ
        polynomials, *gens = ring(generators, domain)
        point = dict(zip(generators, gens))

        def atom(a, node, point):
            pass   # an independent generator

        number = polynomials.domain.convert
        self.values(point, {}, lambda q: polynomials(number(_decimal(q))), {f: atom for f in ORACLE_FUNCTIONS})
        return polynomials, point


class _NearKink(Exception):
    pass


def parameter_shapes(cell: Cell, outputs: Outputs) -> dict:
    """The cell's parameters with the readout of ``outputs``: (K, H) and (K,) for softmax."""
    shapes = dict(cell.parameters)
    shapes[cell.readout] = outputs.readout_shape()
    if cell.readout_bias:
        shapes[cell.readout_bias] = outputs.bias_shape()
    return shapes


def _labels(outputs: Outputs, batch: int, steps: int):
    """The label symbols: y[b] for a readout after the last step, y[b,t] after every step, and for softmax
    one more axis of one-hot entries y[…,k]."""
    index = [(b,) for b in range(batch)] if not outputs.every else [(b, t) for b in range(batch) for t in range(steps)]
    shape = (batch, steps) if outputs.every else (batch,)
    if outputs.loss != "softmax":
        return np.array([sp.Symbol(f"y[{','.join(str(i + 1) for i in key)}]") for key in index],
                        dtype=object).reshape(shape)
    classes = outputs.classes
    return np.array([sp.Symbol(f"y[{','.join(str(i + 1) for i in key)},{k + 1}]") for key in index
                     for k in range(classes)], dtype=object).reshape(*shape, classes)


def _rational(rng: random.Random, low: float, high: float) -> Fraction:
    return Fraction(rng.randint(round(low * 1000), round(high * 1000)), 1000)


def _mp(value):
    if isinstance(value, sp.Float):   # a cell's decimal coefficient, as the engine's mpmath code reads it
        return mpmath.mpf(value._mpf_)
    if isinstance(value, sp.Rational):
        value = Fraction(int(value.p), int(value.q))
    value = Fraction(value)
    return mpmath.mpf(value.numerator) / value.denominator


def _total(values: list):
    if isinstance(values[0], sp.Basic):
        return sp.Add(*values)
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def _fraction(number: sp.Number) -> Fraction:
    return Fraction(int(number.p), int(number.q)) if number.is_Rational else Fraction(str(number))


def _decimal(number: sp.Number) -> sp.Rational:
    """A Float as the decimal it prints as: the derivation's Float arithmetic (1 − 0.1 = 0.9) is exact
    in decimals, not in binary, so the exact check reads a cell's decimal coefficients as written."""
    return sp.Rational(str(number)) if number.is_Float else number


def value_of(expr: sp.Expr, point: dict, memo: dict, number=_fraction):
    """expr at ``point`` (symbol → value), once per shared subexpression (the expressions are DAGs
    whose trees grow exponentially with n). ``number`` converts SymPy's rationals."""
    key = id(expr)
    if key in memo:
        return memo[key][1]
    if expr.is_Symbol:
        value = point[expr]
    elif expr.is_Rational or expr.is_Float:
        value = number(expr)
    elif expr.is_NumberSymbol:   # π, e, …: the same decimal of DIGITS digits wherever it occurs
        value = number(sp.Float(expr.evalf(DIGITS), DIGITS))
    elif isinstance(expr, sp.exp) and expr.args[0].is_Integer:   # e·e, 1/e: SymPy's exp(2), exp(-1)
        # the power of e's own decimal, so e^k agrees exactly with e·…·e evaluated factor by factor
        value = number(sp.Rational(str(sp.Float(sp.E.evalf(DIGITS), DIGITS))) ** int(expr.args[0]))
    elif expr.is_Add:
        value = sum((value_of(arg, point, memo, number) for arg in expr.args[1:]),
                    value_of(expr.args[0], point, memo, number))
    elif expr.is_Mul:
        value = value_of(expr.args[0], point, memo, number)
        for arg in expr.args[1:]:
            value = value * value_of(arg, point, memo, number)
    elif expr.is_Pow and expr.exp.is_Integer:
        value = value_of(expr.base, point, memo, number) ** int(expr.exp)
    elif isinstance(expr, sp.log):
        value = mpmath.log(value_of(expr.args[0], point, memo, number))
    elif isinstance(expr, sp.exp):   # a softmax readout's exp(z_k)
        value = mpmath.exp(value_of(expr.args[0], point, memo, number))
    else:
        raise AssertionError(f"cannot evaluate {type(expr).__name__}: {str(expr)[:80]}")
    memo[key] = (expr, value)   # keep expr alive so its id is not reused
    return value
