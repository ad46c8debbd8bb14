"""bptt derive --cell C: the generic document (symbolic/typeset.py), for the built-in gated cells and
users' cell files.

The content is checked against an independent oracle: the δ recursion, the gradient sums and the state
Jacobian are **parsed back** from the Markdown page (a small reader of the LaTeX the page holds, written
here) and evaluated with NumPy at H = 2, D = 2, n = 3; the gradients must equal central finite
differences, and each Jacobian block a finite-difference Jacobian, of a forward pass written here from
the cell's equations alone (no engine). A page with Uᵀ written as U, or with a term dropped, fails.
The LaTeX compiles with pdflatex without overfull lines, and the Markdown renders with KaTeX.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symbolic.cells import cell_of
from symbolic.cells.spec import FUNCTIONS
from symbolic.files import MARKER
from symbolic.model import Model
from symbolic.typeset import _prose, command_of, document

from .conftest import run_bptt
from .test_latex import compile_pdf, render_katex

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "cells"
OURS = Path(__file__).resolve().parent / "cells"
CELLS = ["lstm", "gru", str(DOCS / "mgu.py"), str(DOCS / "cho_gru.py"), str(DOCS / "indrnn.py"),
         str(OURS / "peephole_lstm.py"), str(OURS / "residual.py")]
IDS = ["lstm", "gru", "mgu", "cho_gru", "indrnn", "peephole_lstm", "residual"]
H, D, N = 2, 2, 3


# -- an independent forward pass: the cell's equations evaluated with NumPy -------------------------------


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


NUMERIC = [{"sigmoid": _sigmoid, "relu": lambda v: np.maximum(v, 0)}, "numpy"]


@cache
def _compiled(expr):
    symbols = sorted(expr.free_symbols, key=str)
    return symbols, sp.lambdify(symbols, expr, modules=NUMERIC)


def _step(cell, params: dict, x: np.ndarray, previous: dict) -> dict:
    """One step: name → value (columns) for every equation, and a_v for an equation v = f(a_v)."""
    env: dict = {}
    previous_of = {str(symbol): previous[state] for state, symbol in cell.states.items()}

    def value(symbol):
        if str(symbol) in previous_of:
            return previous_of[str(symbol)]
        if str(symbol) in cell.vectors:
            return params[str(symbol)].reshape(-1, 1)
        for application in cell.applications:
            if symbol == application.symbol:
                operand = application.operand
                operand = x if operand == "x" else previous_of.get(operand, env.get(operand))
                return params[application.matrix] @ operand
        return env[str(symbol)]

    def evaluate(expr):
        symbols, function = _compiled(expr)
        return function(*(value(symbol) for symbol in symbols))

    for eq in cell.equations:
        env[eq.name] = evaluate(eq.expr) + np.zeros((H, 1))
        # the argument of an activation, when it is more than a name, is the pre-activation a_v
        for node in sp.preorder_traversal(eq.expr):
            if type(node) in FUNCTIONS and not node.args[0].is_Symbol:
                env[f"a_{eq.name}"] = evaluate(node.args[0]) + np.zeros((H, 1))
    return env


def _forward(cell, params: dict, xs: np.ndarray, y: float) -> tuple[float, dict]:
    """The loss and every value by (name, step); states are 0 at step 0."""
    previous = {state: np.zeros((H, 1)) for state in cell.states}
    values = {(state, 0): previous[state] for state in cell.states}
    for t, x in enumerate(xs, start=1):
        env = _step(cell, params, x.reshape(-1, 1), previous)
        values.update({(name, t): v for name, v in env.items()})
        values[("x", t)] = x.reshape(-1, 1)
        previous = {state: env[state] for state in cell.states}
    logit = float(params[cell.readout] @ previous[cell.output_state][:, 0])
    if cell.readout_bias:
        logit += float(params[cell.readout_bias])
    y_hat = _sigmoid(logit)
    values["y_hat"], values["y"] = y_hat, y
    return -y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat), values


def _point(cell, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = {"H": H, "D": D}
    params = {name: rng.normal(0, 0.6, tuple(sizes[s] for s in shape)) for name, shape in cell.parameters.items()}
    return params, rng.normal(0, 1, (N, D)), 1.0


def _finite_differences(function, array: np.ndarray, step: float = 1e-6) -> np.ndarray:
    result = np.zeros(array.shape + np.shape(function(array)))
    for index in np.ndindex(array.shape):
        up, down = array.copy(), array.copy()
        up[index] += step
        down[index] -= step
        result[index] = (function(up) - function(down)) / (2 * step)
    return result


# -- a reader for the LaTeX the page holds -----------------------------------------------------------


TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\d+|[A-Za-z]|\S")
TIME = re.compile(r"^([tnjk])([+-]\d+)?$|^(\d+)$")


class Reader:
    """Recursive descent over one formula: sums, ⊙ products, juxtaposed (matrix) products, atoms."""

    def __init__(self, text: str, parameters: set):
        self.tokens = TOKEN.findall(text)
        self.i = 0
        self.parameters = parameters

    def peek(self, k: int = 0):
        return self.tokens[self.i + k] if self.i + k < len(self.tokens) else None

    def take(self, expected=None):
        token = self.peek()
        assert expected is None or token == expected, (expected, token, self.tokens[max(0, self.i - 8):self.i + 8])
        self.i += 1
        return token

    def group(self) -> str:
        """The tokens of a {…} group, joined (balanced braces)."""
        self.take("{")
        depth, out = 1, []
        while True:
            token = self.take()
            depth += {"{": 1, "}": -1}.get(token, 0)
            if depth == 0:
                return "".join(out)
            out.append(token)

    def done(self) -> bool:
        return self.peek() is None

    def expr(self):
        terms = []
        sign = 1
        if self.peek() == "-":
            self.take()
            sign = -1
        terms.append(("scale", sign, self.term()))
        while self.peek() in ("+", "-"):
            sign = 1 if self.take() == "+" else -1
            terms.append(("scale", sign, self.term()))
        return ("add", terms)

    def term(self):
        factors = [self.juxtaposed()]
        while self.peek() == r"\odot":
            self.take()
            factors.append(self.juxtaposed())
        return ("odot", factors)

    def juxtaposed(self):
        factors = [self.postfix()]
        while self.peek() not in (None, "+", "-", r"\odot", r"\right", "}", ",", "&"):
            factors.append(self.postfix())
        return ("juxt", factors)

    def postfix(self):
        node = self.atom()
        while self.peek() == "^":
            self.take()
            exponent = self.group()
            if exponent == "T":
                node = ("T", node)
            else:
                node = ("pow", node, int(exponent.replace(r"\circ", "")))
        return node

    def parenthesized(self):
        self.take(r"\left")
        self.take("(")
        inner = self.expr()
        self.take(r"\right")
        self.take(")")
        return inner

    def atom(self):
        token = self.peek()
        if token == r"\left":
            return self.parenthesized()
        if token == r"\sum":
            self.take()
            assert self.take("_") and self.group() == "t=1" and self.take("^") and self.group() == "n"
            return ("sum", self.term())
        if token == r"\underbrace":
            self.take()
            inner = Reader(self.group(), self.parameters)
            self.take("_")
            label = self.group()
            return ("brace", label, inner.whole())
        if token == r"\operatorname":
            self.take()
            name = self.group()
            return ({"diag": "diag", "ReLU": "relu"}[name], self.parenthesized())
        if token in (r"\tanh", r"\sigma") or (token == "H" and self.peek(1) == r"\left"):
            self.take()
            return ({r"\tanh": "tanh", r"\sigma": "sigmoid", "H": "heaviside"}[token], self.parenthesized())
        if token == r"\boldsymbol" and self.peek(2) == r"\delta":
            self.take()
            self.group()
            target = self.parenthesized() if self.peek() == r"\left" else self.postfix_free_atom()
            return ("delta", target)
        if token.isdigit():
            self.take()
            return ("number", int(token))
        if token == "I":
            self.take()
            return ("identity",)
        return self.postfix_free_atom()

    def postfix_free_atom(self):
        """A symbol: \\mathbf{c}_{t-1}, \\mathbf{a}_{i,t}, W_{r}, \\hat{y}, or a function of one (δ tanh(c))."""
        token = self.take()
        if token in (r"\tanh", r"\sigma"):
            return ({r"\tanh": "tanh", r"\sigma": "sigmoid"}[token], self.parenthesized())
        if token in (r"\mathbf", r"\boldsymbol", r"\mathit"):
            letter = self.group().lstrip("\\")
        elif token == r"\hat":
            letter = self.group() + "_hat"
        else:
            letter = token.lstrip("\\")
        if letter == "1":
            return ("ones",)
        if letter == "0":
            return ("zeros",)
        subscript = []
        if self.peek() == "_":
            self.take()
            subscript = self.group().split(",")
        name = "_".join([letter, *subscript])
        if name in self.parameters or letter in ("y", "y_hat"):
            return ("param", name)
        match = TIME.match(subscript[-1])
        assert match, (name, subscript)
        step = (match.group(1), int(match.group(2) or 0)) if match.group(1) else ("", int(match.group(3)))
        return ("value", "_".join([letter, *subscript[:-1]]), step)

    def whole(self):
        node = self.expr()
        assert self.done(), self.tokens[self.i:]
        return node


class Evaluation:
    """Evaluates read formulas at concrete steps against the forward values and the δs defined so far."""

    def __init__(self, params: dict, values: dict, steps: int):
        self.params, self.values, self.steps = params, values, steps
        self.deltas: dict = {}

    def step(self, step, t: int) -> int:
        letter, offset = step
        return {"t": t, "n": self.steps, "": 0}[letter] + offset

    def key(self, node, t: int):
        """A δ's target with its steps made concrete: δ(U_n h_{t−1}) at t = 2 and δ(U_n h_{t}) at
        t + 1 = 2 are the same δ."""
        kind = node[0]
        if kind == "value":
            return ("value", node[1], self.step(node[2], t))
        if kind in ("add", "odot", "juxt"):
            return (kind, tuple(self.key(part, t) for part in node[1]))
        if kind == "scale":
            return ("scale", node[1], self.key(node[2], t))
        return (kind,) + tuple(self.key(part, t) if isinstance(part, tuple) else part for part in node[1:])

    def latest_step(self, key) -> int:
        if isinstance(key, tuple) and key and key[0] == "value":
            return key[2]
        steps = [self.latest_step(part) for part in key if isinstance(part, tuple)] if isinstance(key, tuple) else []
        return max(steps, default=0)

    def __call__(self, node, t: int):
        kind = node[0]
        if kind == "add":
            return sum(sign * self(term, t) for _, sign, term in node[1])
        if kind == "odot":
            result = self(node[1][0], t)
            for factor in node[1][1:]:
                result = result * self(factor, t)
            return result
        if kind == "juxt":
            result = self(node[1][0], t)
            for factor in node[1][1:]:
                value = self(factor, t)
                result = result * value if np.ndim(result) == 0 or np.ndim(value) == 0 else result @ value
            return result
        if kind == "T":
            return np.transpose(self(node[1], t))
        if kind == "pow":
            return self(node[1], t) ** node[2]
        if kind == "sum":
            return sum(self(node[1], step) for step in range(1, self.steps + 1))
        if kind == "brace":
            return self(node[2], t)
        if kind == "diag":
            return np.diagflat(self(node[1], t))
        if kind == "identity":
            return np.eye(H)
        if kind == "tanh":
            return np.tanh(self(node[1], t))
        if kind == "sigmoid":
            return _sigmoid(self(node[1], t))
        if kind == "relu":
            return np.maximum(self(node[1], t), 0)
        if kind == "heaviside":
            return (self(node[1], t) > 0).astype(float)
        if kind == "number":
            return float(node[1])
        if kind == "ones":
            return np.ones((H, 1))
        if kind == "zeros":
            return np.zeros((H, 1))
        if kind == "param":
            if node[1] in ("y", "y_hat"):
                return self.values[node[1]]
            value = self.params[node[1]]
            return value.reshape(-1, 1) if value.ndim == 1 else value
        if kind == "value":
            step = self.step(node[2], t)
            if step > self.steps:  # a value of step n + 1 stands only beside a δ of step n + 1, which is 0
                return np.zeros((H, 1))
            return self.values[(node[1], step)]
        if kind == "delta":
            key = self.key(node[1], t)
            if key in self.deltas:
                return self.deltas[key]
            assert self.latest_step(key) > self.steps, f"δ{key} is used before the page defines it"
            return np.zeros((H, 1))  # every δ of step n + 1 is 0
        raise AssertionError(node)


# -- reading the page ----------------------------------------------------------------------------------


def _section(page: str, number: int) -> str:
    start = page.index(f"## {number}.")
    end = page.find(f"## {number + 1}.", start)
    return page[start:end if end > 0 else len(page)]


def _rows(section: str) -> list[tuple[str, str, str]]:
    """(lhs, rhs, note) of the first aligned display of a section; continuation lines joined."""
    block = section.split("$$")[1]
    block = block.replace(r"\begin{aligned}", "").replace(r"\end{aligned}", "")
    rows: list = []
    for line in block.split("\\\\\n"):
        line = line.strip().removesuffix("\\\\").strip()
        if not line:
            continue
        lhs, rhs = line.split("&", 1)
        rhs = rhs.removeprefix("=").removeprefix(r"\quad").strip()
        note = ""
        if r", \qquad" in rhs:
            rhs, note = rhs.split(r", \qquad")
        if lhs.strip():
            rows.append([lhs.strip(), rhs.strip(), note.strip()])
        else:
            rows[-1][1] += " " + rhs.strip()
            rows[-1][2] = note.strip() or rows[-1][2]
    return [tuple(row) for row in rows]


def _delta_values(page: str, cell, params: dict, values: dict) -> Evaluation:
    """The page's backward recursion run for t = n, …, 1 (rows at n replace the rows with t < n)."""
    names = set(cell.parameters) | {"y", "y_hat"}
    evaluation = Evaluation(params, values, N)
    rows = []
    for lhs, rhs, note in _rows(_section(page, 3)):
        target = Reader(lhs, names).whole()
        (_, [(_, _, (_, [(_, [delta])]))]) = target
        assert delta[0] == "delta", lhs
        rows.append((delta[1], Reader(rhs, names).whole(), note))
    at_n = {repr(target) .replace("'n', 0", "'t', 0") for target, _, _ in rows if "'n', 0" in repr(target)}
    for t in range(N, 0, -1):
        for target, rhs, note in rows:
            at_n_row = "'n', 0" in repr(target)
            if at_n_row and t != N:
                continue
            if note == "t < n" and t == N:
                continue
            if not at_n_row and t == N and repr(target) in at_n:
                continue
            evaluation.deltas[evaluation.key(target, t)] = evaluation(rhs, t)
    return evaluation


