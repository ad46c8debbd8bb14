"""The weights a run trains: their containers (``Weights`` for the plain RNN, ``ParamWeights`` for any
other cell), their initialisation, their size and whether they fit in memory."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..verify.interfaces import adapt
from .config import Config
from .modules import Modules

#: Standard deviation of the "normal" initialisation of w_h (w_i, w_o use 1): |w_h| mostly < 1.
NORMAL_W_H_SCALE = 0.5
#: Copies of the parameters a training step holds at once (weights, their flat copy, the gradient
#: and its chunk sum, the update, the new weights); Adam keeps two more (its moments).
PARAMETER_COPIES = 6


@dataclass
class Weights:
    """The parameters: the notes' scalars (w_i (D,), w_h and w_o floats) for hidden size 1 without
    biases, else W_i (H, D), W_h (H, H), w_o (H,) and, with biases, b_h (H,) and b_o (a float)."""

    #: how the generated module takes them (``symbolic.verify.interfaces.calls``)
    interface = "positional"

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

    #: how the generated module takes them
    interface = "dict"

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
    return _INITIAL[config.kind](config, inputs, modules)


def _initial_params(config: Config, inputs: int, modules: Modules | None) -> ParamWeights:
    if modules is None:
        modules = Modules(config.activation, inputs, False, hidden=config.hidden, cell=config.cell, skip=config.skip)
    # the module's init_params(seed) by name, in PARAMS order, as bptt check reads it
    params = dict(adapt(modules.for_length(1), kind="dict", seed=config.seed).initial)
    for name, value in config.settings:
        params[name] = np.full(np.shape(params[name]), float(value))
    return ParamWeights(params)


def _initial_scalars(config: Config, inputs: int, modules=None) -> Weights:
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


def _initial_matrices(config: Config, inputs: int, modules=None) -> Weights:
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


#: Config.kind → how its weights start.
_INITIAL = {"notes": _initial_scalars, "matrices": _initial_matrices, "cell": _initial_params}


def parameter_count(config: Config, inputs: int) -> int:
    """How many numbers the weights hold: the scalar model D + 2; hidden size H: H·D + H² + H (+ H + 1
    with biases); any other cell: the sizes of its parameters' shapes (the LSTM: 4(H·D + H² + H) + H)."""
    H, D = config.hidden, inputs
    if config.kind == "cell":
        from ..cells import cell_of

        sizes = {"H": H, "D": D}
        shapes = cell_of(config.model(steps=1)).parameters.values()
        return sum(math.prod(sizes[s] for s in shape) for shape in shapes)
    if config.kind == "notes":
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
    if config.kind == "cell":
        largest = f"each recurrent matrix is {H}×{H}" if H >= inputs else f"each input matrix is {H}×{inputs}"
    raise UsageError(
        f"--hidden {H} needs about {_bytes(needed)} of memory to train ({count:.3g} weights, {largest}, "
        f"{copies} copies of 8 bytes each) but {_bytes(available)} is available: choose a smaller --hidden"
    )
