"""bptt analyze and train: the BPTT terms measured, the model trained (symbolic/study)."""

from __future__ import annotations

import math
import sys

from ..errors import UsageError
from .common import (
    check_shape,
    derivation_for,
    float_option,
    int_option,
    plot_target,
    settings_of,
)

#: The most characters --sample generates.
SAMPLE_LIMIT = 100_000


def analyze(args) -> int:
    from ..study import analysis

    model = check_shape(args)
    words = None
    if args.input is not None:
        words = [word for word in args.input.replace(",", " ").split()]
    steps = None if args.steps is None else int_option(args.steps, "--steps", minimum=1)
    seed = int_option(args.seed, "--seed")
    scale = None if args.w_h_scale is None else float_option(args.w_h_scale, "--w-h-scale")
    if not model.outputs.default:
        return _analyze_reach(args, model, steps, words, seed, scale)
    if model.gated:
        pass  # the cell's weights come from --seed and --set (see _analyze_cell)
    elif model.scalar:
        w_h = scale if scale is not None else float_option(args.w_h or "0.5", "--w-h")
        w_i = [float_option(v, "--w-i") for v in (args.w_i or "0.5,0.5,0.5").split(",")]
        w_o = float_option(args.w_o or "1", "--w-o")
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
    plot_path = plot_target(args.plot)
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
    return _report(args, result, plot, table, plot_path)


def _report(args, result, plot, table, plot_path) -> int:
    """An analysis printed as its table or as JSON (--json), and drawn to --plot FILE.png."""
    from ..files import json_text

    if plot_path:
        plot(result, plot_path)
    if args.json:
        print(json_text(result.as_json()))
    else:
        sys.stdout.write(table(result))
    if plot_path:
        print(f"wrote {plot_path}", file=sys.stderr)
    return 0


def _analyze_cell(args, model, steps, words, seed, scale) -> int:
    """bptt analyze --cell C: the cell's Jacobian products beside the tanh RNN's (cell_analysis)."""
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
    settings = settings_of(args)
    plot_path = plot_target(args.plot)
    result = cell_analysis.analyze_cell(
        model, derivation_for(model), steps=steps, words=words, seed=seed, settings=settings,
        rnn_w_h=None if args.w_h is None else float_option(args.w_h, "--w-h"), rnn_w_h_scale=scale,
    )
    return _report(args, result, cell_analysis.plot, cell_analysis.table, plot_path)


def _analyze_reach(args, model, steps, words, seed, scale) -> int:
    """bptt analyze --readout every (or another loss): which loss terms reach which step (study/reach)."""
    from ..study import reach

    given = [flag for flag, value in (("--w-i", args.w_i), ("--w-o", args.w_o)) if value]
    if given:
        raise UsageError(f"{given[0]} sets a weight of the notes' scalar model; with {model.outputs.flags} the "
                         "weights come from --seed (init_params), --set NAME=V and --w-h-scale S: drop it")
    if args.w_h is not None:
        if model.hidden != 1:
            raise UsageError(f"--w-h sets a scalar recurrent weight; with --hidden {model.hidden} use --w-h-scale S")
        scale = float_option(args.w_h, "--w-h")
    plot_path = plot_target(args.plot)
    result = reach.analyze_reach(model, derivation_for(model), steps=steps, words=words, seed=seed,
                                 settings=settings_of(args), w_h_scale=scale)
    return _report(args, result, reach.plot, reach.table, plot_path)


