"""The ``bptt`` command line's options: one builder per command, each naming its handler.

The help texts live here; the handlers (``story``, ``verify``, ``study``) hold no option text."""

from __future__ import annotations

import argparse

from .. import __version__
from ..errors import UsageError
from ..model import ACTIVATION_NAMES
from . import story, study, verify

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
        help="add biases: for rnn and skip, b_h inside f and b_o in the readout (the notes' model has none); "
        "for a cell whose biases are in its equations (lstm, gru, a cell file), the readout's bias b_y: (K,) "
        "with --loss softmax, else a scalar",
    )
    parser.add_argument(
        "--cell", default="rnn", metavar="CELL",
        help="recurrent cell: rnn, the notes' o_t = f(w_i·x_t + w_h o_(t-1)) (default); lstm (gates i, f, "
        "g, o as torch.nn.LSTM); gru (torch.nn.GRU's convention); skip (the rnn with w_s o_(t-K), K from --skip); "
        "or FILE.py, your own cell written with "
        "symbolic.cells.spec (see docs/cells.md). A cell file is Python: it runs when loaded, like any script",
    )
    skip_option(parser)
    _readout_options(parser)


def _readout_options(parser: argparse.ArgumentParser) -> None:
    """The output side (symbolic/outputs.py): where the loss enters, which loss, its reduction."""
    parser.add_argument(
        "--readout", default=None, choices=("last", "every"),
        help="where the loss enters: last, one readout after the last step (the notes' many-to-one model, "
        "default), or every, a readout and a loss term after every step (many-to-many; y is then (B, n))",
    )
    parser.add_argument(
        "--loss", default=None, choices=("bce", "softmax", "mse"),
        help="bce: y_hat = sigmoid(w_y . s), binary cross-entropy (default); softmax: y_hat = softmax(W_y s) "
        "over --classes K, cross-entropy with a class index y (W_y is (K, H)); mse: y_hat = w_y . s, "
        "(y_hat - y)^2 without a factor 1/2, as torch's MSELoss",
    )
    parser.add_argument("--classes", default=None, metavar="K", help="with --loss softmax: the classes K >= 2 (default: 2)")
    parser.add_argument(
        "--reduction", default=None, choices=("steps", "all"),
        help="with --readout every: steps, the batch mean of the sum over steps (default; min-char-rnn, CS231n), "
        "or all, the mean over every step and sequence (torch's CrossEntropyLoss on the B*n rows)",
    )


def skip_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip", default=None, metavar="K",
        help="with --cell skip (required there): the lag K >= 2 of its skip connection, o_t = f(w_i x_t + "
        "w_h o_(t-1) + w_s o_(t-K)); K >= n is allowed (the skip path then carries nothing)",
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

    _derive_parser(commands)
    _codegen_parser(commands)
    _check_parser(commands)
    _grade_parser(commands)
    _analyze_parser(commands)
    _train_parser(commands)
    _demo_parser(commands)
    from .remedies import add_command as add_remedies  # bptt remedies (symbolic/cli/remedies.py)

    add_remedies(commands)
    return parser


# -- derive, codegen (symbolic/typeset, symbolic/engine, symbolic/codegen) -------------------------------


def _derive_parser(commands) -> None:
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
    derive.set_defaults(handler=story.derive)


def _codegen_parser(commands) -> None:
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
    codegen.add_argument(
        "--target", "-t", default="numpy", metavar="numpy|torch|jax",
        help="numpy (default: the module above), torch (a torch.autograd.Function whose backward is the "
        "derived BPTT, and Layer, an nn.Module shaped like nn.RNN; needs pip install 'bptt[torch]') or jax "
        "(apply(params, x, initial), a jax.custom_vjp over lax.scan; needs pip install 'bptt[jax]'); "
        "a framework module serves any sequence length, H and D",
    )
    _output_options(codegen, "module")
    codegen.set_defaults(handler=story.codegen)


# -- check, grade (symbolic/verify) ---------------------------------------------------------------------


def _check_parser(commands) -> None:
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
    check.add_argument("--strict", action="store_true",
                       help="judge a module that computes in float32 at float64's tolerances (exit 1)")
    check.set_defaults(handler=verify.check)