def _page_gradients(page: str, cell, params: dict, values: dict) -> dict:
    evaluation = _delta_values(page, cell, params, values)
    names = set(cell.parameters) | {"y", "y_hat"}
    gradients = {}
    for lhs, rhs, _ in _rows(_section(page, 4)):
        name = re.search(r"\\partial L\}\{\\partial (.*)\}$", lhs).group(1)
        (_, [(_, _, (_, [(_, [parameter])]))]) = Reader(name, names).whole()
        gradients[parameter[1]] = evaluation(Reader(rhs, names).whole(), N)
    return gradients


def _oracle_gradients(cell, params: dict, xs: np.ndarray, y: float) -> dict:
    gradients = {}
    for name, value in params.items():
        def loss(changed, name=name):
            return _forward(cell, dict(params, **{name: changed}), xs, y)[0]
        gradients[name] = _finite_differences(loss, np.asarray(value, dtype=float))
    return gradients


def _assert_gradients_match(page: str, cell) -> None:
    params, xs, y = _point(cell)
    _, values = _forward(cell, params, xs, y)
    read = _page_gradients(page, cell, params, values)
    expected = _oracle_gradients(cell, params, xs, y)
    assert set(read) == set(expected)
    for name in expected:
        assert np.allclose(np.reshape(read[name], expected[name].shape), expected[name], rtol=1e-6, atol=1e-8), name


