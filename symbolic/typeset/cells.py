"""Typesetting any cell's BPTT: a LaTeX document or a Markdown page (KaTeX math) from a ``CellDerivation``.

One printer, :class:`CellPrinter` (a SymPy ``LatexPrinter`` subclass), prints the engine's per-unit
expressions in two readings:

- **per unit** (the local derivatives): ``c_prev`` is c_{t−1}, ``a_i`` is a_{i,t}, ``U_n@h_prev`` is
  (U_n h_{t−1}) (one entry of the product), ``tanh_c`` (an activation the engine lifted into a node of
  its own) is tanh(c_t), ``delta_a_i`` is δa_{i,t};
- **as vectors** (the model, the δ recursion, the gradients, the state Jacobian): values bold, every
  product of vectors ⊙, a number in a sum the vector of ones 𝟏, a power elementwise (∘).

The time index is a setting of the printer (t, t + 1, n, k…), so what step t + 1 sends back to s_t prints
at t + 1 inside a row of step t. Display-only expressions (:class:`Terms`, :class:`At`,
:class:`Transposed`, :class:`Brace`, :class:`Diag`…) keep the order and grouping the document shows;
the printed pieces go to one template per format (``templates/latex/cell.tex.j2``, ``cell.md.j2``,
sharing ``cell_body.j2``), which only lays them out.
"""

from __future__ import annotations

import shlex

import sympy as sp

from ..engine.derivation import CellDerivation
from ..files import MARKER
from ..model import VOCABULARY
from ..templating import render
from .cell_printer import (
    At,
    Brace,
    CellPrinter,
    Chain,
    Diag,
    GapProduct,
    Outer,
    Partial,
    StepSum,
    Terms,
    Transpose,
    Transposed,
    names_of,
)
from .outputs import OutputsTypesetter

FORMATS = ("tex", "md")



_TEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\^{}", "#": r"\#",
                 "%": r"\%", "&": r"\&", "$": r"\$", "~": r"\~{}"}


#: Characters of a cell's description that pdflatex cannot take as they are.
_TEX_UNICODE = {"⊙": r"$\odot$", "⊗": r"$\otimes$", "·": r"$\cdot$", "×": r"$\times$", "−": "-", "–": "--",
                "—": "---", "′": "'", "ᵀ": r"$^{T}$", "≤": r"$\le$", "≥": r"$\ge$", "→": r"$\to$", "’": "'",
                "‘": "`", "“": "``", "”": "''", "…": r"\ldots{}", "∘": r"$\circ$", "√": r"$\surd$"}


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "Gamma", "Delta",
          "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def _tex_code(text: str) -> str:
    """``text`` (a command line, a file name) for \texttt: LaTeX's special characters escaped (a cell
    file's path may hold %, & or #), -- kept as two hyphens and ' straight, so the command can be
    copied from the PDF."""
    escaped = "".join(_TEX_SPECIALS.get(char, char) for char in text)
    # a straight quote (shell quoting of a path), not the typewriter font's curly one
    return escaped.replace("--", "-{}-").replace("'", r"\textquotesingle{}")


def _prose(text: str, fmt: str) -> str:
    """Plain text for the document's prose: for LaTeX, its special characters escaped and Unicode
    written as LaTeX (Greek letters, ⊙, −…; others by their ASCII base letter, else '?'); for
    Markdown, $ escaped."""
    if fmt != "tex":
        return text.replace("$", r"\$")
    import unicodedata

    out = []
    for char in text:
        if char in _TEX_SPECIALS:
            out.append(_TEX_SPECIALS[char])
        elif char.isascii():
            out.append(char)
        elif char in _TEX_UNICODE:
            out.append(_TEX_UNICODE[char])
        else:
            name = unicodedata.name(char, "")
            letter = name.split()[-1].lower().replace("lamda", "lambda") if name.startswith("GREEK ") else ""
            if "CAPITAL" in name:
                letter = letter.capitalize()
            if letter in _GREEK:
                out.append(rf"$\{letter}$")
            else:
                ascii_form = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
                out.append("".join(_TEX_SPECIALS.get(c, c) for c in ascii_form) or "?")
    return "".join(out)


def _lines(parts: list[str]) -> list[str]:
    """Printed parts of a sum, one per line, each after its sign: ["a", "+ b", "- c"]."""
    lines = []
    for part in parts:
        if not lines or part.startswith("- "):
            lines.append(part)
        else:
            lines.append("+ " + part)
    return lines


