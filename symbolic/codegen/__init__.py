"""Code generation: the derivation rendered as a NumPy module through ``templates/numpy``, or as a
Numba-compiled module through ``templates/numba`` (``backend="numba"``, needs ``bptt[fast]``); or, with
``generate_target``, a cell inside a framework's autodiff: a torch.autograd.Function and nn.Module
(``templates/torch``) or a jax.custom_vjp over lax.scan (``templates/jax``).

>>> from symbolic.model import Model
>>> module = load(Model(steps=3, activation="tanh"))
>>> loss, dw_i, dw_h, dw_o = module.loss_and_grad(x, y, w_i, w_h, w_o)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import sys
import tempfile
import types
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..files import MARKER
from ..model import CELLS, VOCABULARY, Model

MODES = ("unrolled", "loop")
BACKENDS = ("numpy", "numba")
#: What a module is written for: NumPy functions (with a backend), or a framework's autodiff (torch, jax).
TARGETS = ("numpy", "torch", "jax")
#: The framework each target imports, its name for people, and the extra that installs it.
_FRAMEWORKS = {"torch": ("torch", "PyTorch", "torch"), "jax": ("jax", "JAX", "jax")}
#: Above this n the default mode is ``loop``.
DEFAULT_UNROLLED_LIMIT = 64
#: Largest n for which straight-line code is written at all (its size grows linearly in n).
UNROLLED_LIMIT = 512


def unrolled_limit(model: Model) -> int:
    """The longest sequence --mode unrolled writes straight-line code for."""
    if model.generic:
        from .cell_backend import UNROLLED_LIMIT as CELL_LIMIT

        return CELL_LIMIT
    return UNROLLED_LIMIT


def resolve_mode(model: Model, mode: str | None) -> str:
    """The mode to generate: the given one, checked, or the default for ``model.steps``."""
    if mode is None:
        return "unrolled" if model.steps <= DEFAULT_UNROLLED_LIMIT else "loop"
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "unrolled" and model.steps > UNROLLED_LIMIT:
        raise UsageError(
            f"--mode unrolled writes straight-line code for each step and is limited to "
            f"n <= {UNROLLED_LIMIT}; n = {model.steps}: use --mode loop (any sequence length)"
        )
    return mode


def resolve_backend(backend: str) -> str:
    """The backend, checked: a known name, and for ``numba`` an importable Numba."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "numba" and importlib.util.find_spec("numba") is None:
        raise UsageError("--backend numba needs Numba, which is not installed: pip install bptt[fast]")
    return backend


def resolve_target(target: str) -> str:
    """The target, checked: a known name, and for a framework an importable framework."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    if target in _FRAMEWORKS:
        module, name, extra = _FRAMEWORKS[target]
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"--target {target} needs {name}, which is not installed: pip install 'bptt[{extra}]'")
    return target


def target_command(model: Model, target: str, output: str | None = None) -> str:
    """The command line that generates a framework module (any sequence length, H and D: no --steps)."""
    words = ["bptt", "codegen", "--cell", model.cell_argument]
    if model.skip is not None:  # the skip cell's lag is an option
        words += ["--skip", str(model.skip)]
    if not model.gated:
        words += ["--activation", model.activation] + (["--bias"] if model.bias else [])
    words += ["--target", target]
    if output is not None:
        words += ["-o", str(output)]
    return shlex.join(words)


def generate_target(model: Model, target: str, output: str | None = None, derivation=None) -> str:
    """The source of the torch or JAX module of ``model``'s cell (templates/torch, templates/jax): the
    derivation's step functions inside the framework's own autodiff (an autograd.Function, a custom_vjp)."""
    from ..templating import render
    from .format import format_python
    from .layout import layout_of

    resolve_target(target)
    derivation = derivation or _derivation(model)
    printer = importlib.import_module(f".{target}_printer", __name__)
    context = printer.context(model, target_command(model, target, output), layout_of(derivation))
    source = format_python(render(target, "cell.py.j2", **context))
    assert MARKER in source.split("\n", 3)[0]
    return source


def command(model: Model, mode: str, output: str | None = None, backend: str = "numpy") -> str:
    """The canonical command line that generates this module (written into its header)."""
    words = ["bptt", "codegen", "--steps", str(model.steps), "--activation", model.activation]
    if model.gated:  # its activations are in its equations
        words = ["bptt", "codegen", "--cell", model.cell_argument, "--steps", str(model.steps)]
    if model.skip is not None:  # the skip cell's lag and activation are options
        words += ["--skip", str(model.skip), "--activation", model.activation]
    if model.inputs != len(VOCABULARY):
        words += ["--inputs", str(model.inputs)]
    if model.hidden != 1:
        words += ["--hidden", str(model.hidden)]
    if model.bias:
        words += ["--bias"]
    if not model.outputs.default:
        words += model.outputs.flags.split()
    words += ["--mode", mode]
    if backend != "numpy":
        words += ["--backend", backend]
    if output is not None:
        words += ["-o", str(output)]
    return shlex.join(words)


def generate(model: Model, mode: str | None = None, output: str | None = None, backend: str = "numpy",
             derivation=None, disk_cache: bool = True) -> str:
    """The source of the module for ``model`` (``output`` only names the file in the header). A cell's
    module is printed from ``derivation``, the engine's ``CellDerivation`` of ``model``'s cell, which
    the caller derives once (``derive_model(model)`` in cli/common.py) and hands to every stage.
    ``disk_cache``: a Numba module's kernels are compiled with ``cache=True`` (False where no
    directory is writable)."""
    # SymPy, Jinja2 and the derivation are imported here, not with the package: a Numba module
    # found in the source cache (see _load) needs none of them.
    from ..notes.derive import Derivation
    from ..templating import render
    from . import numba_backend, numpy_backend
    from .format import format_python

    backend = resolve_backend(backend)
    mode = resolve_mode(model, mode)
    if model.generic:
        return _generate_cell(model, mode, output, backend, derivation or _derivation(model), disk_cache)
    # Loop code comes from the one-step derivatives alone, so it never unrolls the n steps
    # (a test confirms the module is the same as one derived from all n).
    derivation = Derivation(replace(model, steps=1) if mode == "loop" else model)
    source = render("numpy", "module.py.j2", **numpy_backend.context(derivation, mode, command(model, mode, output)))
    if backend == "numba":  # printed from the same derivation; the NumPy module's text only names it
        numba_command = command(model, mode, output, backend)
        context = numba_backend.context(derivation, mode, numba_command)
        context["module_name"] = _module_name(source, numba_command)
        source = render("numba", "module.py.j2", **context, disk_cache=disk_cache)
    source = format_python(source)
    assert MARKER in source.split("\n", 3)[0]
    return source


def _derivation(model: Model):
    """The derivation of ``model``'s cell, for a library caller that has none (``load(model)``)."""
    from ..engine.derivation import derive_model

    return derive_model(model)