@pytest.fixture(scope="module", params=CELLS, ids=IDS)
def case(request):
    cell_name = request.param
    model = Model(steps=N, hidden=H, inputs=D, cell=cell_name)
    return cell_of(model), document(model, "md"), document(model, "tex")


def test_recursion_read_from_the_page_gives_the_gradients(case):
    """The δ rows and gradient sums, parsed back and run, equal finite differences of the loss."""
    cell, page, _ = case
    _assert_gradients_match(page, cell)


def _tampered(page: str) -> list[tuple[str, str]]:
    """Wrong pages: Uᵀ written as U; a row's continued term dropped; a value of step t + 1 read at t."""
    recursion = _section(page, 3).split("$$")[1]  # the display of the δ rows
    wrong = []
    if "^{T}" in recursion:
        wrong.append(("untransposed", recursion.replace("^{T}", "", 1)))
    continued = [line for line in recursion.splitlines() if line.startswith(r"&\quad + ")]
    if continued:
        lines = recursion.splitlines()
        index = lines.index(continued[0])
        note = r", \qquad t < n" if r", \qquad t < n" in lines[index] else ""
        lines[index - 1] = lines[index - 1].removesuffix(" \\\\") + note + (" \\\\" if lines[index].endswith("\\\\") else "")
        del lines[index]
        wrong.append(("term dropped", "\n".join(lines)))
    wrong.append(("wrong step", recursion.replace("t+1}", "t}", 1)))
    return [(label, page.replace(recursion, text)) for label, text in wrong]