def _grade_parser(commands) -> None:
    grade = commands.add_parser(
        "grade",
        help="grade anyone's BPTT against the exact derivation and name the mistake",
        description=(
            "Import FILE.py (its top-level code runs) in a sandbox process that holds only the file, and "
            "grade its function loss_and_grad in another: the loss and every gradient entry against the exact recursion (float64, and 60 digits where float64 cannot "
            "decide) at n = 1..8, 12, 20 (and n = K + 1 for a lag K past 20), B = 1, 2, 5 and the notes' three "
            "sentences; where it goes wrong in time "
            "(n = 1 is the short-term term alone); and the known mistake it matches (long-term terms "
            "dropped, f′ missing or at the wrong step, the total derivative for the immediate partial, W_h "
            "for W_hᵀ, the batch mean, the carousel or another direct path, the sign of ŷ − y). Exit 0 "
            "right, 1 wrong, 2 when the function cannot be graded (missing, wrong signature, raises, exits, "
            "crashes or exceeds --timeout). Anything the file prints goes to stderr. With --readout every "
            "--loss softmax|mse|bce [--classes K] [--reduction steps|all] it grades the many-to-many setting, "
            "a readout and a loss term after every step (min-char-rnn's): y is then (B, n), class indices for "
            "softmax, and the mistakes include the carry dh_next missing (δ_t from step t's own loss alone), "
            "the loss of the last step only, the softmax's 1 at the target not subtracted and the reduction "
            "mixed up."
        ),
        epilog=(
            "Interface: the plain RNN as loss_and_grad(x, y, w_i, w_h, w_o) -> (loss, dw_i, dw_h, dw_o) with "
            "x (B, n, D), y (B,) ((B, n) with --readout every), at H = 1 w_i (D,) and w_h, w_o numbers, for --hidden H w_i (H, D), "
            "w_h (H, H), w_o (H,), with --bias also b_h=, b_o= (returning db_h, db_o); every other cell as "
            "loss_and_grad(x, y, params) -> (loss, grads), dicts keyed by parameter name."
        ),
    )
    grade.add_argument("file", metavar="FILE.py", help="the Python file to grade (imported: its top-level code runs)")
    grade.add_argument(
        "--cell", default="rnn", metavar="C",
        help="the cell it implements: rnn (default), lstm, gru, skip (with --skip K), or a cell file ending in .py",
    )
    grade.add_argument("--activation", "-a", default="tanh", metavar="A", help=ACTIVATION_HELP + " (rnn only)")
    grade.add_argument("--hidden", default=None, metavar="H",
                       help="hidden size H (default: 3, where a matrix and its transpose differ; 1, the notes' "
                            "scalar model, for the plain RNN's loss_and_grad(x, y, w_i, w_h, w_o))")
    grade.add_argument("--inputs", default="3", metavar="D", help="input size D (default: 3, the notes' one-hot words)")
    grade.add_argument("--bias", action="store_true",
                       help="the RNN with biases b_h and b_o; for lstm, gru or a cell file, the readout's bias b_y")
    skip_option(grade)
    grade.add_argument("--function", default="loss_and_grad", metavar="NAME",
                       help="the function to grade (default: loss_and_grad)")
    _readout_options(grade)
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
    _pair_options(grade)
    grade.add_argument("--strict", action="store_true",
                       help="grade an implementation that computes in float32 at float64's tolerance (exit 1)")
    grade.set_defaults(handler=verify.grade)


