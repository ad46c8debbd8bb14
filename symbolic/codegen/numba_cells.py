"""The Numba backend for any cell: the context for ``templates/numba/cell.py.j2``.

The compiled module has the generic NumPy module's interface (``templates/numpy/cell.py.j2``, the
context of ``cell_backend``): its constants, ``init_params`` and argument validation are copied
verbatim from the NumPy module for the same model and mode, so both accept and reject exactly the same
arguments with the same messages; its ``bptt_terms`` is the NumPy module's (copied with the prefix
``_numpy_``).

The work runs in ``@njit(cache=True)`` kernels printed from the engine's per-unit
derivation (``engine.CellDerivation``) by ``CellKernelPrinter`` (σ, tanh and exp without libm for real
arguments, the exact f for the complex step); nothing here names a cell:

* time-major arrays (each step reads and writes contiguous (B, H) blocks); the stored forward values
  (the NumPy module's ``STORED``, then any node a later part of the step reads) in one
  (R, n + 1, B, H) array, row t = 0 holding the initial states 0;
* the linear maps stacked by operand, as ``cell_backend`` does: the maps of x_t and those of a state
  s_(t−1) are one matrix product each per step for the whole batch (so the loops over units read
  contiguous rows and, with f compiled in by ``CellKernelPrinter``, vectorise across units), and the
  maps of a node of the step one product right after that node, so a step is cut into **parts** at
  those products (one part for the LSTM and torch's GRU, two for
  Cho's GRU, whose U (r ⊙ h) needs every unit of r ⊙ h first);
* backward, per step from t = n down: the adjoints δv of the derivation, entry by entry, writing
  δ(M u) into one (span, B, G·H) array per operand; the transpose rule δu += Σ_M Mᵀ δ(M u) is one
  product per operand and step (inside the step where u is a node: another cut), what a step sends to
  s_(t−1) the derivation's ``sent``; ∂L/∂M = Σ_t δ(M u)_t u_tᵀ one product per operand over the rows of
  a span of steps (about ``SPAN_ROWS`` rows), per-unit parameters summed from their δ.

Below ``blas_entries`` entries per step (B·H) every product is a compiled loop (the macros of
``templates/numba/macros.j2``), not BLAS, so Numba needs no SciPy, and a pass is one compiled call;
from there on the same drivers run in Python (``blas``: the products through NumPy's matmul, BLAS),
calling the compiled loops of each part once per chunk of ``ROWS`` sequences. The unrolled mode compiles the same loops as the loop mode behind the NumPy module's
fixed-length check, as the other Numba modules do.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from dataclasses import dataclass, field

import sympy as sp

from ..engine.derivation import CellDerivation, derive_cell
from .cell_backend import NAMED, SIGNATURES
from .interim_text import PREFIX, function_closure, vectorised
from .numba_backend import CellKernelPrinter, NumbaScalarPrinter

#: Sequences per chunk of the elementwise work of one step (one call of a part's compiled loops).
ROWS = 64
#: The weight gradients are summed over the rows (sequences × steps) of several steps at once, in
#: one product of about this many rows.
SPAN_ROWS = 4096
#: From BLAS_ENTRIES / (G · (1 + H / BLAS_HIDDEN)) entries per step (B·H) on, G the maps of the
#: previous states (stacked: 1 for the plain RNN, 4 for the LSTM, 3 for the GRU; at least 1), the
#: drivers run in Python with BLAS's products through NumPy and the compiled loops of each part called
#: per chunk (``_forward_blas``, ``_backward_blas``); below, one compiled call whose products are
#: compiled loops. BLAS's products beat the compiled loops per entry, more so with more maps and
#: larger H, while the Python driver costs a fixed time per step. Measured (bench/bench_backends.py
#: --only widths, CPU time, n = 100, loss_and_grad, BLAS drivers / compiled), with the cut-over this
#: gives: see ``blas_entries`` and docs/performance.md.
BLAS_ENTRIES = 2048
BLAS_HIDDEN = 48

#: The kernels' f for real arguments, without libm (``templates/numba/macros.j2``, real_functions), and
#: their accuracy against NumPy's over 3·10⁶ arguments (bench/bench_lstm.py --only accuracy), for the
#: module's docstring.
REAL_FUNCTIONS = {
    "exp": "_exp_real: within 1 ulp of np.exp",
    "logistic": "_logistic_real: within 2 ulp of NumPy's σ",
    "tanh": "_tanh_real: within 2 ulp of np.tanh",
}

#: What the Numba module copies from the NumPy module under their own names, verbatim: the
#: constants (module-level assignments) and these functions with the module functions they call.
COPIED_FUNCTIONS = ("init_params", "_inputs", "_labels")
#: The module's public functions. A cell that declares ``positional`` parameters (the plain RNN) has
#: them as the NumPy module's wrappers, copied verbatim with their ``_call``, which take one params
#: dict or the parameters one by one and call the dict implementations ``_dict_<name>``; other cells'
#: implementations are the public functions themselves (``cell_backend``'s context key ``impl``).
PUBLIC = ("forward", "states", "loss", "loss_and_grad", "bptt_terms")
#: The positional form's helper, copied with the wrappers.
WRAPPER_HELPERS = ("_call",)

#: Names the compiled kernels use for themselves (arguments, indices, helpers): a cell's name that is
#: one of them, a keyword or a builtin is printed with a trailing underscore (IndRNN's b → b_), which
#: no cell name can end with.
KERNEL_NAMES = frozenset(
    {
        "b",
        "k",
        "t",
        "x",
        "chunk",
        "first",
        "hidden",
        "values",
        "vectors",
        "incoming",
        "transposed",
        "kept",
        "sums",
        "slot",
        "span",
        "steps",
        "batch",
        "count",
        "rows",
        "np",
        "numba",
        "prange",
        "njit",
    }
)




def blas_entries(state_maps: int, hidden: int) -> int:
    """Entries per step (B·H) from which a call takes the BLAS drivers (BLAS_ENTRIES, …)."""
    return round(BLAS_ENTRIES / (max(1, state_maps) * (1 + hidden / BLAS_HIDDEN)))


_PRODUCTS = re.compile(r"\b_(add_transposed_product|add_product|product|add_rows)\(")


def blas(line: str) -> str:
    """A driver's statement with its compiled products replaced by the BLAS ones (``_blas_…``)."""
    return _PRODUCTS.sub(r"_blas_\1(", line)


