"""BPTT for the LSTM, derived by SymPy from the cell equations of one unit.

The model (gate order i, f, g, o as in ``torch.nn.LSTM``; hidden size H, input size D):

    a_·,t = W_· x_t + U_· h_{t−1} + b_·                      (· ∈ {i, f, g, o})
    i_t = σ(a_i,t),  f_t = σ(a_f,t),  g_t = tanh(a_g,t),  o_t = σ(a_o,t)
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t,   h_t = o_t ⊙ tanh(c_t),   h_0 = c_0 = 0
    ŷ = σ(w_yᵀ h_n),   L = −y log ŷ − (1 − y) log(1 − ŷ)   (mean over a batch)

Everything but the matrix products acts entry by entry, so the derivation works on one unit: SymPy
differentiates the cell equations (``sp.diff``) to get the local partials

    ∂c_t/∂c_{t−1} = f_t   (the direct cell path: the constant error carousel, kept separate)
    ∂c_t/∂i_t = g_t,  ∂c_t/∂f_t = c_{t−1},  ∂c_t/∂g_t = i_t,  ∂h_t/∂o_t = tanh(c_t),
    ∂h_t/∂c_t = o_t (1 − tanh²(c_t))

and the gate derivatives written with the gate's output (σ′ = s(1 − s), tanh′ = 1 − g², the entries
of ``activations.ACTIVATIONS``). The BPTT recursion is assembled from them (δ = ∂L/∂·, total):

    δh_n = (ŷ − y) w_y
    δc_t = δh_t ⊙ ∂h_t/∂c_t + δc_{t+1} ⊙ ∂c_{t+1}/∂c_t = δh_t ⊙ o_t ⊙ (1 − tanh² c_t) + δc_{t+1} ⊙ f_{t+1}
    δa_o,t = δh_t ⊙ tanh(c_t) ⊙ o_t(1 − o_t),   δa_i,t = δc_t ⊙ g_t ⊙ i_t(1 − i_t)
    δa_f,t = δc_t ⊙ c_{t−1} ⊙ f_t(1 − f_t),      δa_g,t = δc_t ⊙ i_t ⊙ (1 − g_t²)
    δh_{t−1} = Σ_· U_·ᵀ δa_·,t                   (δc_{n+1} = 0)
    ∂L/∂W_· = Σ_t δa_·,t x_tᵀ,  ∂L/∂U_· = Σ_t δa_·,t h_{t−1}ᵀ,  ∂L/∂b_· = Σ_t δa_·,t,  ∂L/∂w_y = (ŷ − y) h_n

``LSTMDerivation`` holds these as SymPy objects (scalar symbols for the unit, matrix symbols for
display) and evaluates them numerically at high precision (``evaluate``). Mapping onto
``torch.nn.LSTM``: weight_ih_l0 = [W_i; W_f; W_g; W_o] (4H × D), weight_hh_l0 = [U_i; U_f; U_g; U_o]
(4H × H), bias_ih_l0 + bias_hh_l0 = [b_i; b_f; b_g; b_o], and an output ``nn.Linear(H, 1, bias=False)``
whose weight is w_yᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import mpmath
import numpy as np
import sympy as sp

from .activations import ACTIVATIONS, sigmoid
from .model import Model

#: The gates in PyTorch's order (rows of weight_ih_l0 and weight_hh_l0).
GATES = ("i", "f", "g", "o")
#: The activation that makes each gate from its pre-activation: sigmoid gates, tanh candidate.
GATE_ACTIVATIONS = {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid"}
#: The activation of the cell state in h_t = o_t ⊙ tanh(c_t).
CELL_ACTIVATION = "tanh"
#: Parameter name → shape in terms of the hidden size H and the input size D, in the order used
#: everywhere (gradients, generated modules, reports).
PARAMETERS: dict[str, tuple[str, ...]] = {
    **{f"W_{gate}": ("H", "D") for gate in GATES},
    **{f"U_{gate}": ("H", "H") for gate in GATES},
    **{f"b_{gate}": ("H",) for gate in GATES},
    "w_y": ("H",),
}
#: Digits of the high-precision evaluation (``LSTMDerivation.evaluate``).
DIGITS = 60


def parameter_shapes(hidden: int, inputs: int) -> dict[str, tuple[int, ...]]:
    """Parameter name → shape for hidden size H and input size D (arrays also for H = 1)."""
    sizes = {"H": hidden, "D": inputs}
    return {name: tuple(sizes[s] for s in shape) for name, shape in PARAMETERS.items()}


@dataclass(frozen=True)
class Values:
    """The loss and the gradients of ``evaluate``: mpmath numbers in object arrays of the parameters'
    shapes, plus the forward states (t = 0..n, per sequence) for inspection."""

    loss: mpmath.mpf
    gradients: dict
    states: dict

    def as_float(self) -> tuple[float, dict]:
        return float(self.loss), {name: value.astype(float) for name, value in self.gradients.items()}


@dataclass(frozen=True)
class Formulas:
    """The BPTT recursion with SymPy matrix symbols (H × 1 vectors, H × D and H × H matrices), for display.

    Every Hadamard product here is converted from the unit's derived formula (``LSTMDerivation``),
    not typed separately: entry by entry they are the same expressions.
    """

    #: δh_n = (ŷ − y) w_y
    delta_h_n: sp.Expr
    #: δc_t, the sum of the path through h_t and the direct cell path
    delta_c: sp.Expr
    #: δh_t ⊙ o_t ⊙ (1 − tanh² c_t): the part of δc_t that comes through h_t
    delta_c_through_h: sp.Expr
    #: δc_{t+1} ⊙ f_{t+1}: the direct cell path (constant error carousel)
    delta_c_through_cell: sp.Expr
    #: ∂c_t/∂c_{t−1} = diag(f_t)
    cell_jacobian: sp.Expr
    #: gate → δa_·,t
    delta_a: dict
    #: δh_{t−1} = Σ_· U_·ᵀ δa_·,t
    delta_h_prev: sp.Expr
    #: parameter name → the summand at step t (∂L/∂W_· = Σ_t summand; w_y: the whole gradient)
    gradients: dict
    #: short name → matrix symbol
    symbols: dict
    #: matrix symbol (and ŷ) → LaTeX
    names: dict


class LSTMDerivation:
    """The LSTM's BPTT, derived per unit with ``sp.diff``; plain data, nothing printed.

    Unit symbols (one hidden unit at a generic step t; all scalar):
      ``a[gate]`` the pre-activations a_·,t, ``gate[gate]`` the gate values i_t, f_t, g_t, o_t,
      ``c``, ``c_prev``, ``h``, ``h_prev``, ``x`` (one input), ``W``/``U``/``b`` (gate → weight
      entry), ``w_y``, ``y``, ``y_hat``, ``z`` (the logit), and for the recursion ``delta_h``,
      ``delta_c``, ``delta_c_next``, ``f_next``, ``delta_a_symbol[gate]``.
    Derived (SymPy expressions in those symbols):
      ``preactivation[gate]``, ``gate_value[gate]`` (σ(a_i) …), ``gate_derivative[gate]`` (written with
      the gate's output), ``cell_state`` (c_t), ``hidden_state`` (h_t), ``cell_path`` (∂c_t/∂c_{t−1}),
      ``dc_dgate[gate]`` for i, f, g, ``dh_do``, ``dh_dc``, ``output_factor`` (∂L/∂z = ŷ − y),
      ``delta_h_n``, ``delta_c_formula``, ``delta_a[gate]``, ``delta_h_prev``, ``summands[name]``
      (the step-t term of each parameter's gradient, per entry), ``dL_dw_y``.
    """

    def __init__(self, model: Model | None = None, *, steps: int | None = None, hidden: int | None = None,
                 inputs: int | None = None):
        model = model or Model(cell="lstm")
        self.model = model
        self.n = steps if steps is not None else model.steps
        self.H = hidden if hidden is not None else model.hidden
        self.D = inputs if inputs is not None else model.inputs
        self.activation = {gate: ACTIVATIONS[name] for gate, name in GATE_ACTIVATIONS.items()}
        self.cell_activation = ACTIVATIONS[CELL_ACTIVATION]

        symbol = sp.Symbol
        # -- the unit's symbols ----------------------------------------------------------------------
        self.a = {gate: symbol(f"a_{gate}") for gate in GATES}
        self.gate = {gate: symbol(f"{gate}_t") for gate in GATES}
        self.c, self.c_prev = symbol("c_t"), symbol("c_prev")
        self.h, self.h_prev = symbol("h_t"), symbol("h_prev")
        self.x = symbol("x_t")
        self.W = {gate: symbol(f"W_{gate}") for gate in GATES}
        self.U = {gate: symbol(f"U_{gate}") for gate in GATES}
        self.b = {gate: symbol(f"b_{gate}") for gate in GATES}
        self.w_y = symbol("w_y")
        self.y, self.y_hat, self.z = symbol("y"), symbol("y_hat"), symbol("z")
        self.h_n = symbol("h_n")
        self.delta_h, self.delta_c = symbol("delta_h"), symbol("delta_c")
        self.delta_c_next, self.f_next = symbol("delta_c_next"), symbol("f_next")
        self.delta_a_symbol = {gate: symbol(f"delta_a_{gate}") for gate in GATES}

        # -- the cell equations of one unit ----------------------------------------------------------
        self.preactivation = {
            gate: self.W[gate] * self.x + self.U[gate] * self.h_prev + self.b[gate] for gate in GATES
        }
        self.gate_value = {gate: self.activation[gate].apply(self.a[gate]) for gate in GATES}
        i, f, g, o = (self.gate[gate] for gate in GATES)
        self.cell_state = f * self.c_prev + i * g
        self.hidden_state = o * self.cell_activation.apply(self.c)
        self.tanh_c = self.cell_activation.apply(self.c)

        # -- local derivatives, by sp.diff -------------------------------------------------------------
        self.gate_derivative = {gate: self._derivative_from_output(gate) for gate in GATES}
        self.cell_path = sp.diff(self.cell_state, self.c_prev)
        self.dc_dgate = {gate: sp.diff(self.cell_state, self.gate[gate]) for gate in ("i", "f", "g")}
        self.dh_do = sp.diff(self.hidden_state, o)
        self.dh_dc = sp.diff(self.hidden_state, self.c)

        # -- output and loss ---------------------------------------------------------------------------
        self.logit = self.w_y * self.h_n
        self.loss_of_logit = -self.y * sp.log(sigmoid(self.z)) - (1 - self.y) * sp.log(1 - sigmoid(self.z))
        self.output_factor = sp.expand(sp.diff(self.loss_of_logit, self.z).xreplace({sigmoid(self.z): self.y_hat}))
        self.delta_h_n = self.output_factor * sp.diff(self.logit, self.h_n)
        self.dL_dw_y = self.output_factor * sp.diff(self.logit, self.w_y)

        # -- the BPTT recursion, assembled from the local partials ------------------------------------
        # δc_t: through h_t, plus the direct cell path ∂c_{t+1}/∂c_t (f at step t + 1).
        self.delta_c_through_h = self.delta_h * self.dh_dc
        self.delta_c_through_cell = self.delta_c_next * self.cell_path.xreplace({f: self.f_next})
        self.delta_c_formula = self.delta_c_through_h + self.delta_c_through_cell
        upstream = {"i": self.delta_c * self.dc_dgate["i"], "f": self.delta_c * self.dc_dgate["f"],
                    "g": self.delta_c * self.dc_dgate["g"], "o": self.delta_h * self.dh_do}
        self.delta_a = {gate: upstream[gate] * self.gate_derivative[gate] for gate in GATES}
        self.delta_h_prev = sp.Add(
            *(sp.diff(self.preactivation[gate], self.h_prev) * self.delta_a_symbol[gate] for gate in GATES)
        )
        self.summands = {}
        for family, weights in (("W", self.W), ("U", self.U), ("b", self.b)):
            for gate in GATES:
                self.summands[f"{family}_{gate}"] = (
                    self.delta_a_symbol[gate] * sp.diff(self.preactivation[gate], weights[gate])
                )
        self.summands["w_y"] = self.dL_dw_y

    def _derivative_from_output(self, gate: str) -> sp.Expr:
        """σ′(a) or tanh′(a) by sp.diff, written with the gate's output; must match the table's entry."""
        activation = self.activation[gate]
        value = activation.apply(self.a[gate])
        derived = sp.diff(value, self.a[gate]).xreplace({value: self.gate[gate]})
        from_table = activation.derivative_from_output(self.gate[gate])
        assert sp.expand(derived - from_table) == 0, (gate, derived, from_table)
        return from_table

    # -- sizes and names ---------------------------------------------------------------------------------

    @property
    def parameters(self) -> dict[str, tuple[int, ...]]:
        """Parameter name → shape for this derivation's H and D."""
        return parameter_shapes(self.H, self.D)

    def parameter_symbols(self) -> dict[str, sp.Matrix]:
        """Parameter name → explicit matrix of scalar symbols (``W_i_1_2``, ``b_f_1``, ``w_y_2`` …);
        vectors are H × 1 columns. For proofs and small-size evaluation."""
        symbols = {}
        for name, shape in self.parameters.items():
            rows, columns = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], 1)
            if columns == 1 and len(shape) == 1:
                symbols[name] = sp.Matrix(rows, 1, lambda r, _c, name=name: sp.Symbol(f"{name}_{r + 1}"))
            else:
                symbols[name] = sp.Matrix(
                    rows, columns, lambda r, c, name=name: sp.Symbol(f"{name}_{r + 1}_{c + 1}")
                )
        return symbols

    def input_symbols(self, steps: int | None = None) -> list[sp.Matrix]:
        """x_t for t = 1..n as D × 1 columns of symbols ``x_t_d``."""
        steps = self.n if steps is None else steps
        return [sp.Matrix(self.D, 1, lambda d, _c, t=t: sp.Symbol(f"x_{t}_{d + 1}")) for t in range(1, steps + 1)]

    @property
    def unit_symbols(self) -> dict[str, sp.Symbol]:
        """Short name → unit symbol, for printers that rename them."""
        names = {
            "c_t": self.c, "c_prev": self.c_prev, "h_t": self.h, "h_prev": self.h_prev, "x_t": self.x,
            "w_y": self.w_y, "y": self.y, "y_hat": self.y_hat, "z": self.z, "h_n": self.h_n,
            "delta_h": self.delta_h, "delta_c": self.delta_c, "delta_c_next": self.delta_c_next,
            "f_next": self.f_next,
        }
        for gate in GATES:
            names |= {
                f"a_{gate}": self.a[gate], f"{gate}_t": self.gate[gate], f"W_{gate}": self.W[gate],
                f"U_{gate}": self.U[gate], f"b_{gate}": self.b[gate], f"delta_a_{gate}": self.delta_a_symbol[gate],
            }
        return names

    # -- display ------------------------------------------------------------------------------------------

    @cached_property
    def formulas(self) -> Formulas:
        """The recursion with matrix symbols of this derivation's H and D (nothing explicit is built)."""
        H, D = self.H, self.D
        vector = {
            "h_t": r"\mathbf{h}_{t}", "h_prev": r"\mathbf{h}_{t-1}", "h_n": r"\mathbf{h}_{n}",
            "c_t": r"\mathbf{c}_{t}", "c_prev": r"\mathbf{c}_{t-1}", "w_y": r"\mathbf{w}_{y}",
            "f_next": r"\mathbf{f}_{t+1}", "tanh_c_t": r"\tanh\left(\mathbf{c}_{t}\right)",
            "delta_h": r"\boldsymbol{\delta}\mathbf{h}_{t}", "delta_h_n": r"\boldsymbol{\delta}\mathbf{h}_{n}",
            "delta_h_prev": r"\boldsymbol{\delta}\mathbf{h}_{t-1}",
            "delta_c": r"\boldsymbol{\delta}\mathbf{c}_{t}", "delta_c_next": r"\boldsymbol{\delta}\mathbf{c}_{t+1}",
        }
        for gate in GATES:
            vector[f"{gate}_t"] = rf"\mathbf{{{gate}}}_{{t}}"
            vector[f"b_{gate}"] = rf"\mathbf{{b}}_{{{gate}}}"
            vector[f"delta_a_{gate}"] = rf"\boldsymbol{{\delta}}\mathbf{{a}}_{{{gate},t}}"
        s = {name: sp.MatrixSymbol(name, H, 1) for name in vector}
        s["x_t"] = sp.MatrixSymbol("x_t", D, 1)
        names = {s[name]: tex for name, tex in vector.items()} | {s["x_t"]: r"\mathbf{x}_{t}"}
        for gate in GATES:
            s[f"W_{gate}"] = sp.MatrixSymbol(f"W_{gate}", H, D)
            s[f"U_{gate}"] = sp.MatrixSymbol(f"U_{gate}", H, H)
            names[s[f"W_{gate}"]] = f"W_{{{gate}}}"
            names[s[f"U_{gate}"]] = f"U_{{{gate}}}"
        names[self.y_hat] = r"\hat{y}"
        mapping = {self.unit_symbols[name]: s[name] for name in vector if name in self.unit_symbols}
        mapping[self.tanh_c] = s["tanh_c_t"]
        ones = sp.OneMatrix(H, 1)

        def elementwise(expr):
            return _hadamard(sp.sympify(expr), mapping, ones)

        residual = self.output_factor
        gradients = {}
        for gate in GATES:
            delta = s[f"delta_a_{gate}"]
            gradients[f"W_{gate}"] = delta * s["x_t"].T
            gradients[f"U_{gate}"] = delta * s["h_prev"].T
            gradients[f"b_{gate}"] = delta
        gradients["w_y"] = residual * s["h_n"]
        return Formulas(
            delta_h_n=residual * s["w_y"],
            delta_c=elementwise(self.delta_c_formula),
            delta_c_through_h=elementwise(self.delta_c_through_h),
            delta_c_through_cell=elementwise(self.delta_c_through_cell),
            cell_jacobian=sp.DiagMatrix(s["f_t"]),
            delta_a={gate: elementwise(self.delta_a[gate]) for gate in GATES},
            delta_h_prev=sp.MatAdd(*(s[f"U_{gate}"].T * s[f"delta_a_{gate}"] for gate in GATES)),
            gradients=gradients,
            symbols=s,
            names=names,
        )

    # -- numerical evaluation of the formulas ------------------------------------------------------------

    @cached_property
    def _functions(self) -> dict:
        """The unit formulas as mpmath functions."""
        modules = [{"sigmoid": lambda z: 1 / (1 + mpmath.exp(-z)), "tanh": mpmath.tanh}, "mpmath"]

        def function(arguments, expr):
            return sp.lambdify(arguments, expr, modules=modules)

        i, f, g, o = (self.gate[gate] for gate in GATES)
        upstream = (self.delta_h, self.delta_c, i, f, g, o, self.c, self.c_prev)
        return {
            "gate": {gate: function((self.a[gate],), self.gate_value[gate]) for gate in GATES},
            "cell": function((i, f, g, self.c_prev), self.cell_state),
            "hidden": function((o, self.c), self.hidden_state),
            "delta_c": function(
                (self.delta_h, self.delta_c_next, self.f_next, o, self.c), self.delta_c_formula
            ),
            "delta_a": {gate: function(upstream, self.delta_a[gate]) for gate in GATES},
            "output_factor": function((self.y_hat, self.y), self.output_factor),
            "loss": function((self.z, self.y), self.loss_of_logit),
        }

    def evaluate(self, parameters: dict, x, y, digits: int = DIGITS) -> Values:
        """The mean loss and every gradient from the BPTT formulas, with mpmath at ``digits`` digits.

        ``parameters``: name → array-like of the shapes in ``self.parameters`` (floats, ints,
        ``fractions.Fraction`` or SymPy rationals, converted exactly); ``x``: (B, n, D) or (n, D);
        ``y``: (B,) or a number. The sequence length is x's (any n, not only ``self.n``).
        """
        with mpmath.workdps(digits):
            return self._evaluate(parameters, x, y)

    def _evaluate(self, parameters, x, y) -> Values:
        H, D = self.H, self.D
        fn = self._functions
        p = {}
        for name, shape in self.parameters.items():
            if name not in parameters:
                raise KeyError(f"missing parameter {name!r}")
            value = np.asarray(parameters[name], dtype=object)
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
            p[name] = np.vectorize(_mp, otypes=[object])(value) if value.size else value
        x = np.asarray(x, dtype=object)
        if x.ndim == 2:
            x = x[np.newaxis]
        if x.ndim != 3 or x.shape[2] != D:
            raise ValueError(f"x must have shape (B, n, {D}) or (n, {D}), got {x.shape}")
        x = np.vectorize(_mp, otypes=[object])(x)
        y = np.vectorize(_mp, otypes=[object])(np.atleast_1d(np.asarray(y, dtype=object)))
        batch, steps, _ = x.shape
        gradients = {name: np.full(shape, mpmath.mpf(0), dtype=object) for name, shape in self.parameters.items()}
        total_loss = mpmath.mpf(0)
        zero = np.full(H, mpmath.mpf(0), dtype=object)
        all_states = []
        for sequence in range(batch):
            # forward: the unit formulas per entry, the matrix products as sums
            h, c = [zero], [zero]
            gate_values = {gate: [None] for gate in GATES}
            for t in range(1, steps + 1):
                for gate in GATES:
                    a = p[f"W_{gate}"].dot(x[sequence, t - 1]) + p[f"U_{gate}"].dot(h[t - 1]) + p[f"b_{gate}"]
                    gate_values[gate].append(np.array([fn["gate"][gate](v) for v in a], dtype=object))
                i, f, g, o = (gate_values[gate][t] for gate in GATES)
                c.append(np.array([fn["cell"](*args) for args in zip(i, f, g, c[t - 1])], dtype=object))
                h.append(np.array([fn["hidden"](*args) for args in zip(o, c[t])], dtype=object))
            z = p["w_y"].dot(h[steps])
            total_loss += fn["loss"](z, y[sequence])
            residual = fn["output_factor"](sigmoid_mp(z), y[sequence])
            gradients["w_y"] += residual * h[steps]
            # backward: δh_n, then δc_t, δa_·,t, δh_(t−1) from t = n down
            delta_h = residual * p["w_y"]
            delta_c_next, f_next = zero, zero
            for t in range(steps, 0, -1):
                i, f, g, o = (gate_values[gate][t] for gate in GATES)
                delta_c = np.array(
                    [fn["delta_c"](*args) for args in zip(delta_h, delta_c_next, f_next, o, c[t])], dtype=object
                )
                delta_a = {}
                for gate in GATES:
                    delta_a[gate] = np.array(
                        [fn["delta_a"][gate](*args) for args in zip(delta_h, delta_c, i, f, g, o, c[t], c[t - 1])],
                        dtype=object,
                    )
                    gradients[f"W_{gate}"] += np.outer(delta_a[gate], x[sequence, t - 1])
                    gradients[f"U_{gate}"] += np.outer(delta_a[gate], h[t - 1])
                    gradients[f"b_{gate}"] += delta_a[gate]
                delta_h = sum((p[f"U_{gate}"].T.dot(delta_a[gate]) for gate in GATES), zero)
                delta_c_next, f_next = delta_c, f
            all_states.append({"h": h, "c": c, **{gate: gate_values[gate] for gate in GATES}})
        return Values(
            loss=total_loss / batch,
            gradients={name: value / batch for name, value in gradients.items()},
            states={"sequences": all_states},
        )