def test_a_tampered_page_is_caught(case):
    """Negative controls for the reader and its oracle: each wrong page disagrees with the gradients."""
    cell, page, _ = case
    for label, wrong in _tampered(page):
        assert wrong != page, label
        with pytest.raises(AssertionError):
            _assert_gradients_match(wrong, cell)


def _single(term):
    """The one atom of a term that is a single factor, else None."""
    _, _, (_, factors) = term
    if len(factors) == 1 and len(factors[0][1]) == 1:
        return factors[0][1][0]
    return None


def _jacobian_rows(page: str, cell, params, values, part=None):
    """(new state, previous state) → the Jacobian block read from the page at t = 2; with ``part``, only
    the term under the brace whose label holds it (None where there is none)."""
    names = set(cell.parameters) | {"y", "y_hat"}
    evaluation = Evaluation(params, values, N)
    blocks = {}
    for lhs, rhs, _ in _rows(_section(page, 5)):
        pattern = r"\\frac\{\\partial \\mathbf\{(\w+)\}_\{t\}\}\{\\partial \\mathbf\{(\w+)\}_\{t-1\}\}"
        new, old = re.match(pattern, lhs).groups()
        node = Reader(rhs, names).whole()
        if part is not None:
            atoms = [_single(term) for term in node[1]]
            braced = [atom[2] for atom in atoms if atom and atom[0] == "brace" and part.replace(" ", "") in atom[1]]
            node = braced[0] if braced else None
        value = None if node is None else evaluation(node, 2)
        blocks[(new, old)] = value * np.ones((H, H)) if value is not None and np.ndim(value) == 0 else value
    return blocks


