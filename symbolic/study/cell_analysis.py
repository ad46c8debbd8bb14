"""The gradient paths of any cell measured: ∂s_n/∂s_j per state and gap, beside the plain RNN's product.

BPTT carries the gradient back through the state Jacobians J_t = ∂(states_t)/∂(states_(t−1)). The
engine's derivation gives, per unit, the immediate partials of every value of a step; here they are
combined numerically by the chain rule through one step (forward accumulation):

    J(v) = Σ_(u in v) diag(∂v/∂u) J(u),   J(M u) = M J(u),   J(s_(t−1)) = [0 … I … 0],   J(x_t) = 0,

so J_t is the stack of J(s_t) over the states. The product P_j = J_n ⋯ J_(j+1) = ∂(states_n)/∂(states_j)
is reported per state s as ‖∂s_n/∂s_j‖₂, and every **direct path** (an elementwise s_(t−1) → s_t that
skips every matrix: the LSTM's carousel diag(f_t), the GRU's diag(z_t)) alone as ‖Π_k diag(direct_k)‖₂,
beside the tanh RNN's |Π_k ∂o_k/∂o_(k−1)| on the same words (``analysis.analyze`` for H = 1,
``analysis.analyze_matrix`` above). Nothing here names a cell.

The weights are the generated module's ``init_params(seed)``, with per-unit parameters set to a
constant where asked (``settings``, e.g. the LSTM's forget-gate bias b_f = 5).

The regime is judged from the carried state (the first state with a direct path, else the readout
state) as ``analysis`` judges the RNN: growth per step m = ‖∂s_n/∂s_1‖₂^(1/(n−1)), m < 1 − TOLERANCE
vanishing, m > 1 + TOLERANCE exploding, else stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ..errors import UsageError
from ..model import Model
from . import analysis, matrix_analysis
from .figures import integer_ticks, pyplot, save_figure
from .matrix_analysis import _nested
from .measures import TOLERANCE, _number, _power_of_ten, _rows_shown

if TYPE_CHECKING:
    from ..engine.derivation import CellDerivation

#: Largest n·(S·H)² analysed: one S·H × S·H Jacobian per step is built and multiplied in.
ELEMENTS_LIMIT = 20_000_000


def step_jacobians(d, params: dict, history: list, sequence: int = 0, lag: int = 1) -> np.ndarray:
    """J_t for t = 1..n of one sequence, shape (n, S·H, S·H), states in ``d.states`` order; with ``lag``
    K, the immediate ∂(states_t)/∂(states_(t−K)) instead (the blocks of states not read K back are 0)."""
    states = list(d.states)
    hidden = np.shape(params[d.cell.readout])[0]
    size = len(states) * hidden
    functions = {}
    for node in d.nodes:
        for symbol, partial in d.partials[node.name].items():
            arguments = sorted(partial.free_symbols, key=str)
            functions[(node.name, symbol)] = (arguments, sp.lambdify(arguments, partial, modules=_MODULES))
    linears = {linear.symbol: linear for linear in d.linears}
    previous = {d.leaf(state, lag): k for k, state in enumerate(states) if lag in d.lags[state]}
    matrices = {name: np.asarray(params[name], dtype=float) for name in d.cell.matrices}
    blocks = np.zeros((len(history), size, size))
    eye = np.eye(hidden)
    for t, known in enumerate(history):
        values = {symbol: np.asarray(value, dtype=float)[sequence] if np.ndim(value) == 2 else value
                  for symbol, value in known.items()}
        jac: dict = {}

        def of(symbol, jac=jac):
            if symbol in jac:
                return jac[symbol]
            if symbol in previous:
                block = np.zeros((hidden, size))
                k = previous[symbol]
                block[:, k * hidden:(k + 1) * hidden] = eye
            elif symbol in linears:
                linear = linears[symbol]
                operand = None if linear.operand == "x" else of(sp.Symbol(linear.operand))
                block = np.zeros((hidden, size)) if operand is None else matrices[linear.matrix] @ operand
            else:
                block = None   # x, a per-unit parameter: constant in the states
            jac[symbol] = block
            return block

        for node in d.nodes:
            total = np.zeros((hidden, size))
            for symbol in d.partials[node.name]:
                inner = of(symbol)
                if inner is None:
                    continue
                arguments, function = functions[(node.name, symbol)]
                coefficient = np.broadcast_to(np.asarray(function(*(values[a] for a in arguments)), float), hidden)
                total += coefficient[:, None] * inner
            jac[node.symbol] = total
        for k, state in enumerate(states):
            blocks[t, k * hidden:(k + 1) * hidden] = jac[d.state_node(state).symbol]
    return blocks


_MODULES = [{"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0.0),
             "Heaviside": lambda v, h0=0.0: np.heaviside(v, h0)}, "numpy"]


def path_log_norms(blocks: dict, states: list[str], state: str) -> dict[str, np.ndarray]:
    """A cell with lags: ∂(states_n)/∂(states_j) is no product but the sum over every path of single steps
    and skips, G_j = Σ_K G_(j+K) B_K[j+K] (G_n = I, B_K the ``step_jacobians`` of lag K). Returns log10 of
    the spectral norms of G_j (key "state") and of its diagonal blocks (key: each state), and, for
    ``state``, of the part of the paths with m skips (m ≥ 0; key "skips", shape (n, most skips + 1),
    −inf where no path has m skips), for j = 1..n. Each G_j carries its own scale as a logarithm."""
    lags = sorted(blocks)
    n, size, _ = blocks[1].shape
    hidden = size // len(states)
    most = (n - 1) // min([lag for lag in lags if lag > 1], default=n) if len(lags) > 1 else 0
    parts = {"state": (slice(None), slice(None))}
    for k, name in enumerate(states):
        part = slice(k * hidden, (k + 1) * hidden)
        parts[name] = (part, part)
    out = {key: np.full(n, -math.inf) for key in parts}
    out["skips"] = np.full((n, most + 1), -math.inf)
    rows, columns = parts[state]
    # by_skips[j]: (m + 1, size, size) the paths' parts by skips, scaled by 10^−scale[j]
    by_skips, scale = {n: np.zeros((most + 1, size, size))}, {n: 0.0}
    by_skips[n][0] = np.eye(size)
    for j in range(n, 0, -1):
        if j < n:
            terms = [(lag, j + lag) for lag in lags if j + lag <= n]
            top = max(scale[t] for _, t in terms)
            total = np.zeros((most + 1, size, size))
            for lag, t in terms:
                moved = by_skips[t] @ blocks[lag][t - 1] * 10.0 ** (scale[t] - top)
                total += moved if lag == 1 else np.concatenate([np.zeros((1, size, size)), moved[:-1]])
            norm = math.sqrt(float(np.sum(total.sum(axis=0) ** 2))) or 1.0
            if not math.isfinite(norm):
                for values in out.values():
                    values[:j] = math.nan
                break
            by_skips[j], scale[j] = total / norm, top + math.log10(norm)
            by_skips.pop(j + max(lags), None)
        whole = by_skips[j].sum(axis=0)
        for key, (r, c) in parts.items():
            value = float(np.linalg.norm(whole[r, c], 2))
            out[key][j - 1] = scale[j] + math.log10(value) if value > 0 else -math.inf
        for m in range(most + 1):
            value = float(np.linalg.norm(by_skips[j][m][rows, columns], 2))
            out["skips"][j - 1, m] = scale[j] + math.log10(value) if value > 0 else -math.inf
    return out


def shortest_path(gap: int, lags: tuple) -> int:
    """The fewest Jacobian factors from step j to step j + gap with steps of the given lags (1 among
    them): ⌊gap/K⌋ + gap mod K for one skip K, where the plain RNN has gap."""
    fewest = [0] + [math.inf] * gap
    for g in range(1, gap + 1):
        fewest[g] = 1 + min(fewest[g - lag] for lag in lags if lag <= g)
    return int(fewest[gap])


def product_log_norms(blocks: np.ndarray, states: list[str]) -> dict[str, np.ndarray]:
    """log10 of the spectral norms of P_j = J_n ⋯ J_(j+1) (key "state") and of its diagonal blocks
    ∂s_n/∂s_j (key: the state's name), for j = 1..n. P_n = I. Built from the left and rescaled at each
    step with the scale kept as a logarithm, so long gaps neither overflow nor underflow."""
    n, size, _ = blocks.shape
    hidden = size // len(states)
    product, log_scale = np.eye(size), 0.0
    parts = {"state": (slice(None), slice(None))}
    for k, state in enumerate(states):
        part = slice(k * hidden, (k + 1) * hidden)
        parts[state] = (part, part)
    out = {key: np.zeros(n) for key in parts}

    def record(j):
        for key, (rows, columns) in parts.items():
            norm = float(np.linalg.norm(product[rows, columns], 2))
            out[key][j - 1] = log_scale + math.log10(norm) if norm > 0 else -math.inf

    record(n)
    for j in range(n - 1, 0, -1):
        product = product @ blocks[j]
        scale = math.sqrt(float(np.sum(product * product)))
        if scale == 0.0 or not math.isfinite(scale):
            for values in out.values():
                values[:j] = -math.inf if scale == 0.0 else math.nan
            break
        product = product / scale
        log_scale += math.log10(scale)
        record(j)
    return out


def direct_log_norms(direct: np.ndarray) -> np.ndarray:
    """log10 ‖Π_(k=j+1..n) diag(direct_k)‖₂ = log10 max_units |Π direct_k|, for j = 1..n (0 for j = n)."""
    with np.errstate(divide="ignore"):
        logs = np.log10(np.abs(np.asarray(direct, dtype=float)))
    suffix = np.zeros_like(logs)
    if len(logs):
        suffix[:-1] = np.cumsum(logs[:0:-1], axis=0)[::-1]
    return suffix.max(axis=1) if len(logs) else suffix


def growth(log10_norms: np.ndarray) -> float:
    n = len(log10_norms)
    if n < 2:
        return math.nan
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return float(10.0 ** (log10_norms[0] / (n - 1)))


def classify(rate: float, steps: int, state: str, tolerance: float = TOLERANCE) -> tuple[str, str]:
    if steps < 2:
        return "stable", f"one step: there is no Jacobian ∂{state}_t/∂{state}_(t-1) to vanish or explode"
    if math.isnan(rate):
        return "exploding", "the Jacobian product is not finite"
    what = f"the {state} path's growth per step ‖∂{state}_n/∂{state}_1‖₂^(1/(n−1)) = {rate:.4g}"
    return matrix_analysis.judge_growth(what, rate, tolerance)


@dataclass
class CellAnalysis:
    """One sequence through a cell at its initial weights, and the plain RNN on the same words."""

    cell: str
    words: list[str]
    hidden: int
    seed: int
    settings: dict        # per-unit parameter → the constant it was set to
    params: dict
    y_hat: float
    states: list          # the cell's states, in order
    carried: str          # the state the regime is judged from
    direct: dict          # state → (n, H) its direct path's factors per step (only states that have one)
    direct_formulas: dict  # state → the direct path per unit, as text
    log10: dict           # "state", each state, "direct_<state>" → (n,) entry j−1 for gap n − j
    rnn: object
    regime: str
    reason: str
    #: the lags the states are read at, (1,) for a cell without lags; with lags ``log10["skips"]`` holds
    #: the paths' parts by their number of skips
    lags: tuple = (1,)

    @property
    def steps(self) -> int:
        return len(self.words)

    @property
    def output_state(self) -> str:
        """The readout's state (the first declared), whose paths ``log10["skips"]`` splits by skips."""
        return self.states[0]

    @property
    def gaps(self) -> np.ndarray:
        return self.steps - np.arange(1, self.steps + 1)

    def norms(self, key: str) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return np.power(10.0, self.log10[key])

    @property
    def rnn_log10(self) -> np.ndarray:
        if isinstance(self.rnn, analysis.Analysis):
            return self.rnn.log10_products
        return self.rnn.log10_jacobian_norms

    @property
    def rnn_label(self) -> str:
        if isinstance(self.rnn, analysis.Analysis):
            return f"tanh RNN, w_h = {self.rnn.w_h:g}"
        return f"tanh RNN, H = {self.rnn.hidden}, W_h = {self.rnn.w_h_scale:g}·Q"

    def shortest(self) -> list[int]:
        """Per gap (j = 1..n), the fewest Jacobian factors of a path from step j to step n."""
        return [shortest_path(int(gap), self.lags) for gap in self.gaps]

    def path_shares(self) -> np.ndarray:
        """(n, most skips + 1): per gap, each number of skips' part of the paths as a share of the sum of
        the parts' norms (a lagged cell; rows of 0 where no path carries anything)."""
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            logs = self.log10["skips"]
            top = np.max(logs, axis=1, keepdims=True)
            weights = np.where(np.isfinite(logs), np.power(10.0, logs - np.where(np.isfinite(top), top, 0)), 0.0)
            totals = weights.sum(axis=1, keepdims=True)
            return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)

    def lag_json(self) -> dict:
        """The paths of a lagged cell per gap: the fewest factors, the norm of each number of skips' part
        of ∂s_n/∂s_j (s the readout state) and its share."""
        if self.lags == (1,):
            return {}
        with np.errstate(over="ignore", under="ignore"):
            by_skips = np.power(10.0, self.log10["skips"])
        return {
            "lags": list(self.lags),
            "shortest_path_factors": self.shortest(),
            "path_norms_by_skips": _nested(by_skips),
            "path_shares_by_skips": _nested(self.path_shares()),
        }

    def rates(self) -> dict[str, float]:
        rates = {state: growth(self.log10[state]) for state in self.states}
        rates |= {f"direct_{state}": growth(self.log10[f"direct_{state}"]) for state in self.direct}
        rates["rnn"] = growth(self.rnn_log10)
        return rates

    def as_json(self) -> dict:
        rnn = self.rnn.as_json()
        keep = ("steps", "activation", "hidden", "weights", "w_h_scale", "regime", "regime_reason")
        rnn_summary = {key: rnn[key] for key in keep if key in rnn}
        rnn_summary["products"] = _nested(np.power(10.0, self.rnn_log10))
        rnn_summary["log10_products"] = _nested(self.rnn_log10)
        return {
            "cell": self.cell,
            "steps": self.steps,
            "hidden": self.hidden,
            "input": list(self.words),
            "seed": self.seed,
            "settings": {name: float(value) for name, value in self.settings.items()},
            "weights": {name: _nested(value) for name, value in self.params.items()},
            "y_hat": _number(self.y_hat),
            "gaps": [int(g) for g in self.gaps],
            "states": list(self.states),
            "carried_state": self.carried,
            "state_norms": _nested(self.norms("state")),
            "norms": {state: _nested(self.norms(state)) for state in self.states},
            "direct_paths": {state: self.direct_formulas[state] for state in self.direct},
            "direct_norms": {state: _nested(self.norms(f"direct_{state}")) for state in self.direct},
            "direct_factors": {state: _nested(value) for state, value in self.direct.items()},
            "growth_per_step": {key: _number(value) for key, value in self.rates().items()},
            "regime": self.regime,
            "regime_reason": self.reason,
            "tolerance": TOLERANCE,
            "rnn": rnn_summary,
            **self.lag_json(),
        }