def sigmoid_mp(z):
    return 1 / (1 + mpmath.exp(-z))


def _mp(value):
    """An exact conversion to mpmath: floats and ints as they are, rationals as p/q."""
    if hasattr(value, "numerator") and hasattr(value, "denominator") and not isinstance(value, float):
        return mpmath.mpf(int(value.numerator)) / int(value.denominator)
    if isinstance(value, sp.Rational):
        return mpmath.mpf(int(value.p)) / int(value.q)
    if isinstance(value, sp.Basic):
        return mpmath.mpf(sp.Float(value, mpmath.mp.dps + 5))
    return mpmath.mpf(value)


def _hadamard(expr: sp.Expr, mapping: dict, ones: sp.MatrixExpr):
    """A unit formula as a vector formula: symbols → vectors, products → ⊙, powers → ⊙-powers, and a
    number added to a vector → that number times the vector of ones. Numbers multiplying stay scalars."""
    if expr in mapping:
        return mapping[expr]
    if expr.is_Number:
        return expr * ones
    if expr.is_Mul:
        scalars = [factor for factor in expr.args if factor.is_Number]
        vectors = [_hadamard(factor, mapping, ones) for factor in expr.args if not factor.is_Number]
        product = vectors[0] if len(vectors) == 1 else sp.HadamardProduct(*vectors)
        return sp.Mul(*scalars) * product if scalars else product
    if expr.is_Add:
        return sp.MatAdd(*(_hadamard(term, mapping, ones) for term in expr.args))
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 0:
        return sp.HadamardPower(_hadamard(expr.base, mapping, ones), expr.exp)
    raise NotImplementedError(f"no vector form for {expr}")


__all__ = [
    "CELL_ACTIVATION",
    "DIGITS",
    "GATES",
    "GATE_ACTIVATIONS",
    "PARAMETERS",
    "Formulas",
    "LSTMDerivation",
    "Values",
    "parameter_shapes",
]
