"""The three proofs hold for every activation, and each rejects a deliberately wrong variant."""

from __future__ import annotations

import pytest

from symbolic import derive, proof

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
