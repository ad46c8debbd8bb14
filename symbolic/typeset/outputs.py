"""The output side of a cell's document (``symbolic.outputs``): the readout, the loss, the per-step error
e_t = ∂ℓ_t/∂z_t (printed from the engine's ``output_factor``), what the loss at step t sends to δs_t and
the readout's gradients. The notes' σ and cross-entropy after the last step is typeset by
``typeset/cells.py`` as before; these pieces replace it for any other output side.
"""

from __future__ import annotations

import sympy as sp

from .cell_printer import Partial


class OutputsTypesetter:
    """Printed pieces of the output side of one derivation, at step ``t`` (every step) or ``n`` (last)."""

    def __init__(self, typesetter):
        self.ts = typesetter
        self.d = d = typesetter.d
        self.o = d.outputs
        self.when = "t" if self.o.every else "n"
        self.vector = self.o.loss == "softmax"   # ŷ a vector of K class probabilities, W_y a (K, H) matrix

    def _y_hat(self) -> str:
        return rf"\hat{{\mathbf{{y}}}}_{{{self.when}}}" if self.vector else rf"\hat{{y}}_{{{self.when}}}"

    def _y(self) -> str:
        return rf"\mathbf{{e}}_{{y_{{{self.when}}}}}" if self.vector else rf"y_{{{self.when}}}"

    def _weight(self) -> str:
        name = self.d.cell.readout
        return sp.latex(sp.Symbol(name)) if self.vector else self.ts.vec.doprint(sp.Symbol(name))

    def _state(self) -> str:
        printer = self.ts.vec if self.o.every else self.ts.vec.at(0, "n")
        return printer.doprint(self.ts.output)

    def logit(self) -> str:
        """z_t = W_y s_t (+ b), or w_yᵀ s_t (+ b)."""
        product = f"{self._weight()} {self._state()}" if self.vector else f"{self._weight()}^{{T}} {self._state()}"
        bias = self.d.cell.readout_bias
        return product + (f" + {self.ts.vec.doprint(sp.Symbol(bias))}" if bias else "")

    def error(self) -> str:
        """e_t = ∂ℓ_t/∂z_t: the engine's output_factor written with ŷ_t and y_t (e_{y_t} for softmax)."""
        d = self.d
        y_hat, y = sp.Symbol("PLACEA"), sp.Symbol("PLACEB")
        text = sp.latex(d.output_factor.xreplace({d.symbols["y_hat"]: y_hat, d.symbols["y"]: y}))
        return text.replace("PLACEA", self._y_hat()).replace("PLACEB", self._y())

    def model_row(self) -> tuple[str, str, str]:
        squash = {"bce": r"\sigma", "softmax": r"\operatorname{softmax}", "mse": ""}[self.o.loss]
        rhs = rf"{squash}\left({self.logit()}\right)" if squash else self.logit()
        note = r"t = 1, \ldots, n" if self.o.every else ""
        return self._y_hat(), rhs, note

    def loss(self) -> str:
        """The loss of the batch, with the mask m (1 where no mask is given) and the reduction."""
        t = self.when
        step = {"bce": rf"-y_{{b,{t}}} \log \hat{{y}}_{{b,{t}}} - \left(1 - y_{{b,{t}}}\right) \log\left(1 - \hat{{y}}_{{b,{t}}}\right)",
                "softmax": rf"-\log \hat{{y}}_{{b,{t},y_{{b,{t}}}}}",
                "mse": rf"\left(\hat{{y}}_{{b,{t}}} - y_{{b,{t}}}\right)^{{2}}"}[self.o.loss]
        if not self.o.every:
            return rf"L = \frac{{1}}{{B}} \sum_{{b=1}}^{{B}} \left({step}\right)"
        total = rf"\sum_{{b=1}}^{{B}} \sum_{{t=1}}^{{n}} m_{{b,t}} \left({step}\right)"
        if self.o.reduction == "all":
            return rf"L = \frac{{1}}{{\sum_{{b,t}} m_{{b,t}}}} {total}"
        return rf"L = \frac{{1}}{{B}} {total}"

    def local_row(self) -> tuple[str, str]:
        lhs = rf"\frac{{\partial \ell_{{{self.when}}}}}{{\partial \mathbf{{z}}_{{{self.when}}}}}" if self.vector else \
            rf"\frac{{\partial \ell_{{{self.when}}}}}{{\partial z_{{{self.when}}}}}"
        return lhs, self.error()

    def seed(self) -> str:
        """What the loss at step t sends to δs_t: W_yᵀ e_t, or e_t w_y."""
        if self.vector:
            return rf"{self._weight()}^{{T}} \left({self.error()}\right)"
        return rf"\left({self.error()}\right) {self._weight()}"

    def gradient_rows(self) -> list[tuple[str, str]]:
        """∂L/∂W_y and ∂L/∂b: Σ_t e_t s_tᵀ and Σ_t e_t (the last step only for a readout after the last)."""
        ts, cell = self.ts, self.d.cell
        outer = (rf"\left({self.error()}\right) {self._state()}^{{T}}" if self.vector
                 else rf"\left({self.error()}\right) {self._state()}")
        rows = {}
        over = r"\sum_{t=1}^{n} " if self.o.every else ""
        rows[cell.readout] = over + outer
        if cell.readout_bias:
            rows[cell.readout_bias] = over + rf"\left({self.error()}\right)"
        return [(ts.vec.doprint(_partial(ts, name)), rhs) for name, rhs in rows.items()]

    def note(self) -> str:
        """The sentence after the δ recursion: where the readout's error arrives."""
        target = self.ts.vec.doprint(self.d.incoming[self.d.output_state])
        if self.o.every:
            return (f"The loss at every step $t$ adds ${self.seed()}$ to ${target}$, beside what step $t + 1$ sends "
                    "(a masked step adds nothing).")
        return f"The readout adds ${self.seed()}$ to ${self.ts.vec.at(0, 'n').doprint(self.d.incoming[self.d.output_state])}$ at $t = n$."

    def context(self) -> dict:
        return {"describe": self.o.describe, "loss": self.loss(), "note": self.note(),
                "kind": "many-to-many" if self.o.every else "many-to-one"}


def _partial(ts, name: str):
    return Partial(ts.loss, sp.Symbol(name))


__all__ = ["OutputsTypesetter"]
