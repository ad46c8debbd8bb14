"""bptt derive: the generic document (symbolic/typeset/cells.py) of every model but the notes' scalar one: the
plain RNN with H > 1 or biases (the matrix RNN, each activation), the built-in gated cells and users'
cell files.

The content is checked against an independent oracle: the δ recursion, the gradient sums and the state
Jacobian are **parsed back** from the Markdown page (a small reader of the LaTeX the page holds, written
here) and evaluated with NumPy at H = 2, D = 2, n = 3; the gradients must equal central finite
differences, and each Jacobian block a finite-difference Jacobian, of a forward pass written here from
the cell's equations alone (no engine). A page with Uᵀ written as U, or with a term dropped, fails. The
product of the Jacobians over a gap, where the page writes it out, is read back and checked against
finite differences of several steps. The LaTeX compiles with pdflatex without overfull lines, and the
Markdown renders with KaTeX.
"""

from __future__ import annotations

import re
import shlex
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symbolic.cells import cell_of
from symbolic.cells.spec import FUNCTIONS
from symbolic.cli.common import derivation_for
from symbolic.files import MARKER
from symbolic.model import Model
from symbolic.typeset.cells import _prose, command_of
from symbolic.typeset.cells import document as typeset_document

from .conftest import run_bptt
from .test_latex import compile_pdf, render_katex


def document(model, fmt="tex"):
    """The generic document of ``model`` from its one derivation, as bptt derive makes it."""
    return typeset_document(model, derivation_for(model), fmt)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "cells"
OURS = Path(__file__).resolve().parent / "cells"
#: id → (cell, the model's other options): the matrix RNN (H = H > 1) with each activation, with and
#: without biases, the gated cells, users' cell files.
CASES = {
    "rnn_bias": ("rnn", {"bias": True}),
    "rnn_relu": ("rnn", {"activation": "relu"}),
    "rnn_sigmoid_bias": ("rnn", {"activation": "sigmoid", "bias": True}),
    "rnn_identity": ("rnn", {"activation": "identity"}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),
    "mgu": (str(DOCS / "mgu.py"), {}),
    "cho_gru": (str(DOCS / "cho_gru.py"), {}),
    "indrnn": (str(DOCS / "indrnn.py"), {}),
    "peephole_lstm": (str(OURS / "peephole_lstm.py"), {}),
    "residual": (str(OURS / "residual.py"), {}),
}
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
            if isinstance(node, tuple(FUNCTIONS)) and not node.args[0].is_Symbol:
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


#: The points the page's gradients are checked at (at seed 0 every ReLU unit of the matrix RNN is off at
#: every step, so that point alone would not see the recursion; at seed 2 they are all on).
POINT_SEEDS = (0, 2)


def _assert_gradients_match(page: str, cell) -> None:
    for seed in POINT_SEEDS:
        params, xs, y = _point(cell, seed)
        _, values = _forward(cell, params, xs, y)
        read = _page_gradients(page, cell, params, values)
        expected = _oracle_gradients(cell, params, xs, y)
        assert set(read) == set(expected)
        for name in expected:
            assert np.allclose(np.reshape(read[name], expected[name].shape), expected[name], rtol=1e-6,
                               atol=1e-8), (name, seed)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    cell_name, options = CASES[request.param]
    model = Model(steps=N, hidden=H, inputs=D, cell=cell_name, **options)
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


def _gap_display(page: str) -> list[str]:
    """The rows of section 5's second display: the product of the Jacobians over a gap, its norm."""
    block = _section(page, 5).split("$$")[3]
    block = block.replace(r"\begin{aligned}", "").replace(r"\end{aligned}", "")
    return [line.strip().removesuffix("\\\\").strip() for line in block.strip().splitlines()]


def _explicit_gap_factor(page: str) -> str | None:
    """The factor of the written-out product Π_{k=j+1}^{n} (…)_k, read at step t, or None."""
    first = _gap_display(page)[0]
    parts = first.split(" = ")
    if len(parts) < 2:
        return None
    factor = parts[-1].removeprefix(r"\prod_{k=j+1}^{n} ")
    assert factor != parts[-1], first
    return re.sub(r"(?<=[{,])k(?=[}+-])", "t", factor)


