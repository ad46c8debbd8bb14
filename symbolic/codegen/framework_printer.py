"""What the torch and JAX printers share: a cell's layout written as two step functions, one per direction,
over arrays whose last axis is the unit (any leading axes: the batch, or none under ``vmap``).

* ``forward_step(projection_t, previous, p, weights) -> (states, saved)``: the maps of the states at
  t − 1 (one stacked product per group of the layout), then the nodes of the step in order;
* ``backward_step(saved, previous, incoming, p, weights) -> (sent, delta_maps, sums)``: the adjoints of
  the step in the derivation's order (the δ recursion as it is typeset), the δs of each owning group of
  maps stacked as one array, and what step t sends back to each state at t − 1 (Mᵀ δ(M s) one product
  per group). ``sums``: each per-unit parameter's term of the step.

A cell that reads a state K steps back (``Layout.reads``) gets s_(t−K) in ``previous`` after the states at
t − 1, and ``sent`` holds what step t sends to each s_(t−K) (``Layout.rings``) after what it sends to the
states at t − 1; the drivers keep the windows of past states and the rings of pending δs.

The drivers (templates/torch, templates/jax) run these over time and sum ∂L/∂M = Σ_t δ(M u)_t u_tᵀ per
group once at the end. A subclass names the framework's array functions (``concatenate``, ``split``,
``zeros``) and its SymPy printer (``printer``); nothing here names a cell.
"""

from __future__ import annotations

import re

import sympy as sp

from .layout import Layout, MapGroup


def _local(symbol) -> str:
    """A Python name for a per-unit symbol: M@u → M_u."""
    return str(symbol).replace("@", "_")


def _targets(names: list[str]) -> str:
    """Assignment targets unpacking a sequence: ``(a,)`` for one name, as ruff writes it."""
    return f"({names[0]},)" if len(names) == 1 else ", ".join(names)


def _unpack(names: list[str], source: str, body: list[str]) -> list[str]:
    """``a, _, c = source`` for the names ``body`` reads (``_`` for the others); nothing if it reads none."""
    text = "\n".join(body)
    used = [name if re.search(rf'(?<![\w"]){re.escape(name)}(?![\w"])', text) else "_" for name in names]
    return [f"{_targets(used)} = {source}"] if any(name != "_" for name in used) else []


