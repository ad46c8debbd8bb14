"""The Numba printer of a cell's layout (``layout.Layout``): the entry-by-entry statements of the
compiled parts of ``templates/numba/cell.py.j2``, expressions printed by ``CellKernelPrinter`` (f
without libm for real arguments).

The layout decides the maps, the stored values, the δ slots and where a step is cut (``parts``); this
module writes them for kernels that loop over sequences b and units k: every value a part reads is
loaded from its array at (b, k), every value a later part or the backward pass reads is written back.
The backward step is cut the same way, before each adjoint whose transpose product reads δ(M u) of
every unit (``pieces``).

A state read K steps back (the layout's ``reads``) is loaded from row max(t − K, 0) (row 0: the initial
0; in the vjp's step, ``Step.upstream``, row 0 is a given s_0 and the row is max(t − K, −1), the zero row
after row n); what a step sends to s_(t−K) waits in more rows of ``incoming`` (a ring per lag, row t mod K, the rings
interleaved so that they take min(K, n + 1) rows each whatever n: K may be far beyond the sequence),
which step t − K adds to what step t − K + 1 sent.
"""

from __future__ import annotations

import builtins
import keyword

import sympy as sp

from .layout import Layout, MapGroup, Step
from .numba_backend import CellKernelPrinter

#: Names the compiled kernels use for themselves (arguments, indices, helpers): a cell's name that is
#: one of them, a keyword or a builtin is printed with a trailing underscore (IndRNN's b → b_), which
#: no cell name can end with.
KERNEL_NAMES = frozenset(
    {
        "b", "k", "t", "x", "chunk", "first", "hidden", "values", "vectors", "incoming", "transposed", "kept",
        "sums", "slot", "span", "steps", "batch", "count", "rows", "np", "numba", "prange", "njit",
    }
)


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


def deltas(group: MapGroup) -> str:
    """The (span, B, G·H) array of a group's δs: its own, or the earlier group's it shares."""
    return f"deltas_{group.owner}"


def sums_of(array: str) -> str:
    """The name of the sums over a δ array's rows: deltas_x → sums_x."""
    return array.replace("deltas_", "sums_", 1)


def _column(slot: int) -> str:
    """The column of unit k in slot ``slot`` of a stacked (…, G·H) array."""
    return "k" if slot == 0 else f"{slot} * hidden + k"


def call(function: str, arguments: str) -> dict:
    """A product or sum the drivers call: the template names it (``_blas…`` in the BLAS drivers)."""
    return {"function": function, "arguments": arguments}


def statement(text: str) -> dict:
    """A driver's statement that is the same in both drivers."""
    return {"text": text}


def _ordered(symbols) -> list:
    return sorted(symbols, key=sp.default_sort_key)


def _free(exprs) -> set:
    return set().union(*(sp.sympify(e).free_symbols for e in exprs))