def _oracle_jacobian(cell, params, xs, y):
    _, values = _forward(cell, params, xs, y)
    previous = {state: values[(state, 1)] for state in cell.states}
    blocks = {}
    for new in cell.states:
        for old in cell.states:
            def one_step(changed, old=old, new=new):
                return _step(cell, params, xs[1].reshape(-1, 1), dict(previous, **{old: changed}))[new][:, 0]
            blocks[(new, old)] = _finite_differences(one_step, previous[old]).reshape(H, H).T
    return blocks, values


def test_state_jacobian_read_from_the_page(case):
    """Each block ∂s′_t/∂s_(t−1), read and evaluated at t = 2, equals finite differences of one step."""
    cell, page, _ = case
    params, xs, y = _point(cell, seed=1)
    expected, values = _oracle_jacobian(cell, params, xs, y)
    read = _jacobian_rows(page, cell, params, values)
    assert set(read) == set(expected)
    for pair, block in expected.items():
        assert np.allclose(read[pair], block, rtol=1e-6, atol=1e-8), pair


def test_direct_path_is_the_part_without_weight_matrices(case):
    """The braced direct path of each block is the whole Jacobian once every H × H matrix is 0 (no
    path through a weight matrix left); a block without a brace is then 0."""
    cell, page, _ = case
    params, xs, y = _point(cell, seed=2)
    params = {name: (np.zeros_like(value) if name in cell.matrices and cell.matrices[name] == ("H", "H") else value)
              for name, value in params.items()}
    expected, values = _oracle_jacobian(cell, params, xs, y)
    read = _jacobian_rows(page, cell, params, values, part="direct path")
    for pair, block in expected.items():
        direct = read[pair] if read[pair] is not None else np.zeros((H, H))
        assert np.allclose(direct, block, rtol=1e-6, atol=1e-8), pair


# -- what the LSTM's and the GRU's pages promise (README, "The LSTM") --------------------------------------


def test_lstm_page_shows_the_carousel_on_its_own():
    page = document(Model(steps=3, hidden=2, cell="lstm"), "md")
    delta_c = next(line for line in _section(page, 3).splitlines() if "direct path, from step" in line)
    assert r"\boldsymbol{\delta}\mathbf{c}_{t+1} \odot \mathbf{f}_{t+1}" in delta_c
    jacobian = {lhs: rhs for lhs, rhs, _ in _rows(_section(page, 5))}
    carousel = jacobian[r"\frac{\partial \mathbf{c}_{t}}{\partial \mathbf{c}_{t-1}}"]
    assert carousel == r"\underbrace{\operatorname{diag}\left(\mathbf{f}_{t}\right)}_{\text{direct path}}"
    assert r"\operatorname{diag}\left(\mathbf{f}_{j+1} \odot \cdots \odot \mathbf{f}_{n}\right)" in page
    assert "Hochreiter and Schmidhuber (1997)" in page and r"\mathbb{R}^{2 \times 3}" in page
    delta_h = next(rhs for lhs, rhs, note in _rows(_section(page, 3)) if note == "t < n")
    assert delta_h.count("^{T}") == 4 and "direct" not in delta_h  # the hidden state has no direct path


