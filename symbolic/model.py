"""The model specification, validated in one place.

The notes' many-to-one RNN: o_0 = 0, o_t = f(w_i·x_t + w_h o_{t-1}), ŷ = σ(w_o o_n),
L = −y log ŷ − (1 − y) log(1 − ŷ).

``cell="lstm"``: the standard LSTM with forget gate (gates i, f, g, o; sigmoid gates, tanh candidate and
cell output, gate biases always present), many-to-one with ŷ = σ(w_yᵀ h_n) and the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

#: The names of activations.ACTIVATIONS, in its order (activations.py asserts the two agree). Kept here
#: as plain strings so that validating a Model, and loading a cached Numba module, imports no SymPy.
ACTIVATION_NAMES = ("tanh", "sigmoid", "relu", "identity")
CELLS = ("rnn", "lstm")
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
        if self.activation not in ACTIVATION_NAMES:
            known = ", ".join(ACTIVATION_NAMES)
            raise UsageError(f"unknown activation {self.activation!r}: choose one of {known}")
        if self.cell not in CELLS:
            raise UsageError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        object.__setattr__(self, "bias", bool(self.bias))
        if self.cell == "lstm":
            if self.activation != "tanh":
                raise UsageError(
                    f"--activation {self.activation} does not apply to --cell lstm: the LSTM's activations "
                    "are fixed (sigmoid gates, tanh candidate and cell output); drop --activation"
                )
            if self.bias:
                raise UsageError(
                    "--bias does not apply to --cell lstm: the LSTM always has its gate biases "
                    "b_i, b_f, b_g, b_o; drop --bias"
                )

    @property
    def lstm(self) -> bool:
        return self.cell == "lstm"

    @property
    def scalar(self) -> bool:
        """The notes' model exactly: the plain RNN with one hidden unit and no biases."""
        return self.cell == "rnn" and self.hidden == 1 and not self.bias

    def require_rnn(self, what: str = "this version") -> Model:
        """Refuse the LSTM in a stage that handles only the plain RNN."""
        if self.lstm:
            raise UsageError(f"--cell lstm is not supported by {what} yet: use --cell rnn")
        return self

    def require_scalar(self, what: str = "this version") -> Model:
        """Refuse hidden size > 1, biases or the LSTM in a stage that handles only the notes' scalar model."""
        self.require_rnn(what)
        if self.hidden != 1:
            raise UsageError(
                f"hidden size {self.hidden} is not supported yet: {what} handles the notes' "
                "scalar model, use --hidden 1"
            )
        if self.bias:
            raise UsageError(f"--bias is not supported yet: {what} handles the notes' bias-free model")
        return self
