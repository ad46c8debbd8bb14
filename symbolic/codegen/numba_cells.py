"""The Numba backend for any cell: the context for ``templates/numba/cell.py.j2``.

The compiled module has the generic NumPy module's interface: its docstring's formulas, constants,
``init_params`` and argument validation are the NumPy module's macros (``templates/numpy/macros.j2``)
over the same context (``cell_backend``), so both accept and reject exactly the same arguments with
the same messages; its ``bptt_terms`` is the NumPy module's, printed from the same layout with its
helpers named ``_numpy_…`` (``NUMPY_PREFIX``).

The work runs in ``@njit(cache=True)`` kernels printed from the cell's layout (``layout.layout_of``,
the one the NumPy module is printed from) by ``numba_printer.NumbaCellPrinter`` with
``CellKernelPrinter`` (σ, tanh and exp without libm for real arguments, the exact f for the complex
step); this module adds the argument lists, calls and drivers around them. Nothing names a cell:

* time-major arrays (each step reads and writes contiguous (B, H) blocks); the stored forward values
  (the layout's stored values, the NumPy module's ``STORED``, then any node a later part reads) in one
  (R, n + 1, B, H) array, row t = 0 holding the initial states 0;
* the linear maps stacked by operand, as ``cell_backend`` does: the maps of x_t and those of a state
  s_(t−1) are one matrix product each per step for the whole batch (so the loops over units read
  contiguous rows and, with f compiled in by ``CellKernelPrinter``, vectorise across units), and the
  maps of a node of the step one product right after that node, so a step is cut into **parts** at
  those products (one part for the LSTM and torch's GRU, two for
  Cho's GRU, whose U (r ⊙ h) needs every unit of r ⊙ h first);
* backward, per step from t = n down: the adjoints δv of the derivation, entry by entry, writing
  δ(M u) into one (span, B, G·H) array per operand; the transpose rule δu += Σ_M Mᵀ δ(M u) is one
  product per operand and step (inside the step where u is a node: another cut), what a step sends to
  s_(t−1) the derivation's ``sent``; ∂L/∂M = Σ_t δ(M u)_t u_tᵀ one product per operand over the rows of
  a span of steps (about ``SPAN_ROWS`` rows), per-unit parameters summed from their δ.

Below ``blas_entries`` entries per step (B·H) every product is a compiled loop (the macros of
``templates/numba/macros.j2``), not BLAS, so Numba needs no SciPy, and a pass is one compiled call;
from there on the same drivers run in Python (``blas``: the products through NumPy's matmul, BLAS),
calling the compiled loops of each part once per chunk of ``ROWS`` sequences. The unrolled mode compiles the same loops as the loop mode behind the NumPy module's
fixed-length check, as the other Numba modules do.
"""

from __future__ import annotations

import sympy as sp

from . import cell_backend
from .cell_backend import _INITIAL, _MASK, _MASKED, _STARTED, NAMED, SIGNATURES
from .layout import Layout
from .numba_backend import NumbaScalarPrinter
from .numba_printer import NumbaCellPrinter, call, deltas, sums_of

#: Sequences per chunk of the elementwise work of one step (one call of a part's compiled loops).
ROWS = 64
#: The weight gradients are summed over the rows (sequences × steps) of several steps at once, in
#: one product of about this many rows.
SPAN_ROWS = 4096
#: From BLAS_ENTRIES / (G · (1 + H / BLAS_HIDDEN)) entries per step (B·H) on, G the maps of the
#: previous states (stacked: 1 for the plain RNN, 4 for the LSTM, 3 for the GRU; at least 1), the
#: drivers run in Python with BLAS's products through NumPy and the compiled loops of each part called
#: per chunk (``_forward_blas``, ``_backward_blas``); below, one compiled call whose products are
#: compiled loops. BLAS's products beat the compiled loops per entry, more so with more maps and
#: larger H, while the Python driver costs a fixed time per step. Measured (bench/bench_backends.py
#: --only widths, CPU time, n = 100, loss_and_grad, BLAS drivers / compiled), with the cut-over this
#: gives: see ``blas_entries`` and docs/performance.md.
BLAS_ENTRIES = 2048
BLAS_HIDDEN = 48

