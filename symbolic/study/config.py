"""What decides a ``bptt train`` run: ``Config``, its defaults per cell, and the one place that says
which weights a run trains (``Config.kind``: the notes' scalar w_i, w_h, w_o; the plain RNN's matrices; or a
cell's parameters through its module's dict interface)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import UsageError
from ..model import Model
from ..notes import is_notes_model

INITS = ("normal", "identity", "zeros")
OPTIMIZERS = ("sgd", "adam")

#: The defaults reach accuracy 1.0 on the notes' three sentences (tests/test_train.py).
DEFAULT_EPOCHS = 200
DEFAULT_LR = 0.5
DEFAULT_SEED = 0
#: The defaults of every cell but the plain RNN (``--cell lstm``, ``gru`` or a file), chosen so that
#: ``bptt train --cell lstm --data long`` reaches held-out accuracy ≥ 0.95 in seconds
#: (tests/test_train_cells.py), each for a reason:
#: - hidden 16: with fewer units gradient descent finds the one solution (keep the first word in a
#:   cell, close its input gate once h ≠ 0) for fewer seeds; 16 found it for 5 of 5 seeds tried;
#: - (the LSTM's own ``training`` constant, in symbolic/cells/lstm.py) forget bias 5: f_t ≈ σ(5) =
#:   0.993 at the start, so the carousel keeps 0.993⁴⁹ ≈ 0.7 of the first step's cell state and of the
#:   gradient back to it (init_params' b_f = 1 keeps 0.73⁴⁹ ≈ 2e-7; Gers, Schmidhuber & Cummins 2000,
#:   Jozefowicz, Zaremba & Sutskever 2015);
#: - Adam, lr 0.03: plain gradient descent from the same start stayed near chance (--optimizer sgd
#:   --lr 1: held-out 0.62 after 80 epochs), its steps being as small as the long path's gradient;
#:   Adam scales each component by its own running size;
#: - clip norm 1 against the occasional large step when the loss is already small;
#: - 80 epochs: enough for held-out accuracy 1.0 with seeds 0 to 4; more only add time.
CELL_DEFAULTS = {"hidden": 16, "epochs": 80, "lr": 0.03, "optimizer": "adam", "clip_norm": 1.0}
RNN_DEFAULTS = {"hidden": 1, "epochs": DEFAULT_EPOCHS, "lr": DEFAULT_LR, "optimizer": "sgd", "init": "normal"}
#: How a cell other than the plain RNN initialises: the generated module's ``init_params(seed)``, then
#: the cell's ``training`` constants and the run's ``settings`` (--set NAME=V, --forget-bias B).
CELL_INIT = "init_params"


@dataclass(frozen=True)
class Config:
    """Everything that decides a run."""

    #: None: the cell's default (RNN_DEFAULTS or CELL_DEFAULTS); likewise lr, init, hidden, optimizer.
    epochs: int | None = None
    lr: float | None = None
    activation: str = "tanh"
    init: str | None = None
    init_w_h: float | None = None
    clip_norm: float | None = None
    clip_value: float | None = None
    seed: int = DEFAULT_SEED
    steps_from_data: bool = False
    #: Hidden size H and biases; H = 1 without biases is the notes' scalar model.
    hidden: int | None = None
    bias: bool = False
    #: "rnn" (the notes' model), or any other cell (a built-in name or a cell file), trained through
    #: its generated module.
    cell: str = "rnn"
    optimizer: str | None = None
    #: Cells but the plain RNN: every forget-gate bias b_f at the start (the same as settings b_f).
    forget_bias: float | None = None
    #: Cells but the plain RNN: (name, value) pairs, every entry of the per-unit parameter ``name`` at
    #: the start; resolved to the cell's ``training`` constants updated by these.
    settings: tuple = ()
    #: ``cell="skip"`` only (required there): the lag K ≥ 2 of its skip connection, o_(t−K).
    skip: int | None = None

    def __post_init__(self):
        self._resolve_defaults()
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"--epochs must be a positive whole number, got {self.epochs!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr!r}")
        if self.init not in INITS and not (self.kind == "cell" and self.init == CELL_INIT):
            raise UsageError(f"unknown --init {self.init!r}: choose one of {', '.join(INITS)}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown --optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.clip_norm is not None and self.clip_value is not None:
            raise UsageError("--clip-norm and --clip-value are mutually exclusive: choose one")
        for flag, value in (("--clip-norm", self.clip_norm), ("--clip-value", self.clip_value)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{flag} must be a positive number, got {value!r}")
        if self.init_w_h is not None and not math.isfinite(self.init_w_h):
            raise UsageError(f"--init-w-h must be a finite number, got {self.init_w_h!r}")
        # Validates the activation name, the hidden size and the cell (with its fixed activations).
        model = self.model(steps=1)
        object.__setattr__(self, "hidden", model.hidden)
        object.__setattr__(self, "cell", model.cell)
        object.__setattr__(self, "skip", model.skip)
        if self.kind == "cell":
            self._resolve_settings(model)

    def _resolve_defaults(self) -> None:
        """Fill what was left None with the cell's default; refuse options of the other cell."""
        if self.cell != "rnn":  # (self.kind needs the hidden size this resolves)
            cell = os.path.basename(self.cell) if str(self.cell).endswith(".py") else self.cell
            if self.init is not None and self.init != CELL_INIT:
                raise UsageError(
                    f"--init {self.init} applies to the plain RNN: --cell {cell} starts from the generated "
                    "module's init_params(--seed) and --set NAME=V; drop --init"
                )
            if self.init_w_h is not None:
                raise UsageError(
                    f"--init-w-h sets the plain RNN's w_h: --cell {cell} takes its recurrent matrices from "
                    "init_params(--seed); drop --init-w-h (--set NAME=V, e.g. --forget-bias B, sets a per-unit "
                    "parameter)"
                )
            defaults = dict(CELL_DEFAULTS, init=CELL_INIT)
            if self.clip_norm is not None or self.clip_value is not None:
                defaults.pop("clip_norm")  # the user chose the clipping
        else:
            if self.forget_bias is not None or self.settings:
                flag = "--forget-bias" if self.forget_bias is not None else "--set"
                raise UsageError(
                    f"{flag} sets a per-unit parameter of a gated cell (b_f of --cell lstm): add --cell lstm "
                    "(or another cell) or drop it"
                )
            defaults = RNN_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def _resolve_settings(self, model: Model) -> None:
        """settings := the cell's training constants, updated by --set and --forget-bias; checked."""
        from ..cells import cell_of

        cell = cell_of(model)
        settings = dict(cell.training)
        settings.update(dict(self.settings))
        if self.forget_bias is not None:
            settings["b_f"] = self.forget_bias
        for name, value in settings.items():
            if name not in cell.vectors:
                have = ", ".join(cell.vectors) or "none"
                flag = "--forget-bias" if name == "b_f" and self.forget_bias is not None else f"--set {name}"
                raise UsageError(
                    f"{flag}: cell {cell.name} has no per-unit parameter {name} (its per-unit parameters: {have})"
                )
            if not math.isfinite(value):
                flag = "--forget-bias" if name == "b_f" and self.forget_bias is not None else f"--set {name}"
                raise UsageError(f"{flag} must be a finite number, got {value!r}")
        object.__setattr__(self, "settings", tuple(settings.items()))
        if "b_f" in settings:
            object.__setattr__(self, "forget_bias", float(settings["b_f"]))

    def model(self, steps: int) -> Model:
        """The model a run trains, at ``steps`` steps (validates the cell, its options and the sizes)."""
        return Model(steps=steps, activation=self.activation, hidden=self.hidden, bias=self.bias, cell=self.cell,
                     skip=self.skip)

    @property
    def kind(self) -> str:
        """Which weights the run trains, decided here once (the notes' dispatch point decides "notes"):

        - "notes": the notes' scalar w_i (D,), w_h, w_o (the plain RNN at H = 1 without biases);
        - "matrices": the plain RNN's W_i, W_h, w_o (and biases), through its module's positional form;
        - "cell": any other cell's parameters, through its module's dict interface, from init_params.
        """
        if self.cell != "rnn":
            return "cell"
        return "notes" if is_notes_model(self) else "matrices"

    @property
    def cell_name(self) -> str:
        """The cell as the reports name it: a built-in name (the skip cell with its K), or the file's name."""
        name = os.path.basename(self.cell) if self.cell.endswith(".py") else self.cell
        return name if self.skip is None else f"{name} (K = {self.skip})"
