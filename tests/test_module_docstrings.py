"""A cell module's docstring describes its own output side (readout, loss, y's shape), not the notes'."""

from __future__ import annotations

import pytest

from symbolic.codegen import generate
from symbolic.model import Model
from symbolic.outputs import Outputs

CASES = [
    (Outputs(), ["ŷ = σ(w_yᵀ h_n)", "y: (B,)."], ["e_t", "mask"]),
    (Outputs("every", "softmax", 4), ["softmax(z_t) over K = 4", "y: (B, n) of class indices", "w_yᵀ e_t"],
     ["ŷ = σ", "y: (B,)."]),
    (Outputs("every", "mse", None, "all"), ["(ŷ_t − y_t)²", "Σ_b Σ_t m_t ℓ_t / Σ_b Σ_t m_t", "y: (B, n) of numbers"],
     ["ŷ = σ"]),
    (Outputs("last", "mse"), ["ŷ_n = z_n", "δh_(n+1→n) = e_n w_y", "y: (B,) of numbers"], ["ŷ = σ", "e_t"]),
]


@pytest.mark.parametrize(("outputs", "present", "absent"), CASES, ids=["notes", "softmax", "mse-all", "mse-last"])
def test_docstring_describes_the_output_side(outputs, present, absent):
    source = generate(Model(cell="gru", hidden=2, steps=1, outputs=outputs), mode="loop")
    docstring = source.split('"""')[1]
    for phrase in present:
        assert phrase in docstring, phrase
    for phrase in absent:
        assert phrase not in docstring, phrase
