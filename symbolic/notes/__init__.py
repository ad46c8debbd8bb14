"""The notes' view on the engine: the Σ/Π form, the induction proof and the unrolled expansion of the
plain RNN at H = 1 without biases (``derive``, ``proof``, ``unroll``), read from the engine's derivation.

``is_notes_model`` is the one dispatch point: every stage asks it whether a model gets the notes' view
(the scalar weights w_i, w_h, w_o and their Σ/Π story) or the generic stages over cells. It imports no
SymPy, so a command can decide before it loads anything heavy.
"""

from __future__ import annotations


def is_notes_model(model) -> bool:
    """The notes' model exactly: the plain RNN with one hidden unit and no biases (a ``Model``, or
    anything with ``cell``, ``hidden`` and ``bias``, such as the training ``Config``)."""
    outputs = getattr(model, "outputs", None)   # a loss at every step, or another loss, is the generic engine's
    return model.cell == "rnn" and model.hidden == 1 and not model.bias and (outputs is None or outputs.default)


__all__ = ["is_notes_model"]
