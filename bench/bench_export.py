"""The framework targets (bptt codegen --target torch|jax) against the frameworks' own autodiff, one thread.

    python3 bench/bench_export.py [--quick] [--cells gru,lstm] [--dtype float64|float32] [--cpu-time]

Rows: per cell, H in {16, 128}, n = 100, B in {1, 64} (without ``--quick`` also 1024), D = 3; the loss of
every column is the many-to-one one of the NumPy modules (ŷ = σ(w_yᵀ s_n), binary cross-entropy, mean
over the batch), forward and backward. Columns, each a time per call and the generated module's ratio:

* torch target: the generated ``Layer`` (its autograd.Function's backward is the derived recursion);
* torch autograd: the same forward_step in a Python loop, differentiated by torch's autograd;
* nn.GRU / nn.LSTM: torch's own layer (its C++ kernels; no such column for other cells);
* JAX target: jit(grad) of the generated ``apply`` (custom_vjp, a reverse scan);
* jax.grad: jit(grad) of the same forward scan (the module's ``_scan``) differentiated by JAX.

Before timing, every column's gradient is compared with the torch target's (1e-9 relative in float64).
One thread everywhere: torch.set_num_threads(1), XLA's CPU client without its thread pool.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _timing import interleaved

from symbolic.codegen import generate_target
from symbolic.model import Model

STEPS, INPUTS = 100, 3
NATIVE = {"gru": (torch.nn.GRU, "rzn"), "lstm": (torch.nn.LSTM, "ifgo")}


def generated(cell: str, target: str) -> types.ModuleType:
    source = generate_target(Model(steps=STEPS, hidden=2, inputs=INPUTS, cell=cell), target)
    module = types.ModuleType(f"bench_{cell}_{target}")
    path = Path(tempfile.mkdtemp()) / f"{module.__name__}.py"
    path.write_text(source)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - our generated module
    return module


def torch_columns(cell, module, hidden, batch, dtype, rng):
    """name → (zero-argument call, gradient of W's first matrix) for the torch columns."""
    torch.manual_seed(int(rng.integers(2**31)))
    layer = module.Layer(INPUTS, hidden).to(dtype)
    w_y = torch.randn(hidden, dtype=dtype) / hidden**0.5
    x = torch.as_tensor(rng.standard_normal((batch, STEPS, INPUTS)), dtype=dtype)
    y = torch.as_tensor(rng.integers(0, 2, batch), dtype=dtype)
    params = dict(layer.named_parameters())
    first = next(iter(module.PARAMS))

    def loss_of(last):
        return torch.nn.functional.binary_cross_entropy_with_logits(last @ w_y, y)

    def target():
        layer.zero_grad(set_to_none=True)
        output, _ = layer(x)
        loss_of(output[:, -1]).backward()
        return params[first].grad

    def autograd():
        layer.zero_grad(set_to_none=True)
        weights = module.stacked_weights(params)
        projection = x.transpose(0, 1) @ weights["x"].T
        previous = tuple(torch.zeros(batch, hidden, dtype=dtype) for _ in module.STATES)
        for t in range(STEPS):
            previous, _ = module.forward_step(projection[t], previous, params, weights)
        loss_of(previous[module.STATES.index(module.OUTPUT_STATE)]).backward()
        return params[first].grad

    columns = {"torch target": target, "torch autograd": autograd}
    if cell in NATIVE:
        kind, gates = NATIVE[cell]
        native = kind(INPUTS, hidden, batch_first=True).to(dtype)
        with torch.no_grad():
            native.weight_ih_l0.copy_(torch.cat([params[f"W_{g}"] for g in gates]))
            native.weight_hh_l0.copy_(torch.cat([params[f"U_{g}"] for g in gates]))
            zeros = torch.zeros(hidden, dtype=dtype)
            biases = ["b_r", "b_z", "b_in"] if cell == "gru" else [f"b_{g}" for g in gates]
            native.bias_ih_l0.copy_(torch.cat([params[b] for b in biases]))
            native.bias_hh_l0.copy_(torch.cat([zeros, zeros, params["b_hn"]] if cell == "gru" else [zeros] * 4))

        def nn_layer():
            native.zero_grad(set_to_none=True)
            output, _ = native(x)
            loss_of(output[:, -1]).backward()
            return native.weight_ih_l0.grad[:hidden]

        columns[f"nn.{kind.__name__}"] = nn_layer
    return columns, {name: p.detach().numpy() for name, p in params.items()}, x.numpy(), y.numpy(), w_y.numpy()


def jax_columns(module, params, x, y, w_y):
    params = {name: jnp.asarray(value) for name, value in params.items()}
    x, y, w_y = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w_y)
    first = next(iter(module.PARAMS))

    def loss_of(last):
        z = last @ w_y
        return jnp.mean(jax.nn.softplus(z) - y * z)

    def target_loss(params):
        output, _ = module.apply(params, x)
        return loss_of(output[:, -1])

    def plain_loss(params):
        starts = tuple(jnp.zeros((x.shape[0], params[first].shape[0]), x.dtype) for _ in module.STATES)
        output, _, _ = module._scan(params, jnp.moveaxis(x, 1, 0), starts)
        return loss_of(output[-1])

    target, plain = jax.jit(jax.grad(target_loss)), jax.jit(jax.grad(plain_loss))
    return {"JAX target": lambda: target(params)[first].block_until_ready(),
            "jax.grad": lambda: plain(params)[first].block_until_ready()}


