"""What a run gives back (``Result``) and how it is reported: the text summary, the JSON, the plots."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import Config
from .weights import ParamWeights, Weights

#: Predictions shown by the text summary (the JSON lists up to JSON_PREDICTIONS).
SHOWN_PREDICTIONS = 10


@dataclass
class Result:
    config: Config
    data: str
    vocabulary: tuple[str, ...]
    weights: Weights | ParamWeights
    loss: list[float] = field(default_factory=list)  # at the start of each epoch
    final_loss: float = math.nan
    accuracy: float = math.nan  # on the held-out set when there is one
    train_accuracy: float | None = None
    predictions: list[dict] = field(default_factory=list)
    total_predictions: int = 0
    diverged_at: int | None = None  # 1-based epoch whose loss or gradient was not finite
    divergence: str = ""
    clipped_epochs: int = 0
    modes: dict = field(default_factory=dict)  # sequence length → generated module mode
    largest_gradient_norm: float = 0.0  # over the epochs, before clipping (inf once it overflowed)

    def as_json(self) -> dict:
        out = {
            "epochs": len(self.loss),
            "loss": [_finite_or_none(v) for v in self.loss],
            "accuracy": _finite_or_none(self.accuracy),
            "predictions": self.predictions,
            "weights": {k: _finite_tree(v) for k, v in self.weights.as_dict().items()},
        }
        if self.train_accuracy is not None:
            out["train_accuracy"] = _finite_or_none(self.train_accuracy)
        out["final_loss"] = _finite_or_none(self.final_loss)
        out["diverged"] = (
            None if self.diverged_at is None else {"epoch": self.diverged_at, "reason": self.divergence}
        )
        out["data"] = self.data
        out["cell"] = self.config.cell
        if self.config.skip is not None:
            out["skip"] = self.config.skip
        out["activation"] = self.config.activation
        out["optimizer"] = self.config.optimizer
        out["lr"] = self.config.lr
        if self.config.kind == "cell":
            out["hidden"] = self.config.hidden
            out["settings"] = dict(self.config.settings)
            if self.config.forget_bias is not None:
                out["forget_bias"] = self.config.forget_bias
        out["clipping"] = (
            {"norm": self.config.clip_norm}
            if self.config.clip_norm is not None
            else {"value": self.config.clip_value}
            if self.config.clip_value is not None
            else None
        )
        out["clipped_epochs"] = self.clipped_epochs
        if self.total_predictions > len(self.predictions):
            out["predictions_total"] = self.total_predictions
        return out


def _finite_or_none(value):
    """JSON has no inf/nan: non-finite numbers become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_tree(value):
    """A number or (nested) list of numbers with non-finite numbers as null."""
    return [_finite_tree(v) for v in value] if isinstance(value, list) else _finite_or_none(value)


def summary(result: Result) -> str:
    """The readable end-of-run report."""
    config = result.config
    lines = [_settings_line(result)]
    if config.clip_norm is not None:
        lines.append(f"clipping: by norm at {config.clip_norm:g} (clipped in {result.clipped_epochs} epochs)")
    elif config.clip_value is not None:
        lines.append(
            f"clipping: by value at ±{config.clip_value:g} (clipped in {result.clipped_epochs} epochs)"
        )
    modes = sorted(set(result.modes.values()))
    lines.append(
        f"gradients: generated module ({', '.join(modes)}) for length(s) "
        f"{', '.join(str(n) for n in sorted(result.modes))}"
    )
    if result.diverged_at is not None:
        return "\n".join(lines + _divergence_lines(result)) + "\n"
    first = result.loss[0]
    # the per-epoch losses (the progress lines, the demo's table) are each taken before that epoch's
    # update; the last figure is the loss after the last one
    lines.append(
        f"epochs: {len(result.loss)}   loss: {first:.6g} before the first update → "
        f"{result.final_loss:.6g} after the last"
    )
    if result.train_accuracy is not None:
        lines.append(
            f"accuracy: {result.accuracy:.3f} on the held-out set "
            f"({result.total_predictions} sequences), {result.train_accuracy:.3f} on the training set"
        )
    else:
        lines.append(f"accuracy: {result.accuracy:.3f} ({result.total_predictions} sequences)")
    lines += _prediction_lines(result)
    lines += _WEIGHT_LINES[config.kind](result.weights, result.vocabulary)
    return "\n".join(lines) + "\n"