def _generate_cell(model: Model, mode: str, output: str | None, backend: str, derivation, disk_cache: bool) -> str:
    """The module of any cell (templates/numpy/cell.py.j2; numba: templates/numba/cell.py.j2), from
    the generic engine's derivation of the cell's equations."""
    from ..templating import render
    from . import cell_backend
    from .format import format_python
    from .layout import layout_of

    if mode == "unrolled" and model.steps > cell_backend.UNROLLED_LIMIT:
        raise UsageError(
            f"--mode unrolled for --cell {model.cell_name} writes the lines of every step and is limited to "
            f"n <= {cell_backend.UNROLLED_LIMIT}; n = {model.steps}: use --mode loop (any sequence length)"
        )
    layout = layout_of(derivation)  # decided once, printed by each backend
    source = render("numpy", "cell.py.j2", **cell_backend.context(model, mode, command(model, mode, output), layout))
    if backend == "numba":  # templates/numba/cell.py.j2: the NumPy module's interface through the shared macros
        from . import numba_cells

        numba_command = command(model, mode, output, backend)
        context = numba_cells.context(model, mode, numba_command, layout)
        context["module_name"] = _module_name(source, numba_command)
        source = render("numba", "cell.py.j2", **context, disk_cache=disk_cache)
    source = format_python(source)
    assert MARKER in source.split("\n", 3)[0]
    return source


def _module_name(numpy_source: str, numba_command: str) -> str:
    """The name a Numba module registers itself under (templates/numba/register.j2), fixed by what
    its source is generated from, so every loader of one file, in any process, finds the same one."""
    return "bptt_numba_" + hashlib.sha256(f"{numba_command}\n{numpy_source}".encode()).hexdigest()[:16]


