"""The promotion gate: whether a version may become ``production``, and why.

Two steps, both here:

1. When a fine-tune job has evaluated its candidate and the production version of the time
   on the same held-out site cases, `held_out_gate` compares them: the gate passes when the
   candidate's mean Dice is at least production's minus the job's ``promote_margin``. The
   result is stored in the candidate's card (``metrics.site_evaluation.gate``).
2. When someone (ops over HTTP, or the job itself with ``auto_promote``) asks to promote a
   version, `promotion_decision` judges the card's evaluation against the production
   version *now*: refused when the gate failed, or when production has changed since the
   evaluation (the comparison no longer holds). A version already in production is allowed.
   A version without a gate result (registered by hand, or evaluated when production had no
   torch weights) is allowed for ops, who answer for it, but not for ``auto_promote``
   (``require_gate=True``), which needs evidence.

`decide_promotion` reads both from the registry. The HTTP route and the worker call it; how
they act on a refusal (409 unless forced, or "not promoted") is theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sitetune.models.registry import PRODUCTION, Registry

GATE_METRIC = "mean_dice"


@dataclass(frozen=True)
class GateResult:
    """The held-out comparison of a candidate with production, as stored in its card.

    ``candidate``, ``production`` and ``margin`` are ``None`` for a gate read from a card
    that recorded only ``passed`` and ``reason`` (cards registered by hand).
    """

    passed: bool
    reason: str
    metric: str = GATE_METRIC
    candidate: float | None = None
    production: float | None = None
    margin: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "candidate": self.candidate,
            "production": self.production,
            "margin": self.margin,
            "passed": self.passed,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, gate: Mapping[str, Any]) -> GateResult:
        """A stored gate; one that does not say it passed counts as failed."""
        return cls(
            passed=gate.get("passed") is True,
            reason=str(gate.get("reason") or "no reason recorded"),
            metric=str(gate.get("metric") or GATE_METRIC),
            candidate=gate.get("candidate"),
            production=gate.get("production"),
            margin=gate.get("margin"),
        )


def held_out_gate(
    candidate: Mapping[str, Any], production: Mapping[str, Any], margin: float
) -> GateResult:
    """Compare two networks' held-out metrics (`evaluate_networks` entries, each with a
    ``mean_dice`` in [0, 1]): passed when the candidate's mean Dice is at least
    production's minus ``margin`` (Dice, in [0, 1])."""
    if not 0 <= margin <= 1:
        raise ValueError(f"margin must be a Dice difference in [0, 1], got {margin}")
    ours, theirs = float(candidate[GATE_METRIC]), float(production[GATE_METRIC])
    passed = ours >= theirs - margin
    relation = "at least" if passed else "below"
    return GateResult(
        passed=passed,
        reason=f"candidate mean Dice {ours:.4f} is {relation} production's "
        f"{theirs:.4f} - margin {margin}",
        candidate=ours,
        production=theirs,
        margin=margin,
    )


@dataclass(frozen=True)
class PromotionDecision:
    """Whether version ``version`` of model ``name`` may become production.

    ``reasons`` say why it was refused (every reason that applies) or, when allowed, what
    allowed it. ``gate`` is the stored held-out comparison, if the version has one.
    """

    name: str
    version: int
    allowed: bool
    reasons: tuple[str, ...]
    gate: GateResult | None = None

    @property
    def explanation(self) -> str:
        """The reasons in one sentence, for messages and audit rows."""
        return "; ".join(self.reasons)


def promotion_decision(
    name: str,
    version: int,
    evaluation: Mapping[str, Any] | None,
    production: int | None,
    *,
    require_gate: bool = False,
) -> PromotionDecision:
    """Judge ``version`` by its card's site ``evaluation`` (``None`` if it has none) while
    ``production`` (a version number, ``None`` if there is none) serves.

    ``evaluation`` is the card's ``metrics["site_evaluation"]``: ``production_version``
    (``"name:N"``, what it was compared with) and ``gate`` (a `GateResult` as JSON).
    """
    if production == version:
        return PromotionDecision(name, version, True, (f"version {version} is already production",))
    stored = (evaluation or {}).get("gate")
    if not stored:
        if evaluation:
            why = (
                f"version {version} was not compared with production "
                "(no production version with torch weights when it was evaluated)"
            )
        else:
            why = f"version {version} has no site evaluation to judge it by"
        if require_gate:
            return PromotionDecision(name, version, False, (why,))
        return PromotionDecision(name, version, True, (f"{why}; allowed without a gate",))
    gate = GateResult.from_json(stored)
    reasons = []
    compared_with = evaluation.get("production_version")
    if compared_with != f"{name}:{production}":
        if production is None:
            now = f"{name} has no production version now"
        else:
            now = f"production is now {name}:{production}"
        reasons.append(f"version {version} was evaluated against {compared_with}, but {now}")
    if not gate.passed:
        reasons.append(f"the gate refused version {version}: {gate.reason}")
    if reasons:
        return PromotionDecision(name, version, False, tuple(reasons), gate)
    return PromotionDecision(name, version, True, (gate.reason,), gate)


def decide_promotion(
    registry: Registry, name: str, version: int, *, require_gate: bool = False
) -> PromotionDecision:
    """`promotion_decision` for a registered version against today's production alias;
    `NotFound` for an unknown model or version."""
    candidate = registry.get(name, version)
    evaluation = candidate.card.metrics.get("site_evaluation")
    production = registry.aliases(name).get(PRODUCTION)
    return promotion_decision(name, version, evaluation, production, require_gate=require_gate)
