"""The layout of a cell's generated module: what every backend's printer writes, decided once from the
engine's derivation (``engine.CellDerivation``), as plain data. Nothing here is backend text.

* **groups**: the linear maps stacked by operand, as torch.nn.LSTM stacks its gates: the maps of x_t
  (one (G·H, D) matrix applied to every step at once), those of a state s_(t−1) (one (G·H, H) matrix
  per step), of a state read K steps back, s_(t−K) (a group per state and lag, ``reads``), and those
  of a node of the step (applied right after that node); x first, then states;
* **δ slots**: δ(M u) of each group kept in one (n, B, G·H) array, so the transpose rule
  δu += Σ_M Mᵀ δ(M u) is one product per group and step; a group whose δs are an earlier group's (the
  LSTM's W and U) shares that group's array (``owner``);
* **stored**: the forward values the backward pass reads, kept for every step; **parts**: the step cut
  after each node whose maps are a product (Cho's GRU: U (r ⊙ h) needs every unit of r ⊙ h first);
* **fused sums**: biases folded into the projection of x, pre-activations that are one stacked sum,
  a pre-activation summed straight into the row of the value f applies to, a map of x written straight
  into that row (``direct``).

**Lags.** A state read K steps back (``Cell.lag``) is a leaf of the step like s_(t−1): ``reads`` gives
each state operand's (state, K); a ``Step`` says whether s_(t−K) is still an initial state (t ≤ K:
``reads_zero``), whether the step adds what step t + K sent (``receives``) and whether it sends
K steps back (``sends``). What step t sends to s_(t−K) waits in a ring of K rows (``rings``), row
t mod K, until step t − K reads it: the row step t reads first and then overwrites. A feature that
changes the time structure (a loss at every step) changes these data in the same way, and the
printers print whatever they hold (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from ..engine.derivation import CellDerivation


@dataclass(frozen=True)
class MapGroup:
    """The linear maps applied to one operand, stacked in the order of the derivation's linears."""

    operand: str                 # "x", a previous state "h_prev" or a node name
    kind: str                    # "x", "state" or "node"
    matrices: tuple[str, ...]    # the parameter of each slot
    symbols: tuple               # the per-unit symbols M@u, one per slot
    deltas: tuple                # δ(M u) of each slot: a δ symbol, or 0
    owner: str                   # the operand of the group whose δ array this group's δs live in
    reads_maps: bool             # the backward pass reads some M u of this group

    @property
    def label(self) -> str:
        return self.operand

    @property
    def count(self) -> int:
        return len(self.symbols)

    @property
    def shared(self) -> bool:
        """Its δs are an earlier group's (same δs in the same order): that group's array holds them."""
        return self.owner != self.operand


@dataclass(frozen=True)
class DeltaSlot:
    """Where a δ lives: slot ``slot`` of the δ array of group ``owner``."""

    delta: sp.Symbol
    owner: str
    slot: int
    computed: bool    # an adjoint of the step (else only what step t + 1 sent, copied in)


@dataclass(frozen=True)
class Fused:
    """A pre-activation ``pre`` used only by the stored ``node`` = f(pre): summed into node's row, f
    applied there; ``first``: the single map of a state in that sum computed into the row first."""

    node: str
    pre: str
    first: str | None


@dataclass(frozen=True)
class Step:
    """One step of the order of work: ``t`` (None: the loop's step t, any t), whether it reads the
    initial states (0, not a stored row) and whether it receives nothing from a step t + 1; ``steps``:
    n of an unrolled step (None in the loop)."""

    t: int | None
    first: bool
    last: bool
    steps: int | None = None
    #: the readout's error of this step (``residual``, (n, B, H)) joins δs_in of the output state: any
    #: output side but the notes' (whose δs_in starts at step n from the one readout instead)
    seeded: bool = False
    #: the backward entry point (vjp): every state's ∂L/∂s_t (``upstream_<state>``, (n, B, H)) joins its
    #: δs_in, s_0 is a given starting state (row 0) read at t = K, and step 1 sends back to it
    upstream: bool = False

    def reads_zero(self, lag: int) -> bool:
        """s_(t−lag) is an initial state, 0 (t ≤ lag; with ``upstream``, t < lag: s_0 is row 0, given);
        the loop's step reads row max(t − lag, 0), which is."""
        return self.t is not None and (self.t < lag if self.upstream else self.t <= lag)

    def receives(self, lag: int) -> bool:
        """Step t + lag exists and has sent to s_t (the loop's step reads the ring, 0 where nothing was sent)."""
        return self.t is None or self.t + lag <= self.steps

    def sends(self, lag: int) -> bool:
        """s_(t−lag) is a step's value, not an initial state: step t sends to it (the loop sends from
        t > 1 on, into a ring row no step reads before it is written again)."""
        return self.t is None or (self.t >= lag if self.upstream else self.t > lag)


