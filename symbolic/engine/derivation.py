"""The generic BPTT derivation over a cell: one rule for local partials, one for linear maps, one for time.

Given a cell's per-unit equations (``symbolic.cells.spec``), the engine

1. normalises them into **nodes**: each activation f(·) becomes a node of its own whose derivative is
   written with its stored output (tanh: 1 − v², σ: v(1 − v), the entries of ``activations.ACTIVATIONS``),
   and each activation's argument, when it is more than a name, becomes a pre-activation node a_v;
2. takes the **local partials** ∂v/∂u of every node by ``sp.diff`` (for an activation, f′ from the table,
   checked against ``sp.diff``);
3. runs **reverse accumulation through one step**: δv = δv_in + Σ_(w uses v) δw ∂w/∂v, from the last
   node back, where δv_in is what step t + 1 sends to a state (and δs_n = (ŷ − y) w_y for the readout);
4. applies **one transpose rule** to every linear map M u: δ(M u) flows back as Mᵀ δ(M u) into u, and
   ∂L/∂M = Σ_t δ(M u)_t u_tᵀ;
5. applies **one time rule**: what a step sends to s_(t−1) is δs_in of step t − 1; per-unit parameters
   collect ∂L/∂b = Σ_t Σ_(w uses b) δw ∂w/∂b. A state read K steps back (``Cell.lag``, s_(t−K)) is one
   more leaf of the step: what step t sends to s_(t−K) arrives in δs_in of step t − K, so δs_t totals
   what steps t + 1 and t + K send (``sent``, ``sent_lagged``).

Everything is per unit (SymPy scalars): linear maps appear as the symbols ``M@u``, so nothing symbolic
grows with H or D. ``CellDerivation`` is plain data; ``evaluate`` runs it numerically (float64, or
mpmath at any precision) as the reference implementation the proofs, the checker and the grader use.

A derivation can be **mutated** (``mutate``) into one of the classic wrong BPTTs (long-term terms
dropped, f′ missing, a direct path missing, Mᵀ written as M, the batch mean missing, the residual's
sign flipped): the negative controls of the proof and the catalogue of ``bptt grade``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import sympy as sp

from ..activations import ACTIVATIONS, sigmoid
from ..cells.spec import FUNCTIONS, Cell
from ..outputs import Outputs

#: Digits of the high-precision evaluation.
DIGITS = 60


@dataclass(frozen=True)
class Node:
    """One value of a step: ``symbol = expr`` per unit.

    ``activation``: the table name when expr = f(u) with u a symbol (then ∂v/∂u = f′ written with v);
    ``state``: the state this node updates; ``auto``: made by the engine (a pre-activation or a lifted f).
    """

    name: str
    symbol: sp.Symbol
    expr: sp.Expr
    activation: str | None = None
    state: str | None = None
    auto: bool = False


@dataclass(frozen=True)
class Linear:
    """A linear map applied per unit: ``symbol`` = (M u)_j with M the parameter ``matrix``."""

    symbol: sp.Symbol
    matrix: str
    operand: str          # "x", a state's previous value "s_prev", or a node of this step
    delta: sp.Symbol      # δ(M u), per unit


@dataclass(frozen=True)
class Adjoint:
    """δ of one value of a step: an elementwise ``expr`` plus Mᵀ δ(M u) for each (M, δ) in ``transposed``."""

    name: str
    symbol: sp.Symbol
    expr: sp.Expr
    transposed: tuple = ()


@dataclass(frozen=True)
class CellDerivation:
    """The BPTT of one cell, derived per unit; plain data (SymPy expressions and names)."""

    cell: Cell
    #: forward nodes in evaluation order
    nodes: tuple
    linears: tuple
    #: state name → the symbol of its value at t − 1, and of its node at t
    previous: dict
    #: node name → {symbol u: ∂v/∂u} (immediate partials, stored values)
    partials: dict
    #: state name → δs_in, the adjoint step t + 1 sends to s_t
    incoming: dict
    #: adjoints in the order the backward step computes them (nodes, then linear maps, then previous states)
    adjoints: tuple
    #: state name → δs_(t−1) (the Adjoint sent back in time)
    sent: dict
    #: parameter name → ("outer", δ symbol, operand) for a matrix, ("sum", expr) for a per-unit vector
    gradients: dict
    #: ∂L/∂z written with ŷ and y (the residual ŷ − y), and the loss of the logit z
    output_factor: sp.Expr
    loss_of_logit: sp.Expr
    symbols: dict
    #: the rule changed by ``mutate`` (None: the exact derivation)
    mutation: str | None = None
    #: the transpose rule applied to linear maps (False only in the mutation "untransposed")
    transpose: bool = True
    #: gradients averaged over the batch (False only in the mutation "no_batch_mean")
    batch_mean: bool = True
    #: (state name, K ≥ 2) → the symbol of s_(t−K), a state read K steps back (``Cell.lag``)
    lagged: dict = field(default_factory=dict)
    #: (state name, K ≥ 2) → δs_(t−K), the Adjoint step t sends K steps back (received by δs_in at t − K)
    sent_lagged: dict = field(default_factory=dict)
    #: the output side (``symbolic.outputs``): at every step the readout's error W_yᵀ e_t joins δs_in of
    #: the output state, beside what step t + 1 sends (the per-unit recursion is the same)
    outputs: Outputs = field(default_factory=Outputs)

    # -- what stages read ----------------------------------------------------------------------------

    @property
    def states(self) -> tuple:
        return tuple(self.cell.states)

    @property
    def output_state(self) -> str:
        return self.cell.output_state

    @property
    def parameters(self) -> dict:
        """Parameter name → shape in "H"/"D"/"K": the cell's, the readout (K, H) and its bias (K,) for softmax."""
        shapes = dict(self.cell.parameters)
        shapes[self.cell.readout] = self.outputs.readout_shape()
        if self.cell.readout_bias:
            shapes[self.cell.readout_bias] = self.outputs.bias_shape()
        return shapes

    @property
    def lags(self) -> dict:
        """state name → the steps back it is read at, (1, K, …): 1 is s_(t−1), every K a ``Cell.lag``."""
        return {state: (1, *sorted(k for (s, k) in self.lagged if s == state)) for state in self.states}

    @property
    def max_lag(self) -> int:
        """The largest K of any state read K steps back (1 for a cell without lags)."""
        return max((k for (_, k) in self.lagged), default=1)

    def leaf(self, state: str, lag: int) -> sp.Symbol:
        """The symbol of s_(t−lag): the previous value for lag 1, else the lagged symbol."""
        return self.previous[state] if lag == 1 else self.lagged[(state, lag)]

    def sent_at(self, state: str, lag: int) -> Adjoint:
        """What step t sends to s_(t−lag) (``sent`` for lag 1, ``sent_lagged`` else)."""
        return self.sent[state] if lag == 1 else self.sent_lagged[(state, lag)]

    @property
    def path_steps(self) -> int:
        """A sequence length from which every path between the states exists: 1 + Σ_states (the largest
        lag it is read at); a chain of copy states (o1' = o, o2' = o1) or a lag K reaches the update
        only after that many steps."""
        return 1 + sum(max(lags) for lags in self.lags.values())

    def shapes(self, hidden: int, inputs: int) -> dict[str, tuple[int, ...]]:
        """Parameter name → shape for hidden size H and input size D."""
        sizes = {"H": hidden, "D": inputs, "K": self.outputs.classes}
        return {name: tuple(sizes[s] for s in shape) for name, shape in self.parameters.items()}

    @cached_property
    def node(self) -> dict:
        return {node.name: node for node in self.nodes}

    @cached_property
    def adjoint(self) -> dict:
        return {adjoint.name: adjoint for adjoint in self.adjoints}

    @cached_property
    def state_jacobian(self) -> dict:
        """(new state s', previous state s) → (direct, through) per unit: ∂s'_t/∂s_(t−1) =
        diag(direct) + Σ_(M u) diag(∂s'/∂(M u)) M ∂u/∂s_(t−1); ``through`` maps each linear symbol to
        ∂s'/∂(M u). ``direct`` is a path that skips every matrix (the LSTM's carousel f_t, the GRU's z)."""
        return {(state, source): jacobian for (state, source, lag), jacobian in self.lag_jacobian.items()
                if lag == 1}

    @cached_property
    def lag_jacobian(self) -> dict:
        """(new state s', state s, K) → (direct, through): the state Jacobian per lag, ∂s'_t/∂s_(t−K), as
        ``state_jacobian`` writes ∂s'_t/∂s_(t−1) (K = 1). Over a gap the products of these sum over every
        path: ∂s_n/∂s_j = Σ_K ∂s_n/∂s_(n−K) ∂s_(n−K)/∂s_j."""
        totals = self.totals
        result = {}
        for state, node in self._state_nodes.items():
            for source, lag in ((s, k) for s, lags in self.lags.items() for k in lags):
                previous = self.leaf(source, lag)
                direct = totals[node.name].get(previous, sp.S.Zero)
                # the maps whose operand moves with s_(t−1): s_(t−1) itself, or a node of this step
                # that depends on it (Cho's U (r ⊙ h))
                moving = {str(previous)}
                while True:   # through any chain of maps: U (m ⊙ m) with m = tanh(V h) moves with h
                    linear_moving = {l.symbol for l in self.linears if l.operand in moving}
                    grown = moving | {
                        name for name, total in totals.items()
                        if total.get(previous, 0) != 0 or set(total) & linear_moving
                    }
                    if grown == moving:
                        break
                    moving = grown
                through = {
                    linear.symbol: totals[node.name].get(linear.symbol, sp.S.Zero)
                    for linear in self.linears
                    if linear.operand in moving and totals[node.name].get(linear.symbol, sp.S.Zero) != 0
                }
                result[(state, source, lag)] = (sp.factor_terms(direct), through)
        return result

    @cached_property
    def totals(self) -> dict:
        """node name → {leaf: d node/d leaf within one step} for the leaves: previous states, linear maps
        and per-unit parameters (forward accumulation of the immediate partials)."""
        totals: dict = {}
        leaves = set(self.previous.values()) | set(self.lagged.values()) | {linear.symbol for linear in self.linears}
        leaves |= set(self.symbols["vectors"].values())
        for node in self.nodes:
            total: dict = {}
            for symbol, partial in self.partials[node.name].items():
                if symbol in leaves:
                    total[symbol] = total.get(symbol, sp.S.Zero) + partial
                elif str(symbol) in totals:
                    for leaf, inner in totals[str(symbol)].items():
                        total[leaf] = total.get(leaf, sp.S.Zero) + partial * inner
            totals[node.name] = {leaf: value for leaf, value in total.items() if value != 0}
        return totals

    @cached_property
    def _state_nodes(self) -> dict:
        return {node.state: node for node in self.nodes if node.state}

    def state_node(self, state: str) -> Node:
        return self._state_nodes[state]

    def mutate(self, mutation: str) -> CellDerivation:
        """A deliberately wrong derivation (see ``MUTATIONS``); raises ValueError where it does not apply."""
        return _mutate(self, mutation)

    def applicable_mutations(self) -> list[str]:
        names = []
        for name in MUTATIONS:
            try:
                self.mutate(name)
            except ValueError:
                continue
            names.append(name)
        return names


