"""The generic backend over cells: the step of any cell laid out as array statements, for the module
templates (``templates/numpy/cell.py.j2``; the Numba template reads the same per-unit expressions).

Everything printed here comes from ``engine.CellDerivation``; nothing names a cell. The layout:

* time on axis 0, the batch on axis 1: every per-step array is one contiguous (B, H) block;
* the linear maps are **stacked by operand**, as torch.nn.LSTM stacks its gates: the maps of x_t are
  one (G·H, D) matrix applied to every step at once before the recursion (``projection``); the maps of
  a state s_(t−1) are one (G·H, H) matrix applied once per step; a map of a node of the step is
  applied right after that node;
* the backward step keeps δ(M u) of each operand group in one (n, B, G·H) array, so the transpose
  rule δu += Σ_M Mᵀ δ(M u) is one product per group and step, and ∂L/∂M = Σ_t δ(M u)_t u_tᵀ is one
  product per group at the end (a group whose δs are another group's, as the LSTM's W and U, shares
  that group's array);
* forward values the backward step reads are stored for every step ((n + 1, B, H), row 0 the initial
  state), the others are temporaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from ..activations import ACTIVATIONS
from ..engine.derivation import CellDerivation, derive_cell
from .interim_text import LINE_LENGTH, formatted, formatted_item
from .numpy_backend import code, in_place, text

#: Largest n for which --mode unrolled writes straight-line code for a cell.
UNROLLED_LIMIT = 256
#: From this many δ(M u) entries per step (B·G·H, G the maps' slots: 1 for the RNN, 4 for the LSTM) on,
#: the weight gradients are summed step by step. Measured (loss_and_grad, CPU time, n = 100, per-step /
#: one product at the end): the RNN 1.17 at 1024 (H = 16) and 1.26 (H = 128), 0.87 and 0.96 at 4096;
#: the LSTM 0.95 at 4096 (H = 16), 1.04 at 8192 (H = 128), 0.87 at 16 384.
PER_STEP_ENTRIES = 4096


@dataclass
class Group:
    """The linear maps applied to one operand, stacked."""

    operand: str          # "x", "s_prev" or a node name
    label: str            # a name for the group in the module
    size: str             # "D" or "H"
    matrices: list        # parameter names, in stacking order
    symbols: list         # the per-unit symbols M@u, same order
    deltas: list          # δ(M u) per slot (a node's δ symbol, or the map's own)
    array: str = ""       # the (n, B, G·H) array holding this group's δs
    shared: bool = False  # the array is another group's (same δs in the same order)


def _local(symbol) -> str:
    """A Python name for a per-unit symbol: M@u → M_u."""
    return str(symbol).replace("@", "_")


def context(model, mode: str, command: str, derivation: CellDerivation | None = None) -> dict:
    """Everything ``cell.py.j2`` places: names, shapes and printed statements. No SymPy objects."""
    from ..cells import cell_of

    d = derivation or derive_cell(cell_of(model))
    d.refuse_lags("code generation (bptt codegen, train, check, grade)")
    cell = d.cell
    H = model.hidden
    steps = model.steps if mode == "unrolled" else None

    groups: list[Group] = []
    for linear in d.linears:
        group = next((g for g in groups if g.operand == linear.operand), None)
        if group is None:
            if linear.operand == "x":
                label, size = "x", "D"
            else:
                label, size = linear.operand, "H"
            group = Group(linear.operand, label, size, [], [], [])
            groups.append(group)
        group.matrices.append(linear.matrix)
        group.symbols.append(linear.symbol)
        group.deltas.append(d.symbols["linear_delta"][linear.symbol])
    groups.sort(key=lambda g: (g.operand != "x", g.operand not in {str(s) for s in d.previous.values()}))
    homes: dict = {}
    computed = {adjoint.symbol for adjoint in d.adjoints}
    for group in groups:
        twin = next((g for g in groups if g.array and not g.shared and g.deltas == group.deltas), None)
        if twin is not None:
            group.array, group.shared = twin.array, True
            continue
        group.array = f"delta_maps_{group.label}"
        for k, delta in enumerate(group.deltas):
            # a δ computed in the step lives in its slot; one that is only what step t + 1 sent
            # (h' = U tanh(V h) + W x: δ(W x) is δh_in) is copied in (see backward_step)
            if delta in computed:
                homes.setdefault(delta, (group.array, k))

    def span(k: int) -> str:
        return f"{k * H}:{(k + 1) * H}"

    previous = {symbol: state for state, symbol in d.previous.items()}
    vectors = set(d.symbols["vectors"].values())
    # What the backward pass reads from the forward pass.
    read = set()
    for adjoint in (*d.adjoints, *d.sent.values()):
        read |= adjoint.expr.free_symbols
    for terms in d.gradients.values():
        for term in terms:
            read |= term[1].free_symbols
    stored_set = {node.name for node in d.nodes if node.state or node.symbol in read}
    # ∂L/∂M needs the operand of every step
    stored_set |= {group.operand for group in groups if group.operand in {n.name for n in d.nodes}}
    # the nodes in forward order, then the states first among equals so h[...] reads well
    stored = [node.name for node in d.nodes if node.name in stored_set]
    node_names = {node.name for node in d.nodes}
    state_groups_read = {g.label for g in groups if g.operand != "x" and g.operand in {str(s) for s in previous}
                         and set(g.symbols) & read}

    def forward_names(t: str, t_prev: str, first: bool) -> dict:
        names = {}
        for symbol, state in previous.items():
            names[symbol] = sp.S.Zero if first else sp.Symbol(f"{state}[{t_prev}]")
        for node in d.nodes:
            names[node.symbol] = sp.Symbol(f"{node.name}[{t}]" if node.name in stored_set else node.name)
        for symbol in vectors:
            names[symbol] = symbol
        for group in groups:
            for k, symbol in enumerate(group.symbols):
                if first and group.operand in {str(s) for s in previous}:
                    names[symbol] = sp.S.Zero
                else:
                    names[symbol] = sp.Symbol(_local(symbol))
        return names

    def printed(expr, names) -> str:
        return code(expr.xreplace({old: new for old, new in names.items()}))

    # Biases folded into the projection: a vector v added (coefficient 1) to a map of x in a node
    # becomes part of that slot of projection = x Wᵀ + b, computed for every step at once.
    x_group = next(g for g in groups if g.operand == "x")
    node_exprs = {node.name: node.expr for node in d.nodes}
    folded: dict = {}
    for k, symbol in enumerate(x_group.symbols):
        if symbol in read or sum(symbol in node_exprs[n.name].free_symbols for n in d.nodes) > 1:
            continue   # the backward pass, or another node, reads (W x)_t alone
        for node in d.nodes:
            terms = sp.Add.make_args(node_exprs[node.name])
            if symbol not in terms:
                continue
            vector = next((term for term in terms if term in vectors and term not in folded.values()), None)
            if vector is not None:
                folded[k] = vector
                node_exprs[node.name] = node_exprs[node.name] - vector
            break
    # Pre-activations that are exactly (W x + b)_k + (U s)_k for k = 0..m−1 are one stacked sum.
    stacked = None
    state_operands = {str(s) for s in previous}
    for group in groups:
        if group.operand not in state_operands:
            continue
        members = []
        for k, (x_symbol, s_symbol) in enumerate(zip(x_group.symbols, group.symbols)):
            node = next((n for n in d.nodes if node_exprs[n.name] == x_symbol + s_symbol), None)
            if node is None or node.name in stored_set or node.state:
                break
            members.append(node.name)
        if len(members) >= 2:
            stacked = (group, members)
            break

    # A pre-activation u used only by one stored node v = f(u) is summed straight into v's row and f
    # applied there (np.tanh(v, out=v)); a map of a state in that sum, applied to nothing else, is
    # computed into the row first (np.matmul(..., out=v)): no temporaries in the step.
    fused: dict = {}       # v's name → (u's name, the group whose product goes first, or None)
    stacked_members = set(stacked[1]) if stacked else set()
    for node in d.nodes:
        if node.name in stored_set or node.activation or node.state or node.name in stacked_members:
            continue
        if any(g.operand == node.name for g in groups) or not isinstance(node_exprs[node.name], sp.Add):
            continue
        users = [n for n in d.nodes if node.symbol in n.expr.free_symbols]
        if len(users) != 1:
            continue
        (user,) = users
        if not (user.activation and user.name in stored_set and user.expr.args == (node.symbol,)):
            continue
        first_group = None
        for group in groups:
            if (group.operand in state_operands and len(group.symbols) == 1 and group.label not in state_groups_read
                    and not (stacked and stacked[0] is group)
                    and group.symbols[0] in sp.Add.make_args(node_exprs[node.name])
                    and sum(group.symbols[0] in node_exprs[n.name].free_symbols for n in d.nodes) == 1):
                first_group = group
                break
        fused[user.name] = (node.name, first_group)
    fused_pre = {pre for pre, _ in fused.values()}
    fused_groups = {group.label for _, group in fused.values() if group is not None}
    # A single map of x that only such a sum reads is computed for every step straight into the rows
    # of the stored node (np.matmul(inputs, W.T, out=v[1:])), as the hand-written RNN does: no
    # separate projection array to write and read back.
    direct = None
    if len(x_group.symbols) == 1 and x_group.symbols[0] not in read:
        (x_symbol,) = x_group.symbols
        users = [n for n in d.nodes if x_symbol in node_exprs[n.name].free_symbols]
        # only a map added as it is (coefficient 1: 2 (W x) is no row to write into)
        if (len(users) == 1 and users[0].name in fused_pre
                and x_symbol in sp.Add.make_args(node_exprs[users[0].name])):
            direct = next(v for v, (pre, _) in fused.items() if pre == users[0].name)

    def forward_step(t, first: bool) -> dict:
        t_text, t_prev = (str(t), str(t - 1)) if isinstance(t, int) else ("t", "t - 1")
        names = forward_names(t_text, t_prev, first)
        lines = []

        def apply_group(group: Group, source: str, store_index: str | None):
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
                                 f"_split({product}, {len(group.symbols)})[{unused}:]")
                return
            if len(group.symbols) == 1:
                lines.append(f"{targets} = {product}")
            else:
                lines.append(f"{targets} = _split({product}, {len(group.symbols)})")

        skip = set()
        for group in groups:
            if group.operand == "x" and direct:
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
                        lines.append(f"{', '.join(targets)} = _split({source}, {len(targets)})")
            elif group.operand in state_operands and not first and group.label not in fused_groups:
                state = previous[sp.Symbol(group.operand)]
                apply_group(group, f"{state}[{t_prev}]", t_prev if group.label in state_groups_read else None)
        if stacked:
            group, members = stacked
            width = f"{len(members)} * HIDDEN_SIZE"
            projection = f"projection[{t_prev}]"
            if len(members) < len(x_group.symbols):
                projection = f"projection[{t_prev}, :, : {width}]"
            if first:
                total = projection
            else:
                source = f"maps_{group.label}[{t_prev}]" if group.label in state_groups_read else f"maps_{group.label}"
                if len(members) < len(group.symbols):
                    source = f"{source}[:, : {width}]"
                total = f"{projection} + {source}"
            lines.append(f"{', '.join(members)} = _split({total}, {len(members)})")
            skip = set(members)
        for node in d.nodes:
            target = names[node.symbol]
            if node.name in fused:
                pre, group = fused[node.name]
                slot = f"row_{node.name}"
                lines.append(f"{slot} = {target}")
                terms = list(sp.Add.make_args(node_exprs[pre]))
                if node.name == direct:
                    # the row holds its map of x already: add the rest
                    terms.remove(x_group.symbols[0])
                    if group is not None:
                        terms.remove(group.symbols[0])
                        if not first:
                            state = previous[sp.Symbol(group.operand)]
                            terms.append(sp.Symbol(f"{state}[{t_prev}] @ weights_{group.label}.T"))
                    terms = [None, *terms]
                elif group is not None and first:
                    terms.remove(group.symbols[0])
                elif group is not None:
                    terms.remove(group.symbols[0])
                    state = previous[sp.Symbol(group.operand)]
                    lines.append(f"np.matmul({state}[{t_prev}], weights_{group.label}.T, out={slot})")
                    terms = [None, *terms]
                terms = [term for term in terms if term is None or term.xreplace(names) != 0]
                printed_terms = [printed(term, names) for term in terms if term is not None]
                if terms and terms[0] is None:
                    lines.extend(f"{slot} += {term}" for term in printed_terms)
                elif len(printed_terms) >= 2:
                    lines.append(f"np.add({printed_terms[0]}, {printed_terms[1]}, out={slot})")
                    lines.extend(f"{slot} += {term}" for term in printed_terms[2:])
                else:
                    lines.append(f"{slot}[...] = {printed_terms[0] if printed_terms else 0}")
                statement = in_place(ACTIVATIONS[node.activation], slot)
                if statement:
                    lines.append(statement)
            elif node.name not in skip and node.name not in fused_pre:
                lines.append(f"{target} = {printed(node_exprs[node.name], names)}")
            for group in groups:
                if group.operand == node.name:
                    apply_group(group, str(target), None)
        return {"t": t, "lines": lines}

    def backward_names(t: str, t_prev: str, first: bool, last: bool) -> dict:
        names = forward_names(t, t_prev, first)
        for symbol, state in previous.items():
            names[symbol] = sp.S.Zero if first else sp.Symbol(f"{state}[{t_prev}]")
        for group in groups:
            for k, symbol in enumerate(group.symbols):
                if group.operand == "x":
                    names[symbol] = sp.Symbol(f"projection[{t_prev}, :, {span(k)}]")
                elif group.label in state_groups_read:
                    names[symbol] = sp.S.Zero if first else sp.Symbol(f"maps_{group.label}[{t_prev}, :, {span(k)}]")
        for state, symbol in d.incoming.items():
            if last and state != d.output_state:
                names[symbol] = sp.S.Zero
            else:
                names[symbol] = symbol
        for adjoint in d.adjoints:
            names[adjoint.symbol] = sp.Symbol(_local(adjoint.symbol))
        return names

    def backward_step(t, first: bool, last: bool, slot: str | None = None, record: bool = False,
                      per_step: bool = False) -> dict:
        """The lines of backward step t (None: the loop's step t). ``slot``: the row of the δ arrays the
        step writes (default t − 1; "0" for arrays one step long); ``record``: also keep what
        bptt_terms returns (each state's δ, each per-unit parameter's term); ``per_step``: the weight
        gradients summed in the step, while its δs are in cache."""
        t_text, t_prev = (str(t), str(t - 1)) if isinstance(t, int) else ("t", "t - 1")
        row = t_prev if slot is None else slot
        names = backward_names(t_text, t_prev, first, last)
        lines = []
        if record:
            for state, symbol in d.incoming.items():
                lines.append(f"terms_delta_{state}[{t_prev}] = {names[symbol]}")
        for group in groups:
            # a map of a node of the step that the backward pass reads (u ⊙ (M v)): applied again
            if group.operand in node_names and set(group.symbols) & read:
                targets = [_local(s) if s in read else "_" for s in group.symbols]
                product = f"{operand_at(group, t_text, t_prev)} @ weights_{group.label}.T"
                if len(targets) == 1:
                    lines.append(f"{targets[0]} = {product}")
                else:
                    lines.append(f"{', '.join(targets)} = _split({product}, {len(targets)})")
        owners = {}
        for group in groups:
            if group.shared:
                continue
            views = [_local(delta) if homes.get(delta) == (group.array, k) else "_"
                     for k, delta in enumerate(group.deltas)]
            if any(view != "_" for view in views):
                if len(views) == 1:
                    lines.append(f"{views[0]} = {group.array}[{row}]")
                else:
                    lines.append(f"{', '.join(views)} = _split({group.array}[{row}], {len(views)})")
            for view in views:
                if view != "_":
                    owners[view] = group
        copies: dict = {}
        for group in groups:
            if group.shared:
                continue
            for k, delta in enumerate(group.deltas):
                if delta == 0:
                    lines.append(f"{group.array}[{row}, :, {span(k)}] = 0")
                elif delta not in computed:
                    lines.append(f"{group.array}[{row}, :, {span(k)}] = {printed(delta, names)}")
                elif homes.get(delta) != (group.array, k):
                    copies.setdefault(delta, []).append(f"{group.array}[{row}, :, {span(k)}] = {_local(delta)}")
        for adjoint in d.adjoints:
            expr = printed(adjoint.expr, names) if adjoint.expr != 0 else ""
            if adjoint.transposed:
                source = next(g for g in groups if g.operand == adjoint.name)
                term = _transposed(source, row)
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
                lines.append(f"np.multiply({printed(factor, names)}, {printed(sp.Mul(*others), names)}, out={target})")
            else:
                lines.append(f"{target}[...] = {expr}")
            # the same δ in a slot of another group (GRU: δa_r of W_r x and of U_r h)
            lines.extend(copies.pop(adjoint.symbol, ()))
        assert not copies, copies
        for name, terms in d.gradients.items():
            for term in terms:
                if term[0] == "sum" and term[1] not in homes:
                    if record:
                        lines.append(f"terms_{name}[{t_prev}] = {printed(term[1], names)}")
                    elif term[1].xreplace(names) != 0:
                        lines.append(f"grad_{name} += ({printed(term[1], names)}).sum(axis=0)")
        if per_step:
            for group in groups:
                lines.append(f"grad_{group.label} += {group.array}[{row}].T @ {operand_at(group, t_text, t_prev)}")
            for array in sorted({homes[term[1]][0] for terms in d.gradients.values() for term in terms
                                 if term[0] == "sum" and term[1] in homes}):
                lines.append(f"sums_{array} += {array}[{row}].sum(axis=0)")
        sent = []
        products = []   # (target, group): what is only Mᵀ δ(M s), multiplied into the target's array
        if not first:
            for state, adjoint in d.sent.items():
                expr = printed(adjoint.expr, names) if adjoint.expr != 0 else ""
                if adjoint.transposed:
                    group = next(g for g in groups if g.operand == str(d.previous[state]))
                    if not expr and t is None:
                        products.append((str(d.incoming[state]), group))
                        continue
                    term = _transposed(group, row)
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
            sent += [(target, _transposed(group, row)) for target, group in products]
            products = []
        statements = []
        if sent:
            targets = ", ".join(target for target, _ in sent)
            values = ", ".join(value for _, value in sent)
            statements.append(f"{targets} = {values}" if len(sent) == 1 else f"{targets} = ({values})")
        # In the loop, where every incoming δ is an array of its own from the start, a product is
        # written over it (its old value read already): no new (B, H) array per step.
        statements += [f"np.matmul({group.array}[{row}], weights_{group.label}, out={target})"
                       for target, group in products]
        statement = "\n".join(statements)
        if first and not statement:
            lines = _live(lines, finals_text)
        return {"t": t, "lines": lines, "sent": statement}

    def _transposed(group: Group, row: str) -> str:
        return f"{group.array}[{row}] @ weights_{group.label}"

    def operand_at(group: Group, t_text: str, t_prev: str) -> str:
        """The operand u_t of a group's maps at step t, a (B, size) block."""
        if group.operand == "x":
            return f"inputs[{t_prev}]"
        if group.operand in state_operands:
            return f"{previous[sp.Symbol(group.operand)]}[{t_prev}]"
        return f"{group.operand}[{t_text}]"

    # what the lines after the last backward step read (the δ arrays, the accumulated gradients)
    finals_text = " ".join([*(g.array for g in groups), *(f"grad_{name}" for name in d.gradients)])
    if mode == "unrolled":
        forward_steps = [forward_step(t, first=t == 1) for t in range(1, steps + 1)]
        backward_steps = [backward_step(t, first=t == 1, last=t == steps) for t in range(steps, 0, -1)]
    else:
        forward_steps = [forward_step(None, first=False)]
        backward_steps = [backward_step(None, first=False, last=False)]

    # Wide batches: the same step with δ arrays one step long, each weight gradient summed in the step.
    per_step = backward_step(None, first=False, last=False, slot="0", per_step=True)
    # bptt_terms: the loop's step keeping each state's δ and each per-unit parameter's term per step.
    recorded = backward_step(None, first=False, last=False, record=True)
    homed_arrays = sorted({homes[term[1]][0] for terms in d.gradients.values() for term in terms
                           if term[0] == "sum" and term[1] in homes})
    per_step_finals = []
    seen: dict = {}
    for group in groups:
        per_step_finals += _matrix_gradients(group.matrices, f"grad_{group.label} / batch", seen)
    # bptt_terms: per sequence and step, δ(M u)_t u_tᵀ for each matrix, the δ each per-unit parameter enters with.
    term_lines = []
    for group in groups:
        if group.operand == "x":
            operand = "x"
        elif group.operand in state_operands:
            operand = f"{previous[sp.Symbol(group.operand)]}[:-1].transpose(1, 0, 2)"
        else:
            operand = f"{group.operand}[1:].transpose(1, 0, 2)"
        for k, name in enumerate(group.matrices):
            term = f'np.einsum("tbh,btk->bthk", {group.array}[:, :, {span(k)}], {operand})'
            # a matrix applied to several operands: its term is the sum over them
            earlier = any(line.startswith(f'terms["{name}"] =') for line in term_lines)
            term_lines.append(f'terms["{name}"] = terms["{name}"] + {term}' if earlier else f'terms["{name}"] = {term}')
    for name, terms_ in d.gradients.items():
        for term in terms_:
            if term[0] == "sum":
                if term[1] in homes:
                    array, k = homes[term[1]]
                    term_lines.append(f'terms["{name}"] = {array}[:, :, {span(k)}].transpose(1, 0, 2)')
                else:
                    term_lines.append(f'terms["{name}"] = terms_{name}.transpose(1, 0, 2)')
    map_deltas = []
    for group in [g for g in groups if not g.shared] + [g for g in groups if g.shared]:
        for k, matrix in enumerate(group.matrices):
            # a matrix applied to several operands: its further maps keyed M@u (u the operand)
            key = matrix if all(e["matrix"] != matrix for e in map_deltas) else f"{matrix}@{group.operand}"
            map_deltas.append({"matrix": key, "array": group.array, "span": span(k)})
    # The positional form's f′ of the output state (bptt_terms' "derivatives"): ∂s_t/∂u for s = f(u).
    output_node = next(node for node in d.nodes if node.state == d.output_state)
    derivative = None
    if output_node.activation and len(d.partials[output_node.name]) == 1:
        (partial,) = d.partials[output_node.name].values()
        derivative = code(partial.xreplace({node.symbol: sp.Symbol(node.name) for node in d.nodes}))

    # Gradients at the end: one product per group (rows of every matrix of the group), sums of homed δs.
    finals = []
    seen = {}
    for group in groups:
        if group.operand == "x":
            operand = "x.transpose(1, 0, 2).reshape(-1, INPUT_SIZE)"
        elif group.operand in {str(s) for s in previous}:
            operand = f"{previous[sp.Symbol(group.operand)]}[:-1].reshape(-1, HIDDEN_SIZE)"
        else:
            operand = f"{group.operand}[1:].reshape(-1, HIDDEN_SIZE)"
        rows = f"{group.array}.reshape(-1, {len(group.matrices) * H}).T"
        finals += _matrix_gradients(group.matrices, f"{rows} @ {operand} / batch", seen)
    summed = set()
    for name, terms in d.gradients.items():
        for term in terms:
            if term[0] == "sum" and term[1] in homes:
                array, k = homes[term[1]]
                if array not in summed:   # one pass over each δ array for all its per-unit parameters
                    width = next(len(g.deltas) for g in groups if g.array == array)
                    finals.append(f"sums_{array} = {array}.reshape(-1, {width * H}).sum(axis=0) / batch")
                    summed.add(array)
                finals.append(f'grads["{name}"] = sums_{array}[{span(k)}]')

    def bindings(lines: list[str]) -> list[str]:
        """The parameter arrays a function's lines use, bound to local names."""
        text_ = "\n".join(lines)
        bound = [f'weights_{g.label} = weights["{g.label}"]' for g in groups
                 if re.search(rf"\bweights_{re.escape(g.label)}\b", text_)]
        bound += [f'{name} = p["{name}"]' for name in sorted(str(s) for s in d.symbols["vectors"].values())
                  if re.search(rf"\b{re.escape(name)}\b", text_)]
        if any(line.startswith("weights_") for line in bound):
            bound.insert(0, "weights = _weights(p)")
        return bound

    forward_lines = [line for step in forward_steps for line in step["lines"]]
    maps_names = [f"maps_{g.label}" for g in groups if g.label in state_groups_read]

    def step_lines(steps_: list) -> list[str]:
        return [line for step in steps_ for line in (*step["lines"], step["sent"])]
    names_out = {symbol: sp.Symbol(str(symbol)) for symbol in d.symbols["vectors"].values()}
    y_hat, y = d.symbols["y_hat"], d.symbols["y"]
    result = {
        "command": command,
        "mode": mode,
        "cell": cell.name,
        # the description sits in the module's docstring: its backslashes and quotes escaped
        "description": (cell.description or f"the cell {cell.name}").replace("\\", "\\\\").replace('"', '\\"'),
        "steps": steps,
        "input_size": model.inputs,
        "hidden_size": H,
        "states": list(d.states),
        "output_state": d.output_state,
        "parameters": [{"name": name, "shape": shape} for name, shape in d.shapes(H, model.inputs).items()],
        "readout": cell.readout,
        "readout_bias": cell.readout_bias,
        "init": [{"name": name, "value": repr(float(value))} for name, value in getattr(cell, "init", {}).items()],
        "activations": sorted({node.activation for node in d.nodes if node.activation}),
        "analytic": all(ACTIVATIONS[node.activation].analytic for node in d.nodes if node.activation),
        "forward_bindings": bindings(forward_lines),
        "projection_bias": [str(folded[k]) if k in folded else None for k in range(len(x_group.symbols))],
        "backward_bindings": bindings(step_lines(backward_steps)),
        "per_step_bindings": bindings(step_lines([per_step])),
        "recorded_bindings": bindings(step_lines([recorded])),
        "recorded_reads_projection": bool(re.search(r"\bprojection\b", "\n".join(step_lines([recorded])))),
        "groups": [
            {"label": g.label, "matrices": g.matrices, "count": len(g.matrices), "array": g.array, "shared": g.shared,
             "stored": g.label in state_groups_read, "operand": g.operand}
            for g in groups
        ],
        "stored": stored,
        "unpacked": {
            "forward": _unpacked(stored, "\n".join(line for step in forward_steps for line in step["lines"])),
            "gradients": _unpacked(stored, "\n".join([*step_lines(backward_steps), *finals])),
            "per_step": _unpacked(stored, "\n".join([*step_lines([per_step]), *per_step_finals])),
            "recorded": _unpacked(stored, "\n".join([*step_lines([recorded]), *term_lines])),
        },
        "maps_unpacked": {
            "gradients": _unpacked(maps_names, "\n".join([*step_lines(backward_steps), *finals])),
            "per_step": _unpacked(maps_names, "\n".join([*step_lines([per_step]), *per_step_finals])),
        },
        "incoming": [{"state": state, "name": str(symbol)} for state, symbol in d.incoming.items()],
        "accumulated": [name for name, terms in d.gradients.items() for term in terms
                        if term[0] == "sum" and term[1] not in homes],
        "forward_steps": forward_steps,
        "backward_steps": backward_steps,
        "finals": finals,
        "per_step": per_step,
        "per_step_finals": per_step_finals,
        "homed_arrays": homed_arrays,
        "recorded": recorded,
        "term_lines": term_lines,
        "map_deltas": map_deltas,
        "positional": [{"name": name, "shape": d.shapes(H, model.inputs)[name]} for name in cell.positional],
        "positional_matrices": [name for name in cell.positional if name in cell.matrices],
        "flat_derivative": derivative,
        "constants": [{"name": key, "value": _literal(value)} for key, value in cell.constants.items()],
        "impl": {name: f"_dict_{name}" if cell.positional else name
                 for name in ("forward", "states", "loss", "loss_and_grad", "bptt_terms")},
        "x_width": len(x_group.symbols),
        "direct": None if direct is None else stored.index(direct),
        "per_step_entries": PER_STEP_ENTRIES,
        "delta_width": sum(len(g.matrices) for g in groups if not g.shared),
        "maps_names": maps_names,
        "delta_names": [g.array for g in groups if not g.shared],
        "output_factor_code": code(d.output_factor.xreplace({y_hat: sp.Symbol("y_hat"), y: sp.Symbol("y")})),
        "equations": [f"{eq.name}{'_t' if eq.state else ''} = {text(eq.expr, _display_names(d))}" for eq in cell.equations],
        "adjoint_formulas": [f"{_display_names(d)[a.symbol]} = {text(a.expr, _display_names(d))}"
                             + "".join(f" + {m}ᵀ δ({m} {a.name})" for m, _ in a.transposed)
                             for a in d.adjoints],
        "sent_formulas": [_sent_formula(d, state, a) for state, a in d.sent.items()],
        "names_out": names_out,
    }
    return _laid_out(result, mode)


def _laid_out(context: dict, mode: str) -> dict:
    """The context's statements in ruff's layout for the indent the template gives them (a step's
    lines inside the loop over t in loop mode, what it sends back inside ``if t > 1:``), and the
    statements and signatures the template writes around them."""
    loop = mode == "loop"

    def sent(statements: str, indent: int) -> str:
        """What a step sends back: one statement or several, each laid out."""
        return ("\n" + " " * indent).join(formatted(line, indent) for line in statements.split("\n")) if statements else ""

    def step(step_: dict, indent: int) -> dict:
        laid = {**step_, "lines": [formatted(line, indent) for line in step_["lines"]]}
        if step_.get("sent"):
            laid["sent"] = sent(step_["sent"], indent + 4 if loop else indent)
        return laid

    context = dict(context)
    context["groups"] = [dict(group) for group in context["groups"]]
    context["map_deltas"] = [dict(entry) for entry in context["map_deltas"]]
    step_indent = 8 if loop else 4
    context["forward_steps"] = [step(s, step_indent) for s in context["forward_steps"]]
    context["backward_steps"] = [step(s, step_indent) for s in context["backward_steps"]]
    context["per_step"] = {**step(context["per_step"], 8), "sent": sent(context["per_step"]["sent"], 12)}
    context["recorded"] = {**step(context["recorded"], 8), "sent": sent(context["recorded"]["sent"], 12)}
    for key in ("finals", "per_step_finals", "term_lines", "forward_bindings", "backward_bindings",
                "per_step_bindings", "recorded_bindings"):
        context[key] = [formatted(line, 4) for line in context[key]]
    groups = context["groups"]
    maps, deltas = context["maps_names"], context["delta_names"]

    def spare(rows: str) -> str:
        return _tuple([f"({rows}, batch, {g['count']} * HIDDEN_SIZE)" for g in groups if not g["shared"]])

    context["spare_code"] = formatted(f"values, projection, *rest = _forward_values(x, p, {spare('rows')})", 4)
    recorded = "projection" if context["recorded_reads_projection"] else "_"
    context["recorded_spare_code"] = formatted(
        f"values, {recorded}, *rest = _forward_values(x, p, {spare('steps')})", 4)
    biases = [f'p["{b}"]' if b else "np.zeros(HIDDEN_SIZE)" for b in context["projection_bias"]]
    target = "projection" if context["direct"] is None else f"values[{context['direct']}, 1:]"
    context["projection_target"] = target
    context["projection_bias_code"] = formatted(f"{target} += np.concatenate([{', '.join(biases)}])", 4)
    for group in groups:
        matrices = [f'p["{name}"]' for name in group["matrices"]]
        value = matrices[0] if len(matrices) == 1 else f"np.concatenate([{', '.join(matrices)}])"
        group["weights_code"] = formatted_item(f'"{group["label"]}": ', value, ",", 8)
    for entry in context["map_deltas"]:
        value = f"np.ascontiguousarray({entry['array']}[:, :, {entry['span']}].transpose(1, 0, 2))"
        entry["code"] = formatted_item(f'"{entry["matrix"]}": ', value, ",", 12)
    if context["flat_derivative"]:
        context["flat_derivative"] = formatted_item(
            '"derivatives": ', context["flat_derivative"], ",", 8)
    context["deltas_code"] = formatted(f"{_targets(deltas)} = deltas", 4)
    context["rest_code"] = formatted(f"{_targets(maps + deltas)} = rest", 4)
    context["signatures"] = {
        name: _signature(f"def {function}", arguments, returns)
        for name, (function, arguments, returns) in {
            "gradients": ("_gradients", _GRADIENT_ARGUMENTS, "dict[str, np.ndarray]"),
            "gradients_per_step": ("_gradients_per_step", _GRADIENT_ARGUMENTS, "dict[str, np.ndarray]"),
            **{name: (context["impl"][name], arguments + (NAMED if context["positional"] else []), returns)
               for name, (arguments, returns) in SIGNATURES.items()},
            **{f"positional_{name}": (name, arguments, returns)
               for name, (arguments, returns) in _POSITIONAL.items()},
        }.items()
    }
    return context


_DATA = ["x: npt.ArrayLike"]
_LABELLED = ["x: npt.ArrayLike", "y: npt.ArrayLike"]
_PARAMS = ["params: Mapping[str, npt.ArrayLike]"]
#: The dict implementations of a cell with a positional form: errors name the parameters as given.
NAMED = ["named: bool = False"]
_WEIGHTS = ["*weights: npt.ArrayLike", "**keywords: npt.ArrayLike"]
_GRADIENT_ARGUMENTS = ["x: np.ndarray", "p: dict[str, np.ndarray]", "values: np.ndarray", "projection: np.ndarray",
                       "maps: tuple[np.ndarray, ...]", "deltas: tuple[np.ndarray, ...]", "residual: np.ndarray"]
#: The public functions' (dict form's) arguments and return annotations (the Numba module's too).
SIGNATURES = {
    "forward": (_DATA + _PARAMS, "np.ndarray"),
    "states": (_DATA + _PARAMS, "dict[str, np.ndarray]"),
    "loss": (_LABELLED + _PARAMS, "float"),
    "loss_and_grad": (_LABELLED + _PARAMS, "tuple[float, dict[str, np.ndarray]]"),
    "bptt_terms": (_LABELLED + _PARAMS, "dict[str, object]"),
}
#: The positional form's.
_POSITIONAL = {
    "forward": (_DATA + _WEIGHTS, "np.ndarray"),
    "states": (_DATA + _WEIGHTS, "dict[str, np.ndarray]"),
    "loss": (_LABELLED + _WEIGHTS, "float"),
    "loss_and_grad": (_LABELLED + _WEIGHTS, "tuple"),
    "bptt_terms": (_LABELLED + _WEIGHTS, "dict"),
}


def _signature(head: str, arguments: list[str], returns: str) -> str:
    """``def f(…) -> r:`` on one line if it fits, else one argument a line with a magic trailing
    comma (ruff keeps that at any line length)."""
    line = f"{head}({', '.join(arguments)}) -> {returns}:"
    if len(line) <= LINE_LENGTH:
        return line
    return "\n".join([f"{head}(", *(f"    {argument}," for argument in arguments), f") -> {returns}:"])


def _matrix_gradients(matrices: list[str], value: str, seen: dict) -> list[str]:
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
    return [f"{', '.join(keys)} = _rows({value}, {len(matrices)})", *sums]


def _literal(value) -> str:
    """A constant's Python literal, a string in double quotes as ruff writes it."""
    text_ = repr(value)
    if isinstance(value, str) and text_.startswith("'") and '"' not in value:
        return f'"{text_[1:-1]}"'
    return text_


def _tuple(items: list[str]) -> str:
    """A tuple display: ``(a,)`` for one item, as ruff writes it."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _targets(names: list[str]) -> str:
    """Assignment targets unpacking a sequence: ``(a,)`` for one name, as ruff writes it."""
    return f"({names[0]},)" if len(names) == 1 else ", ".join(names)


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


def _unpacked(names: list[str], text_: str) -> str:
    """``a, _, c`` for the names a function's text reads (``_`` for the others), to unpack into."""
    used = [name if re.search(rf"\b{re.escape(name)}\b", text_) else "_" for name in names]
    return _targets(used)


def _sent_formula(d: CellDerivation, state: str, adjoint) -> str:
    terms = [text(adjoint.expr, _display_names(d))] if adjoint.expr != 0 else []
    terms += [f"{matrix}ᵀ δ({matrix} {state}_(t-1))" for matrix, _ in adjoint.transposed]
    return f"δ{state}_(t-1) = {' + '.join(terms) or '0'}"


def _display_names(d: CellDerivation) -> dict:
    names = {symbol: f"{state}_(t-1)" for state, symbol in d.previous.items()}
    names |= {symbol: f"δ{state}_(t+1→t)" for state, symbol in d.incoming.items()}
    maps = {}
    for linear in d.linears:
        operand = linear.operand.replace("_prev", "_(t-1)") if linear.operand != "x" else "x_t"
        names[linear.symbol] = maps[f"delta_{linear.symbol}"] = f"({linear.matrix} {operand})"
    for adjoint in d.adjoints:
        # the adjoint of a map M u (named delta_M@u by the engine) reads δ(M u), as the text beside it
        names[adjoint.symbol] = f"δ{maps[adjoint.name]}" if adjoint.name in maps else f"δ{adjoint.name}"
    return names


__all__ = ["NAMED", "SIGNATURES", "UNROLLED_LIMIT", "context"]
