"""The engine's numerical evaluation: the derived recursion run in float64 (NumPy) or at any precision
(mpmath), the reference implementation the proofs, the checker and the grader use
(``evaluate``), and the forward values alone (``forward_values``). Numbers come through a small
interface (``_Float64``, ``_Mpmath``; the oracle's ``_InAtoms`` runs the same code over SymPy).

The output side (``CellDerivation.outputs``) decides where the loss enters: the readout after the
last step or after every step (``_readout``), whose error joins what step t + 1 sends to the output
state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

if TYPE_CHECKING:
    from .derivation import CellDerivation


# -- numerical evaluation: the reference implementation ---------------------------------------------


@dataclass(frozen=True)
class Values:
    """Mean loss, gradients (name → array of the parameter's shape) and the forward values."""

    loss: object
    gradients: dict
    forward: dict = field(default_factory=dict)

    def as_float(self) -> tuple[float, dict]:
        return float(self.loss), {name: np.asarray(value, dtype=float) for name, value in self.gradients.items()}


def evaluate(d: CellDerivation, params: dict, x, y, digits: int | None = None, mask=None) -> Values:
    """Loss and gradients by the derived recursion: float64 NumPy, or mpmath at ``digits`` digits.

    ``params``: name → array of the shapes for some H (read from the readout weight) and D (from x);
    ``x``: (B, n, D) or (n, D); ``y``: (B,) or a number for a readout after the last step, (B, n) for
    one after every step (class indices for softmax); ``mask``: (B, n) of 0/1 for a readout after every
    step (a masked step adds no loss). Exact inputs (ints, Fractions, SymPy rationals) are converted
    exactly in the mpmath mode.
    """
    if digits is None:
        return _evaluate(d, params, x, y, _Float64(), mask)
    import mpmath

    with mpmath.workdps(digits):
        return _evaluate(d, params, x, y, _Mpmath(), mask)


def _plain(arguments, expr):
    """The arguments renamed _a0, _a1, …: lambdify puts each argument's name in the namespace of the
    function it writes, where a cell's value named pi or tanh would shadow the constant or function."""
    plain = [sp.Symbol(f"_a{k}") for k in range(len(arguments))]
    return plain, sp.sympify(expr).xreplace(dict(zip(arguments, plain)))


class _Float64:
    dtype = float

    def array(self, value):
        return np.asarray(value, dtype=float)

    def zeros(self, shape):
        return np.zeros(shape)

    def function(self, arguments, expr):
        arguments, expr = _plain(arguments, expr)
        return sp.lambdify(arguments, expr, modules=[{"sigmoid": _np_sigmoid, "relu": _np_relu,
                                                      "Heaviside": lambda v, h0=0.0: np.heaviside(v, h0)},
                                                     "numpy"])

    def log_sigmoid_loss(self, z, y):
        return y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)

    def sigmoid(self, z):
        return _np_sigmoid(z)

    def softmax(self, z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def softmax_loss(self, z, classes):
        top = z.max(axis=1)
        return top + np.log(np.exp(z - top[:, np.newaxis]).sum(axis=1)) - z[np.arange(len(classes)), classes]


class _Mpmath:
    dtype = object

    def array(self, value):
        return np.vectorize(_mp, otypes=[object])(np.asarray(value, dtype=object))

    def zeros(self, shape):
        import mpmath

        return np.full(shape, mpmath.mpf(0), dtype=object)

    def function(self, arguments, expr):
        import mpmath

        arguments, expr = _plain(arguments, expr)
        scalar = sp.lambdify(arguments, expr, modules=[{
            "sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)),
            "relu": lambda v: v if v > 0 else mpmath.mpf(0),
            "Heaviside": lambda v, h0=0: mpmath.mpf(1) if v > 0 else (mpmath.mpf(h0) if v == 0 else mpmath.mpf(0)),
        }, "mpmath"])
        vectorised = np.frompyfunc(scalar, len(arguments), 1) if arguments else None

        def apply(*values):
            if not arguments:
                return scalar()
            return vectorised(*values)

        return apply

    def log_sigmoid_loss(self, z, y):
        import mpmath

        def one(zv, yv):
            return yv * mpmath.log1p(mpmath.exp(-zv)) + (1 - yv) * mpmath.log1p(mpmath.exp(zv))

        return np.frompyfunc(one, 2, 1)(z, y)

    def sigmoid(self, z):
        import mpmath

        return np.frompyfunc(lambda v: 1 / (1 + mpmath.exp(-v)), 1, 1)(z)

    def softmax(self, z):
        import mpmath

        e = np.frompyfunc(mpmath.exp, 1, 1)(z)
        return e / e.sum(axis=1)[:, np.newaxis]

    def softmax_loss(self, z, classes):
        import mpmath

        return np.array([mpmath.log(sum(mpmath.exp(v) for v in row)) - row[k] for row, k in zip(z, classes)],
                        dtype=object)


def _np_sigmoid(z):
    z = np.asarray(z)
    positive = np.real(z) > 0
    e = np.exp(np.where(positive, -z, z))
    return np.where(positive, 1 / (1 + e), e / (1 + e))


def _np_relu(z):
    return np.maximum(z, 0.0)


def _mp(value):
    import mpmath

    if hasattr(value, "numerator") and hasattr(value, "denominator") and not isinstance(value, float):
        return mpmath.mpf(int(value.numerator)) / int(value.denominator)
    if isinstance(value, sp.Rational):
        return mpmath.mpf(int(value.p)) / int(value.q)
    if isinstance(value, sp.Basic):
        return mpmath.mpf(sp.Float(value, mpmath.mp.dps + 5))
    return mpmath.mpf(value)


def forward_values(d: CellDerivation, params: dict, x) -> tuple[list, dict]:
    """The forward recursion in float64: per step t = 1..n a dict symbol → (B, H) value (every node,
    linear map, previous state and per-unit parameter of the step), and state → [s_0, …, s_n]."""
    numbers = _Float64()
    p = {name: numbers.array(params[name]) for name in d.parameters}
    x = numbers.array(x)
    if x.ndim == 2:
        x = x[np.newaxis]
    return _forward(d, p, x, numbers)


def _forward(d: CellDerivation, p: dict, x, numbers, initial: dict | None = None) -> tuple[list, dict]:
    """``initial``: state → (B, H) starting value s_0 (zero where missing); a state read K steps back
    reads 0 before s_0 (s_t = 0 for t < 0), as the framework targets do."""
    batch, steps, _ = x.shape
    hidden = p[d.cell.readout].shape[-1]
    node_functions = {node.name: numbers.function(sorted(node.expr.free_symbols, key=str), node.expr)
                      for node in d.nodes}
    node_arguments = {node.name: sorted(node.expr.free_symbols, key=str) for node in d.nodes}
    zero = numbers.zeros((batch, hidden))
    states = {state: [numbers.array((initial or {}).get(state, zero)) + zero] for state in d.states}
    history = []   # per step: symbol → value
    leaves = [(state, lag, d.leaf(state, lag)) for state, lags in d.lags.items() for lag in lags]
    for t in range(steps):
        # s_(t−K) of step t + 1 (0-based t): states[s][t + 1 − K], the zero state before the sequence
        known = {symbol: states[state][t + 1 - lag] if t + 1 - lag >= 0 else zero for state, lag, symbol in leaves}
        known |= {symbol: p[name] for name, symbol in d.symbols["vectors"].items()}
        sources = {"x": x[:, t], **{str(symbol): known[symbol] for _, _, symbol in leaves}}

        def apply_maps(operand, known=known, sources=sources):
            for linear in d.linears:
                if linear.operand == operand:
                    known[linear.symbol] = sources[operand] @ p[linear.matrix].T

        for operand in ("x", *(str(symbol) for _, _, symbol in leaves)):
            apply_maps(operand)
        for node in d.nodes:
            arguments = [known[symbol] for symbol in node_arguments[node.name]]
            known[node.symbol] = node_functions[node.name](*arguments) + zero   # (B, H) even for constants
            sources[node.name] = known[node.symbol]
            apply_maps(node.name)
        for state in d.states:
            states[state].append(known[d.state_node(state).symbol])
        history.append(known)
    return history, states


def _readout(d: CellDerivation, p: dict, outputs: list, y, mask, numbers, gradients: dict, received: list):
    """The readout at every step it is read (the last, or each): adds its loss, its weight's gradient
    and W_yᵀ e_t to ``received[t]`` (what δs_t receives), e_t = ∂ℓ_t/∂z_t times the step's mask.
    Returns (the summed loss, the divisor of the reduction: B, or the unmasked steps for "all")."""
    cell, spec = d.cell, d.outputs
    batch, steps = outputs[0].shape[0], len(outputs) - 1
    y = np.asarray(y, dtype=object)
    y = y.reshape(batch, steps) if spec.every else np.atleast_1d(y)
    weights = None if mask is None else numbers.array(np.asarray(mask, dtype=object))
    residual_of = numbers.function([d.symbols["y_hat"], d.symbols["y"]], d.output_factor)
    total = 0
    for t in range(1, steps + 1) if spec.every else (steps,):
        s = outputs[t]
        labels = y[:, t - 1] if spec.every else y
        weight = None if weights is None else weights[:, t - 1]
        if spec.loss == "softmax":
            z = s @ p[cell.readout].T
            if cell.readout_bias:
                z = z + p[cell.readout_bias]
            classes = [int(label) for label in labels]
            onehot = numbers.array(np.eye(z.shape[1], dtype=int)[classes])
            losses = numbers.softmax_loss(z, classes)
            residual = residual_of(numbers.softmax(z), onehot)
        else:
            z = s @ p[cell.readout]
            if cell.readout_bias:
                z = z + p[cell.readout_bias]
            labels = numbers.array(labels)
            if spec.loss == "bce":
                losses, residual = numbers.log_sigmoid_loss(z, labels), residual_of(numbers.sigmoid(z), labels)
            else:
                losses, residual = (z - labels) ** 2, residual_of(z, labels)
        if weight is not None:
            losses = losses * weight
            residual = residual * (weight[:, np.newaxis] if residual.ndim == 2 else weight)
        total = total + losses.sum()
        if residual.ndim == 2:     # softmax: e_t (B, K), W (K, H)
            gradients[cell.readout] = gradients[cell.readout] + residual.T @ s
            received[t] = received[t] + residual @ p[cell.readout]
            bias_gradient = residual.sum(axis=0)
        else:
            gradients[cell.readout] = gradients[cell.readout] + residual @ s
            received[t] = received[t] + residual[:, np.newaxis] * p[cell.readout]
            bias_gradient = residual.sum()
        if cell.readout_bias:
            gradients[cell.readout_bias] = gradients[cell.readout_bias] + bias_gradient
    if spec.reduction == "all":
        count = batch * steps if weights is None else weights.sum()
        if count == 0:   # torch's ignore_index gives 0/0 = NaN here; a mean over no step is no number
            raise ValueError("mask leaves no step to average over: give at least one 1")
        return total, count
    return total, batch


def _evaluate(d: CellDerivation, params: dict, x, y, numbers, mask=None) -> Values:
    cell = d.cell
    x = numbers.array(x)
    if x.ndim == 2:
        x = x[np.newaxis]
    batch, steps, _ = x.shape
    p = {name: numbers.array(params[name]) for name in d.parameters}
    hidden = p[cell.readout].shape[-1]
    zero = numbers.zeros((batch, hidden))
    history, states = _forward(d, p, x, numbers)
    gradients = {name: numbers.zeros(value.shape) for name, value in p.items()}
    # received[s][t]: what later steps (t + 1, and t + K for each lag K) and the readout at t have sent to s_t
    received = {state: [zero] * (steps + 1) for state in d.states}
    total_loss, divisor = _readout(d, p, states[d.output_state], y, mask, numbers, gradients,
                                   received[d.output_state])
    _backward(d, p, x, history, received, gradients, numbers)
    scale = divisor if d.batch_mean else 1
    return Values(
        loss=total_loss / divisor,
        gradients={name: value / scale for name, value in gradients.items()},
        forward={"states": states, "steps": history},
    )


def _backward(d: CellDerivation, p: dict, x, history: list, received: dict, gradients: dict, numbers,
              inputs: bool = False, on_step=None) -> tuple:
    """BPTT from t = n down: adds each step's terms to ``gradients`` (unscaled), what each step sends to
    ``received`` (state → [δ into s_0, …, s_n]); returns (what reaches the initial states, state → (B,
    H); ∂/∂x, (B, n, D), with ``inputs`` only, else None). ``on_step(t, resolve)`` sees every step's
    adjoints."""
    steps = x.shape[1]
    zero = numbers.zeros(received[d.output_state][0].shape)
    dx = [numbers.zeros(x[:, 0].shape) for _ in range(steps)]
    adjoint_functions = {}
    for adjoint in (*d.adjoints, *d.sent.values(), *d.sent_lagged.values()):
        arguments = sorted(adjoint.expr.free_symbols, key=str)
        adjoint_functions[adjoint.name] = (arguments, numbers.function(arguments, adjoint.expr))
    gradient_functions = {}
    for name, terms in d.gradients.items():
        for k, term in enumerate(terms):
            if term[0] == "sum":
                arguments = sorted(term[1].free_symbols, key=str)
                gradient_functions[(name, k)] = (arguments, numbers.function(arguments, term[1]))
            else:
                arguments = sorted(term[1].free_symbols, key=str)
                gradient_functions[(name, k)] = (arguments, numbers.function(arguments, term[1]))
    for t in range(steps - 1, -1, -1):
        known = dict(history[t])
        known |= {d.incoming[state]: received[state][t + 1] for state in d.states}

        resolve = known.__getitem__

        for adjoint in d.adjoints:
            arguments, function = adjoint_functions[adjoint.name]
            value = function(*(resolve(s) for s in arguments)) + zero
            for matrix, delta in adjoint.transposed:
                value = value + _transpose_apply(resolve(delta) + zero, p[matrix], d.transpose)
            known[adjoint.symbol] = value
        # gradients of this step
        for name, terms in d.gradients.items():
            for k, term in enumerate(terms):
                arguments, function = gradient_functions[(name, k)]
                value = function(*(resolve(s) for s in arguments)) + zero
                if term[0] == "sum":
                    gradients[name] = gradients[name] + value.sum(axis=0)
                else:
                    operand = term[2]
                    source = x[:, t] if operand == "x" else history[t][sp.Symbol(operand)]
                    gradients[name] = gradients[name] + value.T @ source
        for linear in d.linears:   # δx_t = Σ Mᵀ δ(M x)_t over the maps of x
            delta = d.symbols["linear_delta"][linear.symbol]
            if inputs and linear.operand == "x" and delta != 0:
                # the input's own map is transposed in every derivation, "untransposed" too (it mutates W_h)
                dx[t] = dx[t] + _transpose_apply(resolve(delta) + zero, p[linear.matrix], True)
        for state, lags in d.lags.items():
            for lag in lags:
                adjoint = d.sent_at(state, lag)
                arguments, function = adjoint_functions[adjoint.name]
                value = function(*(resolve(s) for s in arguments)) + zero
                for matrix, delta in adjoint.transposed:
                    value = value + _transpose_apply(resolve(delta) + zero, p[matrix], d.transpose)
                if t + 1 - lag < 0:
                    continue   # before s_0: a 0 with nothing behind it
                received[state][t + 1 - lag] = received[state][t + 1 - lag] + value
        if on_step is not None:
            on_step(t, resolve)
    initial = {state: received[state][0] + zero for state in d.states}
    return initial, np.stack(dx, axis=1) if inputs else None


def vjp(d: CellDerivation, params: dict, x, upstream: dict, initial: dict | None = None,
        digits: int | None = None) -> tuple:
    """The backward pass for any upstream gradient: (grads, dx, dinitial) with ``upstream`` state →
    (B, n, H) ∂L/∂s_t (zero where missing), ``initial`` state → (B, H) s_0 (zero when None); grads of
    the cell's parameters (not the readout), summed over the batch; dx (B, n, D); dinitial state → (B, H).
    The reference of the generated modules' vjp, in float64 (or mpmath at ``digits``)."""
    grads, dx, dinitial, _ = vjp_with_states(d, params, x, upstream, initial, digits)
    return grads, dx, dinitial


def vjp_with_states(d: CellDerivation, params: dict, x, upstream: dict, initial: dict | None = None,
                    digits: int | None = None) -> tuple:
    """``vjp``'s (grads, dx, dinitial) and the forward states (state → [s_0, …, s_n]): the one
    implementation behind ``vjp`` and grade's pairs (``engine/vjp.py``)."""
    if digits is None:
        return _vjp(d, params, x, upstream, initial, _Float64())
    import mpmath

    with mpmath.workdps(digits):
        return _vjp(d, params, x, upstream, initial, _Mpmath())


def _vjp(d: CellDerivation, params: dict, x, upstream: dict, initial, numbers) -> tuple:
    x = numbers.array(x)
    p = {name: numbers.array(params[name]) for name in d.parameters if name in params}
    hidden = next(np.shape(v)[-1] for v in upstream.values()) if upstream else p[d.cell.readout].shape[-1]
    p.setdefault(d.cell.readout, numbers.zeros(hidden))   # it only sets H: the readout is not in a vjp
    batch, steps, _ = x.shape
    zero = numbers.zeros((batch, hidden))
    history, states = _forward(d, p, x, numbers, initial)
    given = {state: numbers.array(value) for state, value in upstream.items() if state in d.states}
    received = {state: [zero] + [given[state][:, t] + zero if state in given else zero for t in range(steps)]
                for state in d.states}
    readout = {d.cell.readout, d.cell.readout_bias}
    gradients = {name: numbers.zeros(np.shape(value)) for name, value in p.items() if name not in readout}
    dinitial, dx = _backward(d, p, x, history, received, gradients, numbers, inputs=True)
    return gradients, dx, dinitial, states


def _transpose_apply(delta, matrix, transpose: bool):
    """Mᵀ δ per sequence (rows of δ): δ @ M; the mutation "untransposed" applies M instead: δ @ Mᵀ."""
    return delta @ matrix if transpose else delta @ matrix.T


__all__ = ["Values", "evaluate", "forward_values", "vjp", "vjp_with_states"]
