"""The model specification, validated in one place.

The notes' many-to-one RNN: o_0 = 0, o_t = f(w_i·x_t + w_h o_{t-1}), ŷ = σ(w_o o_n),
L = −y log ŷ − (1 − y) log(1 − ŷ).

``cell``: the recurrent cell, a built-in name (``rnn``, ``lstm``, ``gru``, ``skip`` with its lag ``skip`` = K;
see ``symbolic.cells``) or the
path of a cell file (``mycell.py``, Python that defines ``CELL``); by default every cell is many-to-one with
ŷ = σ(w_yᵀ s_n) and the same loss, and ``outputs`` (``symbolic.outputs.Outputs``) puts a readout after
every step, or another loss, beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UsageError
from .outputs import Outputs

#: The names of activations.ACTIVATIONS, in its order (activations.py asserts the two agree). Kept here
#: as plain strings so that validating a Model, and loading a cached Numba module, imports no SymPy.
ACTIVATION_NAMES = ("tanh", "sigmoid", "relu", "identity")
#: The built-in cells (symbolic/cells/); a path ending in .py names a user's cell file.
CELLS = ("rnn", "lstm", "gru", "skip")
#: Cells whose equations take --activation and --bias.
CONFIGURABLE_CELLS = ("rnn", "skip")
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


#: The longest lag K a cell may read back (--skip, cell.lag): the generated Numba code computes t − K and
#: t mod K in 64-bit integers, which hold up to about 9.2·10^18.
MAX_LAG = 10**18


def checked_skip(value) -> int:
    """The skip cell's lag K, a whole number >= 2 (K = 1 would be a second w_h on o_(t−1))."""
    if value is None:
        raise UsageError("--cell skip needs the lag of its skip connection: pass --skip K (K >= 2), e.g. --skip 3")
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except (TypeError, ValueError):
            raise UsageError(f"--skip must be a whole number K >= 2, got {value!r}: pass e.g. --skip 3") from None
    if value == 1:
        raise UsageError("--skip 1 would read o_(t-1) a second time: w_h + w_s on one path, the plain RNN "
                         "(--cell rnn) with w_h + w_s; pass --skip K with K >= 2")
    if value < 1:
        raise UsageError(f"--skip must be a whole number K >= 2, got {value}: pass e.g. --skip 3")
    if value > MAX_LAG:
        raise UsageError(f"--skip {value} is beyond the longest lag, 10^18 (the generated code's 64-bit "
                         "integers): pass a K up to 10^18, which is past any sequence already")
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
    #: The skip cell's lag K >= 2 (o_(t−K) in its update); None for every other cell.
    skip: int | None = None
    #: The output side (symbolic.outputs): readout last|every, loss, classes, reduction; None: the notes'.
    outputs: Outputs | None = None

    def __post_init__(self):
        if self.outputs is None:
            object.__setattr__(self, "outputs", Outputs())
        object.__setattr__(self, "steps", _positive_int(self.steps, "the number of steps", "--steps"))
        object.__setattr__(self, "inputs", _positive_int(self.inputs, "the input size", "--inputs"))
        object.__setattr__(self, "hidden", _positive_int(self.hidden, "the hidden size", "--hidden", 1))
        if self.activation not in ACTIVATION_NAMES:
            known = ", ".join(ACTIVATION_NAMES)
            raise UsageError(f"unknown activation {self.activation!r}: choose one of {known}")
        if not isinstance(self.cell, str) or (self.cell not in CELLS and not self.cell.endswith(".py")):
            raise UsageError(
                f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}, or give a cell file ending in .py"
            )
        if self.cell.endswith(".py"):
            if not os.path.isfile(self.cell):
                raise UsageError(f"cell file {self.cell} does not exist: give the path of a .py file that defines CELL")
            object.__setattr__(self, "cell", os.path.abspath(self.cell))
        object.__setattr__(self, "bias", bool(self.bias))
        if self.cell == "skip":
            object.__setattr__(self, "skip", checked_skip(self.skip))
        elif self.skip is not None:
            raise UsageError(f"--skip is the lag of --cell skip and does not apply to --cell {self.cell_name}: "
                             "drop --skip, or use --cell skip")
        if self.cell not in CONFIGURABLE_CELLS and self.activation != "tanh":
            raise UsageError(
                f"--activation {self.activation} does not apply to --cell {self.cell_name}: its "
                "activations are written in its equations; drop --activation"
            )

    @property
    def cell_name(self) -> str:
        """The cell as the user named it: a built-in name or the file's name."""
        return self.cell if self.cell in CELLS else os.path.basename(self.cell)

    @property
    def cell_argument(self) -> str:
        """The cell as --cell takes it again: a built-in name, or the file's path relative to the
        working directory when it lies below it (absolute otherwise)."""
        if self.cell in CELLS:
            return self.cell
        relative = os.path.relpath(self.cell)
        return self.cell if relative.startswith("..") else relative

    @property
    def generic(self) -> bool:
        """Derived, typeset, proved and generated by the generic engine over cells: every model but the
        notes' scalar one (the plain RNN at H = 1 without biases keeps its Σ/Π specialisation)."""
        return not self.scalar

    @property
    def gated(self) -> bool:
        """A cell other than the plain RNN (whose analysis and training keep the notes' weights w_i, w_h, w_o)."""
        return self.cell != "rnn"

    @property
    def scalar(self) -> bool:
        """The notes' model exactly (``symbolic.notes.is_notes_model``, the one dispatch point)."""
        from .notes import is_notes_model

        return is_notes_model(self)

    def require_rnn(self, what: str = "this version") -> Model:
        """Refuse other cells in a stage that handles only the plain RNN."""
        if self.cell != "rnn":
            raise UsageError(f"--cell {self.cell_name} is not supported by {what} yet: use --cell rnn")
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