class NumbaCellPrinter:
    """Writes one layout as the compiled parts' statements (``forward_parts``, ``backward_parts``)
    and the products and sums around them, for the loop's ``step`` (the layout's, or its vjp's)."""

    def __init__(self, lay: Layout, step: Step | None = None):
        self.lay = lay
        self.step = lay.forward_order(None)[0] if step is None else step
        d = self.d = lay.derivation
        self.kernel = CellKernelPrinter()  # the entry-by-entry kernels: f without libm for real arguments
        self.node_of = {node.symbol: node for node in d.nodes}
        self.previous = {symbol: state for state, symbol in d.previous.items()}
        self.reads = {sp.Symbol(operand): read for operand, read in lay.reads.items()}   # s_(t−K) → (state, K)
        self.vectors = sorted(d.symbols["vectors"])
        self.vector_index = {sp.Symbol(name): k for k, name in enumerate(self.vectors)}
        self.incoming = {symbol: k for k, symbol in enumerate(d.incoming.values())}
        self.states = list(d.states)
        # (state, K) → the ring's index j: its row r is row S + j + r·J of ``incoming`` (S states, J rings)
        self.rings: dict = {(state, lag): j for j, (state, lag, _) in enumerate(lay.rings)}
        rows = len(self.states)
        if self.rings:   # row t mod K is below min(K, n + 1) for every step t ≤ n
            rows = f"{rows} + {len(self.rings)} * min({max(lag for _, lag in self.rings)}, steps + 1)"
        self.incoming_rows = rows
        self.groups = lay.groups
        self.arrays = list(lay.owners)
        self.slot_of = {symbol: (group, k) for group in self.groups for k, symbol in enumerate(group.symbols)}
        self.homes = {delta: (deltas(lay.group(owner)), k) for delta, (owner, k) in lay.homes(False).items()}
        node_named = {node.name: node for node in d.nodes}
        self.parts = [[node_named[name] for name in part] for part in lay.parts]
        self.stored = self._kept_values()
        self.row = {name: k for k, name in enumerate(self.stored)}
        self.state_row = {state: self.row[d.state_node(state).name] for state in self.states}
        self._cut_backward()

    def _kept_values(self) -> list[str]:
        """The layout's stored values, then any node a later part of the step reads (kept for the step)."""
        stored = list(self.lay.stored)
        part_of = {node.name: p for p, nodes in enumerate(self.parts) for node in nodes}
        for p, nodes in enumerate(self.parts):
            for node in nodes:
                for symbol in node.expr.free_symbols:
                    if symbol in self.node_of and part_of[str(symbol)] < p and str(symbol) not in stored:
                        stored.append(str(symbol))
        return stored

    def code(self, expr) -> str:
        names = {symbol: sp.Symbol(_local(symbol)) for symbol in sp.sympify(expr).free_symbols}
        return self.kernel.doprint(_int64_safe(sp.sympify(expr).xreplace(names)))

    def time(self, symbol) -> str:
        """The row of a state read, s_(t−K): t − 1, or max(t − K, 0) (row 0: the initial 0); in the vjp,
        where row 0 is a given s_0, max(t − K, −1): before s_0 the zero row after row n."""
        lag = self.reads[symbol][1]
        if lag == 1:
            return "t - 1"
        return f"max(t - {lag}, -1)" if self.step.upstream else f"max(t - {lag}, 0)"

    def ring(self, state: str, lag: int) -> str:
        """The row of ``incoming`` that step t reads what step t + K sent to s_t from, then writes what
        it sends to s_(t−K) into."""
        first, count = len(self.states) + self.rings[(state, lag)], len(self.rings)
        return f"{first} + t % {lag}" if count == 1 else f"{first} + (t % {lag}) * {count}"

    @property
    def reads_lagged_values(self) -> bool:
        """A part loads some s_(t−K), K ≥ 2, itself (not only its maps): the rows it reads depend on the step."""
        lagged = {symbol for symbol, (_, lag) in self.reads.items() if lag > 1}
        d = self.d
        exprs = [*(node.expr for node in d.nodes), *(a.expr for a in (*d.adjoints, *d.sent.values(), *d.sent_lagged.values()))]
        exprs += [terms[0][1] for terms in d.gradients.values() if terms[0][0] == "sum"]
        return bool(lagged & _free(exprs))

    def view(self, group: MapGroup) -> str:
        """A group's maps in the step: row t − 1 of those kept for the backward pass, else this step's."""
        return f"maps_{group.label}[t - 1]" if group.reads_maps else f"maps_{group.label}"

    # -- forward ----------------------------------------------------------------------------------------

    def forward_parts(self) -> list[dict]:
        """Each part: what it loads at (b, k), its nodes, and the product after it a later part reads."""
        d, row = self.d, self.row
        product_after = {g.label: g for g in self.groups if g.kind == "node"}
        parts = []
        for nodes in self.parts:
            needed = _free(node.expr for node in nodes) - {node.symbol for node in nodes}
            loads, lines = [], []
            for symbol in _ordered(needed):
                name = _local(symbol)
                if symbol in self.reads:
                    state = self.reads[symbol][0]
                    loads.append(f"{name} = values[{self.state_row[state]}, {self.time(symbol)}, b, k]")
                elif symbol in self.vector_index:
                    loads.append(f"{name} = vectors[{self.vector_index[symbol]}, k]")
                elif symbol in self.node_of:
                    loads.append(f"{name} = values[{row[str(symbol)]}, t, b, k]")
                else:
                    group, slot = self.slot_of[symbol]
                    loads.append(f"{name} = maps_{group.label}[b, {_column(slot)}]")
            for node in nodes:
                lines.append(f"{_local(node.symbol)} = {self.code(node.expr)}")
                if node.name in row:
                    lines.append(f"values[{row[node.name]}, t, b, k] = {_local(node.symbol)}")
            after = None
            if nodes[-1].name in product_after and nodes[-1] is not d.nodes[-1]:  # the maps a later part reads
                group = product_after[nodes[-1].name]
                after = call("_product", f"values[{row[group.label]}, t], weights_{group.label}_transposed, "
                                         f"{self.view(group)}")
            parts.append({"loads": loads, "lines": lines, "after": after})
        return parts

    # -- backward ---------------------------------------------------------------------------------------

    def _cut_backward(self) -> None:
        """The backward step cut before each adjoint with a transpose product (``pieces``); the slots
        written with a δ that is no adjoint (``writes_of``); the per-unit parameters' sums; the
        adjoints a later piece reads that live in no δ array (``kept``)."""
        d = self.d
        self.adjoint_of = {a.symbol: a for a in d.adjoints}
        self.transposed_index = {a.name: k for k, a in enumerate(a for a in d.adjoints if a.transposed)}
        self.writes_of: dict = {}
        for group in self.arrays:
            for k, delta in enumerate(group.deltas):
                self.writes_of.setdefault(delta, []).append(f"{deltas(group)}[b, {_column(k)}]")
        pieces: list[list] = [[]]
        for adjoint in d.adjoints:
            if adjoint.transposed:  # its product reads δ(M u) of every unit, written by the pieces before
                pieces.append([])
            pieces[-1].append(adjoint)
        if not pieces[0] and len(pieces) > 1 and all(delta in self.adjoint_of for delta in self.writes_of):
            pieces.pop(0)  # nothing to write before the first product
        self.pieces = pieces
        self.sums = {name: terms[0][1] for name, terms in d.gradients.items() if terms[0][0] == "sum"}
        self.summed = [name for name, expr in self.sums.items() if expr != 0 and expr not in self.homes]
        piece_of = {a.symbol: p for p, adjoints in enumerate(pieces) for a in adjoints}
        self.kept = []
        for p in range(len(pieces)):
            for symbol in _free(self._piece_exprs(p)):
                if (symbol in self.adjoint_of and piece_of[symbol] < p and symbol not in self.homes
                        and symbol not in self.kept):
                    self.kept.append(symbol)

    def _piece_exprs(self, p: int) -> list:
        exprs = [a.expr for a in self.pieces[p]]
        if p == len(self.pieces) - 1:
            exprs += [a.expr for a in (*self.d.sent.values(), *self.d.sent_lagged.values())]
            exprs += [self.sums[name] for name in self.summed]
        if p == 0:
            exprs += [delta for delta in self.writes_of if delta != 0 and delta not in self.adjoint_of]
        return exprs

    def _backward_load(self, symbol) -> str:
        """The statement that loads ``symbol`` at (b, k) in a backward piece."""
        name = _local(symbol)
        if symbol in self.incoming:
            state = self.states[self.incoming[symbol]]
            # what step t + 1 sent, and what each step t + K sent
            rings = "".join(f" + incoming[{self.ring(state, lag)}, b, k]" for (s, lag) in self.rings if s == state)
            return f"{name} = incoming[{self.incoming[symbol]}, b, k]{rings}"
        if symbol in self.reads:
            return f"{name} = values[{self.state_row[self.reads[symbol][0]]}, {self.time(symbol)}, b, k]"
        if symbol in self.node_of:
            assert str(symbol) in self.row, f"the backward pass reads {symbol}, which is not stored"
            return f"{name} = values[{self.row[str(symbol)]}, t, b, k]"
        if symbol in self.vector_index:
            return f"{name} = vectors[{self.vector_index[symbol]}, k]"
        if symbol in self.slot_of:
            group, slot = self.slot_of[symbol]
            assert group.reads_maps, symbol
            return f"{name} = maps_{group.label}[b, {_column(slot)}]"
        if symbol in self.homes:
            array, slot = self.homes[symbol]
            return f"{name} = {array}[b, {_column(slot)}]"
        return f"{name} = kept[{self.kept.index(symbol)}, b, k]"

    def backward_parts(self) -> list[dict]:
        """Each piece: what it loads, its adjoints (written into their slots), and the transpose
        product before it."""
        d, last = self.d, len(self.pieces) - 1
        parts = []
        for p, adjoints in enumerate(self.pieces):
            needed = _free(self._piece_exprs(p)) - {a.symbol for a in adjoints}
            loads = [self._backward_load(symbol) for symbol in _ordered(needed)]
            lines = []
            if p == 0:
                for delta, targets in self.writes_of.items():
                    if delta == 0 or delta not in self.adjoint_of:
                        value = "0.0" if delta == 0 else _local(delta)
                        lines.extend(f"{target} = {value}" for target in targets)
            for adjoint in adjoints:
                name = _local(adjoint.symbol)
                terms = [self.code(adjoint.expr)] if adjoint.expr != 0 else []
                if adjoint.transposed:
                    terms.append(f"transposed[{self.transposed_index[adjoint.name]}, b, k]")
                lines.append(f"{name} = {' + '.join(terms)}")
                lines.extend(f"{target} = {name}" for target in self.writes_of.get(adjoint.symbol, ()))
                if adjoint.symbol in self.kept:
                    lines.append(f"kept[{self.kept.index(adjoint.symbol)}, b, k] = {name}")
            if p == last:
                for j, name in enumerate(self.summed):
                    lines.append(f"sums[{j}, b, k] += {self.code(self.sums[name])}")
                sent = [(str(self.states.index(state)), adjoint) for state, adjoint in d.sent.items()]
                sent += [(self.ring(state, lag), adjoint) for (state, lag), adjoint in d.sent_lagged.items()]
                for row, adjoint in sent:
                    value = self.code(adjoint.expr) if adjoint.expr != 0 else "0.0"
                    if adjoint.expr != 0 or not adjoint.transposed:
                        lines.append(f"incoming[{row}, b, k] = {value}")
            before = None
            if adjoints and adjoints[0].transposed:
                group = self.lay.group(adjoints[0].name)
                before = call("_product", f"{deltas(group)}[slot], weights_{group.label}, "
                                          f"transposed[{self.transposed_index[adjoints[0].name]}]")
            parts.append({"loads": loads, "lines": lines, "before": before})
        return parts

    def sent_products(self) -> list[dict]:
        """δs_(t−1) through the maps of s_(t−1), and δs_(t−K) through those of s_(t−K) into its ring:
        one product per state read and step, after the pieces."""
        d = self.d
        sent = [(state, 1, adjoint, str(self.states.index(state))) for state, adjoint in d.sent.items()]
        sent += [(state, lag, adjoint, self.ring(state, lag)) for (state, lag), adjoint in d.sent_lagged.items()]
        products = []
        for state, lag, adjoint, row in sent:
            if adjoint.transposed:
                group = self.lay.group(str(d.leaf(state, lag)))
                function = "_add_product" if adjoint.expr != 0 else "_product"
                products.append(call(function, f"{deltas(group)}[slot], weights_{group.label}, incoming[{row}]"))
        return products

    def state_products(self) -> list[dict]:
        """The maps of each state read, s_(t−1) or s_(t−K), for the whole batch: one product a step."""
        products = []
        for group in self.groups:
            if group.kind == "state":
                symbol = sp.Symbol(group.label)
                products.append(call("_product", f"values[{self.state_row[self.reads[symbol][0]]}, {self.time(symbol)}], "
                                                 f"weights_{group.label}_transposed, {self.view(group)}"))
        return products

    # -- the gradients ----------------------------------------------------------------------------------

    def homed_sums(self) -> list[str]:
        """The δ arrays whose rows a per-unit parameter's gradient sums."""
        return [deltas(g) for g in self.arrays
                if any(expr in self.homes and self.homes[expr][0] == deltas(g) for expr in self.sums.values())]

    def flush(self) -> list[dict]:
        """∂L/∂M: the rows of a span of steps against their operands, one product per group; the sums
        of the per-unit parameters whose δ lives in a δ array."""
        flush = [statement(f"rows_{g.label} = {deltas(g)}[:count].reshape(count * batch, {g.count} * hidden)")
                 for g in self.arrays]
        for group in self.groups:
            if group.kind == "x":
                operand = "x[t - 1 : t - 1 + count].reshape(count * batch, x.shape[2])"
            elif group.kind == "state" and self.lay.lag(group) > 1:
                flush += self._lagged_flush(group)
                continue
            elif group.kind == "state":
                state = self.state_row[self.previous[sp.Symbol(group.label)]]
                operand = f"values[{state}, t - 1 : t - 1 + count].reshape(count * batch, hidden)"
            else:
                operand = f"values[{self.row[group.label]}, t : t + count].reshape(count * batch, hidden)"
            flush.append(statement(f"operand_{group.label} = {operand}"))
            flush.append(call("_add_transposed_product", f"rows_{group.owner}, operand_{group.label}, grad_{group.label}"))
        for array in self.homed_sums():
            owner = next(g for g in self.arrays if deltas(g) == array)
            flush.append(call("_add_rows", f"rows_{owner.label}, {sums_of(array)}"))
        if self.step.upstream:   # the vjp's dx_t = Σ_M δ(M x)_t M over the span's steps
            x_group = self.lay.x_group
            flush.append(call("_product", f"rows_{x_group.owner}, weights_{x_group.label}, "
                                          "dx[t - 1 : t - 1 + count].reshape(count * batch, x.shape[2])"))
        return flush

    def _lagged_flush(self, group: MapGroup) -> list[dict]:
        """∂L/∂M += Σ δ(M s_(t−K)) s_(t−K)ᵀ over the steps of the span with t ≥ K (the last rows of the
        span's δs; at t < K, s_(t−K) is an initial 0)."""
        state, lag = self.lay.reads[group.label]
        row, operand, rows = self.state_row[state], f"operand_{group.label}", f"rows_{group.owner}"
        return [
            statement(f"{operand} = values[{row}, max(t - {lag}, 0) : max(t - {lag} + count, 0)].reshape(-1, hidden)"),
            statement(f"rows_{group.label} = {rows}[{rows}.shape[0] - {operand}.shape[0] :]"),
            call("_add_transposed_product", f"rows_{group.label}, {operand}, grad_{group.label}"),
        ]

    def gradients(self, hidden: int, scale: str = " / batch") -> list[dict]:
        """Each parameter's gradient from the kernels' sums (scaled by 1/B in place, views of their rows;
        a sum over the batch ``scale``d here: the vjp's are not)."""
        d = self.d

        def span(slot: int) -> str:
            return f"{slot * hidden}:{(slot + 1) * hidden}" if slot else f":{hidden}"

        gradients = []
        for name in d.parameters:
            if name == d.cell.readout:
                value = "grad_readout"
            elif name == d.cell.readout_bias:
                value = "np.asarray(grad_readout_bias)"  # a () array, as NumPy's
            elif name in self.sums and self.sums[name] == 0:
                value = "np.zeros(HIDDEN_SIZE, x.dtype)"
            elif name in self.sums and self.sums[name] in self.homes:
                array, slot = self.homes[self.sums[name]]
                value = f"{sums_of(array)}[{span(slot)}]"
            elif name in self.sums:
                value = f"sums[{self.summed.index(name)}].sum(axis=0){scale}"
            else:
                value = " + ".join(f"grad_{group.label}[{span(slot)}]" for group in self.groups
                                   for slot, matrix in enumerate(group.matrices) if matrix == name)
            gradients.append({"name": name, "code": value})
        return gradients


__all__ = ["KERNEL_NAMES", "NumbaCellPrinter", "deltas", "sums_of"]
