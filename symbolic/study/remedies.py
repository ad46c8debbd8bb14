"""The notes' remedies, measured side by side: ``bptt remedies``.

The notes list remedies for vanishing gradients (other activations, identity initialisation, a skip
RNN, the LSTM) and for exploding ones (ReLU with W_h = I, gradient clipping, a controlled learning
rate, the LSTM). This module trains each on the same task (``--data long``: the label is the first of
50 words) over several seeds, in two blocks. A block is a baseline and its rows; every row is the
baseline's settings with only its remedy changed (``Row.changes``), so a difference between rows is
the remedy's. Per row: the held-out accuracy's mean and range over the seeds that did not diverge,
the mean final loss, the largest gradient norm any seed saw (before clipping), how many seeds
diverged, and the seconds a run took.

The skip RNN, o_t = f(w_i x_t + w_h o_(t−1) + w_s o_(t−K)), is the built-in ``skip`` cell
(``train.Config(cell="skip", skip=K)``).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

#: Seeds per row (0 … SEEDS − 1) unless --seeds says otherwise.
SEEDS = 5
BLOCK_NAMES = ("vanishing", "exploding")
BACKENDS = ("numpy", "numba")


@dataclass(frozen=True)
class Row:
    """A remedy: its name and the settings it changes from its block's baseline ((name, value) pairs)."""

    name: str
    changes: tuple = ()


@dataclass(frozen=True)
class Block:
    """A baseline (``base``, the settings of train.Config plus ``skip``) and the rows compared to it;
    ``fixed`` names the settings every row shares, ``remedies`` those a row may change."""

    name: str
    problem: str
    base: tuple
    fixed: tuple
    remedies: tuple
    rows: tuple

    def settings(self, row: Row) -> dict:
        """The row's full settings: the baseline's, with the row's changes."""
        return {**dict(self.base), **dict(row.changes)}


#: Adam, η 0.03, clip-norm 1, H 16, 80 epochs: the settings under which the issue's tanh RNN failed and
#: the skip cell learned (and the LSTM's and GRU's defaults, CELL_DEFAULTS in train.py).
VANISHING = Block(
    name="vanishing",
    problem="vanishing gradients: the remedies against a tanh RNN",
    base=(("cell", "rnn"), ("activation", "tanh"), ("hidden", 16), ("optimizer", "adam"), ("lr", 0.03),
          ("epochs", 80), ("clip_norm", 1.0), ("clip_value", None)),
    fixed=("hidden", "optimizer", "lr", "epochs", "clip_norm", "clip_value"),
    remedies=("activation", "init", "cell", "skip"),
    rows=(
        Row("tanh RNN (baseline)"),
        Row("sigmoid", (("activation", "sigmoid"),)),
        Row("ReLU", (("activation", "relu"),)),
        Row("ReLU, W_h = I", (("activation", "relu"), ("init", "identity"))),
        Row("skip RNN, K = 3", (("cell", "skip"), ("skip", 3))),
        Row("skip RNN, K = 10", (("cell", "skip"), ("skip", 10))),
        Row("LSTM", (("cell", "lstm"),)),
        Row("GRU", (("cell", "gru"),)),
    ),
)

#: ReLU from W_h = 1.5·I over 50 steps: the first gradient is ~1e10, so plain gradient descent at η 0.1
#: diverges at once. Clip-value 0.1: the gradient has 320 entries, so its norm stays below 0.1·√320 ≈ 1.8.
EXPLODING = Block(
    name="exploding",
    problem="exploding gradients: the remedies against ReLU started at W_h = 1.5·I",
    base=(("cell", "rnn"), ("activation", "relu"), ("hidden", 16), ("init_w_h", 1.5), ("optimizer", "sgd"),
          ("lr", 0.1), ("epochs", 80), ("clip_norm", None), ("clip_value", None)),
    fixed=("hidden", "optimizer", "epochs"),
    # the LSTM row drops the RNN's W_h start and ReLU (the LSTM's activations are its own)
    remedies=("clip_norm", "clip_value", "lr", "init_w_h", "cell", "activation"),
    rows=(
        Row("ReLU, W_h = 1.5·I (baseline)"),
        Row("clip by norm 1", (("clip_norm", 1.0),)),
        Row("clip by value 0.1", (("clip_value", 0.1),)),
        Row("η = 0.01", (("lr", 0.01),)),
        Row("η = 1e-6", (("lr", 1e-6),)),
        Row("η = 1e-11", (("lr", 1e-11),)),
        Row("ReLU, W_h = I", (("init_w_h", 1.0),)),
        Row("LSTM", (("cell", "lstm"), ("activation", "tanh"), ("init_w_h", None))),
    ),
)

BLOCKS = (VANISHING, EXPLODING)