# -- normalisation -------------------------------------------------------------------------------------


def _activation_of(expr) -> str | None:
    for function, name in FUNCTIONS.items():
        if isinstance(expr, function):
            return name
    return None


def _normalise(cell: Cell) -> list[Node]:
    """The cell's equations as nodes: every activation its own node of a symbol argument."""
    nodes: list[Node] = []
    taken = {eq.name for eq in cell.equations} | set(cell.states) | set(cell.parameters)
    taken |= {str(symbol) for symbol in cell.states.values()}
    taken |= {str(a.symbol).replace("@", "_") for a in cell.applications}   # the maps' locals in code

    def fresh(base: str) -> str:
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def lift(expr, owner: str):
        """expr with each activation application replaced by a node symbol (nodes appended)."""
        if not expr.args:
            return expr
        if _activation_of(expr):
            argument = lift(expr.args[0], owner)
            if not argument.is_Symbol:
                pre = fresh(f"a_{owner}")
                nodes.append(Node(pre, sp.Symbol(pre), argument, auto=True))
                argument = sp.Symbol(pre)
            # a map's symbol M@u is no Python name: the lifted node is named after M_u
            label = str(expr.args[0]).replace("@", "_") if expr.args[0].is_Symbol else owner
            name = fresh(f"{_activation_of(expr)}_{label}")
            nodes.append(Node(name, sp.Symbol(name), expr.func(argument), _activation_of(expr), auto=True))
            return sp.Symbol(name)
        return expr.func(*(lift(arg, owner) for arg in expr.args))

    for eq in cell.equations:
        expr = eq.expr
        if _activation_of(expr):
            argument = lift(expr.args[0], eq.name)
            if not argument.is_Symbol:
                pre = fresh(f"a_{eq.name}")
                nodes.append(Node(pre, sp.Symbol(pre), argument, auto=True))
                argument = sp.Symbol(pre)
            nodes.append(Node(eq.name, eq.symbol, expr.func(argument), _activation_of(expr), eq.state))
        else:
            nodes.append(Node(eq.name, eq.symbol, lift(expr, eq.name), None, eq.state))
    return nodes


