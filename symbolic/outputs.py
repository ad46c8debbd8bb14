"""The output side of a model as data, beside the cell: where the loss enters and what it is.

``readout``: "last" (one readout after the last step, the notes' many-to-one model) or "every" (a
readout after every step, many-to-many). ``loss``: "bce" (ŷ = σ(z), binary cross-entropy), "softmax"
(ŷ = softmax(z) over ``classes`` K, cross-entropy with the class index y) or "mse" (ŷ = z linear,
(ŷ − y)² without a factor ½, as torch's MSELoss). ``reduction``: "steps" (the batch mean of the sum over
steps, min-char-rnn's and CS231n's) or "all" (the mean over every step and sequence, torch's
CrossEntropyLoss on (B·n) rows). A mask (B, n) of 0/1 is an argument of a call, not of the model.

The error each readout sends back, ∂ℓ/∂z (the engine's ``output_factor``): ŷ − y for bce, ŷ − e_y for
softmax, 2 (ŷ − y) for mse. A stage reads these fields; it never asks which cell it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

READOUTS = ("last", "every")
LOSSES = ("bce", "softmax", "mse")
REDUCTIONS = ("steps", "all")


@dataclass(frozen=True)
class Outputs:
    """Where the loss enters (``readout``), which loss, over how many classes, and its reduction."""

    readout: str = "last"
    loss: str = "bce"
    #: K, the classes of the softmax (None for bce and mse, whose readout gives one number)
    classes: int | None = None
    reduction: str = "steps"

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise UsageError(f"unknown readout {self.readout!r}: choose --readout last or --readout every")
        if self.loss not in LOSSES:
            raise UsageError(f"unknown loss {self.loss!r}: choose --loss bce, softmax or mse")
        if self.reduction not in REDUCTIONS:
            raise UsageError(f"unknown reduction {self.reduction!r}: choose --reduction steps or --reduction all")
        if self.readout == "last" and self.reduction != "steps":
            raise UsageError("--reduction all averages over the steps of --readout every: drop --reduction, "
                             "or add --readout every")
        if self.loss == "softmax":
            classes = 2 if self.classes is None else self.classes
            try:
                classes = int(str(classes).strip())
            except ValueError:
                raise UsageError(f"--classes must be a whole number K >= 2, got {self.classes!r}: "
                                 "pass e.g. --classes 3") from None
            if classes < 2:
                raise UsageError(f"--classes must be a whole number K >= 2, got {classes}: pass e.g. --classes 3")
            object.__setattr__(self, "classes", classes)
        elif self.classes is not None:
            raise UsageError(f"--classes is the K of --loss softmax and does not apply to --loss {self.loss}: "
                             "drop --classes, or use --loss softmax")

    @property
    def default(self) -> bool:
        """The notes' many-to-one setting: σ and binary cross-entropy after the last step."""
        return self == Outputs()

    @property
    def every(self) -> bool:
        return self.readout == "every"

    @property
    def width(self) -> int | None:
        """Rows of the readout weight: K for softmax, None for a vector (H,)."""
        return self.classes if self.loss == "softmax" else None

    def readout_shape(self) -> tuple:
        """The readout weight's shape in "K"/"H": (K, H) for softmax, (H,) otherwise."""
        return ("K", "H") if self.width else ("H",)

    def bias_shape(self) -> tuple:
        return ("K",) if self.width else ()

    @property
    def describe(self) -> str:
        """One phrase for documents and reports."""
        where = "after every step" if self.every else "after the last step"
        what = {"bce": "σ and binary cross-entropy", "softmax": f"softmax over K = {self.classes} classes and "
                "cross-entropy", "mse": "a linear readout and squared error"}[self.loss]
        how = ""
        if self.every:
            how = ("; the batch mean of the sum over steps" if self.reduction == "steps"
                   else "; the mean over every step and sequence")
        return f"{what} {where}{how}"

    @property
    def flags(self) -> str:
        """The command-line flags that give these outputs ("" for the default)."""
        parts = []
        if self.readout != "last":
            parts.append(f"--readout {self.readout}")
        if self.loss != "bce":
            parts.append(f"--loss {self.loss}")
        if self.loss == "softmax":
            parts.append(f"--classes {self.classes}")
        if self.reduction != "steps":
            parts.append(f"--reduction {self.reduction}")
        return " ".join(parts)


def outputs_of(readout=None, loss=None, classes=None, reduction=None) -> Outputs:
    """Outputs from command-line values (None: the default of each)."""
    return Outputs(readout=readout or "last", loss=loss or "bce", classes=classes,
                   reduction=reduction or "steps")


__all__ = ["LOSSES", "READOUTS", "REDUCTIONS", "Outputs", "outputs_of"]
