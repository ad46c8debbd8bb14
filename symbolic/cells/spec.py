"""The public spec API: a recurrent cell written as per-unit equations, and nothing else.

A cell names its states, its parameters with shapes in H (hidden size) and D (input size), and the
equations of one step, written per unit with SymPy:

    >>> from symbolic.cells.spec import Cell, sigmoid, tanh
    >>> cell = Cell("mgu", readout="w_y")                 # a minimal gated unit
    >>> x, h = cell.input(), cell.state("h")              # x_t, and h as h_(t-1)
    >>> W_f, U_f, b_f = cell.matrix("W_f", "H", "D"), cell.matrix("U_f", "H", "H"), cell.vector("b_f")
    >>> W_n, U_n, b_n = cell.matrix("W_n", "H", "D"), cell.matrix("U_n", "H", "H"), cell.vector("b_n")
    >>> f = cell.let("f", sigmoid(W_f @ x + U_f @ h + b_f))
    >>> n = cell.let("n", tanh(W_n @ x + U_n @ (f * h) + b_n))
    >>> cell.update(h, (1 - f) * h + f * n)

A state read further back than t − 1 is ``cell.lag(h, K)``, h_(t−K) (0 before the sequence starts):
``cell.update(h, tanh(W @ x + U @ h + S @ cell.lag(h, 3)))`` is a skip connection through time.

What an equation may hold: linear maps ``M @ v`` (v is the input, a state's previous value, or an
elementwise expression of this step), per-unit vectors (biases, IndRNN's u), the activations of
``activations.ACTIVATIONS`` (tanh, sigmoid, relu, identity), sums, products, positive integer powers and
numbers (integers, rationals, decimals read as the exact decimal written, π, e). Every product is
elementwise (⊙). Names are letters and digits joined by single underscores, not a Python keyword or
builtin, nor a name the generated modules use (``RESERVED``, the module constants); a cell must read x. The readout is the notes' many-to-one ŷ = σ(w_yᵀ s_n) with binary
cross-entropy, where s is the first state declared (or ``readout_state``).

A cell file is Python: ``load_cell(path)`` runs it and takes its ``CELL``. Derivatives, loops and
templates never appear in a cell: the engine (``symbolic.engine.derivation``) derives everything.
"""

from __future__ import annotations

import builtins
import keyword
import math
import operator
import re
from dataclasses import dataclass

import sympy as sp

from ..activations import relu, sigmoid, tanh
from ..errors import UsageError
from ..model import MAX_LAG


def identity(z):
    """The identity activation (for symmetry with the table; it is just z)."""
    return z


#: The elementwise functions an equation may apply, by SymPy function class → activation name.
FUNCTIONS = {sp.tanh: "tanh", sigmoid: "sigmoid", relu: "relu"}
SIZES = ("H", "D")
#: Names the generated modules use for themselves (their locals, functions, imports and constants);
#: a cell may not take them, nor a Python keyword or builtin (``_PYTHON_NAMES``).
RESERVED = ("x", "x_t", "y", "y_hat", "t", "p", "np", "params", "grads", "batch", "steps", "logit",
            "residual", "values", "dtype", "projection", "recurrent", "inputs", "weights", "maps", "deltas",
            "rest", "terms", "rows", "per_step", "gradients", "positional", "biases",
            # the modules' own functions, imports and constants
            "init_params", "forward", "states", "loss", "loss_and_grad", "bptt_terms", "annotations", "Mapping",
            "npt", "math", "numba", "njit", "prange", "intrinsic", "overload", "types", "CELL", "STEPS", "MODE",
            "INPUT_SIZE", "HIDDEN_SIZE", "ACTIVATIONS", "ANALYTIC", "STATES", "PARAMS", "STORED", "POSITIONAL",
            "ACTIVATION", "BIAS",
            # the locals of their functions
            "hidden", "chunk", "count", "first", "kept", "sums", "row", "span", "spans", "slot", "pieces", "shape",
            "shapes", "size", "block", "total", "vectors", "incoming", "transposed", "losses", "labels", "named",
            "keywords", "spare", "out", "inner", "other", "length", "columns", "half", "positive", "state_n",
            "readout", "readout_bias", "array", "arrays", "value", "name", "names", "key", "keys", "given",
            "missing", "unknown", "kind", "what", "function", "error", "rng", "seed", "bound", "magnitude",
            "square", "small", "ratio", "bits", "numerator", "denominator", "weights_transposed",
            # the output side's and the vjp's locals read after a cell's parameters are unpacked
            "errors", "start")