def _partials(node: Node) -> dict:
    """∂v/∂u for every symbol u of the node's expression."""
    if node.activation:
        (argument,) = node.expr.args
        activation = ACTIVATIONS[node.activation]
        from_table = activation.derivative_from_output(node.symbol)
        derived = sp.diff(node.expr, argument).xreplace({node.expr: node.symbol})
        assert sp.expand(derived - from_table) == 0, (node.name, derived, from_table)
        return {argument: from_table}
    return {
        symbol: sp.diff(node.expr, symbol)
        for symbol in sorted(node.expr.free_symbols, key=sp.default_sort_key)
    }


# -- the derivation -------------------------------------------------------------------------------------


def _sent_to(name: str, symbol, linears: tuple, linear_delta: dict, through_users) -> Adjoint:
    """What step t sends back to a leaf s_(t−K): its uses within the step, and Mᵀ δ(M s_(t−K))."""
    direct = through_users(symbol)
    transposed = tuple(
        (linear.matrix, linear_delta[linear.symbol])
        for linear in linears
        if linear.operand == str(symbol) and linear_delta[linear.symbol] != 0
    )
    return Adjoint(name, sp.Symbol(f"delta_{name}"), sp.factor_terms(direct) if direct != 0 else direct, transposed)


def _gradients(cell: Cell, linears: tuple, vectors: dict, linear_delta: dict, through_users) -> dict:
    """Each parameter's terms of one step: an outer product per map it is, a sum per vector it is."""
    gradients: dict = {}
    for name in cell.parameters:
        if name in cell.matrices:
            for linear in linears:
                if linear.matrix == name:
                    gradients.setdefault(name, []).append(("outer", linear_delta[linear.symbol], linear.operand))
        elif name in vectors:
            gradients[name] = [("sum", sp.factor_terms(through_users(vectors[name])))]
    gradients = {name: tuple(terms) for name, terms in gradients.items()}
    return gradients


