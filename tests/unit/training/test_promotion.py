"""The promotion gate: the held-out comparison, and the one decision the promote route and
the worker's auto-promotion both follow."""

from __future__ import annotations

import pytest

from sitetune.db import connect
from sitetune.errors import NotFound
from sitetune.models.builtin import BUILTIN_DIR
from sitetune.models.card import ModelCard
from sitetune.models.registry import PRODUCTION, Registry
from sitetune.training.promotion import (
    GateResult,
    PromotionDecision,
    decide_promotion,
    held_out_gate,
    promotion_decision,
)

PASSED = {"passed": True, "reason": "candidate mean Dice 0.8000 is at least production's 0.7"}
FAILED = {"passed": False, "reason": "candidate mean Dice 0.5000 is below production's 0.9"}


def _evaluation(gate: dict | None, against: str = "lv-ct:1") -> dict:
    evaluation = {"production_version": against, "candidate": {"mean_dice": 0.5}}
    if gate is not None:
        evaluation["gate"] = gate
    return evaluation


@pytest.mark.parametrize(
    ("candidate", "production", "margin", "passed"),
    [
        (0.80, 0.75, 0.0, True),
        (0.75, 0.75, 0.0, True),  # a tie passes
        (0.70, 0.75, 0.0, False),
        (0.50, 0.75, 0.25, True),  # exactly at the margin
        (0.50, 0.75, 0.125, False),
    ],
)
def test_held_out_gate_compares_mean_dice_within_the_margin(candidate, production, margin, passed):
    gate = held_out_gate({"mean_dice": candidate}, {"mean_dice": production}, margin)
    assert gate.passed is passed
    assert (gate.candidate, gate.production, gate.margin) == (candidate, production, margin)
    relation = "at least" if passed else "below"
    assert f"mean Dice {candidate:.4f} is {relation} production's {production:.4f}" in gate.reason


def test_gate_json_keeps_the_stored_fields_and_reads_back():
    gate = held_out_gate({"mean_dice": 0.7}, {"mean_dice": 0.8}, 0.05)
    stored = gate.to_json()
    assert set(stored) == {"metric", "candidate", "production", "margin", "passed", "reason"}
    assert stored["metric"] == "mean_dice" and stored["passed"] is False
    assert GateResult.from_json(stored) == gate


def test_a_stored_gate_that_does_not_say_it_passed_counts_as_failed():
    assert GateResult.from_json(PASSED).passed
    assert not GateResult.from_json({"reason": "hand-written"}).passed
    assert not GateResult.from_json({"passed": "yes"}).passed  # only a real true passes
    assert GateResult.from_json({"passed": False}).reason == "no reason recorded"


def test_held_out_gate_refuses_a_margin_outside_dice_range():
    with pytest.raises(ValueError, match=r"got 1\.5"):
        held_out_gate({"mean_dice": 0.7}, {"mean_dice": 0.8}, 1.5)


def test_a_passed_gate_against_todays_production_allows():
    decision = promotion_decision("lv-ct", 3, _evaluation(PASSED), production=1)
    assert decision == PromotionDecision(
        "lv-ct", 3, True, (PASSED["reason"],), GateResult.from_json(PASSED)
    )
    assert promotion_decision("lv-ct", 3, _evaluation(PASSED), 1, require_gate=True).allowed


def test_a_failed_gate_refuses_with_its_reason():
    decision = promotion_decision("lv-ct", 3, _evaluation(FAILED), production=1)
    assert not decision.allowed
    assert decision.reasons == (f"the gate refused version 3: {FAILED['reason']}",)
    assert decision.gate is not None and not decision.gate.passed


def test_a_production_change_since_the_evaluation_refuses_even_a_passed_gate():
    decision = promotion_decision("lv-ct", 3, _evaluation(PASSED), production=2)
    assert not decision.allowed
    assert decision.reasons == (
        "version 3 was evaluated against lv-ct:1, but production is now lv-ct:2",
    )
    gone = promotion_decision("lv-ct", 3, _evaluation(PASSED), production=None)
    assert not gone.allowed and gone.reasons == (
        "version 3 was evaluated against lv-ct:1, but lv-ct has no production version now",
    )


def test_every_reason_that_applies_is_listed():
    decision = promotion_decision("lv-ct", 3, _evaluation(FAILED), production=2)
    assert not decision.allowed and len(decision.reasons) == 2
    assert "production is now lv-ct:2" in decision.reasons[0]
    assert "the gate refused version 3" in decision.reasons[1]
    assert decision.explanation == "; ".join(decision.reasons)


def test_the_version_already_in_production_is_allowed_whatever_its_gate():
    decision = promotion_decision("lv-ct", 3, _evaluation(FAILED), production=3, require_gate=True)
    assert decision.allowed and decision.reasons == ("version 3 is already production",)


@pytest.mark.parametrize(
    ("evaluation", "why"),
    [
        (None, "version 3 has no site evaluation to judge it by"),
        (_evaluation(None), "version 3 was not compared with production"),
    ],
)
def test_without_a_gate_ops_may_promote_but_auto_promotion_may_not(evaluation, why):
    by_hand = promotion_decision("lv-ct", 3, evaluation, production=1)
    assert by_hand.allowed and by_hand.gate is None
    assert by_hand.explanation.startswith(why) and "allowed without a gate" in by_hand.explanation
    automatic = promotion_decision("lv-ct", 3, evaluation, production=1, require_gate=True)
    assert not automatic.allowed and automatic.explanation.startswith(why)


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "artifacts")


def test_decide_promotion_reads_the_card_and_todays_production(registry, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    card = ModelCard.model_validate_json((BUILTIN_DIR / "lv-ct" / "card.json").read_text())

    def register(metrics: dict, aliases=()) -> int:
        update = {"metrics": metrics, "version": None}
        return registry.register(
            card.model_copy(update=update), {"weights.pt": weights}, actor="ops", aliases=aliases
        ).version

    base = register({}, aliases=(PRODUCTION,))
    worse = register({"site_evaluation": _evaluation(FAILED, f"lv-ct:{base}")})
    better = register({"site_evaluation": _evaluation(PASSED, f"lv-ct:{base}")})
    by_hand = register({})
    assert not decide_promotion(registry, "lv-ct", worse).allowed
    assert decide_promotion(registry, "lv-ct", better).allowed
    assert decide_promotion(registry, "lv-ct", by_hand).allowed
    assert not decide_promotion(registry, "lv-ct", by_hand, require_gate=True).allowed
    registry.promote("lv-ct", better, actor="ops", reason="test")
    stale = decide_promotion(registry, "lv-ct", worse)  # production moved on since
    assert len(stale.reasons) == 2 and f"production is now lv-ct:{better}" in stale.reasons[0]
    assert decide_promotion(registry, "lv-ct", better).reasons == (
        f"version {better} is already production",
    )
    with pytest.raises(NotFound):
        decide_promotion(registry, "lv-ct", 99)
