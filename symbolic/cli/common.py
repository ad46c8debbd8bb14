"""What every command of the ``bptt`` command line shares: the Model from the options, the derivation
made once per command, the options' numbers, writing a result. No mathematics here."""

from __future__ import annotations

import math
import sys

from ..errors import UsageError

#: Commands that take any cell; the others refuse a cell but the plain RNN in one line.
CELL_COMMANDS: set[str] = {"derive", "codegen", "analyze", "train"}


def cell_gate(model, args):
    if model.gated and args.command not in CELL_COMMANDS:
        model.require_rnn(f"bptt {args.command}")
    return model


def outputs_of_args(args):
    """--readout, --loss, --classes, --reduction as ``symbolic.outputs.Outputs`` (the notes' by default)."""
    from ..outputs import outputs_of

    return outputs_of(getattr(args, "readout", None), getattr(args, "loss", None), getattr(args, "classes", None),
                      getattr(args, "reduction", None))


def model_of(args):
    from ..model import Model

    return cell_gate(
        Model(
            steps=args.steps, activation=args.activation, inputs=args.inputs, hidden=args.hidden,
            cell=args.cell, bias=args.bias, skip=args.skip, outputs=outputs_of_args(args),
        ),
        args,
    )


def check_shape(args):
    """analyze and train: check --hidden, --cell, --bias, --activation and the outputs before any work."""
    from ..model import Model

    return cell_gate(
        Model(steps=1, activation=args.activation, hidden=args.hidden, cell=args.cell, bias=args.bias,
              skip=args.skip, outputs=outputs_of_args(args)), args
    )


def write_or_print(text: str, args) -> None:
    from ..files import check_target, write_atomic

    if args.output:  # main() turned -o - and -o /dev/stdout into None
        write_atomic(check_target(args.output, args.force, example=example_name(args)), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def after_proof(passed: bool, text: str, make_document, args) -> int:
    """Print the proof's report; with -o write the document only when the proof passed (a failed or
    interrupted proof leaves no file that reads as proved)."""
    print(text)
    if args.output and passed:
        write_or_print(make_document(), args)
    elif args.output:
        print(f"the proof failed, so {args.output} was not written", file=sys.stderr)
    return 0 if passed else 1



def derivation_for(model):
    """The engine's derivation of ``model``'s cell (symbolic/engine/derivation.py), made once per command
    and handed to every stage that needs it (typeset, proof, codegen, analysis)."""
    from ..engine.derivation import derive_model

    return derive_model(model)


def float_option(text, flag: str, positive: bool = False) -> float:
    import math

    try:
        value = float(str(text).strip())
    except ValueError:
        raise UsageError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise UsageError(f"{flag} must be a {'positive' if positive else 'finite'} number, got {text!r}")
    return value


def int_option(text, flag: str, minimum: int = 0) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{flag} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"{flag} must be at least {minimum}, got {value}")
    return value


def plot_target(path):
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


def settings_of(args, finite: bool = True, forget_bias: bool = True) -> dict:
    """--set NAME=V (repeatable) and --forget-bias B (the same as --set b_f=B) as {NAME: V}."""
    settings = {}
    for text in args.settings:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set takes NAME=VALUE, got {text!r}: e.g. --set b_f=5")
        settings[name.strip()] = float_option(value, f"--set {name.strip()}")
    if args.forget_bias is not None and forget_bias:
        settings["b_f"] = float_option(args.forget_bias, "--forget-bias")
    for name, value in settings.items() if finite else ():
        if not math.isfinite(value):
            flag = "--forget-bias" if name == "b_f" and args.forget_bias is not None else f"--set {name}"
            raise UsageError(f"{flag} must be a finite number, got {value!r}")
    return settings


def example_name(args) -> str:
    """A file name for messages about -o: out.tex, out.md or out.py."""
    return "out.py" if args.command == "codegen" else f"out.{getattr(args, 'format', 'tex')}"

