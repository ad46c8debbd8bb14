"""Typesetting: the derivation as a LaTeX document, a Markdown page (KaTeX math), or a Jupyter summary.

Every formula is printed here by one printer, :class:`DerivationPrinter` (a SymPy ``LatexPrinter``
subclass); the templates in ``templates/latex`` only lay the printed strings out. Displayed products
keep the chain rule's order through :class:`InOrder`, so (∂L/∂ŷ)(∂ŷ/∂o_n) prints as (ŷ − y) w_o and
∂o_k/∂o_{k−1} as f′(a_k) w_h = (1 − o_k²) w_h, each checked equal to the derived expression.

Sizes are bounded so that n = 1000 typesets in well under a second: at most
``ALL_TERMS_LIMIT`` terms are listed in full (then j = n, n−1, n−2, ⋯, 1), a term shows at most
``JACOBIANS_SHOWN`` Jacobian factors, and the fully expanded gradient is shown only for
n ≤ ``EXPANDED_SHOWN_LIMIT`` (its size is reported up to ``forms.EXPANDED_LIMIT``).
"""

from __future__ import annotations

from itertools import count

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE

from ..files import MARKER
from ..model import VOCABULARY
from ..notes.forms import EXPANDED_LIMIT, AbstractPartial
from ..templating import render

FORMATS = ("tex", "md")
#: Up to this n every term of a sum is listed; above it j = n, n−1, n−2, ⋯, 1.
ALL_TERMS_LIMIT = 8
#: A term with more Jacobian factors ∂o_k/∂o_{k−1} shows the first two, ⋯, and the last.
JACOBIANS_SHOWN = 3
#: Substituted terms are broken after this many chain-rule factors per line.
FACTORS_PER_LINE = 4
#: The fully expanded gradient (as a list of common subexpressions) is shown up to this n.
EXPANDED_SHOWN_LIMIT = 4
#: An expanded sum is broken into lines of at most this many expression-tree nodes.
NODES_PER_LINE = 22

PARAMETER_LABELS = {"w_i": "i", "w_h": "ii", "w_o": "iii"}


class InOrder(sp.Expr):
    """A product displayed in the order given: f′(a_k) · ∂a_k/∂o_{k−1} prints (1 − o_k²) w_h.

    For display only; :attr:`value` is the ordinary SymPy product.
    """

    def __new__(cls, *factors):
        return sp.Expr.__new__(cls, *(sp.sympify(factor) for factor in factors))

    @property
    def value(self) -> sp.Expr:
        return sp.Mul(*(factor.value if isinstance(factor, InOrder) else factor for factor in self.args))


class DerivationPrinter(LatexPrinter):
    """SymPy's LaTeX printer with the model's symbol names and a few readings of our own.

    - symbols print by ``UnrolledScalarRNN.latex_names`` (x_{t,d}, w_{i,d}, \\hat{y}, o_{t});
    - a sum leads with a positive term (ŷ − y, not −y + ŷ);
    - ``o[k]`` (an ``Indexed``) prints o_{k}, and the Heaviside step H(o_k);
    - :class:`InOrder` prints its factors in the given order.
    """

    def __init__(self, names: dict):
        super().__init__({"symbol_names": names})

    def _print_Add(self, expr, order=None):
        terms = self._as_ordered_terms(expr, order=order)
        terms = [t for t in terms if not t.could_extract_minus_sign()] + [
            t for t in terms if t.could_extract_minus_sign()
        ]
        tex = ""
        for i, term in enumerate(terms):
            if i == 0:
                pass
            elif term.could_extract_minus_sign():
                tex += " - "
                term = -term
            else:
                tex += " + "
            term_tex = self._print(term)
            if self._needs_add_brackets(term):
                term_tex = rf"\left({term_tex}\right)"
            tex += term_tex
        return tex

    def _print_Indexed(self, expr):
        indices = ",".join(map(self._print, expr.indices))
        return f"{self._print(expr.base.label)}_{{{indices}}}"

    def _print_Heaviside(self, expr, exp=None):
        tex = rf"H\left({self._print(expr.args[0])}\right)"
        return f"{tex}^{{{exp}}}" if exp else tex

    def _print_InOrder(self, expr):
        factors = [factor for factor in expr.args if factor != 1] or [sp.S.One]
        printed = []
        for index, factor in enumerate(factors):
            tex = self.parenthesize(factor, PRECEDENCE["Mul"], strict=True)
            if isinstance(factor, (sp.Sum, sp.Product)) and index < len(factors) - 1:
                tex = rf"\left({tex}\right)"  # the factors after it are outside its scope
            printed.append(tex)
        return " ".join(printed)