@dataclass(frozen=True)
class Layout:
    derivation: CellDerivation
    groups: tuple[MapGroup, ...]
    read: frozenset               # the symbols the backward pass reads of the forward pass
    stored: tuple[str, ...]       # the forward values kept for every step, in forward order
    slots: tuple[DeltaSlot, ...]  # every nonzero δ(M u) in a slot, groups and slots in order
    node_exprs: dict              # node name → its expression, a folded bias taken out
    folded: dict                  # slot of the x group → the bias vector folded into the projection
    stacked: tuple | None         # (state group's operand, node names): one stacked sum
    fused: tuple[Fused, ...]
    direct: str | None            # the stored node whose rows the single map of x is written into
    parts: tuple[tuple[str, ...], ...]   # the step's nodes, cut after each node whose maps are a product

    def group(self, operand: str) -> MapGroup:
        return next(g for g in self.groups if g.operand == operand)

    @cached_property
    def owners(self) -> tuple[MapGroup, ...]:
        """The groups that own a δ array, in order."""
        return tuple(g for g in self.groups if not g.shared)

    def homes(self, computed_only: bool) -> dict:
        """δ → (owner, slot): the first slot of each δ (only the step's own adjoints, or every one)."""
        homes: dict = {}
        for slot in self.slots:
            if slot.computed or not computed_only:
                homes.setdefault(slot.delta, (slot.owner, slot.slot))
        return homes

    @property
    def state_operands(self) -> set:
        return set(self.reads)

    @cached_property
    def reads(self) -> dict:
        """The operand of each state read → (state, K): s_(t−1) ("o_prev") and every s_(t−K) ("o_lag3")."""
        d = self.derivation
        return {str(d.leaf(state, lag)): (state, lag) for state, lags in d.lags.items() for lag in lags}

    def lag(self, group: MapGroup) -> int:
        """K of a state group (the maps of s_(t−K)); 1 for s_(t−1) and for the other groups."""
        return self.reads.get(group.operand, (None, 1))[1]

    @property
    def rings(self) -> tuple:
        """(state, K, what step t sends to s_(t−K)) for every lagged read: each a ring of K rows."""
        return tuple((state, lag, adjoint) for (state, lag), adjoint in self.derivation.sent_lagged.items())

    @property
    def stored_maps(self) -> list[MapGroup]:
        """The state groups whose maps the backward pass reads: kept for every step."""
        return [g for g in self.groups if g.kind == "state" and g.reads_maps]

    @property
    def x_group(self) -> MapGroup:
        return self.group("x")

    def forward_order(self, steps: int | None) -> tuple[Step, ...]:
        """The forward steps in order: t = 1..n unrolled, or the loop's one step (``steps`` None)."""
        seeded = not self.derivation.outputs.default
        if steps is None:
            return (Step(None, False, False, None, seeded),)
        return tuple(Step(t, t == 1, t == steps, steps, seeded) for t in range(1, steps + 1))

    def backward_order(self, steps: int | None) -> tuple[Step, ...]:
        """The backward steps in order: t = n..1 unrolled, or the loop's one step."""
        return tuple(reversed(self.forward_order(steps)))

    def vjp_order(self, steps: int | None) -> tuple[Step, ...]:
        """The backward steps of the vjp: every state seeded by its upstream gradient, s_0 a value."""
        if steps is None:
            return (Step(None, False, False, None, False, True),)
        return tuple(Step(t, t == 1, t == steps, steps, False, True) for t in range(steps, 0, -1))

    def vjp_forward_order(self, steps: int | None) -> tuple[Step, ...]:
        """The forward steps of the vjp (s_0 read where a step reads it)."""
        return tuple(reversed(self.vjp_order(steps)))

    @property
    def delta_width(self) -> int:
        """δ entries per sequence, step and unit (the slots of every δ array)."""
        return sum(g.count for g in self.owners)


def layout_of(d: CellDerivation) -> Layout:
    """The layout of ``d``'s module (see the module's docstring)."""
    read = _read(d)
    groups = _groups(d, read)
    computed = {adjoint.symbol for adjoint in d.adjoints}
    slots = tuple(DeltaSlot(delta, g.operand, k, delta in computed)
                  for g in groups if not g.shared for k, delta in enumerate(g.deltas) if delta != 0)
    node_names = {node.name for node in d.nodes}
    stored_set = {node.name for node in d.nodes if node.state or node.symbol in read}
    stored_set |= {g.operand for g in groups if g.operand in node_names}   # ∂L/∂M reads every operand
    stored = tuple(node.name for node in d.nodes if node.name in stored_set)
    x_group = next(g for g in groups if g.kind == "x")
    node_exprs, folded = _folded(d, x_group, read)
    stacked = _stacked(d, groups, x_group, node_exprs, stored_set)
    fused = _fused(d, groups, node_exprs, stored_set, stacked)
    direct = _direct(d, x_group, node_exprs, read, fused)
    return Layout(d, groups, frozenset(read), stored, slots, node_exprs, folded, stacked, fused, direct,
                  _parts(d, groups))