#: Python's keywords and builtins: a module's locals named so are syntax errors or shadow what it calls.
_PYTHON_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")
#: A lagged state's symbol, s_lagK (``Cell.lag``): no other name may take that form.
_LAGGED = re.compile(r"^.*_lag[0-9]+$")


class Matrix(sp.Symbol):
    """A weight matrix of a cell; apply it with ``M @ v``. Elementwise use of it is an error."""

    def __matmul__(self, operand):
        cell = getattr(self, "_cell", None)
        return cell._apply(self, operand)

    def __rmatmul__(self, other):
        raise UsageError(f"{other} @ {self}: a cell's matrix comes first, as in {self} @ h")


@dataclass(frozen=True)
class Application:
    """One linear map applied per unit: (M v)_j, a symbol in the unit equations."""

    symbol: sp.Symbol
    matrix: str
    #: "x", a state's previous value "s_prev", or an equation of this step
    operand: str


@dataclass(frozen=True)
class Equation:
    """``name = expr`` of one step; ``state`` names the state it updates (None: an intermediate)."""

    name: str
    symbol: sp.Symbol
    expr: sp.Expr
    state: str | None = None


class Cell:
    """A recurrent cell as data: states, parameters with shapes, per-unit equations, a readout."""

    def __init__(self, name: str, readout: str = "w_y", readout_bias: str | None = None,
                 readout_state: str | None = None, description: str = "", positional: tuple = (),
                 init: dict | None = None, training: dict | None = None, constants: dict | None = None):
        self.name = _checked_name(name, "cell name")
        self.description = description
        if not isinstance(description, str) or not description.isprintable():
            raise UsageError(f"the description of cell {self.name!r} must be one line of printable text, got "
                             f"{description!r}: write it on one line")
        self.readout = _checked_name(readout, "readout weight")
        self.readout_bias = readout_bias
        self.readout_state = readout_state
        #: Parameter names of an optional positional ``loss_and_grad(x, y, *params)`` form.
        self.positional = tuple(positional)
        #: Parameter name → the constant every entry starts at in init_params (others: uniform ±1/√H)
        self.init = dict(init or {})
        #: Per-unit parameter name → the constant every entry starts at when ``bptt train`` trains the
        #: cell (its own recommendation; --set NAME=V overrides)
        self.training = dict(training or {})
        #: Extra module constants the generated module states (UPPER_CASE name → a bool, number or
        #: string), for scripts written against the cell's own modules (the RNN's ACTIVATION, BIAS)
        self.constants = dict(constants or {})
        for key, value in self.constants.items():
            if not (isinstance(key, str) and key.isidentifier() and key.isupper()) or key in _MODULE_CONSTANTS:
                raise UsageError(f"module constant {key!r} of cell {self.name!r} must be an UPPER_CASE name not "
                                 f"among {', '.join(_MODULE_CONSTANTS)}: rename it")
            if not isinstance(value, (bool, int, float, str)):
                raise UsageError(f"module constant {key} of cell {self.name!r} must be a bool, number or string, "
                                 f"got {type(value).__name__}")
        self.input_symbol = sp.Symbol("x_t")
        self.states: dict[str, sp.Symbol] = {}   # state name → its previous value's symbol
        #: (state name, K ≥ 2) → the symbol of the state's value K steps back, s_(t−K) (``lag``)
        self.lags: dict[tuple[str, int], sp.Symbol] = {}
        self.matrices: dict[str, tuple[str, str]] = {}
        self.vectors: dict[str, sp.Symbol] = {}
        self.applications: list[Application] = []
        self.equations: list[Equation] = []
        self._names: set[str] = set()
        self._claim(self.readout, "readout weight")
        if readout_bias:
            self._claim(_checked_name(readout_bias, "readout bias"), "readout bias")
        self._order.clear()   # the readout comes last in the parameters, not first

    def add_readout_bias(self, name: str) -> Cell:
        """Give the readout a bias (``--bias`` on a cell whose own biases are in its equations)."""
        if name in self._names:
            raise UsageError(f"--bias adds the readout's bias {name}, but cell {self.name!r} already has a "
                             f"parameter {name}: rename it in the cell file, or drop --bias")
        self._claim(name, "readout bias")
        self._order.remove(name)   # the readout's parameters come last
        self.readout_bias = name
        if self.positional:
            self.positional = (*self.positional, name)
        return self

    # -- declarations ---------------------------------------------------------------------------------

    def input(self) -> sp.Symbol:
        """x_t, the input at this step (size D); it may only be used as ``M @ x``."""
        return self.input_symbol

    def state(self, name: str) -> sp.Symbol:
        """A state (size H); the symbol returned is its previous value s_(t−1). States start at 0."""
        self._claim(name, "state")
        symbol = sp.Symbol(f"{name}_prev")
        self.states[name] = symbol
        return symbol

    def lag(self, state, steps: int) -> sp.Symbol:
        """The state's value ``steps`` = K steps back, s_(t−K) (size H; 0 before the sequence starts):
        ``cell.lag(h, 3)`` for h_(t−3). K = 1 is the state's previous value itself, the symbol of
        ``cell.state``. Use it as any state is used: ``W_s @ cell.lag(h, 3)``, or elementwise."""
        name = self._state_name(state)
        try:   # any whole number type (NumPy's, SymPy's Integer) is one: operator.index refuses 2.5 and "3"
            whole = None if isinstance(steps, bool) else operator.index(steps)
        except TypeError:
            whole = None
        if whole is None or whole < 1:
            raise UsageError(f"lag({name}, {steps!r}): the lag is a whole number of steps K >= 1, got "
                             f"{type(steps).__name__} {steps!r}: write e.g. cell.lag({name}, 3) for {name}_(t-3)")
        if whole > MAX_LAG:
            raise UsageError(f"lag({name}, {whole}) is beyond the longest lag, 10^18 (the generated code's 64-bit "
                             f"integers): write a K up to 10^18, which is past any sequence already")
        steps = int(whole)
        if steps == 1:
            return self.states[name]
        if (name, steps) not in self.lags:
            symbol = f"{name}_lag{steps}"
            if symbol in self._names:
                raise UsageError(f"{symbol!r} is already a name in cell {self.name!r}: it names {name} {steps} "
                                 "steps back; rename it")
            self._names.add(symbol)
            self.lags[(name, steps)] = sp.Symbol(symbol)
        return self.lags[(name, steps)]

    def matrix(self, name: str, rows: str = "H", columns: str = "H") -> Matrix:
        """A weight matrix of shape (rows, columns), each "H" or "D"."""
        self._claim(name, "parameter")
        for size in (rows, columns):
            if size not in SIZES:
                raise UsageError(f"matrix {name}: shape entries are 'H' or 'D', got {size!r}")
        if rows != "H":
            raise UsageError(f"matrix {name} has {rows} rows: a cell's matrices map into the H units, use ('H', ...)")
        symbol = Matrix(name)
        symbol._cell = self
        self.matrices[name] = (rows, columns)
        return symbol

    def vector(self, name: str) -> sp.Symbol:
        """A per-unit parameter of shape (H,): a bias, or IndRNN's u in u ⊙ h."""
        self._claim(name, "parameter")
        symbol = sp.Symbol(name)
        self.vectors[name] = symbol
        return symbol

    # -- equations ------------------------------------------------------------------------------------

    def let(self, name: str, expr) -> sp.Symbol:
        """An intermediate value of this step (a gate, a candidate): ``name = expr``, per unit."""
        self._claim(name, "equation")
        symbol = sp.Symbol(name)
        self.equations.append(Equation(name, symbol, self._checked(name, expr)))
        return symbol

    def update(self, state, expr) -> sp.Symbol:
        """The state's new value s_t = expr (per unit)."""
        name = self._state_name(state)
        if any(eq.state == name for eq in self.equations):
            raise UsageError(f"state {name!r} is updated twice: give each state one update")
        symbol = sp.Symbol(name)
        self.equations.append(Equation(name, symbol, self._checked(name, expr), state=name))
        return symbol

    def new(self, state) -> sp.Symbol:
        """The state's value s_t at this step, once updated (LSTM: h_t = o ⊙ tanh(c_t))."""
        name = self._state_name(state)
        for eq in self.equations:
            if eq.state == name:
                return eq.symbol
        raise UsageError(f"state {name!r} is used as updated before its update: write update({name}, ...) first")

    # -- what the engine reads -------------------------------------------------------------------------

    @property
    def parameters(self) -> dict[str, tuple[str, ...]]:
        """Parameter name → shape in "H"/"D", in declaration order, then the readout."""
        shapes: dict[str, tuple[str, ...]] = {}
        for name in self._order:
            if name in self.matrices:
                shapes[name] = self.matrices[name]
            elif name in self.vectors:
                shapes[name] = ("H",)
        shapes[self.readout] = ("H",)
        if self.readout_bias:
            shapes[self.readout_bias] = ()
        return shapes

    @property
    def output_state(self) -> str:
        return self.readout_state or next(iter(self.states), "")

    def validate(self) -> Cell:
        """Every state updated, the readout state exists, something recurrent; else one UsageError."""
        if not self.states:
            raise UsageError(f"cell {self.name!r} declares no state: add one with cell.state('h')")
        for name in self.states:
            if not any(eq.state == name for eq in self.equations):
                raise UsageError(f"state {name!r} has no update: add cell.update({name}, ...)")
        if self.output_state not in self.states:
            raise UsageError(f"readout state {self.output_state!r} is not a state: name one of {', '.join(self.states)}")
        uses = set()
        for eq in self.equations:
            uses |= eq.expr.free_symbols
        uses |= {sp.Symbol(a.operand) for a in self.applications}
        if not any(a.operand == "x" for a in self.applications):
            raise UsageError(f"cell {self.name!r} never reads the input x: apply a matrix to it, e.g. "
                             "cell.matrix('W', 'H', 'D') @ x")
        for name, value in (*self.init.items(), *self.training.items()):
            if (name not in self.vectors or not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value)):
                raise UsageError(f"init and training set {name!r} to {value!r}: name a per-unit parameter "
                                 "(cell.vector) and give a finite number")
        # the generated code names the map M u as the local M_u (W @ x: W_x)
        locals_ = {str(a.symbol).replace("@", "_"): a for a in self.applications}
        for name in (*self._order, self.readout, self.readout_bias):
            if name in locals_:
                a = locals_[name]
                raise UsageError(f"name {name!r} of cell {self.name!r} is the generated code's name of "
                                 f"{a.matrix} @ {a.operand}: rename it")
        for name in self.positional:
            if name not in self.parameters:
                raise UsageError(f"positional parameter {name!r} is not a parameter of cell {self.name!r}")
        left_out = [name for name in self.parameters if name not in self.positional]
        if self.positional and (left_out or len(set(self.positional)) != len(self.positional)):
            raise UsageError(f"positional= of cell {self.name!r} must name every parameter once: give "
                             f"({', '.join(self.parameters)}) in the order of the positional form")
        used_parameters = {str(s) for s in uses} | {a.matrix for a in self.applications}
        for name in list(self.matrices) + list(self.vectors):
            if name not in used_parameters:
                raise UsageError(f"parameter {name!r} of cell {self.name!r} is never used: use it or remove it")
        return self

    # -- internals ---------------------------------------------------------------------------------------

    @property
    def _order(self) -> list[str]:
        return self.__dict__.setdefault("_declared", [])

    def _claim(self, name: str, kind: str) -> None:
        _checked_name(name, kind)
        if name in RESERVED or name in _PYTHON_NAMES or name in self.constants:
            raise UsageError(f"{kind} name {name!r} is reserved in cell {self.name!r} (the generated code uses it: "
                             "Python's keywords and builtins, the module's constants, and symbolic.cells.spec."
                             "RESERVED): choose another name")
        if _LAGGED.match(name):
            raise UsageError(f"{kind} name {name!r} ends like a lagged state (s_lagK, cell.lag(s, K)): choose "
                             "another name")
        if name in self._names or f"{name}_prev" in self._names:
            raise UsageError(f"{kind} name {name!r} is already taken in cell {self.name!r}: choose another name")
        self._names.add(name)
        self._order.append(name)

    def _state_name(self, state) -> str:
        for name, symbol in self.states.items():
            if state == symbol or state == name:
                return name
        if isinstance(state, sp.Symbol) and state.name in self.states:   # cell.new(s) or update's result, s_t
            raise UsageError(f"{state} is the new value {state}_t of state {state} in cell {self.name!r}: pass the "
                             f"state itself, as cell.state({state.name!r}) returned it (cell.lag({state}, K) is "
                             f"{state}_(t-K))")
        raise UsageError(f"{state} is not a state of cell {self.name!r}: declare it with cell.state(...)")

    def _apply(self, matrix: Matrix, operand) -> sp.Symbol:
        """``M @ v`` as the per-unit symbol (M v)_j; v a name the cell knows, or an expression of
        this step, which becomes an intermediate of its own."""
        name = str(matrix)
        rows, columns = self.matrices[name]
        operand = sp.sympify(operand)
        if operand == self.input_symbol:
            source, size = "x", "D"
        elif operand in self.states.values() or operand in self.lags.values():
            source, size = str(operand), "H"   # s_prev or s_lagK: the state's value at t − 1, t − K
        elif any(operand == eq.symbol for eq in self.equations):
            source, size = str(operand), "H"
        else:
            source, k = f"{name}_arg", 2
            while source in self._names:   # the same matrix on another expression
                source, k = f"{name}_arg{k}", k + 1
            self.let(source, operand)
            size = "H"
        if columns != size:
            raise UsageError(
                f"matrix {name} has shape ({rows}, {columns}) but is applied to {source} of size {size}: "
                f"declare it ({rows}, {size})"
            )
        for application in self.applications:
            if application.matrix == name and application.operand == source:
                return application.symbol
        symbol = sp.Symbol(f"{name}@{source}")
        self.applications.append(Application(symbol, name, source))
        return symbol

    def _known(self) -> dict[sp.Symbol, str]:
        known = {self.input_symbol: "input"}
        known |= {symbol: "state" for symbol in self.states.values()}
        known |= {symbol: "state" for symbol in self.lags.values()}
        known |= {symbol: "vector" for symbol in self.vectors.values()}
        known |= {a.symbol: "application" for a in self.applications}
        known |= {eq.symbol: "equation" for eq in self.equations}
        return known

    def _checked(self, name: str, expr) -> sp.Expr:
        try:
            expr = sp.sympify(expr)
        except (sp.SympifyError, TypeError) as error:
            raise UsageError(f"equation {name!r} is not a SymPy expression ({error}): build it from the cell's symbols") from None
        known = self._known()
        for symbol in sorted(expr.free_symbols, key=str):
            if isinstance(symbol, Matrix):
                raise UsageError(
                    f"equation {name!r} uses the matrix {symbol} elementwise: apply it with {symbol} @ operand"
                )
            if symbol == self.input_symbol:
                raise UsageError(
                    f"equation {name!r} uses the input x elementwise: apply a matrix to it, e.g. W @ x"
                )
            if symbol not in known:
                raise UsageError(
                    f"equation {name!r} uses {symbol}, which is neither a state, an input, a parameter nor "
                    "an earlier equation: declare it first"
                )
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.exp) and node.args[0].is_Integer:
                continue   # e^k, a constant: SymPy writes e·e as exp(2)
            if isinstance(node, sp.Function) and not isinstance(node, tuple(FUNCTIONS)):
                known_functions = ", ".join(FUNCTIONS.values())
                raise UsageError(
                    f"equation {name!r} applies {node.func}, which is not an activation of the table "
                    f"({known_functions}, identity): use one of those"
                )
            if isinstance(node, sp.Pow) and not (node.exp.is_Integer and node.exp > 0):
                raise UsageError(
                    f"equation {name!r} has the power {node}: only positive integer powers are elementwise "
                    "polynomials; rewrite it"
                )
            if isinstance(node, (sp.MatrixBase, sp.MatrixExpr)):
                raise UsageError(f"equation {name!r} is a matrix expression: write it per unit")
            if node.is_Number and not node.is_finite:
                raise UsageError(f"equation {name!r} has the number {node}: coefficients must be finite real numbers")
            if node.is_Number and not node.is_real:
                raise UsageError(f"equation {name!r} has the number {node}: coefficients must be real")
            if not isinstance(node, (sp.Add, sp.Mul, sp.Pow, sp.Symbol, sp.Number, sp.NumberSymbol,
                                     *FUNCTIONS)):
                raise UsageError(
                    f"equation {name!r} uses {node.func.__name__} ({node}): an equation holds sums, products, "
                    f"integer powers, numbers and the activations {', '.join(FUNCTIONS.values())}, identity; "
                    "rewrite it with those"
                )
        # a decimal coefficient as the exact decimal it is written as (0.5·(1/3)³ stays 1/54, no
        # 15-digit Float product the exact proof cannot match)
        expr = expr.xreplace({f: sp.Rational(str(f)) for f in expr.atoms(sp.Float)})
        if not expr.free_symbols:
            raise UsageError(f"equation {name!r} is the constant {expr}: it must depend on the step's values")
        return expr


#: The constants every generated cell module defines itself.
_MODULE_CONSTANTS = ("CELL", "STEPS", "MODE", "INPUT_SIZE", "HIDDEN_SIZE", "ACTIVATIONS", "ANALYTIC", "STATES",
                     "PARAMS", "STORED", "POSITIONAL")
#: Prefixes of the names generated code gives its own arrays (δs, gradients, stacked maps, rows).
_GENERATED_PREFIXES = ("delta", "grad_", "d_", "maps_", "sums_", "terms_", "weights_", "operand_", "rows_", "row_",
                       "upstream_")


def _checked_name(name, kind: str) -> str:
    if (not isinstance(name, str) or not _NAME.match(name) or name.endswith("_prev")
            or name.startswith(_GENERATED_PREFIXES)):
        raise UsageError(
            f"{kind} {name!r} is not a usable name: letters and digits joined by single underscores, "
            f"not ending in _prev, not starting with {', '.join(_GENERATED_PREFIXES[:-1])} or {_GENERATED_PREFIXES[-1]}"
        )
    return name


__all__ = ["Application", "Cell", "Equation", "Matrix", "identity", "relu", "sigmoid", "tanh"]