def canonical_command(derivation, fmt: str) -> str:
    """The command that makes this document, options in a fixed order (independent of -o)."""
    model = derivation.model
    parts = ["bptt derive", f"--steps {model.steps}", f"--activation {model.activation}"]
    if model.inputs != len(VOCABULARY):
        parts.append(f"--inputs {model.inputs}")
    parts.append(f"--format {fmt}")
    return " ".join(parts)


class Typesetter:
    """Prints the pieces of one derivation; every method returns printed LaTeX or plain data."""

    def __init__(self, derivation):
        self.derivation = derivation
        self.unrolled = u = derivation.unrolled
        self.n = derivation.n
        self.inputs = len(u.w_i)
        self.names = u.latex_names.copy()  # names the components w_{i,d}, x_{t,d} on lookup
        self.printer = DerivationPrinter(self.names)
        self.loss = sp.Symbol("L")
        self.w_i = self._symbol("w_i (vector)", r"\mathbf{w}_{i}")
        self.x_step = self._symbol("x_t (vector)", r"\mathbf{x}_{t}")
        self.o_zero = self._symbol("o_0", "o_{0}")
        step = u.step
        f_prime = derivation.step_derivative
        # The local derivatives as f′(a_t) times ∂a_t/∂(·), each checked against the derived one.
        # (From a_t with w_i·x_t one Dot, so nothing here grows with the input size D.)
        self.local = {
            "jacobian": InOrder(f_prime, sp.diff(step.vector_a, step.o_prev)),
            "w_h": InOrder(f_prime, sp.diff(step.vector_a, u.w_h)),
            "w_i": InOrder(f_prime, self.x_step),
        }
        assert sp.expand(self.local["jacobian"].value - derivation.step_jacobian) == 0
        assert sp.expand(self.local["w_h"].value - derivation.step_immediate["w_h"][0]) == 0
        assert sp.expand(f_prime * step.x_vector - derivation.step_immediate_vector["w_i"]) == 0
        # (∂L/∂ŷ)(∂ŷ/∂o_n) and ∂L/∂w_o written as (ŷ − y) times the rest.
        self.residual = u.y_hat - u.y
        self.output = InOrder(self.residual, self._over_residual(derivation.output_factor))
        self.output_w_o = InOrder(self.residual, self._over_residual(derivation.dL_dw_o))

    # -- printing helpers ------------------------------------------------------------------------

    def _symbol(self, name: str, tex: str) -> sp.Symbol:
        symbol = sp.Symbol(name)
        self.names[symbol] = tex
        return symbol

    def tex(self, expr) -> str:
        return self.printer.doprint(expr)

    def _over_residual(self, expr: sp.Expr) -> sp.Expr:
        rest = sp.cancel(expr / self.residual)
        u = self.unrolled
        assert not rest.has(u.y) and not rest.has(u.y_hat), rest
        return rest

    def _at(self, expr: sp.Expr, t) -> sp.Expr:
        """A generic-step expression at timestep t: an int, or an index letter such as "k"."""
        u, step = self.unrolled, self.unrolled.step
        if isinstance(t, int):
            o = u.o[t - 1]
            previous = u.o[t - 2] if t > 1 else self.o_zero  # o_0 kept visible, e.g. (1 − o_1²) o_0
        else:
            o = self._symbol(f"o_({t})", f"o_{{{t}}}")
            previous = self._symbol(f"o_({t}-1)", f"o_{{{t}-1}}")
        x_vector = self._symbol(f"x_{t} (vector)", rf"\mathbf{{x}}_{{{t}}}")
        mapping = {step.o: o, step.o_prev: previous, self.x_step: x_vector}
        # Only the components x_{t,d} the expression holds (not all D of them).
        for symbol in sp.sympify(expr).free_symbols:
            if symbol in step.x:
                d = step.x.index(symbol) + 1
                mapping[symbol] = (
                    u.x[t - 1][d - 1] if isinstance(t, int) else self._symbol(f"x_({t},{d})", f"x_{{{t},{d}}}")
                )
        return expr.xreplace(mapping)

    def weight(self, parameter: str) -> sp.Symbol:
        u = self.unrolled
        return {"w_i": self.w_i, "w_h": u.w_h, "w_o": u.w_o}[parameter]

    def gradient_lhs(self, parameter: str) -> str:
        return self.tex(AbstractPartial(self.loss, self.weight(parameter)))

    # -- the model -------------------------------------------------------------------------------

    def model_rows(self) -> list[tuple[str, str, str]]:
        """o_0 = 0, o_t = f(w_i·x_t + w_h o_{t−1}), ŷ = σ(w_o o_n): (lhs, rhs, note)."""
        u, f = self.unrolled, self.unrolled.activation
        n = sp.Symbol("n")
        o = sp.IndexedBase("o")
        t = sp.Symbol("t")
        dot = self._symbol("dot_t", r"\mathbf{w}_{i} \cdot \mathbf{x}_{t}")
        return [
            (self.tex(o[0]), "0", ""),
            (self.tex(o[t]), self.tex(f.apply(dot + u.w_h * o[t - 1])), r"t = 1, \ldots, n"),
            (self.tex(u.y_hat), self.tex(u.output_definition.func(u.w_o * o[n])), ""),
        ]

    def dot_row(self) -> tuple[str, str]:
        d, t = sp.Symbol("d"), sp.Symbol("t")
        w, x = sp.IndexedBase("w"), sp.IndexedBase("x")
        return r"\mathbf{w}_{i} \cdot \mathbf{x}_{t}", self.tex(
            sp.Sum(sp.Indexed(w, sp.Symbol("i"), d) * x[t, d], (d, 1, sp.Symbol("D")))
        )

    def unrolled_rows(self) -> list[tuple[str, str]]:
        """o_1 = f(w_i·x_1), o_2 = f(w_i·x_2 + w_h o_1), …; ⋮ stands for the rows left out."""
        u, f = self.unrolled, self.unrolled.activation
        rows = []
        for t in self._shown_steps():
            if t is None:
                rows.append(("", None))
                continue
            dot = self._symbol(f"dot_{t}", rf"\mathbf{{w}}_{{i}} \cdot \mathbf{{x}}_{{{t}}}")
            recurrent = InOrder(u.w_h, u.state(t - 1)) if t > 1 else 0  # w_h o_(t−1), as in the model
            rows.append((self.tex(u.o[t - 1]), self.tex(f.apply(dot + recurrent))))
        rows.append((self.tex(u.y_hat), self.tex(u.output_definition.func(InOrder(u.w_o, u.o[-1])))))
        return rows

    def _shown_steps(self) -> list:
        if self.n <= ALL_TERMS_LIMIT:
            return list(range(1, self.n + 1))
        return [1, 2, None, self.n]

    def loss_rhs(self) -> str:
        return self.tex(self.unrolled.loss)

    def update_rows(self) -> list[tuple[str, str, str]]:
        eta = sp.Symbol("eta")
        rows = []
        for parameter in ("w_i", "w_h", "w_o"):
            weight = self.weight(parameter)
            rows.append(
                (self.tex(weight), self.tex(weight) + " - " + self.tex(eta) + " " + self.gradient_lhs(parameter),
                 PARAMETER_LABELS[parameter])
            )
        return rows

    # -- the chain rule for this n ---------------------------------------------------------------

    def shown_terms(self) -> list:
        """The terms listed: all for small n, else j = n, n−1, n−2, None (the omitted), 1."""
        terms = self.derivation.terms()
        if self.n <= ALL_TERMS_LIMIT:
            return terms
        return terms[:3] + [None] + terms[-1:]

    def omitted(self) -> dict:
        """How many terms the listing leaves out, and their j range."""
        if self.n <= ALL_TERMS_LIMIT:
            return {"count": 0, "first": 0, "last": 0}
        return {"count": self.n - 4, "first": self.n - 3, "last": 2}

    @staticmethod
    def _compress(jacobians: list) -> list:
        """At most JACOBIANS_SHOWN factors: the first two, ⋯ (None), the last."""
        if len(jacobians) <= JACOBIANS_SHOWN:
            return list(jacobians)
        return list(jacobians[:2]) + [None] + list(jacobians[-1:])

    def _join(self, factors: list, separator: str = " ") -> str:
        return separator.join(r"\cdots" if factor is None else self.tex(factor) for factor in factors)

    def abstract_rows(self, parameter: str) -> list[dict]:
        """Each listed term of the chain-rule form with abstract partials, and its label."""
        rows = []
        for term in self.shown_terms():
            if term is None:
                rows.append({"omitted": True, "tex": "", "label": ""})
                continue
            product = self.derivation.abstract_term(parameter, term.j, self.weight(parameter))
            factors = list(product.args)
            assert len(factors) == 3 + term.gap, product
            shown = factors[:2] + self._compress(factors[2:-1]) + factors[-1:]
            rows.append({"omitted": False, "tex": self._join(shown), "label": term.kind})
        return rows

    def substituted_factors(self, parameter: str, j: int, compress: bool = True) -> list:
        """Term j as chain-rule factors with the local derivatives substituted (None for ⋯)."""
        ks = list(range(self.n, j, -1))
        if compress:
            ks = self._compress(ks)
        jacobians = [None if k is None else self._at(self.local["jacobian"], k) for k in ks]
        return [self.output, *jacobians, self._at(self.local[parameter], j)]

    def substituted_rows(self, parameter: str) -> list[dict]:
        """Each listed term as lines of at most FACTORS_PER_LINE factors joined by ·."""
        rows = []
        for term in self.shown_terms():
            if term is None:
                rows.append({"omitted": True, "lines": [], "note": ""})
                continue
            factors = self.substituted_factors(parameter, term.j)
            lines = [
                self._join(factors[i : i + FACTORS_PER_LINE], r" \cdot ")
                for i in range(0, len(factors), FACTORS_PER_LINE)
            ]
            vanishes = parameter == "w_h" and term.j == 1
            note = r"\text{(zero, since } " + self.tex(self.o_zero) + r" = 0\text{)}" if vanishes else ""
            rows.append({"omitted": False, "lines": lines, "note": note})
        return rows

    def w_o_rows(self) -> dict:
        u, d = self.unrolled, self.derivation
        return {
            "abstract": self.tex(AbstractPartial(self.loss, u.y_hat)) + " " + self.tex(AbstractPartial(u.y_hat, u.w_o)),
            "factors": self.tex(InOrder(d.dL_dyhat, d.dyhat_dw_o)),
            "simplified": self.tex(self.output_w_o),
        }

    # -- the general form and the local derivatives ----------------------------------------------

    def general_rows(self) -> list[tuple[str, str]]:
        """∂L/∂w = Σ_j (∂L/∂ŷ)(∂ŷ/∂o_n) Π_k (∂o_k/∂o_{k−1}) ∂⁺o_j/∂w for w = w_h and w_i."""
        rows = []
        for parameter in ("w_h", "w_i"):
            form = self.derivation.general(self.weight(parameter))
            rows.append((self.gradient_lhs(parameter), self.tex(form.hidden_sum)))
            o, j, k, n = form.o, form.j, form.k, form.n
            u, step = self.unrolled, self.unrolled.step
            x = sp.IndexedBase(self._symbol("x (vector)", r"\mathbf{x}"))
            jacobian = self.local["jacobian"].xreplace({step.o: o[k], step.o_prev: o[k - 1]})
            immediate = self.local[parameter].xreplace({step.o: o[j], step.o_prev: o[j - 1], self.x_step: x[j]})
            substituted = sp.Sum(InOrder(sp.Product(jacobian, (k, j + 1, n)), immediate), (j, 1, n))
            rows.append(("", self.tex(self.output.xreplace({u.o[-1]: o[n]})) + " " + self.tex(substituted)))
        return rows

    def local_rows(self) -> list[tuple[str, str, str]]:
        """(∂ of what, the generic chain rule, this activation's derivative), with output o = f(a)."""
        u, d = self.unrolled, self.derivation
        f_prime = {
            t: self._symbol(f"f'(a_{t})", rf"f'\left(a_{{{t}}}\right)") for t in ("k", "j")
        }
        o_k, o_k1 = self._at(u.step.o, "k"), self._at(u.step.o_prev, "k")
        o_j = self._at(u.step.o, "j")
        step = u.step
        a_k = self._symbol("a_(k)", "a_{k}")
        n = sp.Symbol("n")
        o = sp.IndexedBase("o")
        rows = [
            (f"f'\\left({self.tex(a_k)}\\right)", "", self.tex(self._at(d.step_derivative, "k"))),
            (
                self.tex(AbstractPartial(o_k, o_k1)),
                self.tex(InOrder(f_prime["k"], sp.diff(step.vector_a, step.o_prev))),
                self.tex(self._at(self.local["jacobian"], "k")),
            ),
            (
                self.tex(AbstractPartial(o_j, u.w_h, True)),
                self.tex(self._at(InOrder(f_prime["j"], sp.diff(step.vector_a, u.w_h)), "j")),
                self.tex(self._at(self.local["w_h"], "j")),
            ),
            (
                self.tex(AbstractPartial(o_j, self.w_i, True)),
                self.tex(self._at(InOrder(f_prime["j"], self.x_step), "j")),
                self.tex(self._at(self.local["w_i"], "j")),
            ),
            (
                self.tex(AbstractPartial(self.loss, u.y_hat)) + " " + self.tex(AbstractPartial(u.y_hat, o[n])),
                self.tex(InOrder(d.dL_dyhat, d.dyhat_do_n.xreplace({u.o[-1]: o[n]}))),
                self.tex(self.output),
            ),
        ]
        return rows

    def component_rows(self) -> list[tuple[str, str]]:
        """∂⁺o_j/∂w_{i,d} for d = 1..D (first two, ⋮, last when D > 3), from step_immediate."""
        u, d = self.unrolled, self.derivation
        indices = list(range(self.inputs))
        if self.inputs > 3:
            indices = [0, 1, None, self.inputs - 1]
        o_j = self._at(u.step.o, "j")
        rows = []
        for index in indices:
            if index is None:
                rows.append(("", None))
                continue
            component = InOrder(d.step_derivative, u.step.x[index])
            assert sp.expand(component.value - d.step_immediate["w_i"][index]) == 0
            rows.append((self.tex(AbstractPartial(o_j, u.w_i[index], True)), self.tex(self._at(component, "j"))))
        return rows

    # -- the fully expanded result ---------------------------------------------------------------

    def expanded(self) -> dict:
        """The expanded gradients as common subexpressions (small n), or their sizes (larger n).

        Differentiated with each w_i·x_t one Dot (``Derivation.vector_expanded``), so the work does not
        grow with D: ∂L/∂w_{i,d} for each d when D ≤ 3, else ∂L/∂w_i as a vector (in the x_t)."""
        d, u = self.derivation, self.unrolled
        if self.n > EXPANDED_LIMIT:
            return {"shown": False, "sizes": [], "built": False, "limit": EXPANDED_LIMIT}
        vector = d.vector_expanded("w_i")
        components = [("w_o", u.w_o, d.vector_expanded("w_o")), ("w_h", u.w_h, d.vector_expanded("w_h"))]
        if self.n > EXPANDED_SHOWN_LIMIT or self.inputs <= len(VOCABULARY):
            shown = range(1 if self.n > EXPANDED_SHOWN_LIMIT else self.inputs)
            components += [("w_i", u.w_i[index], u.component(vector, index)) for index in shown]
        else:
            components.append(("w_i", self.w_i, vector))
        expressions = [expression for _, _, expression in components]
        if self.n > EXPANDED_SHOWN_LIMIT:
            sizes = [
                {"lhs": self.tex(AbstractPartial(self.loss, w)), "ops": sp.count_ops(expression.xreplace(self._dot_sums()))}
                for (_, w, _), expression in zip(components, expressions)
            ]
            return {"shown": False, "sizes": sizes[:3], "built": True, "limit": EXPANDED_LIMIT}
        # Name each w_i·x_t so the nest reads f(w_h u + w_i·x_t) whatever the input size.
        dots = {}
        for t in range(1, self.n + 1):
            dot = self._symbol(f"dot_{t}", rf"\mathbf{{w}}_{{i}} \cdot \mathbf{{x}}_{{{t}}}")
            dots[u.projection(t)] = dot
        expressions = [expression.xreplace(dots) for expression in expressions]
        # Zero-padded names sort u_2 before u_10 in printed products.
        names = (self._symbol(f"u_{index:05d}", f"u_{{{index}}}") for index in count(1))
        definitions, reduced = sp.cse(expressions, symbols=names)
        return {
            "shown": True,
            "definitions": [(self.tex(symbol), self._lines(value)) for symbol, value in definitions],
            "results": [
                (self.tex(AbstractPartial(self.loss, w)), self._lines(value))
                for (_, w, _), value in zip(components, reduced)
            ],
            "count": len(definitions),
        }

    def _dot_sums(self) -> dict:
        """Each w_i·x_t written out as Σ_d w_{i,d} x_{t,d} when D ≤ 3, so an operation count reads as
        the written-out nest's (for larger D one Dot stays one operation)."""
        u = self.unrolled
        if self.inputs > len(VOCABULARY):
            return {}
        return {u.projection(t): sum(w * x for w, x in zip(u.w_i, u.x[t - 1])) for t in range(1, self.n + 1)}

    def _lines(self, expr: sp.Expr) -> list[str]:
        """A sum broken into lines of at most NODES_PER_LINE tree nodes; later lines start with ±."""
        if not expr.is_Add:
            return [self.tex(expr)]
        terms = self.printer._as_ordered_terms(expr)
        terms = [t for t in terms if not t.could_extract_minus_sign()] + [
            t for t in terms if t.could_extract_minus_sign()
        ]
        chunks: list[list] = [[]]
        size = 0
        for term in terms:
            nodes = sum(1 for _ in sp.preorder_traversal(term))
            if chunks[-1] and size + nodes > NODES_PER_LINE:
                chunks.append([])
                size = 0
            chunks[-1].append(term)
            size += nodes
        lines = []
        for index, chunk in enumerate(chunks):
            text = self.tex(sp.Add(*chunk, evaluate=False)) if len(chunk) > 1 else self.tex(chunk[0])
            if index > 0:
                text = ("- " + self.tex(-sp.Add(*chunk))) if chunk[0].could_extract_minus_sign() else "+ " + text
            lines.append(text)
        return lines


