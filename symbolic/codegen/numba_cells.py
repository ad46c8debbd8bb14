"""The Numba backend for any cell: the context for ``templates/numba/cell.py.j2``.

The compiled module has the generic NumPy module's interface (``templates/numpy/cell.py.j2``, the
context of ``cell_backend``): its constants, ``init_params`` and argument validation are copied
verbatim from the NumPy module for the same model and mode, so both accept and reject exactly the same
arguments with the same messages; its ``bptt_terms`` is the NumPy module's (copied with the prefix
``_numpy_``).

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

import ast

import sympy as sp

from .cell_backend import NAMED, SIGNATURES
from .interim_text import PREFIX, function_closure, vectorised
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

#: What the Numba module copies from the NumPy module under their own names, verbatim: the
#: constants (module-level assignments) and these functions with the module functions they call.
COPIED_FUNCTIONS = ("init_params", "_inputs", "_labels")
#: The module's public functions. A cell that declares ``positional`` parameters (the plain RNN) has
#: them as the NumPy module's wrappers, copied verbatim with their ``_call``, which take one params
#: dict or the parameters one by one and call the dict implementations ``_dict_<name>``; other cells'
#: implementations are the public functions themselves (``cell_backend``'s context key ``impl``).
PUBLIC = ("forward", "states", "loss", "loss_and_grad", "bptt_terms")
#: The positional form's helper, copied with the wrappers.
WRAPPER_HELPERS = ("_call",)

def blas_entries(state_maps: int, hidden: int) -> int:
    """Entries per step (B·H) from which a call takes the BLAS drivers (BLAS_ENTRIES, …)."""
    return round(BLAS_ENTRIES / (max(1, state_maps) * (1 + hidden / BLAS_HIDDEN)))


def implementations(positional: bool) -> dict[str, str]:
    """Public name → the name of the function that implements it (``cell_backend``'s ``impl``)."""
    return {name: f"_dict_{name}" if positional else name for name in PUBLIC}


def copied(numpy_source: str, positional: bool = False) -> dict[str, str]:
    """The NumPy module's constants, its ``init_params``/validation functions and, for a cell with
    positional parameters, its public wrappers, as source.

    ``constants``: every module-level assignment (CELL, STEPS, MODE, …, PARAMS, STORED, POSITIONAL)
    with the comment lines directly above it; ``functions``: ``COPIED_FUNCTIONS`` and the functions
    they call; ``wrappers``: ``_call`` and the public functions of the positional form (empty for
    other cells), which call only what is copied here and the dict implementations.
    """
    tree = ast.parse(numpy_source)
    lines = numpy_source.splitlines()
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    wanted = function_closure(functions, COPIED_FUNCTIONS)
    wrappers = (*WRAPPER_HELPERS, *PUBLIC) if positional else ()
    impl = set(implementations(positional).values())
    for name in wrappers:
        calls = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)} & set(functions)
        stray = calls - wanted - set(wrappers) - impl
        assert not stray, f"the NumPy module's {name} calls {sorted(stray)}, which the Numba module lacks"
    constants = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            first = node.lineno - 1
            while first > 0 and lines[first - 1].startswith("#:"):
                first -= 1  # the comment that documents the constant
            constants.append("\n".join(lines[first : node.end_lineno]))
    return {
        "constants": "\n".join(constants),
        "functions": "\n\n\n".join(
            ast.get_source_segment(numpy_source, node)
            for node in tree.body
            if getattr(node, "name", None) in wanted
        ),
        "wrappers": "\n\n\n".join(
            ast.get_source_segment(numpy_source, node)
            for node in tree.body
            if getattr(node, "name", None) in wrappers
        ),
    }


#: The line length of ``ruff format`` (pyproject.toml): the generated module is stable under it.
LINE_LENGTH = 110


def layout(head: str, items: list[str], indent: int, tail: str = "", brackets: str = "()") -> str:
    """``head(item, …)tail`` laid out as ``ruff format`` does: on one line if it fits, else the items
    on one line of their own inside the brackets, else one item a line with a trailing comma."""
    pad, inner = " " * indent, " " * (indent + 4)
    opening, closing = brackets
    line = f"{pad}{head}{opening}{', '.join(items)}{closing}{tail}"
    if len(line) <= LINE_LENGTH:
        return line.lstrip()
    if len(inner + ", ".join(items)) <= LINE_LENGTH:
        return f"{head}{opening}\n{inner}{', '.join(items)}\n{pad}{closing}{tail}"
    return f"{head}{opening}\n" + "".join(f"{inner}{item},\n" for item in items) + f"{pad}{closing}{tail}"


