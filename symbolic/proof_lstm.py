"""Proof that the LSTM's BPTT recursion (``derive_lstm.LSTMDerivation``) is the gradient of the loss.

The oracle here is independent of the derivation: the LSTM unrolled for n steps as one nested SymPy
expression of its parameters,

    a_·,t = W_· x_t + U_· h_{t−1} + b_·,  i, f, o = 1/(1 + e^{−a}),  g = tanh(a),
    c_t = f_t c_{t−1} + i_t g_t,  h_t = o_t tanh(c_t),  h_0 = c_0 = 0,  z = w_yᵀ h_n,
    L = log(1 + e^{−z}) + (1 − y) z   (= −y log ŷ − (1 − y) log(1 − ŷ), ŷ = σ(z)),

differentiated by ``sp.diff`` with respect to every parameter entry. Against it, the derivation's
formulas (its unit formulas for δc_t and δa_·,t, its matrix formulas for δh_n, δh_{t−1} = Σ U_·ᵀ δa_·,t
and the gradient summands) are run backwards through time by :func:`recursion`. Three checks:

1. ``local``: the derivation's gate derivatives (σ′ = s(1 − s), tanh′ = 1 − g², written with the
   outputs) and its cell path ∂c_t/∂c_{t−1} = f_t are sp.diff of the closed forms.
2. ``exact``: for H = 1 and n ≤ 3. After sp.diff, every e^{−a} is written with its gate value
   s = 1/(1 + e^{−a}) and every tanh with a symbol of its own, so both sides are Laurent polynomials
   in the gate values, tanh values, weights and inputs; for n ≤ ``SYMBOLIC_STEPS`` their difference
   expands to 0 (a proof), for larger n it is 0 in exact rational arithmetic at random rational
   values of all of those symbols.
3. ``numeric``: for any size that evaluates in seconds (e.g. H = 2, D = 2, n = 4), at 60 digits at
   random rational points, against mpmath's own derivative of an mpmath forward pass; both this
   module's run of the formulas and ``LSTMDerivation.evaluate`` must agree.

``drop_carousel=True`` is the negative control: the recursion without the direct cell path
δc_{t+1} ⊙ f_{t+1} in δc_t. Every check that sees more than one step must reject it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import sympy as sp

from .derive_lstm import GATE_ACTIVATIONS, GATES, LSTMDerivation
from .errors import UsageError
from .proof import Check

DIGITS = 60
POINTS = 3
#: The exact identity is checked for H = 1 and n up to this (the nested loss grows ~5× per step).
EXACT_STEPS = 3
#: Up to this n the exact difference is expanded symbolically; above it, evaluated at random rationals.
SYMBOLIC_STEPS = 2
#: Random rational points of the exact check where it is not symbolic.
EXACT_POINTS = 3
#: The 60-digit check runs while points · P · n · 4H(H + D) stays below this (about 10 s):
#: mpmath differentiates the unrolled loss along each of the P parameters.
NUMERIC_WORK_LIMIT = 150_000


# -- the independent oracle: the unrolled loss, differentiated by sp.diff -------------------------------


class _Tanh(sp.Function):
    """tanh with the textbook derivative 1 − tanh² (checked against SymPy's tanh in ``local``).

    A plain Function without SymPy's assumption handlers: asking is_zero of tanh(nested) makes
    SymPy's own tanh walk the whole nest, which costs more than the differentiation."""

    def fdiff(self, argindex=1):
        return 1 - self**2


class _Exp(sp.Function):
    """exp with d/da e^a = e^a (checked against SymPy's exp in ``local``)."""

    def fdiff(self, argindex=1):
        return self


@dataclass
class Unrolled:
    """The LSTM unrolled over n steps with symbols, and the same forward pass in atoms.

    ``loss`` is the nested expression (parameters and inputs only). ``atoms`` maps each e^{−a} and
    tanh(·) of the nest to its gate value s or tanh symbol, so that a derivative of the nest can be
    written in them; ``states`` holds per step the gate values, c_t, tanh(c_t) and h_t in those
    atoms; ``y_hat`` is ŷ's atom.
    """

    hidden: int
    inputs: int
    steps: int
    parameters: dict  # name → sp.Matrix of symbols (vectors as H × 1 columns)
    x: list  # t → sp.Matrix (D × 1) of symbols
    y: sp.Symbol
    loss: sp.Expr
    atoms: dict
    states: list  # t = 1..n → {"gates": {gate: [H]}, "c": [H], "tanh_c": [H], "h": [H]}
    y_hat: sp.Symbol
    gate_atoms: list = field(default_factory=list)  # the s symbols (values in (0, 1))
    tanh_atoms: list = field(default_factory=list)  # the tanh symbols (values in (−1, 1))

    def entries(self):
        """(name, index, symbol) for every parameter entry, in the derivation's order."""
        for name, matrix in self.parameters.items():
            for index in range(len(matrix)):
                yield name, index, matrix[index]


def unroll(derivation: LSTMDerivation, steps: int | None = None, hidden: int | None = None) -> Unrolled:
    """The nested loss of an LSTM with the derivation's parameter names (and optionally another size)."""
    H = derivation.H if hidden is None else hidden
    D = derivation.D
    n = derivation.n if steps is None else steps
    parameters = {}
    for name in derivation.parameters:
        rows, columns = (H, D) if name.startswith("W_") else (H, H) if name.startswith("U_") else (H, 1)
        if columns == 1:
            parameters[name] = sp.Matrix(rows, 1, lambda r, _c, name=name: sp.Symbol(f"{name}_{r + 1}"))
        else:
            parameters[name] = sp.Matrix(rows, columns, lambda r, c, name=name: sp.Symbol(f"{name}_{r + 1}_{c + 1}"))
    x = [sp.Matrix(D, 1, lambda d, _c, t=t: sp.Symbol(f"x_{t}_{d + 1}")) for t in range(1, n + 1)]
    y = sp.Symbol("y")
    atoms, states, gate_atoms, tanh_atoms = {}, [], [], []
    h, c = [sp.S.Zero] * H, [sp.S.Zero] * H  # the nest
    h_atoms, c_atoms = [sp.S.Zero] * H, [sp.S.Zero] * H  # the same values in atoms
    for t in range(1, n + 1):
        nest, value = {}, {}
        for gate in GATES:
            W, U, b = parameters[f"W_{gate}"], parameters[f"U_{gate}"], parameters[f"b_{gate}"]
            nest[gate], value[gate] = [], []
            for r in range(H):
                a = sp.Add(*(W[r, d] * x[t - 1][d] for d in range(D)), *(U[r, k] * h[k] for k in range(H)), b[r])
                if GATE_ACTIVATIONS[gate] == "tanh":
                    node = _Tanh(a)
                    symbol = sp.Symbol(f"{gate}_{t}_{r + 1}")
                    atoms[node] = symbol
                    tanh_atoms.append(symbol)
                    nest[gate].append(node)
                else:
                    exponential = _Exp(-a)
                    symbol = sp.Symbol(f"{gate}_{t}_{r + 1}")  # s = 1/(1 + e^{−a})
                    # 1 + e^{−a} = 1/s and e^{−a} = (1 − s)/s; the first is matched as a whole node.
                    atoms[1 + exponential] = 1 / symbol
                    atoms[exponential] = (1 - symbol) / symbol
                    gate_atoms.append(symbol)
                    nest[gate].append(1 / (1 + exponential))
                value[gate].append(symbol)
        c = [nest["f"][r] * c[r] + nest["i"][r] * nest["g"][r] for r in range(H)]
        c_atoms = [value["f"][r] * c_atoms[r] + value["i"][r] * value["g"][r] for r in range(H)]
        tanh_c = [_Tanh(entry) for entry in c]
        tanh_c_atoms = [sp.Symbol(f"tanh_c_{t}_{r + 1}") for r in range(H)]
        atoms.update(zip(tanh_c, tanh_c_atoms))
        tanh_atoms += tanh_c_atoms
        h = [nest["o"][r] * tanh_c[r] for r in range(H)]
        h_atoms = [value["o"][r] * tanh_c_atoms[r] for r in range(H)]
        states.append({"gates": value, "c": c_atoms, "tanh_c": tanh_c_atoms, "h": h_atoms})
    z = sp.Add(*(parameters["w_y"][r] * h[r] for r in range(H)))
    exponential = _Exp(-z)
    y_hat = sp.Symbol("yhat")
    atoms[1 + exponential] = 1 / y_hat
    atoms[exponential] = (1 - y_hat) / y_hat
    gate_atoms.append(y_hat)
    # −log σ(z) = log(1 + e^{−z}) and −log(1 − σ(z)) = z + log(1 + e^{−z}), so
    # L = y log(1 + e^{−z}) + (1 − y)(z + log(1 + e^{−z})) = log(1 + e^{−z}) + (1 − y) z: the nest
    # appears twice instead of three times, which makes sp.diff a third faster.
    loss = sp.log(1 + exponential) + (1 - y) * z
    return Unrolled(H, D, n, parameters, x, y, loss, atoms, states, y_hat, gate_atoms, tanh_atoms)


def oracle_gradient(unrolled: Unrolled, symbol: sp.Symbol) -> sp.Expr:
    """sp.diff of the nested loss, then written in the atoms (no e^{·}, tanh or log left)."""
    derivative = sp.diff(unrolled.loss, symbol).xreplace(unrolled.atoms)
    left = derivative.atoms(sp.Function)
    if left:  # an exponential in a form the atom table does not know: a bug here, not a disproof
        raise AssertionError(f"functions left after writing the derivative in atoms: {sorted(map(str, left))[:3]}")
    return derivative


# -- the derivation's recursion, run backwards through time ---------------------------------------------


def recursion(derivation: LSTMDerivation, states: list, parameters: dict, x: list, y, y_hat,
              drop_carousel: bool = False) -> dict:
    """Every gradient from the derivation's formulas, for given forward values (any SymPy values:
    symbols for the exact check, 60-digit Floats for the numeric one).

    ``states[t−1]`` holds the gate values, c_t, tanh(c_t) and h_t of step t (lists of H). δc_t and
    δa_·,t come from the unit formulas entry by entry; δh_n, δh_{t−1} = Σ U_·ᵀ δa_·,t and the gradient
    summands from the matrix formulas with explicit matrices substituted. ``drop_carousel`` removes
    the direct cell path δc_{t+1} ⊙ f_{t+1} from δc_t (the negative control).
    """
    d, formulas = derivation, derivation.formulas
    symbols = formulas.symbols
    H, n = len(states[0]["c"]), len(states)
    zero = [sp.S.Zero] * H
    column = sp.ImmutableMatrix
    delta_c_formula = d.delta_c_formula
    if drop_carousel:
        assert sp.expand(delta_c_formula - d.delta_c_through_cell - d.delta_c_through_h) == 0
        delta_c_formula = delta_c_formula.xreplace({d.delta_c_next: 0})
    explicit = {symbols[name]: column(value) for name, value in parameters.items() if name in symbols}

    def matrix(expr, values):
        return sp.ImmutableMatrix(expr.xreplace({**explicit, **values}).doit())

    gradients = {name: sp.zeros(*value.shape) for name, value in parameters.items()}
    gradients["w_y"] = matrix(formulas.gradients["w_y"], {symbols["h_n"]: column(states[-1]["h"]),
                                                          d.y_hat: y_hat, d.y: y})
    delta_h = list(matrix(formulas.delta_h_n, {d.y_hat: y_hat, d.y: y}))
    delta_c_next, f_next = zero, zero
    for t in range(n, 0, -1):
        state = states[t - 1]
        c_prev = states[t - 2]["c"] if t > 1 else zero
        h_prev = states[t - 2]["h"] if t > 1 else zero
        gates = state["gates"]
        delta_c = []
        for r in range(H):
            unit = {d.gate[gate]: gates[gate][r] for gate in GATES}
            unit.update({d.tanh_c: state["tanh_c"][r], d.c: state["c"][r], d.c_prev: c_prev[r],
                         d.delta_h: delta_h[r], d.delta_c_next: delta_c_next[r], d.f_next: f_next[r]})
            delta_c.append(delta_c_formula.xreplace(unit))
        delta_a = {}
        for gate in GATES:
            delta_a[gate] = []
            for r in range(H):
                unit = {d.gate[g]: gates[g][r] for g in GATES}
                unit.update({d.tanh_c: state["tanh_c"][r], d.c: state["c"][r], d.c_prev: c_prev[r],
                             d.delta_h: delta_h[r], d.delta_c: delta_c[r]})
                delta_a[gate].append(d.delta_a[gate].xreplace(unit))
        values = {symbols["x_t"]: column(x[t - 1]), symbols["h_prev"]: column(h_prev)}
        values.update({symbols[f"delta_a_{gate}"]: column(delta_a[gate]) for gate in GATES})
        for name, summand in formulas.gradients.items():
            if name != "w_y":
                gradients[name] = gradients[name] + matrix(summand, values).reshape(*gradients[name].shape)
        delta_h = list(matrix(formulas.delta_h_prev, values))
        delta_c_next, f_next = delta_c, gates["f"]
    return gradients


# -- 1. the local derivatives ------------------------------------------------------------------------------


def local(derivation: LSTMDerivation) -> Check:
    """Gate derivatives and the cell path against sp.diff of the closed forms; the oracle's own
    derivative rules against SymPy's exp and tanh."""
    d, a = derivation, sp.Symbol("a")
    closed = {"sigmoid": 1 / (1 + sp.exp(-a)), "tanh": sp.tanh(a)}
    failures = []
    for gate in GATES:
        form = closed[GATE_ACTIVATIONS[gate]]
        written = d.gate_derivative[gate].xreplace({d.gate[gate]: form})
        if sp.simplify((written - sp.diff(form, a)).rewrite(sp.exp)) != 0:
            failures.append(f"{gate}′")
    if sp.expand(d.cell_path - d.gate["f"]) != 0:
        failures.append("∂c_t/∂c_(t-1)")
    if sp.simplify(d.dh_dc.xreplace({d.tanh_c: sp.tanh(d.c)}) - sp.diff(d.gate["o"] * sp.tanh(d.c), d.c)) != 0:
        failures.append("∂h_t/∂c_t")
    if sp.diff(_Tanh(a), a) - sp.diff(sp.tanh(a), a).xreplace({sp.tanh(a): _Tanh(a)}) != 0 or \
            sp.diff(_Exp(a), a).xreplace({_Exp(a): sp.exp(a)}) != sp.diff(sp.exp(a), a):
        failures.append("the oracle's tanh′ or exp′")
    return Check(
        "local", "local derivatives",
        not failures,
        "σ′ = s(1 − s), tanh′ = 1 − g², ∂c_t/∂c_(t-1) = f_t and ∂h_t/∂c_t = o_t(1 − tanh² c_t) "
        "are the derivatives of the closed forms" if not failures else f"disagree: {', '.join(failures)}",
    )


# -- 2. the exact identity for H = 1, n ≤ 3 ----------------------------------------------------------------


def _random_rational(rng: random.Random, low: float, high: float) -> sp.Rational:
    return sp.Rational(rng.randint(int(low * 1000), int(high * 1000)), 1000)


def exact(derivation: LSTMDerivation, drop_carousel: bool = False, seed: int = 0) -> Check:
    """The recursion minus sp.diff of the nested loss is 0, for H = 1 and n = min(n, 3)."""
    steps = min(derivation.n, EXACT_STEPS)
    size = f"H = 1, D = {derivation.D}, n = {steps}"
    note = ""
    if derivation.H > 1 or derivation.n > EXACT_STEPS:
        note = (
            f" (the nest is differentiated symbolically up to H = 1, n = {EXACT_STEPS}; "
            "the given size is covered by the 60-digit evaluation)"
        )
    started = time.perf_counter()
    unrolled = unroll(derivation, steps=steps, hidden=1)
    ours = recursion(derivation, unrolled.states, unrolled.parameters, unrolled.x, unrolled.y,
                     unrolled.y_hat, drop_carousel)
    symbolic = steps <= SYMBOLIC_STEPS
    rng = random.Random(seed)
    points = []
    if not symbolic:
        for _ in range(EXACT_POINTS):
            point = {s: _random_rational(rng, 0.05, 0.95) for s in unrolled.gate_atoms}
            point.update({s: _random_rational(rng, -0.95, 0.95) for s in unrolled.tanh_atoms})
            for _, _, symbol in unrolled.entries():
                point[symbol] = _random_rational(rng, -1, 1)
            for column in unrolled.x:
                point.update({s: _random_rational(rng, -1, 1) for s in column})
            point[unrolled.y] = sp.Integer(rng.randint(0, 1))
            points.append(point)
    failures, count = [], 0
    for name, index, symbol in unrolled.entries():
        count += 1
        difference = oracle_gradient(unrolled, symbol) - ours[name][index]
        if symbolic:
            held = sp.expand(difference) == 0
        else:
            held = all(difference.xreplace(point) == 0 for point in points)
        if not held:
            failures.append(str(symbol))
    elapsed = time.perf_counter() - started
    how = ("expands to 0 with every gate value, tanh, weight and input a symbol" if symbolic else
           f"is 0 in exact rational arithmetic at {EXACT_POINTS} random rational points of the gate values, "
           "tanh values, weights and inputs")
    return Check(
        "exact", f"exact identity ({size})",
        not failures,
        (f"recursion − sp.diff(unrolled L) {how}, for all {count} parameter entries ({elapsed:.1f} s){note}"
         if not failures else f"does not vanish for {', '.join(failures)}"),
    )


# -- 3. 60 digits at random rational points ------------------------------------------------------------------


def numeric_work(derivation: LSTMDerivation, points: int = POINTS) -> int:
    H, D, n = derivation.H, derivation.D, derivation.n
    parameters = 4 * (H * D + H * H + H) + H
    return points * parameters * n * 4 * H * (H + D)


def check_lstm_size(derivation: LSTMDerivation) -> None:
    """Refuse --verify for sizes whose 60-digit evaluation would take minutes or more."""
    work = numeric_work(derivation)
    if work > NUMERIC_WORK_LIMIT:
        raise UsageError(
            f"n = {derivation.n}, H = {derivation.H}, D = {derivation.D} is too large to verify at {DIGITS} "
            f"digits (work {work} > {NUMERIC_WORK_LIMIT}): the LSTM formulas do not depend on the size, "
            "verify a smaller one, e.g. --cell lstm --hidden 2 --inputs 2 --steps 4"
        )


def _mp(value) -> mpmath.mpf:
    value = Fraction(value)
    return mpmath.mpf(value.numerator) / value.denominator


def mp_loss(parameters: dict, x: list, y, H: int, D: int):
    """The LSTM's loss in plain mpmath, written from the model (the oracle of the numeric check)."""
    h, c = [mpmath.mpf(0)] * H, [mpmath.mpf(0)] * H
    for x_t in x:
        gates = {}
        for gate in GATES:
            W, U, b = parameters[f"W_{gate}"], parameters[f"U_{gate}"], parameters[f"b_{gate}"]
            a = [sum(W[r][d] * x_t[d] for d in range(D)) + sum(U[r][k] * h[k] for k in range(H)) + b[r]
                 for r in range(H)]
            gates[gate] = [mpmath.tanh(v) if gate == "g" else 1 / (1 + mpmath.exp(-v)) for v in a]
        c = [gates["f"][r] * c[r] + gates["i"][r] * gates["g"][r] for r in range(H)]
        h = [gates["o"][r] * mpmath.tanh(c[r]) for r in range(H)]
    z = sum(w * v for w, v in zip(parameters["w_y"], h))
    return y * mpmath.log1p(mpmath.exp(-z)) + (1 - y) * mpmath.log1p(mpmath.exp(z))


def _nested(derivation: LSTMDerivation, flat: list) -> dict:
    """A flat list of entries (the derivation's order) → name → nested lists (rows of matrices)."""
    H, D = derivation.H, derivation.D
    out, at = {}, 0
    for name, shape in derivation.parameters.items():
        size = 1
        for s in shape:
            size *= s
        entries = flat[at: at + size]
        at += size
        columns = shape[1] if len(shape) == 2 else None
        out[name] = [entries[r * columns: (r + 1) * columns] for r in range(shape[0])] if columns else entries
    assert at == len(flat) and H and D
    return out


def _forward_floats(derivation: LSTMDerivation, parameters: dict, x: list, precision: int) -> tuple[list, sp.Float]:
    """The forward states as SymPy Floats of ``precision`` digits, for :func:`recursion`."""
    H, D = derivation.H, derivation.D

    def to_float(value):
        return sp.Float(value, precision)

    h, c, states = [mpmath.mpf(0)] * H, [mpmath.mpf(0)] * H, []
    for x_t in x:
        gates = {}
        for gate in GATES:
            W, U, b = parameters[f"W_{gate}"], parameters[f"U_{gate}"], parameters[f"b_{gate}"]
            a = [sum(W[r][d] * x_t[d] for d in range(D)) + sum(U[r][k] * h[k] for k in range(H)) + b[r]
                 for r in range(H)]
            gates[gate] = [mpmath.tanh(v) if gate == "g" else 1 / (1 + mpmath.exp(-v)) for v in a]
        c = [gates["f"][r] * c[r] + gates["i"][r] * gates["g"][r] for r in range(H)]
        tanh_c = [mpmath.tanh(v) for v in c]
        h = [gates["o"][r] * tanh_c[r] for r in range(H)]
        states.append({"gates": {gate: [to_float(v) for v in values] for gate, values in gates.items()},
                       "c": [to_float(v) for v in c], "tanh_c": [to_float(v) for v in tanh_c],
                       "h": [to_float(v) for v in h]})
    z = sum(w * v for w, v in zip(parameters["w_y"], h))
    return states, to_float(1 / (1 + mpmath.exp(-z)))


def _relative(ours: list, reference: list):
    scale = max(abs(v) for v in reference) or mpmath.mpf(1)
    return max(abs(a - b) for a, b in zip(ours, reference)) / scale


def numeric(derivation: LSTMDerivation, drop_carousel: bool = False, points: int = POINTS, seed: int = 0) -> Check:
    """The recursion at 60 digits at random rational points against mpmath.diff of the unrolled loss."""
    rng = random.Random(seed)
    H, D, n = derivation.H, derivation.D, derivation.n
    shapes = derivation.parameters
    names = list(shapes)
    worst = {"recursion": mpmath.mpf(0), "evaluate": mpmath.mpf(0)}
    started = time.perf_counter()
    precision = DIGITS + 10
    with mpmath.workdps(DIGITS):
        for _ in range(points):
            count = sum(len(_nested_size(shape)) for shape in shapes.values())
            theta = [Fraction(rng.randint(-900, 900), 1000) for _ in range(count)]
            x = [[Fraction(rng.randint(-1000, 1000), 1000) for _ in range(D)] for _ in range(n)]
            y = rng.randint(0, 1)
            with mpmath.workdps(2 * DIGITS):
                base = [_mp(v) for v in theta]
                x_mp = [[_mp(v) for v in row] for row in x]
                oracle = []
                for index in range(len(base)):

                    def along(value, index=index, base=base, x_mp=x_mp, y=y):
                        shifted = list(base)
                        shifted[index] = value
                        return mp_loss(_nested(derivation, shifted), x_mp, y, H, D)

                    oracle.append(mpmath.diff(along, base[index]))
            with mpmath.workdps(precision):
                nested_mp = _nested(derivation, [_mp(v) for v in theta])
                x_mp = [[_mp(v) for v in row] for row in x]
                states, y_hat = _forward_floats(derivation, nested_mp, x_mp, precision)
            explicit = {}
            nested_rational = _nested(derivation, [sp.Rational(v.numerator, v.denominator) for v in theta])
            for name in names:
                value = nested_rational[name]
                explicit[name] = sp.Matrix(value) if isinstance(value[0], list) else sp.Matrix(len(value), 1, value)
            x_columns = [sp.Matrix(D, 1, [sp.Rational(v.numerator, v.denominator) for v in row]) for row in x]
            gradients = recursion(derivation, states, explicit, x_columns, sp.Integer(y), y_hat, drop_carousel)
            ours = [mpmath.mpf(sp.Float(g, precision)._mpf_) for name in names for g in gradients[name]]
            worst["recursion"] = max(worst["recursion"], _relative(ours, oracle))
            if not drop_carousel:
                values = derivation.evaluate(
                    {name: _as_shape(nested_rational[name], shapes[name]) for name in names},
                    [[sp.Rational(v.numerator, v.denominator) for v in row] for row in x], y, digits=DIGITS,
                )
                theirs = [mpmath.mpf(v) for name in names for v in values.gradients[name].flatten()]
                worst["evaluate"] = max(worst["evaluate"], _relative(theirs, oracle))
    tolerance = mpmath.mpf(10) ** -(DIGITS - 15)
    held = all(value < tolerance for value in worst.values())
    elapsed = time.perf_counter() - started
    parts = f"this module's run of the formulas {mpmath.nstr(worst['recursion'], 3)}"
    if not drop_carousel:
        parts += f", LSTMDerivation.evaluate {mpmath.nstr(worst['evaluate'], 3)}"
    return Check(
        "numeric", f"{DIGITS}-digit evaluation (H = {H}, D = {D}, n = {n})",
        held,
        f"{points} random rational points, all {len(ours)} entries against mpmath.diff of the unrolled loss: "
        f"worst relative difference {parts} (tolerance {mpmath.nstr(tolerance, 1)}; {elapsed:.1f} s)",
    )


def _nested_size(shape: tuple) -> range:
    size = 1
    for s in shape:
        size *= s
    return range(size)


def _as_shape(value, shape: tuple):
    import numpy as np

    return np.array(value, dtype=object).reshape(shape)


# -- the report ---------------------------------------------------------------------------------------------


@dataclass
class LSTMProofReport:
    steps: int
    hidden: int
    inputs: int
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def by_strength(self, strength: str) -> list[Check]:
        return [check for check in self.checks if check.strength == strength]


def prove_lstm(derivation: LSTMDerivation, drop_carousel: bool = False) -> LSTMProofReport:
    """The three checks; ``drop_carousel`` runs them on the recursion without the cell path."""
    report = LSTMProofReport(derivation.n, derivation.H, derivation.D)
    report.checks.append(local(derivation))
    report.checks.append(exact(derivation, drop_carousel))
    report.checks.append(numeric(derivation, drop_carousel))
    return report


HEADINGS = {
    "local": "1. The local derivatives",
    "exact": "2. Exact identity against sp.diff of the unrolled loss",
    "numeric": "3. High-precision evaluation",
}


def format_lstm_report(report: LSTMProofReport) -> str:
    """A readable account in the style of :func:`symbolic.proof.format_report`."""
    lines = [
        (
            "Proof that the LSTM BPTT recursion (δh, δc with the cell path f_(t+1), δa per gate) equals "
            f"∂L/∂θ — H = {report.hidden}, D = {report.inputs}, n = {report.steps}"
        )
    ]
    for strength, heading in HEADINGS.items():
        lines.append(heading)
        for check in report.by_strength(strength):
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"   [{mark}] {check.name}: {check.detail}")
    verdict = "PROVED" if report.passed else "DISAGREEMENT"
    lines.append(f"{verdict}: {sum(c.passed for c in report.checks)} of {len(report.checks)} checks hold")
    return "\n".join(lines) + "\n"


__all__ = [
    "LSTMProofReport", "Unrolled", "check_lstm_size", "exact", "format_lstm_report", "local", "mp_loss",
    "numeric", "oracle_gradient", "prove_lstm", "recursion", "unroll",
]