def _context(derivation, fmt: str, command: str | None) -> dict:
    typesetter = Typesetter(derivation)
    model = derivation.model
    activation = derivation.unrolled.activation
    return {
        "fmt": fmt,
        "marker": MARKER,
        "command": command or canonical_command(derivation, fmt),
        "n": derivation.n,
        "inputs": model.inputs,
        "vocabulary": ", ".join(VOCABULARY) if model.inputs == len(VOCABULARY) else "",
        "activation": model.activation,
        "activation_tex": activation.latex_name,
        "heaviside": derivation.step_derivative.has(sp.Heaviside),
        "model_rows": typesetter.model_rows(),
        "dot_row": typesetter.dot_row(),
        "unrolled_rows": typesetter.unrolled_rows(),
        "loss": typesetter.loss_rhs(),
        "updates": typesetter.update_rows(),
        "gradients": [
            {
                "parameter": parameter,
                "label": PARAMETER_LABELS[parameter],
                "lhs": typesetter.gradient_lhs(parameter),
                "weight": typesetter.tex(typesetter.weight(parameter)),
                "abstract": typesetter.abstract_rows(parameter),
                "substituted": typesetter.substituted_rows(parameter),
            }
            for parameter in ("w_i", "w_h")
        ],
        "w_o": dict(typesetter.w_o_rows(), lhs=typesetter.gradient_lhs("w_o")),
        "omitted": typesetter.omitted(),
        "general": typesetter.general_rows(),
        "local": typesetter.local_rows(),
        "components": typesetter.component_rows(),
        "expanded": typesetter.expanded(),
        "expanded_shown_limit": EXPANDED_SHOWN_LIMIT,
        "all_terms_limit": ALL_TERMS_LIMIT,
    }


