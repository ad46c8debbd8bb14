"""The NumPy module of any cell: the context of ``templates/numpy/cell.py.j2``.

The layout (``layout.layout_of``: maps stacked by operand, δ arrays, stored values, fused sums, the
order of the steps) is decided once from the engine's ``CellDerivation``; ``numpy_printer`` writes it
as NumPy statements (time on axis 0, the batch on axis 1: every per-step array one contiguous (B, H)
block; the maps of x_t applied to every step at once, ``projection``; ∂L/∂M = Σ_t δ(M u)_t u_tᵀ one
product per group at the end, or summed step by step for wide batches). Here: the cell's facts (names,
shapes, formulas for the docstring), the statements and the signatures, each on one line
(``format.format_python`` lays the module out). The Numba module places the same context's parts
through the shared macros of ``templates/numpy/macros.j2`` (``numba_cells``). Nothing names a cell.
"""

from __future__ import annotations

import re

import sympy as sp

from ..activations import ACTIVATIONS
from ..engine.derivation import CellDerivation
from .layout import Layout
from .numpy_backend import code, text
from .numpy_printer import NumpyCellPrinter, _array, _targets, ring_name

#: Largest n for which --mode unrolled writes straight-line code for a cell.
UNROLLED_LIMIT = 256
#: From this many δ(M u) entries per step (B·G·H, G the maps' slots: 1 for the RNN, 4 for the LSTM) on,
#: the weight gradients are summed step by step. Measured (loss_and_grad, CPU time, n = 100, per-step /
#: one product at the end): the RNN 1.17 at 1024 (H = 16) and 1.26 (H = 128), 0.87 and 0.96 at 4096;
#: the LSTM 0.95 at 4096 (H = 16), 1.04 at 8192 (H = 128), 0.87 at 16 384.
PER_STEP_ENTRIES = 4096


#: The longest lag path a module for any length declares for bptt check (one call of that many steps
#: per declared path; a longer lag is left out of CHECK_PATHS).
CHECKED_LAG_STEPS = 5000


def context(model, mode: str, command: str, cell_layout: Layout, prefix: str = "_") -> dict:
    """Everything ``cell.py.j2`` places: names, shapes and printed statements, from the cell's layout
    (``layout.layout_of``). No SymPy objects. ``prefix``: how the module's helpers are named
    (``_split``; ``_numpy_split`` where a Numba module places them beside its own, ``numba_cells``).
    ``numpy`` holds the same context for the shared macros of ``templates/numpy/macros.j2``."""
    printer = NumpyCellPrinter(model.hidden, cell_layout)
    printer.prefix = prefix
    steps = model.steps if mode == "unrolled" else None
    result = {"command": command, "mode": mode, "steps": steps, "ns": prefix, **_cell_context(model, printer.d)}
    # a module for any length declares the length from which every lag's path exists (CHECK_PATHS), so
    # bptt check calls it there too, not only at lengths shorter than K
    lag_steps = printer.d.path_steps if printer.d.lagged and steps is None else None
    result["lag_steps"] = lag_steps if lag_steps and lag_steps <= CHECKED_LAG_STEPS else None
    result |= _printed(printer, steps)
    result = _statements(result)
    result["uses_split"] = any(f"{prefix}split(" in line for step in (*result["forward_steps"], result["recorded"],
                                                                   *result["vjp_forward_steps"], *result["vjp_steps"])
                               for line in step["lines"])
    return {**result, "numpy": result}


