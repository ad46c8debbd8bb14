"""The one Jinja2 environment of the package, over ``templates/``, in a checkout or inside the installed wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    """``symbolic/templates`` in an installed wheel, ``templates/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"templates not found beside {here}: the installation is incomplete")


class _Environment(jinja2.Environment):
    """Template names are paths under ``templates/`` (``numba/module.py.j2``); a name without a folder
    in an import or include (``macros.j2``) is the one beside the template that names it, so each
    backend's templates import their own macros and may still import another folder's by its path."""

    def join_path(self, template: str, parent: str) -> str:
        folder, _, _ = parent.rpartition("/")
        return f"{folder}/{template}" if folder and "/" not in template else template


@cache
def environment() -> jinja2.Environment:
    """The environment of every template (LaTeX documents and generated modules); undefined names are errors."""
    return _Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(folder: str, name: str, **context) -> str:
    """Render ``templates/<folder>/<name>``."""
    return environment().get_template(f"{folder}/{name}").render(**context)
