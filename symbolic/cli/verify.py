"""bptt check and grade: a module's gradients checked numerically, anyone's BPTT graded (symbolic/verify)."""

from __future__ import annotations


def check(args) -> int:
    from ..verify.check import run_check

    return run_check(args.module, as_json=args.json, seed=args.seed, timeout=args.timeout, strict=args.strict)

def grade(args) -> int:
    from ..verify.grade import run_grade
    from .common import outputs_of_args

    outputs = outputs_of_args(args)  # a bad --loss or --classes before any file runs
    if args.forward or args.backward or args.layer or args.grads_from:
        if not outputs.default:
            from ..errors import UsageError

            raise UsageError(f"{outputs.flags} grades a loss_and_grad; a forward/backward pair takes dL/dh_t at "
                             "every step already and has no readout: drop " + outputs.flags)
        return _grade_pair(args)
    pair_only = [flag for flag, value in (("--layout", args.layout), ("--gates", args.gates), ("--params", args.params),
                                          ("--concat", args.concat)) if value is not None]
    if pair_only:
        from ..errors import UsageError

        raise UsageError(f"{pair_only[0]} declares the weights of a forward/backward pair: name the pair with "
                         "--forward F --backward B (or a layer class with --layer CLASS)")
    return run_grade(args.file, cell=args.cell, skip=args.skip, activation=args.activation, hidden=args.hidden,
                     function=args.function, as_json=args.json, steps=args.steps, bias=args.bias,
                     inputs=args.inputs, seed=args.seed, timeout=args.timeout, strict=args.strict,
                     unbatched=args.unbatched, outputs=None if outputs.default else outputs)


def _grade_pair(args) -> int:
    from ..errors import UsageError
    from ..verify.grade_pairs import run_pair_grade

    if args.layer:
        args.forward, args.backward = args.forward or "forward", args.backward or "backward"
    elif args.grads_from:
        raise UsageError("--grads-from reads a layer's attributes: name its class with --layer CLASS")
    if not (args.forward and args.backward):
        raise UsageError("--forward and --backward go together: name both functions of the pair")
    try:
        seed = int(str(args.seed).strip())
    except ValueError:
        raise UsageError(f"--seed must be a whole number, got {args.seed!r}") from None
    if seed < 0:
        raise UsageError(f"--seed must be a whole number ≥ 0, got {seed}")
    if args.steps is not None or args.function != "loss_and_grad":
        flag = "--steps" if args.steps is not None else "--function"
        raise UsageError(f"{flag} applies to a loss_and_grad; a pair is graded at n = 1..8, 12, 20 and named with "
                         "--forward and --backward: drop " + flag)
    options = {"cell": args.cell, "layout": args.layout or "row", "gates": args.gates, "params": args.params,
               "concat": args.concat or "hx", "hidden": args.hidden, "inputs": args.inputs, "activation": args.activation,
               "unbatched": args.unbatched, "seed": seed, "strict": args.strict, "layer": args.layer,
               "grads_from": args.grads_from}
    return run_pair_grade(args.file, args.forward, args.backward, options, as_json=args.json, timeout=args.timeout)