def _printed(printer: NumpyCellPrinter, steps: int | None) -> dict:
    """The statements of the module's functions, from the layout through the NumPy printer."""
    lay, d = printer.lay, printer.d
    forward_steps = [printer.forward_step(step) for step in lay.forward_order(steps)]
    backward_steps = [printer.backward_step(step) for step in lay.backward_order(steps)]
    (loop_step,) = lay.forward_order(None)
    # Wide batches: the same step with δ arrays one step long, each weight gradient summed in the step.
    per_step = printer.backward_step(loop_step, slot="0", per_step=True)
    # bptt_terms: the loop's step keeping each state's δ and each per-unit parameter's term per step.
    recorded = printer.backward_step(loop_step, record=True)
    finals, per_step_finals, term_lines = printer.finals(), printer.per_step_finals(), printer.term_lines()
    # vjp: the same recursion seeded by every state's upstream gradient, from given initial states
    vjp_forward = [printer.forward_step(step) for step in lay.vjp_forward_order(steps)]
    vjp_steps = [printer.backward_step(step) for step in lay.vjp_order(steps)]
    vjp_finals = [*printer.finals(scale="", initial=True), *printer.vjp_lines()]
    stored = list(lay.stored)
    maps_names = [f"maps_{g.label}" for g in lay.stored_maps]

    def step_lines(steps_: list) -> list[str]:
        return [line for step in steps_ for line in (*step["lines"], step["sent"])]

    forward_lines = [line for step in forward_steps for line in step["lines"]]
    vjp_forward_lines = [line for step in vjp_forward for line in step["lines"]]
    texts = {
        "forward": "\n".join(forward_lines),
        "gradients": "\n".join([*step_lines(backward_steps), *finals]),
        "per_step": "\n".join([*step_lines([per_step]), *per_step_finals]),
        "recorded": "\n".join([*step_lines([recorded]), *term_lines]),
        "vjp_forward": "\n".join(vjp_forward_lines),
        "vjp": "\n".join([*step_lines(vjp_steps), *vjp_finals]),
    }
    return {
        "forward_bindings": printer.bindings(forward_lines),
        "projection_bias": [str(lay.folded[k]) if k in lay.folded else None for k in range(lay.x_group.count)],
        "backward_bindings": printer.bindings(step_lines(backward_steps)),
        "vjp_forward_bindings": printer.bindings(vjp_forward_lines),
        # the finals name parameters as grads' keys: bound are what the steps and dx read
        "vjp_bindings": printer.bindings([*step_lines(vjp_steps), *printer.vjp_lines()]),
        "per_step_bindings": printer.bindings(step_lines([per_step])),
        "recorded_bindings": printer.bindings(step_lines([recorded])),
        "recorded_reads_projection": bool(re.search(r"\bprojection\b", "\n".join(step_lines([recorded])))),
        "groups": [
            {"label": g.label, "matrices": g.matrices, "count": g.count, "array": _array(g), "shared": g.shared,
             "stored": g in lay.stored_maps, "operand": g.operand, "lag": lay.lag(g)}
            for g in lay.groups
        ],
        "stored": stored,
        "unpacked": {key: _unpacked(stored, text_) for key, text_ in texts.items()},
        "maps_unpacked": {key: _unpacked(maps_names, texts[key]) for key in ("gradients", "per_step", "vjp")},
        "accumulated": [name for name, terms in d.gradients.items() for term in terms
                        if term[0] == "sum" and term[1] not in printer.homes],
        "forward_steps": forward_steps,
        "backward_steps": backward_steps,
        "finals": finals,
        # the vjp's backward pass names the sequence's length where it reads it (rings, rows up to n)
        "vjp_steps_needed": bool(lay.rings) or steps is None or bool(re.search(r"\bsteps\b", texts["vjp"])),
        "vjp_forward_steps": vjp_forward,
        "vjp_steps": vjp_steps,
        "vjp_finals": vjp_finals,
        "per_step": per_step,
        "per_step_finals": per_step_finals,
        "homed_arrays": printer.homed_arrays(),
        "recorded": recorded,
        "term_lines": term_lines,
        "map_deltas": printer.map_deltas(),
        "flat_derivative": printer.output_derivative(),
        "x_width": lay.x_group.count,
        "direct": None if lay.direct is None else stored.index(lay.direct),
        "delta_width": lay.delta_width,
        "maps_names": maps_names,
        "delta_names": [_array(g) for g in lay.owners],
        # row t mod K is below min(K, n + 1) for every t ≤ n: a lag beyond the sequence needs no K rows; in
        # straight-line code for n ≤ K no step sends K steps back, so the ring is not there at all (rows 0)
        "rings": [{"name": ring_name(state, lag), "state": state, "lag": lag,
                   "rows": lag if steps is None else (lag if lag < steps else 0)} for state, lag, _ in lay.rings],
    }


