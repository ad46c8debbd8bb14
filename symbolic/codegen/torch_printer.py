"""The torch printer of a cell's layout: the two step functions of ``framework_printer`` written with torch
operations (expressions through SymPy's NumPy printer with torch's names), and the context of
``templates/torch/cell.py.j2`` (a ``torch.autograd.Function`` over the whole sequence and ``Layer``, an
``nn.Module`` shaped like ``nn.RNN``)."""

from __future__ import annotations

import sympy as sp

from .framework_printer import FrameworkCellPrinter, cell_facts
from .layout import Layout
from .numpy_backend import NumPyCodePrinter


class TorchCodePrinter(NumPyCodePrinter):
    """SymPy's NumPy printer writing ``torch.`` functions, with our activations."""

    def _module_format(self, fqn, register=True):
        module, _, name = fqn.rpartition(".")
        if module == "numpy":
            return f"torch.{name}"
        return super()._module_format(fqn, register)

    def _print_sigmoid(self, expr):
        return f"torch.sigmoid({self._print(expr.args[0])})"

    def _print_relu(self, expr):
        return f"torch.relu({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        value = self._print(expr.args[0])
        at_zero = expr.args[1] if len(expr.args) == 2 else sp.S.Half
        return f"torch.heaviside({value}, torch.full_like({value}, {float(at_zero)!r}))"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            return f"torch.sqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational)


class TorchCellPrinter(FrameworkCellPrinter):
    printer = TorchCodePrinter()

    def concatenate(self, items: list[str]) -> str:
        return f"torch.cat([{', '.join(items)}], -1)"

    def split(self, array: str, count: int, axis: int = -1) -> str:
        return f"{array}.chunk({count}, {axis})"

    def zeros(self, like: str) -> str:
        return f"torch.zeros_like({like})"


def context(model, command: str, lay: Layout) -> dict:
    """Everything ``templates/torch/cell.py.j2`` places."""
    return {"command": command, **cell_facts(model, lay), **TorchCellPrinter(lay).context()}


__all__ = ["TorchCellPrinter", "TorchCodePrinter", "context"]