#: The kernels' f for real arguments, without libm (``templates/numba/macros.j2``, real_functions), and
#: their accuracy against NumPy's over 3·10⁶ arguments (bench/bench_lstm.py --only accuracy), for the
#: module's docstring.
REAL_FUNCTIONS = {
    "exp": "_exp_real: within 1 ulp of np.exp",
    "logistic": "_logistic_real: within 2 ulp of NumPy's σ",
    "tanh": "_tanh_real: within 2 ulp of np.tanh",
}

#: The NumPy module's functions the Numba module places beside its own (its bptt_terms and what that
#: calls) are named with this prefix: ``bptt_terms`` → ``_numpy_bptt_terms``, ``_split`` → ``_numpy_split``.
NUMPY_PREFIX = "_numpy_"
#: The module's public functions. A cell that declares ``positional`` parameters (the plain RNN) has
#: them as the NumPy module's wrappers (the same macro), with their ``_call``, which take one params
#: dict or the parameters one by one and call the dict implementations ``_dict_<name>``; other cells'
#: implementations are the public functions themselves (``cell_backend``'s context key ``impl``).
PUBLIC = ("forward", "states", "loss", "loss_and_grad", "bptt_terms")

def blas_entries(state_maps: int, hidden: int) -> int:
    """Entries per step (B·H) from which a call takes the BLAS drivers (BLAS_ENTRIES, …)."""
    return round(BLAS_ENTRIES / (max(1, state_maps) * (1 + hidden / BLAS_HIDDEN)))


def implementations(positional: bool) -> dict[str, str]:
    """Public name → the name of the function that implements it (``cell_backend``'s ``impl``)."""
    return {name: f"_dict_{name}" if positional else name for name in PUBLIC}


def _joined(head: str, items: list[str], tail: str = "", brackets: str = "()") -> str:
    """``head(item, …)tail`` on one line (``format.format_python`` wraps it)."""
    return f"{head}{brackets[0]}{', '.join(items)}{brackets[1]}{tail}"


def context(model, mode: str, command: str, cell_layout: Layout) -> dict:
    """Everything ``templates/numba/cell.py.j2`` places: names, printed statements. No SymPy objects.

    ``cell_layout``: the cell's (``layout.layout_of``), the one the NumPy module is printed from; the
    NumPy module's context for the same model and mode (``cell_backend``, its helpers prefixed
    ``NUMPY_PREFIX``) is ``numpy``, which the shared macros of ``templates/numpy/macros.j2`` read.
    """
    printer = NumbaCellPrinter(cell_layout)
    d = printer.d
    assert d.mutation is None and d.transpose and d.batch_mean, "only the exact derivation is compiled"
    forward_parts, backward_parts = printer.forward_parts(), printer.backward_parts()
    arguments = _arguments(printer)
    _part_calls(forward_parts, backward_parts, arguments)
    numpy = cell_backend.context(model, mode, command, cell_layout, prefix=NUMPY_PREFIX)["numpy"]
    return {
        "command": command,
        "mode": mode,
        "steps": model.steps if mode == "unrolled" else None,
        "cell": d.cell.name,
        "numpy": numpy,
        "readout": d.cell.readout,
        "readout_bias": d.cell.readout_bias,
        "output_state": d.output_state,
        "output_row": printer.state_row[d.output_state],
        "output_index": printer.states.index(d.output_state),
        "states": printer.states,
        "stored": printer.stored,
        "stored_count": len(printer.lay.stored),
        "vectors": printer.vectors,
        **_drivers(printer, arguments, model.hidden),
        "kept": len(printer.kept),
        "transposed": len(printer.transposed_index),
        "forward_parts": forward_parts,
        "backward_parts": backward_parts,
        "sent_products": printer.sent_products(),
        "rows": ROWS,
        "span_rows": SPAN_ROWS,
        "blas_entries": blas_entries(sum(g.count for g in printer.groups if g.kind == "state"), model.hidden),
        **_interface(bool(numpy["positional"]), numpy),
        **_helpers(d, printer.kernel.helpers),
        "outputs": numpy["outputs"],
    }