def derive_model(model) -> CellDerivation:
    """The derivation of ``model``'s cell with its outputs: what a command computes once and hands to
    every stage (typeset, proof, codegen, analysis); library callers that bring none get it here too."""
    from ..cells import cell_of

    return derive_cell(cell_of(model), outputs=model.outputs)


def derive_cell(cell: Cell, local_partials=None, outputs: Outputs | None = None) -> CellDerivation:
    """The exact BPTT of ``cell`` (validated), per unit, with the readout and loss of ``outputs`` (the
    notes' σ and binary cross-entropy after the last step by default). ``local_partials`` (node →
    {u: ∂v/∂u}) replaces the rule for the local partials: only the mutations use it."""
    outputs = outputs or Outputs()
    cell.validate()
    nodes = _normalise(cell)
    partials = {node.name: (local_partials or _partials)(node) for node in nodes}
    previous = dict(cell.states)
    linears = tuple(
        Linear(a.symbol, a.matrix, a.operand, sp.Symbol(f"delta_{a.matrix}@{a.operand}"))
        for a in cell.applications
    )
    vectors = {name: sp.Symbol(name) for name in cell.vectors}
    delta = {node.name: sp.Symbol(f"delta_{node.name}") for node in nodes}
    incoming = {state: sp.Symbol(f"delta_{state}_in") for state in cell.states}

    # Who uses what: symbol → [(node, ∂node/∂symbol)]
    users: dict = {}
    for node in nodes:
        for symbol, partial in partials[node.name].items():
            users.setdefault(symbol, []).append((node, partial))

    # Reverse accumulation through one step. A δ that is a bare symbol is an alias, not a new value.
    value: dict = {}

    def through_users(symbol) -> sp.Expr:
        return sp.Add(*(value[user.name] * partial for user, partial in users.get(symbol, ())))

    adjoints: list[Adjoint] = []
    linear_delta: dict = {}
    operand_of: dict = {}
    for linear in linears:
        operand_of.setdefault(linear.operand, []).append(linear)

    def linear_value(linear: Linear) -> sp.Expr:
        """δ(M u): an alias of a node's δ where it is one, else an adjoint of its own."""
        if linear.symbol not in linear_delta:
            expr = through_users(linear.symbol)
            expr = sp.factor_terms(expr) if expr != 0 else expr
            if not (expr.is_Symbol or expr == 0):
                adjoints.append(Adjoint(str(linear.delta), linear.delta, expr))
                expr = linear.delta
            linear_delta[linear.symbol] = expr
        return linear_delta[linear.symbol]

    for node in reversed(nodes):
        transposed = tuple((linear.matrix, linear_value(linear)) for linear in operand_of.get(node.name, ()))
        transposed = tuple((matrix, delta) for matrix, delta in transposed if delta != 0)
        expr = through_users(node.symbol)
        if node.state:
            expr = incoming[node.state] + expr
        expr = sp.factor_terms(expr) if expr != 0 else expr
        if not transposed and (expr.is_Symbol or expr == 0):
            value[node.name] = expr
            continue
        value[node.name] = delta[node.name]
        adjoints.append(Adjoint(node.name, delta[node.name], expr, transposed))
    for linear in linears:
        linear_value(linear)
    sent = {state: _sent_to(f"{state}_prev", symbol, linears, linear_delta, through_users)
            for state, symbol in previous.items()}
    sent_lagged = {key: _sent_to(str(symbol), symbol, linears, linear_delta, through_users)
                   for key, symbol in cell.lags.items()}
    gradients = _gradients(cell, linears, vectors, linear_delta, through_users)

    z, y, y_hat = sp.Symbol("z"), sp.Symbol("y"), sp.Symbol("y_hat")
    loss_of_logit, output_factor = _loss_terms(outputs.loss, z, y, y_hat)

    symbols = {"z": z, "y": y, "y_hat": y_hat, "delta": delta, "vectors": vectors,
               "value": dict(value), "linear_delta": dict(linear_delta)}
    return CellDerivation(
        cell=cell, nodes=tuple(nodes), linears=linears, previous=previous, partials=partials,
        incoming=incoming, adjoints=tuple(adjoints), sent=sent, gradients=gradients,
        output_factor=output_factor, loss_of_logit=loss_of_logit, symbols=symbols,
        lagged=dict(cell.lags), sent_lagged=sent_lagged, outputs=outputs,
    )


