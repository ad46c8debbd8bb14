"""The JAX printer of a cell's layout: the two step functions of ``framework_printer`` written with
``jax.numpy`` (expressions through SymPy's NumPy printer with JAX's names), and the context of
``templates/jax/cell.py.j2`` (``apply``, a ``jax.custom_vjp`` whose forward is ``lax.scan`` over the
forward step and whose backward is a reverse scan over the backward step)."""

from __future__ import annotations

import sympy as sp

from .framework_printer import FrameworkCellPrinter, cell_facts
from .layout import Layout
from .numpy_backend import NumPyCodePrinter


class JaxCodePrinter(NumPyCodePrinter):
    """SymPy's NumPy printer writing ``jnp.`` functions, with our activations."""

    def _module_format(self, fqn, register=True):
        module, _, name = fqn.rpartition(".")
        if module == "numpy":
            return f"jnp.{name}"
        return super()._module_format(fqn, register)

    def _print_sigmoid(self, expr):
        return f"jax.nn.sigmoid({self._print(expr.args[0])})"

    def _print_relu(self, expr):
        return f"jax.nn.relu({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        at_zero = expr.args[1] if len(expr.args) == 2 else sp.S.Half
        return f"jnp.heaviside({self._print(expr.args[0])}, {float(at_zero)!r})"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            return f"jnp.sqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational)


class JaxCellPrinter(FrameworkCellPrinter):
    printer = JaxCodePrinter()

    def concatenate(self, items: list[str]) -> str:
        return f"jnp.concatenate([{', '.join(items)}], -1)"

    def split(self, array: str, count: int, axis: int = -1) -> str:
        return f"jnp.split({array}, {count}, {axis})"

    def zeros(self, like: str) -> str:
        return f"jnp.zeros_like({like})"


def context(model, command: str, lay: Layout) -> dict:
    """Everything ``templates/jax/cell.py.j2`` places."""
    return {"command": command, **cell_facts(model, lay), **JaxCellPrinter(lay).context()}


__all__ = ["JaxCellPrinter", "JaxCodePrinter", "context"]
