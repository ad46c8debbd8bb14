"""The cell layout (symbolic/codegen/layout.py) against layouts worked out by hand from the cells'
equations, and the derivation handed down: codegen derives nothing when given one."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from symbolic.cells import cell_of
from symbolic.codegen import generate
from symbolic.codegen.layout import layout_of
from symbolic.engine import derivation as engine
from symbolic.model import Model

CELLS = Path(__file__).resolve().parent.parent / "docs" / "cells"


def _layout(cell: str):
    return layout_of(engine.derive_cell(cell_of(Model(steps=3, hidden=2, cell=cell))))


def test_lstm_stacks_its_gates_and_shares_one_delta_array():
    # a_g = W_g x + U_g h_prev + b_g for the four gates: δ(W_g x) = δ(U_g h) = δa_g, so U's δs live in
    # W's array; the four sums are one stacked sum over h_prev; every bias folds into the projection.
    lay = _layout("lstm")
    x, h = lay.groups
    assert (x.operand, x.kind, x.matrices) == ("x", "x", ("W_i", "W_f", "W_g", "W_o"))
    assert (h.operand, h.kind, h.matrices) == ("h_prev", "state", ("U_i", "U_f", "U_g", "U_o"))
    assert h.owner == "x" and h.shared and not x.shared and lay.owners == (x,)
    assert lay.stacked == ("h_prev", ("a_i", "a_f", "a_g", "a_o"))
    assert sorted(str(b) for b in lay.folded.values()) == ["b_f", "b_g", "b_i", "b_o"]
    # the backward pass reads the gates, c (through tanh c) and h; the pre-activations are temporaries
    assert set(lay.stored) == {"i", "f", "g", "o", "c", "tanh_c", "h"}
    assert len(lay.parts) == 1 and lay.delta_width == 4


def test_torch_gru_keeps_the_map_its_backward_pass_reads():
    # n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)): δr reads U_n h, so the maps of h are kept per step, and
    # δ(U_n h) = r ⊙ δa_n is not δ(W_n x) = δa_n: h's maps have their own δ array.
    lay = _layout("gru")
    x, h = lay.groups
    assert h.reads_maps and not h.shared and lay.owners == (x, h)
    assert lay.stacked == ("h_prev", ("a_r", "a_z"))   # n's sum is not W x + U h: not stacked
    assert [g.operand for g in lay.stored_maps] == ["h_prev"]


def test_cho_gru_is_cut_after_the_node_its_map_reads():
    # U_n (r ⊙ h) needs every unit of r ⊙ h first: the step is two parts, the node stored for ∂L/∂U_n.
    lay = _layout(str(CELLS / "cho_gru.py"))
    assert [g.kind for g in lay.groups] == ["x", "state", "node"]
    assert lay.parts[0][-1] == "U_n_arg" and len(lay.parts) == 2
    assert "U_n_arg" in lay.stored


def test_rnn_sums_into_its_row():
    # o = tanh(w_i x + w_h o_prev): one map of x, written straight into o's rows; w_h o_prev computed there.
    lay = _layout("rnn")
    assert lay.direct == "o" and [(f.node, f.pre, f.first) for f in lay.fused] == [("o", "a_o", "o_prev")]
    assert [s.t for s in lay.forward_order(3)] == [1, 2, 3]
    assert [(s.t, s.first, s.last) for s in lay.backward_order(3)] == [(3, False, True), (2, False, False),
                                                                        (1, True, False)]
    assert [(s.t, s.first) for s in lay.forward_order(None)] == [(None, False)]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_codegen_derives_nothing_it_is_given(monkeypatch, backend):
    model = Model(steps=3, hidden=2, cell="lstm")
    derivation = engine.derive_cell(cell_of(model))
    calls = []
    real = engine.derive_cell
    monkeypatch.setattr(engine, "derive_cell", lambda cell, **kw: calls.append(cell) or real(cell, **kw))
    given = generate(model, "unrolled", backend=backend, derivation=derivation)
    assert calls == []
    assert generate(model, "unrolled", backend=backend) == given   # derived here: the same module
    assert len(calls) == 1


def test_bptt_codegen_derives_once(monkeypatch):
    from symbolic.cli import main

    calls = []
    real = engine.derive_cell
    monkeypatch.setattr(engine, "derive_cell", lambda cell, **kw: calls.append(cell) or real(cell, **kw))
    with redirect_stdout(io.StringIO()) as out:
        assert main(["codegen", "--cell", "gru", "--hidden", "2", "--steps", "3", "--backend", "numba"]) == 0
    assert "def loss_and_grad" in out.getvalue() and len(calls) == 1
