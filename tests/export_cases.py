"""What tests/test_export_torch.py and test_export_jax.py share: the cells, the generated modules, and an
independent reference, the cell's own equations (``Cell.equations``, not the engine's derivation)
evaluated step by step in the framework, so that its autodiff gives the oracle's gradient. A state read K
steps back (``Cell.lag``) is looked up in the list of every state so far, s_0 the initial state and zeros
before it, not through the derivation's layout."""

from __future__ import annotations

import types
from functools import cache

import sympy as sp

from symbolic.cells import cell_of
from symbolic.codegen import generate_target
from symbolic.engine.derivation import derive_cell
from symbolic.model import Model

from .conftest import ROOT

#: The built-in cells and two users' cells (MGU: a map of a node, f ⊙ h; skip_copy: three states).
CELLS = ("rnn", "lstm", "gru", str(ROOT / "docs" / "cells" / "mgu.py"), str(ROOT / "docs" / "cells" / "skip_copy.py"))
IDS = ("rnn", "lstm", "gru", "mgu", "skip_copy")
#: Cells reading a state K steps back: the skip RNN at K = 2, 3 (``skip:K``) and a user's cell reading
#: h_(t−2) and h_(t−3) (gated_skip); each is run with n > K and n ≤ K steps (``LAGGED_STEPS``).
LAGGED = ("skip:2", "skip:3", str(ROOT / "docs" / "cells" / "gated_skip.py"))
LAGGED_IDS = ("skip2", "skip3", "gated_skip")
LAGGED_STEPS = (2, 6)
#: Small sizes: batch, steps, inputs, hidden.
B, N, D, H = 2, 4, 3, 3


def model(cell: str, activation: str = "tanh") -> Model:
    """``skip:K`` is the skip RNN with lag K."""
    name, _, lag = cell.partition(":")
    return Model(steps=N, hidden=H, inputs=D, cell=name, activation=activation, bias=cell == "rnn",
                 skip=int(lag) if lag else None)


@cache
def module(cell: str, target: str, mutation: str | None = None, activation: str = "tanh") -> types.ModuleType:
    """The generated module (of a deliberately wrong derivation with ``mutation``), imported."""
    derivation = derive_cell(cell_of(model(cell, activation)))
    if mutation:
        derivation = derivation.mutate(mutation)
    source = generate_target(model(cell, activation), target, derivation=derivation)
    generated = types.ModuleType(f"bptt_{target}_{abs(hash(cell))}_{mutation}_{activation}")
    exec(compile(source, generated.__name__, "exec"), generated.__dict__)  # noqa: S102 - our generated module
    return generated


def reference(cell: str, functions: dict, matmul, activation: str = "tanh"):
    """``run(params, x, initial) -> (output, final)`` over x time first (a sequence of (B, D) steps), from
    the cell's equations: the maps u Mᵀ (``matmul(u, M)``), then each equation in order; a list given as
    ``trace`` receives every step's states (state → value)."""
    spec = cell_of(model(cell, activation))
    compiled = []
    for equation in spec.equations:
        arguments = sorted(equation.expr.free_symbols, key=str)
        plain = [sp.Symbol(f"_a{k}") for k in range(len(arguments))]
        function = sp.lambdify(plain, equation.expr.xreplace(dict(zip(arguments, plain))), modules=[functions])
        compiled.append((equation, arguments, function))

    def run(params, x, initial, trace=None):
        states = dict(initial)
        past = [states]   # s_0, s_1, …: s_(t−K) is past[t − K], zero before s_0
        output = []
        for x_t in x:
            known = {symbol: states[name] for name, symbol in spec.states.items()}
            known |= {symbol: past[-lag][name] if lag <= len(past) else 0 * initial[name]
                      for (name, lag), symbol in spec.lags.items()}
            known |= {sp.Symbol(name): params[name] for name in spec.vectors}
            operands = {"x": x_t, **{str(symbol): value for symbol, value in known.items()}}

            def maps(operands=operands, known=known):
                for application in spec.applications:
                    if application.symbol not in known and application.operand in operands:
                        known[application.symbol] = matmul(operands[application.operand], params[application.matrix])

            maps()
            for equation, arguments, function in compiled:
                known[equation.symbol] = function(*(known[a] for a in arguments))
                operands[equation.name] = known[equation.symbol]
                maps()
            states = {name: operands[_updater(spec, name)] for name in spec.states}
            past.append(states)
            if trace is not None:
                trace.append(states)
            output.append(states[spec.output_state])
        return output, states

    return run


def _updater(spec, state: str) -> str:
    """The equation that updates ``state``."""
    return next(equation.name for equation in spec.equations if equation.state == state)
