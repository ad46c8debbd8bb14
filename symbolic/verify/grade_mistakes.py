"""``bptt grade``'s wrong derivations: the exact gradients of deliberately wrong BPTTs, computed on demand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .grade_report import MODIFIERS

COMPLEX_STEP = 1e-30


# -- the wrong derivations ------------------------------------------------------------------------------


def _chain_only(d, mutation: str):
    """d with ``mutation`` applied to what each step sends back in time only: the adjoints that feed the
    gradients stay exact, a renamed copy of the mutated adjoints feeds s_(t−1)."""
    import sympy as sp

    wrong = d.mutate(mutation)
    rename = {a.symbol: sp.Symbol(f"{a.symbol}__chain") for a in wrong.adjoints}

    def renamed(adjoint, name=None):
        return replace(adjoint, name=name or adjoint.name, symbol=rename.get(adjoint.symbol, adjoint.symbol),
                       expr=adjoint.expr.xreplace(rename),
                       transposed=tuple((m, delta.xreplace(rename)) for m, delta in adjoint.transposed))

    chain = tuple(renamed(a, f"{a.name}__chain") for a in wrong.adjoints)
    sent = {state: replace(renamed(adjoint), symbol=adjoint.symbol) for state, adjoint in wrong.sent.items()}
    lagged = {key: replace(renamed(adjoint), symbol=adjoint.symbol) for key, adjoint in wrong.sent_lagged.items()}
    return replace(d, adjoints=d.adjoints + chain, sent=sent, sent_lagged=lagged, mutation=f"{mutation}_in_chain")


def _unsquared(d):
    """d with tanh′ written 1 − o where 1 − o² belongs (the square forgotten); ValueError without a tanh."""
    from ..engine.derivation import _partials, derive_cell

    tanh = {node.name: node for node in d.nodes if node.activation == "tanh"}
    if not tanh:
        raise ValueError("no tanh activation")

    def patched(node):
        partials = _partials(node)
        if node.name in tanh:
            (argument,) = node.expr.args
            partials[argument] = 1 - node.symbol
        return partials

    return replace(derive_cell(d.cell, local_partials=patched, outputs=d.outputs), mutation="tanh_derivative_unsquared")


class _ComplexForward:
    """The cell's forward pass in complex arithmetic, for the complex step: states of every step and
    the loss of every sequence, with an optional poke i·h into one state's unit at one step."""

    def __init__(self, d):
        import sympy as sp

        self.d = d
        modules = [{"sigmoid": _sigmoid, "relu": _relu}, "numpy"]
        self.nodes = []
        for node in d.nodes:
            arguments = sorted(node.expr.free_symbols, key=str)
            self.nodes.append((node, arguments, sp.lambdify(arguments, node.expr, modules=modules)))

    def run(self, params: dict, x: np.ndarray, y: np.ndarray, poke=None):
        d, cell = self.d, self.d.cell
        batch, steps, _ = x.shape
        hidden = params[cell.readout].shape[0]
        zero = np.zeros((batch, hidden), dtype=complex)
        states = {state: [zero] for state in d.states}
        vectors = {symbol: params[name] for name, symbol in d.symbols["vectors"].items()}
        # every state read: s_(t−1) and each s_(t−K) (an initial 0 before the sequence)
        leaves = [(state, lag, d.leaf(state, lag)) for state, lags in d.lags.items() for lag in lags]
        for t in range(steps):
            known = {symbol: states[state][t + 1 - lag] if t + 1 >= lag else zero for state, lag, symbol in leaves}
            known |= vectors
            sources = {"x": x[:, t], **{str(symbol): known[symbol] for _, _, symbol in leaves}}

            for operand in ("x", *(str(symbol) for _, _, symbol in leaves)):
                self._apply_maps(operand, known, sources, params)
            for node, arguments, function in self.nodes:
                value = function(*(known[a] for a in arguments)) + zero
                if poke is not None and node.state == poke[0] and t == poke[1]:
                    value = value.copy()
                    value[:, poke[2]] += 1j * COMPLEX_STEP
                known[node.symbol] = value
                sources[node.name] = value
                self._apply_maps(node.name, known, sources, params)
            for state in d.states:
                states[state].append(known[d.state_node(state).symbol])
        z = states[d.output_state][-1] @ params[cell.readout]
        if cell.readout_bias:
            z = z + params[cell.readout_bias]
        return states, y * _softplus(-z) + (1 - y) * _softplus(z)

    def _apply_maps(self, operand: str, known: dict, sources: dict, params: dict) -> None:
        """(M u) for every linear map of the operand u, once u is known."""
        for linear in self.d.linears:
            if linear.operand == operand:
                known[linear.symbol] = sources[operand] @ params[linear.matrix].T


