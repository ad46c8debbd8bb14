"""Which loss terms reach which step: ∂L/∂θ of a loss at every step, split by the gap it crosses.

With a readout after every step, L = Σ_t L_t (or its mean over the steps), and BPTT gives

    ∂L/∂θ = Σ_t Σ_(j ≤ t) ∂L_t/∂s_j · ∂⁺s_j/∂θ,

the loss at step t sent back to step j, where the immediate partial ∂⁺s_j/∂θ meets it: the part of
the gradient that crosses the gap t − j. The long-term terms are the large gaps; when the Jacobian
product ∂s_t/∂s_j vanishes, the gradient is made of the small gaps only, and the model learns nothing
that needs more than a few steps of memory.

The parts come from the generated module's ``bptt_terms`` (entry j of each parameter's terms is what
flows through step j): the sequence is repeated n times with the mask e_t on copy t, so copy t holds
∂L_t/∂θ split by j. Nothing here names a cell: the recurrent matrices (those ``--w-h-scale`` sets) are
the cell's matrices applied to anything but x_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import UsageError
from ..model import Model
from .figures import integer_ticks, pyplot, save_figure
from .matrix_analysis import _nested, _sequence, orthogonal
from .measures import TOLERANCE, _cell, _norms, _number, _rows_shown, _share_cell, _shares

#: Floats per chunk of copies: n·(Σ parameter sizes + S·H) per copy, chunked so memory stays bounded.
ELEMENTS_LIMIT = 20_000_000
#: Largest n²·(Σ parameter sizes) measured: the work grows with the square of the length.
WORK_LIMIT = 4_000_000_000
#: Shares of the gradient whose horizon is reported: the gap within which this much of it arrives.
HORIZONS = (0.9, 0.99)


@dataclass
class Reach:
    """One sequence with a loss at every step: the gradient's parts per gap and the δ's decay."""

    cell: str
    words: list[str]
    labels: list
    hidden: int
    seed: int
    outputs: object           # symbolic.outputs.Outputs
    settings: dict            # per-unit parameter → the constant it was set to
    recurrent: list[str]      # the matrices --w-h-scale sets
    w_h_scale: float | None
    params: dict
    parts: dict               # parameter → (n, *shape): Σ_t of what L_t sends through step t − gap
    reach_log10: np.ndarray   # (n,) mean over t of log10 ‖∂L_t/∂s_(t−gap)‖ / ‖∂L_t/∂s_t‖ (all states)
    growth: float
    regime: str
    reason: str

    @property
    def steps(self) -> int:
        return len(self.words)

    def norms(self, name: str | None = None) -> np.ndarray:
        """‖part of ∂L/∂θ at each gap‖ over every cell parameter (or one of them)."""
        names = [name] if name else list(self.parts)
        flat = np.concatenate([self.parts[k].reshape(self.steps, -1) for k in names], axis=1)
        return _norms(flat, axis=1)

    def horizon(self, share: float) -> int | None:
        """The smallest gap G such that the gaps 0..G hold ``share`` of Σ_gap ‖part‖ (None on overflow)."""
        shares = _shares(self.norms())
        if not np.all(np.isfinite(shares)):
            return None
        return int(np.searchsorted(np.cumsum(shares), share - 1e-12))

    def as_json(self) -> dict:
        return {
            "cell": self.cell,
            "steps": self.steps,
            "hidden": self.hidden,
            "input": list(self.words),
            "labels": list(self.labels),
            "seed": self.seed,
            "readout": self.outputs.readout,
            "loss": self.outputs.loss,
            "classes": self.outputs.classes,
            "reduction": self.outputs.reduction,
            "settings": {name: float(value) for name, value in self.settings.items()},
            "recurrent_matrices": list(self.recurrent),
            "w_h_scale": self.w_h_scale,
            "weights": {name: _nested(value) for name, value in self.params.items()},
            "gaps": list(range(self.steps)),
            "gradient_norms": _nested(self.norms()),
            "gradient_shares": _nested(_shares(self.norms())),
            "parameter_shares": {name: _nested(_shares(self.norms(name))) for name in self.parts},
            "parts": {name: _nested(value) for name, value in self.parts.items()},
            "delta_ratios": _nested(np.power(10.0, self.reach_log10)),
            "horizons": {f"{share:g}": self.horizon(share) for share in HORIZONS},
            "growth_per_step": _number(self.growth),
            "regime": self.regime,
            "regime_reason": self.reason,
            "tolerance": TOLERANCE,
        }


def analyze_reach(model: Model, derivation, steps: int | None = None, words: list[str] | None = None,
                  seed: int = 0, settings: dict | None = None, w_h_scale: float | None = None) -> Reach:
    """The gradient of one sequence's loss at every step split by gap, at ``init_params(seed)`` with
    ``settings`` and, with ``w_h_scale`` S, every recurrent matrix S·Q (Q orthogonal)."""
    from ..codegen import load
    from .data import encode

    words = _sequence(steps, words, seed)
    x = encode(list(words))[None]
    n, d = len(words), derivation
    module = load(replace(model, steps=1, inputs=x.shape[2]), "loop")
    params = _weights(d, module.init_params(seed), dict(settings or {}), w_h_scale, seed)
    labels = _labels(model.outputs, n, seed)
    size = sum(int(np.size(params[name])) for name in _cell_parameters(d, params))
    if n * n * size > WORK_LIMIT:
        raise UsageError(f"n²·(parameters) = {n * n * size} is too much to analyze (limit {WORK_LIMIT}): "
                         "choose fewer --steps or a smaller --hidden")
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        parts, reach = _split_by_gap(module, x, labels, params, d)
    scale = 1.0 / n if model.outputs.reduction == "all" else 1.0
    parts = {name: value * scale for name, value in parts.items()}
    growth = _growth(reach)
    regime, reason = _judge(growth, n)
    return Reach(
        cell=d.cell.name, words=list(words), labels=[_plain(v) for v in np.ravel(labels)], hidden=model.hidden,
        seed=seed, outputs=model.outputs, settings=dict(settings or {}), recurrent=_recurrent(d),
        w_h_scale=w_h_scale, params=params, parts=parts, reach_log10=reach, growth=growth,
        regime=regime, reason=reason,
    )


def _cell_parameters(d, params: dict) -> list[str]:
    """The parameters of the step (not the readout, whose gradient crosses no gap)."""
    return [name for name in params if name not in (d.cell.readout, d.cell.readout_bias)]


def _recurrent(d) -> list[str]:
    """The cell's matrices applied to something other than the input x_t."""
    return sorted({linear.matrix for linear in d.linears if linear.operand != "x"})