def _loss_terms(loss: str, z, y, y_hat) -> tuple:
    """The loss of one logit z and ∂ℓ/∂z by sp.diff, written with ŷ and y: bce ŷ − y (ŷ = σ(z)); softmax
    ŷ_k − y_k per class (y_k the one-hot entry [y = k], the sum taken at K = 2, where z is z_1); mse
    2 (ŷ − y) (ŷ = z)."""
    if loss == "bce":
        loss_of_logit = -y * sp.log(sigmoid(z)) - (1 - y) * sp.log(1 - sigmoid(z))
        return loss_of_logit, sp.expand(sp.diff(loss_of_logit, z).xreplace({sigmoid(z): y_hat}))
    if loss == "softmax":
        other = sp.Symbol("z_2")
        loss_of_logit = sp.log(sp.exp(z) + sp.exp(other)) - y * z - (1 - y) * other
        softmax = sp.exp(z) / (sp.exp(z) + sp.exp(other))
        return loss_of_logit, sp.expand(sp.diff(loss_of_logit, z).xreplace({softmax: y_hat}))
    loss_of_logit = (z - y) ** 2
    return loss_of_logit, sp.expand(sp.diff(loss_of_logit, z).xreplace({z: y_hat}))


# -- mutations: the classic wrong BPTTs ---------------------------------------------------------------