def _settings_line(result: Result) -> str:
    config = result.config
    if config.kind == "cell":
        settings = "".join(f", {name} = {value:g}" for name, value in config.settings)
        return (
            f"data: {result.data}   cell: {config.cell_name}   hidden: {config.hidden}   "
            f"init: {config.init}(seed={config.seed}){settings}   "
            f"optimizer: {config.optimizer}   lr: {config.lr:g}"
        )
    return (
        f"data: {result.data}   activation: {config.activation}   init: {config.init}"
        + (f" (w_h = {config.init_w_h:g})" if config.init_w_h is not None else "")
        + f"   lr: {config.lr:g}   seed: {config.seed}"
        + ("" if config.kind == "notes" else f"   hidden: {config.hidden}" + ("   bias" if config.bias else ""))
        + ("" if config.optimizer == "sgd" else f"   optimizer: {config.optimizer}")
    )


def _divergence_lines(result: Result) -> list[str]:
    config, w = result.config, result.weights
    shown = [f"{v:.4g}" for v in result.loss[-5:]]
    if config.kind == "notes":
        weights = f"w_i = {_vector(w.w_i)}, w_h = {w.w_h:.6g}, w_o = {w.w_o:.6g}"
    else:
        weights = _norms(w)
    return [
        f"DIVERGED at epoch {result.diverged_at} of {config.epochs}: {result.divergence}.",
        "  Try --clip-norm 1 (gradient clipping) or a smaller --lr."
        if config.kind == "cell"
        else "  Try --clip-norm 1 (gradient clipping), a smaller --lr or a smaller --init-w-h.",
        f"  last losses: {', '.join(shown)}",
        "  weights before the failing epoch: " + weights,
    ]


def _prediction_lines(result: Result) -> list[str]:
    lines = ["predictions" + (" (held-out set)" if result.train_accuracy is not None else "") + ":"]
    width = min(40, max((len(p["text"]) for p in result.predictions[:SHOWN_PREDICTIONS]), default=4))
    for p in result.predictions[:SHOWN_PREDICTIONS]:
        text = p["text"] if len(p["text"]) <= width else p["text"][: width - 1] + "…"
        mark = "ok" if p["predicted"] == p["label"] else "WRONG"
        probability = "nan" if p["probability"] is None else f"{p['probability']:.4f}"
        lines.append(f"  {text:<{width}}  label {p['label']}  ŷ = {probability}  → {p['predicted']}  {mark}")
    if result.total_predictions > SHOWN_PREDICTIONS:
        lines.append(f"  … and {result.total_predictions - SHOWN_PREDICTIONS} more (--json lists them)")
    return lines


def _scalar_weights(w: Weights, vocabulary) -> list[str]:
    """The notes' w_i per word (or its first entries for a large vocabulary), w_h and w_o."""
    if len(vocabulary) <= 12:
        first = "weights: w_i = [" + ", ".join(f"{word}: {v:.6g}" for word, v in zip(vocabulary, w.w_i)) + "]"
    else:
        first = f"weights: w_i = {_vector(w.w_i)}"
    return [first, f"         w_h = {w.w_h:.6g}   w_o = {w.w_o:.6g}"]


def _parameter_norms(w: ParamWeights, vocabulary) -> list[str]:
    return [f"weights: {_norms(w)} (--json lists every entry)"]