def implementations(positional: bool) -> dict[str, str]:
    """Public name → the name of the function that implements it (``cell_backend``'s ``impl``)."""
    return {name: f"_dict_{name}" if positional else name for name in PUBLIC}


def copied(numpy_source: str, positional: bool = False) -> dict[str, str]:
    """The NumPy module's constants, its ``init_params``/validation functions and, for a cell with
    positional parameters, its public wrappers, as source.

    ``constants``: every module-level assignment (CELL, STEPS, MODE, …, PARAMS, STORED, POSITIONAL)
    with the comment lines directly above it; ``functions``: ``COPIED_FUNCTIONS`` and the functions
    they call; ``wrappers``: ``_call`` and the public functions of the positional form (empty for
    other cells), which call only what is copied here and the dict implementations.
    """
    tree = ast.parse(numpy_source)
    lines = numpy_source.splitlines()
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    wanted = function_closure(functions, COPIED_FUNCTIONS)
    wrappers = (*WRAPPER_HELPERS, *PUBLIC) if positional else ()
    impl = set(implementations(positional).values())
    for name in wrappers:
        calls = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)} & set(functions)
        stray = calls - wanted - set(wrappers) - impl
        assert not stray, f"the NumPy module's {name} calls {sorted(stray)}, which the Numba module lacks"
    constants = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            first = node.lineno - 1
            while first > 0 and lines[first - 1].startswith("#:"):
                first -= 1  # the comment that documents the constant
            constants.append("\n".join(lines[first : node.end_lineno]))
    return {
        "constants": "\n".join(constants),
        "functions": "\n\n\n".join(
            ast.get_source_segment(numpy_source, node)
            for node in tree.body
            if getattr(node, "name", None) in wanted
        ),
        "wrappers": "\n\n\n".join(
            ast.get_source_segment(numpy_source, node)
            for node in tree.body
            if getattr(node, "name", None) in wrappers
        ),
    }


@dataclass
class Group:
    """The linear maps applied to one operand, stacked in the order of the derivation's linears."""

    label: str  # "x", a previous state "h_prev" or a node name
    kind: str  # "x", "state" or "node"
    symbols: list = field(default_factory=list)  # the per-unit symbols M@u, one per slot
    matrices: list = field(default_factory=list)  # the parameter of each slot
    deltas: list = field(default_factory=list)  # δ(M u) of each slot: a symbol, or 0
    array: str = ""  # the (span, B, G·H) array of its δs: its own, or an earlier group's (same δs)
    stored: bool = False  # the maps of every step are kept (the backward pass reads them)

    @property
    def count(self) -> int:
        return len(self.symbols)


