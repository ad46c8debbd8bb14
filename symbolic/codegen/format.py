"""Generated modules laid out by ``ruff format`` (as SymForce formats its generated Python).

Templates write each statement on one line, however long; ``format_python`` gives the module ruff's
layout under a configuration pinned here, so a user's own ruff configuration (a ``pyproject.toml`` or
``ruff.toml`` above the working directory) cannot change the bytes we write. The formatter's style
changes only between minor versions of ruff, so pyproject.toml pins ``RUFF_VERSIONS``.

If ruff cannot be run (a broken installation: it is a dependency of the package), the template's
text is returned as it is, with a warning: valid, lint-clean Python, only with long lines unwrapped.
A failure of ruff on our own text is a bug of a template, reported as a RuntimeError, never as the
user's mistake.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from functools import cache

#: The versions of ruff whose formatter writes the committed ``generated/`` modules (pyproject.toml).
RUFF_VERSIONS = ">=0.17,<0.18"
#: The project's line length (pyproject.toml's [tool.ruff]).
LINE_LENGTH = 110
#: Every setting that changes the formatter's output, explicitly; --isolated ignores config files.
SETTINGS = (
    "--isolated",
    "--line-length", str(LINE_LENGTH),
    "--target-version", "py310",
    "--config", "format.quote-style = 'double'",
    "--config", "format.indent-style = 'space'",
    "--config", "format.line-ending = 'lf'",
    "--config", "format.skip-magic-trailing-comma = false",
    "--config", "format.docstring-code-format = false",
    "--config", "format.preview = false",
    "--config", "indent-width = 4",
)


@cache
def ruff_command() -> tuple[str, ...] | None:
    """How to run ruff: the binary of the ``ruff`` package installed with us, else one on PATH."""
    try:
        from ruff.__main__ import find_ruff_bin

        return (os.fsdecode(find_ruff_bin()),)
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff")
        return (found,) if found else None


def format_command() -> list[str] | None:
    """The full command formatting standard input to standard output, or None without ruff."""
    ruff = ruff_command()
    return None if ruff is None else [*ruff, "format", *SETTINGS, "--stdin-filename", "generated.py", "-"]


def format_python(text: str) -> str:
    """``text`` (a generated module) as ``ruff format`` lays it out under the pinned SETTINGS."""
    command = format_command()
    if command is None:
        warnings.warn("ruff is not installed (a dependency of bptt): the generated module keeps its long lines",
                      RuntimeWarning, stacklevel=2)
        return text
    result = subprocess.run(command, input=text.encode(), capture_output=True, check=False,
                            env={**os.environ, "RUFF_NO_CACHE": "true"})
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"ruff format failed on a generated module (a template bug): {message}")
    return result.stdout.decode()

