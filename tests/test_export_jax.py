"""``bptt codegen --target jax`` (issue 27): the generated custom_vjp against JAX's gradient checker and
against jax.grad of a plain scan of the cell's own equations (tests/export_cases.py), under jit and vmap."""

from __future__ import annotations

import os

import pytest

from .export_cases import CELLS, IDS, LAGGED, LAGGED_IDS, LAGGED_STEPS, B, D, H, N, module, reference

if os.environ.get("CI"):
    import jax  # CI installs the extra: a missing JAX fails there instead of skipping
else:
    jax = pytest.importorskip("jax")

import jax.numpy as jnp
from jax.test_util import check_grads

jax.config.update("jax_enable_x64", True)

FUNCTIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "exp": jnp.exp}


def _case(cell: str, dtype=jnp.float64, seed: int = 0, steps: int = N):
    generated = module(cell, "jax")
    keys = jax.random.split(jax.random.key(seed), 3)
    params = generated.init_params(keys[0], D, H, dtype)
    params = {name: 3 * value for name, value in params.items()}   # ±1.7: saturating gates too
    x = jax.random.normal(keys[1], (B, steps, D), dtype)
    initial = {s: 0.5 * jax.random.normal(k, (B, H), dtype)
               for s, k in zip(generated.STATES, jax.random.split(keys[2], len(generated.STATES)))}
    return generated, params, x, initial


def _weights(generated, dtype=jnp.float64, steps: int = N):
    keys = jax.random.split(jax.random.key(7), 1 + len(generated.STATES))
    weights = {"output": jax.random.normal(keys[0], (B, steps, H), dtype)}
    return weights | {s: jax.random.normal(k, (B, H), dtype) for s, k in zip(generated.STATES, keys[1:])}


def _loss(run, weights):
    def loss(params, x, initial):
        output, final = run(params, x, initial)
        return jnp.sum(output * weights["output"]) + sum(jnp.sum(final[s] * weights[s]) for s in final)

    return loss


def _plain(cell):
    """The oracle: a plain scan of the cell's equations (no custom_vjp), differentiated by JAX."""
    step = reference(cell, FUNCTIONS, lambda u, m: u @ m.T)

    def run(params, x, initial):
        output, final = step(params, list(jnp.moveaxis(x, 1, 0)), initial)
        return jnp.moveaxis(jnp.stack(output), 0, 1), final

    return run


@pytest.mark.slow   # 3 to 9 s a cell: check_grads runs the module op by op
@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_check_grads(cell):
    generated, params, x, initial = _case(cell)
    check_grads(_loss(generated.apply, _weights(generated)), (params, x, initial), order=1, modes=("rev",))


def _close(got, want, tolerance):
    for key in want:
        scale = max(1.0, float(jnp.max(jnp.abs(want[key]))))
        assert float(jnp.max(jnp.abs(got[key] - want[key]))) <= tolerance * scale, key


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_equals_jax_grad_of_a_plain_scan(cell, steps=N):
    generated, params, x, initial = _case(cell, steps=steps)
    weights = _weights(generated, steps=steps)
    ours = jax.grad(_loss(generated.apply, weights), argnums=(0, 1, 2))(params, x, initial)
    theirs = jax.grad(_loss(_plain(cell), weights), argnums=(0, 1, 2))(params, x, initial)
    for got, want in zip(ours, theirs):
        _close(got if isinstance(got, dict) else {"x": got}, want if isinstance(want, dict) else {"x": want}, 1e-10)


@pytest.mark.parametrize("steps", LAGGED_STEPS)
@pytest.mark.parametrize("cell", LAGGED, ids=LAGGED_IDS)
def test_lagged_cells_equal_jax_grad_of_a_plain_scan(cell, steps):
    """s_(t−K) from a window carried by the forward scan, δ sent K steps back through a ring carried by the
    reverse scan: n > K and n ≤ K (only s_0 and zeros read)."""
    test_equals_jax_grad_of_a_plain_scan(cell, steps)