def _interface(positional: bool, numpy: dict) -> dict:
    """The public functions' names and signatures (the NumPy module's), and the name its bptt_terms,
    placed beside them, has here."""
    impl = implementations(positional)
    return {
        "impl": impl,
        "impl_signatures": {
            name: _joined(f"def {impl[name]}", names + (NAMED if positional else [])
                          + (_MASK if numpy["outputs"] and name in _MASKED else [])
                          + (_INITIAL if name in _STARTED else []), f" -> {returns}:")
            for name, (names, returns) in SIGNATURES.items()
        },
        "positional": positional,
        "numpy_impl": {"bptt_terms": numpy["impl_names"]["bptt_terms"]},
    }


def _helpers(d, kernel_helpers: set) -> dict:
    """The per-sequence outputs' code (exact f: σ of the logit) and which scalar helpers the module
    defines: those it printed (``kernel_helpers``, the kernels')."""
    scalar = NumbaScalarPrinter()
    y_hat, y = d.symbols["y_hat"], d.symbols["y"]
    output_factor_code = scalar.doprint(d.output_factor.xreplace({y_hat: sp.Symbol("y_hat"), y: sp.Symbol("y")}))
    # the softmax readout's kernel (_softmax_cross_entropy) exponentiates every logit
    helpers = scalar.helpers | kernel_helpers | ({"exp"} if d.outputs.loss == "softmax" else set())
    return {
        "output_factor_code": output_factor_code,
        **{f"uses_{name}": name in helpers for name in ("relu", "heaviside", "tanh", "logistic", "exp")},
        "real_functions": [REAL_FUNCTIONS[name] for name in sorted(helpers & set(REAL_FUNCTIONS))],
    }


def _arguments(printer: NumbaCellPrinter) -> dict[str, list[str]]:
    """The argument lists of the drivers, of the compiled parts and of their calls."""
    groups = printer.groups
    stored_maps = [f"maps_{g.label}" for g in groups if g.reads_maps]
    arrays = [deltas(g) for g in printer.arrays]
    # any output side but the notes': what each step's readout sends to the output state, (n, B, H)
    seeded = ["residual"] if not printer.d.outputs.default else []
    backward = ["x", "values", *stored_maps, *(f"weights_{g.label}" for g in groups if g.kind != "x"),
                "vectors", "incoming", *seeded, "span"]
    return {
        "forward_arguments": ["x", *(f"weights_{g.label}_transposed" for g in groups), "vectors"],
        "backward_arguments": backward,
        "forward_part": ["vectors", "values", *(f"maps_{g.label}" for g in groups), "t", "chunk"],
        "backward_part": ["values", "vectors", "incoming", *stored_maps, *arrays, "transposed", "kept", "sums",
                          "t", "chunk"],
        "forward_call": ["vectors", "values", *(printer.view(g) for g in groups), "t", "chunk"],
        "backward_call": ["values", "vectors", "incoming", *(f"{name}[t - 1]" for name in stored_maps),
                          *(f"{array}[slot]" for array in arrays), "transposed", "kept", "sums", "t", "chunk"],
        "backward_driver_call": [
            name if name in ("x", "values", "incoming", "residual", *stored_maps)
            else "_span(batch, steps)" if name == "span" else f'w["{name}"]'
            for name in backward
        ],
        "stored_maps": stored_maps,
    }


def _part_calls(forward_parts: list[dict], backward_parts: list[dict], arguments: dict) -> None:
    """Each part's signature and call, and the BLAS drivers' sweep over the chunks of sequences
    (one compiled call per part and step)."""
    for stage, parts in (("forward", forward_parts), ("backward", backward_parts)):
        names, call = arguments[f"{stage}_part"], arguments[f"{stage}_call"]
        for k, part in enumerate(parts, 1):
            part["call"] = _joined(f"_{stage}_part_{k}", call)
            part["signature"] = _joined(f"def _{stage}_part_{k}", names, ":")
            part["sweep_signature"] = _joined(f"def _{stage}_sweep_{k}", names[:-1], ":")
            part["sweep_inner_call"] = _joined(f"_{stage}_part_{k}", names)
            part["sweep_call"] = _joined(f"_{stage}_sweep_{k}", call[:-1])