def _weights(d, params: dict, settings: dict, w_h_scale: float | None, seed: int) -> dict:
    params = {name: np.array(value, dtype=float) for name, value in params.items()}
    for name, value in settings.items():
        if name not in d.cell.vectors:
            have = ", ".join(d.cell.vectors) or "none"
            raise UsageError(f"cell {d.cell.name} has no per-unit parameter {name} to set (its per-unit "
                             f"parameters: {have})")
        if not math.isfinite(value):
            raise UsageError(f"the value of {name} must be a finite number, got {value!r}")
        params[name] = np.full(params[name].shape, float(value))
    if w_h_scale is not None:
        if not math.isfinite(w_h_scale):
            raise UsageError(f"--w-h-scale must be a finite number, got {w_h_scale!r}")
        for k, name in enumerate(_recurrent(d)):
            rows, columns = params[name].shape
            if rows == columns:
                params[name] = w_h_scale * orthogonal(rows, seed + k)
    return params


def _labels(outputs, steps: int, seed: int) -> np.ndarray:
    """y (1, n) drawn from ``seed`` ((1,) for a readout after the last step only): class indices for
    softmax, 0/1 for bce, N(0, 1) for mse."""
    rng = np.random.default_rng([seed, 2])
    size = (1, steps) if outputs.every else (1,)
    if outputs.loss == "softmax":
        return rng.integers(0, outputs.classes, size=size)
    if outputs.loss == "bce":
        return rng.integers(0, 2, size=size).astype(float)
    return np.round(rng.normal(size=size), 3)


