"""Data parallel on the frameworks' own engines (issue 27): the generated GRU trained with torch.distributed
(gloo, two processes, DistributedDataParallel: docs/examples/ddp_gru.py) and JAX sharding the batch over two
CPU devices get the gradients one process (one device) gets on the whole batch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "ddp_gru.py"
TORCH_MODULE = ROOT / "generated" / "gru_torch.py"
JAX_MODULE = ROOT / "generated" / "gru_jax.py"


def _environment(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _example():
    spec = importlib.util.spec_from_file_location("ddp_gru", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow   # two processes each importing torch and joining a gloo group: about 15 s
def test_ddp_over_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    torch = pytest.importorskip("torch")
    updates = 3
    saved = tmp_path / "ddp.pt"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--module", str(TORCH_MODULE), "--processes", "2", "--updates", str(updates),
         "--output", str(saved)],
        capture_output=True, text=True, timeout=600, check=False, env=_environment(OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr
    ddp = torch.load(saved)
    # the oracle: one process, the whole batch, the same model, data and SGD
    example = _example()
    model = example.make_model(example.load_module(str(TORCH_MODULE)))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = example.batch()
    for update in range(updates):
        optimiser.zero_grad()
        example.loss_of(model, x, y).backward()
        if update == 0:
            for name, parameter in model.named_parameters():
                assert torch.allclose(ddp["gradients"][name], parameter.grad, rtol=1e-12, atol=1e-14), name
                assert float(parameter.grad.abs().max()) > 1e-6, name   # a gradient that is there
        optimiser.step()
    for name, parameter in model.named_parameters():
        assert torch.allclose(ddp["parameters"][name], parameter.detach(), rtol=1e-12, atol=1e-14), name


SHARDED = """
import importlib.util, json, sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
jax.config.update("jax_enable_x64", True)
spec = importlib.util.spec_from_file_location("gru_jax", sys.argv[1])
gru = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gru)
keys = jax.random.split(jax.random.key(0), 3)
params = gru.init_params(keys[0], 3, 8, jnp.float64)
x = jax.random.normal(keys[1], (8, 12, 3))
weights = jax.random.normal(keys[2], (8, 12, 8))

def loss(params, x, weights):
    output, final = gru.apply(params, x)
    return jnp.mean(jnp.sum(output * weights, axis=(1, 2)))

grad = jax.jit(jax.grad(loss))
devices = jax.devices()
# the compiler partitions the program (Auto): an Explicit mesh asks every contraction over the batch for
# its output's sharding, which the generated module (like any plain JAX code) does not give
auto = getattr(jax.sharding, "AxisType", None)
mesh = jax.make_mesh((2,), ("batch",), **({"axis_types": (auto.Auto,)} if auto else {}))
split = NamedSharding(mesh, PartitionSpec("batch"))
replicated = NamedSharding(mesh, PartitionSpec())
sharded = grad(jax.device_put(params, replicated), jax.device_put(x, split), jax.device_put(weights, split))
one = grad(*jax.device_put((params, x, weights), devices[0]))
sharded, one = jax.device_get((sharded, one))
print(json.dumps({
    "devices": len(devices),
    "input_devices": len(jax.device_put(x, split).sharding.device_set),
    "difference": max(float(jnp.max(jnp.abs(sharded[k] - one[k]))) for k in one),
    "scale": max(float(jnp.max(jnp.abs(one[k]))) for k in one),
}))
"""


@pytest.mark.slow   # a fresh process importing JAX and compiling the scan twice: about 15 s
def test_jax_sharding_the_batch_over_two_devices_equals_one_device():
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-c", SHARDED, str(JAX_MODULE)], capture_output=True, text=True, timeout=600, check=False,
        env=_environment(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and report["input_devices"] == 2
    assert report["scale"] > 1e-3 and report["difference"] <= 1e-12 * report["scale"]
