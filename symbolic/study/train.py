"""Gradient descent with the notes' update rules, the gradients coming from the generated code.

    (i)   w_i ← w_i − η ∂L/∂w_i
    (ii)  w_h ← w_h − η ∂L/∂w_h
    (iii) w_o ← w_o − η ∂L/∂w_o

L is the mean binary cross-entropy over the whole training set (full-batch descent); each length
bucket is fed in chunks to the generated ``loss_and_grad`` and the chunk means are weighted by
their sizes. Optional clipping of the gradient g = (∂L/∂w_i, ∂L/∂w_h, ∂L/∂w_o):

- by norm (Pascanu, Mikolov & Bengio 2013): if ‖g‖ > C then g ← C g/‖g‖ (the direction is kept);
- by value: each component clipped to [−C, C].

Optimizers: ``sgd`` is the notes' rule above, w ← w − η g; ``adam`` (Kingma & Ba 2015) scales each
component by running moments of g: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², w ← w − η m̂/(√v̂ + ε)
with the bias-corrected m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ).

Any other cell (``cell="lstm"``, ``"gru"`` or a cell file) trains through its generated module's dict
interface (``init_params``, ``loss_and_grad(x, y, params)``); the defaults of gated cells
(``CELL_DEFAULTS``) differ from the RNN's, see there for why, and a cell may name the constants its
per-unit parameters start at (``Cell.training``: the LSTM's forget-gate bias b_f = 5).

Large vocabularies: a one-hot x_t only selects a column of W_i, so W_i x_t = W_i[:, word_t]. From
``PROJECTED_FROM`` words on, the plain RNN's generated module is the one for a small input size D′
(2 for the scalar model, H otherwise), fed the projections instead of the one-hot vectors (see
``Projection``): its forward pass is the same arithmetic, and ∂L/∂W_i[:, d] is the sum of the gates
f′(a_t) ⊙ δ_t over the positions holding word d. Nothing that scales with D is derived, generated or
allocated per word.

A run is stopped and reported as diverged at epoch e when the loss or the gradient at e is not
finite, or when the update of epoch e throws a weight beyond ±DIVERGENCE_LIMIT. The second rule is
needed because an exploding gradient does not always reach inf by itself: with ReLU, w_h = 1.5 and 50
steps the loss is ~1e8 and the gradient ~1e9, all finite, and the one giant step that follows kills
every ReLU unit (the loss then sits at log 2 forever). Beyond 1e6 nothing sensible is left — one more
forward pass over 50 steps can overflow float64 (1e6^50 = 1e300).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..verify.interfaces import calls
from .config import (
    CELL_DEFAULTS,
    CELL_INIT,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_SEED,
    INITS,
    OPTIMIZERS,
    Config,
)
from .data import Dataset
from .modules import PROJECTED_FROM, Modules, Projection, projection_for
from .train_report import Result, _finite_or_none, plot, plot_comparison, summary
from .weights import (
    PARAMETER_COPIES,
    ParamWeights,
    Weights,
    check_memory,
    initial_weights,
    parameter_count,
)

#: Adam's moment decays β₁, β₂ and ε (Kingma & Ba 2015's defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8
#: A weight beyond ± this after an update means the run diverged (see the module docstring).
DIVERGENCE_LIMIT = 1e6
#: Without --progress and off a terminal, one line per epoch once an epoch takes this long (s).
SLOW_EPOCH_SECONDS = 1.0
#: The defaults of ``train``'s config (the plain RNN's RNN_DEFAULTS).
DEFAULT_CONFIG = Config()
#: Predictions the JSON lists (the text summary shows SHOWN_PREDICTIONS).
JSON_PREDICTIONS = 1000


def clip(gradient: np.ndarray, config: Config) -> tuple[np.ndarray, bool]:
    """Clip the flat gradient by norm or by value as configured; say whether it changed."""
    if config.clip_norm is not None:
        norm = float(np.linalg.norm(gradient))
        if norm > config.clip_norm:
            return gradient * (config.clip_norm / norm), True
    elif config.clip_value is not None:
        clipped = np.clip(gradient, -config.clip_value, config.clip_value)
        return clipped, bool(np.any(clipped != gradient))
    return gradient, False


def _module_loss_and_grad(module, x, y, weights) -> tuple[float, list]:
    """The generated ``loss_and_grad`` on one chunk, called through the weights' interface: (loss,
    gradients in the weights' order)."""
    parameters = weights.parameters()
    value, gradients = calls(module, weights.interface).loss_and_grad(x, y, parameters)
    return value, [gradients[name] for name in parameters]


def _module_forward(module, x, weights) -> np.ndarray:
    return calls(module, weights.interface).forward(x, weights.parameters())


