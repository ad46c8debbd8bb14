"""The LSTM's gradient paths measured: ∂c_n/∂c_j and ∂h_n/∂h_j per gap, next to the plain RNN's product.

The LSTM's state is the pair (h_t, c_t); BPTT carries the gradient back through the state Jacobians

    J_t = ∂(h_t, c_t)/∂(h_{t−1}, c_{t−1}) = [ ∂h_t/∂h_{t−1}   ∂h_t/∂c_{t−1} ]
                                             [ ∂c_t/∂h_{t−1}   ∂c_t/∂c_{t−1} ]

with, from the local partials that ``LSTMDerivation`` derives with ``sp.diff`` (σ′ = s(1 − s),
tanh′ = 1 − g², written with the gates' outputs; ∂a_·,t/∂h_{t−1} = U_·):

    ∂c_t/∂c_{t−1} = diag(f_t)                                           (the constant error carousel)
    ∂c_t/∂h_{t−1} = diag(c_{t−1} f′) U_f + diag(g i′) U_i + diag(i g′) U_g
    ∂h_t/∂c_{t−1} = diag(o tanh′(c_t)) diag(f_t)
    ∂h_t/∂h_{t−1} = diag(tanh(c_t) o′) U_o + diag(o tanh′(c_t)) ∂c_t/∂h_{t−1}

The product P_j = J_n J_{n−1} ⋯ J_{j+1} = ∂(h_n, c_n)/∂(h_j, c_j) has the blocks ∂c_n/∂c_j and
∂h_n/∂h_j reported here (spectral norms, per gap n − j), beside the carousel alone Π_k diag(f_k) and
the plain tanh RNN's |Π_k ∂o_k/∂o_{k−1}| (``analysis.analyze``; ``analysis.analyze_matrix`` for
H > 1) on the same words. The diagonal coefficients of the blocks are not typed here: they are the
derivation's local partials, combined by the chain rule and lambdified (``state_jacobian``).

The weights are the generated module's ``init_params(seed)`` (uniform in ±1/√H, b_f = 1), with
b_f replaced by ``forget_bias`` when given; the gates come from the module's ``states``.

The regime line judges the cell path as ``analysis`` judges the RNN's product, from its growth per
step m = ‖∂c_n/∂c_1‖₂^(1/(n−1)): m < 1 − TOLERANCE vanishing, m > 1 + TOLERANCE exploding, else
stable. (No bound guarantees vanishing here: ‖Π diag(f_k)‖₂ ≤ 1 always, but the paths through h add
to it.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp

from . import analysis
from .analysis import TOLERANCE, _nested, _number, _rows_shown, pyplot, save_figure
from .errors import UsageError
from .model import Model

#: Largest n·(2H)² analysed: one 2H×2H Jacobian per step is built and multiplied in.
ELEMENTS_LIMIT = 20_000_000


# -- the state Jacobian from the derivation's local partials -----------------------------------------


@dataclass(frozen=True)
class StateJacobian:
    """The blocks of ∂(h_t, c_t)/∂(h_{t−1}, c_{t−1}) as per-unit coefficients (SymPy), in the unit
    symbols of ``LSTMDerivation``:

        ∂c_t/∂h_{t−1} = Σ_· diag(c_from_h[·]) U_·,   ∂c_t/∂c_{t−1} = diag(c_from_c),
        ∂h_t/∂h_{t−1} = Σ_· diag(h_from_h[·]) U_·,   ∂h_t/∂c_{t−1} = diag(h_from_c).
    """

    arguments: tuple  # (i_t, f_t, g_t, o_t, c_t, c_{t−1})
    c_from_h: dict  # gate → coefficient of U_gate
    h_from_h: dict
    c_from_c: sp.Expr
    h_from_c: sp.Expr

    @property
    def functions(self) -> dict:
        """The coefficients as NumPy functions of (i_t, f_t, g_t, o_t, c_t, c_{t−1})."""
        return _lambdified()


@cache
def state_jacobian() -> StateJacobian:
    """The state Jacobian's blocks, by the chain rule over ``LSTMDerivation``'s local partials.

    For one unit with scalar weights (everything but the U products acts entry by entry):
    ∂c_t/∂h_{t−1} = Σ_· (∂c_t/∂·_t)(∂·_t/∂a_·)(∂a_·/∂h_{t−1}), and the coefficient of U_· is its
    derivative with respect to U_· (∂a_·/∂h_{t−1} = U_· is linear in it); ∂h_t/∂h_{t−1} adds the
    path through o_t to ∂h_t/∂c_t times that. The cell paths are ∂c_t/∂c_{t−1} (``cell_path``) and
    ∂h_t/∂c_t · ∂c_t/∂c_{t−1}.
    """
    from .derive_lstm import GATES, LSTMDerivation

    d = LSTMDerivation(Model(steps=1, cell="lstm"))
    through_gate = {
        gate: d.gate_derivative[gate] * sp.diff(d.preactivation[gate], d.h_prev) for gate in GATES
    }
    c_from_h_total = sum((d.dc_dgate[gate] * through_gate[gate] for gate in ("i", "f", "g")), sp.Integer(0))
    h_from_h_total = d.dh_do * through_gate["o"] + d.dh_dc * c_from_h_total
    c_from_h = {gate: sp.diff(c_from_h_total, d.U[gate]) for gate in GATES}
    h_from_h = {gate: sp.diff(h_from_h_total, d.U[gate]) for gate in GATES}
    # Every coefficient must be free of the U's (the blocks are linear in them), else the split is wrong.
    for expr in (*c_from_h.values(), *h_from_h.values()):
        assert not expr.free_symbols & set(d.U.values()), expr
    arguments = (*(d.gate[gate] for gate in GATES), d.c, d.c_prev)
    return StateJacobian(
        arguments=arguments,
        c_from_h=c_from_h,
        h_from_h=h_from_h,
        c_from_c=d.cell_path,
        h_from_c=d.dh_dc * d.cell_path,
    )


@cache
def _lambdified() -> dict:
    jacobian = state_jacobian()

    def function(expr):
        return sp.lambdify(jacobian.arguments, expr, modules="numpy")

    return {
        "c_from_h": {gate: function(e) for gate, e in jacobian.c_from_h.items()},
        "h_from_h": {gate: function(e) for gate, e in jacobian.h_from_h.items()},
        "c_from_c": function(jacobian.c_from_c),
        "h_from_c": function(jacobian.h_from_c),
    }


def jacobian_blocks(states: dict, params: dict) -> np.ndarray:
    """J_t for t = 1..n, shape (n, 2H, 2H), state order (h, c), from one sequence's gates.

    ``states``: i, f, g, o, c each (n, H) for t = 1..n (c_0 = 0 before them); ``params``: U_· (H, H).
    """
    from .derive_lstm import GATES

    fn = state_jacobian().functions
    c = np.asarray(states["c"], dtype=float)
    n, H = c.shape
    c_prev = np.concatenate([np.zeros((1, H)), c[:-1]])
    values = [np.asarray(states[gate], dtype=float) for gate in GATES] + [c, c_prev]

    def coefficient(f):  # a lambdified constant (say 0) comes back as a scalar: broadcast it
        return np.broadcast_to(np.asarray(f(*values), dtype=float), (n, H))

    blocks = np.zeros((n, 2 * H, 2 * H))
    for gate in GATES:
        U = np.asarray(params[f"U_{gate}"], dtype=float)
        blocks[:, :H, :H] += coefficient(fn["h_from_h"][gate])[:, :, None] * U
        blocks[:, H:, :H] += coefficient(fn["c_from_h"][gate])[:, :, None] * U
    index = np.arange(H)
    blocks[:, index, H + index] = coefficient(fn["h_from_c"])
    blocks[:, H + index, H + index] = coefficient(fn["c_from_c"])
    return blocks


def product_log_norms(blocks: np.ndarray) -> dict[str, np.ndarray]:
    """log10 of the spectral norms of P_j = J_n ⋯ J_{j+1} and of its blocks, for j = 1..n.

    Keys: ``state`` (the whole P_j), ``cc`` (∂c_n/∂c_j), ``hh`` (∂h_n/∂h_j), ``hc`` (∂h_n/∂c_j).
    P_n = I. The product is built from the left (P_j = P_{j+1} J_{j+1}) and rescaled to unit Frobenius
    norm at each step with the scale kept as a logarithm, so long gaps neither overflow nor underflow
    (a block far below the whole product's size can still come out as 0, i.e. −inf).
    """
    n, size, _ = blocks.shape
    H = size // 2
    product, log_scale = np.eye(size), 0.0
    out = {key: np.zeros(n) for key in ("state", "cc", "hh", "hc")}
    parts = {
        "state": (slice(None), slice(None)),
        "cc": (slice(H, None), slice(H, None)),
        "hh": (slice(None, H), slice(None, H)),
        "hc": (slice(None, H), slice(H, None)),
    }

    def record(j, product, log_scale):
        for key, (rows, columns) in parts.items():
            norm = float(np.linalg.norm(product[rows, columns], 2))
            out[key][j - 1] = log_scale + math.log10(norm) if norm > 0 else -math.inf

    record(n, product, log_scale)
    for j in range(n - 1, 0, -1):
        product = product @ blocks[j]  # J_{j+1} is row j (0-based) of ``blocks``
        scale = math.sqrt(float(np.sum(product * product)))
        if scale == 0.0 or not math.isfinite(scale):
            for values in out.values():
                values[:j] = -math.inf if scale == 0.0 else math.nan
            break
        product = product / scale
        log_scale += math.log10(scale)
        record(j, product, log_scale)
    return out


def carousel_log_norms(forget: np.ndarray) -> np.ndarray:
    """log10 ‖Π_{k=j+1..n} diag(f_k)‖₂ = log10 max_units Π f_k, for j = 1..n (0 for j = n)."""
    with np.errstate(divide="ignore"):
        logs = np.log10(np.asarray(forget, dtype=float))  # (n, H)
    n = logs.shape[0]
    suffix = np.zeros_like(logs)
    suffix[:-1] = np.cumsum(logs[:0:-1], axis=0)[::-1]  # row j−1: Σ_{k=j+1..n}
    return suffix.max(axis=1) if n else suffix


# -- the analysis ---------------------------------------------------------------------------------------


def growth(log10_norms: np.ndarray) -> float:
    """The growth per step over the longest gap, ‖P_1‖^(1/(n−1)) (nan for n = 1)."""
    n = len(log10_norms)
    if n < 2:
        return math.nan
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return float(10.0 ** (log10_norms[0] / (n - 1)))


def classify(rate: float, steps: int, tolerance: float = TOLERANCE) -> tuple[str, str]:
    """(regime, reason) of the cell path from its growth per step (rule in the module docstring)."""
    if steps < 2:
        return "stable", "one step: there is no Jacobian ∂c_t/∂c_(t-1) to vanish or explode"
    if math.isnan(rate):
        return "exploding", "the Jacobian product is not finite"
    what = f"the cell path's growth per step ‖∂c_n/∂c_1‖₂^(1/(n−1)) = {rate:.4g}"
    if rate < 1 - tolerance:
        return "vanishing", f"{what} < 1 − {tolerance:g}"
    if rate > 1 + tolerance:
        return "exploding", f"{what} > 1 + {tolerance:g}"
    return "stable", f"{what} is within {tolerance:g} of 1"


@dataclass
class LSTMAnalysis:
    """One sequence through the LSTM at its initial weights, and the plain RNN on the same words."""

    words: list[str]
    hidden: int
    seed: int
    forget_bias: float | None  # b_f when set, None when init_params' own (1) was kept
    params: dict
    y_hat: float
    forget: np.ndarray  # (n, H) f_t
    log10: dict  # "state", "cc", "hh", "hc", "carousel" → (n,) entry j−1 for gap n − j
    rnn: object  # analysis.Analysis or analysis.MatrixAnalysis
    regime: str
    reason: str

    @property
    def steps(self) -> int:
        return len(self.words)

    @property
    def gaps(self) -> np.ndarray:
        return self.steps - np.arange(1, self.steps + 1)

    def norms(self, key: str) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return np.power(10.0, self.log10[key])

    @property
    def rnn_log10(self) -> np.ndarray:
        """log10 of the RNN's |Π ∂o_k/∂o_{k−1}| (‖·‖₂ for H > 1) for j = 1..n."""
        if isinstance(self.rnn, analysis.Analysis):
            return self.rnn.log10_products
        return self.rnn.log10_jacobian_norms

    @property
    def rnn_label(self) -> str:
        if isinstance(self.rnn, analysis.Analysis):
            return f"tanh RNN, w_h = {self.rnn.w_h:g}"
        return f"tanh RNN, H = {self.rnn.hidden}, W_h = {self.rnn.w_h_scale:g}·Q"

    def rates(self) -> dict[str, float]:
        """Growth per step of each path over the longest gap."""
        return {
            "cell": growth(self.log10["cc"]),
            "hidden": growth(self.log10["hh"]),
            "carousel": growth(self.log10["carousel"]),
            "rnn": growth(self.rnn_log10),
        }

    def as_json(self) -> dict:
        rnn = self.rnn.as_json()
        keep = ("steps", "activation", "hidden", "weights", "w_h_scale", "regime", "regime_reason")
        rnn_summary = {key: rnn[key] for key in keep if key in rnn}
        rnn_summary["products"] = _nested(np.power(10.0, self.rnn_log10))
        rnn_summary["log10_products"] = _nested(self.rnn_log10)
        return {
            "cell": "lstm",
            "steps": self.steps,
            "hidden": self.hidden,
            "inputs": int(np.shape(self.params["W_i"])[1]),
            "input": list(self.words),
            "seed": self.seed,
            "forget_bias": self.forget_bias,
            "weights": {name: _nested(value) for name, value in self.params.items()},
            "y_hat": _number(self.y_hat),
            "gaps": [int(g) for g in self.gaps],
            "cell_norms": _nested(self.norms("cc")),
            "hidden_norms": _nested(self.norms("hh")),
            "hidden_from_cell_norms": _nested(self.norms("hc")),
            "state_norms": _nested(self.norms("state")),
            "carousel_norms": _nested(self.norms("carousel")),
            "log10_cell_norms": _nested(self.log10["cc"]),
            "log10_hidden_norms": _nested(self.log10["hh"]),
            "log10_carousel_norms": _nested(self.log10["carousel"]),
            "forget_gates": _nested(self.forget),
            "growth_per_step": {key: _number(value) for key, value in self.rates().items()},
            "regime": self.regime,
            "regime_reason": self.reason,
            "tolerance": TOLERANCE,
            "rnn": rnn_summary,
        }


def _loader(model: Model):
    from .codegen import load

    return load(Model(steps=1, cell="lstm", hidden=model.hidden, inputs=model.inputs), "loop")


def analyze_lstm(
    steps: int | None = None,
    hidden: int = 1,
    words: list[str] | None = None,
    seed: int = analysis.DEFAULT_SEED,
    forget_bias: float | None = None,
    rnn_w_h: float | None = None,
    rnn_w_h_scale: float | None = None,
    loader=None,
) -> LSTMAnalysis:
    """The LSTM's Jacobian products for one sequence, and the tanh RNN's on the same words.

    LSTM weights: the generated module's ``init_params(seed)``, with b_f = ``forget_bias`` if given.
    The RNN: ``analysis.analyze`` at its defaults (w_h = ``rnn_w_h`` or 0.5) for H = 1, else
    ``analysis.analyze_matrix`` with W_h = ``rnn_w_h_scale``·Q (default 0.5) and the same seed.
    """
    from .data import encode

    words = analysis._sequence(steps, words, seed)
    x = encode(list(words))[None]  # (1, n, D)
    model = Model(steps=len(words), cell="lstm", hidden=hidden, inputs=x.shape[2])
    H, n = model.hidden, model.steps
    if n * (2 * H) ** 2 > ELEMENTS_LIMIT:
        raise UsageError(
            f"n·(2H)² = {n * (2 * H) ** 2} is too large to analyze (limit {ELEMENTS_LIMIT}: one 2H×2H "
            "Jacobian per step): choose fewer --steps or a smaller --hidden"
        )
    if forget_bias is not None and not math.isfinite(forget_bias):
        raise UsageError(f"--forget-bias must be a finite number, got {forget_bias!r}")
    module = (loader or _loader)(model)
    params = {name: np.array(value, dtype=float) for name, value in module.init_params(seed).items()}
    if forget_bias is not None:
        params["b_f"] = np.full(H, float(forget_bias))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        y_hat = float(np.asarray(module.forward(x, params))[0])
        states = {name: np.asarray(value, dtype=float)[0] for name, value in module.states(x, params).items()}
        log10 = product_log_norms(jacobian_blocks(states, params))
    log10["carousel"] = carousel_log_norms(states["f"])
    if H == 1:
        w_h = analysis.DEFAULT_W_H if rnn_w_h is None else rnn_w_h
        if rnn_w_h_scale is not None:
            w_h = rnn_w_h_scale
        rnn = analysis.analyze(activation="tanh", w_h=w_h, words=words, seed=seed)
    else:
        rnn = analysis.analyze_matrix(
            activation="tanh",
            hidden=H,
            w_h_scale=analysis.DEFAULT_W_H_SCALE if rnn_w_h_scale is None else rnn_w_h_scale,
            words=words,
            seed=seed,
        )
    regime, reason = classify(growth(log10["cc"]), n)
    return LSTMAnalysis(
        words=list(words),
        hidden=H,
        seed=seed,
        forget_bias=None if forget_bias is None else float(forget_bias),
        params=params,
        y_hat=y_hat,
        forget=states["f"],
        log10=log10,
        rnn=rnn,
        regime=regime,
        reason=reason,
    )


# -- output ---------------------------------------------------------------------------------------------


def _values(values) -> str:
    """A vector shown briefly: one number when all entries agree."""
    values = np.ravel(np.asarray(values, dtype=float))
    if values.size and np.all(values == values[0]):
        return f"{values[0]:g}"
    return analysis._values(values)


def table(result: LSTMAnalysis) -> str:
    """The report: weights, the blocks' norms per gap beside the RNN's product, the regimes."""
    a = result
    n, H = a.steps, a.hidden
    words = " ".join(a.words) if n <= 12 else " ".join(a.words[:12]) + f" … ({n} words)"
    b_f = (
        f"b_f = {_values(a.params['b_f'])} (init_params' own)"
        if a.forget_bias is None
        else f"b_f = {a.forget_bias:g} (--forget-bias)"
    )
    f = a.forget
    rates = a.rates()
    lines = [
        f"LSTM gradient paths for n = {n}, hidden size H = {H}, input: {words}",
        (
            f"weights: the generated module's init_params(seed={a.seed}) (uniform in ±1/√H), {b_f}; "
            f"ŷ = {a.y_hat:.4g}"
        ),
        f"forget gates f_t: mean {np.mean(f):.4g}, range [{np.min(f):.4g}, {np.max(f):.4g}]",
        "",
        "state Jacobian ∂(h_t, c_t)/∂(h_(t-1), c_(t-1)), from LSTMDerivation's local partials:",
        "  ∂c_t/∂c_(t-1) = diag(f_t)   (the constant error carousel)",
        "  ∂c_t/∂h_(t-1) = diag(c_(t-1) f') U_f + diag(g i') U_i + diag(i g') U_g",
        "  ∂h_t/∂c_(t-1) = diag(o tanh'(c_t)) diag(f_t)",
        "  ∂h_t/∂h_(t-1) = diag(tanh(c_t) o') U_o + diag(o tanh'(c_t)) ∂c_t/∂h_(t-1)",
        (
            f"compared with: {a.rnn_label} (bptt analyze's defaults; the same words), "
            f"its product Π ∂o_k/∂o_(k-1)"
        ),
        "",
        f"regime (LSTM cell path): {a.regime} — {a.reason}",
        f"regime (RNN): {a.rnn.regime} — {a.rnn.reason}",
        (
            "growth per step over the longest gap: "
            f"cell path {rates['cell']:.4g}, carousel Π f {rates['carousel']:.4g}, "
            f"hidden path {rates['hidden']:.4g}, RNN {rates['rnn']:.4g}"
        ),
        "",
        "gap = n − j; norms are spectral (‖·‖₂) norms of the products over k = j+1..n",
    ]
    header = (
        f"{'j':>5} {'gap':>5} {'‖∂c_n/∂c_j‖':>12} {'‖Π diag f‖':>12} {'‖∂h_n/∂h_j‖':>12} "
        f"{'RNN |Π|':>12} {'cell / RNN':>11}"
    )
    lines += [header, "-" * len(header)]
    cell, carousel, hidden = a.norms("cc"), a.norms("carousel"), a.norms("hh")
    with np.errstate(over="ignore", under="ignore"):
        rnn = np.power(10.0, a.rnn_log10)
        ratio = np.power(10.0, a.log10["cc"] - a.rnn_log10)
    for gap in _rows_shown(n):
        i = n - 1 - gap
        lines.append(
            f"{i + 1:>5} {gap:>5} {cell[i]:>12.4g} {carousel[i]:>12.4g} {hidden[i]:>12.4g} "
            f"{rnn[i]:>12.4g} {ratio[i]:>11.4g}"
        )
    if n > 30:
        lines.append(f"({n - len(_rows_shown(n))} rows left out; --json gives every gap)")
    return "\n".join(lines) + "\n"


def plot(result: LSTMAnalysis, path) -> None:
    """The LSTM's ‖∂c_n/∂c_j‖₂, ‖∂h_n/∂h_j‖₂ and carousel against the gap, beside the RNN's |Π|."""
    plt = pyplot()
    a = result
    gaps = a.gaps[::-1]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))

    def positive(log_values):
        with np.errstate(over="ignore", under="ignore"):
            values = np.power(10.0, np.asarray(log_values, dtype=float)[::-1])
        keep = np.isfinite(values) & (values > 0)
        return gaps[keep], values[keep]

    marker = "o" if a.steps <= 40 else None
    axes.semilogy(
        *positive(a.log10["cc"]),
        marker=marker,
        markersize=3,
        color="C2",
        label=r"LSTM $\|\partial c_n/\partial c_j\|_2$ (cell path)",
    )
    axes.semilogy(
        *positive(a.log10["carousel"]),
        color="C2",
        linestyle=":",
        label=r"carousel alone $\|\prod_k \mathrm{diag}(f_k)\|_2$",
    )
    axes.semilogy(
        *positive(a.log10["hh"]),
        marker=marker,
        markersize=3,
        color="C0",
        alpha=0.8,
        label=r"LSTM $\|\partial h_n/\partial h_j\|_2$",
    )
    axes.semilogy(
        *positive(a.rnn_log10),
        marker=marker,
        markersize=3,
        color="C3",
        label=rf"{a.rnn_label}: $|\prod_k \partial o_k/\partial o_{{k-1}}|$",
    )
    axes.set_xlabel("gap n − j (timesteps between step j and the output)")
    axes.set_ylabel("norm of the Jacobian product (log scale)")
    b_f = _values(a.params["b_f"]) if a.forget_bias is None else f"{a.forget_bias:g}"
    axes.set_title(f"LSTM (H = {a.hidden}, b_f = {b_f}) vs tanh RNN, n = {a.steps}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
