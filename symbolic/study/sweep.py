"""A controlled learning rate, measured: ``bptt train --lr 0.01,0.1,1`` trains once per rate, every
other setting held fixed, and prints one row per rate.

The notes name a too-large learning rate as a cause of unstable training (the exploding case) and a
controlled one as its remedy. Each row reports the loss before the first update and after the last,
whether and at which epoch the run diverged (a loss, gradient or weight that overflowed, as
``train`` detects it), the largest gradient norm any epoch saw (before clipping), and the accuracy
(on the held-out set where the data has one).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, replace

from ..errors import UsageError

#: Rates one sweep runs at most (each is a whole training run).
MAX_RATES = 20


@dataclass(frozen=True)
class Row:
    lr: float
    first_loss: float | None
    final_loss: float | None
    diverged_at: int | None
    divergence: str
    largest_gradient_norm: float | None
    accuracy: float | None


def rates(text: str) -> list[float]:
    """The rates of ``--lr a,b,c``: each a positive finite number, at most MAX_RATES of them."""
    parts = [part.strip() for part in str(text).split(",")]
    if not 1 <= len(parts) <= MAX_RATES or any(not part for part in parts):
        raise UsageError(
            f"--lr takes one rate or a comma-separated list of up to {MAX_RATES}, got {text!r}: e.g. --lr 0.01,0.1,1"
        )
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--lr must be positive numbers, got {part!r} in {text!r}: e.g. --lr 0.01,0.1,1")
        values.append(value)
    return values


def _number(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def sweep(dataset, config, learning_rates, held_out=None, stream=None) -> tuple[list[Row], dict]:
    """One training run per rate (``config`` with only ``lr`` changed): (the rows, rate → Result)."""
    from .train import train

    stream = stream or sys.stderr
    rows, results = [], {}
    for index, lr in enumerate(learning_rates, start=1):
        print(f"bptt train: learning rate {index}/{len(learning_rates)}, η = {lr:g}…", file=stream, flush=True)
        result = train(dataset, replace(config, lr=lr), held_out=held_out)
        results[f"η = {lr:g}"] = result
        rows.append(Row(
            lr=lr,
            first_loss=_number(result.loss[0]) if result.loss else None,
            final_loss=_number(result.final_loss) if result.diverged_at is None else None,
            diverged_at=result.diverged_at,
            divergence=result.divergence,
            largest_gradient_norm=_number(result.largest_gradient_norm),
            accuracy=_number(result.accuracy) if result.diverged_at is None else None,
        ))
    return rows, results


def _cell(value, spec: str = ".4g") -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[Row], config, data: str, held_out: bool) -> str:
    """The rows under the settings they share."""
    clipping = (f"clip-norm {config.clip_norm:g}" if config.clip_norm is not None
                else f"clip-value {config.clip_value:g}" if config.clip_value is not None else "no clipping")
    lines = [
        (f"learning rates on --data {data}: cell {config.cell_name}, "
        f"activation {config.activation}, H = {config.hidden}, {config.optimizer}, {config.epochs} epochs, "
        f"{clipping}, seed {config.seed}; only η changes"),
        (f"{'η':>10}  {'loss before → after':>25}  {'diverged':>16}  {'largest ‖g‖':>12}  "
        f"{'accuracy' + (' (held out)' if held_out else ''):>20}"),
    ]
    for row in rows:
        losses = f"{_cell(row.first_loss)} → {_cell(row.final_loss)}"
        diverged = "no" if row.diverged_at is None else f"at epoch {row.diverged_at}"
        lines.append(f"{row.lr:>10g}  {losses:>25}  {diverged:>16}  {_cell(row.largest_gradient_norm):>12}  "
                     f"{_cell(row.accuracy, '.3f'):>20}")
    return "\n".join(lines) + "\n"


def as_json(rows: list[Row], config, data: str) -> dict:
    settings = {"data": data, "cell": config.cell, "activation": config.activation, "hidden": config.hidden,
                "optimizer": config.optimizer, "epochs": config.epochs, "clip_norm": config.clip_norm,
                "clip_value": config.clip_value, "seed": config.seed}
    if config.skip is not None:
        settings["skip"] = config.skip
    return {"settings": settings, "rates": [asdict(row) for row in rows]}