def loss_and_grad(dataset: Dataset, weights: Weights, modules: Modules, projection: Projection | None = None):
    """Mean loss and gradient over the whole data set, from the generated ``loss_and_grad``:
    (loss, ∂L/∂w_i, ∂L/∂w_h, ∂L/∂w_o[, ∂L/∂b_h, ∂L/∂b_o]) in the weights' shapes."""
    loss, gradient = flat_loss_and_grad(dataset, weights, modules, projection)
    return (loss, *weights.from_flat(gradient).parameters().values())


def _batches(bucket, dataset: Dataset, projection: Projection | None):
    """(model input, y) chunks of a bucket: one-hot x, or the ids when the projection makes x′."""
    if projection is None:
        return bucket.chunks(len(dataset.vocabulary))
    return bucket.id_chunks(projection.chunk_width)


def flat_loss_and_grad(
    dataset: Dataset, weights: Weights, modules: Modules, projection: Projection | None = None
) -> tuple[float, np.ndarray]:
    """Mean loss and the gradient flattened in the order of ``Weights.flat``."""
    total, loss = 0, 0.0
    gradient = np.zeros(weights.flat().size)
    for bucket in dataset.buckets:
        module = modules.for_length(bucket.length)
        for x, y in _batches(bucket, dataset, projection):
            size = len(y)
            if projection is None:
                value, parts = _module_loss_and_grad(module, x, y, weights)
            else:
                value, parts = projection.loss_and_grad(module, x, y, weights)
            loss += size * float(value)
            gradient = gradient + size * np.concatenate([np.ravel(np.asarray(p, dtype=float)) for p in parts])
            total += size
    return loss / total, gradient / total


def predict(
    dataset: Dataset, weights: Weights, modules: Modules, projection: Projection | None = None
) -> np.ndarray:
    """ŷ for every sequence, in the data set's order."""
    out = np.full(dataset.size, np.nan)
    for bucket in dataset.buckets:
        module = modules.for_length(bucket.length)
        start = 0
        for x, _ in _batches(bucket, dataset, projection):
            if projection is None:
                y_hat = _module_forward(module, x, weights)
            else:
                y_hat = projection.forward(module, x, weights)
            out[bucket.order[start : start + len(x)]] = y_hat
            start += len(x)
    return out


def accuracy(dataset: Dataset, probabilities: np.ndarray) -> float:
    """Share of sequences with (ŷ ≥ 1/2) equal to the label; nan if ŷ is not finite."""
    if not np.all(np.isfinite(probabilities)):
        return math.nan
    return float(np.mean((probabilities >= 0.5) == (dataset.labels() == 1)))


class Optimizer:
    """The update Δ with w ← w − Δ: η g (sgd), or Adam's η m̂/(√v̂ + ε) (module docstring)."""

    def __init__(self, config: Config, size: int):
        self.lr, self.adam = config.lr, config.optimizer == "adam"
        self.first, self.second, self.steps = np.zeros(size), np.zeros(size), 0

    def __call__(self, gradient: np.ndarray) -> np.ndarray:
        if not self.adam:
            return self.lr * gradient
        beta1, beta2 = ADAM_BETAS
        self.steps += 1
        self.first = beta1 * self.first + (1 - beta1) * gradient
        self.second = beta2 * self.second + (1 - beta2) * gradient * gradient
        first = self.first / (1 - beta1**self.steps)
        second = self.second / (1 - beta2**self.steps)
        return self.lr * first / (np.sqrt(second) + ADAM_EPSILON)


#: How ``train`` shows progress on stderr: a bar redrawn in place (a terminal), a line per epoch
#: (--progress), a line per epoch once an epoch takes SLOW_EPOCH_SECONDS ("slow"), or nothing.
PROGRESS_MODES = ("bar", "lines", "slow")


