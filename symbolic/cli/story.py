"""bptt derive, codegen and demo: the derivation typeset and proved, the generated module, the whole story."""

from __future__ import annotations

from ..errors import UsageError
from ..model import CONFIGURABLE_CELLS
from .common import after_proof, derivation_for, example_name, model_of, write_or_print


def derive(args) -> int:
    model = model_of(args)
    from ..typeset.notes import FORMATS, sigma_pi_document

    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}: choose one of {', '.join(FORMATS)}")
    if args.output:
        from ..files import check_target

        check_target(args.output, args.force, example=example_name(args))
    if model.generic:
        return _derive_generic(model, args)
    from ..notes.derive import Derivation  # the notes' scalar model: its Σ/Π specialisation

    derivation = Derivation(model, derivation_for(model))
    if not args.verify:
        write_or_print(sigma_pi_document(derivation, args.format), args)
        return 0
    derivation.require_components("--verify")  # refuse a large --inputs before any work
    from ..notes.proof import format_report, prove
    from ..progress import Stages

    report = prove(derivation, progress=Stages("bptt derive --verify", 3))
    return after_proof(report.passed, format_report(report), lambda: sigma_pi_document(derivation, args.format), args)


def _derive_generic(model, args) -> int:
    """derive for every model but the notes' scalar one (any cell, any H, biases): the generic document
    (symbolic/typeset/cells.py), and with --verify the proof (symbolic/engine/oracle.py), run first so that a refusal
    or a failure writes nothing."""
    from ..typeset.cells import document

    derivation = derivation_for(model)
    if not args.verify:
        write_or_print(document(model, derivation, args.format), args)
        return 0
    passed, text = _prove_cell(model, derivation)
    return after_proof(passed, text, lambda: document(model, derivation, args.format), args)


def _prove_cell(model, derivation) -> tuple[bool, str]:
    """(passed, printed report) of the generic proof (symbolic/engine/oracle.py)."""
    from ..engine import oracle
    from ..progress import Stages

    report = oracle.verify(derivation, model, progress=Stages("bptt derive --verify", 4))
    return report.passed, oracle.format_report(report)


def codegen(args) -> int:
    from ..codegen import generate, resolve_backend

    model = model_of(args)
    if args.target != "numpy":
        return _codegen_target(model, args)
    resolve_backend(args.backend)  # an unknown backend or a missing Numba fails before any work
    if args.output:
        from ..files import check_target

        check_target(args.output, args.force, example=example_name(args))
    derivation = derivation_for(model) if model.generic else None  # the notes' model: its own Σ/Π form
    write_or_print(generate(model, mode=args.mode, output=args.output, backend=args.backend, derivation=derivation), args)
    return 0


def _codegen_target(model, args) -> int:
    """codegen --target torch|jax: the cell inside the framework's autodiff (symbolic/codegen/torch_printer.py,
    jax_printer.py)."""
    from ..codegen import generate_target, resolve_target

    resolve_target(args.target)  # an unknown target or a missing framework fails before any work
    for option, value in (("--backend", args.backend if args.backend != "numpy" else None), ("--mode", args.mode)):
        if value is not None:   # a framework module loops over any length, in the framework's own code
            raise UsageError(f"{option} {value} is for --target numpy: drop it with --target {args.target}")
    if not model.outputs.default:   # the framework module returns every state; the readout and loss are the user's
        raise UsageError(f"{model.outputs.flags} chooses the generated readout and loss; a --target {args.target} "
                         "module returns every step's states and leaves the readout and loss to you: drop them")
    if model.bias and model.cell not in CONFIGURABLE_CELLS:
        raise UsageError(f"--bias gives --cell {model.cell_name} a readout bias b_y; a --target {args.target} module "
                         "leaves the readout to you: drop --bias")
    if args.output:
        from ..files import check_target

        check_target(args.output, args.force, example=example_name(args))
    write_or_print(generate_target(model, args.target, args.output, derivation_for(model)), args)
    return 0


def demo(args) -> int:
    from .demo import run

    run(args.out, force=args.force)
    return 0