def _drivers(printer: NumbaCellPrinter, arguments: dict, hidden: int) -> dict:
    """What the drivers around the compiled parts write: products, allocations, the kernels' calls,
    the gradients' arrays."""
    groups = printer.groups
    homed_sums = printer.homed_sums()
    stored_maps = arguments["stored_maps"]
    gradient_names = [*(f"grad_{g.label}" for g in groups), *map(sums_of, homed_sums)]
    return {
        "groups": [
            {"label": g.label, "kind": g.kind, "matrices": g.matrices, "count": g.count, "array": deltas(g),
             "stored": g.reads_maps, "size": "INPUT_SIZE" if g.kind == "x" else "HIDDEN_SIZE"}
            for g in groups
        ],
        "arrays": [{"name": deltas(g), "count": g.count} for g in printer.arrays],
        "homed_sums": [
            {"array": array, "name": sums_of(array), "count": next(g.count for g in printer.arrays if deltas(g) == array)}
            for array in homed_sums
        ],
        "flush": printer.flush(),
        **{key: value for key, value in arguments.items() if key != "backward_driver_call"},
        "input_products": [call("_product", f"x[t - 1], weights_{g.label}_transposed, {printer.view(g)}")
                           for g in groups if g.kind == "x"],
        "state_products": printer.state_products(),
        "incoming_rows": printer.incoming_rows,
        "ring_steps": bool(printer.rings),   # _output_gradients sizes the rings by the sequence's length
        "allocations": [
            f"maps_{g.label} = np.zeros(({'steps, ' if g.reads_maps else ''}batch, {g.count} * hidden), x.dtype)"
            for g in groups
        ],
        "signatures": {
            f"{stage}_{kind}": _joined(f"def _{stage}_{kind}", arguments[f"{stage}_arguments"], ":")
            for stage in ("forward", "backward") for kind in ("serial", "blas")
        },
        "forward_kernel_call": _joined(
            "return forward_kernel", ["x", *(f'w["{name}"]' for name in arguments["forward_arguments"][1:])]
        ),
        "backward_kernel_call": _joined(
            f"{', '.join([*gradient_names, 'sums' if printer.summed else '_'])} = backward_kernel",
            arguments["backward_driver_call"],
        ),
        "stacking": _stacking(groups, printer.vectors),
        # the kernels' sums scaled by 1/B in place (one division per array)
        "scaled": gradient_names,
        # the kernels return tuples: (values, the stored maps), (∂L/∂M per operand, the sums)
        "forward_targets": f"({', '.join(['values', *stored_maps])}{',' if not stored_maps else ''})",
        "backward_targets": ", ".join([*gradient_names, "sums"]),
        "summed": printer.summed,
        "gradients": printer.gradients(hidden),
    }


def _stacking(groups, vectors: list[str]) -> list[str]:
    """_compiled_arguments: the maps of each operand stacked, the per-unit parameters as rows (the
    maps of x only transposed, for the forward products; one matrix or vector is not stacked)."""
    stacking = []
    for group in groups:
        name = f"weights_{group.label}"
        if len(group.matrices) == 1:
            stacked = f'p["{group.matrices[0]}"]'
        else:
            stacking.append(_joined(f"{name} = ", [f'p["{m}"]' for m in group.matrices], brackets="[]"))
            stacked = f"np.concatenate({name})"
        if group.kind == "x":
            stacking.append(f'w["{name}_transposed"] = np.ascontiguousarray({stacked}.T, dtype=dtype)')
            continue
        stacking.append(f'w["{name}"] = np.ascontiguousarray({stacked}, dtype=dtype)')
        stacking.append(f'w["{name}_transposed"] = np.ascontiguousarray(w["{name}"].T)')
    if len(vectors) == 1:
        stacking.append(f'w["vectors"] = np.ascontiguousarray(p["{vectors[0]}"], dtype=dtype)[np.newaxis]')
    elif vectors:
        stacking.append(_joined("vectors = ", [f'p["{name}"]' for name in vectors], brackets="[]"))
        stacking.append('w["vectors"] = np.ascontiguousarray(np.stack(vectors), dtype=dtype)')
    else:
        stacking.append('w["vectors"] = np.zeros((0, HIDDEN_SIZE), dtype)')
    return stacking


__all__ = [
    "BLAS_ENTRIES",
    "BLAS_HIDDEN",
    "NUMPY_PREFIX",
    "PUBLIC",
    "ROWS",
    "SPAN_ROWS",
    "blas_entries",
    "context",
    "implementations",
]