def analyze_cell(
    model: Model,
    derivation: CellDerivation,
    steps: int | None = None,
    words: list[str] | None = None,
    seed: int = analysis.DEFAULT_SEED,
    settings: dict | None = None,
    rnn_w_h: float | None = None,
    rnn_w_h_scale: float | None = None,
) -> CellAnalysis:
    """The cell's Jacobian products for one sequence, and the tanh RNN's on the same words; ``derivation``
    is the command's one derivation of ``model``'s cell."""
    from ..engine.evaluate import forward_values
    from .data import encode

    words = matrix_analysis._sequence(steps, words, seed)
    x = encode(list(words))[None]
    d = derivation
    H, n = model.hidden, len(words)
    size = len(d.states) * H
    if n * size**2 > ELEMENTS_LIMIT:
        raise UsageError(
            f"n·(S·H)² = {n * size ** 2} is too large to analyze (limit {ELEMENTS_LIMIT}: one state "
            "Jacobian per step): choose fewer --steps or a smaller --hidden"
        )
    settings = dict(settings or {})
    for name, value in settings.items():
        if name not in d.cell.vectors:
            have = ", ".join(d.cell.vectors) or "none"
            raise UsageError(
                f"cell {d.cell.name} has no per-unit parameter {name} to set (its per-unit parameters: {have})"
            )
        if not math.isfinite(value):
            raise UsageError(f"the value of {name} must be a finite number, got {value!r}")
    params = _weights(d, model, x.shape[2], seed, settings)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        history, states = forward_values(d, params, x)
        logit = states[d.output_state][-1][0] @ params[d.cell.readout]
        y_hat = float(1 / (1 + np.exp(-(logit + (params[d.cell.readout_bias] if d.cell.readout_bias else 0)))))
        if d.lagged:
            blocks = {lag: step_jacobians(d, params, history, lag=lag)
                      for lag in sorted({k for lags in d.lags.values() for k in lags})}
            log10 = path_log_norms(blocks, list(d.states), d.output_state)
        else:
            log10 = product_log_norms(step_jacobians(d, params, history), list(d.states))
    direct, formulas = {}, {}
    for state in d.states:
        expr, _ = d.state_jacobian[(state, state)]
        if expr == 0:
            continue
        arguments = sorted(expr.free_symbols, key=str)
        function = sp.lambdify(arguments, expr, modules=_MODULES)
        direct[state] = np.array([
            np.broadcast_to(np.asarray(function(*(np.asarray(known[a], float)[0] if np.ndim(known[a]) == 2
                                                  else known[a] for a in arguments)), float), H)
            for known in history
        ])
        formulas[state] = sp.sstr(expr)
        log10[f"direct_{state}"] = direct_log_norms(direct[state])
    carried = next(iter(direct), d.output_state)
    if H == 1:
        w_h = analysis.DEFAULT_W_H if rnn_w_h is None else rnn_w_h
        if rnn_w_h_scale is not None:
            w_h = rnn_w_h_scale
        rnn = analysis.analyze(activation="tanh", w_h=w_h, words=words, seed=seed)
    else:
        rnn = analysis.analyze_matrix(
            activation="tanh", hidden=H,
            w_h_scale=analysis.DEFAULT_W_H_SCALE if rnn_w_h_scale is None else rnn_w_h_scale,
            words=words, seed=seed,
        )
    regime, reason = classify(growth(log10[carried]), n, carried)
    return CellAnalysis(
        cell=d.cell.name, words=list(words), hidden=H, seed=seed, settings=settings, params=params,
        y_hat=y_hat, states=list(d.states), carried=carried, direct=direct, direct_formulas=formulas,
        log10=log10, rnn=rnn, regime=regime, reason=reason,
        lags=tuple(sorted({k for lags in d.lags.values() for k in lags})),
    )


