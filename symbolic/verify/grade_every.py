"""``bptt grade`` in the many-to-many setting (``--readout every``): the labels of a case, the wrong
derivations that exist only there, and the words for where in time it goes wrong.

With a loss term at every step, δs_t receives from step t's own readout (W_yᵀ e_t) and from step t + 1
(the carry, min-char-rnn's ``dhnext``). At n = 1 only the first exists, so "right at n = 1, wrong from
n = 2" still says the long-term terms are wrong; the engine's mutation "truncated" (nothing sent back to
s_(t−1)) is then exactly δ_t from step t's own loss alone. The notes' total-derivative slip is computed
for the readout after the last step only, so it is not tried here; the mistakes below are tried only here.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .grade_mistakes import _Candidates


def labels(outputs, rng, batch: int, steps: int) -> np.ndarray:
    """y of a case: (B,) for the readout after the last step, (B, n) after every step: class indices
    0..K − 1 for softmax (integers, as a generated module requires), 0/1 for bce, N(0, 1) for mse."""
    shape = (batch, steps) if outputs.every else batch
    if outputs.loss == "softmax":
        return rng.integers(0, outputs.classes, size=shape)
    if outputs.loss == "bce":
        return rng.integers(0, 2, size=shape).astype(float)
    return rng.normal(size=shape)


def candidates_for(d, interface) -> _Candidates:
    """The wrong derivations grade tries for d's output side (the notes' catalogue for the notes' side)."""
    return _Candidates(d, interface) if d.outputs.default else _OutputCandidates(d, interface)


class _OutputCandidates(_Candidates):
    """The catalogue's wrong derivations that apply to another output side, and EVERY_MISTAKES that do."""

    def __init__(self, d, interface):
        super().__init__(d, interface)
        outputs = d.outputs
        # the complex-step forward computes the notes' loss (σ and cross-entropy after the last step)
        del self.bases["total_derivative"]
        if outputs.loss == "softmax":
            self.bases["softmax_without_target"] = replace(d, output_factor=d.symbols["y_hat"])
        if outputs.loss == "mse":
            self.bases["squared_error_half"] = self._scaled(lambda case: 0.5)
        if not outputs.every:
            return
        from ..engine.derivation import derive_cell
        from ..engine.evaluate import evaluate
        from ..outputs import Outputs

        last = derive_cell(d.cell, outputs=Outputs(loss=outputs.loss, classes=outputs.classes))
        over_all = outputs.reduction == "all"

        def last_step_only(case):
            values = evaluate(last, case.params, case.x, case.y[:, -1]).as_float()[1]
            return {k: v / case.steps for k, v in values.items()} if over_all else values

        self.bases["last_step_only"] = last_step_only
        if over_all:
            self.bases["reduction_steps"] = self._scaled(lambda case: case.steps)
        else:
            self.bases["reduction_all"] = self._scaled(lambda case: 1 / case.steps)

    def _scaled(self, factor):
        """A base computed from the exact gradients (engine shapes) times factor(case)."""
        def values(case):
            from ..engine.evaluate import evaluate

            exact = evaluate(self.d, case.params, case.x, case.y).as_float()[1]
            return {k: factor(case) * v for k, v in exact.items()}

        return values


#: Where in time a mistake of this setting shows, once it is named: each is right at n = 1 for a reason
#: other than the long-term terms (so _localise's "the long-term terms are wrong" would mislead).
RETOLD = {
    "last_step_only": "right for n = 1, where the last step is the only one, wrong from n = 2: the loss terms "
                      "of steps 1..n − 1 are missing, not the long-term terms",
    "reduction_all": "right for n = 1, where the two reductions agree, wrong from n = 2 by the factor n",
    "reduction_steps": "right for n = 1, where the two reductions agree, wrong from n = 2 by the factor n",
    "squared_error_half": "",  # half at every n: time is not at fault
}


def retell(report) -> None:
    """The localisation of a report whose named mistake is one of RETOLD, told by that mistake."""
    base = (report.mistake or "").split(" + ")[0]
    if base in RETOLD and not report.localisation.startswith(("right at B = 1", "graded at n")):
        report.localisation = RETOLD[base]


def localisation(text: str, every: bool) -> str:
    """_localise's words, with what the long-term terms are when every step has a loss term."""
    if every and "the long-term terms are wrong" in text:
        return text + ("; with a loss at every step, what step t + 1 sends back to δs_t (the carry, "
                       "dh_next) is wrong or missing, what step t's own loss sends is right at n = 1")
    return text


__all__ = ["candidates_for", "labels", "localisation", "retell"]