def train(args) -> int:
    from ..files import json_text
    from ..study import data, train

    if (args.data and args.data[0] in ("text", "copy")) or (args.readout or "last") != "last" or args.loss \
            or args.classes:
        return _train_steps(args)
    args.data = args.data or ["notes"]
    if len(args.data) != 1 or args.steps is not None or args.sample is not None:
        raise UsageError("--data takes one of notes, long or FILE.csv here, and --steps and --sample apply to "
                         "--readout every or --data text FILE.txt: drop them, or add --readout every")
    args.data = args.data[0]
    if args.hidden is None:
        args.hidden = str(train.CELL_DEFAULTS["hidden"]) if args.cell != "rnn" else "1"
    model = check_shape(args)
    config = train.Config(
        epochs=None if args.epochs is None else int_option(args.epochs, "--epochs", minimum=1),
        lr=None if args.lr is None or "," in str(args.lr) else float_option(args.lr, "--lr", positive=True),
        activation=args.activation,
        init=args.init,
        optimizer=args.optimizer,
        cell=model.cell,
        skip=model.skip,
        forget_bias=None if args.forget_bias is None else float_option(args.forget_bias, "--forget-bias"),
        settings=tuple(settings_of(args, finite=False, forget_bias=False).items()),
        init_w_h=None if args.init_w_h is None else float_option(args.init_w_h, "--init-w-h"),
        clip_norm=None if args.clip_norm is None else float_option(args.clip_norm, "--clip-norm", True),
        clip_value=None if args.clip_value is None else float_option(args.clip_value, "--clip-value", True),
        seed=int_option(args.seed, "--seed"),
        steps_from_data=args.steps_from_data,
        hidden=model.hidden,
        bias=model.bias,
    )
    plot_path = plot_target(args.plot)
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


def _train_steps(args) -> int:
    """train with a loss at every step (symbolic/study/many.py): the copy task, or a text file's
    character-level language model."""
    from ..codegen import load
    from ..files import json_text
    from ..model import Model
    from ..outputs import outputs_of
    from ..study import many

    args.data = args.data or ["copy"]
    text = args.data[0] == "text"
    if (text and len(args.data) != 2) or (not text and args.data != ["copy"]):
        raise UsageError("with a loss at every step, --data is copy or text FILE.txt (e.g. --data text story.txt); "
                         "notes, long and a CSV file have one label per sequence")
    steps = int_option(args.steps if args.steps is not None else (25 if text else 8), "--steps", minimum=1)
    seed = int_option(args.seed, "--seed")
    if text:
        if (args.loss not in (None, "softmax") or args.reduction not in (None, "all") or args.classes is not None
                or args.readout not in (None, "every")):
            raise UsageError("--data text trains a softmax over the file's characters after every step with "
                             "--reduction all: drop --readout, --loss, --classes and --reduction")
        data = many.text_task(args.data[1], steps)
        outputs = outputs_of("every", "softmax", len(data.vocabulary), "all")
    else:
        outputs = outputs_of(args.readout or "every", args.loss, args.classes, args.reduction)
        if not outputs.every:
            raise UsageError("train takes --data copy, --loss and --classes with a loss at every step (the copy "
                             "task, or --data text FILE.txt): drop --readout last, or use --readout every")
        data = None
    inputs = len(data.vocabulary) if text else (outputs.classes or 4)
    model = Model(steps=steps, activation=args.activation, inputs=inputs, hidden=args.hidden or (32 if text else 16),
                  cell=args.cell, bias=args.bias, skip=args.skip, outputs=outputs)
    derivation = derivation_for(model)
    entries = (many.COPY_TRAIN + many.COPY_HELD_OUT) * steps * inputs if data is None else data.x.size + data.held_x.size
    many.check_memory(derivation.shapes(model.hidden, inputs), entries)
    if data is None:
        data = many.copy_task(outputs, inputs, steps, seed)
    length = None if args.sample is None else int_option(args.sample, "--sample", minimum=1)
    if length is not None and length > SAMPLE_LIMIT:   # one step of the network per character, printed at once
        raise UsageError(f"--sample {length} is more text than a sample needs: choose --sample {SAMPLE_LIMIT} or fewer")
    if length is not None and not text:
        raise UsageError("--sample prints generated text: use it with --data text FILE.txt")
    epochs = int_option(args.epochs if args.epochs is not None else (40 if text else 30), "--epochs", minimum=1)
    lr = float_option(args.lr if args.lr is not None else 0.01, "--lr", positive=True)
    module = load(model, "loop", derivation=derivation)
    run = many.train_steps(module, data, outputs, epochs, lr, seed)
    if length is not None and run.diverged_at is None:
        # the window the model was trained on: the chunks' length (--steps, or shorter for a short text)
        run.sample = many.sample(module, run.params, data.vocabulary, length, data.x.shape[1], seed)
    if args.json:
        print(json_text(run.as_json()))
    else:
        sys.stdout.write(many.summary(run))
    return 0 if run.diverged_at is None and math.isfinite(run.losses[-1]) else 1


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

