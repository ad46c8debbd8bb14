"""The NumPy backend for the LSTM: the context for ``templates/numpy/lstm.py.j2``.

The generated module keeps time on axis 0 and the batch on axis 1 (each step reads one contiguous
(B, H) block), and the four gates side by side as torch.nn.LSTM does: one (4H, D) input matrix
[W_i; W_f; W_g; W_o], one (4H, H) recurrent matrix [U_i; U_f; U_g; U_o] and one bias, so a step is
one matrix product for all gates and sequences, δh_(t−1) = Σ_· U_·ᵀ δa_·,t is one product with the
stacked deltas, and each gradient family (W, U, b) is one product over all steps at the end.

Every elementwise expression is printed by SymPy from ``LSTMDerivation``'s unit formulas with the
unit symbols renamed to the module's arrays (i_t → ``i[t]``, c_(t−1) → ``c[t - 1]``, tanh(c_t) →
``tanh_c[t]``, the stored forward value, …): the gates from their activations, c_t and h_t from the
cell equations, δc_t with its cell path δc_(t+1) ⊙ f_(t+1), and δa_·,t with the gate derivatives
written with the gate's output. In unrolled mode each step is printed with its own indices and the
initial state substituted (c_0 = 0 removes f_1 from c_1 and makes δa_f,1 zero; h_0 = 0 removes the
recurrent product of step 1), and δc_(n+1) = 0 in the last step.
"""

from __future__ import annotations

import sympy as sp

from ..derive_lstm import GATES, LSTMDerivation
from ..model import Model
from .numpy_backend import code, text

#: Largest n for which --mode unrolled writes straight-line code for the LSTM (about 16 lines a step).
UNROLLED_LIMIT = 256


def _arrays() -> dict[str, sp.IndexedBase]:
    return {name: sp.IndexedBase(name) for name in (*GATES, "c", "tanh_c", "h")}


def _renaming(derivation: LSTMDerivation, t, first: bool = False) -> dict:
    """Unit symbol → the module's array entry at step ``t`` (an int, or a symbol in loop mode);
    ``first``: t = 1 of an unrolled module, where c_0 = 0 is substituted."""
    d = derivation
    arrays = _arrays()
    rules = {d.gate[gate]: arrays[gate][t] for gate in GATES}
    rules |= {
        d.tanh_c: arrays["tanh_c"][t],
        d.c: arrays["c"][t],
        d.c_prev: sp.S.Zero if first else arrays["c"][t - 1],
        d.f_next: arrays["f"][t + 1],
        d.delta_h: sp.Symbol("delta_h"),
        d.delta_c: sp.Symbol("delta_c"),
        # δc_(t+1) is the value ``delta_c`` holds from the step before (one step later in time)
        d.delta_c_next: sp.Symbol("delta_c"),
    }
    for gate in GATES:
        rules[d.a[gate]] = sp.Symbol(f"a_{gate}")
    return rules


def _printed(expr: sp.Expr, rules: dict) -> str:
    return code(sp.sympify(expr).xreplace(rules))


def _forward_step(derivation: LSTMDerivation, t, first: bool = False) -> dict:
    """The printed forward formulas of step t: the gates, c_t, tanh(c_t), h_t."""
    d = derivation
    rules = _renaming(d, t, first)
    uses_recurrence = d.preactivation["i"].xreplace({d.h_prev: sp.S.Zero if first else d.h_prev}).has(d.U["i"])
    return {
        "t": t,
        "uses_recurrence": uses_recurrence,
        "gates": [{"name": gate, "code": _printed(d.gate_value[gate], rules)} for gate in GATES],
        "cell": _printed(d.cell_state, rules),
        "tanh_c": code(d.tanh_c.xreplace({d.c: rules[d.c]})),
        # tanh(c_t) is read back from the stored forward value tanh_c[t]
        "hidden": _printed(d.hidden_state, rules),
    }


