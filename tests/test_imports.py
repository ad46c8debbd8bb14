"""What a fresh process imports: no SymPy for ``import symbolic``, the command line's start or a Numba
module found in the source cache (issue 8: its compile time with a warm cache); and ``symbolic.notes.derive``
stays the public function whether or not the submodule of that name was imported first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def run_python(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout; it prints one JSON object, returned."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_symbolic_needs_no_sympy():
    report = run_python(
        "import json, sys, symbolic\n"
        "before = 'sympy' in sys.modules\n"
        "symbolic.Derivation\n"  # the lazy name does import it: the check can see SymPy
        "print(json.dumps([before, 'sympy' in sys.modules]))"
    )
    assert report == [False, True]


def test_command_line_help_needs_no_sympy():
    report = run_python(
        "import contextlib, io, json, sys\n"
        "from symbolic.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['codegen', '--help'])\n"
        "names = all(name in out.getvalue() for name in ('sigmoid', 'relu', 'identity'))\n"
        "print(json.dumps([names, 'sympy' in sys.modules]))"
    )
    assert report == [True, False]


LOAD = """
import json, sys
from symbolic.codegen import load
from symbolic.model import Model
module = load(Model(steps=5, activation="tanh", hidden={hidden}), "loop", backend="numba")
print(json.dumps([module.__file__, "sympy" in sys.modules, "jinja2" in sys.modules]))
"""


@pytest.mark.parametrize("hidden", [1, 2])
def test_warm_numba_load_needs_no_sympy(tmp_path, hidden):
    pytest.importorskip("numba")
    # Every cache directory (BPTT_CACHE_DIR, the user cache, the temporary one) inside tmp_path, so the
    # first process really derives and renders the module.
    (tmp_path / "tmp").mkdir()
    env = {
        "BPTT_CACHE_DIR": str(tmp_path / "bptt"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    code = LOAD.format(hidden=hidden)
    cold_file, cold_sympy, cold_jinja = run_python(code, env)
    warm_file, warm_sympy, warm_jinja = run_python(code, env)
    assert cold_sympy and cold_jinja  # negative control: generating derives with SymPy
    assert warm_file == cold_file and warm_file.startswith(str(tmp_path / "bptt"))
    assert not warm_sympy and not warm_jinja


DERIVE_AFTER_SUBMODULE = """
import json
from symbolic.notes.derive import Derivation
import symbolic
derivation = symbolic.derive(steps=3, activation="tanh")
print(json.dumps([isinstance(derivation, Derivation), str(derivation.output_factor)]))
"""

DERIVE_BEFORE_SUBMODULE = """
import json
import symbolic
derivation = symbolic.derive(steps=3, activation="tanh")
from symbolic.notes.derive import Derivation
import symbolic.notes.derive
again = symbolic.derive(steps=3, activation="tanh")
print(json.dumps([isinstance(again, Derivation), str(derivation.output_factor)]))
"""

FROM_PACKAGE = """
import json
from symbolic import Derivation, derive
from symbolic.notes.derive import Derivation as Same
print(json.dumps([Derivation is Same, str(derive(steps=3, activation="tanh").output_factor)]))
"""


@pytest.mark.parametrize(
    "code",
    [DERIVE_AFTER_SUBMODULE, DERIVE_BEFORE_SUBMODULE, FROM_PACKAGE],
    ids=["submodule first", "function first", "from the package"],
)
def test_derive_is_the_function_whichever_import_comes_first(code):
    # symbolic.derive is the public function; the notes' submodule symbolic.notes.derive, imported
    # before or after, must not hide it.
    assert run_python(code) == [True, "-w_o*(y - y_hat)"]


def test_unknown_attribute_is_an_attribute_error():
    assert run_python(
        "import json, symbolic\n"
        "try:\n"
        "    symbolic.derivation\n"
        "except AttributeError as error:\n"
        "    print(json.dumps(str(error)))"
    ) == "module 'symbolic' has no attribute 'derivation'"


def test_activation_names_match_the_table():
    from symbolic.activations import ACTIVATIONS
    from symbolic.model import ACTIVATION_NAMES

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