def _cell_context(model, d: CellDerivation) -> dict:
    """What the module says about its cell: names, shapes, constants, the formulas of its docstring."""
    cell, H = d.cell, model.hidden
    y_hat, y = d.symbols["y_hat"], d.symbols["y"]
    names = _display_names(d)
    # the notes' positional form f(x, y, w_i, w_h, w_o) is of the notes' output side only
    positional = cell.positional if d.outputs.default else ()
    return {
        "cell": cell.name,
        # the description sits in the module's docstring: its backslashes and quotes escaped
        "description": (cell.description or f"the cell {cell.name}").replace("\\", "\\\\").replace('"', '\\"'),
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
        "incoming": [{"state": state, "name": str(symbol)} for state, symbol in d.incoming.items()],
        "positional": [{"name": name, "shape": d.shapes(H, model.inputs)[name]} for name in positional],
        "positional_matrices": [name for name in positional if name in cell.matrices],
        "constants": [{"name": key, "value": _literal(value)} for key, value in cell.constants.items()],
        "impl": {name: f"_dict_{name}" if positional else name
                 for name in ("forward", "states", "loss", "loss_and_grad", "bptt_terms")},
        "per_step_entries": PER_STEP_ENTRIES,
        "output_factor_code": code(d.output_factor.xreplace({y_hat: sp.Symbol("y_hat"), y: sp.Symbol("y")})),
        "equations": [f"{eq.name}{'_t' if eq.state else ''} = {text(eq.expr, names)}" for eq in cell.equations],
        "adjoint_formulas": [f"{names[a.symbol]} = {text(a.expr, names)}"
                             + "".join(f" + {m}ᵀ δ({m} {a.name})" for m, _ in a.transposed)
                             for a in d.adjoints],
        "sent_formulas": [_sent_formula(d, state, a) for state, a in d.sent.items()]
        + [_sent_formula(d, state, a, lag) for (state, lag), a in d.sent_lagged.items()],
        "names_out": {symbol: sp.Symbol(str(symbol)) for symbol in d.symbols["vectors"].values()},
        "outputs": None if d.outputs.default else _outputs_context(d),
    }


def _outputs_context(d: CellDerivation) -> dict:
    """The output side of a module other than the notes' (templates/numpy/outputs.j2)."""
    o, cell = d.outputs, d.cell
    t = "t" if o.every else "n"
    weight = f"{cell.readout} {d.output_state}_{t}" if o.width else f"{cell.readout}ᵀ {d.output_state}_{t}"
    logit = weight + (f" + {cell.readout_bias}" if cell.readout_bias else "")
    readout = {"bce": f"ŷ_{t} = σ(z_{t}), ℓ_{t} = −y_{t} log ŷ_{t} − (1 − y_{t}) log(1 − ŷ_{t})",
               "softmax": f"ŷ_{t} = softmax(z_{t}) over K = {o.classes} classes, ℓ_{t} = −log ŷ_{t}[y_{t}]",
               "mse": f"ŷ_{t} = z_{t}, ℓ_{t} = (ŷ_{t} − y_{t})²"}[o.loss]
    error = {"bce": f"ŷ_{t} − y_{t}", "softmax": f"ŷ_{t} − e_(y_{t})", "mse": f"2 (ŷ_{t} − y_{t})"}[o.loss]
    if not o.every:
        total = "L = ℓ_n averaged over the batch"
    elif o.reduction == "steps":
        total = "L = (1/B) Σ_b Σ_t m_t ℓ_t, m the mask (1 where none is given)"
    else:
        total = "L = Σ_b Σ_t m_t ℓ_t / Σ_b Σ_t m_t, m the mask (1 where none is given)"
    labels = ("class indices in 0..K−1" if o.loss == "softmax" else "0/1 (or in [0, 1])" if o.loss == "bce"
              else "numbers")
    return {"readout": o.readout, "loss": o.loss, "classes": o.classes, "reduction": o.reduction,
            "every": o.every, "describe": o.describe, "flags": o.flags,
            "formulas": [f"z_{t} = {logit}, {readout}", total],
            "error": f"e_{t} = ∂ℓ_{t}/∂z_{t} = {error}",
            "sends": f"{cell.readout}ᵀ e_{t}" if o.width else f"e_{t} {cell.readout}",
            "y_shape": f"({'B, n' if o.every else 'B,'}) of {labels}"}


