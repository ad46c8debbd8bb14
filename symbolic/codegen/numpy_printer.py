"""The NumPy printer of a cell's layout (``layout.Layout``): the statements of each step of
``templates/numpy/cell.py.j2``, expressions printed by SymPy's NumPy printer (``numpy_backend.code``).

Every decision (which maps are stacked, what is stored, which sums fuse, where each δ lives, the order
of the steps) is the layout's; this module only writes them as NumPy: time on axis 0 and the batch on
axis 1 (every per-step array one contiguous (B, H) block), the maps of x_t applied to every step at
once before the recursion (``projection``), a δ array per owning group of maps.
"""

from __future__ import annotations

import re
from functools import cache

import sympy as sp

from ..activations import ACTIVATIONS
from .layout import Layout, MapGroup, Step
from .numpy_backend import NumPyCodePrinter, code, in_place


class _HelperPrinter(NumPyCodePrinter):
    """SymPy's NumPy printer calling the module's σ helper as ``<prefix>sigmoid``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def _print_sigmoid(self, expr):
        return f"{self.prefix}sigmoid({self._print(expr.args[0])})"


@cache
def _code_printer(prefix: str) -> _HelperPrinter:
    return _HelperPrinter(prefix)


def _local(symbol) -> str:
    """A Python name for a per-unit symbol: M@u → M_u."""
    return str(symbol).replace("@", "_")


def _array(group: MapGroup) -> str:
    """The (n, B, G·H) array holding a group's δs (its own, or the earlier group's it shares)."""
    return f"delta_maps_{group.owner}"


def _targets(names: list[str]) -> str:
    """Assignment targets unpacking a sequence: ``(a,)`` for one name, as ruff writes it."""
    return f"({names[0]},)" if len(names) == 1 else ", ".join(names)


def _times(t: int | None) -> tuple[str, str]:
    """The text of t and t − 1: numbers in an unrolled step, names in the loop's."""
    return (str(t), str(t - 1)) if isinstance(t, int) else ("t", "t - 1")


def _row(step: Step, lag: int) -> str | None:
    """The row of s_(t−lag) in a state's (n + 1)-row array: a number in an unrolled step (None where
    it is an initial state, 0), in the loop's max(t − lag, 0), row 0 holding the initial 0. The vjp's
    loop, where row 0 is a given s_0, reads row t − lag: before s_0 the K − 1 zero rows after row n."""
    if step.reads_zero(lag):
        return None
    if isinstance(step.t, int):
        return str(step.t - lag)
    if step.upstream:
        return f"t - {lag}"
    return "t - 1" if lag == 1 else f"max(t - {lag}, 0)"


def _ring_row(step: Step, lag: int) -> str:
    """The row of a ring of ``lag`` rows that step t reads and then writes: t mod lag."""
    return str(step.t % lag) if isinstance(step.t, int) else f"t % {lag}"


def ring_name(state: str, lag: int) -> str:
    """The (K, B, H) ring of what steps send K steps back to a state: δs_(t−K) of step t in row t mod K."""
    return f"delta_{state}_lag{lag}"


