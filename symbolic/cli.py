"""The ``bptt`` command line: parses options, builds a Model, calls the stages. No mathematics here.

Every mistake a user can make surfaces as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .activations import ACTIVATIONS
from .errors import UsageError

ACTIVATION_HELP = f"activation f: {', '.join(ACTIVATIONS)} (default: tanh)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the fix, not a usage dump."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common_model_options(parser: argparse.ArgumentParser, steps_default: str | None = "3") -> None:
    parser.add_argument(
        "--steps", "-n", default=steps_default, metavar="N",
        help="number of timesteps n, a positive whole number" + (f" (default: {steps_default})" if steps_default else ""),
    )
    parser.add_argument("--activation", "-a", default="tanh", metavar="A", help=ACTIVATION_HELP)
    parser.add_argument(
        "--inputs", default="3", metavar="D",
        help="input size D (default: 3, the notes' one-hot vocabulary cat, mat, rat)",
    )


def _output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help=f"write the {what} to FILE (default: stdout)")
    parser.add_argument(
        "--force", action="store_true",
        help="replace FILE even if bptt did not generate it (a file bptt generated is always replaced)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bptt",
        description=(
            "Backpropagation Through Time for the notes' many-to-one RNN "
            "o_t = f(w_i·x_t + w_h o_(t-1)), ŷ = σ(w_o o_n), binary cross-entropy: "
            "derived exactly with SymPy, typeset, generated as NumPy code and checked numerically."
        ),
        epilog="Run 'bptt COMMAND --help' for a command's options. Mistakes exit with status 2.",
    )
    parser.add_argument("--version", action="version", version=f"bptt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    derive = commands.add_parser(
        "derive",
        help="derive the gradients exactly and typeset them (LaTeX or Markdown)",
        description=(
            "Derive ∂L/∂w_i, ∂L/∂w_h and ∂L/∂w_o for n steps: the chain-rule (Σ/Π) form with its short- "
            "and long-term terms, the local derivatives, and the fully expanded result; print it as a "
            "LaTeX document or Markdown. With --verify, prove instead that the forms agree (by "
            "induction for every n, exactly for small n, and at 60 digits) and print what was proved."
        ),
    )
    _common_model_options(derive)
    derive.add_argument(
        "--format", "-f", default="tex", metavar="FORMAT",
        help="tex (a standalone LaTeX document) or md (Markdown with $$ math for KaTeX); default: tex",
    )
    _output_options(derive, "document")
    derive.add_argument(
        "--verify", action="store_true",
        help="run the three proofs and print the report; exit 1 if any disagrees "
        "(the document is still written when -o is given)",
    )
    derive.set_defaults(handler=_derive)

    # -- codegen (symbolic/codegen) ---------------------------------------------------------------
    codegen = commands.add_parser(
        "codegen",
        help="generate a NumPy module with forward, loss and loss_and_grad",
        description=(
            "Render the derivation as a NumPy module (imports only NumPy): forward(x, w_i, w_h, w_o), "
            "loss(x, y, w_i, w_h, w_o) and loss_and_grad(x, y, w_i, w_h, w_o). 'unrolled' writes "
            "straight-line code for exactly N steps; 'loop' works for any sequence length."
        ),
    )
    _common_model_options(codegen)
    codegen.add_argument(
        "--mode", "-m", default=None, metavar="MODE",
        help="unrolled (straight-line code for exactly N steps; default for N <= 64) or loop "
        "(any length; default above 64)",
    )
    _output_options(codegen, "module")
    codegen.set_defaults(handler=_codegen)

    # -- check (symbolic/check.py) ----------------------------------------------------------------
    check = commands.add_parser(
        "check",
        help="check a generated module's gradients numerically",
        description=(
            "Load a module with the generated interface and compare loss_and_grad with central finite "
            "differences and, for analytic activations, the complex step, on random inputs. Prints the "
            "worst relative error per parameter; exits 1 beyond tolerance."
        ),
    )
    check.add_argument("module", metavar="FILE.py", help="the generated module to check")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--seed", default="0", metavar="S", help="random seed for the test inputs (default: 0)")
    check.set_defaults(handler=_check)
    return parser


def _model(args):
    from .model import Model

    return Model(steps=args.steps, activation=args.activation, inputs=args.inputs)


def _write_or_print(text: str, args) -> None:
    from .files import check_target, write_atomic

    if args.output:
        write_atomic(check_target(args.output, args.force), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _derive(args) -> int:
    model = _model(args)
    from .derive import Derivation
    from .latex import FORMATS, document

    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}: choose one of {', '.join(FORMATS)}")
    if args.output:
        from .files import check_target

        check_target(args.output, args.force)
    derivation = Derivation(model)
    if args.output or not args.verify:
        _write_or_print(document(derivation, args.format), args)
    if args.verify:
        from .proof import format_report, prove

        report = prove(derivation)
        print(format_report(report))
        return 0 if report.passed else 1
    return 0


def _codegen(args) -> int:
    from .codegen import generate

    model = _model(args)
    if args.output:
        from .files import check_target

        check_target(args.output, args.force)
    _write_or_print(generate(model, mode=args.mode, output=args.output), args)
    return 0


def _check(args) -> int:
    from .check import run_check

    return run_check(args.module, as_json=args.json, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return args.handler(args)
    except UsageError as error:
        print(f"bptt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bptt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