@dataclass
class Measured:
    """One row's runs, per seed: held-out and training accuracy, final loss (None where the run diverged),
    the largest gradient norm (None once it overflowed), the diverged epoch (None: it did not)."""

    row: Row
    seeds: list
    accuracies: list
    train_accuracies: list
    final_losses: list
    largest_gradient_norms: list
    diverged_at: list
    seconds: float

    @property
    def finished(self) -> list[float]:
        return [a for a, d in zip(self.accuracies, self.diverged_at) if d is None and a is not None]

    @property
    def diverged(self) -> int:
        return sum(d is not None for d in self.diverged_at)

    def as_json(self) -> dict:
        finished = self.finished
        return {
            "name": self.row.name,
            "changes": {key: value for key, value in self.row.changes},
            "accuracy": None if not finished else
            {"mean": float(np.mean(finished)), "min": min(finished), "max": max(finished)},
            "diverged": self.diverged,
            "runs": [
                {"seed": seed, "accuracy": accuracy, "train_accuracy": trained, "final_loss": loss,
                 "largest_gradient_norm": norm, "diverged_at": diverged}
                for seed, accuracy, trained, loss, norm, diverged in zip(
                    self.seeds, self.accuracies, self.train_accuracies, self.final_losses,
                    self.largest_gradient_norms, self.diverged_at)
            ],
            "seconds": self.seconds,
        }


def blocks(name: str = "all") -> tuple[Block, ...]:
    """The blocks ``--block NAME`` selects: vanishing, exploding or all."""
    if name == "all":
        return BLOCKS
    chosen = tuple(block for block in BLOCKS if block.name == name)
    if not chosen:
        raise UsageError(f"unknown --block {name!r}: choose {', '.join(BLOCK_NAMES)} or all")
    return chosen


def config_for(block: Block, row: Row, seed: int, epochs: int | None = None):
    """The train.Config of one run: the row's settings, ``seed``, and ``epochs`` if given."""
    from .train import Config

    settings = block.settings(row)
    if epochs is not None:
        settings["epochs"] = epochs
    config = Config(seed=seed, **settings)
    if settings["clip_norm"] is None and settings["clip_value"] is None and config.clip_norm is not None:
        # A gated cell's default clip-norm 1 would be a second remedy in a block without clipping.
        object.__setattr__(config, "clip_norm", None)
    return config