def _gap_oracle(cell, params, xs, values, j: int) -> np.ndarray:
    """∂s_n/∂s_j of a one-state cell by finite differences of the steps j + 1, …, n (written here)."""
    (state,) = cell.states

    def later(changed):
        previous = {state: changed}
        for t in range(j + 1, N + 1):
            previous = {state: _step(cell, params, xs[t - 1].reshape(-1, 1), previous)[state]}
        return previous[state][:, 0]

    return _finite_differences(later, values[(state, j)]).reshape(H, H).T


def _gap_read(factor: str, cell, params, values, j: int, latest_first: bool = True) -> np.ndarray:
    evaluation = Evaluation(params, values, N)
    node = Reader(factor, set(cell.parameters) | {"y", "y_hat"}).whole()
    product = np.eye(H)
    for k in range(j + 1, N + 1):
        value = evaluation(node, k)
        value = value * np.eye(H) if np.ndim(value) == 0 else value
        product = value @ product if latest_first else product @ value
    return product


def test_product_over_a_gap_read_from_the_page(case):
    """Where the page writes ∂s_n/∂s_j = Π_{k=j+1}^{n} (one state, one term: the matrix RNN's
    diag(f′(a_k)) W_h), the product read back, the latest step leftmost, equals finite differences of
    steps j + 1, …, n; multiplied the other way round it does not. Every page states the product and
    the bound of its norm by the factors' norms."""
    cell, page, _ = case
    rows = _gap_display(page)
    assert rows[0].count(r"\prod_{k=j+1}^{n}") in (1, 2) and r"\right\| &\le \prod_{k=j+1}^{n} \left\|" in rows[1]
    factor = _explicit_gap_factor(page)
    if cell.name == "rnn":
        assert factor is not None, rows[0]
    if factor is None:
        return
    for seed in range(3, 40):  # a point where the product over n steps is not 0 (ReLU units may all be off)
        params, xs, y = _point(cell, seed=seed)
        _, values = _forward(cell, params, xs, y)
        if np.abs(_gap_oracle(cell, params, xs, values, 0)).max() > 1e-3:
            break
    for j in (0, 1):
        expected = _gap_oracle(cell, params, xs, values, j)
        assert np.abs(expected).max() > 1e-3, j
        assert np.allclose(_gap_read(factor, cell, params, values, j), expected, rtol=1e-6, atol=1e-8), j
    square = {name for name, shape in cell.matrices.items() if shape == ("H", "H")}
    read = repr(Reader(factor, set(cell.parameters)).whole())
    if re.search(r"[{,]t\}", factor) and any(f"('param', '{name}')" in read for name in square):
        # diag(v_k) M: factors that differ from step to step and hold a weight matrix do not commute
        caught = []
        for seed in range(3, 8):
            params, xs, y = _point(cell, seed=seed)
            _, values = _forward(cell, params, xs, y)
            reversed_order = _gap_read(factor, cell, params, values, 0, latest_first=False)
            caught.append(not np.allclose(reversed_order, _gap_oracle(cell, params, xs, values, 0), atol=1e-8))
        assert any(caught)


# -- what the matrix RNN's page promises (docs/hidden-size.md) -----------------------------