def _int64_safe(expr: sp.Expr) -> sp.Expr:
    """expr with every rational whose numerator or denominator a 64-bit integer cannot hold as a
    float (Numba types an integer literal as int64 and refuses a longer one), and every constant
    e^k (SymPy's e·e) as a float, not a call of the kernels' exp."""
    limit = 2**63 - 1
    big = {r: sp.Float(r, 20) for r in expr.atoms(sp.Rational) if abs(r.p) > limit or r.q > limit}
    big |= {e: sp.Float(e.evalf(20), 20) for e in expr.atoms(sp.exp) if not e.free_symbols}
    return expr.xreplace(big) if big else expr


def _local(symbol) -> str:
    """A kernel's local name for a per-unit symbol: M@u → M_u; a kernel's own name gets a trailing _."""
    name = str(symbol).replace("@", "_")
    if name in KERNEL_NAMES or keyword.iskeyword(name) or hasattr(builtins, name):
        return name + "_"
    return name


#: The line length of ``ruff format`` (pyproject.toml): the generated module is stable under it.
LINE_LENGTH = 110


def layout(head: str, items: list[str], indent: int, tail: str = "", brackets: str = "()") -> str:
    """``head(item, …)tail`` laid out as ``ruff format`` does: on one line if it fits, else the items
    on one line of their own inside the brackets, else one item a line with a trailing comma."""
    pad, inner = " " * indent, " " * (indent + 4)
    opening, closing = brackets
    line = f"{pad}{head}{opening}{', '.join(items)}{closing}{tail}"
    if len(line) <= LINE_LENGTH:
        return line.lstrip()
    if len(inner + ", ".join(items)) <= LINE_LENGTH:
        return f"{head}{opening}\n{inner}{', '.join(items)}\n{pad}{closing}{tail}"
    return f"{head}{opening}\n" + "".join(f"{inner}{item},\n" for item in items) + f"{pad}{closing}{tail}"


def _sums(array: str) -> str:
    """The name of the sums over a δ array's rows: deltas_x → sums_x."""
    return array.replace("deltas_", "sums_", 1)


def _column(slot: int) -> str:
    """The column of unit k in slot ``slot`` of a stacked (…, G·H) array."""
    return "k" if slot == 0 else f"{slot} * hidden + k"