def _number(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def measure(block: Block, row: Row, dataset, held_out, seeds: int = SEEDS, epochs: int | None = None,
            loader=None) -> Measured:
    """Train the row once per seed 0 … seeds − 1."""
    from .train import train

    measured = Measured(row, list(range(seeds)), [], [], [], [], [], 0.0)
    started = time.perf_counter()
    for seed in measured.seeds:
        result = train(dataset, config_for(block, row, seed, epochs), held_out=held_out, loader=loader)
        finished = result.diverged_at is None
        measured.accuracies.append(_number(result.accuracy) if finished else None)
        measured.train_accuracies.append(_number(result.train_accuracy) if finished and held_out is not None else None)
        measured.final_losses.append(_number(result.final_loss) if finished else None)
        measured.largest_gradient_norms.append(
            None if math.isinf(result.largest_gradient_norm) else float(result.largest_gradient_norm))
        measured.diverged_at.append(result.diverged_at)
    measured.seconds = (time.perf_counter() - started) / max(1, seeds)
    return measured


def run(dataset, held_out, chosen=BLOCKS, seeds: int = SEEDS, epochs: int | None = None, backend: str = "numpy",
        stream=None) -> dict:
    """Every row of the chosen blocks: block name → list of Measured; a progress line per row on stderr."""
    from functools import partial

    from ..codegen import load

    if backend not in BACKENDS:
        raise UsageError(f"unknown --backend {backend!r}: choose {' or '.join(BACKENDS)}")
    stream = stream or sys.stderr
    loader = partial(load, backend=backend)
    results = {}
    for block in chosen:
        results[block.name] = []
        for index, row in enumerate(block.rows, start=1):
            print(f"bptt remedies: {block.name} {index}/{len(block.rows)} {row.name}, {seeds} seeds…",
                  file=stream, flush=True)
            results[block.name].append(measure(block, row, dataset, held_out, seeds, epochs, loader))
    return results


def _value(value, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def describe(block: Block, epochs: int | None = None) -> str:
    """The baseline's settings in words, e.g. ``tanh, H = 16, Adam η = 0.03, 80 epochs, clip-norm 1``."""
    base = block.settings(block.rows[0])
    clipping = (f"clip-norm {base['clip_norm']:g}" if base["clip_norm"] is not None
                else f"clip-value {base['clip_value']:g}" if base["clip_value"] is not None else "no clipping")
    start = f", W_h = {base['init_w_h']:g}·I" if base.get("init_w_h") is not None else ""
    optimizer = "Adam" if base["optimizer"] == "adam" else "plain gradient descent"
    return (f"{base['cell']} {base['activation']}{start}, H = {base['hidden']}, {optimizer} η = {base['lr']:g}, "
            f"{base['epochs'] if epochs is None else epochs} epochs, {clipping}")


def table(results: dict, data: str, seeds: int, epochs: int | None = None, backend: str = "numpy",
          held_out: bool = True) -> str:
    """Each block under the settings it holds fixed."""
    measured_on = "held-out accuracy" if held_out else "accuracy (training set)"
    lines = [f"the notes' remedies on --data {data}, seeds 0-{seeds - 1} per row, {backend} modules"]
    for block in BLOCKS:
        if block.name not in results:
            continue
        lines += ["", f"{block.problem}", f"  baseline: {describe(block, epochs)}",
                  f"  a row changes only its remedy, never {', '.join(block.fixed)}",
                  (f"  {'remedy':<30} {measured_on:>24}  {'train':>5}  {'final loss':>10}  {'largest ‖g‖':>11}  "
                   f"{'diverged':>8}  {'s/run':>6}")]
        for measured in results[block.name]:
            finished = measured.finished
            accuracy = (f"{np.mean(finished):.3f} [{min(finished):.2f}, {max(finished):.2f}]" if finished
                        else "–")
            losses = [v for v in measured.final_losses if v is not None]
            trained = [v for v in measured.train_accuracies if v is not None]
            norms = [v for v in measured.largest_gradient_norms if v is not None]
            largest = "inf" if len(norms) < len(measured.largest_gradient_norms) else _value(max(norms, default=None))
            lines.append(
                f"  {measured.row.name:<30} {accuracy:>24}  {_value(np.mean(trained) if trained else None, '.2f'):>5}  "
                f"{_value(np.mean(losses) if losses else None):>10}  "
                f"{largest:>11}  {measured.diverged:>4}/{len(measured.seeds):<3}  {measured.seconds:>6.2f}")
    lines += ["", f"{measured_on}: mean [min, max] over the seeds that did not diverge (chance is about 0.5);",
              "train: mean accuracy on the training set; final loss: mean over those seeds (training set);",
              "largest ‖g‖: over every epoch and seed, before clipping"]
    return "\n".join(lines) + "\n"


def as_json(results: dict, data: str, seeds: int, epochs: int | None = None, backend: str = "numpy") -> dict:
    out = {"data": data, "seeds": list(range(seeds)), "backend": backend, "blocks": []}
    for block in BLOCKS:
        if block.name in results:
            base = block.settings(block.rows[0])
            if epochs is not None:
                base["epochs"] = epochs
            out["blocks"].append({"name": block.name, "problem": block.problem, "baseline": base,
                                  "fixed": list(block.fixed), "remedies": list(block.remedies),
                                  "rows": [measured.as_json() for measured in results[block.name]]})
    return out


def plot(results: dict, path, data: str, seeds: int, epochs: int | None = None) -> None:
    """One panel per block: each seed's held-out accuracy as a dot, the mean as a bar, diverged runs
    counted beside the row."""
    from .analysis import pyplot, save_figure

    plt = pyplot()
    shown = [block for block in BLOCKS if block.name in results]
    heights = [len(results[block.name]) for block in shown]
    figure, panels = plt.subplots(len(shown), 1, figsize=(7.0, 1.0 + 0.42 * sum(heights) + 0.6 * len(shown)),
                                  gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axes, block in zip(panels[:, 0], shown):
        rows = results[block.name]
        positions = np.arange(len(rows))[::-1]
        for position, measured in zip(positions, rows):
            finished = measured.finished
            if finished:
                axes.barh(position, np.mean(finished), color="C0", alpha=0.35, height=0.6)
                axes.plot(finished, [position] * len(finished), "o", color="C0", markersize=4)
            if measured.diverged:
                axes.text(1.02, position, f"{measured.diverged}/{len(measured.seeds)} diverged", color="C3",
                          va="center", fontsize=8)
        axes.axvline(0.5, color="grey", linestyle=":", linewidth=1)
        axes.set_yticks(positions, [measured.row.name for measured in rows], fontsize=8)
        axes.set_xlim(0, 1.3)
        axes.set_ylim(-0.6, len(rows) - 0.4)
        axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        axes.set_title(f"{block.name}: {describe(block, epochs)}", fontsize=8)
        axes.grid(True, axis="x", alpha=0.3)
    panels[-1, 0].set_xlabel(f"held-out accuracy on --data {data} ({seeds} seeds: dots; bar: mean)")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