#: Written by hand: f applied to the pre-activation; f′ written with the stored output o_t, per unit, as a
#: factor of a ⊙ product and as the argument of diag (None: the identity has no activation node, δo_t is
#: what arrives).
RNN_ACTIVATIONS = {
    "tanh": (r"\tanh", r"1 - o_{t}^{2}", r"\left(\mathbf{1} - \mathbf{o}_{t}^{\circ 2}\right)",
             r"\mathbf{1} - \mathbf{o}_{t}^{\circ 2}"),
    "sigmoid": (r"\sigma", r"o_{t} \left(1 - o_{t}\right)", r"\mathbf{o}_{t} \odot \left(\mathbf{1} - \mathbf{o}_{t}\right)",
                r"\mathbf{o}_{t} \odot \left(\mathbf{1} - \mathbf{o}_{t}\right)"),
    "relu": (r"\operatorname{ReLU}", r"H\left(o_{t}\right)", r"H\left(\mathbf{o}_{t}\right)", r"H\left(\mathbf{o}_{t}\right)"),
    "identity": (None, None, None, None),
}


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("activation", list(RNN_ACTIVATIONS))
def test_matrix_rnn_page_states_the_model_the_recursion_and_the_gradients(activation, bias):
    page = document(Model(steps=3, hidden=2, inputs=2, activation=activation, bias=bias), "md")
    f, unit, vector, diagonal = RNN_ACTIVATIONS[activation]
    a = r"w_{i} \mathbf{x}_{t} + w_{h} \mathbf{o}_{t-1}" + (r" + \mathbf{b}_{h}" if bias else "")
    model = {lhs: rhs for lhs, rhs, _ in _rows(_section(page, 1))}
    assert model[r"\mathbf{o}_{t}"] == (rf"{f}\left({a}\right)" if f else a)
    assert model[r"\hat{y}"] == r"\sigma\left(\mathbf{w}_{o}^{T} \mathbf{o}_{n}" + (" + b_{o}" if bias else "") + r"\right)"
    local = {lhs: rhs for lhs, rhs, _ in _rows(_section(page, 2).split("SymPy differentiates")[1])}
    delta = {lhs: rhs for lhs, rhs, _ in _rows(_section(page, 3))}
    gate = r"\boldsymbol{\delta}\mathbf{a}_{o,t}" if f else r"\boldsymbol{\delta}\mathbf{o}_{t}"
    assert delta[r"\boldsymbol{\delta}\mathbf{o}_{n}"] == r"\left(\hat{y} - y\right) \mathbf{w}_{o}"
    later = gate.replace(",t}", ",t+1}").replace("{t}", "{t+1}")
    assert delta[r"\boldsymbol{\delta}\mathbf{o}_{t}"] == rf"w_{{h}}^{{T}} {later}"
    if f:
        assert local[r"\frac{\partial o_{t}}{\partial a_{o,t}}"] == unit
        assert delta[gate] == rf"\boldsymbol{{\delta}}\mathbf{{o}}_{{t}} \odot {vector}"
    else:
        assert r"a_{o,t}" not in page
    gradients = {lhs: rhs for lhs, rhs, _ in _rows(_section(page, 4))}
    expected = {
        r"\frac{\partial L}{\partial w_{i}}": rf"\sum_{{t=1}}^{{n}} {gate} \mathbf{{x}}_{{t}}^{{T}}",
        r"\frac{\partial L}{\partial w_{h}}": rf"\sum_{{t=1}}^{{n}} {gate} \mathbf{{o}}_{{t-1}}^{{T}}",
        r"\frac{\partial L}{\partial \mathbf{w}_{o}}": r"\left(\hat{y} - y\right) \mathbf{o}_{n}",
    }
    if bias:
        expected[r"\frac{\partial L}{\partial \mathbf{b}_{h}}"] = rf"\sum_{{t=1}}^{{n}} {gate}"
        expected[r"\frac{\partial L}{\partial b_{o}}"] = r"\hat{y} - y"
    assert gradients == expected
    (jacobian,) = _rows(_section(page, 5))
    factor = rf"\operatorname{{diag}}\left({diagonal}\right) w_{{h}}" if f else "w_{h}"
    assert jacobian[1] == factor
    assert _explicit_gap_factor(page) == factor
    options = ("" if activation == "tanh" else f" --activation {activation}") + " --hidden 2" + (" --bias" if bias else "")
    assert f"\n```\nbptt derive --cell rnn --steps 3{options} --inputs 2 --verify\n```" in page
    if not bias:
        assert "b_{h}" not in page and "b_{o}" not in page


def test_matrix_rnn_page_names_no_other_cell_in_its_last_section():
    """The plain RNN's page compares itself with nothing: no direct path, every path through w_h."""
    page = document(Model(steps=3, hidden=2, bias=True), "md")
    assert "No state reaches its next value without a weight matrix" in page
    assert "plain RNN" not in page and "carousel" not in page and "W_{h}" not in page