def _statements(context: dict) -> dict:
    """The statements and signatures the template writes around the printed steps, each on one line
    (``format.format_python`` lays the module out)."""
    context = dict(context)
    context["groups"] = [dict(group) for group in context["groups"]]
    context["map_deltas"] = [dict(entry) for entry in context["map_deltas"]]
    groups, ns = context["groups"], context["ns"]
    maps, deltas = context["maps_names"], context["delta_names"]

    def spare(rows: str) -> str:
        return _tuple([f"({rows}, batch, {g['count']} * HIDDEN_SIZE)" for g in groups if not g["shared"]])

    context["spare_code"] = f"values, projection, *rest = {ns}forward_values(x, p, {spare('rows')})"
    context["vjp_spare_code"] = f"values, projection, *rest = {ns}vjp_forward_values(x, p, start, {spare('steps')})"
    recorded = "projection" if context["recorded_reads_projection"] else "_"
    context["recorded_spare_code"] = f"values, {recorded}, *rest = {ns}forward_values(x, p, {spare('steps')})"
    biases = [f'p["{b}"]' if b else "np.zeros(HIDDEN_SIZE)" for b in context["projection_bias"]]
    target = "projection" if context["direct"] is None else f"values[{context['direct']}, 1:]"
    context["projection_target"] = target
    context["projection_bias_code"] = f"{target} += np.concatenate([{', '.join(biases)}])"
    # the vjp's values: rows 0..n, then (in the loop) the K − 1 zero rows a lagged read finds before s_0
    lags = [ring["lag"] for ring in context["rings"]]
    context["vjp_rows"] = 1 + (max(lags) - 1 if lags and context["mode"] == "loop" else 0)
    vjp_target = "projection" if context["direct"] is None else f"values[{context['direct']}, 1 : steps + 1]"
    context["vjp_projection_target"] = vjp_target
    context["vjp_projection_bias_code"] = f"{vjp_target} += np.concatenate([{', '.join(biases)}])"
    for group in groups:
        matrices = [f'p["{name}"]' for name in group["matrices"]]
        value = matrices[0] if len(matrices) == 1 else f"np.concatenate([{', '.join(matrices)}])"
        group["weights_code"] = f'"{group["label"]}": {value},'
    for entry in context["map_deltas"]:
        value = f"np.ascontiguousarray({entry['array']}[:, :, {entry['span']}].transpose(1, 0, 2))"
        entry["code"] = f'"{entry["matrix"]}": {value},'
    if context["flat_derivative"]:
        context["flat_derivative"] = f'"derivatives": {context["flat_derivative"]},'
    context["deltas_code"] = f"{_targets(deltas)} = deltas"
    context["rest_code"] = f"{_targets(maps + deltas)} = rest"
    # the NumPy module's own functions; in a Numba module (prefix _numpy_) only its bptt_terms is placed
    impl = context["impl"] if ns == "_" else {name: ns + f.lstrip("_") for name, f in context["impl"].items()}
    context["impl_names"] = impl
    masked = _MASK if context["outputs"] else []
    # forward, states, loss and loss_and_grad start from given states too
    initial = _INITIAL
    context["signatures"] = {
        name: f"def {function}({', '.join(arguments + (masked if name in _MASKED else []) + (initial if name in _STARTED else []))}) -> {returns}:"
        for name, (function, arguments, returns) in {
            "gradients": ("_gradients", _GRADIENT_ARGUMENTS, "dict[str, np.ndarray]"),
            "gradients_per_step": ("_gradients_per_step", _GRADIENT_ARGUMENTS, "dict[str, np.ndarray]"),
            "vjp_gradients": (f"{ns}vjp_gradients", [*_GRADIENT_ARGUMENTS[:-1], "upstream: dict[str, np.ndarray]"],
                              "tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]"),
            **{name: (impl[name], arguments + (NAMED if context["positional"] else []), returns)
               for name, (arguments, returns) in SIGNATURES.items()},
            **{f"positional_{name}": (name, _started(arguments, initial if name in _STARTED else []), returns)
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
#: A loss at every step takes a mask (B, n) of 0/1 (symbolic.outputs).
_MASK = ["mask: npt.ArrayLike | None = None"]
_MASKED = ("loss", "loss_and_grad", "bptt_terms")
#: forward, states, loss and loss_and_grad take the initial states (state → (B, H); zeros when None).
_INITIAL = ["initial: Mapping[str, npt.ArrayLike] | None = None"]
_STARTED = ("forward", "states", "loss", "loss_and_grad")
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


def _started(arguments: list[str], initial: list[str]) -> list[str]:
    """The positional form's arguments with ``initial`` keyword-only, before ``**keywords``."""
    return arguments[:-1] + initial + arguments[-1:]


def _literal(value) -> str:
    """A constant's Python literal, a string in double quotes as ruff writes it."""
    text_ = repr(value)
    if isinstance(value, str) and text_.startswith("'") and '"' not in value:
        return f'"{text_[1:-1]}"'
    return text_


def _tuple(items: list[str]) -> str:
    """A tuple display: ``(a,)`` for one item, as ruff writes it."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _unpacked(names: list[str], text_: str) -> str:
    """``a, _, c`` for the names a function's text reads (``_`` for the others), to unpack into."""
    used = [name if re.search(rf"\b{re.escape(name)}\b", text_) else "_" for name in names]
    return _targets(used)


def _sent_formula(d: CellDerivation, state: str, adjoint, lag: int = 1) -> str:
    """What step t sends to s_(t−lag); K steps back it is added to what step t − K + 1 sends."""
    terms = [text(adjoint.expr, _display_names(d))] if adjoint.expr != 0 else []
    terms += [f"{matrix}ᵀ δ({matrix} {state}_(t-{lag}))" for matrix, _ in adjoint.transposed]
    formula = f"δ{state}_(t-{lag}) = {' + '.join(terms) or '0'}"
    if lag > 1:
        formula += f"  (sent {lag} steps back: δ{state}_(t+1→t) totals what steps t + 1 and t + {lag} send)"
    return formula


def _display_names(d: CellDerivation) -> dict:
    names = {symbol: f"{state}_(t-1)" for state, symbol in d.previous.items()}
    lagged = {str(symbol): f"{state}_(t-{lag})" for (state, lag), symbol in d.lagged.items()}
    names |= {sp.Symbol(name): text_ for name, text_ in lagged.items()}
    names |= {symbol: f"δ{state}_(t+1→t)" for state, symbol in d.incoming.items()}
    maps = {}
    for linear in d.linears:
        operand = linear.operand.replace("_prev", "_(t-1)") if linear.operand != "x" else "x_t"
        operand = lagged.get(linear.operand, operand)
        names[linear.symbol] = maps[f"delta_{linear.symbol}"] = f"({linear.matrix} {operand})"
    for adjoint in d.adjoints:
        # the adjoint of a map M u (named delta_M@u by the engine) reads δ(M u), as the text beside it
        names[adjoint.symbol] = f"δ{maps[adjoint.name]}" if adjoint.name in maps else f"δ{adjoint.name}"
    return names


__all__ = ["NAMED", "SIGNATURES", "UNROLLED_LIMIT", "context"]
