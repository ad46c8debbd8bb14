"""bptt: Backpropagation Through Time derived exactly with SymPy, typeset, and generated as code.

    >>> import symbolic
    >>> derivation = symbolic.derive(steps=3, activation="tanh")
    >>> derivation.output_factor        # (∂L/∂ŷ)(∂ŷ/∂o_n), simplified by SymPy
    -w_o*(y - y_hat)
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING

from .errors import UsageError
from .model import Model
from .outputs import Outputs

if TYPE_CHECKING:
    from .notes.derive import Derivation, derive

__version__ = "0.1.0"
__all__ = ["Cell", "Derivation", "Model", "Outputs", "UsageError", "__version__", "cell", "derive", "derive_cell", "load_cell"]

#: Public names whose module imports SymPy, imported on first use (PEP 562): ``import symbolic``, the
#: command line's start and a cached Numba module's load need no SymPy.
_LAZY = {"Derivation": "notes.derive", "derive": "notes.derive", "cell": "cells", "load_cell": "cells",
         "derive_cell": "engine.derivation", "Cell": "cells.spec"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """The package, whose ``cell`` stays the function: importing the submodule ``symbolic.cells``
    binds it on the package, which must not leave ``symbolic.cell`` unbound."""

    def __setattr__(self, name, value):
        if name == "cells" and isinstance(value, types.ModuleType):
            super().__setattr__("cell", value.cell)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