def context(model, mode: str, command: str, numpy_source: str, cell_layout: Layout) -> dict:
    """Everything ``templates/numba/cell.py.j2`` places: names, printed statements. No SymPy objects.

    ``cell_layout``: the cell's (``layout.layout_of``), the one the NumPy module was printed from;
    ``numpy_source`` is the NumPy module for the same model and mode (``cell_backend``); its
    constants, ``init_params`` and validation are copied, and its ``bptt_terms`` (with what it calls).
    """
    printer = NumbaCellPrinter(cell_layout)
    d = printer.d
    assert d.mutation is None and d.transpose and d.batch_mean, "only the exact derivation is compiled"
    tree = ast.parse(numpy_source)
    forward_parts, backward_parts = printer.forward_parts(), printer.backward_parts()
    arguments = _arguments(printer)
    _part_calls(forward_parts, backward_parts, arguments)
    positional = bool(d.cell.positional)
    impl = implementations(positional)
    missing = [
        name for name in impl.values() if name not in {n.name for n in tree.body if hasattr(n, "name")}
    ]
    assert not missing, f"the NumPy module lacks {missing}: the implementations are named as in cell_backend"
    scalar = NumbaScalarPrinter()  # the per-sequence outputs: exact f (σ of the logit)
    y_hat, y = d.symbols["y_hat"], d.symbols["y"]
    output_factor_code = scalar.doprint(d.output_factor.xreplace({y_hat: sp.Symbol("y_hat"), y: sp.Symbol("y")}))
    helpers = scalar.helpers | printer.kernel.helpers
    return {
        "command": command,
        "mode": mode,
        "steps": model.steps if mode == "unrolled" else None,
        "cell": d.cell.name,
        # the NumPy module's docstring after its first line: the equations and the gradient formulas
        # (its text as written again: a cell's description may hold backslashes and quotes)
        "formulas": ast.get_docstring(tree, clean=False).split("\n", 1)[1].rstrip()
        .replace("\\", "\\\\").replace('"""', '\\"\\"\\"'),
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
        "output_factor_code": output_factor_code,
        "rows": ROWS,
        "span_rows": SPAN_ROWS,
        "blas_entries": blas_entries(sum(g.count for g in printer.groups if g.kind == "state"), model.hidden),
        "impl": impl,
        "impl_signatures": {
            name: layout(f"def {impl[name]}", names + (NAMED if positional else []), 0, f" -> {returns}:")
            for name, (names, returns) in SIGNATURES.items()
        },
        "positional": positional,
        # the NumPy module's bptt_terms, prefixed _numpy_, with what it calls
        "numpy_impl": {"bptt_terms": PREFIX + impl["bptt_terms"].lstrip("_")},
        "vectorised": vectorised(numpy_source, (impl["bptt_terms"],), COPIED_FUNCTIONS),
        **copied(numpy_source, positional),
        **{f"uses_{name}": name in helpers for name in ("relu", "heaviside", "tanh", "logistic", "exp")},
        "real_functions": [REAL_FUNCTIONS[name] for name in sorted(helpers & set(REAL_FUNCTIONS))],
    }


def _arguments(printer: NumbaCellPrinter) -> dict[str, list[str]]:
    """The argument lists of the drivers, of the compiled parts and of their calls."""
    groups = printer.groups
    stored_maps = [f"maps_{g.label}" for g in groups if g.reads_maps]
    arrays = [deltas(g) for g in printer.arrays]
    backward = ["x", "values", *stored_maps, *(f"weights_{g.label}" for g in groups if g.kind != "x"),
                "vectors", "incoming", "span"]
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
            name if name in ("x", "values", "incoming", *stored_maps)
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
            part["call"] = layout(f"_{stage}_part_{k}", call, 12)
            part["signature"] = layout(f"def _{stage}_part_{k}", names, 0, ":")
            part["sweep_signature"] = layout(f"def _{stage}_sweep_{k}", names[:-1], 0, ":")
            part["sweep_inner_call"] = layout(f"_{stage}_part_{k}", names, 8)
            part["sweep_call"] = layout(f"_{stage}_sweep_{k}", call[:-1], 8)


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
        "allocations": [
            f"maps_{g.label} = np.zeros(({'steps, ' if g.reads_maps else ''}batch, {g.count} * hidden), x.dtype)"
            for g in groups
        ],
        "signatures": {
            f"{stage}_{kind}": layout(f"def _{stage}_{kind}", arguments[f"{stage}_arguments"], 0, ":")
            for stage in ("forward", "backward") for kind in ("serial", "blas")
        },
        "forward_kernel_call": layout(
            "return forward_kernel", ["x", *(f'w["{name}"]' for name in arguments["forward_arguments"][1:])], 4
        ),
        "backward_kernel_call": layout(
            f"{', '.join([*gradient_names, 'sums' if printer.summed else '_'])} = backward_kernel",
            arguments["backward_driver_call"], 4,
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
            stacking.append(layout(f"{name} = ", [f'p["{m}"]' for m in group.matrices], 4, brackets="[]"))
            stacked = f"np.concatenate({name})"
        if group.kind == "x":
            stacking.append(f'w["{name}_transposed"] = np.ascontiguousarray({stacked}.T, dtype=dtype)')
            continue
        stacking.append(f'w["{name}"] = np.ascontiguousarray({stacked}, dtype=dtype)')
        stacking.append(f'w["{name}_transposed"] = np.ascontiguousarray(w["{name}"].T)')
    if len(vectors) == 1:
        stacking.append(f'w["vectors"] = np.ascontiguousarray(p["{vectors[0]}"], dtype=dtype)[np.newaxis]')
    elif vectors:
        stacking.append(layout("vectors = ", [f'p["{name}"]' for name in vectors], 4, brackets="[]"))
        stacking.append('w["vectors"] = np.ascontiguousarray(np.stack(vectors), dtype=dtype)')
    else:
        stacking.append('w["vectors"] = np.zeros((0, HIDDEN_SIZE), dtype)')
    return stacking


__all__ = [
    "BLAS_ENTRIES",
    "BLAS_HIDDEN",
    "PUBLIC",
    "ROWS",
    "SPAN_ROWS",
    "blas_entries",
    "context",
    "copied",
    "implementations",
]