class NumpyCellPrinter:
    """Writes one layout as NumPy statements: each method one piece of the module."""

    #: How the statements name the module's helpers (``_split``, ``_weights``, ``_sigmoid``): a Numba
    #: module keeps the NumPy bptt_terms beside its own functions under ``_numpy_`` (numba_cells).
    prefix = "_"

    def __init__(self, hidden: int, lay: Layout):
        self.lay = lay
        d = self.d = lay.derivation
        self.H = hidden
        self.groups = lay.groups
        self.homes = {delta: (_array(lay.group(owner)), k) for delta, (owner, k) in lay.homes(True).items()}
        self.computed = {adjoint.symbol for adjoint in d.adjoints}
        self.reads = lay.reads   # a state operand (s_prev, s_lagK) → (state, K)
        self.stored_set = set(lay.stored)
        self.node_names = {node.name for node in d.nodes}
        self.state_groups_read = {g.label for g in lay.stored_maps}
        self.stacked = (lay.group(lay.stacked[0]), list(lay.stacked[1])) if lay.stacked else None
        self.fused = {f.node: (f.pre, lay.group(f.first) if f.first else None) for f in lay.fused}
        self.fused_pre = {pre for pre, _ in self.fused.values()}
        self.fused_groups = {group.label for _, group in self.fused.values() if group is not None}
        # what the lines after the last backward step read (the δ arrays, the accumulated gradients)
        self.finals_text = " ".join([*(_array(g) for g in self.groups), *(f"grad_{name}" for name in d.gradients)])

    def span(self, k: int) -> str:
        return f"{k * self.H}:{(k + 1) * self.H}"

    def printed(self, expr, names) -> str:
        return _code_printer(self.prefix).doprint(expr.xreplace({old: new for old, new in names.items()}))

    def forward_names(self, step: Step) -> dict:
        t = _times(step.t)[0]
        names = {}
        for operand, (state, lag) in self.reads.items():
            row = _row(step, lag)
            names[sp.Symbol(operand)] = sp.S.Zero if row is None else sp.Symbol(f"{state}[{row}]")
        for node in self.d.nodes:
            names[node.symbol] = sp.Symbol(f"{node.name}[{t}]" if node.name in self.stored_set else node.name)
        for symbol in self.d.symbols["vectors"].values():
            names[symbol] = symbol
        for group in self.groups:
            zero = group.kind == "state" and _row(step, self.lay.lag(group)) is None
            for symbol in group.symbols:
                names[symbol] = sp.S.Zero if zero else sp.Symbol(_local(symbol))
        return names

    def state_at(self, group: MapGroup, step: Step) -> str | None:
        """The operand s_(t−K) of a state group at ``step``, a (B, H) block (None: an initial 0)."""
        state, lag = self.reads[group.operand]
        row = _row(step, lag)
        return None if row is None else f"{state}[{row}]"

    # -- forward ----------------------------------------------------------------------------------------

    def forward_step(self, step: Step) -> dict:
        """The lines of forward step t: the maps of its operands, then its nodes in order."""
        names = self.forward_names(step)
        lines: list[str] = []
        skip = self._forward_maps(lines, step)
        for node in self.d.nodes:
            target = names[node.symbol]
            if node.name in self.fused:
                self._fused_row(lines, node, target, names, step)
            elif node.name not in skip and node.name not in self.fused_pre:
                lines.append(f"{target} = {self.printed(self.lay.node_exprs[node.name], names)}")
            for group in self.groups:
                if group.operand == node.name:
                    self._apply_group(lines, group, str(target), None)
        return {"t": step.t, "lines": lines}

    def _apply_group(self, lines: list, group: MapGroup, source: str, store_index: str | None) -> None:
        """u Mᵀ for the stacked maps of one operand, split into the per-unit names that read them."""
        stacked = self.stacked
        targets = ", ".join(_local(s) for s in group.symbols)
        product = f"{source} @ weights_{group.label}.T"
        if store_index is not None:
            lines.append(f"maps_{group.label}[{store_index}] = {product}")
            product = f"maps_{group.label}[{store_index}]"
        elif stacked and stacked[0] is group:
            lines.append(f"maps_{group.label} = {product}")
            product = f"maps_{group.label}"
        if stacked and stacked[0] is group:
            unused = len(stacked[1])
            rest = group.symbols[unused:]
            if rest:
                lines.append(f"{_targets([_local(s) for s in rest])} = "
                             f"{self.prefix}split({product}, {len(group.symbols)})[{unused}:]")
            return
        if len(group.symbols) == 1:
            lines.append(f"{targets} = {product}")
        else:
            lines.append(f"{targets} = {self.prefix}split({product}, {len(group.symbols)})")

    def _forward_maps(self, lines: list, step: Step) -> set:
        """The maps of x_t (read from the projection) and of the states; the stacked sum. Returns the
        nodes that sum wrote."""
        stacked, lay = self.stacked, self.lay
        t_prev = _times(step.t)[1]
        for group in self.groups:
            if group.operand == "x" and lay.direct:
                continue   # already in the row of the node it feeds
            if group.operand == "x":
                source = f"projection[{t_prev}]"
                members = stacked[1] if stacked else []
                targets = [_local(s) for s in group.symbols]
                if members:
                    targets[: len(members)] = ["_"] * len(members)
                if any(target != "_" for target in targets):
                    if len(targets) == 1:
                        lines.append(f"{targets[0]} = {source}")
                    else:
                        lines.append(f"{', '.join(targets)} = {self.prefix}split({source}, {len(targets)})")
            elif group.kind == "state" and self.state_at(group, step) and group.label not in self.fused_groups:
                stored = t_prev if group.label in self.state_groups_read else None
                self._apply_group(lines, group, self.state_at(group, step), stored)
        if not stacked:
            return set()
        group, members = stacked
        width = f"{len(members)} * HIDDEN_SIZE"
        projection = f"projection[{t_prev}]"
        if len(members) < len(lay.x_group.symbols):
            projection = f"projection[{t_prev}, :, : {width}]"
        if self.state_at(group, step) is None:
            total = projection
        else:
            source = f"maps_{group.label}[{t_prev}]" if group.label in self.state_groups_read else f"maps_{group.label}"
            if len(members) < len(group.symbols):
                source = f"{source}[:, : {width}]"
            total = f"{projection} + {source}"
        lines.append(f"{', '.join(members)} = {self.prefix}split({total}, {len(members)})")
        return set(members)

    def _fused_row(self, lines: list, node, target, names: dict, step: Step) -> None:
        """A fused sum: its terms added into the stored node's row, then f applied there in place."""
        lay = self.lay
        pre, group = self.fused[node.name]
        operand = None if group is None else self.state_at(group, step)
        first = operand is None
        slot = f"row_{node.name}"
        lines.append(f"{slot} = {target}")
        terms = list(sp.Add.make_args(lay.node_exprs[pre]))
        if node.name == lay.direct:
            # the row holds its map of x already: add the rest
            terms.remove(lay.x_group.symbols[0])
            if group is not None:
                terms.remove(group.symbols[0])
                if not first:
                    terms.append(sp.Symbol(f"{operand} @ weights_{group.label}.T"))
            terms = [None, *terms]
        elif group is not None and first:
            terms.remove(group.symbols[0])
        elif group is not None:
            terms.remove(group.symbols[0])
            lines.append(f"np.matmul({operand}, weights_{group.label}.T, out={slot})")
            terms = [None, *terms]
        terms = [term for term in terms if term is None or term.xreplace(names) != 0]
        printed_terms = [self.printed(term, names) for term in terms if term is not None]
        if terms and terms[0] is None:
            lines.extend(f"{slot} += {term}" for term in printed_terms)
        elif len(printed_terms) >= 2:
            lines.append(f"np.add({printed_terms[0]}, {printed_terms[1]}, out={slot})")
            lines.extend(f"{slot} += {term}" for term in printed_terms[2:])
        else:
            lines.append(f"{slot}[...] = {printed_terms[0] if printed_terms else 0}")
        statement = in_place(ACTIVATIONS[node.activation], slot, _code_printer(self.prefix))
        if statement:
            lines.append(statement)

    # -- backward ---------------------------------------------------------------------------------------

    def backward_names(self, step: Step) -> dict:
        d = self.d
        t_prev = _times(step.t)[1]
        names = self.forward_names(step)
        for group in self.groups:
            for k, symbol in enumerate(group.symbols):
                if group.operand == "x":
                    names[symbol] = sp.Symbol(f"projection[{t_prev}, :, {self.span(k)}]")
                elif group.label in self.state_groups_read:
                    maps = sp.Symbol(f"maps_{group.label}[{t_prev}, :, {self.span(k)}]")
                    names[symbol] = sp.S.Zero if self.state_at(group, step) is None else maps
        for state, symbol in d.incoming.items():
            names[symbol] = sp.S.Zero if step.last and not step.upstream and state != d.output_state else symbol
        for adjoint in d.adjoints:
            names[adjoint.symbol] = sp.Symbol(_local(adjoint.symbol))
        return names

    def backward_step(self, step: Step, slot: str | None = None, record: bool = False,
                      per_step: bool = False) -> dict:
        """The lines of backward step t. ``slot``: the row of the δ arrays the step writes (default
        t − 1; "0" for arrays one step long); ``record``: also keep what bptt_terms returns (each
        state's δ, each per-unit parameter's term); ``per_step``: the weight gradients summed in the
        step, while its δs are in cache."""
        t_prev = _times(step.t)[1]
        row = t_prev if slot is None else slot
        names = self.backward_names(step)
        lines = self._received(step)
        if record:
            for state, symbol in self.d.incoming.items():
                lines.append(f"terms_delta_{state}[{t_prev}] = {names[symbol]}")
        owners, copies = self._delta_views(lines, names, row, step)
        self._adjoints(lines, names, row, owners, copies)
        self._parameter_sums(lines, names, row, step, record, per_step)
        # the vjp's step 1 sends too: what reaches s_0 is ∂L/∂s_0
        statement = "" if step.first and not step.upstream else self._sent(names, row, step, slot, owners)
        if step.first and not statement:
            lines = _live(lines, self.finals_text)
        return {"t": step.t, "lines": lines, "sent": statement}

    def _delta_views(self, lines: list, names: dict, row: str, step: Step) -> tuple[dict, dict]:
        """Maps of a node read again, the views of the δ slots the step writes into, and the δs only
        received (written into their slots). Returns the views' groups and the copies still due."""
        read = self.lay.read
        for group in self.groups:
            # a map of a node of the step that the backward pass reads (u ⊙ (M v)): applied again
            if group.operand in self.node_names and set(group.symbols) & read:
                targets = [_local(s) if s in read else "_" for s in group.symbols]
                product = f"{self.operand_at(group, step)} @ weights_{group.label}.T"
                if len(targets) == 1:
                    lines.append(f"{targets[0]} = {product}")
                else:
                    lines.append(f"{', '.join(targets)} = {self.prefix}split({product}, {len(targets)})")
        owners = {}
        for group in self.lay.owners:
            views = [_local(delta) if self.homes.get(delta) == (_array(group), k) else "_"
                     for k, delta in enumerate(group.deltas)]
            if any(view != "_" for view in views):
                if len(views) == 1:
                    lines.append(f"{views[0]} = {_array(group)}[{row}]")
                else:
                    lines.append(f"{', '.join(views)} = {self.prefix}split({_array(group)}[{row}], {len(views)})")
            owners.update({view: group for view in views if view != "_"})
        copies: dict = {}
        for group in self.lay.owners:
            for k, delta in enumerate(group.deltas):
                entry = f"{_array(group)}[{row}, :, {self.span(k)}]"
                if delta == 0:
                    lines.append(f"{entry} = 0")
                elif delta not in self.computed:
                    lines.append(f"{entry} = {self.printed(delta, names)}")
                elif self.homes.get(delta) != (_array(group), k):
                    copies.setdefault(delta, []).append(f"{entry} = {_local(delta)}")
        return owners, copies

    def _adjoints(self, lines: list, names: dict, row: str, owners: dict, copies: dict) -> None:
        """Each adjoint δv of the step, into its slot where it has one."""
        d = self.d
        for adjoint in d.adjoints:
            expr = self.printed(adjoint.expr, names) if adjoint.expr != 0 else ""
            if adjoint.transposed:
                source = next(g for g in self.groups if g.operand == adjoint.name)
                term = self._transposed(source, row)
                expr = f"{expr} + {term}" if expr else term
            assert expr and d.transpose, adjoint
            target = _local(adjoint.symbol)
            if target not in owners and expr == "0":
                # 0 at t = 1 (it reads a state's initial 0): an array still, for the sums that read it
                lines.append(f"{target} = np.zeros((batch, HIDDEN_SIZE), values.dtype)")
            elif target not in owners:
                lines.append(f"{target} = {expr}")
            elif isinstance(adjoint.expr, sp.Mul) and not adjoint.transposed and len(adjoint.expr.args) >= 2:
                # δ = a·b written straight into its slot of the δ array
                factor, *others = adjoint.expr.as_ordered_factors()
                lines.append(f"np.multiply({self.printed(factor, names)}, {self.printed(sp.Mul(*others), names)}, "
                             f"out={target})")
            else:
                lines.append(f"{target}[...] = {expr}")
            # the same δ in a slot of another group (GRU: δa_r of W_r x and of U_r h)
            lines.extend(copies.pop(adjoint.symbol, ()))
        assert not copies, copies

    def _parameter_sums(self, lines: list, names: dict, row: str, step: Step, record: bool,
                        per_step: bool) -> None:
        """The per-unit parameters' terms of the step (summed, or recorded), and with ``per_step`` the
        weight gradients of the step."""
        t_prev = _times(step.t)[1]
        for name, terms in self.d.gradients.items():
            for term in terms:
                if term[0] == "sum" and term[1] not in self.homes:
                    if record:
                        lines.append(f"terms_{name}[{t_prev}] = {self.printed(term[1], names)}")
                    elif term[1].xreplace(names) != 0:
                        lines.append(f"grad_{name} += ({self.printed(term[1], names)}).sum(axis=0)")
        if per_step:
            for group in self.groups:
                operand = self.operand_at(group, step)
                lines.append(f"grad_{group.label} += {_array(group)}[{row}].T @ {operand}")
            for array in self.homed_arrays():
                lines.append(f"sums_{array} += {array}[{row}].sum(axis=0)")

    def _received(self, step: Step) -> list[str]:
        """What steps t + K sent to each state read K steps back, added to its δ from step t + 1; and
        the readout's error of step t (``residual``) where the loss enters at every step."""
        lines = []
        if step.seeded:
            incoming = self.d.incoming[self.d.output_state]
            lines.append(f"{incoming} = {incoming} + residual[{_times(step.t)[1]}]")
        if step.upstream:
            lines += [f"{incoming} = {incoming} + upstream_{state}[{_times(step.t)[1]}]"
                      for state, incoming in self.d.incoming.items()]
        for state, lag, _ in self.lay.rings:
            if step.receives(lag):
                incoming = self.d.incoming[state]
                lines.append(f"{incoming} = {incoming} + {ring_name(state, lag)}[{_ring_row(step, lag)}]")
        return lines

    def _sent_back(self, names: dict, row: str, step: Step) -> list[str]:
        """What the step sends K steps back, into row t mod K of each ring (read there by step t − K)."""
        lines = []
        for state, lag, adjoint in self.lay.rings:
            if not step.sends(lag):
                continue
            target = f"{ring_name(state, lag)}[{_ring_row(step, lag)}]"
            group = next((g for g in self.groups if g.operand == str(self.d.leaf(state, lag))), None)
            expr = self.printed(adjoint.expr, names) if adjoint.expr != 0 else ""
            if adjoint.transposed and not expr:
                lines.append(f"np.matmul({_array(group)}[{row}], weights_{group.label}, out={target})")
                continue
            if adjoint.transposed:
                expr = f"{expr} + {self._transposed(group, row)}"
            lines.append(f"{target} = {expr or 0}")
        return lines

    def _sent(self, names: dict, row: str, step: Step, slot: str | None, owners: dict) -> str:
        """What the step sends to step t − 1, and first (before a product overwrites a δ it reads)
        what it sends K steps back: one statement or several."""
        d, t = self.d, step.t
        sent = []
        products = []   # (target, group): what is only Mᵀ δ(M s), multiplied into the target's array
        for state, adjoint in d.sent.items():
            expr = self.printed(adjoint.expr, names) if adjoint.expr != 0 else ""
            if adjoint.transposed:
                group = next(g for g in self.groups if g.operand == str(d.previous[state]))
                if not expr and t is None:
                    products.append((str(d.incoming[state]), group))
                    continue
                term = self._transposed(group, row)
                expr = f"{expr} + {term}" if expr else term
            if slot is not None and expr in owners:
                # a view of a δ array one step long: the next step overwrites it before reading what was sent
                expr = f"{expr}.copy()"
            # nothing flows back (a state the output never reads): zeros, an array for the sums that read it
            if expr in ("", "0"):
                expr = "np.zeros((batch, HIDDEN_SIZE), values.dtype)"
            sent.append((str(d.incoming[state]), expr))
        if any(value.isidentifier() for _, value in sent):
            # a value sent as it is may be the very array a product would overwrite: assign them all
            sent += [(target, self._transposed(group, row)) for target, group in products]
            products = []
        statements = self._sent_back(names, row, step)
        if sent:
            targets = ", ".join(target for target, _ in sent)
            values = ", ".join(value for _, value in sent)
            statements.append(f"{targets} = {values}" if len(sent) == 1 else f"{targets} = ({values})")
        # In the loop, where every incoming δ is an array of its own from the start, a product is
        # written over it (its old value read already): no new (B, H) array per step.
        statements += [f"np.matmul({_array(group)}[{row}], weights_{group.label}, out={target})"
                       for target, group in products]
        return "\n".join(statements)

    def _transposed(self, group: MapGroup, row: str) -> str:
        return f"{_array(group)}[{row}] @ weights_{group.label}"

    def operand_at(self, group: MapGroup, step: Step) -> str:
        """The operand u_t of a group's maps at step t, a (B, size) block (the per-step sums and the
        maps of a node: a state's operand is read in the loop's step only)."""
        t_text, t_prev = _times(step.t)
        if group.operand == "x":
            return f"inputs[{t_prev}]"
        if group.kind == "state":
            return self.state_at(group, step)
        return f"{group.operand}[{t_text}]"

    # -- after the steps --------------------------------------------------------------------------------

    def homed_arrays(self) -> list[str]:
        """The δ arrays holding the δ a per-unit parameter's gradient sums."""
        return sorted({self.homes[term[1]][0] for terms in self.d.gradients.values() for term in terms
                       if term[0] == "sum" and term[1] in self.homes})

    def _operand_rows(self, group: MapGroup, initial: bool = False) -> str:
        """Every step's operand of a group, as rows (steps × batch, size); of s_(t−K), K ≥ 2, the steps
        t > K only (``_delta_rows``), the earlier ones read an initial 0 (``initial``: t ≥ K, s_0 given)."""
        if group.operand == "x":
            return "x.transpose(1, 0, 2).reshape(-1, INPUT_SIZE)"
        if group.kind == "state":
            state, lag = self.reads[group.operand]
            # the vjp's values may have zero rows after row n (the loop's reads before s_0)
            rows = (": steps" if lag == 1 else f": max(steps + 1 - {lag}, 0)") if initial else ":-1" if lag == 1 else f"1:-{lag}"
            return f"{state}[{rows}].reshape(-1, HIDDEN_SIZE)"
        rows = "1 : steps + 1" if initial else "1:"
        return f"{group.operand}[{rows}].reshape(-1, HIDDEN_SIZE)"

    def _delta_rows(self, group: MapGroup, initial: bool = False) -> str:
        """The δ array of a group over the steps its operand rows cover (t > K for s_(t−K); t ≥ K with
        ``initial``)."""
        lag = self.lay.lag(group)
        start = lag - 1 if initial else 0 if lag == 1 else lag
        return _array(group) if start == 0 else f"{_array(group)}[{start}:]"

    def finals(self, scale: str = " / batch", initial: bool = False) -> list[str]:
        """Gradients at the end: one product per group (rows of every matrix of the group), sums of
        the homed δs; each ``scale``d (the batch mean; the vjp's sums: ""); ``initial``: s_0 is given."""
        finals: list[str] = []
        seen: dict = {}
        for group in self.groups:
            rows = f"{self._delta_rows(group, initial)}.reshape(-1, {len(group.matrices) * self.H}).T"
            product = f"{rows} @ {self._operand_rows(group, initial)}{scale}"
            finals += _matrix_gradients(group.matrices, product, seen, self.prefix)
        summed = set()
        for name, terms in self.d.gradients.items():
            for term in terms:
                if term[0] == "sum" and term[1] in self.homes:
                    array, k = self.homes[term[1]]
                    if array not in summed:   # one pass over each δ array for all its per-unit parameters
                        width = next(len(g.deltas) for g in self.groups if _array(g) == array)
                        finals.append(f"sums_{array} = {array}.reshape(-1, {width * self.H}).sum(axis=0){scale}")
                        summed.add(array)
                    finals.append(f'grads["{name}"] = sums_{array}[{self.span(k)}]')
        return finals

    def vjp_lines(self) -> list[str]:
        """After the vjp's steps: dx = Σ_M δ(M x) M, (B, n, D); each state's ∂L/∂s_0, what step 1 sent
        plus what step K sent to s_0 (row 0 of each ring)."""
        rings = {}
        for state, lag, _ in self.lay.rings:
            rings.setdefault(state, []).append(f" + {ring_name(state, lag)}[0]")
        lines = [f"dx = ({_array(self.lay.x_group)} @ weights_x).transpose(1, 0, 2)"]
        lines += [f'dinitial["{state}"] = {incoming}{"".join(rings.get(state, []))}'
                  for state, incoming in self.d.incoming.items()]
        return lines

    def per_step_finals(self) -> list[str]:
        lines: list[str] = []
        seen: dict = {}
        for group in self.groups:
            lines += _matrix_gradients(group.matrices, f"grad_{group.label} / batch", seen, self.prefix)
        return lines

    def term_lines(self) -> list[str]:
        """bptt_terms: per sequence and step, δ(M u)_t u_tᵀ for each matrix, the δ each per-unit
        parameter enters with."""
        lines: list[str] = []
        for group in self.groups:
            if group.operand == "x":
                operand = "x"
            elif group.kind == "state" and self.lay.lag(group) == 1:
                operand = f"{self.reads[group.operand][0]}[:-1].transpose(1, 0, 2)"
            elif group.kind == "state":
                # rows t − K for t = 1..n, row 0 (the initial 0) where t ≤ K
                state, lag = self.reads[group.operand]
                operand = f"{state}[np.maximum(np.arange(steps) - {lag - 1}, 0)].transpose(1, 0, 2)"
            else:
                operand = f"{group.operand}[1:].transpose(1, 0, 2)"
            for k, name in enumerate(group.matrices):
                term = f'np.einsum("tbh,btk->bthk", {_array(group)}[:, :, {self.span(k)}], {operand})'
                # a matrix applied to several operands: its term is the sum over them
                earlier = any(line.startswith(f'terms["{name}"] =') for line in lines)
                lines.append(f'terms["{name}"] = terms["{name}"] + {term}' if earlier else f'terms["{name}"] = {term}')
        for name, terms in self.d.gradients.items():
            for term in terms:
                if term[0] == "sum" and term[1] in self.homes:
                    array, k = self.homes[term[1]]
                    lines.append(f'terms["{name}"] = {array}[:, :, {self.span(k)}].transpose(1, 0, 2)')
                elif term[0] == "sum":
                    lines.append(f'terms["{name}"] = terms_{name}.transpose(1, 0, 2)')
        return lines

    def map_deltas(self) -> list[dict]:
        """bptt_terms' δ(M u) per matrix: the array and span of each."""
        entries: list[dict] = []
        for group in [*self.lay.owners, *(g for g in self.groups if g.shared)]:
            for k, matrix in enumerate(group.matrices):
                # a matrix applied to several operands: its further maps keyed M@u (u the operand)
                key = matrix if all(e["matrix"] != matrix for e in entries) else f"{matrix}@{group.operand}"
                entries.append({"matrix": key, "array": _array(group), "span": self.span(k)})
        return entries

    def output_derivative(self) -> str | None:
        """The positional form's f′ of the output state (bptt_terms' "derivatives"): ∂s_t/∂u for s = f(u)."""
        d = self.d
        output_node = next(node for node in d.nodes if node.state == d.output_state)
        if not (output_node.activation and len(d.partials[output_node.name]) == 1):
            return None
        (partial,) = d.partials[output_node.name].values()
        return code(partial.xreplace({node.symbol: sp.Symbol(node.name) for node in d.nodes}))

    def bindings(self, lines: list[str]) -> list[str]:
        """The parameter arrays a function's lines use, bound to local names."""
        text_ = "\n".join(lines)
        bound = [f'weights_{g.label} = weights["{g.label}"]' for g in self.groups
                 if re.search(rf"\bweights_{re.escape(g.label)}\b", text_)]
        bound += [f'{name} = p["{name}"]' for name in sorted(str(s) for s in self.d.symbols["vectors"].values())
                  if re.search(rf"\b{re.escape(name)}\b", text_)]
        if any(line.startswith("weights_") for line in bound):
            bound.insert(0, f"weights = {self.prefix}weights(p)")
        return bound


