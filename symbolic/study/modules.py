"""The generated modules a run calls, one per sequence length, and the input projection that feeds the
plain RNN's module over a large vocabulary (the train module's docstring says why)."""

from __future__ import annotations

import numpy as np

from ..model import Model
from ..verify.interfaces import PositionalCalls
from .config import Config

#: From this vocabulary size on the plain RNN is fed input projections, not one-hot vectors
#: (module docstring); below it the one-hot path is as fast and the modules are the familiar ones.
PROJECTED_FROM = 32


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
        skip: int | None = None,
    ):
        if loader is None:
            from ..codegen import load as loader
        self._loader = loader
        self._shape = {"hidden": hidden, "bias": bias, "cell": cell, "skip": skip}
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

    def inputs(self, ids: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
        """(x′ (b, N, D′), W′_i) for the module; ``weights``: the plain RNN's ``weights.Weights``."""
        if self.scalar:
            x = np.empty(ids.shape + (2,))
            x[..., 0] = np.asarray(weights.w_i)[ids]
            x[..., 1] = 1.0
            return x, np.array([1.0, 0.0])
        return np.asarray(weights.w_i).T[ids], np.eye(self.hidden)

    def loss_and_grad(self, module, ids, y, weights) -> tuple[float, list]:
        x, w_i = self.inputs(ids, weights)
        params = {**weights.parameters(), "w_i": w_i}
        module_calls = PositionalCalls(module)
        value, gradients = module_calls.loss_and_grad(x, y, params)
        rest = [gradients[name] for name in params if name != "w_i"]
        terms = module_calls.apply("bptt_terms", (x, y), params)
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

    def forward(self, module, ids, weights) -> np.ndarray:
        x, w_i = self.inputs(ids, weights)
        return PositionalCalls(module).forward(x, {**weights.parameters(), "w_i": w_i})


def projection_for(config: Config, vocabulary_size: int) -> Projection | None:
    """The Projection for a plain RNN over at least PROJECTED_FROM words (and more words than the
    projection is wide), else None (one-hot inputs)."""
    if config.kind == "cell" or vocabulary_size < PROJECTED_FROM:
        return None
    projection = Projection(config.kind == "notes", config.hidden, vocabulary_size)
    # Per word the one-hot path does about H·D work, the projection about H² (its terms): only
    # worth it for more words than twice its width.
    return projection if vocabulary_size > 2 * projection.width else None
