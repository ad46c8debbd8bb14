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
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from ..model import Model
from .data import Dataset

INITS = ("normal", "identity", "zeros")
OPTIMIZERS = ("sgd", "adam")
#: Adam's moment decays β₁, β₂ and ε (Kingma & Ba 2015's defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8

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
#: Standard deviation of the "normal" initialisation of w_h (w_i, w_o use 1): |w_h| mostly < 1.
NORMAL_W_H_SCALE = 0.5
#: Predictions shown by the text summary (the JSON lists up to JSON_PREDICTIONS).
SHOWN_PREDICTIONS = 10
#: A weight beyond ± this after an update means the run diverged (see the module docstring).
DIVERGENCE_LIMIT = 1e6
JSON_PREDICTIONS = 1000
#: From this vocabulary size on the plain RNN is fed input projections, not one-hot vectors
#: (module docstring); below it the one-hot path is as fast and the modules are the familiar ones.
PROJECTED_FROM = 32
#: Without --progress and off a terminal, one line per epoch once an epoch takes this long (s).
SLOW_EPOCH_SECONDS = 1.0
#: Copies of the parameters a training step holds at once (weights, their flat copy, the gradient
#: and its chunk sum, the update, the new weights); Adam keeps two more (its moments).
PARAMETER_COPIES = 6


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

    def __post_init__(self):
        self._resolve_defaults()
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"--epochs must be a positive whole number, got {self.epochs!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr!r}")
        if self.init not in INITS and not (self.gated and self.init == CELL_INIT):
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
        model = Model(steps=1, activation=self.activation, hidden=self.hidden, bias=self.bias, cell=self.cell)
        object.__setattr__(self, "hidden", model.hidden)
        object.__setattr__(self, "cell", model.cell)
        if self.gated:
            self._resolve_settings(model)

    def _resolve_defaults(self) -> None:
        """Fill what was left None with the cell's default; refuse options of the other cell."""
        if self.gated:
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

    @property
    def gated(self) -> bool:
        """A cell other than the plain RNN: trained through its module's dict interface, from its
        init_params (as ``Model.gated``). The plain RNN, whose modules at H > 1 or with biases are the
        generic engine's too, trains through their positional form with the notes' weights w_i, w_h, w_o."""
        return self.cell != "rnn"

    @property
    def cell_name(self) -> str:
        return os.path.basename(self.cell) if self.cell.endswith(".py") else self.cell

    @property
    def scalar(self) -> bool:
        """The notes' model: the plain RNN with one hidden unit, no biases (scalar weights)."""
        return self.cell == "rnn" and self.hidden == 1 and not self.bias


@dataclass
class Weights:
    """The parameters: the notes' scalars (w_i (D,), w_h and w_o floats) for hidden size 1 without
    biases, else W_i (H, D), W_h (H, H), w_o (H,) and, with biases, b_h (H,) and b_o (a float)."""

    w_i: np.ndarray
    w_h: float | np.ndarray
    w_o: float | np.ndarray
    b_h: np.ndarray | None = None
    b_o: float | None = None

    def parameters(self) -> dict:
        """Name → value in the order the generated ``loss_and_grad`` returns the gradients."""
        named = {"w_i": self.w_i, "w_h": self.w_h, "w_o": self.w_o}
        if self.b_h is not None:
            named.update(b_h=self.b_h, b_o=self.b_o)
        return named

    def keywords(self) -> dict:
        """The bias keyword arguments of the generated functions (none for a bias-free model)."""
        return {} if self.b_h is None else {"b_h": self.b_h, "b_o": self.b_o}

    def flat(self) -> np.ndarray:
        return np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in self.parameters().values()])

    def from_flat(self, flat: np.ndarray) -> Weights:
        """Weights of the same shapes as these, filled from ``flat`` (floats stay floats)."""
        values, start = [], 0
        for value in self.parameters().values():
            size = np.size(value)
            if np.ndim(value) == 0:
                values.append(float(flat[start]))
            else:
                values.append(np.asarray(flat[start : start + size]).reshape(np.shape(value)))
            start += size
        return Weights(*values)

    def as_dict(self) -> dict:
        return {
            name: value.tolist() if isinstance(value, np.ndarray) else float(value)
            for name, value in self.parameters().items()
        }

    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.flat())))


