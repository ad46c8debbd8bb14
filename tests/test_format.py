"""format_python: generated modules laid out by ``ruff format`` under a pinned configuration, and every
notes' module (both backends) ``ruff format --check``- and ``ruff check``-clean under it."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from symbolic.codegen import format as formatting
from symbolic.codegen import generate
from symbolic.codegen.format import SETTINGS, format_python
from symbolic.model import Model

from .conftest import ACTIVATION_NAMES, ROOT

#: What the formatter must change: a call past 110 columns, spaces around a simple power, single quotes.
UNLAID = (
    "def f(o_t, w_h):\n"
    "    return some_function_name(first_argument_name_one, second_argument_name_two, o_t ** 2, 'third', w_h)\n"
)


def ruff(*arguments: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *arguments], capture_output=True, text=True,
                          check=False, cwd=cwd)


def test_format_python_lays_out_as_ruff_format(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(UNLAID)
    # the negative control: the unlaid text fails the check the generated modules pass
    assert ruff("format", "--check", *SETTINGS, str(path)).returncode == 1
    laid = format_python(UNLAID)
    assert laid != UNLAID and "o_t**2" in laid and '"third"' in laid
    assert max(len(line) for line in laid.splitlines()) <= formatting.LINE_LENGTH
    path.write_text(laid)
    assert ruff("format", "--check", *SETTINGS, str(path)).returncode == 0


def test_a_users_ruff_configuration_does_not_change_the_output(tmp_path, monkeypatch):
    """A ruff.toml in the working directory (line length 40, single quotes) is ignored."""
    expected = format_python(UNLAID)
    (tmp_path / "ruff.toml").write_text("line-length = 40\n[format]\nquote-style = 'single'\n")
    monkeypatch.chdir(tmp_path)
    # control: without the pinned settings ruff does read that file
    unpinned = subprocess.run([sys.executable, "-m", "ruff", "format", "-"], input=UNLAID, text=True,
                              capture_output=True, check=True, cwd=tmp_path).stdout
    assert unpinned != expected and "'third'" in unpinned
    assert format_python(UNLAID) == expected


def test_without_ruff_the_text_is_kept_with_a_warning(monkeypatch):
    monkeypatch.setattr(formatting, "format_command", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert format_python(UNLAID) == UNLAID
    assert any("ruff is not installed" in str(w.message) for w in caught)


def test_ruff_failing_on_our_text_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="template bug"):
        format_python("def f(:\n")


def test_the_pinned_ruff_version_is_installed():
    """pyproject.toml pins the range the committed generated/ modules were formatted with."""
    from importlib.metadata import version

    major, minor = (int(part) for part in version("ruff").split(".")[:2])
    assert (major, minor) == (0, 17), version("ruff")
    assert f'"ruff{formatting.RUFF_VERSIONS}"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("mode", ["loop", "unrolled"])
def test_notes_modules_are_formatter_and_lint_clean(backend, mode, tmp_path):
    """Every activation, a wide input (D = 20) and the docstring's terms (n = 4): ``ruff format --check``
    under the pinned settings and under the project's configuration, ``ruff check`` under both."""
    paths = []
    for activation in ACTIVATION_NAMES:
        for steps, inputs in ((4, 3), (6, 20)):
            path = tmp_path / f"rnn_{activation}_{mode}_{steps}_{inputs}_{backend}.py"
            path.write_text(generate(Model(steps=steps, activation=activation, inputs=inputs), mode, backend=backend))
            paths.append(str(path))
    project = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["format", "--check", *SETTINGS], ["format", "--check", *project],
                    ["check", "--isolated"], ["check", *project]):
        result = ruff(*command, *paths)
        assert result.returncode == 0, result.stdout + result.stderr
