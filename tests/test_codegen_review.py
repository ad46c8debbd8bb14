"""The framework targets refuse an initial state under a name the cell does not have (a misspelt
state would silently start from zeros and train a different model)."""

import subprocess
import sys

import pytest


def _module(tmp_path, target):
    path = tmp_path / f"mgu_{target}.py"
    subprocess.run([sys.executable, "-m", "symbolic", "codegen", "--cell", "docs/cells/mgu.py", "--target", target,
                    "-o", str(path)], check=True, capture_output=True, timeout=300)
    sys.path.insert(0, str(tmp_path))
    try:
        return __import__(path.stem)
    finally:
        sys.path.remove(str(tmp_path))


def test_torch_layer_refuses_an_unknown_initial_state(tmp_path):
    torch = pytest.importorskip("torch")
    module = _module(tmp_path, "torch")
    layer = module.Layer(3, 4, dtype=torch.float64)
    x, h0 = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(KeyError, match="states"):
        layer(x, {"hidden": h0})
    # the right name is used: the final state differs from the one started at zeros
    assert not torch.allclose(layer(x, {"h": h0})[1]["h"], layer(x)[1]["h"])


def test_jax_apply_refuses_an_unknown_initial_state(tmp_path):
    jax = pytest.importorskip("jax")
    module = _module(tmp_path, "jax")
    params = module.init_params(jax.random.PRNGKey(0), 3, 4)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3))
    with pytest.raises(KeyError, match="states"):
        module.apply(params, x, {"hidden": jax.numpy.ones((2, 4))})
    assert module.apply(params, x, {"h": jax.numpy.ones((2, 4))})[1]["h"].shape == (2, 4)
