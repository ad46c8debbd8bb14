"""Hostile cells (issue 21): every cell the spec accepts gets NumPy and Numba modules whose gradients
are exact; what it cannot serve is refused at load with one line.

The oracle is independent of the engine and the templates: PyTorch's autograd of the cell's own
equations (each evaluated with ``sympy.lambdify`` to torch, the maps as products of torch tensors),
step by step, with the readout and the binary cross-entropy written here. A row per class of the
issue, a sweep of reserved names over every role, and a property test over random small cells
(shared maps, activations on single maps, coefficients, constants, nesting, odd names).
"""

from __future__ import annotations

import itertools
import math
import random
import types

import numpy as np
import pytest
import sympy as sp

from symbolic.cells import load_cell
from symbolic.cells.spec import RESERVED, Cell
from symbolic.codegen import generate, load
from symbolic.errors import UsageError
from symbolic.model import Model

from .conftest import ROOT, identifiers, run_bptt

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HEAD = "import sympy as sp\nfrom symbolic.cells.spec import Cell, identity, relu, sigmoid, tanh\n"
D = 2


# -- the oracle: torch autograd of the cell's equations --------------------------------------------------------


def _torch_function(symbols: list, expr: sp.Expr):
    def tensor(f):   # f of a constant too (sigmoid(1/3))
        return lambda v: f(torch.as_tensor(v, dtype=torch.float64))

    functions = {"tanh": tensor(torch.tanh), "sigmoid": tensor(torch.sigmoid), "relu": tensor(torch.relu)}
    # plain argument names: lambdify puts the symbols' own names (a state "tanh") in its namespace
    plain = [sp.Symbol(f"arg{k}") for k in range(len(symbols))]
    return sp.lambdify(plain, expr.xreplace(dict(zip(symbols, plain))), modules=[functions, "math"])


def torch_loss_and_grad(cell: Cell, x: np.ndarray, y: np.ndarray, params: dict) -> tuple[float, dict]:
    """The mean binary cross-entropy of ŷ = σ(w_yᵀ s_n (+ b)) and its gradient by torch autograd."""
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    xs = torch.tensor(x, dtype=torch.float64)
    batch, steps, _ = x.shape
    hidden = p[cell.readout].shape[0]
    state = {name: torch.zeros(batch, hidden, dtype=torch.float64) for name in cell.states}
    equations = [(eq, sorted(eq.expr.free_symbols, key=str)) for eq in cell.equations]
    functions = [_torch_function(symbols, eq.expr) for eq, symbols in equations]
    for t in range(steps):
        env = {symbol: state[name] for name, symbol in cell.states.items()}
        env |= {sp.Symbol(name): p[name] for name in cell.vectors}

        new = {}
        for (eq, symbols), function in zip(equations, functions):
            for a in cell.applications:   # the maps whose operand is known by now
                if a.symbol not in env and (a.operand == "x" or sp.Symbol(a.operand) in env):
                    operand = xs[:, t] if a.operand == "x" else env[sp.Symbol(a.operand)]
                    env[a.symbol] = operand @ p[a.matrix].T
            value = function(*(env[s] for s in symbols)) + torch.zeros(batch, hidden, dtype=torch.float64)
            env[eq.symbol] = value
            if eq.state:
                new[eq.state] = value
        state = new
    logit = state[cell.output_state] @ p[cell.readout]
    if cell.readout_bias:
        logit = logit + p[cell.readout_bias]
    labels = torch.tensor(y, dtype=torch.float64)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, labels)
    loss.backward()
    # a parameter the output never reads (a state that feeds only itself) has no grad: zero
    return loss.item(), {k: np.zeros(v.shape) if v.grad is None else v.grad.numpy() for k, v in p.items()}


# -- modules --------------------------------------------------------------------------------------------------


def numpy_module(path, hidden: int, steps: int, mode: str) -> types.ModuleType:
    """The generated NumPy module, executed from its source (no cache between examples)."""
    source = generate(Model(cell=str(path), hidden=hidden, steps=steps, inputs=D), mode)
    module = types.ModuleType("hostile_cell")
    exec(compile(source, str(path) + ".generated", "exec"), module.__dict__)  # noqa: S102 - a module we generated
    return module