@pytest.mark.slow   # check_grads runs the module op by op
@pytest.mark.parametrize("steps", LAGGED_STEPS)
@pytest.mark.parametrize("cell", LAGGED, ids=LAGGED_IDS)
def test_lagged_cells_check_grads(cell, steps):
    generated, params, x, initial = _case(cell, steps=steps)
    check_grads(_loss(generated.apply, _weights(generated, steps=steps)), (params, x, initial), order=1,
                modes=("rev",))


@pytest.mark.parametrize("cell", LAGGED, ids=LAGGED_IDS)
def test_lagged_cells_under_jit_and_vmap(cell):
    """The windows and rings are scan carries: grad of jit, and of vmap over single sequences, equal the
    batched gradient."""
    test_under_jit_and_vmap(cell, LAGGED_STEPS[-1])


def test_negative_control_a_lagged_cell_without_its_skip_gradient_is_caught():
    generated = module("skip:3", "jax", "no_lag_path")
    _, params, x, initial = _case("skip:3", steps=6)
    weights = _weights(generated, steps=6)
    ours = jax.grad(_loss(generated.apply, weights))(params, x, initial)
    theirs = jax.grad(_loss(_plain("skip:3"), weights))(params, x, initial)
    assert max(float(jnp.max(jnp.abs(ours[k] - theirs[k]))) for k in theirs) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_float32_within_its_reach(cell):
    generated, params, x, initial = _case(cell)
    weights = _weights(generated)
    wide = jax.grad(_loss(_plain(cell), weights))(params, x, initial)
    narrow = {k: v.astype(jnp.float32) for k, v in params.items()}
    got = jax.grad(_loss(generated.apply, {k: v.astype(jnp.float32) for k, v in weights.items()}))(
        narrow, x.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in initial.items()})
    assert all(value.dtype == jnp.float32 for value in got.values())
    _close(got, wide, 1e-5)


def test_under_jit_and_vmap(cell="gru", steps=N):
    """grad of jit, and of vmap over single sequences (x (n, D) inside), equal the batched gradient."""
    generated, params, x, initial = _case(cell, steps=steps)
    weights = _weights(generated, steps=steps)
    loss = _loss(generated.apply, weights)
    batched = jax.grad(loss)(params, x, initial)
    _close(jax.jit(jax.grad(loss))(params, x, initial), batched, 1e-12)

    def one(params, x_b, initial_b, weights_b):
        output, final = generated.apply(params, x_b, initial_b)
        return jnp.sum(output * weights_b["output"]) + sum(jnp.sum(final[s] * weights_b[s]) for s in final)

    def mapped(params):
        return jnp.sum(jax.vmap(one, in_axes=(None, 0, 0, 0))(params, x, initial, weights))

    _close(jax.jit(jax.grad(mapped))(params), batched, 1e-12)


def test_negative_control_a_truncated_derivation_is_caught():
    generated = module("gru", "jax", "truncated")
    _, params, x, initial = _case("gru")
    weights = _weights(generated)
    ours = jax.grad(_loss(generated.apply, weights))(params, x, initial)
    theirs = jax.grad(_loss(_plain("gru"), weights))(params, x, initial)
    assert max(float(jnp.max(jnp.abs(ours[k] - theirs[k]))) for k in theirs) > 1e-3


def test_params_keyed_like_the_numpy_module():
    from symbolic.codegen import load

    from .export_cases import model

    generated, params, x, _ = _case("gru")
    assert list(generated.PARAMS) == [n for n in load(model("gru"), mode="loop").PARAMS if n != "w_y"]
    output, final = generated.apply({**params, "w_y": jnp.ones(H)}, x)   # a readout among them is ignored
    assert output.shape == (B, N, H) and final["h"].shape == (B, H)
    assert float(jnp.max(jnp.abs(output[:, -1] - final["h"]))) == 0
