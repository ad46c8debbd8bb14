"""The wheel carries the templates: install it into a fresh virtual environment and run the command."""

from __future__ import annotations

import subprocess
import sys
import venv

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv (seeing this interpreter's packages for sympy/numpy/jinja2) with our wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work / "dist"), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    wheel = next((work / "dist").glob("bptt-*.whl"))
    environment = work / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(environment)
    python = environment / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    return environment, work


def test_wheel_contains_templates(installed):
    _, work = installed
    wheel = next((work / "dist").glob("bptt-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.startswith("symbolic/templates/latex/") for name in names)
    assert any(name.startswith("symbolic/templates/numpy/") for name in names)


def test_installed_command_runs_from_the_wheel(installed):
    environment, work = installed
    outside = work / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(environment / "bin" / "python"), "-c",
         "import symbolic, symbolic.templating as t; print(symbolic.__file__); print(t.templates_dir())"],
        cwd=outside, check=True, capture_output=True, text=True,
    ).stdout.split()
    assert all(str(environment) in line for line in where), where
    bptt = str(environment / "bin" / "bptt")
    codegen = subprocess.run([bptt, "codegen", "--steps", "3"], cwd=outside, capture_output=True, text=True, check=False)
    assert codegen.returncode == 0, codegen.stderr
    assert "def loss_and_grad" in codegen.stdout
    # one Jinja environment: the Numba template imports the NumPy template's macros by their path, in
    # the wheel as in the checkout, and the installed ruff lays both out alike
    from symbolic.codegen import generate
    from symbolic.model import Model

    for backend in ("numpy", "numba"):
        words = ["codegen", "--steps", "3", "--backend", backend]
        made = subprocess.run([bptt, *words], cwd=outside, capture_output=True, text=True, check=False)
        assert made.returncode == 0, made.stderr
        assert made.stdout.split("\n", 3)[3] == generate(Model(steps=3), backend=backend).split("\n", 3)[3]
    derived = subprocess.run([bptt, "derive", "--steps", "3"], cwd=outside, capture_output=True, text=True, check=False)
    assert derived.returncode == 0, derived.stderr
    assert r"\documentclass" in derived.stdout