def _plain(value):
    return int(value) if float(value).is_integer() else float(value)


def _split_by_gap(module, x, labels, params, d) -> tuple[dict, np.ndarray]:
    """Per parameter, Σ_t of ∂L_t/∂θ's term at step t − gap, (n, *shape); and per gap the mean over t of
    log10 ‖∂L_t/∂s_(t−gap)‖ / ‖∂L_t/∂s_t‖, the states side by side."""
    n = x.shape[1]
    names = _cell_parameters(d, params)
    per_copy = n * (sum(int(np.size(params[k])) for k in names) + len(d.states) * _hidden(params, d))
    chunk = max(1, ELEMENTS_LIMIT // max(per_copy, 1))
    parts = {name: np.zeros((n, *np.shape(params[name]))) for name in names}
    log_ratios = np.full((n, n), np.nan)  # [t, gap]
    every = labels.ndim == 2   # a loss at every step: copy t keeps the loss at step t; else only step n has one
    losses = np.arange(n) if every else np.array([n - 1])
    for start in range(0, len(losses), chunk):
        copies = losses[start:start + chunk]
        keywords = {}
        if every:
            keywords["mask"] = np.zeros((len(copies), n))
            keywords["mask"][np.arange(len(copies)), copies] = 1.0
        terms = module.bptt_terms(np.repeat(x, len(copies), axis=0), np.repeat(labels, len(copies), axis=0),
                                  params, **keywords)
        deltas = np.concatenate([np.asarray(terms["deltas"][s], float) for s in d.states], axis=2)
        sizes = _norms(deltas, axis=2)  # (copies, n)
        for row, t in enumerate(copies):
            for name in names:
                parts[name][: t + 1] += np.asarray(terms["terms"][name][row, t::-1], dtype=float)
            log_ratios[t, : t + 1] = np.log10(sizes[row, t::-1]) - np.log10(sizes[row, t])
    return parts, _mean_over_steps(log_ratios)


def _hidden(params: dict, d) -> int:
    return int(np.shape(params[d.cell.readout])[-1])


def _mean_over_steps(log_ratios: np.ndarray) -> np.ndarray:
    """Per gap, the mean over the loss steps t ≥ gap whose δ reaches that far (a ReLU unit that is off
    stops some steps' δ dead); −inf when none does, nan when the ratios overflowed."""
    out = np.full(log_ratios.shape[1], np.nan)
    for gap in range(log_ratios.shape[1]):
        column = log_ratios[gap:, gap]
        if np.any(np.isfinite(column)):
            out[gap] = float(np.mean(column[np.isfinite(column)]))
        elif np.all(np.isneginf(column)):
            out[gap] = -math.inf
    return out


def _growth(reach_log10: np.ndarray) -> float:
    """The δ's factor per step of gap: 10^slope of the least-squares line through the mean log ratios."""
    gaps = np.arange(len(reach_log10))
    keep = np.isfinite(reach_log10)
    if keep.sum() < 2:
        return 0.0 if np.any(np.isneginf(reach_log10)) else math.nan   # no loss reaches an earlier step
    slope = np.polyfit(gaps[keep], reach_log10[keep], 1)[0]
    with np.errstate(over="ignore", under="ignore"):
        return float(10.0**slope)


def _judge(growth: float, steps: int) -> tuple[str, str]:
    if steps < 2:
        return "stable", "one step: the loss reaches no earlier step"
    if math.isnan(growth):
        return "exploding", "∂L_t/∂s_j is not finite at every gap"
    what = f"‖∂L_t/∂s_(t−gap)‖ changes by a factor m = {growth:.4g} per step of gap"
    if growth < 1 - TOLERANCE:
        return "vanishing", f"{what} (m < {1 - TOLERANCE:g}): the long-term terms fade"
    if growth > 1 + TOLERANCE:
        return "exploding", f"{what} (m > {1 + TOLERANCE:g}): the long-term terms dominate"
    return "stable", f"{what} (within {TOLERANCE:g} of 1)"


def _setting(a: Reach) -> str:
    o = a.outputs
    loss = {"bce": "σ and binary cross-entropy", "softmax": f"softmax over {o.classes} classes and cross-entropy",
            "mse": "a linear readout and squared error"}[o.loss]
    if not o.every:
        return f"one loss after the last step ({loss})"
    reduction = "summed over the steps" if o.reduction == "steps" else "averaged over the steps"
    return f"a loss at every step ({loss}, {reduction})"


def _weights_line(a: Reach) -> str:
    parts = [f"init_params({a.seed})"]
    parts += [f"{name} = {value:g}" for name, value in a.settings.items()]
    if a.w_h_scale is not None:
        parts.append(f"{', '.join(a.recurrent)} = {a.w_h_scale:g}·Q (Q orthogonal)")
    return "; ".join(parts)


def table(a: Reach) -> str:
    """The report: the setting, the gradient's share per gap, the horizons and the regime."""
    norms, shares = a.norms(), _shares(a.norms())
    cumulative = np.cumsum(shares)
    shown = "" if a.steps <= 30 else " …"
    lines = [
        f"cell {a.cell}, H = {a.hidden}, n = {a.steps}: {_setting(a)}",
        f"input: {' '.join(a.words[:30])}{shown}",
        f"labels y_t (drawn with --seed {a.seed}): {' '.join(str(v) for v in a.labels[:30])}{shown}",
        f"weights: {_weights_line(a)}",
        "",
        "∂L/∂θ = Σ_t Σ_(j ≤ t) ∂L_t/∂s_j · ∂⁺s_j/∂θ: the loss at step t reaches step j across the gap t − j"
        + ("" if a.outputs.every else " (t = n only)"),
        f"(θ: the cell's {len(a.parts)} parameters; the readout's gradient crosses no gap).",
        "",
        f"{'gap':>5}  {'‖part of ∂L/∂θ‖':>16}  {'share':>7}  {'cumulative':>10}  {'‖∂L_t/∂s_(t−gap)‖/‖∂L_t/∂s_t‖':>30}",
    ]
    for gap in _rows_shown(a.steps):
        ratio = _cell(10.0 ** a.reach_log10[gap]) if not math.isnan(a.reach_log10[gap]) else "overflow"
        lines.append(f"{gap:>5}  {_cell(norms[gap]):>16}  {_share_cell(shares[gap]):>7}  "
                     f"{_share_cell(cumulative[gap]):>10}  {ratio:>30}")
    lines.append("")
    horizons = [(share, a.horizon(share)) for share in HORIZONS]
    if all(gap is not None for _, gap in horizons):
        said = " and ".join(f"{share:.0%} from gaps ≤ {gap}" for share, gap in horizons)
        lines.append(f"{said} (of 0..{a.steps - 1}): the loss terms farther back carry the rest.")
    else:
        lines.append("float64 overflowed: the shares read '—'.")
    lines.append(f"regime: {a.regime} — {a.reason}")
    return "\n".join(lines) + "\n"


def plot(a: Reach, path) -> None:
    """The share of ∂L/∂θ per gap and the δ ratio against the gap (log scale)."""
    plt = pyplot()
    gaps = np.arange(a.steps)
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    with np.errstate(over="ignore", under="ignore"):
        shares, ratios = _shares(a.norms()), np.power(10.0, a.reach_log10)
    marker = "o" if a.steps <= 40 else None
    for values, label, color in ((shares, r"share of $\partial L/\partial\theta$ crossing the gap", "C0"),
                                 (ratios, r"$\|\partial L_t/\partial s_{t-gap}\| / \|\partial L_t/\partial s_t\|$",
                                  "C3")):
        keep = np.isfinite(values) & (values > 0)
        axes.semilogy(gaps[keep], values[keep], marker=marker, markersize=3, color=color, label=label)
    axes.set_xlabel("gap t − j (steps between the loss at t and step j)")
    axes.xaxis.set_major_locator(integer_ticks())
    axes.set_title(f"{a.cell} (H = {a.hidden}), n = {a.steps}: which loss terms reach which step")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


__all__ = ["Reach", "analyze_reach", "plot", "table"]
