"""The three proofs hold for every activation, and each rejects a deliberately wrong variant."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sympy as sp

from symbolic import derive
from symbolic.activations import ACTIVATIONS
from symbolic.notes import proof

from .conftest import ACTIVATION_NAMES


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_induction_holds(activation):
    checks = proof.induction(derive(2, activation))
    assert [c.passed for c in checks] == [True] * len(checks), checks


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6])
def test_exact_identity_small_n(activation, steps):
    check = proof.exact(derive(steps, activation))
    assert check.passed and "cancels to 0" in check.detail, check


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("steps", [1, 4, 200])
def test_high_precision_evaluation(activation, steps):
    check = proof.numeric(derive(steps, activation))
    assert check.passed, check


def test_recurrence_rejects_dropped_long_term_term():
    assert proof.sum_recurrence().passed
    assert not proof.sum_recurrence(drop_gap=1).passed
    assert not proof.sum_recurrence(drop_gap=2).passed


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("steps", [2, 3])
def test_every_strength_rejects_the_wrong_variant(activation, steps):
    derivation = derive(steps, activation)
    assert not proof.induction(derivation, drop_gap=1)[-1].passed
    assert not proof.exact(derivation, drop_gap=1).passed
    assert not proof.numeric(derivation, drop_gap=1).passed


def test_prove_report_and_format():
    report = proof.prove(derive(3))
    assert report.passed
    text = proof.format_report(report)
    assert "PROVED" in text and "induction" in text.lower()


def test_large_n_proves_the_exact_identity_at_small_n():
    derivation = derive(20, "sigmoid")
    check = proof.exact(derivation)
    assert check.passed and "n = 1..6" in check.name, check
    assert not proof.exact(derivation, drop_gap=1).passed


# -- negative controls for each step of the induction that depends on the derivation ---------------
#
# Each test feeds a derivation that is wrong in exactly what one step checks and expects that step
# (and only the steps that read the wrong piece) to fail. Where the wrong piece enters the Σ/Π form,
# the exact identity confirms independently that the derivation really is wrong.

INDUCTION = ["activation table", "chain-rule step", "base case", "sigmoid + cross-entropy", "Σ/Π recurrence"]


def failing(checks) -> set[str]:
    return {check.name for check in checks if not check.passed}


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_induction_has_its_five_steps(activation):
    checks = proof.induction(derive(2, activation))
    assert [c.name for c in checks] == INDUCTION
    assert failing(checks) == set()


def wrong_jacobians(derivation):
    """Plausible mistakes in ∂o_t/∂o_(t−1) = f′(a_t) w_h, each different for every activation."""
    u, jacobian = derivation.unrolled, derivation.step_jacobian
    return {
        "without w_h": jacobian / u.w_h,
        "sign": -jacobian,
        "w_i for w_h": jacobian.xreplace({u.w_h: u.w_i[0]}),
    }


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("mistake", ["without w_h", "sign", "w_i for w_h"])
def test_chain_rule_step_rejects_a_wrong_step_jacobian(activation, mistake):
    derivation = derive(2, activation)
    derivation.step_jacobian = wrong_jacobians(derivation)[mistake]
    assert failing(proof.induction(derivation)) == {"chain-rule step"}
    assert not proof.exact(derivation).passed  # the wrong Jacobian really gives a wrong gradient


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("mistake", ["w_h: o_t for o_(t-1)", "w_i: components reversed"])
def test_chain_rule_step_rejects_a_wrong_immediate_partial(activation, mistake):
    derivation = derive(2, activation)
    step, immediate = derivation.unrolled.step, dict(derivation.step_immediate)
    if mistake.startswith("w_h"):
        immediate["w_h"] = (immediate["w_h"][0].xreplace({step.o_prev: step.o}),)
    else:
        immediate["w_i"] = immediate["w_i"][::-1]
    derivation.step_immediate = immediate
    # The base case reads the same (wrong) partial at t = 1.
    assert failing(proof.induction(derivation)) == {"chain-rule step", "base case"}
    assert not proof.exact(derivation).passed


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("mistake", ["o_0 left as a symbol", "x_2 at t = 1"])
def test_base_case_rejects_a_wrong_first_step(activation, mistake):
    """∂⁺o_1/∂w wrong, every later step right: only the base case can see it."""
    derivation = derive(2, activation)
    u, step, right = derivation.unrolled, derivation.unrolled.step, derivation.immediate
    o_0 = sp.Symbol("o_0")

    def immediate(parameter, j, component=0):
        if j != 1:
            return right(parameter, j, component)
        generic = derivation.step_immediate[parameter][component]
        if mistake == "o_0 left as a symbol":  # the instance at t = 1 forgets o_0 = 0
            return generic.xreplace({step.o: u.o[0], step.o_prev: o_0, **dict(zip(step.x, u.x[0]))})
        return generic.xreplace({step.o: u.o[0], step.o_prev: 0, **dict(zip(step.x, u.x[1]))})

    derivation.immediate = immediate
    checks = proof.induction(derivation)
    assert failing(checks) == {"base case"}
    assert "d o_1/dw ≠ ∂⁺o_1/∂w for" in checks[2].detail
    assert not proof.exact(derivation).passed


WRONG_DERIVATIVES = {
    "tanh": lambda o: 1 - o,  # 1 − o instead of 1 − o²
    "sigmoid": lambda o: 1 - o**2,  # tanh's
    "relu": lambda o: sp.S.One,  # forgets the kink
    "identity": lambda o: o,
}


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_activation_table_rejects_a_wrong_derivative_from_output(activation, monkeypatch):
    entry = ACTIVATIONS[activation]
    wrong = replace(entry, derivative_from_output=WRONG_DERIVATIVES[activation])
    assert proof.activation_table(entry).passed
    assert not proof.activation_table(wrong).passed
    derivation = derive(2, activation)
    monkeypatch.setitem(ACTIVATIONS, activation, wrong)
    try:
        fresh = derive(2, activation)
    except AssertionError:  # the engine, which the notes read, checks the table's f′ against sp.diff
        assert activation != "identity"
    else:  # the identity is no node of the engine's: o_t = a_t is differentiated, the table unread
        assert activation == "identity"
        assert fresh.step_derivative == entry.derivative_from_output(fresh.unrolled.step.o)
    # A derivation that took the wrong entry anyway (as before the engine checked it).
    derivation.step_derivative = WRONG_DERIVATIVES[activation](derivation.unrolled.step.o)
    # The chain-rule step also compares the derivation's f′ with d o_t/dw.
    assert failing(proof.induction(derivation)) == {"activation table", "chain-rule step"}


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_activation_table_rejects_a_wrong_function(activation):
    entry = ACTIVATIONS[activation]
    wrong = replace(entry, apply=sp.sinh if activation == "tanh" else (lambda z: 1 / (1 + sp.exp(z))))
    check = proof.activation_table(wrong)
    assert not check.passed and check.detail == "disagree: ['f']"


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("mistake", ["without w_o", "sign", "σ′ not cancelled"])
def test_output_factor_rejects_a_wrong_output_factor(activation, mistake):
    derivation = derive(2, activation)
    u, factor = derivation.unrolled, derivation.output_factor
    derivation.output_factor = {
        "without w_o": factor / u.w_o,
        "sign": -factor,
        "σ′ not cancelled": factor * u.y_hat * (1 - u.y_hat),
    }[mistake]
    checks = proof.induction(derivation)
    assert failing(checks) == {"sigmoid + cross-entropy"}
    assert "(∂L/∂ŷ)(∂ŷ/∂o_n)" in checks[3].detail
    assert not proof.exact(derivation).passed


def test_output_factor_rejects_a_wrong_dL_dw_o():
    derivation = derive(2)
    u = derivation.unrolled
    derivation.dL_dw_o = (u.y_hat - u.y) * u.w_o  # the output factor, not ∂L/∂w_o
    checks = proof.induction(derivation)
    assert failing(checks) == {"sigmoid + cross-entropy"} and "∂L/∂w_o" in checks[3].detail
    assert not proof.exact(derivation).passed


def test_report_names_the_failing_step():
    derivation = derive(2)
    derivation.step_jacobian = wrong_jacobians(derivation)["without w_h"]
    report = proof.prove(derivation)
    text = proof.format_report(report)
    assert not report.passed
    assert "[FAIL] chain-rule step" in text and "DISAGREEMENT" in text
    assert f"of {len(report.checks)} checks hold" in text


def test_the_proof_names_its_stages_for_progress_lines():
    """derive --verify says on stderr what it is doing once it has taken a while (symbolic.progress):
    the proof calls back as each strength begins; the lines appear only past the threshold."""
    import io

    from symbolic.progress import Stages

    seen = []
    assert proof.prove(derive(3, "tanh"), progress=lambda stage, what: seen.append(stage)).passed
    assert seen == [1, 2, 3]
    quick, slow = io.StringIO(), io.StringIO()
    Stages("x", 3, after=60, stream=quick)(1, "a")
    Stages("x", 3, after=0, stream=slow)(2, "the exact identity")
    assert quick.getvalue() == "" and slow.getvalue().startswith("x: 2/3 the exact identity… (")


@pytest.mark.parametrize(
    ("mutation", "caught_by"),
    [("no_activation_derivative", {"chain-rule step"}), ("residual_sign", {"sigmoid + cross-entropy"})],
)
def test_the_notes_derivation_is_read_from_the_engine(mutation, caught_by, monkeypatch):
    """The notes' Σ/Π derivation owns no derivation of its own: a wrong engine (one of its mutations)
    makes the notes' proof fail where that rule enters, and the exact engine makes it pass."""
    from symbolic.engine import derivation as engine
    from symbolic.notes import derive as notes_derive

    assert not failing(proof.induction(derive(3, "tanh")))
    real = engine.derive_model
    monkeypatch.setattr(notes_derive, "derive_model", lambda model: real(model).mutate(mutation))
    wrong = derive(3, "tanh")
    assert failing(proof.induction(wrong)) >= caught_by
    assert not proof.exact(wrong).passed
