"""bptt check and grade: a module's gradients checked numerically, anyone's BPTT graded (symbolic/verify)."""

from __future__ import annotations


def check(args) -> int:
    from ..verify.check import run_check

    return run_check(args.module, as_json=args.json, seed=args.seed, timeout=args.timeout)

def grade(args) -> int:
    from ..verify.grade import run_grade

    return run_grade(args.file, cell=args.cell, skip=args.skip, activation=args.activation, hidden=args.hidden,
                     function=args.function, as_json=args.json, steps=args.steps, bias=args.bias,
                     inputs=args.inputs, seed=args.seed, timeout=args.timeout)