def row(cell, modules, hidden, batch, dtype, rounds, clock):
    rng = np.random.default_rng(hidden * 7919 + batch)
    columns, params, x, y, w_y = torch_columns(cell, modules["torch"], hidden, batch, dtype, rng)
    jax_dtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    columns |= jax_columns(modules["jax"], {k: v.astype(jax_dtype) for k, v in params.items()},
                           x.astype(jax_dtype), y.astype(jax_dtype), w_y.astype(jax_dtype))
    reference = np.asarray(columns["torch target"]())
    for name, call in columns.items():   # every column's gradient first (and each compiled)
        got = np.asarray(call())
        error = float(np.max(np.abs(got - reference)) / max(1.0, np.max(np.abs(reference))))
        assert error < (1e-9 if dtype == torch.float64 else 1e-3), (cell, hidden, batch, name, error)
    return interleaved(columns, rounds=rounds, budget=0.1, clock=clock)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B <= 64")
    parser.add_argument("--cells", default="gru,lstm")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time instead of the wall clock")
    args = parser.parse_args()
    torch.set_num_threads(1)
    jax.config.update("jax_enable_x64", args.dtype == "float64")
    dtype = getattr(torch, args.dtype)
    clock = time.process_time if args.cpu_time else time.perf_counter
    batches = (1, 64) if args.quick else (1, 64, 1024)
    print(f"{args.dtype}, n = {STEPS}, D = {INPUTS}, one thread; ms per loss and gradient; ratio = the target's "
          "time over the column's (< 1: the generated backward is faster)")
    header = (f"{'cell':5} {'H':>4} {'B':>5} | {'torch target':>12} {'autograd':>9} {'ratio':>6} {'nn.*':>8} "
              f"{'ratio':>6} | {'JAX target':>10} {'jax.grad':>9} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for cell in args.cells.split(","):
        modules = {target: generated(cell, target) for target in ("torch", "jax")}
        for hidden in (16, 128):
            for batch in batches:
                best = row(cell, modules, hidden, batch, dtype, args.rounds, clock)
                ms = {name: 1e3 * seconds for name, seconds in best.items()}
                native = next((name for name in ms if name.startswith("nn.")), None)
                native_text = (f"{ms[native]:8.2f} {ms['torch target'] / ms[native]:6.2f}" if native
                               else f"{'–':>8} {'–':>6}")
                print(f"{cell:5} {hidden:4d} {batch:5d} | {ms['torch target']:12.2f} {ms['torch autograd']:9.2f} "
                      f"{ms['torch target'] / ms['torch autograd']:6.2f} {native_text} | {ms['JAX target']:10.2f} "
                      f"{ms['jax.grad']:9.2f} {ms['JAX target'] / ms['jax.grad']:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
