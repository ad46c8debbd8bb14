"""Declared layouts: how a user's weights hold the engine's parameters, so ``bptt grade`` needs no adapter.

The engine keeps one matrix per gate and map, applied per column (a = W x, W (H, D)). Code people write
stacks the gates (CS231n's Wx (D, 4H), torch's weight_ih (4H, D)), multiplies rows (x @ Wx) or columns
(W @ x), may put one matrix on the concatenation [h; x], and may split the bias in two (torch's b_ih,
b_hh). A ``Layout`` says which, and maps the engine's parameters to the user's arrays and the engine's
gradients to the gradients the user's arrays must have: stacking, transposing and concatenating only
move entries, so the gradients move the same way; a split bias receives ∂L/∂b in both halves.

The user's names (``--params``, in the order the function takes them):
``Wx`` the input weights, ``Wh`` the recurrent weights, ``b`` the bias, ``bx`` and ``bh`` a bias split
in two (the forward adds them), ``W`` one matrix on the concatenation (``--concat hx``: [h; x], or xh). Biases are (G·H,), or columns
(G·H, 1) for per-step column vectors (``bias_column``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

#: The user's names of the weights and what each holds.
TOKENS = {"Wx": "input weights", "Wh": "recurrent weights", "b": "bias", "bx": "input half of a split bias",
          "bh": "recurrent half of a split bias", "W": "weights on the concatenation of h and x"}
ORIENTATIONS = ("row", "column")


@dataclass(frozen=True)
class Layout:
    """``orientation``: row (x @ Wx, Wx (D, G·H)) or column (Wx @ x, Wx (G·H, D)); ``gates``: the engine's
    parameter names per group in the user's stacking order; ``names``: the user's arrays in order."""

    orientation: str
    inputs: tuple
    recurrent: tuple
    biases: tuple
    names: tuple
    concat: str = "hx"
    #: the gate letters in the user's order ("" for a cell with one map per group)
    gates: str = ""
    #: biases as columns (G·H, 1), for per-step column vectors; else (G·H,)
    bias_column: bool = False

    def to_user(self, params: dict) -> dict:
        """The engine's parameters (name → array) as the user's arrays (token → array)."""
        return self._arrange(params, split=True)

    def gradients_to_user(self, gradients: dict) -> dict:
        """The engine's ∂L/∂θ as the gradients of the user's arrays (a split bias gets ∂L/∂b twice)."""
        return self._arrange(gradients, split=False)

    def shapes(self, hidden: int, inputs: int) -> dict:
        stacked, row = hidden * len(self.inputs), self.orientation == "row"
        shapes = {"Wx": (inputs, stacked) if row else (stacked, inputs),
                  "Wh": (hidden, stacked) if row else (stacked, hidden),
                  "W": (hidden + inputs, stacked) if row else (stacked, hidden + inputs),
                  "b": (stacked, 1) if self.bias_column else (stacked,)}
        shapes["bx"] = shapes["bh"] = shapes["b"]
        return {name: shapes[name] for name in self.names}

    def _arrange(self, values: dict, split: bool) -> dict:
        row = self.orientation == "row"

        def stacked(group):
            # row layout: gate blocks side by side, each block the engine's matrix transposed
            return np.concatenate([np.asarray(values[p]).T for p in group], axis=1) if row else (
                np.concatenate([np.asarray(values[p]) for p in group], axis=0))

        arrays = {}
        if {"Wx", "W"} & set(self.names):
            arrays["Wx"] = stacked(self.inputs)
        if {"Wh", "W"} & set(self.names):
            arrays["Wh"] = stacked(self.recurrent)
        if "W" in self.names:
            order = (arrays["Wh"], arrays["Wx"]) if self.concat == "hx" else (arrays["Wx"], arrays["Wh"])
            arrays["W"] = np.concatenate(order, axis=0 if row else 1)
        if self.biases:
            bias = np.concatenate([np.asarray(values[p]).reshape(-1) for p in self.biases])
            bias = bias[:, np.newaxis] if self.bias_column else bias
            arrays["b"] = bias
            # a fixed, uneven split: each half alone is not the bias
            arrays["bx"] = 0.3 * bias + 0.1 if split else bias
            arrays["bh"] = bias - arrays["bx"] if split else bias
        return {name: arrays[name] for name in self.names}


def layout_of(d, orientation: str = "row", gates: str | None = None, names: str | None = None,
              concat: str = "hx") -> Layout:
    """The layout from the options; UsageError names a bad one and its fix."""
    cell = d.cell
    readout = {cell.readout, cell.readout_bias}
    inputs = tuple(linear.matrix for linear in d.linears if linear.operand == "x")
    recurrent = tuple(linear.matrix for linear in d.linears if linear.operand != "x")
    biases = tuple(p for p in cell.vectors if p not in readout)
    if orientation not in ORIENTATIONS:
        raise UsageError(f"--layout {orientation}: give row (x @ Wx, Wx of shape (D, H)) or column (Wx @ x)")
    if concat not in ("hx", "xh"):
        raise UsageError(f"--concat {concat}: give hx (W on [h; x]) or xh (W on [x; h])")
    letters = _letters(inputs)
    order = letters if gates is None else gates.strip()
    if len(inputs) > 1:
        if sorted(order) != sorted(letters) or len(order) != len(letters):
            raise UsageError(f"--gates {gates}: the cell {cell.name}'s gates are {', '.join(letters)}; give them "
                             f"in the order the stacked weights hold them, such as --gates {letters}")
        inputs, recurrent = _ordered(inputs, order), _ordered(recurrent, order)
        if biases:
            if _letters(biases) != letters:
                raise UsageError(f"the cell {cell.name}'s biases ({', '.join(biases)}) do not stack one per gate: "
                                 "grade it with its loss_and_grad(x, y, params) instead")
            biases = _ordered(biases, order)
    elif gates is not None:
        raise UsageError(f"--gates {gates}: the cell {cell.name} has no stacked gates: drop --gates")
    chosen = _names(names, bool(biases), cell.name)
    if not any(n in chosen for n in ("b", "bx")):
        biases = ()
    return Layout(orientation, inputs, recurrent, biases, chosen, concat, order if len(inputs) > 1 else "")


def _letters(group: tuple) -> str:
    return "".join(name.rsplit("_", 1)[-1] for name in group)


def _ordered(group: tuple, order: str) -> tuple:
    by_letter = {name.rsplit("_", 1)[-1]: name for name in group}
    return tuple(by_letter[letter] for letter in order)


def _names(text: str | None, has_bias: bool, cell: str) -> tuple:
    if text is None:
        return ("Wx", "Wh", "b") if has_bias else ("Wx", "Wh")
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = ", ".join(f"{k} ({v})" for k, v in TOKENS.items())
    for name in names:
        if name not in TOKENS:
            raise UsageError(f"--params {text}: {name!r} is not one of {known}")
    if len(set(names)) != len(names):
        raise UsageError(f"--params {text}: each name once")
    weights = {"Wx", "Wh"} <= set(names) or "W" in names
    if not weights or ("W" in names and {"Wx", "Wh"} & set(names)):
        raise UsageError(f"--params {text}: name the weights as Wx and Wh, or W alone (on the concatenation)")
    bias = [n for n in names if n in ("b", "bx", "bh")]
    if bias and not has_bias:
        raise UsageError(f"--params {text}: the cell {cell} has no bias: pass --bias, or drop {', '.join(bias)}")
    if has_bias and sorted(bias) not in (["b"], ["bh", "bx"]):
        raise UsageError(f"--params {text}: the cell {cell} has a bias: name it b, or bx and bh when split")
    return names


__all__ = ["ORIENTATIONS", "TOKENS", "Layout", "layout_of"]
