"""Code generation: the derivation rendered as a NumPy module through ``templates/numpy``.

>>> from symbolic.model import Model
>>> module = load(Model(steps=3, activation="tanh"))
>>> loss, dw_i, dw_h, dw_o = module.loss_and_grad(x, y, w_i, w_h, w_o)   # doctest: +SKIP
"""

from __future__ import annotations

import shlex
import types
from functools import lru_cache

from ..derive import Derivation
from ..errors import UsageError
from ..files import MARKER
from ..model import VOCABULARY, Model
from ..templating import render
from . import numpy_backend

MODES = ("unrolled", "loop")
#: Above this n the default mode is ``loop``.
DEFAULT_UNROLLED_LIMIT = 64
#: Largest n for which straight-line code is written at all (its size grows linearly in n).
UNROLLED_LIMIT = 512


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


def command(model: Model, mode: str, output: str | None = None) -> str:
    """The canonical command line that generates this module (written into its header)."""
    words = ["bptt", "codegen", "--steps", str(model.steps), "--activation", model.activation]
    if model.inputs != len(VOCABULARY):
        words += ["--inputs", str(model.inputs)]
    words += ["--mode", mode]
    if output is not None:
        words += ["-o", str(output)]
    return shlex.join(words)


def generate(model: Model, mode: str | None = None, output: str | None = None) -> str:
    """The source of the NumPy module for ``model`` (``output`` only names the file in the header)."""
    mode = resolve_mode(model, mode)
    derivation = Derivation(model)
    context = numpy_backend.context(derivation, mode, command(model, mode, output))
    source = render("numpy", "module.py.j2", **context)
    assert MARKER in source.split("\n", 3)[0]
    return source


@lru_cache(maxsize=64)
def _load(model: Model, mode: str) -> types.ModuleType:
    name = f"bptt_generated_{model.activation}_{mode}" + (f"_{model.steps}" if mode == "unrolled" else "")
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    source = generate(model, mode)
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own generated source
    return module


def load(model: Model, mode: str | None = None) -> types.ModuleType:
    """The generated module for ``model``, compiled and imported in memory (cached per model and mode)."""
    return _load(model, resolve_mode(model, mode))


__all__ = ["MODES", "UNROLLED_LIMIT", "command", "generate", "load", "resolve_mode"]