class CellTypesetter:
    """Prints the pieces of one :class:`~symbolic.engine.derivation.CellDerivation`: rows of printed LaTeX."""

    def __init__(self, derivation: CellDerivation):
        self.d = d = derivation
        self.cell = d.cell
        self.names = names_of(d)
        order = {node.symbol: index for index, node in enumerate(d.nodes)}
        self.vec = CellPrinter(self.names, vector=True, order=order)
        self.unit = self.vec.units()
        self.loss = sp.Symbol("L")
        self.y, self.y_hat = d.symbols["y"], d.symbols["y_hat"]
        self.readout = sp.Symbol(self.cell.readout)
        self.output = d.state_node(d.output_state).symbol
        #: the output side when it is not the notes' σ and cross-entropy after the last step
        self.outputs = None if d.outputs.default else OutputsTypesetter(self)

    # -- the model ------------------------------------------------------------------------------------------

    def logit(self) -> sp.Expr:
        """w_yᵀ s_n (+ b): the readout's logit, printed at n."""
        logit = Chain(Transpose(self.readout), At(self.output, 0, "n"))
        if self.cell.readout_bias:
            return Terms(logit, sp.Symbol(self.cell.readout_bias))
        return logit

    def model_rows(self) -> list[tuple[str, str, str]]:
        """The cell's equations as the user wrote them, as vectors at step t; then the readout."""
        rows = []
        for eq in self.cell.equations:
            if self.names[eq.symbol].kind == "inline":
                continue  # written in place where its matrix applies
            note = r"\text{the new state}" if eq.state else ""
            rows.append((self.vec.doprint(eq.symbol), self.vec.doprint(eq.expr), note))
        initial = ", ".join(self.vec.at(0, "0")._print_Symbol(self.d.state_node(s).symbol) for s in self.d.states)
        rows.append((initial, r"\mathbf{0}", ""))
        if self.outputs:
            rows.append(self.outputs.model_row())
            return rows
        rows.append((self.vec.doprint(self.y_hat), rf"\sigma\left({self.vec.doprint(self.logit())}\right)", ""))
        return rows

    def shapes(self) -> list[str]:
        """Parameters grouped by shape: W_· ∈ ℝ^{H×D}…, with the model's sizes."""
        return self._shapes(self._hidden, self._inputs)

    def _shapes(self, hidden: int, inputs: int) -> list[str]:
        groups: dict = {}
        sizes = {"H": str(hidden), "D": str(inputs), "K": str(self.d.outputs.classes)}
        for name, shape in self.d.parameters.items():
            groups.setdefault(shape, []).append(self.vec.doprint(sp.Symbol(name)))
        rows = []
        for shape, members in groups.items():
            if not shape:
                space = r"\mathbb{R}"
            elif len(shape) == 1:
                space = rf"\mathbb{{R}}^{{{sizes[shape[0]]}}}"
            else:
                space = rf"\mathbb{{R}}^{{{sizes[shape[0]]} \times {sizes[shape[1]]}}}"
            rows.append(f"{', '.join(members)} \\in {space}")
        return rows

    def loss_rhs(self) -> str:
        """−y log ŷ − (1 − y) log(1 − ŷ), in the notes' order."""
        y, y_hat = self.y, self.y_hat
        return self.unit.doprint(Terms(-Chain(y, sp.log(y_hat)), -Chain(1 - y, sp.log(1 - y_hat))))

    # -- one step, per unit, and the local derivatives --------------------------------------------------------

    def step_rows(self) -> list[tuple[str, str]]:
        """The engine's nodes of one step, per unit: pre-activations and lifted activations named."""
        rows = []
        for node in self.d.nodes:
            if self.names[node.symbol].kind in ("inline", "lifted"):
                continue  # an operand written in place; an activation printed as itself, tanh(c_t)
            lhs = self.unit.doprint(node.symbol)
            rows.append((lhs, self.unit.doprint(node.expr)))
        return rows

    def local_rows(self) -> list[tuple[str, str]]:
        """∂v/∂u for every node and every symbol it uses (by sp.diff; activations with their output),
        leaving out the partials equal to 1 with respect to a matrix product or a parameter."""
        rows = []
        for node in self.d.nodes:
            for symbol, partial in self.d.partials[node.name].items():
                kind = self.names[symbol].kind if symbol in self.names else "scalar"
                if partial == 1 and kind in ("linear", "vector", "matrix"):
                    continue
                rows.append((self.unit.doprint(Partial(node.symbol, symbol)), self.unit.doprint(partial)))
        if self.outputs:
            rows.append(self.outputs.local_row())
            return rows
        rows.append((self.unit.doprint(Partial(self.loss, self.logit())), self.unit.doprint(self.d.output_factor)))
        return rows

    # -- the δ recursion ----------------------------------------------------------------------------------

    def _sent(self, state: str) -> list:
        """What step t + 1 sends back to s_t, as (label, display printed at t + 1): the direct path from
        each state (δs′_(t+1) ⊙ the direct factor of ∂s′_(t+1)/∂s_t), any other elementwise term,
        then Mᵀ δ through the weights."""
        d = self.d
        adjoint = d.sent[state]
        parts = []
        rest = sp.expand(adjoint.expr)
        for later in d.states:
            delta = d.symbols["value"][later]
            direct = d.state_jacobian[(later, state)][0]
            coefficient = rest.coeff(delta)
            if coefficient != 0 and sp.expand(coefficient - direct) == 0:
                parts.append(("direct", At(delta * sp.factor_terms(coefficient), 1)))
                rest = sp.expand(rest - delta * coefficient)
        if rest != 0:
            parts.append(("elementwise", At(sp.factor_terms(rest), 1)))
        through = [Transposed(sp.Symbol(matrix), delta) for matrix, delta in adjoint.transposed]
        if through:
            parts.append(("through", At(Terms(*through), 1)))
        return parts

    def _sent_lagged(self, state: str) -> list:
        """What step t + K sends back to s_t for each lag K the state is read at (``Cell.lag``), as
        (label, display printed at t + K): an elementwise term, then Mᵀ δ through the weights."""
        parts = []
        for lag in self.d.lags[state][1:]:
            adjoint = self.d.sent_lagged[(state, lag)]
            if adjoint.expr != 0:
                parts.append((f"elementwise {lag}", At(sp.factor_terms(adjoint.expr), lag)))
            through = [Transposed(sp.Symbol(matrix), delta) for matrix, delta in adjoint.transposed]
            if through:
                parts.append((f"through {lag}", At(Terms(*through), lag)))
        return parts

    def lag_rows(self, steps: int) -> list[dict]:
        """Each state read K ≥ 2 steps back: the lag, the terms of ∂s′_t/∂s_(t−K) per new state, and
        whether any step t + K ≤ n exists at this n (for K ≥ n the path carries nothing)."""
        d, vec, rows = self.d, self.vec, []
        for (source, lag), symbol in d.lagged.items():
            jacobian = []
            for state in d.states:
                parts = self._lag_parts(state, source, lag)
                if parts:
                    lhs = vec.doprint(Partial(d.state_node(state).symbol, symbol))
                    jacobian.append((lhs, _lines([vec.doprint(part) for part in parts]), ""))
            rows.append({"lag": lag, "carries": lag < steps, "delta": vec.doprint(d.incoming[source]),
                         "read": vec.doprint(symbol), "jacobian": jacobian,
                         "matrices": [vec.doprint(Transpose(sp.Symbol(m))) for m, _ in d.sent_lagged[(source, lag)].transposed]})
        return rows

    def _lag_parts(self, state: str, source: str, lag: int) -> list:
        """The terms of ∂s′_t/∂s_(t−K), as ``_jacobian_parts`` writes those of lag 1."""
        d = self.d
        direct = d.lag_jacobian[(state, source, lag)][0]
        totals, leaf = d.totals[d.state_node(state).name], d.leaf(source, lag)
        parts = [Brace(Diag(direct), r"\text{direct path}")] if direct != 0 else []
        for linear in d.linears:
            if linear.symbol in totals and self._moves(linear.operand, leaf):
                parts.append(self._through(linear, totals[linear.symbol], leaf))
        return parts

    def delta_rows(self) -> dict:
        """The backward step: rows (lhs, lines, note) in the order the backward pass computes them.

        A state's δ is the total ∂L/∂s_t: what the step t + 1 sends back (zero at t = n), what the
        readout adds at t = n (the output state), and what the uses of s_t within step t add."""
        d, vec = self.d, self.vec
        labels = {
            "within": r"\text{within step } t",
            "direct": r"\text{direct path, from step } t+1",
            "elementwise": r"\text{elementwise, from step } t+1",
            "through": r"\text{through the weights, from step } t+1",
            "loss": r"\text{from the loss at step } t",
        }
        labels |= {f"{kind} {lag}": rf"\text{{{kind_text}, from step }} t+{lag}" for lags in d.lags.values()
                   for lag in lags[1:] for kind, kind_text in (("elementwise", "elementwise"),
                                                                ("through", "through the weights"))}
        rows = []
        seed_tex = (self.outputs.seed() if self.outputs
                    else rf"\left({vec.doprint(d.output_factor)}\right) {vec.doprint(self.readout)}")
        every = d.outputs.every

        def state_row(state: str, within) -> None:
            lhs = vec.doprint(d.incoming[state])
            parts = ([("within", within)] if within != 0 else []) + self._sent(state) + self._sent_lagged(state)
            note = ""
            if state == d.output_state and every:  # the loss at step t sends to δs_t at every step
                parts = [("loss", seed_tex)] + parts
            elif state == d.output_state:  # its row at t = n, where the readout's residual arrives
                first = [seed_tex] + ([vec.doprint(within)] if within != 0 else [])
                rows.append((vec.at(0, "n").doprint(d.incoming[state]), _lines(first), ""))
                note = r"t < n"
            if not parts:
                rows.append((lhs, ["0"], note))
                return
            braced = len(parts) > 1
            printed = [(rf"\underbrace{{{part}}}_{{{labels[label]}}}" if braced else part) if isinstance(part, str)
                       else vec.doprint(Brace(part, labels[label]) if braced else part) for label, part in parts]
            rows.append((lhs, _lines(printed), note))

        aliased = [state for state in d.states if state not in d.adjoint]
        for state in aliased:  # δs_t is what arrives: nothing within the step uses s_t
            state_row(state, sp.S.Zero)
        for adjoint in d.adjoints:
            node = d.node.get(adjoint.name)
            if node is not None and node.state:
                within = sp.expand(adjoint.expr - d.incoming[node.state])
                within = sp.factor_terms(within) if within != 0 else within
                if adjoint.transposed:
                    within = Terms(within, *(Transposed(sp.Symbol(m), delta) for m, delta in adjoint.transposed))
                state_row(node.state, within)
                continue
            parts = [adjoint.expr] + [Transposed(sp.Symbol(m), delta) for m, delta in adjoint.transposed]
            printed = [vec.doprint(part) for part in parts if part != 0]
            rows.append((vec.doprint(adjoint.symbol), _lines(printed), ""))
        return {"rows": rows, "readout": vec.at(0, "n").doprint(d.incoming[d.output_state])}

    # -- the gradients ------------------------------------------------------------------------------------------

    def _operand(self, operand: str) -> sp.Symbol:
        if operand == "x":
            return self.cell.input_symbol
        for symbol in (*self.d.previous.values(), *self.d.lagged.values()):
            if operand == str(symbol):
                return symbol
        return self.d.node[operand].symbol

    def gradient_rows(self) -> list[tuple[str, list[str]]]:
        """∂L/∂θ for every parameter: Σ_t δ uᵀ for a matrix, Σ_t (…) for a per-unit vector, the readout's."""
        vec, rows = self.vec, []
        readout = dict(self.outputs.gradient_rows()) if self.outputs else {}
        for name in self.cell.parameters:
            lhs = vec.doprint(Partial(self.loss, sp.Symbol(name)))
            if lhs in readout:
                rhs = readout[lhs]
            elif name == self.cell.readout:
                rhs = rf"\left({vec.doprint(self.d.output_factor)}\right) {vec.at(0, 'n').doprint(self.output)}"
            elif name == self.cell.readout_bias:
                rhs = vec.doprint(self.d.output_factor)
            else:
                terms = []
                for term in self.d.gradients.get(name, ()):
                    if term[0] == "outer":
                        terms.append(Outer(term[1], self._operand(term[2])))
                    else:
                        terms.append(term[1])
                rhs = vec.doprint(StepSum(Terms(*terms) if len(terms) > 1 else terms[0])) if terms else "0"
            rows.append((lhs, rhs))
        return rows

    # -- the state-to-state Jacobian ---------------------------------------------------------------------------

    def _moves(self, operand: str, previous: sp.Symbol) -> bool:
        if operand == str(previous):
            return True
        node = self.d.node.get(operand)
        if node is None:
            return False
        totals = self.d.totals[operand]
        if totals.get(previous, 0) != 0:
            return True
        return any(linear.symbol in totals and self._moves(linear.operand, previous) for linear in self.d.linears)

    def _operand_jacobian(self, operand: str, previous: sp.Symbol):
        """∂u_t/∂s_(t−1) for a matrix's operand u: I for s_(t−1) itself, else diag(·) + Σ diag(·) M ∂u′/∂s."""
        if operand == str(previous):
            return None
        totals = self.d.totals[operand]
        parts = []
        if totals.get(previous, 0) != 0:
            parts.append(Diag(totals[previous]))
        for linear in self.d.linears:
            if linear.symbol in totals and self._moves(linear.operand, previous):
                parts.append(self._through(linear, totals[linear.symbol], previous))
        return Terms(*parts)

    def _through(self, linear, factor, previous):
        inner = self._operand_jacobian(linear.operand, previous)
        factors = ([] if factor == 1 else [Diag(factor)]) + [sp.Symbol(linear.matrix)]
        return Chain(*factors, *([inner] if inner is not None else []))

    def _pairs(self) -> list[tuple[str, str]]:
        """(new state, previous state) in the cell's order of states."""
        return [(state, source) for state in self.d.states for source in self.d.states]

    def _jacobian_parts(self, state: str, source: str, braced: bool = True) -> list:
        """The terms of ∂s′_t/∂s_(t−1): diag(direct) (under its brace when ``braced``), then
        diag(∂s′/∂(M u)) M ∂u/∂s_(t−1) for every product M u whose operand moves with s_(t−1)."""
        d = self.d
        direct = d.state_jacobian[(state, source)][0]
        totals, previous = d.totals[d.state_node(state).name], d.previous[source]
        parts = []
        if direct != 0:
            parts.append(Brace(Diag(direct), r"\text{direct path}") if braced else Diag(direct))
        # every product M u whose operand moves with s_(t−1), however deep (U (m ⊙ m), m = tanh(V h))
        for linear in d.linears:
            if linear.symbol in totals and self._moves(linear.operand, previous):
                parts.append(self._through(linear, totals[linear.symbol], previous))
        return parts

    def jacobian_rows(self) -> list[tuple[str, list[str]]]:
        """∂s′_t/∂s_(t−1) = diag(direct) (under its brace) + Σ diag(∂s′/∂(M u)) M ∂u/∂s_(t−1)."""
        d, vec, rows = self.d, self.vec, []
        for state, source in self._pairs():
            lhs = vec.doprint(Partial(d.state_node(state).symbol, d.previous[source]))
            parts = [vec.doprint(part) for part in self._jacobian_parts(state, source)]
            rows.append((lhs, _lines(parts) if parts else ["0"], ""))
        return rows

    def _states_at(self, letter: str, back: int = 0) -> str:
        """The states at a step: s_n, or (h_n, c_n) for several."""
        printer = self.vec.at(-back, letter)
        states = [printer.doprint(self.d.state_node(s).symbol) for s in self.d.states]
        return states[0] if len(states) == 1 else rf"\left({', '.join(states)}\right)"

    def gap_product(self) -> dict:
        """What a gap of n − j steps carries: ∂s_n/∂s_j = Π_{k=j+1}^{n} ∂s_k/∂s_(k−1) (the latest step
        leftmost), its norm bounded by the product of the factors' norms; for one state whose Jacobian
        is one term, the product is also written with that term at every step k."""
        d = self.d
        lhs = rf"\frac{{\partial {self._states_at('n')}}}{{\partial {self._states_at('j')}}}"
        factor = rf"\frac{{\partial {self._states_at('k')}}}{{\partial {self._states_at('k', 1)}}}"
        explicit = None
        if len(d.states) == 1:
            parts = self._jacobian_parts(d.states[0], d.states[0], braced=False)
            if len(parts) == 1:
                explicit = self.vec.doprint(GapProduct(parts[0]))
        return {
            "lhs": lhs,
            "product": rf"\prod_{{k=j+1}}^{{n}} {factor}",
            "explicit": explicit,
            "norm": rf"\left\| {lhs} \right\|",
            "norms": rf"\prod_{{k=j+1}}^{{n}} \left\| {factor} \right\|",
        }

    def direct_products(self) -> list[tuple[str, str, str | None]]:
        """For every state with a direct path to itself: Π_{k=j+1}^{n} diag(direct_k), and for a direct
        path that is one value, diag(v_{j+1} ⊙ ⋯ ⊙ v_n)."""
        d, vec, rows = self.d, self.vec, []
        for state, source in self._pairs():
            direct = d.state_jacobian[(state, source)][0]
            if state != source or direct == 0:
                continue
            node = d.state_node(state).symbol
            lhs = vec.at(0, "n").doprint(node)
            lhs = rf"\left.\frac{{\partial {lhs}}}{{\partial {vec.at(0, 'j').doprint(node)}}}\right|_{{\text{{direct}}}}"
            product = vec.doprint(GapProduct(Diag(direct)))
            flat = None
            if direct == 1:
                flat = "I"
            elif isinstance(direct, sp.Symbol):
                flat = (rf"\operatorname{{diag}}\left({vec.at(1, 'j').doprint(direct)} \odot \cdots \odot "
                        rf"{vec.at(0, 'n').doprint(direct)}\right)")
            rows.append((lhs, product, flat))
        return rows

    # -- the whole ------------------------------------------------------------------------------------------------

    def context(self, fmt: str, steps: int, hidden: int, inputs: int, command: str,
                cell_argument: str = "", verify: str = "") -> dict:
        self._hidden, self._inputs = hidden, inputs
        return {
            "fmt": fmt,
            "marker": MARKER,
            "command": command,
            "cell": self.cell.name,
            "cell_tex": _prose(self.cell.name, "tex"),
            "tex_code": _tex_code,
            "verify": verify or f"bptt derive --cell {shlex.quote(cell_argument or self.cell.name)} --verify",
            "description": self.cell.description,
            "description_text": _prose(self.cell.description, fmt),
            "n": steps,
            "hidden": hidden,
            "inputs": inputs,
            "states": [self.vec.doprint(self.d.state_node(s).symbol) for s in self.d.states],
            "output_state": self.vec.doprint(self.output),
            "readout": self.vec.doprint(self.readout),
            "model_rows": self.model_rows(),
            "shapes": self.shapes(),
            "loss": self.loss_rhs(),
            "step_rows": self.step_rows(),
            "local": self.local_rows(),
            "heaviside": any(partial.has(sp.Heaviside) for partials in self.d.partials.values()
                             for partial in partials.values()),
            "deltas": self.delta_rows(),
            "gradients": self.gradient_rows(),
            "jacobian": self.jacobian_rows(),
            "gap": self.gap_product(),
            "direct_products": self.direct_products(),
            "lags": self.lag_rows(steps),
            "outputs": ({**self.outputs.context(), "describe": _prose(self.outputs.context()["describe"], fmt)}
                        if self.outputs else None),
        }