def sigma_pi_document(derivation, fmt: str = "tex", command: str | None = None) -> str:
    """The whole derivation as a standalone LaTeX document (``tex``) or a Markdown page (``md``).

    ``command`` names what generated it in the header; by default the canonical
    ``bptt derive --steps N --activation A --format F``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    template = {"tex": "document.tex.j2", "md": "page.md.j2"}[fmt]
    return render("latex", template, **_context(derivation, fmt, command))


def summary(derivation) -> str:
    """A short LaTeX display for Jupyter: the Σ/Π form for any n and the local derivatives."""
    typesetter = Typesetter(derivation)
    general = typesetter.general_rows()
    rows = [(lhs, rhs) for lhs, rhs in general[:1]]
    rows += [(lhs, chain + " = " + value if chain else value) for lhs, chain, value in typesetter.local_rows()[1:]]
    body = " \\\\\n".join(f"{lhs} &= {rhs}" for lhs, rhs in rows)
    caption = rf"\text{{{derivation.model.activation}, }} n = {derivation.n}"
    return f"$$\\begin{{aligned}}\n{body} \\\\\n&{caption}\n\\end{{aligned}}$$"


__all__ = ["FORMATS", "DerivationPrinter", "InOrder", "canonical_command", "sigma_pi_document", "summary"]