def _matrix_gradients(matrices, value: str, seen: dict, prefix: str = "_") -> list[str]:
    """``grads[M] = value`` for a group's stacked matrices (rows of ``value``). A matrix already
    assigned by another group (applied to another operand) is added to, not overwritten: its block
    goes under a tuple key, which no parameter name can be, and is summed in. ``seen`` counts them."""
    keys, sums = [], []
    for name in matrices:
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count and len(matrices) == 1:
            return [f'grads["{name}"] += {value}']
        keys.append(f'grads["{name}", {count}]' if count else f'grads["{name}"]')
        if count:
            sums.append(f'grads["{name}"] += grads.pop(("{name}", {count}))')
    if len(matrices) == 1:
        return [f"{keys[0]} = {value}"]
    return [f"{', '.join(keys)} = {prefix}rows({value}, {len(matrices)})", *sums]


def _live(lines: list[str], after: str) -> list[str]:
    """``lines`` without the assignments to a plain name that no later line (nor ``after``) reads:
    the last step of an unrolled backward pass computes δs that nothing before t = 1 receives."""
    lines = list(lines)
    changed = True
    while changed:
        changed = False
        for k, line in enumerate(lines):
            target, sep, _ = line.partition(" = ")
            if not sep or not target.isidentifier():
                continue
            pattern = re.compile(rf"\b{re.escape(target)}\b")
            if not any(pattern.search(later) for later in lines[k + 1:]) and not pattern.search(after):
                del lines[k]
                changed = True
                break
    return lines


__all__ = ["NumpyCellPrinter"]