def _read(d: CellDerivation) -> set:
    """What the backward pass reads of the forward pass."""
    read = set()
    for adjoint in (*d.adjoints, *d.sent.values(), *d.sent_lagged.values()):
        read |= adjoint.expr.free_symbols
    for terms in d.gradients.values():
        for term in terms:
            read |= term[1].free_symbols
    return read


def _groups(d: CellDerivation, read: set) -> tuple[MapGroup, ...]:
    """The derivation's linears stacked by operand: x, then the states, then nodes of the step."""
    node_names = {node.name for node in d.nodes}
    members: dict[str, list] = {}
    for linear in d.linears:
        members.setdefault(linear.operand, []).append(linear)
    kinds = {operand: "x" if operand == "x" else "node" if operand in node_names else "state" for operand in members}
    order = {"x": 0, "state": 1, "node": 2}
    groups = []
    for operand in sorted(members, key=lambda o: order[kinds[o]]):   # stable: the linears' order within a kind
        linears = members[operand]
        deltas = tuple(d.symbols["linear_delta"][linear.symbol] for linear in linears)
        owner = next((g.operand for g in groups if not g.shared and g.deltas == deltas), operand)
        symbols = tuple(linear.symbol for linear in linears)
        groups.append(MapGroup(operand, kinds[operand], tuple(linear.matrix for linear in linears), symbols,
                               deltas, owner, bool(set(symbols) & read)))
    return tuple(groups)


def _folded(d: CellDerivation, x_group: MapGroup, read: set) -> tuple[dict, dict]:
    """Biases folded into the projection: a vector v added (coefficient 1) to a map of x in a node
    becomes part of that slot of projection = x Wᵀ + b, computed for every step at once."""
    vectors = set(d.symbols["vectors"].values())
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
    return node_exprs, folded


def _stacked(d, groups, x_group, node_exprs, stored_set) -> tuple | None:
    """Pre-activations that are exactly (W x + b)_k + (U s)_k for k = 0..m−1: one stacked sum."""
    for group in groups:
        if group.kind != "state":
            continue
        members = []
        for x_symbol, s_symbol in zip(x_group.symbols, group.symbols):
            node = next((n for n in d.nodes if node_exprs[n.name] == x_symbol + s_symbol), None)
            if node is None or node.name in stored_set or node.state:
                break
            members.append(node.name)
        if len(members) >= 2:
            return group.operand, tuple(members)
    return None


def _fused(d, groups, node_exprs, stored_set, stacked) -> tuple[Fused, ...]:
    """A pre-activation u used only by one stored node v = f(u) is summed straight into v's row and f
    applied there; a map of a state in that sum, applied to nothing else, is computed into the row
    first: no temporaries in the step."""
    fused = []
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
        first = next((g.operand for g in groups
                      if g.kind == "state" and g.count == 1 and not g.reads_maps
                      and not (stacked and stacked[0] == g.operand)
                      and g.symbols[0] in sp.Add.make_args(node_exprs[node.name])
                      and sum(g.symbols[0] in node_exprs[n.name].free_symbols for n in d.nodes) == 1), None)
        fused.append(Fused(user.name, node.name, first))
    return tuple(fused)


def _direct(d, x_group, node_exprs, read, fused) -> str | None:
    """A single map of x that only a fused sum reads is computed for every step straight into the rows
    of the stored node, as the hand-written RNN does: no projection array to write and read back."""
    if len(x_group.symbols) != 1 or x_group.symbols[0] in read:
        return None
    (x_symbol,) = x_group.symbols
    users = [n for n in d.nodes if x_symbol in node_exprs[n.name].free_symbols]
    # only a map added as it is (coefficient 1: 2 (W x) is no row to write into)
    if (len(users) == 1 and users[0].name in {f.pre for f in fused}
            and x_symbol in sp.Add.make_args(node_exprs[users[0].name])):
        return next(f.node for f in fused if f.pre == users[0].name)
    return None


def _parts(d: CellDerivation, groups) -> tuple[tuple[str, ...], ...]:
    """The step's nodes in order, cut after each node whose maps are a product (not after the last)."""
    products = {g.operand for g in groups if g.kind == "node"}
    parts: list[list] = [[]]
    for node in d.nodes:
        parts[-1].append(node.name)
        if node.name in products and node is not d.nodes[-1]:
            parts.append([])
    return tuple(tuple(part) for part in parts)


__all__ = ["DeltaSlot", "Fused", "Layout", "MapGroup", "Step", "layout_of"]
