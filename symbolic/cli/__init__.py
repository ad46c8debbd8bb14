"""The ``bptt`` command line: parses options, builds a Model, calls the stages. No mathematics here.

Every mistake a user can make surfaces as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys

from .. import __version__
from ..errors import UsageError
from ..model import ACTIVATION_NAMES

ACTIVATION_HELP = f"activation f: {', '.join(ACTIVATION_NAMES)} (default: tanh)"


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
    _shape_options(parser)


def _shape_options(parser: argparse.ArgumentParser) -> None:
    """--hidden and --cell, shared by derive, codegen, analyze and train (checked by Model)."""
    parser.add_argument(
        "--hidden", default="1", metavar="H",
        help="hidden size H (default: 1, the notes' scalar state)",
    )
    parser.add_argument(
        "--bias", action="store_true",
        help="add biases: b_h inside f and b_o in the output logit (the notes' model has none)",
    )
    parser.add_argument(
        "--cell", default="rnn", metavar="CELL",
        help="recurrent cell: rnn, the notes' o_t = f(w_i·x_t + w_h o_(t-1)) (default); lstm (gates i, f, "
        "g, o as torch.nn.LSTM); gru (torch.nn.GRU's convention); or FILE.py, your own cell written with "
        "symbolic.cells.spec (see docs/cells.md). A cell file is Python: it runs when loaded, like any script",
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
            "induction for every n, exactly for small n, and at 60 digits) and print what was proved. "
            "With --hidden H > 1 or --bias (the matrix RNN), or --cell C (lstm, gru, or a cell file): the "
            "cell's BPTT derived from its equations (the model with ⊙, the local derivatives, the δ recursion "
            "with what step t+1 sends back, the gradient sums, the state-to-state Jacobian with any direct path, "
            "such as the LSTM's diag(f_t), shown apart, and its product over a gap); --verify proves it against "
            "sp.diff of the unrolled loss (the derivation is per unit: proved at H = 1 exactly and at H = 2 or 3 at 60 "
            "digits, whatever the model's size)."
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
            "straight-line code for exactly N steps; 'loop' works for any sequence length. With "
            "--hidden H the weights are matrices (w_i (H, D), w_h (H, H), w_o (H,)); with --bias the "
            "module takes b_h (H,) and b_o as keyword arguments and returns their gradients last. With "
            "--cell lstm the module has a dict interface: PARAMS (W_i, W_f, W_g, W_o (H, D), U_· (H, H), "
            "b_· (H,), w_y (H,); gates in torch.nn.LSTM's order), init_params(seed), forward(x, params), "
            "states(x, params), loss(x, y, params) and loss_and_grad(x, y, params) -> (loss, grads)."
        ),
    )
    _common_model_options(codegen)
    codegen.add_argument(
        "--mode", "-m", default=None, metavar="MODE",
        help="unrolled (straight-line code for exactly N steps; default for N <= 64) or loop "
        "(any length; default above 64)",
    )
    codegen.add_argument(
        "--backend", "-b", default="numpy", metavar="numpy|numba",
        help="numpy (default; imports only NumPy) or numba (loops over time and batch compiled with "
        "Numba, same interface; needs pip install bptt[fast])",
    )
    _output_options(codegen, "module")
    codegen.set_defaults(handler=_codegen)

    # -- check (symbolic/verify/check.py) ----------------------------------------------------------------
    check = commands.add_parser(
        "check",
        help="check a generated module's gradients numerically",
        description=(
            "Import FILE.py (so its top-level code runs, as with 'import') in a child process and compare "
            "loss_and_grad with central finite differences and, for analytic activations, the complex "
            "step, on random inputs. Prints the worst relative error per parameter; passes only when every "
            "parameter was compared. Modules with the dict interface (CELL, PARAMS, init_params, e.g. "
            "--cell lstm) are checked per parameter name, at most 48 sampled entries of each. Exit 0: "
            "passed; 1: a gradient is wrong or cannot be compared (NaN, wrong shape, dtype, type or count); "
            "2: the module cannot be checked (it raises, exits, crashes or exceeds --timeout). Anything the "
            "module prints goes to stderr."
        ),
    )
    check.add_argument("module", metavar="FILE.py", help="the module to check (imported: its top-level code runs)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--seed", default="0", metavar="S", help="random seed for the test inputs, a whole number >= 0 (default: 0)"
    )
    check.add_argument(
        "--timeout", default="60", metavar="SECONDS",
        help="time limit for each call into the module (its import, loss, loss_and_grad), after which the "
        "check stops with exit 2 (default: 60; a Numba module compiles on its first call)",
    )
    check.set_defaults(handler=_check)
    _grade_command(commands)
    _story_commands(commands)  # analyze, train, demo
    from .remedies import add_command as add_remedies  # bptt remedies (symbolic/cli/remedies.py)

    add_remedies(commands)
    return parser


#: Commands that take any cell; the others refuse a cell but the plain RNN in one line.
CELL_COMMANDS: set[str] = {"derive", "codegen", "analyze", "train"}


def _cell_gate(model, args):
    if model.gated and args.command not in CELL_COMMANDS:
        model.require_rnn(f"bptt {args.command}")
    return model


def _model(args):
    from ..model import Model

    return _cell_gate(
        Model(
            steps=args.steps, activation=args.activation, inputs=args.inputs, hidden=args.hidden,
            cell=args.cell, bias=args.bias,
        ),
        args,
    )


def _check_shape(args):
    """analyze and train: check --hidden, --cell, --bias and --activation before any work."""
    from ..model import Model

    return _cell_gate(
        Model(steps=1, activation=args.activation, hidden=args.hidden, cell=args.cell, bias=args.bias), args
    )


def _write_or_print(text: str, args) -> None:
    from ..files import check_target, write_atomic

    if args.output:  # main() turned -o - and -o /dev/stdout into None
        write_atomic(check_target(args.output, args.force, example=_example_name(args)), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _derive(args) -> int:
    model = _model(args)
    from ..typeset.notes import FORMATS, document

    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}: choose one of {', '.join(FORMATS)}")
    if args.output:
        from ..files import check_target

        check_target(args.output, args.force, example=_example_name(args))
    if model.generic:
        return _derive_cell(model, args)
    from ..notes.derive import Derivation  # the notes' scalar model: its Σ/Π specialisation

    derivation = Derivation(model)
    if not args.verify:
        _write_or_print(document(derivation, args.format), args)
        return 0
    derivation.require_components("--verify")  # refuse a large --inputs before any work
    from ..notes.proof import format_report, prove
    from ..progress import Stages

    report = prove(derivation, progress=Stages("bptt derive --verify", 3))
    return _after_proof(report.passed, format_report(report), lambda: document(derivation, args.format), args)


def _after_proof(passed: bool, text: str, make_document, args) -> int:
    """Print the proof's report; with -o write the document only when the proof passed (a failed or
    interrupted proof leaves no file that reads as proved)."""
    print(text)
    if args.output and passed:
        _write_or_print(make_document(), args)
    elif args.output:
        print(f"the proof failed, so {args.output} was not written", file=sys.stderr)
    return 0 if passed else 1


def _derive_cell(model, args) -> int:
    """derive for every model but the notes' scalar one (any cell, any H, biases): the generic document
    (symbolic/typeset/cells.py), and with --verify the proof (symbolic/engine/oracle.py), run first so that a refusal
    or a failure writes nothing."""
    from ..typeset.cells import document

    if not args.verify:
        _write_or_print(document(model, args.format), args)
        return 0
    passed, text = _prove_cell(model)
    return _after_proof(passed, text, lambda: document(model, args.format), args)


def _prove_cell(model) -> tuple[bool, str]:
    """(passed, printed report) of the generic proof (symbolic/engine/oracle.py)."""
    from ..engine import oracle
    from ..progress import Stages

    report = oracle.verify(model, progress=Stages("bptt derive --verify", 4))
    return report.passed, oracle.format_report(report)


def _codegen(args) -> int:
    from ..codegen import generate, resolve_backend

    model = _model(args)
    resolve_backend(args.backend)  # an unknown backend or a missing Numba fails before any work
    if args.output:
        from ..files import check_target

        check_target(args.output, args.force, example=_example_name(args))
    _write_or_print(generate(model, mode=args.mode, output=args.output, backend=args.backend), args)
    return 0


def _check(args) -> int:
    from ..verify.check import run_check

    return run_check(args.module, as_json=args.json, seed=args.seed, timeout=args.timeout)


# -- grade (symbolic/verify/grade.py) ---------------------------------------------------------------------


def _grade_command(commands) -> None:
    grade = commands.add_parser(
        "grade",
        help="grade anyone's BPTT against the exact derivation and name the mistake",
        description=(
            "Import FILE.py (its top-level code runs) in a sandbox process that holds only the file, and "
            "grade its function loss_and_grad in another: the loss and every gradient entry against the exact recursion (float64, and 60 digits where float64 cannot "
            "decide) at n = 1..8, 12, 20, B = 1, 2, 5 and the notes' three sentences; where it goes wrong in time "
            "(n = 1 is the short-term term alone); and the known mistake it matches (long-term terms "
            "dropped, f′ missing or at the wrong step, the total derivative for the immediate partial, W_h "
            "for W_hᵀ, the batch mean, the carousel or another direct path, the sign of ŷ − y). Exit 0 "
            "right, 1 wrong, 2 when the function cannot be graded (missing, wrong signature, raises, exits, "
            "crashes or exceeds --timeout). Anything the file prints goes to stderr."
        ),
        epilog=(
            "Interface: the plain RNN as loss_and_grad(x, y, w_i, w_h, w_o) -> (loss, dw_i, dw_h, dw_o) with "
            "x (B, n, D), y (B,), at H = 1 w_i (D,) and w_h, w_o numbers, for --hidden H w_i (H, D), "
            "w_h (H, H), w_o (H,), with --bias also b_h=, b_o= (returning db_h, db_o); every other cell as "
            "loss_and_grad(x, y, params) -> (loss, grads), dicts keyed by parameter name."
        ),
    )
    grade.add_argument("file", metavar="FILE.py", help="the Python file to grade (imported: its top-level code runs)")
    grade.add_argument(
        "--cell", default="rnn", metavar="C",
        help="the cell it implements: rnn (default), lstm, gru, or a cell file ending in .py",
    )
    grade.add_argument("--activation", "-a", default="tanh", metavar="A", help=ACTIVATION_HELP + " (rnn only)")
    grade.add_argument("--hidden", default=None, metavar="H",
                       help="hidden size H (default: 3, where a matrix and its transpose differ; 1, the notes' "
                            "scalar model, for the plain RNN's loss_and_grad(x, y, w_i, w_h, w_o))")
    grade.add_argument("--inputs", default="3", metavar="D", help="input size D (default: 3, the notes' one-hot words)")
    grade.add_argument("--bias", action="store_true", help="the RNN with biases b_h and b_o")
    grade.add_argument("--function", default="loss_and_grad", metavar="NAME",
                       help="the function to grade (default: loss_and_grad)")
    grade.add_argument(
        "--steps", "-n", default=None, metavar="N",
        help="grade at this sequence length only, for a function that takes one length (default: n = 1..8, "
        "12 and 20, which localises a mistake in time)",
    )
    grade.add_argument("--seed", default="0", metavar="S", help="random seed of the graded points (default: 0)")
    grade.add_argument("--json", action="store_true", help="print the findings as JSON")
    grade.add_argument(
        "--timeout", default="60", metavar="SECONDS",
        help="time limit for each call into the file (its import, each call of the function), after which "
        "grading stops with exit 2 (default: 60)",
    )
    grade.set_defaults(handler=_grade)


def _grade(args) -> int:
    from ..verify.grade import run_grade

    return run_grade(args.file, cell=args.cell, activation=args.activation, hidden=args.hidden,
                     function=args.function, as_json=args.json, steps=args.steps, bias=args.bias,
                     inputs=args.inputs, seed=args.seed, timeout=args.timeout)


# -- analyze, train, demo (symbolic/study/analysis.py, train.py, data.py, demo.py) ------------------------


def _story_commands(commands) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="measure the BPTT terms: vanishing or exploding gradients, with the symbolic bound",
        description=(
            "At the given weights and input sequence, compute with the generated code the n terms of "
            "the BPTT sums for dL/dw_h and dL/dw_i (term j flows through timestep j), the factors "
            "do_k/do_(k-1) and their product for every gap n - j. Prints the bound "
            "|do_k/do_(k-1)| <= gamma*|w_h| derived by SymPy (gamma = sup|f'|) and the regime: "
            "vanishing when gamma*|w_h| < 1 (guaranteed), otherwise from the geometric mean m of the "
            "measured |factors|: m < 0.95 vanishing, m > 1.05 exploding, else stable. "
            "With --hidden H > 1 (or --bias) the factor is the matrix diag(f'(a_k)) W_h: it reports the "
            "singular values of W_h, the condition of Pascanu, Mikolov & Bengio (2013) (sigma_max(W_h) < "
            "1/gamma is sufficient for vanishing, > 1/gamma necessary for exploding), and the spectral "
            "norms of the Jacobian products per gap next to the bound (gamma*sigma_max)^gap; the regime "
            "is judged the same way from gamma*sigma_max and the product's growth per step "
            "m = ||product over n-1 steps||^(1/(n-1))."
        ),
    )
    analyze.add_argument(
        "--steps", "-n", default=None, metavar="N",
        help="sequence length n (required unless --input gives the sequence)",
    )
    analyze.add_argument("--activation", "-a", default="tanh", metavar="A", help=ACTIVATION_HELP)
    _shape_options(analyze)
    recurrent = analyze.add_mutually_exclusive_group()
    recurrent.add_argument(
        "--w-h", default=None, metavar="V", help="recurrent weight w_h of the scalar model (default: 0.5)"
    )
    recurrent.add_argument(
        "--w-h-scale", default=None, metavar="S",
        help="set the recurrent matrix W_h = S*Q, Q a random orthogonal HxH matrix drawn with --seed, so "
        "every singular value of W_h is |S| (default: 0.5; for H = 1, w_h = S). With --hidden H > 1 "
        "(or --bias), W_i ~ N(0, 0.5^2), w_o ~ N(0, 1/H) and b_h ~ N(0, 0.1^2) are drawn with --seed too",
    )
    analyze.add_argument(
        "--w-i", default=None, metavar="a,b,c",
        help="input weights w_i of the scalar model, one per word cat,mat,rat (default: 0.5,0.5,0.5)",
    )
    analyze.add_argument(
        "--w-o", default=None, metavar="V", help="output weight w_o of the scalar model (default: 1)"
    )
    analyze.add_argument(
        "--input", default=None, metavar="WORDS",
        help="the sequence, words of the notes' vocabulary separated by commas, e.g. cat,mat,rat "
        "(default: a random sequence of --steps words drawn with --seed)",
    )
    analyze.add_argument(
        "--seed", default="0", metavar="S",
        help="seed of the random input sequence and of the drawn weights with --hidden H > 1 (default: 0)",
    )
    analyze.add_argument(
        "--set", action="append", default=[], metavar="NAME=V", dest="settings",
        help="with --cell C (any cell but rnn): set every entry of the cell's per-unit parameter NAME to V "
        "(repeatable). The cell's weights are the generated module's init_params(--seed) (uniform in "
        "±1/sqrt(H), and the cell's own choices such as the LSTM's b_f = 1); the report gives, per state s, "
        "the spectral norm of ds_n/ds_j per gap (blocks of the product of the state Jacobians, from the "
        "derivation's local partials), each direct path alone (the LSTM's carousel prod diag(f_k), the GRU's "
        "prod diag(z_k)), and beside them the tanh RNN's product |prod do_k/do_(k-1)| on the same words at "
        "the defaults above (--w-h, or --w-h-scale with --hidden H > 1, set its recurrent weight)",
    )
    analyze.add_argument(
        "--forget-bias", default=None, metavar="B",
        help="the same as --set b_f=B: every forget-gate bias of a cell that has one (--cell lstm)",
    )
    analyze.add_argument("--json", action="store_true", help="print the measurements as JSON")
    analyze.add_argument(
        "--plot", metavar="FILE.png", default=None,
        help="also draw log|term_j| against the gap, with the bound's line; with --hidden H > 1 the "
        "Jacobian products' norms against the gap with the bound (needs matplotlib)",
    )
    analyze.set_defaults(handler=_analyze)

    train = commands.add_parser(
        "train",
        help="train the RNN by gradient descent with the generated gradients",
        description=(
            "Full-batch gradient descent with the notes' update rules w <- w - lr*dL/dw for w_i, w_h "
            "and w_o (with --hidden H the matrices W_i, W_h, the vector w_o and, with --bias, b_h and "
            "b_o), the gradients coming from the generated module's loss_and_grad. Reports the "
            "loss, the accuracy, each sentence's prediction and the learned weights. A run whose loss "
            "or gradient stops being finite, or whose weights are thrown beyond 1e6, is reported as "
            "diverged at that epoch (exit status 1). "
            "With --cell lstm the model is the LSTM (gates i, f, g, o; see bptt derive --cell lstm), its "
            "parameters a dict from the generated module's init_params(--seed) with every forget-gate bias "
            "set to --forget-bias, its gradients from the module's loss_and_grad; its defaults differ, "
            "so that --data long (the label is the first of 50 words) reaches held-out accuracy >= 0.95 in "
            "seconds: --hidden 16, --epochs 80, --optimizer adam, --lr 0.03, --forget-bias 5 (forget gates "
            "start at sigma(5) = 0.993, so the cell path keeps most of the first word over 49 steps), "
            "--clip-norm 1. Plain gradient descent stayed near chance there: its steps are as small as "
            "the long path's gradient, while Adam scales each component. --init and --init-w-h apply to "
            "the plain RNN only."
        ),
    )
    train.add_argument(
        "--data", default="notes", metavar="notes|long|FILE.csv",
        help="notes: the notes' three sentences (default); long: 200 sequences of 50 words whose label "
        "is 1 iff the first word is 'cat', with a held-out set of 100 drawn the same way; or a CSV "
        "file with columns text,label (label 0 or 1, text split on whitespace, D = vocabulary size)",
    )
    train.add_argument(
        "--steps-from-data", action="store_true",
        help="generate straight-line (unrolled) code for each sequence length found in the data "
        "instead of one loop-mode module for every length",
    )
    train.add_argument(
        "--epochs", "-e", default=None, metavar="E", help="number of epochs (default: 200; --cell lstm: 80)"
    )
    train.add_argument(
        "--lr", default=None, metavar="η",
        help="learning rate η (default: 0.5; --cell lstm: 0.03 with Adam); a comma-separated list (--lr "
        "0.01,0.1,1) trains once per rate, all else fixed, and prints one row each: the controlled learning "
        "rate, measured"
    )
    train.add_argument(
        "--optimizer", default=None, metavar="sgd|adam",
        help="sgd: the notes' w <- w - lr*dL/dw (default); adam: Adam (Kingma & Ba 2015; default with "
        "--cell lstm)",
    )
    train.add_argument("--activation", "-a", default="tanh", metavar="A", help=ACTIVATION_HELP)
    _shape_options(train)
    for action in train._actions:
        if action.dest == "hidden":  # the LSTM has its own default hidden size
            action.default = None
            action.help = "hidden size H (default: 1, the notes' scalar state; --cell lstm: 16)"
    train.add_argument(
        "--set", action="append", default=[], metavar="NAME=V", dest="settings",
        help="with --cell C (any cell but rnn): every entry of the per-unit parameter NAME starts at V "
        "(repeatable; the cell may name its own, e.g. the LSTM's b_f = 5)",
    )
    train.add_argument(
        "--forget-bias", default=None, metavar="B",
        help="the same as --set b_f=B: every forget-gate bias of a cell that has one (--cell lstm; default 5)",
    )
    train.add_argument(
        "--init", default=None, metavar="normal|identity|zeros",
        help="initial weights: normal (w_i, w_o ~ N(0,1), w_h ~ N(0,0.25); default; with --hidden H: "
        "W_i ~ N(0,1), W_h ~ N(0,0.25/H), w_o ~ N(0,1/H), biases 0), identity (w_h = 1, W_h = I: the "
        "notes' remedy for vanishing gradients, Le, Jaitly & Hinton 2015) or zeros",
    )
    train.add_argument(
        "--init-w-h", default=None, metavar="V",
        help="start the recurrent weight w_h at V (W_h = V*I with --hidden H; overrides --init)",
    )
    clipping = train.add_mutually_exclusive_group()
    clipping.add_argument(
        "--clip-norm", default=None, metavar="C",
        help="clip the gradient by its global norm over all parameters: if ||g|| > C, g <- C g/||g|| "
        "(Pascanu, Mikolov & Bengio 2013)",
    )
    clipping.add_argument(
        "--clip-value", default=None, metavar="C", help="clip each gradient component to [-C, C]"
    )
    train.add_argument("--seed", default="0", metavar="S", help="seed of the initial weights (default: 0)")
    train.add_argument("--json", action="store_true", help="print the run as JSON (no progress bar)")
    train.add_argument(
        "--progress", action="store_true",
        help="one line per epoch on stderr (epoch, loss, seconds), also with --json (default: a bar on a "
        "terminal without --json, otherwise lines only once an epoch takes a second or more)",
    )
    train.add_argument(
        "--plot", metavar="FILE.png", default=None, help="also draw the loss curve (needs matplotlib)"
    )
    train.set_defaults(handler=_train)

    demo = commands.add_parser(
        "demo",
        help="run the whole story on the notes' example and write every artefact to a directory",
        description=(
            "Derive the notes' example (LaTeX, PDF when pdflatex is installed, Markdown), generate and "
            "check its NumPy module, analyse tanh at w_h = 0.5 (vanishing) and ReLU at w_h = 1.5 "
            "(exploding) with plots, train on the notes' sentences with a log and a loss plot, compare "
            "the LSTM with the tanh RNN (analyze --cell lstm on the same words; train --data long with "
            "each, at their defaults, one plot of both loss curves), then list what was written."
        ),
    )
    demo.add_argument(
        "--out", default="bptt-demo", metavar="DIR",
        help="directory to write into, created if missing (default: ./bptt-demo); an existing non-empty "
        "directory is only reused if an earlier bptt demo made it and none of its files was edited since; "
        "the demo is built beside it and moved in at the end, so an interrupted run changes nothing",
    )
    demo.add_argument(
        "--force", action="store_true",
        help="write into --out even if it holds other files (they are kept) or demo files edited since "
        "(they are replaced)",
    )
    demo.set_defaults(handler=_demo)


def _float_option(text, flag: str, positive: bool = False) -> float:
    import math

    try:
        value = float(str(text).strip())
    except ValueError:
        raise UsageError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise UsageError(f"{flag} must be a {'positive' if positive else 'finite'} number, got {text!r}")
    return value


def _int_option(text, flag: str, minimum: int = 0) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{flag} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"{flag} must be at least {minimum}, got {value}")
    return value


def _plot_target(path):
    """Fail before any work when --plot cannot be honoured (no matplotlib, bad path)."""
    if path is None:
        return None
    from ..files import check_target
    from ..study.analysis import pyplot

    if not str(path).lower().endswith(".png"):
        raise UsageError(f"--plot writes a PNG image: give a file name ending in .png, got {path!r}")
    check_target(path, option="--plot", example="plot.png")  # no --force: a foreign file is refused
    pyplot()
    return path


def _analyze(args) -> int:
    from ..files import json_text
    from ..study import analysis

    model = _check_shape(args)
    words = None
    if args.input is not None:
        words = [word for word in args.input.replace(",", " ").split()]
    steps = None if args.steps is None else _int_option(args.steps, "--steps", minimum=1)
    seed = _int_option(args.seed, "--seed")
    scale = None if args.w_h_scale is None else _float_option(args.w_h_scale, "--w-h-scale")
    if model.gated:
        pass  # the cell's weights come from --seed and --set (see _analyze_cell)
    elif model.scalar:
        w_h = scale if scale is not None else _float_option(args.w_h or "0.5", "--w-h")
        w_i = [_float_option(v, "--w-i") for v in (args.w_i or "0.5,0.5,0.5").split(",")]
        w_o = _float_option(args.w_o or "1", "--w-o")
    else:
        given = [flag for flag, value in (("--w-h", args.w_h), ("--w-i", args.w_i), ("--w-o", args.w_o)) if value]
        if given:
            raise UsageError(
                f"{given[0]} sets a weight of the scalar model; with --hidden {model.hidden}"
                f"{' and --bias' if model.bias else ''} set W_h with --w-h-scale S (W_h = S*Q, Q orthogonal) "
                "and the other weights with --seed"
            )
    if model.gated:
        return _analyze_cell(args, model, steps, words, seed, scale)
    if args.forget_bias is not None or args.settings:
        flag = "--forget-bias" if args.forget_bias is not None else "--set"
        raise UsageError(f"{flag} sets a per-unit parameter of a gated cell (b_f of --cell lstm): add --cell lstm "
                         "(or another cell) or drop it")
    plot_path = _plot_target(args.plot)
    if model.scalar:
        result = analysis.analyze(
            steps=steps, activation=args.activation, w_h=w_h, w_i=w_i, w_o=w_o, words=words, seed=seed
        )
        plot, table = analysis.plot, analysis.table
    else:
        result = analysis.analyze_matrix(
            steps=steps, activation=args.activation, hidden=model.hidden, bias=model.bias,
            w_h_scale=analysis.DEFAULT_W_H_SCALE if scale is None else scale, words=words, seed=seed,
        )
        plot, table = analysis.matrix_plot, analysis.matrix_table
    if plot_path:
        plot(result, plot_path)
    if args.json:
        print(json_text(result.as_json()))
    else:
        sys.stdout.write(table(result))
    if plot_path:
        print(f"wrote {plot_path}", file=sys.stderr)
    return 0


def _settings(args, finite: bool = True, forget_bias: bool = True) -> dict:
    """--set NAME=V (repeatable) and --forget-bias B (the same as --set b_f=B) as {NAME: V}."""
    settings = {}
    for text in args.settings:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set takes NAME=VALUE, got {text!r}: e.g. --set b_f=5")
        settings[name.strip()] = _float_option(value, f"--set {name.strip()}")
    if args.forget_bias is not None and forget_bias:
        settings["b_f"] = _float_option(args.forget_bias, "--forget-bias")
    for name, value in settings.items() if finite else ():
        if not math.isfinite(value):
            flag = "--forget-bias" if name == "b_f" and args.forget_bias is not None else f"--set {name}"
            raise UsageError(f"{flag} must be a finite number, got {value!r}")
    return settings


def _analyze_cell(args, model, steps, words, seed, scale) -> int:
    """bptt analyze --cell C: the cell's Jacobian products beside the tanh RNN's (cell_analysis)."""
    from ..files import json_text
    from ..study import cell_analysis

    given = [flag for flag, value in (("--w-i", args.w_i), ("--w-o", args.w_o)) if value]
    if given:
        raise UsageError(
            f"{given[0]} sets a weight of the plain RNN; with --cell {model.cell_name} the cell's weights come "
            "from --seed (init_params) and --set NAME=V: drop it"
        )
    if args.w_h is not None and model.hidden != 1:
        raise UsageError(
            f"--w-h sets the compared scalar RNN's w_h; with --hidden {model.hidden} use --w-h-scale S"
        )
    settings = _settings(args)
    plot_path = _plot_target(args.plot)
    result = cell_analysis.analyze_cell(
        model, steps=steps, words=words, seed=seed, settings=settings,
        rnn_w_h=None if args.w_h is None else _float_option(args.w_h, "--w-h"), rnn_w_h_scale=scale,
    )
    if plot_path:
        cell_analysis.plot(result, plot_path)
    if args.json:
        print(json_text(result.as_json()))
    else:
        sys.stdout.write(cell_analysis.table(result))
    if plot_path:
        print(f"wrote {plot_path}", file=sys.stderr)
    return 0


def _train(args) -> int:
    from ..files import json_text
    from ..study import data, train

    if args.hidden is None:
        args.hidden = str(train.CELL_DEFAULTS["hidden"]) if args.cell != "rnn" else "1"
    model = _check_shape(args)
    config = train.Config(
        epochs=None if args.epochs is None else _int_option(args.epochs, "--epochs", minimum=1),
        lr=None if args.lr is None or "," in str(args.lr) else _float_option(args.lr, "--lr", positive=True),
        activation=args.activation,
        init=args.init,
        optimizer=args.optimizer,
        cell=model.cell,
        forget_bias=None if args.forget_bias is None else _float_option(args.forget_bias, "--forget-bias"),
        settings=tuple(_settings(args, finite=False, forget_bias=False).items()),
        init_w_h=None if args.init_w_h is None else _float_option(args.init_w_h, "--init-w-h"),
        clip_norm=None if args.clip_norm is None else _float_option(args.clip_norm, "--clip-norm", True),
        clip_value=None if args.clip_value is None else _float_option(args.clip_value, "--clip-value", True),
        seed=_int_option(args.seed, "--seed"),
        steps_from_data=args.steps_from_data,
        hidden=model.hidden,
        bias=model.bias,
    )
    plot_path = _plot_target(args.plot)
    dataset, held_out = data.load(args.data)
    if config.steps_from_data:
        from ..codegen import unrolled_limit

        longest = max([*dataset.lengths, *(held_out.lengths if held_out is not None else [])])
        if longest > unrolled_limit(model):
            raise UsageError(
                f"--steps-from-data writes an unrolled module for each length, limited to n <= "
                f"{unrolled_limit(model)}, and the data has a sequence of {longest} words: drop "
                "--steps-from-data (one loop module serves every length)"
            )
    if args.lr is not None and "," in str(args.lr):
        return _sweep(args, config, dataset, held_out, plot_path)
    progress = "lines" if args.progress else "bar" if sys.stderr.isatty() and not args.json else "slow"
    result = train.train(dataset, config, held_out=held_out, progress=progress)
    if plot_path:
        train.plot(result, plot_path)
    if args.json:
        print(json_text(result.as_json()))
    else:
        sys.stdout.write(train.summary(result))
    if plot_path:
        print(f"wrote {plot_path}", file=sys.stderr)
    return 1 if result.diverged_at is not None else 0


def _sweep(args, config, dataset, held_out, plot_path) -> int:
    """train --lr a,b,c: one run per rate, one row each (symbolic/study/sweep.py); exit 0, a diverged run
    being a row of the measurement, not a failure of the command."""
    from ..files import json_text
    from ..study import sweep, train

    learning_rates = sweep.rates(args.lr)
    rows, results = sweep.sweep(dataset, config, learning_rates, held_out)
    if plot_path:
        train.plot_comparison(results, plot_path)
    if args.json:
        print(json_text(sweep.as_json(rows, config, dataset.name)))
    else:
        sys.stdout.write(sweep.table(rows, config, dataset.name, held_out is not None))
    if plot_path:
        print(f"wrote {plot_path}", file=sys.stderr)
    return 0


def _demo(args) -> int:
    from .demo import run

    run(args.out, force=args.force)
    return 0


def _example_name(args) -> str:
    """A file name for messages about -o: out.tex, out.md or out.py."""
    return "out.py" if args.command == "codegen" else f"out.{getattr(args, 'format', 'tex')}"


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is the run's own (0, or 1 for a failed check, proof or
    training), 2 for a usage mistake, 130 when interrupted. A closed or full standard output is a
    usage mistake; a reader that went away (``| head -1``) only cuts the output short."""
    from ..files import guarded_streams

    with guarded_streams() as streams:
        try:
            try:
                parser = build_parser()
                args = parser.parse_args(argv)
                if not getattr(args, "handler", None):
                    parser.print_help()
                    status = 2
                else:
                    from ..files import is_stdout

                    if is_stdout(getattr(args, "output", None)):
                        args.output = None  # -o - and -o /dev/stdout: print, as without -o
                    status = args.handler(args)
            except SystemExit as exit:  # --help and --version
                status = exit.code if isinstance(exit.code, int) else 0
            streams.finish()  # inside the try: a full standard output is reported, not ignored
            return status
        except UsageError as error:
            print(f"bptt: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("bptt: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