def cache_directories() -> list[Path]:
    """Where Numba modules are written so ``cache=True`` has a real file: ``$BPTT_CACHE_DIR``, the
    user cache (``$XDG_CACHE_HOME/bptt`` or ``~/.cache/bptt``), then a per-user temporary one."""
    candidates = []
    if os.environ.get("BPTT_CACHE_DIR"):
        candidates.append(Path(os.environ["BPTT_CACHE_DIR"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates.append(Path(base) / "bptt")
    user = getattr(os, "getuid", lambda: "user")()
    candidates.append(Path(tempfile.gettempdir()) / f"bptt-cache-{user}")
    return candidates


def _cached_file(name: str, source: str) -> Path | None:
    """The source written to ``<cache>/numba/<name>_<hash>.py`` in the first writable cache directory."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    for directory in cache_directories():
        target = directory / "numba" / f"{name}_{digest}.py"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_file() or target.read_text() != source:
                scratch = target.with_suffix(f".{os.getpid()}.tmp")
                scratch.write_text(source)
                os.replace(scratch, target)
            if os.access(target.parent, os.W_OK):
                return target
        except OSError:
            continue
    return None


def _cell_contents(model: Model) -> str:
    """A digest of the model's cell file (empty for a built-in cell): what the module's equations come from."""
    if model.cell in CELLS:
        return ""
    try:
        return hashlib.sha256(Path(model.cell).read_bytes()).hexdigest()
    except OSError as error:
        raise UsageError(f"cell file {model.cell} cannot be read ({error.strerror}): give a readable .py file") from None


def _source_key(model: Model, mode: str, backend: str, contents: str = "") -> str:
    """A digest of everything a generated module's source depends on: the model, mode and backend,
    the cell file's contents, this package's version and the contents of its modules and templates,
    and SymPy's version (its printers write the code). Computed without importing SymPy or Jinja2."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(repr((model, mode, backend, contents, __version__)).encode())
    # templates/ beside the package in a checkout, symbolic/templates in a wheel (templating.templates_dir)
    files = (
        sorted(package.rglob("*.py"))
        + sorted(package.rglob("*.j2"))
        + sorted(package.parent.glob("templates/**/*.j2"))
    )
    sympy = importlib.util.find_spec("sympy")
    if sympy is not None and sympy.origin:
        files.append(Path(sympy.origin).with_name("release.py"))
    for path in files:
        digest.update(str(path.relative_to(path.parent.parent)).encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()[:24]


def _cached_source(key: str) -> Path | None:
    """The module file recorded for ``key`` by an earlier ``_record_source``, if it is still there."""
    for directory in cache_directories():
        try:
            target = directory / "numba" / (directory / "numba" / "sources" / key).read_text().strip()
        except OSError:
            continue
        if target.is_file():
            return target
    return None


def _record_source(key: str, path: Path) -> None:
    """Remember that the source for ``key`` is the file ``path`` (best effort: a failure costs only
    a regeneration next time)."""
    record = path.parent / "sources" / key
    try:
        record.parent.mkdir(exist_ok=True)
        scratch = record.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(path.name)
        os.replace(scratch, record)
    except OSError:
        pass


def _import_file(path: Path) -> types.ModuleType:
    """Import a cached Numba module from its file."""
    # Registered under its file's name (source hash included): kernels loaded from Numba's cache
    # find their module's globals by importing that name.
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


class _Handed:
    """The caller's derivation, passed through ``_load``'s cache without being part of its key: the
    model and the cell file's digest, which are, determine it."""

    def __init__(self, derivation=None):
        self.derivation = derivation

    def __eq__(self, other) -> bool:
        return isinstance(other, _Handed)

    def __hash__(self) -> int:
        return 0


@lru_cache(maxsize=64)
def _load(model: Model, mode: str, backend: str = "numpy", contents: str = "", handed: _Handed | None = None
) -> types.ModuleType:
    """The module for ``model``; ``contents`` (the cell file's digest) is part of the cache key, so an
    edited cell file is derived again rather than served from either cache."""
    name = f"bptt_generated_{model.activation}_{mode}" + (f"_{model.steps}" if mode == "unrolled" else "")
    if not model.scalar:
        name += f"_h{model.hidden}" + ("_bias" if model.bias else "")
    if model.generic:
        tag = model.cell if model.cell.isidentifier() else "cell_" + hashlib.sha256(model.cell.encode()).hexdigest()[:12]
        name = name.replace("bptt_generated_", f"bptt_generated_{tag}_", 1) + f"_d{model.inputs}"
    if model.skip is not None:
        name += f"_k{model.skip}"
    if not model.outputs.default:
        o = model.outputs
        name += f"_{o.readout}_{o.loss}{o.classes or ''}_{o.reduction}"
    if backend == "numba":
        # A module generated before, by this same code and templates, is imported from its file
        # without deriving or rendering it again (no SymPy import: a fresh process loads in
        # milliseconds plus Numba's own import).
        key = _source_key(model, mode, backend, contents)
        cached = _cached_source(key)
        if cached is not None:
            return _import_file(cached)
    source = generate(model, mode, backend=backend, derivation=handed and handed.derivation)
    if backend == "numba":
        name += "_numba"
        path = _cached_file(name, source)
        if path is not None:  # a real file, so Numba's cache=True has somewhere to write
            _record_source(key, path)
            return _import_file(path)
        source = generate(model, mode, backend=backend, derivation=handed and handed.derivation, disk_cache=False)
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own generated source
    return module


def load(model: Model, mode: str | None = None, backend: str = "numpy", derivation=None) -> types.ModuleType:
    """The generated module for ``model``, compiled and imported (cached per model, mode, backend and
    the contents of the model's cell file: edit the file and the next call derives it again).
    ``derivation``: the caller's ``CellDerivation`` of the model's cell, derived once per command
    (without one, a cell's module not found in a cache is derived here).

    NumPy modules are executed in memory; Numba modules are written to a cache directory first
    (see ``cache_directories``) so that their compiled kernels are cached on disk between runs.
    """
    mode, backend = resolve_mode(model, mode), resolve_backend(backend)
    if mode == "loop" and backend == "numba":
        # A loop module is the same for every n but for the command in its header: one module (one
        # file, one set of compiled kernels) serves every sequence length.
        model = replace(model, steps=1)
    return _load(model, mode, backend, _cell_contents(model), _Handed(derivation))


__all__ = [
    "BACKENDS",
    "MODES",
    "TARGETS",
    "UNROLLED_LIMIT",
    "cache_directories",
    "command",
    "generate",
    "generate_target",
    "load",
    "resolve_backend",
    "resolve_mode",
    "resolve_target",
    "target_command",
]
