"""``bptt remedies``: the notes' remedies for vanishing and exploding gradients, trained side by side
(symbolic/study/remedies.py). Registered by ``build_parser`` in one call (``add_command``)."""

from __future__ import annotations

import sys

from ..errors import UsageError


def add_command(commands) -> None:
    """The ``remedies`` subcommand on ``commands`` (argparse subparsers)."""
    remedies = commands.add_parser(
        "remedies",
        help="train every remedy the notes list for vanishing and exploding gradients, side by side",
        description=(
            "Two blocks on --data long (the label is the first of 50 words), each row trained once per seed: "
            "vanishing (a tanh RNN against sigmoid, ReLU, ReLU with W_h = I, the skip RNN with K = 3 and 10, "
            "the LSTM and the GRU; H = 16, Adam, lr 0.03, 80 epochs, clip-norm 1 for every row) and exploding "
            "(ReLU started at W_h = 1.5*I with plain gradient descent at lr 0.1 against clipping by norm and by "
            "value, smaller learning rates, W_h = I and the LSTM). Each row changes only its remedy. Prints the "
            "settings, then per row the held-out accuracy's mean and range over the seeds that did not diverge, "
            "the mean final loss, the largest gradient norm, how many seeds diverged and the seconds per run."
        ),
    )
    remedies.add_argument("--seeds", default="5", metavar="N", help="seeds 0..N-1 per row (default: 5)")
    remedies.add_argument(
        "--block", default="all", metavar="vanishing|exploding|all", help="which block to run (default: all)"
    )
    remedies.add_argument(
        "--epochs", "-e", default=None, metavar="E", help="epochs of every run (default: each block's, 80)"
    )
    remedies.add_argument(
        "--data", default="long", metavar="long|notes|FILE.csv",
        help="the training data, as for bptt train (default: long, with its held-out set)",
    )
    remedies.add_argument(
        "--backend", default="numpy", metavar="numpy|numba",
        help="which generated modules compute the gradients (default: numpy; numba compiles each cell once, "
        "then caches it on disk)",
    )
    remedies.add_argument("--json", action="store_true", help="print the rows as JSON")
    remedies.add_argument(
        "-o", "--plot", dest="plot", metavar="FILE.png", default=None,
        help="also draw the held-out accuracy of every seed per row (needs matplotlib)",
    )
    remedies.set_defaults(handler=_remedies)


def _remedies(args) -> int:
    from ..files import json_text
    from ..study import data, remedies

    seeds = _positive(args.seeds, "--seeds")
    epochs = None if args.epochs is None else _positive(args.epochs, "--epochs")
    chosen = remedies.blocks(args.block)
    if args.backend not in remedies.BACKENDS:
        raise UsageError(f"unknown --backend {args.backend!r}: choose {' or '.join(remedies.BACKENDS)}")
    plot_path = _plot_target(args.plot)
    dataset, held_out = data.load(args.data)
    results = remedies.run(dataset, held_out, chosen, seeds, epochs, args.backend)
    if plot_path:
        remedies.plot(results, plot_path, args.data, seeds, epochs)
    if args.json:
        print(json_text(remedies.as_json(results, args.data, seeds, epochs, args.backend)))
    else:
        sys.stdout.write(remedies.table(results, args.data, seeds, epochs, args.backend, held_out is not None))
    if plot_path:
        print(f"wrote {plot_path}", file=sys.stderr)
    return 0


def _positive(text, flag: str) -> int:
    """A whole number ≥ 1 (kept here rather than shared, so this command stands alone in cli/)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{flag} must be a whole number, got {text!r}: e.g. {flag} 5") from None
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}: e.g. {flag} 5")
    return value


def _plot_target(path):
    """Fail before any training when the plot cannot be written (no matplotlib, not a .png, a bad path)."""
    if path is None:
        return None
    from ..files import check_target
    from ..study.analysis import pyplot

    if not str(path).lower().endswith(".png"):
        raise UsageError(f"--plot writes a PNG image: give a file name ending in .png, got {path!r}")
    check_target(path, option="--plot", example="remedies.png")
    pyplot()
    return path
