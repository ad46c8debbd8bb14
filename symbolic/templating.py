"""The Jinja2 environment over ``templates/``, in a checkout or inside the installed wheel."""

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


@cache
def environment(folder: str) -> jinja2.Environment:
    """An environment for one template folder (``latex``, ``numpy``…); undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / folder)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(folder: str, name: str, **context) -> str:
    return environment(folder).get_template(name).render(**context)
