"""Caches of generated modules: they follow what the module is made of, never how it was first loaded.

- ``codegen.load`` (in process, and its source cache on disk) follows the cell file's contents: an
  edited cell file gives the edited cell's module, its gradient against central differences of a
  forward pass written here.
- A Numba module loaded first with ``importlib.util.spec_from_file_location`` under any name from
  another folder, and called (so its kernels are cached on disk beside it), still imports plainly in a
  fresh process and passes ``bptt check``; and the other way round. Numba's cache records each kernel's
  module name and a later process imports that name: it was the first loader's (``<dynamic>``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from symbolic import codegen
from symbolic.model import Model

from .conftest import ROOT

numba = pytest.importorskip("numba")

HIDDEN, INPUTS, STEPS = 2, 3, 3
ACTIVATIONS = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


def _cell_source(activation: str) -> str:
    return (
        f"from symbolic.cells.spec import Cell, {activation}\n\n"
        'cell = Cell("edited", readout="w_y")\n'
        'x, h = cell.input(), cell.state("h")\n'
        'W, U, b = cell.matrix("W", "H", "D"), cell.matrix("U", "H", "H"), cell.vector("b")\n'
        f"cell.update(h, {activation}(W @ x + U @ h + b))\n\nCELL = cell\n"
    )


def _loss(params, x, y, activation: str) -> float:
    """The cell's mean binary cross-entropy, written from its equation (the oracle)."""
    h = np.zeros((x.shape[0], HIDDEN))
    for t in range(x.shape[1]):
        h = ACTIVATIONS[activation](x[:, t] @ params["W"].T + h @ params["U"].T + params["b"])
    z = h @ params["w_y"]
    return float(np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y)))


def _central_differences(params, x, y, activation: str, step: float = 1e-6) -> dict:
    gradients = {}
    for name, value in params.items():
        gradients[name] = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {key: array.copy() for key, array in params.items()}
            shifted[name][index] = value[index] + step
            up = _loss(shifted, x, y, activation)
            shifted[name][index] = value[index] - step
            gradients[name][index] = (up - _loss(shifted, x, y, activation)) / (2 * step)
    return gradients


def _inputs():
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(HIDDEN, INPUTS)), "U": rng.normal(size=(HIDDEN, HIDDEN)),
              "b": rng.normal(size=HIDDEN), "w_y": rng.normal(size=HIDDEN)}
    return params, rng.normal(size=(3, STEPS, INPUTS)), np.array([0.0, 1.0, 1.0])


def _gradients(path, backend: str) -> dict:
    params, x, y = _inputs()
    module = codegen.load(Model(steps=STEPS, hidden=HIDDEN, cell=str(path)), backend=backend)
    return module.loss_and_grad(x, y, params)[1]


def _assert_matches_differences(gradients: dict, activation: str) -> None:
    params, x, y = _inputs()
    for name, expected in _central_differences(params, x, y, activation).items():
        np.testing.assert_allclose(gradients[name], expected, rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """(cell file, cache directory) shared by the in-process and the cross-process tests: whichever runs
    second finds both cells' modules already on disk (their kernels compiled once), so it sees whether the
    record serves each contents its own module rather than the last one written for the path."""
    folder = tmp_path_factory.mktemp("edited")
    return folder / "edited.py", folder / "cache"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_load_follows_the_edited_cell_file_in_process(edited, monkeypatch, backend):
    path, cache = edited
    monkeypatch.setenv("BPTT_CACHE_DIR", str(cache))
    path.write_text(_cell_source("tanh"))
    before = _gradients(path, backend)
    _assert_matches_differences(before, "tanh")
    path.write_text(_cell_source("sigmoid"))
    after = _gradients(path, backend)
    assert not np.allclose(after["W"], before["W"]), "the module of the old contents was served again"
    _assert_matches_differences(after, "sigmoid")


def _python(code: str, cwd, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python process in ``cwd``, with this checkout importable (no Numba cache
    directory of its own: kernels are cached beside their module)."""
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    environment.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600, check=False)


def test_load_follows_the_edited_cell_file_across_processes(edited):
    """The on-disk record of generated sources is keyed by the cell file's contents too."""
    path, cache = edited
    code = f"""
        from tests.test_module_cache import _assert_matches_differences, _gradients
        _assert_matches_differences(_gradients({str(path)!r}, "numba"), sys.argv[1])
    """
    for activation in ("tanh", "sigmoid"):
        path.write_text(_cell_source(activation))
        done = _python(code.replace("sys.argv[1]", repr(activation)), path.parent, BPTT_CACHE_DIR=str(cache))
        assert done.returncode == 0, f"{activation}: {done.stderr[-2000:]}"


#: How a module is called once, whichever way it was loaded: the scalar notes' model and a cell.
CALLS = {
    "notes": "module.loss_and_grad(np.eye(3)[None].repeat(2, 0), np.array([0.0, 1.0]), np.full(3, 0.1), 0.2, 0.3)[0]",
    "mgu": "module.loss_and_grad(np.ones((2, 3, 3)) / 3, np.array([0.0, 1.0]), module.init_params())[0]",
}
ODD_LOAD = """
    import importlib.util, numpy as np
    spec = importlib.util.spec_from_file_location("odd name <1>", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(repr({call}))
"""
PLAIN_IMPORT = """
    import numpy as np
    import m as module
    print(repr({call}))
"""


@pytest.fixture(scope="module")
def numba_modules(tmp_path_factory) -> dict:
    """name → the source of a Numba module: the notes' scalar model (n = 3) and the MGU cell."""
    folder = tmp_path_factory.mktemp("generated")
    sources = {}
    for name, arguments in {"notes": ["--steps", "3"],
                            "mgu": ["--cell", str(ROOT / "docs" / "cells" / "mgu.py"), "--hidden", "3"]}.items():
        done = _python(f"""
            from symbolic.cli import main
            main(["codegen", *{arguments!r}, "--backend", "numba", "-o", "m.py"])
        """, folder)
        assert done.returncode == 0, done.stderr
        sources[name] = (folder / "m.py").read_text()
    return sources


@pytest.mark.parametrize("first", ["odd", "plain"])
@pytest.mark.parametrize("name", CALLS)
def test_numba_module_works_whoever_loads_it_first(tmp_path, numba_modules, name, first):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    path = home / "m.py"
    path.write_text(numba_modules[name])
    loads = {"odd": (ODD_LOAD.format(path=str(path), call=CALLS[name]), elsewhere),
             "plain": (PLAIN_IMPORT.format(call=CALLS[name]), home)}
    order = [first, *(way for way in loads if way != first)]
    results = []
    for way in order * 2:  # the second round loads every kernel from the disk cache
        done = _python(*loads[way])
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(float(done.stdout))
        assert list((home / "__pycache__").glob("*.nbi")), "no kernel was cached on disk"
    assert max(results) == min(results), results
    checked = _python("from symbolic.cli import main; main(['check', 'm.py'])", home)
    assert checked.returncode == 0 and checked.stdout.rstrip().endswith("passed"), checked.stdout + checked.stderr