def _weights(d, model: Model, inputs: int, seed: int, settings: dict) -> dict:
    """The generated module's init_params(seed) (for a lagged cell, which has no module yet, its rule),
    with the per-unit parameters of ``settings`` set to their constants."""
    from ..codegen import load

    if d.lagged:
        params = initial_params(d, model.hidden, inputs, seed)
    else:
        module = load(replace(model, steps=1, inputs=inputs), "loop")
        params = {name: np.array(value, dtype=float) for name, value in module.init_params(seed).items()}
    for name, value in settings.items():
        params[name] = np.full(model.hidden, float(value))
    return params


def initial_params(d, hidden: int, inputs: int, seed: int) -> dict:
    """The generated modules' ``init_params(seed)`` rule (templates/numpy/cell.py.j2): every entry uniform
    in (−1/√H, 1/√H) in the order of the parameters, then the cell's own constants (``Cell.init``)."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden)
    params = {name: rng.uniform(-bound, bound, size=shape) for name, shape in d.shapes(hidden, inputs).items()}
    for name, value in d.cell.init.items():
        params[name] = np.full(params[name].shape, float(value))
    return params


def table(result: CellAnalysis) -> str:
    """The report: weights, each state's product norm per gap beside the RNN's, the regimes."""
    a = result
    n, H = a.steps, a.hidden
    words = " ".join(a.words) if n <= 12 else " ".join(a.words[:12]) + f" … ({n} words)"
    set_text = ", ".join(f"{name} = {value:g}" for name, value in a.settings.items())
    rates = a.rates()
    lines = [
        f"{a.cell} gradient paths for n = {n}, hidden size H = {H}, input: {words}",
        f"weights: {'the generated module' if a.lags == (1,) else 'the generated modules’ rule'} "
        f"init_params(seed={a.seed}) (uniform in ±1/√H"
        + (f"; set: {set_text}" if set_text else "") + f"); ŷ = {a.y_hat:.4g}",
        "",
        "state Jacobian ∂(" + ", ".join(f"{s}_t" for s in a.states) + ")/∂("
        + ", ".join(f"{s}_(t-1)" for s in a.states) + "), from the derivation's local partials;",
    ]
    for state in a.states:
        if state in a.direct:
            f = a.direct[state]
            lines.append(f"  direct path {state}_(t-1) → {state}_t: diag({a.direct_formulas[state]}), "
                         f"mean {np.mean(f):.4g}, range [{np.min(f):.4g}, {np.max(f):.4g}]")
    if not a.direct:
        lines.append("  no direct path: every path back in time passes through a matrix")
    lines += [
        f"compared with: {a.rnn_label} (bptt analyze's defaults; the same words), its product Π ∂o_k/∂o_(k-1)",
        "",
        f"regime ({a.cell}, {a.carried} path): {a.regime} — {a.reason}",
        f"regime (RNN): {a.rnn.regime} — {a.rnn.reason}",
        "growth per step over the longest gap: "
        + ", ".join(f"{key.replace('direct_', 'direct ')} {value:.4g}" for key, value in rates.items()),
        "",
        "gap = n − j; norms are spectral (‖·‖₂) norms of the products over k = j+1..n",
    ]
    if a.lags != (1,):
        return "\n".join(lines + _lag_rows(a)) + "\n"
    columns = [(f"‖∂{s}_n/∂{s}_j‖", s) for s in a.states] + [(f"‖Π direct {s}‖", f"direct_{s}") for s in a.direct]
    header = f"{'j':>5} {'gap':>5} " + " ".join(f"{title:>14}" for title, _ in columns) + f" {'RNN |Π|':>12} {'carried / RNN':>13}"
    lines += [header, "-" * len(header)]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ratio = a.log10[a.carried] - a.rnn_log10
    for gap in _rows_shown(n):
        i = n - 1 - gap
        # printed from the logarithms: a product past float64 (1e-400, 1e+350) still reads as a number
        cells = " ".join(f"{_power_of_ten(a.log10[key][i]):>14}" for _, key in columns)
        lines.append(f"{i + 1:>5} {gap:>5} {cells} {_power_of_ten(a.rnn_log10[i]):>12} "
                     f"{_power_of_ten(ratio[i]):>13}")
    if n > 30:
        lines.append(f"({n - len(_rows_shown(n))} rows left out; --json gives every gap)")
    return "\n".join(lines) + "\n"


def _lag_rows(a: CellAnalysis) -> list[str]:
    """The table of a lagged cell: per gap the norm of ∂s_n/∂s_j (a sum over every path of single steps
    and skips) beside the RNN's, the fewest factors of a path, and the parts of the paths by skips."""
    n, state = a.steps, a.output_state
    skips = a.log10["skips"]
    shares = a.path_shares()
    lines = [(f"with lags {', '.join(map(str, a.lags[1:]))}: ∂{state}_n/∂{state}_j sums every path of single steps "
              "and skips; factors = the fewest Jacobians on a path (the RNN's path has one per step);"),
             ("1-step = the part through single steps only, shortest = the part through the most skips, "
              "skip share = the share of the paths' norms carried by paths with a skip"), ""]
    titles = [f"‖∂{s}_n/∂{s}_j‖" for s in a.states]
    header = (f"{'j':>5} {'gap':>5} " + " ".join(f"{title:>14}" for title in titles)
              + f" {'RNN |Π|':>12} {'factors':>9} {'1-step':>12} {'shortest':>12} {'skip share':>10}")
    lines += [header, "-" * len(header)]
    shortest = a.shortest()
    for gap in _rows_shown(n):
        i = n - 1 - gap
        most = max((m for m in range(skips.shape[1]) if np.isfinite(skips[i, m])), default=0)
        norms = " ".join(f"{_power_of_ten(a.log10[s][i]):>14}" for s in a.states)
        lines.append(f"{i + 1:>5} {gap:>5} {norms} {_power_of_ten(a.rnn_log10[i]):>12} "
                     f"{f'{shortest[i]}/{gap}':>9} {_power_of_ten(skips[i, 0]):>12} "
                     f"{_power_of_ten(skips[i, most]):>12} {1 - shares[i, 0]:>10.3f}")
    if n > 30:
        lines.append(f"({n - len(_rows_shown(n))} rows left out; --json gives every gap)")
    return lines