def data(module, batch: int, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.8, 0.8, size=shape) for k, shape in module.PARAMS.items()}
    x = rng.normal(size=(batch, steps, module.INPUT_SIZE))
    y = rng.integers(0, 2, size=batch).astype(float)
    return x, y, params


def assert_matches_torch(module, cell: Cell, steps: int, batch: int = 3, seed: int = 0):
    x, y, params = data(module, batch, steps, seed)
    loss, grads = module.loss_and_grad(x, y, params)
    want_loss, want = torch_loss_and_grad(cell, x, y, params)
    assert loss == pytest.approx(want_loss, rel=1e-10, abs=1e-12)
    scale = max(1e-12, max(np.max(np.abs(g)) for g in want.values()))
    for name in want:
        err = np.max(np.abs(np.asarray(grads[name]) - want[name])) / scale
        assert err < 1e-9, f"d/d{name} off by {err:.2e} (relative to the largest entry)"


def write(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.py"
    path.write_text(HEAD + body + "CELL = cell\n")
    return path


def refused(tmp_path, name: str, body: str, needle: str):
    """The CLI refuses the cell with one line naming the problem, exit status 2."""
    path = write(tmp_path, name, body)
    result = run_bptt("codegen", "--cell", str(path), "--hidden", "2", "--steps", "2")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle in lines[0], lines[0]


# -- one row per class --------------------------------------------------------------------------------------------

SHARED = """cell = Cell("shared")
x, h = cell.input(), cell.state("h")
W, U, V = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H"), cell.matrix("V", "H", "D")
g = cell.let("g", sigmoid(V @ x + U @ h))
cell.update(h, tanh(W @ x + U @ (g * h)))
"""


@pytest.mark.parametrize("mode", ["loop", "unrolled"])
def test_a_matrix_on_two_operands_sums_its_gradient(tmp_path, mode):
    path = write(tmp_path, "shared", SHARED)
    module = numpy_module(path, 2, 3, mode)
    cell = load_cell(path)
    assert_matches_torch(module, cell, 3)
    assert_matches_torch(module, cell, 3, batch=2048)   # B·G·H ≥ 4096: the per-step (wide-batch) path
    # bptt_terms: the terms of U over both operands sum to its gradient
    x, y, params = data(module, 3, 3)
    terms = module.bptt_terms(x, y, params)["terms"]["U"]
    np.testing.assert_allclose(terms.sum(axis=(0, 1)) / 3, module.loss_and_grad(x, y, params)[1]["U"], rtol=1e-12)


@pytest.mark.parametrize("expr", ["tanh(W @ x) + h", "sigmoid(W @ x) * h", "relu(W @ x) + h",
                                  "tanh(W @ x) + sigmoid(U @ h) * h"])
def test_an_activation_of_one_map_inside_an_expression(tmp_path, expr):
    body = ('cell = Cell("single")\nx, h = cell.input(), cell.state("h")\n'
            'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
            f'cell.update(h, tanh({expr} + U @ h))\n')
    path = write(tmp_path, "single", body)
    cell = load_cell(path)
    for mode in ("loop", "unrolled"):
        assert_matches_torch(numpy_module(path, 2, 3, mode), cell, 3)


@pytest.mark.parametrize("expr", ["tanh(2 * (W @ x) + U @ h)", "tanh(W @ x + 3 * (U @ h))",
                                  "tanh(sp.Rational(-1, 3) * (W @ x) + 0.5 * (U @ h) + sp.pi)",
                                  "tanh(W @ x + U @ h) * sp.E + sp.EulerGamma * h",
                                  "tanh(W @ x + U @ h) + (sp.E * h)**2 + h / sp.E"])
def test_coefficients_and_constants_on_maps(tmp_path, expr):
    body = ('cell = Cell("coefficient")\nx, h = cell.input(), cell.state("h")\n'
            'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
            f"cell.update(h, {expr})\n")
    path = write(tmp_path, "coefficient", body)
    cell = load_cell(path)
    for mode in ("loop", "unrolled"):
        assert_matches_torch(numpy_module(path, 2, 3, mode), cell, 3)


def test_a_constant_is_proved_by_derive_verify(tmp_path):
    body = ('cell = Cell("constant")\nx, h = cell.input(), cell.state("h")\n'
            'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
            "cell.update(h, tanh(W @ x + U @ h + sp.pi) * sp.E + (sp.E * h)**2 / sp.E**3)\n")
    result = run_bptt("derive", "--cell", str(write(tmp_path, "constant", body)), "--verify")
    assert result.returncode == 0 and "PROVED" in result.stdout, result.stderr[-2000:]


VERIFIED = {
    # values named pi and tanh beside the constant π (the engine's numeric reference lambdifies them)
    "odd_names": ('cell = Cell("odd", readout="E", readout_bias="h2")\nx, m = cell.input(), cell.state("m")\n'
                  't, U, W = cell.vector("tanh"), cell.matrix("state", "H", "H"), cell.matrix("relu", "H", "D")\n'
                  'p = cell.let("pi", sp.Rational(1, 3) * t + U @ (t * m) + m)\n'
                  "cell.update(m, sigmoid(tanh(relu(p + sp.pi)) + W @ x + m))\n"),
    # a decimal times a rational: 0.5·(1/3)³ exact, not a 15-digit Float the exact identity misses
    "decimal": ('cell = Cell("decimal")\nx, h = cell.input(), cell.state("h")\n'
                'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
                'v = cell.let("v", (sp.Rational(1, 3) * (W @ x))**3 + h)\ncell.update(h, sigmoid(U @ (0.5 * v) + h))\n'),
    # ReLU of a state's initial 0 at t = 1: exactly 0 at every point, ReLU′(0) = 0, no kink to avoid
    "relu_of_zero": ('cell = Cell("relu_of_zero")\nx, h = cell.input(), cell.state("h")\n'
                     'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
                     "cell.update(h, tanh(W @ x + relu(U @ h)))\n"),
    # the engine evaluates tanh(U (v ⊙ w)) at t = 1 where w = 0, which the unrolled loss never forms
    "activation_times_zero": ('cell = Cell("times_zero")\nx = cell.input()\nw, b = cell.state("w"), cell.state("b")\n'
                              'W, U, v = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H"), cell.vector("v")\n'
                              "cell.update(w, w**2 * sigmoid(W @ x) + (W @ x)**2 * (W @ x) / 2 + b)\n"
                              "cell.update(b, tanh(U @ ((v + U @ b) * w) + relu(b) + w))\n"),
    # removing the direct path of a state the readout never reads changes nothing: the control falls
    # back to the truncated recursion, which the checks reject
    "control_fallback": ('cell = Cell("fallback", readout_state="q")\nx = cell.input()\nq, r = cell.state("q"), '
                         'cell.state("r")\nW, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
                         "cell.update(q, tanh(W @ x + U @ q))\ncell.update(r, r + sigmoid(W @ x))\n"),
}


@pytest.mark.parametrize("name", list(VERIFIED))
def test_derive_verify_proves(tmp_path, name):
    result = run_bptt("derive", "--cell", str(write(tmp_path, name, VERIFIED[name])), "--verify")
    assert result.returncode == 0 and "PROVED" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize(("name", "body", "needle"), [
    ("no_input", ('cell = Cell("no_input")\nh = cell.state("h")\nU = cell.matrix("U", "H", "H")\n'
                 "cell.update(h, tanh(U @ h))\n"), "never reads the input x"),
    ("maximum", ('cell = Cell("maximum")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
                "cell.update(h, sp.Max(tanh(W @ x), h))\n"), "uses Max"),
    ("minimum", ('cell = Cell("minimum")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
                "cell.update(h, sp.Min(tanh(W @ x), h))\n"), "uses Min"),
    ("nan_init", ('cell = Cell("nan_init", init={"b": float("nan")})\nx, h = cell.input(), cell.state("h")\n'
                 'W, b = cell.matrix("W", "H", "D"), cell.vector("b")\ncell.update(h, tanh(W @ x + b + h))\n'),
     "give a finite number"),
    ("inf_training", ('cell = Cell("inf_training", training={"b": float("inf")})\nx, h = cell.input(), '
                     'cell.state("h")\nW, b = cell.matrix("W", "H", "D"), cell.vector("b")\n'
                     "cell.update(h, tanh(W @ x + b + h))\n"), "give a finite number"),
    ("infinite", ('cell = Cell("infinite")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
                 "cell.update(h, tanh(W @ x) + sp.oo * h)\n"), "the number oo"),
    ("two_lines", ('cell = Cell("two_lines", description="a\\nb")\nx, h = cell.input(), cell.state("h")\n'
                  'W = cell.matrix("W", "H", "D")\ncell.update(h, tanh(W @ x + h))\n'), "one line"),
    ("local_name", ('cell = Cell("local_name")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
                   'c = cell.let("W_x", h * h)\ncell.update(h, tanh(W @ x + c))\n'), "W @ x"),
])
def test_refused_at_load_with_one_line(tmp_path, name, body, needle):
    refused(tmp_path, name, body, needle)


def test_a_description_with_quotes_and_backslashes(tmp_path):
    body = ('cell = Cell("quoted", description=\'a """quoted""" \\\\N cell \\\\\')\n'
            'x, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
            "cell.update(h, tanh(W @ x + h))\n")
    path = write(tmp_path, "quoted", body)
    module = numpy_module(path, 2, 2, "loop")
    assert 'a """quoted""" \\N cell \\' in module.__doc__
    assert_matches_torch(module, load_cell(path), 2)


def test_the_same_matrix_on_two_expressions(tmp_path):
    body = ('cell = Cell("twice")\nx, h = cell.input(), cell.state("h")\n'
            'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
            "cell.update(h, tanh(W @ x + U @ (h * h) + U @ (2 * h)))\n")
    path = write(tmp_path, "twice", body)
    assert_matches_torch(numpy_module(path, 2, 3, "loop"), load_cell(path), 3)


#: Cells the property test found wrong before (each a row): a map of a node of the step that the
#: backward pass reads; a value a wide-batch step sends back as a view of its one-step δ row; a δ
#: that is 0 at t = 1 (it reads a state's initial 0); a state nothing flows back to; a bias added to
#: a map of x that another node reads without it; a state the last step sends nothing (unrolled).
FOUND = {
    "map_of_node_read": 'cell = Cell("c")\nx, h = cell.input(), cell.state("h")\nW, U = cell.matrix("W", "H", "D"), '
                        'cell.matrix("U", "H", "H")\ncell.update(h, tanh(W @ x + (U @ (h * h)) * h))\n',
    "sent_view": 'cell = Cell("c")\nx = cell.input()\ns, z = cell.state("s"), cell.state("z")\n'
                 'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\ne = cell.let("e", tanh(1) + s)\n'
                 'cell.update(s, W @ x + z)\ncell.update(z, sigmoid(U @ ((W @ x) * z) + e))\n',
    "zero_at_first_step": 'cell = Cell("c")\nx, z = cell.input(), cell.state("z")\nb = cell.vector("b")\n'
                          'a = cell.let("a", b + tanh(3) + z)\nU, W = cell.matrix("U", "H", "H"), '
                          'cell.matrix("W", "H", "D")\ncell.update(z, U @ ((-2 * a * b) * z) + W @ x + z)\n',
    "state_nothing_flows_to": 'cell = Cell("c", readout_bias="c")\nx = cell.input()\ns, g = cell.state("s"), '
                              'cell.state("g")\nw, u = cell.vector("w"), cell.vector("u")\n'
                              'n = cell.let("n", w + s)\nW = cell.matrix("W", "H", "D")\n'
                              "cell.update(s, sigmoid(tanh(n) + W @ x + n))\ncell.update(g, u + n)\n",
    "zero_sent_from_the_last_step": 'cell = Cell("c")\nx = cell.input()\ns, q = cell.state("s"), cell.state("q")\n'
                                    'W, u = cell.matrix("W", "H", "D"), cell.vector("u")\n'
                                    "cell.update(s, W @ x + s)\ncell.update(q, 0.5 * u + q)\n",
    "bias_on_a_shared_map_of_x": 'cell = Cell("c")\nx = cell.input()\nr, s = cell.state("r"), cell.state("s")\n'
                                 'U, W, b = cell.matrix("U", "H", "H"), cell.matrix("W", "H", "D"), '
                                 'cell.vector("b")\nh2 = cell.let("h2", U @ r + s)\n'
                                 "cell.update(r, b + W @ x + h2)\ncell.update(s, tanh(W @ x + h2))\n",
}


@pytest.mark.parametrize("name", list(FOUND))
def test_cells_the_property_test_found(tmp_path, name):
    path = write(tmp_path, name, FOUND[name])
    cell = load_cell(path)
    for mode in ("loop", "unrolled"):
        module = numpy_module(path, 3, 4, mode)
        assert_matches_torch(module, cell, 4)
        assert_matches_torch(module, cell, 4, batch=1400)   # the per-step (wide-batch) path


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_hostile_modules_pass_ruff(tmp_path, backend):
    """The modules of the hostile cells have no repeated key, no undefined name and ruff's layout (an
    unused δ of a constant's activation, F841, is allowed)."""
    import subprocess
    import sys

    sources = {"shared": SHARED, **FOUND}
    for name, body in sources.items():
        for mode in ("loop", "unrolled"):
            path = tmp_path / f"{name}_{mode}.py"
            path.write_text(generate(Model(cell=str(write(tmp_path, name, body)), hidden=2, steps=3, inputs=D),
                                     mode, backend=backend))
            for command in (["check", "--isolated", "--select", "F6,F8,E9", "--ignore", "F841", "--line-length", "200"],
                            ["format", "--check", "--diff", "--config", str(ROOT / "pyproject.toml")]):
                result = subprocess.run([sys.executable, "-m", "ruff", *command, str(path)],
                                        check=False, capture_output=True, text=True)
                assert result.returncode == 0, name + mode + result.stdout + result.stderr


# -- names: every reserved word in every role is refused at load; the others work -------------------------------

ROLES = {
    "state": 'cell = Cell("c")\nx, h = cell.input(), cell.state("h")\ns = cell.state("{}")\n'
             'W = cell.matrix("W", "H", "D")\ncell.update(h, tanh(W @ x + s))\ncell.update(s, h * s + h)\n',
    "matrix": 'cell = Cell("c")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("{}", "H", "D")\n'
              "cell.update(h, tanh(W @ x + h))\n",
    "vector": 'cell = Cell("c")\nx, h = cell.input(), cell.state("h")\nW, b = cell.matrix("W", "H", "D"), '
              'cell.vector("{}")\ncell.update(h, tanh(W @ x + b * h))\n',
    "intermediate": 'cell = Cell("c")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
                    'v = cell.let("{}", sigmoid(W @ x) * h)\ncell.update(h, tanh(v + h))\n',
    "readout": 'cell = Cell("c", readout="{}")\nx, h = cell.input(), cell.state("h")\nW = cell.matrix("W", "H", "D")\n'
               "cell.update(h, tanh(W @ x + h))\n",
}
#: Python keywords, builtins the templates call, module constants, the modules' internal locals.
HOSTILE = ["lambda", "def", "True", "None", "class", "range", "len", "zip", "float", "print", "HIDDEN_SIZE",
           "INPUT_SIZE", "PARAMS", "STORED", "W_x", "spare", "values", "projection", "weights", "np", "forward",
           "loss", "init_params", "batch", "steps", "hidden", "kept", "sums", "incoming", "rows_x", "operand_x",
           "grads", "Mapping", "math", "njit", "delta_h", "maps_x", "match", "type"]


def _cell_from(body: str) -> Cell:
    namespace: dict = {}
    exec(HEAD + body, namespace)  # noqa: S102 - a cell file written here
    return namespace["cell"].validate()


@pytest.mark.parametrize("role", list(ROLES))
def test_reserved_names_are_refused_in_every_role(role):
    names = sorted(set(HOSTILE) | set(RESERVED) - {"x_t"})
    for name in names:
        if role == "matrix" and name == "W_x":
            continue   # W_x is a matrix's own name here, its map's local W_x_x
        with pytest.raises(UsageError) as raised:
            _cell_from(ROLES[role].format(name))
        message = str(raised.value)
        assert "\n" not in message and repr(name) in message, message


#: Names no generated module uses for itself: each works in every role (checked against torch).
ODD = ["a", "b", "e", "i", "k", "r", "s", "v", "z", "E", "I", "S", "N", "Q", "O", "pi", "oo", "beta", "tanh",
       "sigmoid", "relu", "exp", "sp", "h2", "a_h", "tanh_h", "h_in", "arg", "W_arg", "State", "LOSS"]


@pytest.mark.parametrize("role", [r for r in ROLES if r != "readout"])
def test_odd_names_work_in_every_role(tmp_path, role):
    template = ROLES[role]
    for k, name in enumerate(ODD):
        if name == "h" or (role != "state" and name == "s"):
            continue
        path = tmp_path / f"odd_{role}_{k}.py"
        path.write_text(HEAD + template.format(name) + "CELL = cell\n")
        cell = load_cell(path)
        assert_matches_torch(numpy_module(path, 2, 2, "loop"), cell, 2)


def test_every_name_a_module_uses_is_refused_or_works(tmp_path):
    """Every identifier in the NumPy and Numba modules of several cells (loop and unrolled), in every
    role: refused at load with one line, or a NumPy module equal to torch's gradient (the Numba
    module with its helpers' names: test_numba_modules_match_torch[names])."""
    words = set()
    for cell in ("lstm", "gru", str(ROOT / "docs" / "cells" / "mgu.py"), str(write(tmp_path, "shared", SHARED))):
        for mode, backend in itertools.product(("loop", "unrolled"), ("numpy", "numba")):
            words |= identifiers(generate(Model(cell=cell, hidden=2, steps=2, inputs=D), mode, backend=backend))
    words = sorted(w for w in words if not w.startswith("_"))
    accepted = []
    for word in words:
        for template in ROLES.values():
            try:
                _cell_from(template.format(word))
            except UsageError as error:
                assert "\n" not in str(error)
                continue
            accepted.append(word)
            break
    assert {"lambda", "range", "HIDDEN_SIZE", "spare"}.isdisjoint(accepted) and len(words) > 100
    # each accepted word once in every role: state, matrix, vector and intermediate of cell k rotate
    accepted = sorted(set(accepted))
    for k in range(len(accepted)):
        state, matrix, vector, value = (accepted[(k + j) % len(accepted)] for j in range(4))
        body = (f'cell = Cell("c")\nx, h = cell.input(), cell.state("{state}")\n'
                f'W, b = cell.matrix("{matrix}", "H", "D"), cell.vector("{vector}")\n'
                f'v = cell.let("{value}", sigmoid(W @ x) * h + b)\ncell.update(h, tanh(v + h * b))\n')
        path = write(tmp_path, f"word_{k}", body)
        try:
            cell = load_cell(path)
        except UsageError as error:   # a name that is another's map local (m_x)
            assert "generated code's name" in str(error)
            continue
        assert_matches_torch(numpy_module(path, 2, 2, "loop"), cell, 2)


# -- the property test: random small cells ---------------------------------------------------------------------

POOL = ["a", "b", "e", "k", "r", "v", "z", "g1", "E", "S", "N", "Q", "pi", "beta", "tanh", "relu", "h2", "Cx",
        "state", "arg", "a_h", "tanh_h", "s_in", "W_arg", "LOSS", "m", "n", "q", "u", "w"]
CONSTANTS = ["2", "3", "-1", "0.5", "sp.Rational(1, 3)", "sp.Rational(-7, 5)", "sp.pi", "sp.E", "1.25"]
ACTIVATIONS = ["tanh", "sigmoid", "relu", "identity"]


class RandomCell:
    """The source of a random cell file: states, lazily declared maps (shared across operands),
    vectors, intermediates, nested activations, coefficients and constants, odd names."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        names = self.rng.sample(POOL, len(POOL))
        self.names = iter(names)
        self.lines = []
        self.variables = itertools.count()
        self.maps_x, self.maps_h, self.vectors = [], [], []
        self.values = []   # Python variables of the step's values (states' previous values, lets)
        self.read_x = False

    def var(self) -> str:
        return f"v{next(self.variables)}"

    def declare(self, kind: str) -> str:
        variable, name = self.var(), next(self.names)
        if kind == "vector":
            self.lines.append(f'{variable} = cell.vector("{name}")')
            self.vectors.append(variable)
        else:
            self.lines.append(f'{variable} = cell.matrix("{name}", "H", "{"D" if kind == "x" else "H"}")')
            (self.maps_x if kind == "x" else self.maps_h).append(variable)
        return variable

    def reuse(self, kind: str) -> str:
        pool = {"x": self.maps_x, "h": self.maps_h, "vector": self.vectors}[kind]
        return self.rng.choice(pool) if pool and self.rng.random() < 0.6 else self.declare(kind)

    def leaf(self) -> str:
        choice = self.rng.choice(["map_x", "map_x", "map_h", "value", "value", "vector", "constant"])
        if choice == "map_x":
            self.read_x = True
            return f"({self.reuse('x')} @ x)"
        if choice == "map_h":
            return f"({self.reuse('h')} @ {self.rng.choice(self.values)})"
        if choice == "value":
            return self.rng.choice(self.values)
        if choice == "vector":
            return self.reuse("vector")
        return self.rng.choice(CONSTANTS)

    def expr(self, depth: int) -> str:
        if depth == 0 or self.rng.random() < 0.25:
            return self.leaf()
        choice = self.rng.choice(["add", "add", "mul", "act", "act", "coefficient", "power", "map_expr"])
        a = self.expr(depth - 1)
        if choice == "add":
            return f"({a} + {self.expr(depth - 1)})"
        if choice == "mul":
            return f"({a} * {self.expr(depth - 1)})"
        if choice == "act":
            return f"{self.rng.choice(ACTIVATIONS)}({a})"
        if choice == "coefficient":
            return f"({self.rng.choice(CONSTANTS)} * {a})"
        if choice == "power":
            return f"({a})**{self.rng.choice([2, 2, 3])}"
        # a map of an expression of this step (never a constant: times a value)
        return f"({self.reuse('h')} @ ({a} * {self.rng.choice(self.values)}))"

    def source(self) -> str:
        rng = self.rng
        readout = next(self.names)
        bias = f', readout_bias="{next(self.names)}"' if rng.random() < 0.3 else ""
        states, names = [], []
        for _ in range(rng.choice([1, 1, 2, 3])):
            states.append(self.var())
            names.append(next(self.names))
        output = f', readout_state="{rng.choice(names)}"' if rng.random() < 0.3 else ""
        self.lines.append(f'cell = Cell("random", readout="{readout}"{bias}{output})')
        self.lines.append("x = cell.input()")
        for variable, name in zip(states, names):
            self.lines.append(f'{variable} = cell.state("{name}")')
            self.values.append(variable)
        for _ in range(rng.choice([0, 1, 2])):
            variable, body = self.var(), self.expr(2)
            self.lines.append(f'{variable} = cell.let("{next(self.names)}", {body} + {rng.choice(self.values)})')
            self.values.append(variable)
        for k, state in enumerate(states):
            body = self.expr(3)
            if k == 0 and not self.read_x:
                body = f"({body} + ({self.reuse('x')} @ x))"
                self.read_x = True
            body = f"{body} + {rng.choice(self.values)}"   # never a constant
            if rng.random() < 0.7:
                body = f"{rng.choice(['tanh', 'sigmoid'])}({body})"
            self.lines.append(f"cell.update({state}, {body})")
            if rng.random() < 0.4:   # the updated value read by what follows (the LSTM's h_t = o ⊙ tanh(c_t))
                variable = self.var()
                self.lines.append(f"{variable} = cell.new({state})")
                self.values.append(variable)
        return "\n".join(self.lines) + "\n"


def random_cell(tmp_path, seed: int):
    path = tmp_path / f"random_{seed}.py"
    path.write_text(HEAD + RandomCell(seed).source() + "CELL = cell\n")
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), hidden=st.integers(2, 3), steps=st.integers(3, 4),
       mode=st.sampled_from(["loop", "unrolled"]))
def test_random_cells_match_torch(tmp_path, seed, hidden, steps, mode):
    path = random_cell(tmp_path, seed)
    try:
        cell = load_cell(path)
    except UsageError as error:   # refused at load (an unused vector, say): one line, never a traceback
        assert "\n" not in str(error)
        return
    module = numpy_module(path, hidden, steps, mode)
    assert_matches_torch(module, cell, steps, seed=seed % 1000)
    assert_matches_torch(module, cell, steps, batch=1400, seed=seed % 1000)   # the per-step path


# -- Numba, a few examples (compiling is slow) -------------------------------------------------------------------

#: The names the Numba modules' helpers and kernels use (and no cell-printing code may shadow).
NUMBA_NAMES = """cell = Cell("names", readout="signature", readout_bias="decay")
x = cell.input()
a, s = cell.state("a"), cell.state("s")
W1, W2 = cell.matrix("context", "H", "D"), cell.matrix("builder", "H", "D")
U1, U2 = cell.matrix("typingctx", "H", "H"), cell.matrix("codegen", "H", "H")
U3 = cell.matrix("arguments", "H", "H")
b, beta, rho, col, z, q, u, w, j = (cell.vector(n) for n in ("b", "beta", "rho", "column", "at_zero", "q", "u", "w", "j"))
f = cell.let("forward_kernel", sigmoid(W1 @ x + U1 @ a + b))
g = cell.let("backward_kernel", tanh(W2 @ x + U2 @ (f * s) + beta))
a0 = cell.let("a_0", rho * a + col * g)
b0 = cell.let("b_0", z * s + q)
g0 = cell.let("g_0", U3 @ (a0 * b0) + u)
o0 = cell.let("o_0", w * g0 + j)
cell.update(a, (1 - f) * a + f * tanh(o0))
cell.update(s, tanh(a0 + b0))
"""


@pytest.mark.parametrize("which", ["shared", "single", "random", "random2", "names"])
def test_numba_modules_match_torch(tmp_path, which):
    pytest.importorskip("numba")
    if which == "shared":
        path = write(tmp_path, "shared_numba", SHARED)
    elif which == "single":
        body = ("cell = Cell(\"single\", description='a \"\"\"quoted\"\"\" \\\\N cell')\n"
                'x, h = cell.input(), cell.state("h")\nW, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
                "cell.update(h, tanh(2 * (W @ x) + sp.pi) + sigmoid(U @ h) * h + sp.EulerGamma * h + (sp.E * h)**2)\n")
        path = write(tmp_path, "single_numba", body)
    elif which == "names":
        path = write(tmp_path, "names_numba", NUMBA_NAMES)
    else:
        path = random_cell(tmp_path, 20261207 if which == "random" else 5003)
    cell = load_cell(path)
    module = load(Model(cell=str(path), hidden=2, steps=3, inputs=D), "loop", backend="numba")
    assert cell.description in module.__doc__
    assert_matches_torch(module, cell, 3)
    assert_matches_torch(module, cell, 4, batch=700)   # the BLAS drivers


def test_numba_a_rational_beyond_int64(tmp_path):
    pytest.importorskip("numba")
    body = ('cell = Cell("big")\nx, h = cell.input(), cell.state("h")\n'
            'W, U = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H")\n'
            "cell.update(h, tanh(W @ x + U @ h) * sp.Rational(10**30 + 7, 10**30))\n")
    path = write(tmp_path, "big", body)
    module = load(Model(cell=str(path), hidden=2, steps=3, inputs=D), "loop", backend="numba")
    assert_matches_torch(module, load_cell(path), 3)
    assert math.isfinite(module.loss(*data(module, 2, 3)[:2], data(module, 2, 3)[2]))