# -- entry points ---------------------------------------------------------------------------------------------------


def command_of(model, fmt: str | None) -> str:
    """``bptt derive --cell C --steps N [--activation A] --hidden H [--bias] [--inputs D] --format F``: every
    option of the model that is not its default, so that the command regenerates this document; with
    ``fmt`` None, ``--verify`` in place of the format (the proof of this model)."""
    parts = [f"bptt derive --cell {shlex.quote(model.cell_argument)}", f"--steps {model.steps}"]
    if model.activation != "tanh":
        parts.append(f"--activation {model.activation}")
    parts.append(f"--hidden {model.hidden}")
    if getattr(model, "skip", None):
        parts.append(f"--skip {model.skip}")
    if model.bias:
        parts.append("--bias")
    if model.inputs != len(VOCABULARY):
        parts.append(f"--inputs {model.inputs}")
    outputs = getattr(model, "outputs", None)
    if outputs is not None and not outputs.default:
        parts.append(outputs.flags)
    parts.append(f"--format {fmt}" if fmt else "--verify")
    return " ".join(parts)


def cell_document(derivation: CellDerivation, fmt: str = "tex", steps: int = 3, hidden: int = 1,
                  inputs: int = len(VOCABULARY), command: str = "", cell_argument: str = "",
                  verify: str = "") -> str:
    """The document of a derivation: LaTeX (``tex``, compiles with pdflatex) or Markdown (``md``, KaTeX).

    ``cell_argument``: what ``--cell`` takes for this cell (its name, or the cell file's name);
    ``verify``: the command that proves it (default ``bptt derive --cell C --verify``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    context = CellTypesetter(derivation).context(fmt, steps, hidden, inputs, command, cell_argument, verify)
    return render("latex", f"cell.{fmt}.j2", **context)


def document(model, derivation: CellDerivation, fmt: str = "tex", command: str | None = None) -> str:
    """``bptt derive``'s document for a ``Model`` of any cell (built-in or a cell file), at any size but
    the notes' scalar model's (which ``symbolic.typeset.notes`` typesets), from the command's one
    ``derivation`` of the model's cell."""
    return cell_document(derivation, fmt, model.steps, model.hidden, model.inputs,
                         command or command_of(model, fmt), model.cell_name, command_of(model, None))


__all__ = ["FORMATS", "CellPrinter", "CellTypesetter", "cell_document", "command_of", "document", "names_of"]