def _norms(weights: Weights) -> str:
    """Each parameter's shape and Frobenius norm, e.g. ‖W_h‖ = 1.2 (4×4)."""
    names = {"w_i": "W_i", "w_h": "W_h", "w_o": "w_o", "b_h": "b_h", "b_o": "b_o"}
    parts = []
    for name, value in weights.parameters().items():
        shape = "×".join(str(n) for n in np.shape(value)) or "scalar"
        parts.append(f"‖{names.get(name, name)}‖ = {float(np.linalg.norm(value)):.4g} ({shape})")
    return ", ".join(parts)


#: Largest hidden size whose matrices the text summary prints in full (the JSON always has them).
SHOWN_HIDDEN = 8


def _matrix_weights(weights: Weights, vocabulary) -> list[str]:
    """The learned matrices: printed row by row for small H, else their shapes and norms."""
    H = np.shape(weights.w_h)[0]
    if H > SHOWN_HIDDEN or len(vocabulary) > 12:
        return [f"weights: {_norms(weights)} (--json lists every entry)"]

    def row(values):
        return "[" + ", ".join(f"{v:8.4g}" for v in values) + "]"

    lines = [f"weights: W_i ({H}×{len(vocabulary)}, columns {', '.join(vocabulary)}):"]
    lines += [f"           {row(r)}" for r in weights.w_i]
    lines.append(
        f"         W_h ({H}×{H}, singular values {row(np.linalg.svd(weights.w_h, compute_uv=False))}):"
    )
    lines += [f"           {row(r)}" for r in weights.w_h]
    lines.append(f"         w_o = {row(weights.w_o)}")
    if weights.b_h is not None:
        lines.append(f"         b_h = {row(weights.b_h)}   b_o = {weights.b_o:.6g}")
    return lines


#: Config.kind → the lines that show the learned weights.
_WEIGHT_LINES = {"notes": _scalar_weights, "matrices": _matrix_weights, "cell": _parameter_norms}


def _vector(values) -> str:
    values = list(values)
    shown = ", ".join(f"{v:.4g}" for v in values[:8])
    return f"[{shown}{', …' if len(values) > 8 else ''}] (D = {len(values)})"


def plot(result: Result, path: str) -> None:
    """The loss per epoch (log scale), with the divergence epoch marked."""
    from .analysis import integer_ticks, pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    epochs = np.arange(1, len(result.loss) + 1)
    losses = np.asarray(result.loss, dtype=float)
    finite = np.isfinite(losses) & (losses > 0)
    axes.semilogy(epochs[finite], losses[finite], color="C0", label="training loss")
    if result.diverged_at is not None:
        axes.axvline(
            result.diverged_at, color="C3", linestyle="--", label=f"diverged (epoch {result.diverged_at})"
        )
    clipping = (
        f", clip norm {result.config.clip_norm:g}"
        if result.config.clip_norm is not None
        else f", clip value {result.config.clip_value:g}"
        if result.config.clip_value is not None
        else ""
    )
    config = result.config
    model = (
        f"{config.cell_name} H = {config.hidden}, {config.optimizer}" if config.kind == "cell"
        else config.activation + ("" if config.optimizer == "sgd" else f", {config.optimizer}")
    )
    axes.set_title(f"bptt train: {result.data}, {model}, lr {config.lr:g}{clipping}")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(integer_ticks())
    axes.set_ylabel("mean binary cross-entropy")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def plot_comparison(results: dict, path) -> None:
    """The loss per epoch of several runs (label → Result) on one log-scale plot, with their accuracies."""
    from .analysis import integer_ticks, pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for colour, (label, result) in enumerate(results.items()):
        losses = np.asarray(result.loss, dtype=float)
        epochs = np.arange(1, len(losses) + 1)
        finite = np.isfinite(losses) & (losses > 0)
        accuracy = "diverged" if result.diverged_at is not None else f"held-out accuracy {result.accuracy:.2f}"
        axes.semilogy(epochs[finite], losses[finite], color=f"C{colour}", label=f"{label}: {accuracy}")
    axes.set_title(f"bptt train: {next(iter(results.values())).data}")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(integer_ticks())
    axes.set_ylabel("mean binary cross-entropy")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
