"""Train a generated GRU data-parallel on PyTorch's own launcher: DistributedDataParallel over gloo.

    bptt codegen --cell gru --target torch -o gru_torch.py
    python3 docs/examples/ddp_gru.py --module gru_torch.py --processes 2 --updates 20

Each process builds the same model (the generated ``Layer`` and a linear head, one seed), takes its own
equal slice of the batch, and runs the generated backward on it; DDP averages the gradients across the
processes, which is the gradient of the mean loss over the whole batch: what one process on the whole batch
gets (tests/test_export_ddp.py checks both the gradient and the parameters after a few updates). On more
machines, start the same ``worker`` with ``torchrun`` instead of ``torch.multiprocessing.spawn``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

INPUTS, HIDDEN, STEPS, BATCH = 3, 8, 12, 16


def load_module(path: str):
    """A generated module (bptt codegen --target torch), imported from its file."""
    spec = importlib.util.spec_from_file_location("generated_cell", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Classifier(nn.Module):
    """The generated cell, then a logit of its last output state."""

    def __init__(self, generated, inputs: int = INPUTS, hidden: int = HIDDEN):
        super().__init__()
        self.cell = generated.Layer(inputs, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.cell(x)
        return self.head(output[:, -1])[:, 0]


def make_model(generated, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(generated).double()


def batch(seed: int = 1, size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """x (size, STEPS, INPUTS); y = 1 where the first input summed over the first half is positive."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, STEPS, INPUTS, generator=generator, dtype=torch.float64)
    return x, (x[:, : STEPS // 2, 0].sum(1) > 0).double()


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(model(x), y)


def worker(rank: int, processes: int, module_path: str, port: int, updates: int, output: str | None) -> None:
    """One process: its slice of the batch, DDP's averaged gradient, SGD; rank 0 reports and saves."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=processes)
    model = DistributedDataParallel(make_model(load_module(module_path)))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = batch()
    x, y = x.chunk(processes)[rank], y.chunk(processes)[rank]
    first = None
    for update in range(updates):
        optimiser.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        if first is None:
            first = {name: p.grad.clone() for name, p in model.module.named_parameters()}
        optimiser.step()
        if rank == 0 and (update % 5 == 0 or update == updates - 1):
            print(f"update {update}: loss on rank 0's slice {loss.item():.4f}", flush=True)
    if rank == 0 and output:
        parameters = {name: p.detach().clone() for name, p in model.module.named_parameters()}
        torch.save({"gradients": first, "parameters": parameters}, output)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.path.join(os.path.dirname(__file__), "..", "..", "generated", "gru_torch.py")
    parser.add_argument("--module", default=default, help="a module of bptt codegen --target torch")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--output", help="save rank 0's first gradient and final parameters here (torch.save)")
    args = parser.parse_args(argv)
    if BATCH % args.processes:
        parser.error(f"--processes must divide the batch of {BATCH}")
    mp.spawn(worker, args=(args.processes, os.path.abspath(args.module), free_port(), args.updates, args.output),
             nprocs=args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