def _backward_step(derivation: LSTMDerivation, t, last: bool = False, first: bool = False) -> dict:
    """The printed δc_t and δa_·,t of step t; ``last``: δc_(n+1) = 0, ``first``: c_0 = 0."""
    d = derivation
    rules = _renaming(d, t, first)
    delta_c = d.delta_c_formula.xreplace({d.delta_c_next: sp.S.Zero}) if last else d.delta_c_formula
    expressions = [delta_c.xreplace(rules), *(d.delta_a[gate].xreplace(rules) for gate in GATES)]
    return {
        "t": t,
        "reads": {str(e.base) for expr in expressions for e in expr.atoms(sp.Indexed)},
        "delta_c": _printed(delta_c, rules),
        "delta_a": [{"name": gate, "code": _printed(d.delta_a[gate], rules)} for gate in GATES],
    }


def context(model: Model, mode: str, command: str) -> dict:
    """Everything ``lstm.py.j2`` places: names, shapes, printed expressions, formulas. No SymPy objects."""
    derivation = LSTMDerivation(model)
    d = derivation
    H, steps = model.hidden, model.steps
    t = sp.Symbol("t")
    last = sp.Symbol("steps")

    # δh_n = (ŷ − y) w_y: the residual is printed, the product with w_y is a broadcast per sequence.
    residual = sp.cancel(d.delta_h_n / d.w_y)
    assert residual == d.output_factor and not residual.has(d.w_y)
    output = {d.y_hat: sp.Symbol("y_hat"), d.y: sp.Symbol("y")}
    # The gradient summands must be δa_· times x_t, h_(t−1) and 1: the products the template writes.
    for gate in GATES:
        delta = d.delta_a_symbol[gate]
        assert d.summands[f"W_{gate}"] == delta * d.x and d.summands[f"U_{gate}"] == delta * d.h_prev
        assert d.summands[f"b_{gate}"] == delta
        assert sp.diff(d.delta_h_prev, delta) == d.U[gate]  # δh_(t−1) = Σ_· U_·ᵀ δa_·
    assert d.dL_dw_y == d.output_factor * d.h_n

    slices = []
    for k, gate in enumerate(GATES):
        start = "" if k == 0 else str(k * H)
        stop = "" if k == len(GATES) - 1 else str((k + 1) * H)
        slices.append({"name": gate, "index": k, "slice": f"{start}:{stop}"})

    unrolled_forward, unrolled_backward = [], []
    if mode == "unrolled":
        unrolled_forward = [_forward_step(d, step, first=step == 1) for step in range(1, steps + 1)]
        unrolled_backward = [
            _backward_step(d, step, last=step == steps, first=step == 1) for step in range(steps, 0, -1)
        ]

    # The forward arrays the backward pass reads (the others are unpacked as _); h always, for ∂L/∂U.
    steps_printed = unrolled_backward or [_backward_step(d, t), _backward_step(d, last, last=True)]
    reads = set().union(*(step["reads"] for step in steps_printed)) | {"h"}
    backward_arrays = [name if name in reads else "_" for name in (*GATES, "c", "tanh_c", "h")]

    names = {d.c_prev: "c_(t-1)", d.h_prev: "h_(t-1)", d.f_next: "f_(t+1)", d.delta_c_next: "δc_(t+1)",
             d.delta_h: "δh_t", d.delta_c: "δc_t", d.y_hat: "ŷ"}
    return {
        "command": command,
        "mode": mode,
        "steps": steps if mode == "unrolled" else None,
        "input_size": model.inputs,
        "hidden_size": H,
        "activation": model.activation,
        "gates": list(GATES),
        "slices": slices,
        "parameters": [{"name": name, "shape": shape} for name, shape in d.parameters.items()],
        "loop_forward": _forward_step(d, t),
        "loop_backward": _backward_step(d, t),
        "last_backward": _backward_step(d, last, last=True),
        "backward_arrays": backward_arrays,
        "unrolled_forward": unrolled_forward,
        "unrolled_backward": unrolled_backward,
        "output_factor_code": code(d.output_factor.xreplace(output)),
        "formulas": {
            "gates": {gate: text(d.gate_value[gate]) for gate in GATES},
            "cell": text(d.cell_state, names),
            "hidden": text(d.hidden_state),
            "cell_path": text(d.cell_path),
            "gate_derivatives": {gate: text(d.gate_derivative[gate]) for gate in GATES},
            "output_factor": text(d.output_factor, names),
            "delta_c": text(d.delta_c_formula, names),
            "delta_a": {gate: text(d.delta_a[gate], names) for gate in GATES},
        },
    }