def _total_derivative(d, forward: _ComplexForward, case) -> dict:
    """The notes' slip, generically: ∂L/∂θ ≈ mean_b Σ_t Σ_s ⟨dL/ds_t, d s_t/dθ⟩ with both factors total
    derivatives (complex step on the forward pass); the readout's gradients are exact (no state depends
    on them)."""
    cell = d.cell
    params = {name: np.asarray(value, dtype=complex) for name, value in case.params.items()}
    x, y = case.x.astype(complex), case.y
    hidden = params[cell.readout].shape[0]
    # dL_b/ds_t[b, u], every sequence at once (their losses are independent)
    adjoint = {}
    for state in d.states:
        for t in range(case.steps):
            columns = []
            for unit in range(hidden):
                _, loss = forward.run(params, x, y, poke=(state, t, unit))
                columns.append(np.imag(loss) / COMPLEX_STEP)
            adjoint[(state, t)] = np.stack(columns, axis=1)
    readout = {cell.readout, cell.readout_bias}
    gradients = {}
    from ..engine.evaluate import evaluate

    exact = evaluate(d, case.params, case.x, case.y).gradients
    for name, value in params.items():
        if name in readout:
            gradients[name] = np.asarray(exact[name], dtype=float)
            continue
        gradient = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            shifted = dict(params)
            shifted[name] = value.copy()
            shifted[name][index] += 1j * COMPLEX_STEP
            states, _ = forward.run(shifted, x, y)
            total = 0.0
            for (state, t), weight in adjoint.items():
                total += float(np.sum(weight * np.imag(states[state][t + 1]))) / COMPLEX_STEP
            gradient[index] = total / case.batch
        gradients[name] = gradient
    return gradients


def _sigmoid(z):
    positive = np.real(z) > 0
    e = np.exp(np.where(positive, -z, z))
    return np.where(positive, 1 / (1 + e), e / (1 + e))


def _relu(z):
    return np.where(np.real(z) > 0, z, 0)


def _softplus(z):
    positive = np.real(z) > 0
    return np.where(positive, z, 0) + np.log1p(np.exp(np.where(positive, -z, z)))


class _Candidates:
    """The wrong gradients, computed only when asked for: name → per case → gradients (user shapes)."""

    def __init__(self, d, interface):
        from ..engine.derivation import MUTATIONS

        self.d, self.interface = d, interface
        self.bases: dict = {}
        for name in MUTATIONS:
            if name in MODIFIERS:
                continue
            try:
                self.bases[name] = d.mutate(name)
            except ValueError:
                continue
            if name in ("no_activation_derivative", "derivative_wrong_step"):
                self.bases[f"{name}_in_chain"] = _chain_only(d, name)
        self.bases["total_derivative"] = None  # computed by complex step
        self._forward = None
        self._values: dict = {}

    def names(self) -> list[tuple[str, str | None, tuple]]:
        """(candidate name, base mistake or None for exact, modifiers), singles first."""
        singles = [(m, None, (m,)) for m in MODIFIERS]
        singles += [(base, base, ()) for base in self.bases]
        combined = [(" + ".join(MODIFIERS), None, MODIFIERS)]
        for base in self.bases:
            for modifiers in ((MODIFIERS[0],), (MODIFIERS[1],), MODIFIERS):
                combined.append((" + ".join((base, *modifiers)), base, modifiers))
        return singles + combined

    def tried(self) -> list[str]:
        """The single mistakes tried, for "matches none of"."""
        return [name for name, _, _ in self.names() if " + " not in name]

    def base(self, base: str | None, case) -> dict:
        if base is None:
            return case.exact_float
        key = (base, id(case))
        if key not in self._values:
            from ..engine.evaluate import evaluate

            with np.errstate(all="ignore"):
                if callable(self.bases[base]):  # computed from the case (a grade_every base)
                    values = self.bases[base](case)
                elif base == "total_derivative":
                    if self._forward is None:
                        self._forward = _ComplexForward(self.d)
                    values = _total_derivative(self.d, self._forward, case)
                else:
                    values = evaluate(self.bases[base], case.params, case.x, case.y).as_float()[1]
            self._values[key] = self.interface.to_user(values)
        return self._values[key]

    def values(self, base, modifiers, case) -> dict:
        factor = 1.0
        if "residual_sign" in modifiers:
            factor = -factor
        if "no_batch_mean" in modifiers:
            factor *= case.batch
        return {name: factor * value for name, value in self.base(base, case).items()}