@dataclass
class ParamWeights:
    """A cell's parameters: a dict name → array in the generated module's PARAMS order."""

    params: dict

    def parameters(self) -> dict:
        return dict(self.params)

    def keywords(self) -> dict:
        return {}

    def flat(self) -> np.ndarray:
        return np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in self.params.values()])

    def from_flat(self, flat: np.ndarray) -> ParamWeights:
        params, start = {}, 0
        for name, value in self.params.items():
            size = np.size(value)
            params[name] = np.asarray(flat[start : start + size]).reshape(np.shape(value))
            start += size
        return ParamWeights(params)

    def as_dict(self) -> dict:
        return {name: np.asarray(value).tolist() for name, value in self.params.items()}

    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.flat())))


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
        out["activation"] = self.config.activation
        out["optimizer"] = self.config.optimizer
        out["lr"] = self.config.lr
        if self.config.gated:
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


def initial_weights(config: Config, inputs: int, modules: Modules | None = None) -> Weights | ParamWeights:
    """normal: N(0, 1) for w_i and w_o, N(0, 0.5²) for w_h; identity: w_h = 1 (the notes'
    remedy), the rest normal; zeros: everything 0. ``init_w_h`` overrides w_h.

    For hidden size H (or with biases) the same draws, scaled so that sizes do not grow with H:
    W_i ~ N(0, 1) (H×D), W_h ~ N(0, 0.5²/H) (H×H, spectral radius about 0.5, the circular law),
    w_o ~ N(0, 1/H), biases 0; identity: W_h = I (Le, Jaitly & Hinton 2015); ``init_w_h`` V sets
    W_h = V·I. H = 1 draws the same numbers as the scalar model.

    Any other cell: the generated module's ``init_params(seed)`` (from ``modules``), then every entry of
    each per-unit parameter in ``config.settings`` set to its value (the LSTM's b_f = 5 by default).
    """
    if config.gated:
        if modules is None:
            modules = Modules(config.activation, inputs, False, hidden=config.hidden, cell=config.cell)
        module = modules.for_length(1)
        params = {name: np.array(value, dtype=float) for name, value in module.init_params(config.seed).items()}
        for name, value in config.settings:
            params[name] = np.full(np.shape(params[name]), float(value))
        return ParamWeights({name: params[name] for name in module.PARAMS})
    if not config.scalar:
        return _initial_matrices(config, inputs)
    rng = np.random.default_rng(config.seed)
    w_i = rng.normal(0.0, 1.0, size=inputs)
    w_h = float(rng.normal(0.0, NORMAL_W_H_SCALE))
    w_o = float(rng.normal(0.0, 1.0))
    if config.init == "identity":
        w_h = 1.0
    elif config.init == "zeros":
        w_i, w_h, w_o = np.zeros(inputs), 0.0, 0.0
    if config.init_w_h is not None:
        w_h = float(config.init_w_h)
    return Weights(w_i, w_h, w_o)


def _initial_matrices(config: Config, inputs: int) -> Weights:
    H = config.hidden
    rng = np.random.default_rng(config.seed)
    w_i = rng.normal(0.0, 1.0, size=(H, inputs))
    w_h = rng.normal(0.0, NORMAL_W_H_SCALE / math.sqrt(H), size=(H, H))
    w_o = rng.normal(0.0, 1.0 / math.sqrt(H), size=H)
    if config.init == "identity":
        w_h = np.eye(H)
    elif config.init == "zeros":
        w_i, w_h, w_o = np.zeros((H, inputs)), np.zeros((H, H)), np.zeros(H)
    if config.init_w_h is not None:
        w_h = float(config.init_w_h) * np.eye(H)
    if config.bias:
        return Weights(w_i, w_h, w_o, np.zeros(H), 0.0)
    return Weights(w_i, w_h, w_o)