def context(
    model, mode: str, command: str, numpy_source: str, derivation: CellDerivation | None = None
) -> dict:
    """Everything ``templates/numba/cell.py.j2`` places: names, printed statements. No SymPy objects.

    ``numpy_source`` is the NumPy module for the same model and mode (``cell_backend``); its
    constants, ``init_params`` and validation are copied, and its ``bptt_terms`` (with what it calls).
    """
    from ..cells import cell_of

    d = derivation or derive_cell(cell_of(model))
    assert d.mutation is None and d.transpose and d.batch_mean, "only the exact derivation is compiled"
    tree = ast.parse(numpy_source)
    constants = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
    }
    numpy_stored = list(ast.literal_eval(constants["STORED"]))  # the NumPy module's stored values
    printer = NumbaScalarPrinter()  # the per-sequence outputs: exact f (σ of the logit)
    kernel = CellKernelPrinter()  # the entry-by-entry kernels: f without libm for real arguments
    node_names = [node.name for node in d.nodes]
    node_of = {node.symbol: node for node in d.nodes}
    previous = {symbol: state for state, symbol in d.previous.items()}
    vectors = sorted(d.symbols["vectors"])
    vector_index = {sp.Symbol(name): k for k, name in enumerate(vectors)}
    incoming = {symbol: k for k, symbol in enumerate(d.incoming.values())}
    states = list(d.states)

    # -- the linear maps, stacked by operand ----------------------------------------------------------
    groups: list[Group] = []
    for linear in d.linears:
        group = next((g for g in groups if g.label == linear.operand), None)
        if group is None:
            kind = "x" if linear.operand == "x" else ("node" if linear.operand in node_names else "state")
            group = Group(linear.operand, kind)
            groups.append(group)
        group.symbols.append(linear.symbol)
        group.matrices.append(linear.matrix)
        group.deltas.append(d.symbols["linear_delta"][linear.symbol])
    order = {"x": 0, "state": 1, "node": 2}
    groups.sort(key=lambda g: order[g.kind])
    slot_of = {symbol: (group, k) for group in groups for k, symbol in enumerate(group.symbols)}

    # What the backward pass reads of the forward pass.
    backward_exprs = [a.expr for a in (*d.adjoints, *d.sent.values())]
    backward_exprs += [term[1] for terms in d.gradients.values() for term in terms if term[0] == "sum"]
    read = set().union(*(sp.sympify(e).free_symbols for e in backward_exprs))
    for group in groups:
        group.stored = bool(set(group.symbols) & read)
    # δ arrays: one per group, shared with an earlier group that holds the same δs in the same order
    homes: dict = {}  # δ symbol → (array, slot) where the gradient sums read it
    for group in groups:
        twin = next((g for g in groups if g.array and g.deltas == group.deltas), None)
        if twin is not None:
            group.array = twin.array
            continue
        group.array = f"deltas_{group.label}"
        for k, delta in enumerate(group.deltas):
            if delta != 0:
                homes.setdefault(delta, (group.array, k))
    arrays = [g for g in groups if g.array == f"deltas_{g.label}"]

    # -- forward: the step cut after each node whose maps are a product --------------------------------
    stored = list(numpy_stored)
    product_after = {g.label: g for g in groups if g.kind == "node"}
    parts: list[list] = [[]]
    for node in d.nodes:
        parts[-1].append(node)
        if node.name in product_after and node is not d.nodes[-1]:
            parts.append([])
    part_of = {node.name: p for p, nodes in enumerate(parts) for node in nodes}
    for p, nodes in enumerate(parts):
        for node in nodes:
            for symbol in node.expr.free_symbols:
                if symbol in node_of and part_of[str(symbol)] < p and str(symbol) not in stored:
                    stored.append(str(symbol))  # read by a later part: kept for the step
    row = {name: k for k, name in enumerate(stored)}
    state_row = {state: row[d.state_node(state).name] for state in states}

    def code(expr, names: dict) -> str:
        return kernel.doprint(_int64_safe(sp.sympify(expr).xreplace(names)))

    def names_of(expr) -> dict:
        return {symbol: sp.Symbol(_local(symbol)) for symbol in sp.sympify(expr).free_symbols}

    def ordered(symbols) -> list:
        return sorted(symbols, key=sp.default_sort_key)

    # The maps the forward step reads, each from a product (those of x_t too, one product per step,
    # so the loops over units read contiguous rows and vectorise): (B, G·H) for this step, or
    # (n, B, G·H) kept for the backward pass.
    mapped = list(groups)

    def view(group: Group) -> str:
        return f"maps_{group.label}[t - 1]" if group.stored else f"maps_{group.label}"

    forward_parts = []
    for p, nodes in enumerate(parts):
        defined = {node.symbol for node in nodes}
        needed = set().union(*(node.expr.free_symbols for node in nodes)) - defined
        loads, lines = [], []
        for symbol in ordered(needed):
            name = _local(symbol)
            if symbol in previous:
                loads.append(f"{name} = values[{state_row[previous[symbol]]}, t - 1, b, k]")
            elif symbol in vector_index:
                loads.append(f"{name} = vectors[{vector_index[symbol]}, k]")
            elif symbol in node_of:
                loads.append(f"{name} = values[{row[str(symbol)]}, t, b, k]")
            else:
                group, slot = slot_of[symbol]
                loads.append(f"{name} = maps_{group.label}[b, {_column(slot)}]")
        for node in nodes:
            lines.append(f"{_local(node.symbol)} = {code(node.expr, names_of(node.expr))}")
            if node.name in row:
                lines.append(f"values[{row[node.name]}, t, b, k] = {_local(node.symbol)}")
        after = None
        if nodes[-1].name in product_after and nodes[-1] is not d.nodes[-1]:  # the maps a later part reads
            group = product_after[nodes[-1].name]
            after = (
                f"_product(values[{row[group.label]}, t], weights_{group.label}_transposed, {view(group)})"
            )
        forward_parts.append({"loads": loads, "lines": lines, "after": after})

    # -- backward: the step cut before each adjoint with a transpose product ----------------------------
    adjoint_of = {a.symbol: a for a in d.adjoints}
    transposed_index = {a.name: k for k, a in enumerate(a for a in d.adjoints if a.transposed)}
    # slots written with a δ that is no adjoint (0, or an alias of an incoming δ): in the first piece
    writes_of: dict = {}
    for group in arrays:
        for k, delta in enumerate(group.deltas):
            writes_of.setdefault(delta, []).append(f"{group.array}[b, {_column(k)}]")
    pieces: list[list] = [[]]
    for adjoint in d.adjoints:
        if adjoint.transposed:  # its product reads δ(M u) of every unit, written by the pieces before
            pieces.append([])
        pieces[-1].append(adjoint)
    if not pieces[0] and len(pieces) > 1 and all(delta in adjoint_of for delta in writes_of):
        pieces.pop(0)  # nothing to write before the first product
    piece_of = {a.symbol: p for p, adjoints in enumerate(pieces) for a in adjoints}
    last = len(pieces) - 1
    sums = {name: terms[0][1] for name, terms in d.gradients.items() if terms[0][0] == "sum"}
    summed = [name for name, expr in sums.items() if expr != 0 and expr not in homes]

    def piece_exprs(p: int) -> list:
        exprs = [a.expr for a in pieces[p]]
        if p == last:
            exprs += [a.expr for a in d.sent.values()] + [sums[name] for name in summed]
        if p == 0:
            exprs += [delta for delta in writes_of if delta != 0 and delta not in adjoint_of]
        return exprs

    kept = []  # adjoints read by a later piece that live in no δ array
    for p in range(len(pieces)):
        for symbol in set().union(*(sp.sympify(e).free_symbols for e in piece_exprs(p))):
            if symbol in adjoint_of and piece_of[symbol] < p and symbol not in homes and symbol not in kept:
                kept.append(symbol)

    backward_parts = []
    for p, adjoints in enumerate(pieces):
        defined = {a.symbol for a in adjoints}
        needed = set().union(*(sp.sympify(e).free_symbols for e in piece_exprs(p))) - defined
        loads, lines = [], []
        for symbol in ordered(needed):
            name = _local(symbol)
            if symbol in incoming:
                loads.append(f"{name} = incoming[{incoming[symbol]}, b, k]")
            elif symbol in previous:
                loads.append(f"{name} = values[{state_row[previous[symbol]]}, t - 1, b, k]")
            elif symbol in node_of:
                assert str(symbol) in row, f"the backward pass reads {symbol}, which is not stored"
                loads.append(f"{name} = values[{row[str(symbol)]}, t, b, k]")
            elif symbol in vector_index:
                loads.append(f"{name} = vectors[{vector_index[symbol]}, k]")
            elif symbol in slot_of:
                group, slot = slot_of[symbol]
                assert group.stored, symbol
                loads.append(f"{name} = maps_{group.label}[b, {_column(slot)}]")
            elif symbol in homes:
                array, slot = homes[symbol]
                loads.append(f"{name} = {array}[b, {_column(slot)}]")
            else:
                loads.append(f"{name} = kept[{kept.index(symbol)}, b, k]")
        if p == 0:
            for delta, targets in writes_of.items():
                if delta == 0 or delta not in adjoint_of:
                    value = "0.0" if delta == 0 else _local(delta)
                    lines.extend(f"{target} = {value}" for target in targets)
        for adjoint in adjoints:
            name = _local(adjoint.symbol)
            terms = [code(adjoint.expr, names_of(adjoint.expr))] if adjoint.expr != 0 else []
            if adjoint.transposed:
                terms.append(f"transposed[{transposed_index[adjoint.name]}, b, k]")
            lines.append(f"{name} = {' + '.join(terms)}")
            lines.extend(f"{target} = {name}" for target in writes_of.get(adjoint.symbol, ()))
            if adjoint.symbol in kept:
                lines.append(f"kept[{kept.index(adjoint.symbol)}, b, k] = {name}")
        if p == last:
            for j, name in enumerate(summed):
                lines.append(f"sums[{j}, b, k] += {code(sums[name], names_of(sums[name]))}")
            for state, adjoint in d.sent.items():
                value = code(adjoint.expr, names_of(adjoint.expr)) if adjoint.expr != 0 else "0.0"
                if adjoint.expr != 0 or not adjoint.transposed:
                    lines.append(f"incoming[{states.index(state)}, b, k] = {value}")
        before = None
        if adjoints and adjoints[0].transposed:
            group = next(g for g in groups if g.label == adjoints[0].name)
            before = (
                f"_product({group.array}[slot], weights_{group.label}, "
                f"transposed[{transposed_index[adjoints[0].name]}])"
            )
        backward_parts.append({"loads": loads, "lines": lines, "before": before})

    # δs_(t−1) through the maps of s_(t−1): one product per state and step, after the pieces
    sent_products = []
    for state, adjoint in d.sent.items():
        if adjoint.transposed:
            group = next(g for g in groups if g.label == str(d.previous[state]))
            function = "_add_product" if adjoint.expr != 0 else "_product"
            sent_products.append(
                f"{function}({group.array}[slot], weights_{group.label}, incoming[{states.index(state)}])"
            )

    # ∂L/∂M: the rows of a span of steps against their operands, one product per group; the sums
    # of the per-unit parameters whose δ lives in a δ array
    homed_sums = [
        g.array for g in arrays if any(expr in homes and homes[expr][0] == g.array for expr in sums.values())
    ]
    flush = [f"rows_{g.label} = {g.array}[:count].reshape(count * batch, {g.count} * hidden)" for g in arrays]
    for group in groups:
        if group.kind == "x":
            operand = "x[t - 1 : t - 1 + count].reshape(count * batch, x.shape[2])"
        elif group.kind == "state":
            state = state_row[previous[sp.Symbol(group.label)]]
            operand = f"values[{state}, t - 1 : t - 1 + count].reshape(count * batch, hidden)"
        else:
            operand = f"values[{row[group.label]}, t : t + count].reshape(count * batch, hidden)"
        owner = next(g for g in arrays if g.array == group.array)
        flush.append(f"operand_{group.label} = {operand}")
        flush.append(
            f"_add_transposed_product(rows_{owner.label}, operand_{group.label}, grad_{group.label})"
        )
    for array in homed_sums:
        owner = next(g for g in arrays if g.array == array)
        flush.append(f"_add_rows(rows_{owner.label}, {_sums(array)})")

    # Argument lists: the drivers' and the parts'
    forward_arguments = ["x", *(f"weights_{g.label}_transposed" for g in groups), "vectors"]
    stored_maps = [f"maps_{g.label}" for g in groups if g.stored]
    backward_arguments = [
        "x",
        "values",
        *stored_maps,
        *(f"weights_{g.label}" for g in groups if g.kind != "x"),
        "vectors",
        "incoming",
        "span",
    ]
    forward_part = [
        "vectors",
        "values",
        *(f"maps_{g.label}" for g in mapped),
        "t",
        "chunk",
    ]
    backward_part = [
        "values",
        "vectors",
        "incoming",
        *stored_maps,
        *(g.array for g in arrays),
        "transposed",
        "kept",
        "sums",
        "t",
        "chunk",
    ]
    forward_call = [
        "vectors",
        "values",
        *(view(g) for g in mapped),
        "t",
        "chunk",
    ]
    backward_call = [
        "values",
        "vectors",
        "incoming",
        *(f"{name}[t - 1]" for name in stored_maps),
        *(f"{g.array}[slot]" for g in arrays),
        "transposed",
        "kept",
        "sums",
        "t",
        "chunk",
    ]
    backward_driver_call = [
        name
        if name in ("x", "values", "incoming", *stored_maps)
        else "_span(batch, steps)"
        if name == "span"
        else f'w["{name}"]'
        for name in backward_arguments
    ]
    input_products = [
        f"_product(x[t - 1], weights_{g.label}_transposed, {view(g)})" for g in groups if g.kind == "x"
    ]
    state_products = [
        f"_product(values[{state_row[previous[sp.Symbol(g.label)]]}, t - 1], weights_{g.label}_transposed, {view(g)})"
        for g in groups
        if g.kind == "state"
    ]
    allocations = [
        f"maps_{g.label} = np.zeros(({'steps, ' if g.stored else ''}batch, {g.count} * hidden), x.dtype)"
        for g in mapped
    ]
    H = model.hidden

    def span(slot: int) -> str:
        return f"{slot * H}:{(slot + 1) * H}" if slot else f":{H}"

    # The gradients, from the kernel's sums scaled by 1/B in place (one division per array, the
    # parameters' gradients are views of their rows)
    scaled = [f"grad_{group.label}" for group in groups] + [_sums(array) for array in homed_sums]
    gradients = []
    for name in d.parameters:
        if name == d.cell.readout:
            gradients.append((name, "grad_readout"))
        elif name == d.cell.readout_bias:
            gradients.append((name, "np.asarray(grad_readout_bias)"))  # a () array, as NumPy's
        elif name in sums:
            expr = sums[name]
            if expr == 0:
                gradients.append((name, "np.zeros(HIDDEN_SIZE, x.dtype)"))
            elif expr in homes:
                array, slot = homes[expr]
                gradients.append((name, f"{_sums(array)}[{span(slot)}]"))
            else:
                gradients.append((name, f"sums[{summed.index(name)}].sum(axis=0) / batch"))
        else:
            parts_of = [
                f"grad_{group.label}[{span(slot)}]"
                for group in groups
                for slot, matrix in enumerate(group.matrices)
                if matrix == name
            ]
            gradients.append((name, " + ".join(parts_of)))

    # _compiled_arguments: the maps of each operand stacked, the per-unit parameters as rows
    # (the maps of x only transposed, for the forward products; one matrix or vector is not stacked)
    stacking = []
    for group in groups:
        name = f"weights_{group.label}"
        if len(group.matrices) == 1:
            stacked = f'p["{group.matrices[0]}"]'
        else:
            stacking.append(layout(f"{name} = ", [f'p["{m}"]' for m in group.matrices], 4, brackets="[]"))
            stacked = f"np.concatenate({name})"
        if group.kind == "x":
            stacking.append(f'w["{name}_transposed"] = np.ascontiguousarray({stacked}.T, dtype=dtype)')
            continue
        stacking.append(f'w["{name}"] = np.ascontiguousarray({stacked}, dtype=dtype)')
        stacking.append(f'w["{name}_transposed"] = np.ascontiguousarray(w["{name}"].T)')
    if len(vectors) == 1:
        stacking.append(f'w["vectors"] = np.ascontiguousarray(p["{vectors[0]}"], dtype=dtype)[np.newaxis]')
    elif vectors:
        stacking.append(layout("vectors = ", [f'p["{name}"]' for name in vectors], 4, brackets="[]"))
        stacking.append('w["vectors"] = np.ascontiguousarray(np.stack(vectors), dtype=dtype)')
    else:
        stacking.append('w["vectors"] = np.zeros((0, HIDDEN_SIZE), dtype)')
    for part in forward_parts:
        part["call"] = layout(
            f"_forward_part_{len([q for q in forward_parts if 'call' in q]) + 1}", forward_call, 12
        )
    for part in backward_parts:
        part["call"] = layout(
            f"_backward_part_{len([q for q in backward_parts if 'call' in q]) + 1}", backward_call, 12
        )
    for k, part in enumerate(forward_parts, 1):
        part["signature"] = layout(f"def _forward_part_{k}", forward_part, 0, ":")
    for k, part in enumerate(backward_parts, 1):
        part["signature"] = layout(f"def _backward_part_{k}", backward_part, 0, ":")
    # the BLAS drivers call each part once per step: a compiled sweep over the chunks of sequences
    for stage, parts, names, call in (
        ("forward", forward_parts, forward_part, forward_call),
        ("backward", backward_parts, backward_part, backward_call),
    ):
        for k, part in enumerate(parts, 1):
            part["sweep_signature"] = layout(f"def _{stage}_sweep_{k}", names[:-1], 0, ":")
            part["sweep_inner_call"] = layout(f"_{stage}_part_{k}", names, 8)
            part["sweep_call"] = layout(f"_{stage}_sweep_{k}", call[:-1], 8)

    positional = bool(d.cell.positional)
    impl = implementations(positional)
    missing = [
        name for name in impl.values() if name not in {n.name for n in tree.body if hasattr(n, "name")}
    ]
    assert not missing, f"the NumPy module lacks {missing}: the implementations are named as in cell_backend"
    y_hat, y = d.symbols["y_hat"], d.symbols["y"]
    output_factor_code = printer.doprint(
        d.output_factor.xreplace({y_hat: sp.Symbol("y_hat"), y: sp.Symbol("y")})
    )
    helpers = printer.helpers | kernel.helpers
    return {
        "command": command,
        "mode": mode,
        "steps": model.steps if mode == "unrolled" else None,
        "cell": d.cell.name,
        # the NumPy module's docstring after its first line: the equations and the gradient formulas
        # (its text as written again: a cell's description may hold backslashes and quotes)
        "formulas": ast.get_docstring(tree, clean=False).split("\n", 1)[1].rstrip()
        .replace("\\", "\\\\").replace('"""', '\\"\\"\\"'),
        "readout": d.cell.readout,
        "readout_bias": d.cell.readout_bias,
        "output_state": d.output_state,
        "output_row": state_row[d.output_state],
        "output_index": states.index(d.output_state),
        "states": states,
        "stored": stored,
        "stored_count": len(numpy_stored),
        "vectors": vectors,
        "groups": [
            {
                "label": g.label,
                "kind": g.kind,
                "matrices": g.matrices,
                "count": g.count,
                "array": g.array,
                "stored": g.stored,
                "size": "INPUT_SIZE" if g.kind == "x" else "HIDDEN_SIZE",
            }
            for g in groups
        ],
        "arrays": [{"name": g.array, "count": g.count} for g in arrays],
        "homed_sums": [
            {"array": array, "name": _sums(array), "count": next(g.count for g in arrays if g.array == array)}
            for array in homed_sums
        ],
        "flush": flush,
        "forward_arguments": forward_arguments,
        "backward_arguments": backward_arguments,
        "forward_part": forward_part,
        "backward_part": backward_part,
        "forward_call": forward_call,
        "backward_call": backward_call,
        "input_products": input_products,
        "state_products": state_products,
        "allocations": allocations,
        "stored_maps": stored_maps,
        "signatures": {
            f"{stage}_{kind}": layout(f"def _{stage}_{kind}", arguments, 0, ":")
            for stage, arguments in (("forward", forward_arguments), ("backward", backward_arguments))
            for kind in ("serial", "blas")
        },
        "forward_kernel_call": layout(
            "return forward_kernel", ["x", *(f'w["{name}"]' for name in forward_arguments[1:])], 4
        ),
        "backward_kernel_call": layout(
            f"{', '.join([*(f'grad_{g.label}' for g in groups), *map(_sums, homed_sums), 'sums' if summed else '_'])}"
            " = backward_kernel",
            backward_driver_call,
            4,
        ),
        "stacking": stacking,
        "scaled": scaled,
        # the kernels return tuples: (values, the stored maps), (∂L/∂M per operand, the sums)
        "forward_targets": f"({', '.join(['values', *stored_maps])}{',' if not stored_maps else ''})",
        "backward_targets": ", ".join(
            [*(f"grad_{g.label}" for g in groups), *map(_sums, homed_sums), "sums"]
        ),
        "summed": summed,
        "kept": len(kept),
        "transposed": len(transposed_index),
        "forward_parts": forward_parts,
        "backward_parts": backward_parts,
        "sent_products": sent_products,
        "gradients": [{"name": name, "code": value} for name, value in gradients],
        "output_factor_code": output_factor_code,
        "rows": ROWS,
        "span_rows": SPAN_ROWS,
        "blas_entries": blas_entries(
            sum(g.count for g in groups if g.kind == "state"), model.hidden
        ),
        "blas": blas,
        "same": lambda line: line,
        "impl": impl,
        "impl_signatures": {
            name: layout(f"def {impl[name]}", arguments + (NAMED if positional else []), 0,
                         f" -> {returns}:")
            for name, (arguments, returns) in SIGNATURES.items()
        },
        "positional": positional,
        # the NumPy module's bptt_terms, prefixed _numpy_, with what it calls
        "numpy_impl": {"bptt_terms": PREFIX + impl["bptt_terms"].lstrip("_")},
        "vectorised": vectorised(numpy_source, (impl["bptt_terms"],), COPIED_FUNCTIONS),
        **copied(numpy_source, positional),
        "uses_relu": "relu" in helpers,
        "uses_heaviside": "heaviside" in helpers,
        "uses_tanh": "tanh" in helpers,
        "uses_logistic": "logistic" in helpers,
        "uses_exp": "exp" in helpers,
        "real_functions": [REAL_FUNCTIONS[name] for name in sorted(helpers & set(REAL_FUNCTIONS))],
    }


__all__ = [
    "BLAS_ENTRIES",
    "BLAS_HIDDEN",
    "PUBLIC",
    "ROWS",
    "SPAN_ROWS",
    "blas",
    "blas_entries",
    "context",
    "copied",
    "implementations",
]