class Progress:
    """Per-epoch progress on stderr (never stdout, which may hold --json): see PROGRESS_MODES.

    ``mode`` True means "bar" and False or None nothing. A line reads
    ``epoch 3/20  loss 0.693147  1.24 s``: the loss before that epoch's update, the time it took.
    """

    def __init__(self, total: int, mode=None, stream=None, width: int = 30, slow: float | None = None):
        self.total, self.width = total, width
        self.mode = "bar" if mode is True else (mode or None)
        if self.mode is not None and self.mode not in PROGRESS_MODES:
            raise ValueError(f"unknown progress mode {mode!r}: one of {', '.join(PROGRESS_MODES)}")
        self.stream = stream or sys.stderr
        self.slow = SLOW_EPOCH_SECONDS if slow is None else slow
        self.drawn = False
        self.started = time.perf_counter()

    @property
    def enabled(self) -> bool:
        return self.mode is not None

    def update(self, epoch: int, loss: float) -> None:
        now = time.perf_counter()
        seconds, self.started = now - self.started, now
        if self.mode is None:
            return
        count = f"{epoch:>{len(str(self.total))}}/{self.total}"
        if self.mode == "bar":
            filled = int(self.width * epoch / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\repoch {count} [{bar}] loss {loss:.4g}")
            self.drawn = True
        elif self.mode == "lines" or seconds >= self.slow:
            if self.mode == "slow":
                self.mode = "lines"  # once slow, every epoch gets its line
            self.stream.write(f"epoch {count}  loss {loss:.6g}  {seconds:.3g} s\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def train(
    dataset: Dataset,
    config: Config = DEFAULT_CONFIG,
    held_out: Dataset | None = None,
    progress: bool | str | None = False,
    loader=None,
) -> Result:
    """Run ``config.epochs`` steps of full-batch gradient descent on ``dataset``.

    ``progress``: a mode of PROGRESS_MODES (True: "bar"), shown on stderr."""
    inputs = len(dataset.vocabulary)
    check_memory(config, inputs)
    projection = projection_for(config, inputs)
    modules = Modules(
        config.activation, projection.width if projection else inputs, config.steps_from_data, loader,
        config.hidden, config.bias, config.cell, config.skip,
    )
    weights = initial_weights(config, inputs, modules)
    step = Optimizer(config, weights.flat().size)
    result = Result(config, dataset.name, dataset.vocabulary, weights)
    result.modes = {length: modules.mode(length) for length in dataset.lengths}
    for length in dataset.lengths:  # generated before the first epoch, so epochs time training only
        modules.for_length(length)
    bar = Progress(config.epochs, progress)
    # Overflow is how divergence shows up; it is detected and reported below, not warned about.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for epoch in range(1, config.epochs + 1):
            loss, gradient = flat_loss_and_grad(dataset, weights, modules, projection)
            result.loss.append(loss)
            norm = float(np.linalg.norm(gradient))
            result.largest_gradient_norm = max(result.largest_gradient_norm, norm if math.isfinite(norm) else math.inf)
            if not math.isfinite(loss) or not np.all(np.isfinite(gradient)):
                result.diverged_at = epoch
                what = "the loss" if not math.isfinite(loss) else "the gradient"
                value = loss if not math.isfinite(loss) else gradient[~np.isfinite(gradient)][0]
                result.divergence = f"{what} became {value} at epoch {epoch}"
                break
            gradient, clipped = clip(gradient, config)
            result.clipped_epochs += clipped
            # The notes' update rules (i)–(iii), for every parameter at once (or Adam's).
            new = weights.from_flat(weights.flat() - step(gradient))
            largest = float(np.max(np.abs(new.flat()), initial=0.0))
            if not new.finite() or largest > DIVERGENCE_LIMIT:
                result.diverged_at = epoch
                size = "non-finite" if not new.finite() else f"{largest:.3g}, beyond ±{DIVERGENCE_LIMIT:g}"
                result.divergence = (
                    f"the exploding gradient (norm {np.linalg.norm(gradient):.3g}) threw a weight to "
                    f"{size} in the update of epoch {epoch}"
                )
                break
            weights = new
            bar.update(epoch, loss)
        bar.close()
        result.weights = weights
        if result.diverged_at is None:
            result.final_loss, *_ = loss_and_grad(dataset, weights, modules, projection)
            train_probabilities = predict(dataset, weights, modules, projection)
            evaluated = held_out if held_out is not None else dataset
            probabilities = (
                predict(held_out, weights, modules, projection) if held_out is not None else train_probabilities
            )
            result.accuracy = accuracy(evaluated, probabilities)
            if held_out is not None:
                result.train_accuracy = accuracy(dataset, train_probabilities)
            texts, labels = evaluated.texts(), evaluated.labels()
            result.total_predictions = len(texts)
            result.predictions = [
                {
                    "text": text,
                    "label": int(label),
                    "probability": _finite_or_none(p),
                    "predicted": int(p >= 0.5) if math.isfinite(p) else None,
                }
                for text, label, p in zip(texts[:JSON_PREDICTIONS], labels, probabilities)
            ]
    return result


__all__ = [
    "CELL_DEFAULTS", "CELL_INIT", "DEFAULT_EPOCHS", "DEFAULT_LR", "DEFAULT_SEED", "INITS", "OPTIMIZERS",
    "PARAMETER_COPIES", "PROJECTED_FROM", "Config", "Modules", "ParamWeights", "Projection", "Result", "Weights",
    "accuracy", "check_memory", "clip", "flat_loss_and_grad", "initial_weights", "loss_and_grad",
    "parameter_count", "plot", "plot_comparison", "predict", "projection_for", "summary", "train",
]