MUTATIONS = {
    "truncated": "long-term terms dropped: nothing is sent back to s_(t−1) (BPTT truncated at one step)",
    "no_activation_derivative": "f′ missing: the activations' derivatives are left out of the chain",
    "derivative_wrong_step": "f′ evaluated at the wrong step: f′(o_(t−1)) where f′(o_t) belongs",
    "no_direct_path": "a direct path missing: the elementwise path s_(t−1) → s_t (the LSTM's carousel "
                      "δc_(t+1) ⊙ f_(t+1), the GRU's z ⊙ h) is left out",
    "untransposed": "Mᵀ written as M: the δ recursion applies the recurrent matrix untransposed",
    "no_lag_path": "a skip path missing: nothing is sent K steps back to s_(t−K), so δs_t receives from step "
                   "t + 1 only",
    "no_batch_mean": "the mean over the batch missing: gradients B times too large",
    "residual_sign": "a sign error in the residual: y − ŷ where ŷ − y belongs",
}


def _mutate(d: CellDerivation, mutation: str) -> CellDerivation:
    if mutation not in MUTATIONS:
        raise ValueError(f"unknown mutation {mutation!r}: one of {', '.join(MUTATIONS)}")
    if mutation == "truncated":
        sent = {state: replace(adjoint, expr=sp.S.Zero, transposed=()) for state, adjoint in d.sent.items()}
        lagged = {key: replace(adjoint, expr=sp.S.Zero, transposed=()) for key, adjoint in d.sent_lagged.items()}
        return replace(d, sent=sent, sent_lagged=lagged, mutation=mutation)
    if mutation == "no_lag_path":
        if not d.sent_lagged:
            raise ValueError("no state is read more than one step back")
        lagged = {key: replace(adjoint, expr=sp.S.Zero, transposed=()) for key, adjoint in d.sent_lagged.items()}
        return replace(d, sent_lagged=lagged, mutation=mutation)
    if mutation == "no_batch_mean":
        return replace(d, batch_mean=False, mutation=mutation)
    if mutation == "residual_sign":
        return replace(d, output_factor=-d.output_factor, mutation=mutation)
    if mutation == "untransposed":
        square = [linear for linear in d.linears if d.cell.matrices[linear.matrix] == ("H", "H")]
        if not square:
            raise ValueError("no square matrix to transpose")
        return replace(d, transpose=False, mutation=mutation)
    if mutation == "no_direct_path":
        changed = any(adjoint.expr != 0 for adjoint in (*d.sent.values(), *d.sent_lagged.values()))
        if not changed:
            raise ValueError("no direct elementwise path between states")
        sent = {state: replace(adjoint, expr=sp.S.Zero) for state, adjoint in d.sent.items()}
        lagged = {key: replace(adjoint, expr=sp.S.Zero) for key, adjoint in d.sent_lagged.items()}
        return replace(d, sent=sent, sent_lagged=lagged, mutation=mutation)
    if mutation == "no_activation_derivative":
        rules = {}
        for node in d.nodes:
            if node.activation and node.activation != "identity":
                (argument,) = node.expr.args
                rules[(node.name, argument)] = sp.S.One
        if not rules:
            raise ValueError("no activation with a derivative other than 1")
        return _rederived(d, rules, mutation)
    if mutation == "derivative_wrong_step":
        rules = {}
        for node in d.nodes:
            if node.activation and node.state and node.activation != "identity":
                (argument,) = node.expr.args
                previous = d.previous[node.state]
                rules[(node.name, argument)] = ACTIVATIONS[node.activation].derivative_from_output(previous)
        if not rules:
            raise ValueError("no state is an activation's output")
        return _rederived(d, rules, mutation)
    raise AssertionError(mutation)


def _rederived(d: CellDerivation, rules: dict, mutation: str) -> CellDerivation:
    """The derivation again with some local partials replaced: (node, symbol) → wrong partial."""
    def patched(node):
        return {symbol: rules.get((node.name, symbol), partial) for symbol, partial in _partials(node).items()}

    return replace(derive_cell(d.cell, local_partials=patched, outputs=d.outputs), mutation=mutation)


__all__ = ["DIGITS", "MUTATIONS", "Adjoint", "CellDerivation", "Linear", "Node", "derive_cell", "derive_model"]