def _tuple(items: list[str]) -> str:
    """A tuple display without a trailing comma ruff would keep open: ``(a,)``, ``(a, b)``, ``()``."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


class FrameworkCellPrinter:
    """Writes a layout's two step functions; subclasses give the framework's spelling."""

    #: A SymPy code printer (``doprint``) writing the framework's elementwise functions.
    printer = None

    def concatenate(self, items: list[str]) -> str:
        raise NotImplementedError

    def split(self, array: str, count: int, axis: int = -1) -> str:
        raise NotImplementedError

    def zeros(self, like: str) -> str:
        raise NotImplementedError

    def __init__(self, lay: Layout):
        d = self.d = lay.derivation
        assert d.transpose, "an exact derivation"
        self.lay = lay
        self.groups = lay.groups
        self.node_names = [node.name for node in d.nodes]
        # what the step reads: s_(t−1) of each state, then its s_(t−K) (STATES' order without lags)
        self.previous_names = list(lay.reads)
        self.incoming_names = [str(d.incoming[state]) for state in d.states]
        self.vectors = list(d.symbols["vectors"])
        self.saved = self._saved()
        readout = {d.cell.readout, d.cell.readout_bias}
        self.parameter_names = [name for name in d.parameters if name not in readout]

    def code(self, expr) -> str:
        names = {symbol: sp.Symbol(_local(symbol)) for symbol in sp.sympify(expr).free_symbols}
        return self.printer.doprint(sp.sympify(expr).xreplace(names))

    def _backward_reads(self) -> set:
        d = self.d
        read = set()
        for adjoint in (*d.adjoints, *d.sent.values(), *d.sent_lagged.values()):
            read |= adjoint.expr.free_symbols
            read |= {delta for _, delta in adjoint.transposed}
        for terms in d.gradients.values():
            read |= {symbol for term in terms for symbol in sp.sympify(term[1]).free_symbols}
        return read

    def _saved(self) -> list[str]:
        """The forward values of a step the backward step reads: nodes (and the operands of a node's maps,
        which ∂L/∂M reads), then maps; the previous states come apart, as the states' history."""
        read = {str(symbol) for symbol in self._backward_reads()}
        node_operands = {g.operand for g in self.groups if g.kind == "node"}
        nodes = [name for name in self.node_names if name in read or name in node_operands]
        maps = [_local(symbol) for g in self.groups for symbol in g.symbols if str(symbol) in read]
        return nodes + maps

    def _parameters(self, text: str) -> list[str]:
        """``b, c = p["b"], p["c"]`` for the per-unit parameters the lines read."""
        used = [name for name in self.vectors if re.search(rf"\b{re.escape(name)}\b", text)]
        if not used:
            return []
        values = ", ".join(f'p["{name}"]' for name in used)
        return [f"{used[0]} = {values}" if len(used) == 1 else f"{', '.join(used)} = {values}"]

    def _apply(self, group: MapGroup, source: str) -> str:
        """``M1_u, M2_u = split(u @ weights[u].T)``: the stacked maps of one operand."""
        product = f'{source} @ weights["{group.operand}"].T'
        names = [_local(symbol) for symbol in group.symbols]
        if len(names) == 1:
            return f"{names[0]} = {product}"
        return f"{', '.join(names)} = {self.split(f'({product})', len(names))}"

    # -- forward ------------------------------------------------------------------------------------------

    def forward_lines(self) -> list[str]:
        d, lines = self.d, []
        x_names = [_local(symbol) for symbol in self.lay.x_group.symbols]
        lines.append(f"{x_names[0]} = projection" if len(x_names) == 1
                     else f"{', '.join(x_names)} = {self.split('projection', len(x_names))}")
        for group in self.groups:
            if group.kind == "state":
                lines.append(self._apply(group, group.operand))
        for node in d.nodes:
            lines.append(f"{node.name} = {self.code(node.expr)}")
            for group in self.groups:
                if group.operand == node.name:
                    lines.append(self._apply(group, node.name))
        states = [d.state_node(state).name for state in d.states]
        lines.append(f"return {_tuple(states)}, {_tuple(self.saved)}")
        return self._parameters("\n".join(lines)) + _unpack(self.previous_names, "previous", lines) + lines

    # -- backward -----------------------------------------------------------------------------------------

    def _stacked_deltas(self, group: MapGroup) -> str:
        """δ(M u) of a group's maps side by side (a δ that is 0 as zeros)."""
        like = _local(next(delta for delta in group.deltas if delta != 0))
        items = [_local(delta) if delta != 0 else self.zeros(like) for delta in group.deltas]
        return items[0] if len(items) == 1 else self.concatenate(items)

    def _transposed(self, operand: str) -> str:
        group = self.lay.group(operand)
        return f'delta_maps_{group.owner} @ weights["{group.operand}"]'

    def backward_lines(self) -> list[str]:
        d, lines = self.d, []
        stacked: set = set()

        def stack_ready():
            """Each owning group's δ array as soon as every δ in it is known."""
            known = {adjoint.symbol for adjoint in done} | set(d.incoming.values())
            for group in self.lay.owners:
                ready = all(delta == 0 or delta in known for delta in group.deltas)
                if group.operand not in stacked and ready and any(delta != 0 for delta in group.deltas):
                    lines.append(f"delta_maps_{group.operand} = {self._stacked_deltas(group)}")
                    stacked.add(group.operand)

        done: list = []
        stack_ready()
        for adjoint in d.adjoints:
            terms = [self.code(adjoint.expr)] if adjoint.expr != 0 else []
            if adjoint.transposed:
                terms.append(self._transposed(adjoint.name))
            lines.append(f"{_local(adjoint.symbol)} = {' + '.join(terms)}")
            done.append(adjoint)
            stack_ready()
        sent = []
        # to each state at t − 1, then to each s_(t−K) in the order of the rings
        for state, lag in [(state, 1) for state in d.states] + [(state, lag) for state, lag, _ in self.lay.rings]:
            adjoint = d.sent_at(state, lag)
            terms = [self.code(adjoint.expr)] if adjoint.expr != 0 else []
            if adjoint.transposed:
                terms.append(self._transposed(str(d.leaf(state, lag))))
            name = _local(adjoint.symbol)
            lines.append(f"{name} = {' + '.join(terms) if terms else self.zeros(self.previous_names[0])}")
            sent.append(name)
        owners = [f"delta_maps_{g.operand}" for g in self.lay.owners if g.operand in stacked]
        sums = [self._sum_term(name) for name in self.vectors]
        lines.append(f"return {_tuple(sent)}, {_tuple(owners)}, {_tuple(sums)}")
        unpacked = [*_unpack(self.previous_names, "previous", lines), *_unpack(self.saved, "saved", lines),
                    *_unpack(self.incoming_names, "incoming", lines)]
        return self._parameters("\n".join(lines)) + unpacked + lines

    def _sum_term(self, name: str) -> str:
        terms = self.d.gradients.get(name, ())
        exprs = [term[1] for term in terms if term[0] == "sum" and term[1] != 0]
        return self.code(sp.Add(*exprs)) if exprs else self.zeros(self.previous_names[0])

    # -- what the drivers need -----------------------------------------------------------------------------

    def gradient_lines(self, groups: list[dict]) -> list[str]:
        """∂L/∂M = Σ_t δ(M u)_t u_tᵀ, one product per group of maps (``_outer`` of the driver, over the
        stacked rows ``delta_maps``, ``x``, ``history``, ``saved``), and ∂L/∂b = Σ_t Σ_batch of each
        per-unit parameter's terms (``_total`` of ``sums``)."""
        lines, seen, extra = [], {}, []
        for group in groups:
            source = "x" if group["source"] == "x" else f"{group['source']}[{group['index']}]"
            product = f"_outer(delta_maps[{group['owner']}], {source})"
            names = []
            for matrix in group["matrices"]:
                seen[matrix] = seen.get(matrix, 0) + 1
                if seen[matrix] == 1:
                    names.append(f"grad_{matrix}")
                else:   # a matrix applied to two operands: its gradient sums both
                    names.append(f"grad_{matrix}_{seen[matrix]}")
                    extra.append(f"grad_{matrix} = grad_{matrix} + {names[-1]}")
            lines.append(f"{names[0]} = {product}" if len(names) == 1
                         else f"{', '.join(names)} = {self.split(product, len(names), axis=0)}")
        lines.extend(extra)
        for k, name in enumerate(self.vectors):
            lines.append(f"grad_{name} = _total(sums[{k}])")
        return lines


    def context(self) -> dict:
        """The step functions' lines and the facts the drivers loop over (no SymPy objects)."""
        d, lay = self.d, self.lay
        owners = [g.operand for g in lay.owners if any(delta != 0 for delta in g.deltas)]
        groups = []
        for group in self.groups:
            if group.kind == "x":
                source = ("x", None)
            elif group.kind == "state":
                source = ("history", self.previous_names.index(group.operand))
            else:
                source = ("saved", self.saved.index(group.operand))
            groups.append({"operand": group.operand, "matrices": list(group.matrices), "count": group.count,
                           "items": [f'p["{name}"]' for name in group.matrices],
                           "owner": owners.index(group.owner) if group.owner in owners else None,
                           "source": source[0], "index": source[1]})
        assert all(g["owner"] is not None for g in groups), "a map whose δ is 0"
        return {
            "states": list(d.states),
            "lagged": bool(lay.rings),
            "reads": [f'("{state}", {lag})' for state, lag in lay.reads.values()],
            "rings": [f'("{state}", {lag})' for state, lag, _ in lay.rings],
            "depths": [max(d.lags[state]) for state in d.states],
            "output_index": list(d.states).index(d.output_state),
            "vectors": self.vectors,
            "groups": groups,
            "owners": owners,
            "x_group": lay.x_group.operand,
            "forward_lines": self.forward_lines(),
            "backward_lines": self.backward_lines(),
            "saved": self.saved,
            "gradient_lines": self.gradient_lines(groups),
            "gradients": [f"grad_{name}" if name in self.d.gradients or name in self.vectors else None
                          for name in self.parameter_names],
            "first_parameter": next(iter(self.parameter_names)),
        }


def cell_facts(model, lay: Layout) -> dict:
    """What a framework module says about its cell: names, shapes and the formulas of its docstring."""
    from .cell_backend import _cell_context

    d = lay.derivation
    facts = _cell_context(model, d)
    readout = {d.cell.readout, d.cell.readout_bias}
    return {
        "tuple": _tuple,
        "cell": d.cell.name,
        "description": facts["description"],
        "equations": facts["equations"],
        "adjoint_formulas": facts["adjoint_formulas"],
        "sent_formulas": facts["sent_formulas"],
        "output_state": d.output_state,
        "parameters": [{"name": name, "shape": shape} for name, shape in d.parameters.items()
                       if name not in readout],
    }


__all__ = ["FrameworkCellPrinter", "cell_facts"]
