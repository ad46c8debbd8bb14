"""Real vocabularies: the symbolic stages at input size D = 3 and D = 50 000, and their ratio.

    python3 bench/bench_vocabulary.py [--rounds R] [--inputs D] [--cpu-time]

Each stage runs in a fresh Python process per measurement (SymPy's caches would otherwise serve the
second size from the first), the two sizes alternating, and keeps its best of ``--rounds``; the time
is the stage alone, imports excluded. Stages:

- derivation: ``Derivation(Model(steps=3, inputs=D))``;
- codegen: the NumPy module, unrolled (n = 3) and loop mode;
- typesetting: the LaTeX document for n = 3, and the Markdown page for n = 6 (the expanded gradient's
  operation counts);
- train start: ``train`` on a CSV of 12 000 rows over D words, one epoch (reading the CSV included;
  D = 3 takes the one-hot path, D = 50 000 the projection, see symbolic/study/train.py).

w_i and x_t are vector symbols and w_i·x_t one Dot, so the ratio should be about 1 (noise of a shared
machine aside); before, D = 1000 took 17 s and D = 3000 over 120 s in the derivation alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STAGES = {
    "derivation": "Derivation(Model(steps=3, inputs=D))",
    "codegen unrolled": "generate(Model(steps=3, inputs=D), 'unrolled')",
    "codegen loop": "generate(Model(steps=3, inputs=D), 'loop')",
    "typeset tex, n = 3": "sigma_pi_document(Derivation(Model(steps=3, inputs=D)), 'tex')",
    "typeset md, n = 6": "sigma_pi_document(Derivation(Model(steps=6, inputs=D)), 'md')",
    "train start (1 epoch)": "train_once(D)",
}

PROGRAM = """
import sys, time, os
sys.path.insert(0, {root!r})
from symbolic.codegen import generate
from symbolic.notes.derive import Derivation
from symbolic.typeset.notes import sigma_pi_document
from symbolic.model import Model
from symbolic.study import data
from symbolic.study import train

def train_once(D):
    dataset = data.load_csv(os.path.join({folder!r}, f"vocabulary_{{D}}.csv"))
    assert len(dataset.vocabulary) == D
    train.train(dataset, train.Config(epochs=1))

D = {inputs}
clock = {clock}
start = clock()
{statement}
print(clock() - start)
"""


def write_csv(folder: str, inputs: int, rows: int = 12_000) -> None:
    """``rows`` sentences of 3 to 8 words over ``inputs`` words, every word used (up to 5·rows words)."""
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(inputs)]
    order = list(range(inputs)) * max(1, -(-rows * 5 // inputs))
    lines = ["text,label"]
    at = 0
    for row in range(rows):
        length = rng.randint(3, 8)
        sentence = [words[order[(at + k) % len(order)]] for k in range(length)]
        at += length
        lines.append(" ".join(sentence) + f",{row % 2}")
    Path(folder, f"vocabulary_{inputs}.csv").write_text("\n".join(lines) + "\n")


def measure(statement: str, inputs: int, folder: str, cpu_time: bool) -> float:
    program = PROGRAM.format(
        root=str(ROOT), folder=folder, inputs=inputs, statement=statement,
        clock="time.process_time" if cpu_time else "time.perf_counter",
    )
    environment = dict(os.environ, BPTT_CACHE_DIR=folder)
    output = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=environment
    )
    return float(output.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per stage and size (best kept)")
    parser.add_argument("--inputs", type=int, default=50_000, help="the large input size D (default 50000)")
    parser.add_argument("--cpu-time", action="store_true", help="time process CPU instead of the wall clock")
    args = parser.parse_args()
    sizes = (3, args.inputs)
    print(f"symbolic stages at D = {sizes[0]} and D = {sizes[1]} (best of {args.rounds} fresh processes, "
          f"{'CPU' if args.cpu_time else 'wall'} seconds)")
    print(f"{'stage':<24} {'D = 3':>10} {f'D = {sizes[1]}':>12} {'ratio':>8}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for D in sizes:
            write_csv(folder, D)
        for name, statement in STAGES.items():
            best = {D: float("inf") for D in sizes}
            for round_ in range(args.rounds):
                for D in sizes if round_ % 2 == 0 else sizes[::-1]:
                    best[D] = min(best[D], measure(statement, D, folder, args.cpu_time))
            small, large = best[sizes[0]], best[sizes[1]]
            print(f"{name:<24} {small:>9.3f}s {large:>11.3f}s {large / small:>8.2f}", flush=True)
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