def _pair_options(grade) -> None:
    """grade's options for a forward/backward pair or a layer (verify/grade_pairs.py)."""
    pair = grade.add_argument_group(
        "forward/backward pairs (CS231n's rnn_forward(x, h0, Wx, Wh, b) -> (h, cache), "
        "rnn_backward(dh, cache) -> (dx, dh0, dWx, dWh, db)); grade injects dL/dh_t at every step")
    pair.add_argument("--forward", default=None, metavar="NAME", help="the forward function (with --backward)")
    pair.add_argument("--backward", default=None, metavar="NAME", help="the backward function (with --forward)")
    pair.add_argument("--layout", default=None, metavar="L",
                      help="row: x @ Wx, Wx (D, H) (CS231n, d2l; default); column: Wx @ x, Wx (H, D) (min-char-rnn)")
    pair.add_argument("--gates", default=None, metavar="ORDER",
                      help="the order of the stacked gates, e.g. ifog (CS231n) or ifgo (torch; the default)")
    pair.add_argument("--params", default=None, metavar="NAMES",
                      help="the weights in the order the forward takes them, from Wx, Wh, b, bx and bh (a split "
                           "bias), W (one matrix on the concatenation); default Wx,Wh,b")
    pair.add_argument("--concat", default=None, metavar="ORDER", help="for W: hx ([h; x], default) or xh")
    pair.add_argument("--unbatched", action="store_true",
                      help="the function (or pair) takes one sequence: loss_and_grad(x (n, D), y a number, …), "
                           "or the pair x (n, D) and h0 (H,) (with --layout column per-step columns, x (n, D, 1)); "
                           "grade calls it per sequence (the batch's mean, or for a pair its sum)")
    pair.add_argument("--layer", default=None, metavar="CLASS",
                      help="a layer class built from the weights (CLASS(Wx, Wh, b)): --forward and --backward name "
                           "its methods (default forward, backward): forward(x, h0) -> h, backward(dh) -> (dx, dh0)")
    pair.add_argument("--grads-from", default=None, metavar="ATTR",
                      help="where the layer keeps its weight gradients: layer.grads (a list in --params order or a "
                           "dict by name) or layer.d{} (one attribute per weight: layer.dWx, layer.dWh, layer.db)")


# -- analyze, train, demo (symbolic/study, cli/demo.py) ----------------------------------------------------


def _analyze_parser(commands) -> None:
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
            "m = ||product over n-1 steps||^(1/(n-1)). "
            "With a loss at every step (--readout every, any --loss; or --loss softmax|mse after the last "
            "step) it reports which loss terms reach which step: dL/dtheta of the cell's parameters split by the gap t - j between the loss at "
            "step t and the step j where it meets the parameters, each gap's share, the gaps within which "
            "90% and 99% of the gradient arrive, and ||dL_t/ds_(t-gap)|| / ||dL_t/ds_t|| per gap; the "
            "regime is judged from that ratio's factor m per step of gap. Its labels y_t are drawn with "
            "--seed; the weights are init_params(--seed), --set NAME=V, and --w-h-scale S sets every "
            "recurrent matrix (one applied to anything but x_t) to S*Q."
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
    analyze.set_defaults(handler=study.analyze)


def _train_parser(commands) -> None:
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
        "--data", default=None, nargs="+", metavar="notes|long|FILE.csv|copy|text FILE.txt",
        help="notes: the notes' three sentences (default); long: 200 sequences of 50 words whose label "
        "is 1 iff the first word is 'cat', with a held-out set of 100 drawn the same way; or a CSV "
        "file with columns text,label (label 0 or 1, text split on whitespace, D = vocabulary size). "
        "With --readout every (a loss at every step): copy (default there), the label at step t is the "
        "symbol of step t - 1; text FILE.txt, a character-level language model (--readout every --loss "
        "softmax --reduction all implied, the file's characters the classes, chunks of --steps characters, "
        "the last tenth held out and reported in bits per character)",
    )
    train.add_argument(
        "--steps", "-n", default=None, metavar="N",
        help="with --readout every: the length of each sequence (copy: default 8) or chunk (text: default 25)",
    )
    train.add_argument(
        "--sample", default=None, metavar="N",
        help="with --data text: print N characters generated from a seed character after training",
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
    _train_start_options(train)
    _train_report_options(train)
    train.set_defaults(handler=study.train)


def _train_start_options(train) -> None:
    """train's options for where the weights start and how their steps are clipped."""
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


def _train_report_options(train) -> None:
    """train's options for what it prints and draws."""
    train.add_argument("--json", action="store_true", help="print the run as JSON (no progress bar)")
    train.add_argument(
        "--progress", action="store_true",
        help="one line per epoch on stderr (epoch, loss, seconds), also with --json (default: a bar on a "
        "terminal without --json, otherwise lines only once an epoch takes a second or more)",
    )
    train.add_argument(
        "--plot", metavar="FILE.png", default=None, help="also draw the loss curve (needs matplotlib)"
    )


def _demo_parser(commands) -> None:
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
    demo.set_defaults(handler=story.demo)