def test_gru_page_shows_its_direct_path_diag_z():
    page = document(Model(steps=3, hidden=2, cell="gru"), "md")
    jacobian = _rows(_section(page, 5))
    assert jacobian[0][1].startswith(r"\underbrace{\operatorname{diag}\left(\mathbf{z}_{t}\right)}_{\text{direct path}}")
    assert r"\operatorname{diag}\left(\mathbf{z}_{j+1} \odot \cdots \odot \mathbf{z}_{n}\right)" in page


# -- LaTeX and KaTeX ------------------------------------------------------------------------------------


def test_tex_compiles_without_overfull_lines_and_reads(case, tmp_path):
    cell, _, tex = case
    run, log, text = compile_pdf(tex, tmp_path)
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    words = " ".join(text.replace("_", " ").split())  # pdftotext reads \texttt's \_ as a space
    for expected in (f"Backpropagation through time for the cell {cell.name.replace('_', ' ')}", "The backward recursion",
                     "The state-to-state Jacobian", "direct path", f"H = {H}", f"n = {N}"):
        assert expected in words, expected


def test_markdown_renders_with_katex(case):
    _, page, _ = case
    result = render_katex(page)
    assert result.returncode == 0, result.stderr
    assert "\\documentclass" not in page and "align*" not in page


def test_markdown_prose_has_no_latex_commands(case):
    cell, page, _ = case
    prose = "\n".join(block for index, block in enumerate(page.split("$$")) if index % 2 == 0)
    assert "\\texttt" not in prose and f"`{cell.name}`" in prose


def test_descriptions_become_latex_prose():
    assert _prose("u ⊙ h_(t−1), 50% σ", "tex") == r"u $\odot$ h\_(t-1), 50\% $\sigma$"
    assert _prose("costs $5", "md") == r"costs \$5"


# -- the command line ------------------------------------------------------------------------------------


def test_header_names_the_canonical_command(monkeypatch, tmp_path):
    assert command_of(Model(steps=5, hidden=4, cell="gru"), "md") == "bptt derive --cell gru --steps 5 --hidden 4 --format md"
    monkeypatch.chdir(ROOT)  # a cell file is named as --cell takes it again from here
    model = Model(steps=2, inputs=2, cell=str(DOCS / "mgu.py"))
    assert command_of(model, "tex") == "bptt derive --cell docs/cells/mgu.py --steps 2 --hidden 1 --inputs 2 --format tex"
    monkeypatch.chdir(tmp_path)  # outside the checkout: the absolute path
    assert command_of(model, "tex").startswith(f"bptt derive --cell {DOCS / 'mgu.py'} --steps 2")
    assert document(Model(cell="lstm"), "tex").startswith(f"% {MARKER}. Command: bptt derive --cell lstm --steps 3 --hidden 1")


@pytest.mark.parametrize(("cell", "fmt"), [("gru", "md"), (str(DOCS / "mgu.py"), "tex")], ids=["gru", "mgu"])
def test_derive_writes_the_document(tmp_path, cell, fmt):
    target = tmp_path / f"doc.{fmt}"
    result = run_bptt("derive", "--cell", cell, "--steps", "2", "--hidden", "2", "--format", fmt, "-o", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    assert text == document(Model(steps=2, hidden=2, cell=cell), fmt)
    assert "The state-to-state Jacobian" in text


@pytest.mark.parametrize("cell", ["gru", str(DOCS / "cho_gru.py")], ids=["gru", "cho_gru"])
def test_documents_do_not_depend_on_hash_seeds(cell):
    args = ("derive", "--cell", cell, "--hidden", "2", "--format", "tex")
    outputs = [run_bptt(*args, env={"PYTHONHASHSEED": seed}) for seed in ("1", "2024")]
    assert all(result.returncode == 0 for result in outputs)
    assert outputs[0].stdout == outputs[1].stdout and outputs[0].stdout
