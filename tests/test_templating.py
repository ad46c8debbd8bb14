"""One Jinja environment for every template; a name without a folder is the one beside its importer."""

from __future__ import annotations

import jinja2
import pytest

from symbolic import templating


def test_one_environment_serves_every_folder():
    environment = templating.environment()
    assert environment is templating.environment()
    for name in ("latex/document.tex.j2", "numpy/module.py.j2", "numba/module.py.j2", "numba/cell.py.j2",
                 "torch/cell.py.j2", "jax/cell.py.j2"):
        assert environment.get_template(name).environment is environment


def test_names_resolve_beside_the_importer_or_by_their_path():
    environment = templating.environment()
    assert environment.join_path("macros.j2", "numba/module.py.j2") == "numba/macros.j2"
    assert environment.join_path("macros.j2", "latex/cell_body.j2") == "latex/macros.j2"
    assert environment.join_path("numpy/macros.j2", "numba/module.py.j2") == "numpy/macros.j2"
    # the Numba template really gets the NumPy template's macros (its argument checks)
    shared = environment.from_string('{% import "numpy/macros.j2" as m %}{{ m.labels() }}').render()
    numba_own = environment.from_string('{% import "numba/macros.j2" as m with context %}{{ m.products() }}').render(disk_cache=True)
    assert shared.startswith("def _labels(") and numba_own.lstrip().startswith("@njit")


def test_a_missing_template_is_an_error():
    with pytest.raises(jinja2.TemplateNotFound):
        templating.render("numpy", "no-such.j2")