def test_large_matrix_rnn_pages_are_quick_and_compile(tmp_path):
    """Nothing is unrolled or sized by H: H = 128, n = 1000 prints the same formulas in about a second."""
    started = time.perf_counter()
    result = run_bptt("derive", "--hidden", "128", "--steps", "1000", "--format", "md")
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - started < 30
    assert "$n = 1000$ steps, $H = 128$, $D = 3$" in result.stdout
    assert r"\boldsymbol{\delta}\mathbf{o}_{t} &= w_{h}^{T} \boldsymbol{\delta}\mathbf{a}_{o,t+1}" in result.stdout
    assert r"w_{i} \in \mathbb{R}^{128 \times 3}" in result.stdout
    run, log, text = compile_pdf(document(Model(steps=1000, hidden=128, bias=True), "tex"), tmp_path)
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log
    assert "H = 128" in text and "n = 1000" in text


# -- what the LSTM's and the GRU's pages promise (docs/cells.md, "The LSTM") --------------------------------------


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
    model = Model(steps=5, activation="relu", hidden=4, bias=True)
    assert command_of(model, "md") == "bptt derive --cell rnn --steps 5 --activation relu --hidden 4 --bias --format md"
    assert command_of(model, None) == "bptt derive --cell rnn --steps 5 --activation relu --hidden 4 --bias --verify"
    result = run_bptt("derive", "-f", "md", "--bias", "--hidden", "4", "--activation", "relu", "--steps", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"<!-- {MARKER}. Command: {command_of(model, 'md')} -->")


@pytest.mark.parametrize("arguments", [["--hidden", "3", "--inputs", "2", "-a", "sigmoid", "--bias", "-f", "md"],
                                       ["--bias", "--steps", "4"], ["--cell", "gru", "--hidden", "2"]],
                         ids=["rnn_sigmoid_bias", "rnn_bias_h1", "gru"])
def test_the_header_command_regenerates_the_document(arguments):
    """"Do not edit: regenerate with the command above": the header's command gives the same bytes."""
    first = run_bptt("derive", *arguments)
    assert first.returncode == 0, first.stderr
    command = re.match(r"(?:% |<!-- )\S+ by bptt\. Command: (.*?)(?: -->)?\n", first.stdout).group(1)
    again = run_bptt(*shlex.split(command)[1:])
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


@pytest.mark.parametrize(("cell", "fmt"), [("gru", "md"), (str(DOCS / "mgu.py"), "tex")], ids=["gru", "mgu"])
def test_derive_writes_the_document(tmp_path, cell, fmt):
    target = tmp_path / f"doc.{fmt}"
    result = run_bptt("derive", "--cell", cell, "--steps", "2", "--hidden", "2", "--format", fmt, "-o", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    assert text == document(Model(steps=2, hidden=2, cell=cell), fmt)
    assert "The state-to-state Jacobian" in text


def test_a_cell_file_path_with_latex_specials_compiles(tmp_path, monkeypatch):
    """A cell file under a folder named with a space, %, &, # and $ (all valid in a path): the document
    names it in its commands, quoted for the shell and escaped for LaTeX, and compiles; pdftotext reads
    the command back (typewriter underscores come out as spaces)."""
    folder = tmp_path / "cells 50%&#$_x"
    folder.mkdir()
    (folder / "my_mgu.py").write_text((DOCS / "mgu.py").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    tex = document(Model(steps=2, hidden=2, cell=str(folder / "my_mgu.py")), "tex")
    quote = r"\textquotesingle{}"
    assert rf"-{{}}-cell {quote}cells 50\%\&\#\$\_x/my\_mgu.py{quote} -{{}}-steps 2" in tex
    assert tex.startswith(f"% {MARKER}. Command: bptt derive --cell 'cells 50%&#$_x/my_mgu.py' --steps 2")
    run, log, text = compile_pdf(tex, tmp_path)
    assert run.returncode == 0, log[-2000:]
    assert "--cell 'cells 50%&#$ x/my mgu.py' --steps 2" in text.replace("\n", " ")


@pytest.mark.parametrize("options", [["--cell", "gru"], ["--cell", str(DOCS / "cho_gru.py")],
                                     ["--inputs", "2", "--steps", "3", "--bias", "--format", "md"]],
                         ids=["gru", "cho_gru", "rnn_bias"])
def test_documents_do_not_depend_on_hash_seeds(options):
    args = ("derive", *options, "--hidden", "2")
    outputs = [run_bptt(*args, env={"PYTHONHASHSEED": seed}) for seed in ("1", "2024")]
    assert all(result.returncode == 0 for result in outputs)
    assert outputs[0].stdout == outputs[1].stdout and outputs[0].stdout