def plot(result: CellAnalysis, path) -> None:
    """Each state's ‖∂s_n/∂s_j‖₂ and each direct path against the gap, beside the RNN's |Π|."""
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
    for k, state in enumerate(a.states):
        color = f"C{k % 3}"
        axes.semilogy(*positive(a.log10[state]), marker=marker, markersize=3, color=color,
                      label=rf"{a.cell} $\|\partial {state}_n/\partial {state}_j\|_2$")
        if state in a.direct:
            axes.semilogy(*positive(a.log10[f"direct_{state}"]), color=color, linestyle=":",
                          label=rf"direct path of ${state}$ alone")
    if a.lags != (1,):   # the part of the paths through single steps only
        axes.semilogy(*positive(a.log10["skips"][:, 0]), color="C0", linestyle=":",
                      label=rf"{a.cell}: the single steps' path alone")
    axes.semilogy(*positive(a.rnn_log10), marker=marker, markersize=3, color="C3",
                  label=rf"{a.rnn_label}: $|\prod_k \partial o_k/\partial o_{{k-1}}|$")
    axes.set_xlabel("gap n − j (timesteps between step j and the output)")
    axes.xaxis.set_major_locator(integer_ticks())
    axes.set_ylabel("norm of the Jacobian product (log scale)")
    axes.set_title(f"{a.cell} (H = {a.hidden}) vs tanh RNN, n = {a.steps}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


__all__ = ["CellAnalysis", "analyze_cell", "direct_log_norms", "plot", "product_log_norms", "step_jacobians",
           "table"]
