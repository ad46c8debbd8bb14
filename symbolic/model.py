"""The model specification, validated in one place.

The notes' many-to-one RNN: o_0 = 0, o_t = f(w_i·x_t + w_h o_{t-1}), ŷ = σ(w_o o_n),
L = −y log ŷ − (1 − y) log(1 − ŷ).
"""

from __future__ import annotations

from dataclasses import dataclass

from .activations import ACTIVATIONS
from .errors import UsageError

CELLS = ("rnn",)
#: Cells the command line names but this version cannot derive yet.
PLANNED_CELLS = ("lstm",)
#: The notes' one-hot vocabulary; its size is the default input size D.
VOCABULARY = ("cat", "mat", "rat")


def _positive_int(value, name: str, flag: str, example: int = 3) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            text = str(value).strip()
            as_int = int(text)
        except (TypeError, ValueError):
            raise UsageError(
                f"{name} must be a positive whole number, got {value!r}: pass e.g. {flag} {example}"
            ) from None
        value = as_int
    if value < 1:
        raise UsageError(f"{name} must be a positive whole number, got {value}: pass e.g. {flag} {example}")
    return value


@dataclass(frozen=True)
class Model:
    """A validated model: steps n, activation f, input size D, hidden size H, cell."""

    steps: int = 3
    activation: str = "tanh"
    inputs: int = len(VOCABULARY)
    hidden: int = 1
    cell: str = "rnn"
    #: Biases b_h (inside f) and b_o (in the output logit); off in the notes' model.
    bias: bool = False

    def __post_init__(self):
        object.__setattr__(self, "steps", _positive_int(self.steps, "the number of steps", "--steps"))
        object.__setattr__(self, "inputs", _positive_int(self.inputs, "the input size", "--inputs"))
        object.__setattr__(self, "hidden", _positive_int(self.hidden, "the hidden size", "--hidden", 1))
        if self.activation not in ACTIVATIONS:
            known = ", ".join(ACTIVATIONS)
            raise UsageError(f"unknown activation {self.activation!r}: choose one of {known}")
        if self.cell in PLANNED_CELLS:
            raise UsageError(
                f"cell {self.cell!r} is not supported yet: this version derives the notes' plain RNN, "
                "use --cell rnn"
            )
        if self.cell not in CELLS:
            raise UsageError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        object.__setattr__(self, "bias", bool(self.bias))

    @property
    def scalar(self) -> bool:
        """The notes' model exactly: one hidden unit, no biases."""
        return self.hidden == 1 and not self.bias

    def require_scalar(self, what: str = "this version") -> Model:
        """Refuse hidden size > 1 or biases in a stage that handles only the notes' scalar model."""
        if self.hidden != 1:
            raise UsageError(
                f"hidden size {self.hidden} is not supported yet: {what} handles the notes' "
                "scalar model, use --hidden 1"
            )
        if self.bias:
            raise UsageError(f"--bias is not supported yet: {what} handles the notes' bias-free model")
        return self
