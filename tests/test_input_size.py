"""Nothing symbolic grows with the input size D: w_i and x_t are vector symbols and w_i·x_t one Dot.

Structural, not timed: for D = 3 and D = 50 000 the derivation makes the same number of sp.diff calls
on expressions of the same size, no component w_{i,d} or x_{t,d} is made beyond the few shown, the
explicit sums Σ_d w_{i,d} x_{t,d} are never built, and the generated module and the document differ
only where they state D."""

from __future__ import annotations

import difflib

import pytest
import sympy as sp

from symbolic.codegen import generate
from symbolic.model import Model
from symbolic.notes import unroll
from symbolic.notes.derive import Derivation
from symbolic.typeset.notes import sigma_pi_document

from .conftest import run_bptt as bptt

LARGE = 50_000


class Census:
    """Counts sp.diff calls (with the size of what is differentiated) and the components made."""

    def __init__(self, monkeypatch):
        self.diffs: list[int] = []
        self.components = 0
        real_diff, real_item = sp.diff, unroll.Components.__getitem__

        def diff(expr, *symbols, **options):
            self.diffs.append(sp.count_ops(expr) + len(sp.sympify(expr).free_symbols))
            return real_diff(expr, *symbols, **options)

        def item(components, index):
            self.components += 1
            return real_item(components, index)

        def explicit(*args):
            raise AssertionError("w_i·x_t was written out over the D components")

        monkeypatch.setattr(sp, "diff", diff)  # the sp.diff that derive, latex and the backends call
        monkeypatch.setattr(unroll.Components, "__getitem__", item)
        monkeypatch.setattr(unroll, "explicit_dot", explicit)


def _census(monkeypatch, work):
    census = Census(monkeypatch)
    result = work()
    monkeypatch.undo()
    return census, result


@pytest.mark.parametrize(
    ("name", "work"),
    [
        ("derivation", lambda D: Derivation(Model(steps=3, inputs=D))),
        ("codegen unrolled", lambda D: generate(Model(steps=3, inputs=D), "unrolled")),
        ("codegen loop", lambda D: generate(Model(steps=5, inputs=D), "loop")),
        ("document", lambda D: sigma_pi_document(Derivation(Model(steps=3, inputs=D)), "tex")),
        ("document n = 6", lambda D: sigma_pi_document(Derivation(Model(steps=6, inputs=D, activation="relu")), "md")),
    ],
)
def test_the_same_symbolic_work_for_every_input_size(monkeypatch, name, work):
    small, small_result = _census(monkeypatch, lambda: work(3))
    large, large_result = _census(monkeypatch, lambda: work(LARGE))
    assert large.diffs == small.diffs, name  # as many sp.diff calls, on expressions of the same size
    # Only the components a docstring or document shows (w_{i,1}, w_{i,2}, w_{i,D}): a few dozen lookups.
    assert large.components <= 30, (name, large.components)
    if isinstance(small_result, str):
        assert abs(len(large_result) - len(small_result)) < 600, name


def _changed_lines(a: str, b: str) -> list[str]:
    return [
        line for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_generated_sources_differ_only_in_the_input_size(mode, activation):
    small = generate(Model(steps=3, activation=activation, inputs=3), mode)
    large = generate(Model(steps=3, activation=activation, inputs=LARGE), mode)
    changed = _changed_lines(small, large)
    assert changed, "the input size must be stated"
    for line in changed:
        assert "--inputs 50000" in line or "D = 50000" in line or "INPUT_SIZE = 50000" in line or (
            line[0] == "-" and ("D = 3" in line or "INPUT_SIZE = 3" in line or "--steps 3" in line)
        ), line
    assert "w_i·x_t" in large  # the docstring states the model with the one vector symbol


def test_document_differs_only_where_it_states_the_input_size():
    small = sigma_pi_document(Derivation(Model(steps=3, inputs=4)), "tex")
    large = sigma_pi_document(Derivation(Model(steps=3, inputs=LARGE)), "tex")
    changed = _changed_lines(small, large)
    assert len(changed) == 8, changed  # the command, ℝ^D twice, the last component's row
    assert all("4" in line for line in changed if line.startswith("-")), changed
    assert r"\frac{\partial^{+} o_{j}}{\partial w_{i,50000}}" in large


def test_components_on_demand_are_the_derivation_for_every_d():
    """Component d of the vector forms is what the component-by-component derivation gives (D = 4,
    where both exist): ∂⁺o_t/∂w_{i,d}, the BPTT sum and the expanded gradient."""
    derivation = Derivation(Model(steps=3, inputs=4))
    u, step = derivation.unrolled, derivation.unrolled.step
    for d in range(4):
        by_hand = sp.diff(u.activation.apply(step.a), u.w_i[d]).xreplace({u.activation.apply(step.a): step.o})
        assert sp.expand(derivation.step_immediate["w_i"][d] - by_hand) == 0
        vector = u.component(derivation.vector_expanded("w_i"), d)
        explicit = {
            u.projection(t): sum(w * x for w, x in zip(u.w_i, u.x[t - 1])) for t in range(1, 4)
        }
        assert sp.expand(vector.xreplace(explicit) - derivation.expanded("w_i", d)) == 0
    assert len(derivation.parameters["w_i"]) == 4 and u.w_i[3] == sp.Symbol("w_i_4")


def test_verify_refuses_a_large_input_size_before_any_work(tmp_path):
    run = bptt("derive", "--inputs", "50000", "--verify", "-o", str(tmp_path / "d.tex"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("bptt: error: --verify checks each of the D = 50000 components of w_i")
    assert len(run.stderr.strip().splitlines()) == 1 and "--inputs 3" in run.stderr
    assert not any(tmp_path.iterdir())


def test_codegen_and_derive_for_fifty_thousand_inputs_through_the_command_line():
    code = bptt("codegen", "--inputs", "50000", "--mode", "loop")
    assert code.returncode == 0, code.stderr
    assert "INPUT_SIZE = 50000" in code.stdout and "w_i_50000" not in code.stdout
    tex = bptt("derive", "--inputs", "50000", "--steps", "2", "--format", "md")
    assert tex.returncode == 0, tex.stderr
    assert r"\mathbb{R}^{50000}" in tex.stdout and "w_{i,49999}" not in tex.stdout