def parameter_count(config: Config, inputs: int) -> int:
    """How many numbers the weights hold: the scalar model D + 2; hidden size H: H·D + H² + H (+ H + 1
    with biases); any other cell: the sizes of its parameters' shapes (the LSTM: 4(H·D + H² + H) + H)."""
    H, D = config.hidden, inputs
    if config.gated:
        from ..cells import cell_of

        sizes = {"H": H, "D": D}
        shapes = cell_of(Model(cell=config.cell)).parameters.values()
        return sum(math.prod(sizes[s] for s in shape) for shape in shapes)
    if config.scalar:
        return D + 2
    return H * D + H * H + H + (H + 1 if config.bias else 0)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _bytes(count: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB", "EB"):
        if count < 1000 or unit == "EB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_memory(config: Config, inputs: int, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a model whose weights do not fit in memory: training
    holds PARAMETER_COPIES float64 copies of them (two more with Adam)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    copies = PARAMETER_COPIES + (2 if config.optimizer == "adam" else 0)
    count = parameter_count(config, inputs)
    needed = 8 * count * copies
    if needed <= available:
        return
    H = config.hidden
    largest = f"W_h alone is {H}×{H}" if H * H >= H * inputs else f"W_i alone is {H}×{inputs}"
    if config.gated:
        largest = f"each recurrent matrix is {H}×{H}" if H >= inputs else f"each input matrix is {H}×{inputs}"
    raise UsageError(
        f"--hidden {H} needs about {_bytes(needed)} of memory to train ({count:.3g} weights, {largest}, "
        f"{copies} copies of 8 bytes each) but {_bytes(available)} is available: choose a smaller --hidden"
    )


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


class Modules:
    """The generated module for each sequence length: one loop-mode module for every length, or,
    with ``steps_from_data``, an unrolled module for each length found in the data."""

    def __init__(
        self,
        activation: str,
        inputs: int,
        steps_from_data: bool,
        loader=None,
        hidden: int = 1,
        bias: bool = False,
        cell: str = "rnn",
    ):
        if loader is None:
            from ..codegen import load as loader
        self._loader = loader
        self._shape = {"hidden": hidden, "bias": bias, "cell": cell}
        self._activation = activation
        self._inputs = inputs
        self._unrolled = steps_from_data
        self._cache: dict = {}

    def for_length(self, length: int):
        key = length if self._unrolled else None
        if key not in self._cache:
            if self._unrolled:
                model = Model(steps=length, activation=self._activation, inputs=self._inputs, **self._shape)
                self._cache[key] = self._loader(model, mode="unrolled")
            else:
                # Loop code is the same for every length: derive it from one step, so a data set of
                # very long sequences does not unroll them symbolically.
                model = Model(steps=1, activation=self._activation, inputs=self._inputs, **self._shape)
                self._cache[key] = self._loader(model, mode="loop")
        return self._cache[key]

    def mode(self, length: int) -> str:
        return "unrolled" if self._unrolled else "loop"


class Projection:
    """The plain RNN's inputs as projections: the generated module for input size D′ is given
    x′_t = W_i[:, word_t] (with W′_i = I) instead of one-hot x_t over D words.

    Scalar model (D′ = 2): x′_t = (w_i[word_t], 1), w′_i = (1, 0), so w′_i·x′_t = w_i[word_t], and the
    second entry of the module's per-step term δ_t f′(a_t) x′_t (``bptt_terms``) is the gate δ_t f′(a_t).
    Hidden size H (D′ = H): x′_t = W_i[:, word_t], W′_i = I, gates f′(a_t) ⊙ δ_t from ``bptt_terms``.
    Then ∂L/∂W_i[:, d] = mean over sequences of Σ_{t: word_t = d} gate_t, a scatter-add over the ids.
    """

    def __init__(self, scalar: bool, hidden: int, vocabulary_size: int):
        self.scalar, self.hidden, self.vocabulary_size = scalar, hidden, vocabulary_size
        self.width = 2 if scalar else hidden
        #: Floats per word of a chunk: bptt_terms' per-step terms are D′ (scalar) or H×H wide.
        self.chunk_width = 2 if scalar else hidden * hidden

    def inputs(self, ids: np.ndarray, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
        """(x′ (b, N, D′), W′_i) for the module."""
        if self.scalar:
            x = np.empty(ids.shape + (2,))
            x[..., 0] = np.asarray(weights.w_i)[ids]
            x[..., 1] = 1.0
            return x, np.array([1.0, 0.0])
        return np.asarray(weights.w_i).T[ids], np.eye(self.hidden)

    def loss_and_grad(self, module, ids, y, weights: Weights) -> tuple[float, list]:
        x, w_i = self.inputs(ids, weights)
        arguments = (x, y, w_i, weights.w_h, weights.w_o)
        value, _, *rest = module.loss_and_grad(*arguments, **weights.keywords())
        terms = module.bptt_terms(*arguments, **weights.keywords())
        batch = len(ids)
        if self.scalar:
            gates = terms["terms_w_i"][..., 1]  # δ_t f′(a_t) · 1
            dw_i = np.bincount(ids.ravel(), weights=gates.ravel(), minlength=self.vocabulary_size) / batch
        else:
            gates = terms["derivatives"] * terms["deltas"]  # f′(a_t) ⊙ δ_t, (b, N, H)
            columns = np.zeros((self.vocabulary_size, self.hidden))
            np.add.at(columns, ids.ravel(), gates.reshape(-1, self.hidden))
            dw_i = columns.T / batch
        return value, [dw_i, *rest]

    def forward(self, module, ids, weights: Weights) -> np.ndarray:
        x, w_i = self.inputs(ids, weights)
        return module.forward(x, w_i, weights.w_h, weights.w_o, **weights.keywords())


def projection_for(config: Config, vocabulary_size: int) -> Projection | None:
    """The Projection for a plain RNN over at least PROJECTED_FROM words (and more words than the
    projection is wide), else None (one-hot inputs)."""
    if config.gated or vocabulary_size < PROJECTED_FROM:
        return None
    projection = Projection(config.scalar, config.hidden, vocabulary_size)
    # Per word the one-hot path does about H·D work, the projection about H² (its terms): only
    # worth it for more words than twice its width.
    return projection if vocabulary_size > 2 * projection.width else None


def _module_loss_and_grad(module, x, y, weights) -> tuple[float, list]:
    """The generated ``loss_and_grad`` on one chunk: (loss, gradients in the weights' order)."""
    if isinstance(weights, ParamWeights):
        value, gradients = module.loss_and_grad(x, y, weights.params)
        return value, [gradients[name] for name in weights.params]
    value, *parts = module.loss_and_grad(x, y, weights.w_i, weights.w_h, weights.w_o, **weights.keywords())
    return value, parts


def _module_forward(module, x, weights) -> np.ndarray:
    if isinstance(weights, ParamWeights):
        return module.forward(x, weights.params)
    return module.forward(x, weights.w_i, weights.w_h, weights.w_o, **weights.keywords())


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
    config: Config = Config(),
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
        config.hidden, config.bias, config.cell,
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


def summary(result: Result) -> str:
    """The readable end-of-run report."""
    config = result.config
    if config.gated:
        settings = "".join(f", {name} = {value:g}" for name, value in config.settings)
        first = (
            f"data: {result.data}   cell: {config.cell_name}   hidden: {config.hidden}   "
            f"init: {config.init}(seed={config.seed}){settings}   "
            f"optimizer: {config.optimizer}   lr: {config.lr:g}"
        )
    else:
        first = (
            f"data: {result.data}   activation: {config.activation}   init: {config.init}"
            + (f" (w_h = {config.init_w_h:g})" if config.init_w_h is not None else "")
            + f"   lr: {config.lr:g}   seed: {config.seed}"
            + ("" if config.scalar else f"   hidden: {config.hidden}" + ("   bias" if config.bias else ""))
            + ("" if config.optimizer == "sgd" else f"   optimizer: {config.optimizer}")
        )
    lines = [first]
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
        lines.append(f"DIVERGED at epoch {result.diverged_at} of {config.epochs}: {result.divergence}.")
        lines.append(
            "  Try --clip-norm 1 (gradient clipping) or a smaller --lr."
            if config.gated
            else "  Try --clip-norm 1 (gradient clipping), a smaller --lr or a smaller --init-w-h."
        )
        shown = [f"{v:.4g}" for v in result.loss[-5:]]
        lines.append(f"  last losses: {', '.join(shown)}")
        w = result.weights
        if config.scalar:
            lines.append(
                f"  weights before the failing epoch: w_i = {_vector(w.w_i)}, w_h = {w.w_h:.6g}, "
                f"w_o = {w.w_o:.6g}"
            )
        else:
            lines.append("  weights before the failing epoch: " + _norms(w))
        return "\n".join(lines) + "\n"
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
    lines.append("predictions" + (" (held-out set)" if result.train_accuracy is not None else "") + ":")
    width = min(40, max((len(p["text"]) for p in result.predictions[:SHOWN_PREDICTIONS]), default=4))
    for p in result.predictions[:SHOWN_PREDICTIONS]:
        text = p["text"] if len(p["text"]) <= width else p["text"][: width - 1] + "…"
        mark = "ok" if p["predicted"] == p["label"] else "WRONG"
        probability = "nan" if p["probability"] is None else f"{p['probability']:.4f}"
        lines.append(f"  {text:<{width}}  label {p['label']}  ŷ = {probability}  → {p['predicted']}  {mark}")
    if result.total_predictions > SHOWN_PREDICTIONS:
        lines.append(f"  … and {result.total_predictions - SHOWN_PREDICTIONS} more (--json lists them)")
    w = result.weights
    if config.gated:
        lines.append(f"weights: {_norms(w)} (--json lists every entry)")
        return "\n".join(lines) + "\n"
    if not config.scalar:
        lines += _matrix_weights(w, result.vocabulary)
        return "\n".join(lines) + "\n"
    names = (
        ", ".join(f"{word}: {v:.6g}" for word, v in zip(result.vocabulary, w.w_i))
        if len(result.vocabulary) <= 12
        else _vector(w.w_i)
    )
    lines.append(f"weights: w_i = [{names}]" if len(result.vocabulary) <= 12 else f"weights: w_i = {names}")
    lines.append(f"         w_h = {w.w_h:.6g}   w_o = {w.w_o:.6g}")
    return "\n".join(lines) + "\n"


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
        f"{config.cell_name} H = {config.hidden}, {config.optimizer}" if config.gated
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
