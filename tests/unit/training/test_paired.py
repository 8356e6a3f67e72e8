"""The candidate-vs-production comparison case by case, as the console shows it."""

from __future__ import annotations

from sitetune.training.evaluation import paired_comparison


def _cases(*means):
    return {"cases": [{"mean_dice": m, "dice": {"x": m}} for m in means]}


def test_cases_are_paired_in_order_and_listed_worst_first():
    paired = paired_comparison(_cases(0.80, 0.90, 0.70), _cases(0.85, 0.90, 0.60),
                               ["case-a", "case-b", "case-c"])  # fmt: skip
    assert [r["case"] for r in paired["cases"]] == ["case-a", "case-b", "case-c"]
    assert [r["difference"] for r in paired["cases"]] == [-0.05, 0.0, 0.1]
    assert paired["cases"][0]["dice"] == {"candidate": {"x": 0.8}, "production": {"x": 0.85}}
    assert (paired["better"], paired["worse"], paired["tied"]) == (1, 1, 1)
    assert paired["mean_difference"] == round((-0.05 + 0.0 + 0.1) / 3, 4)
    assert paired["sd_difference"] > 0


def test_a_case_one_network_could_not_score_is_kept_but_not_counted():
    paired = paired_comparison(_cases(0.8, None), _cases(0.7, 0.6), ["a", "b"])
    assert [r["case"] for r in paired["cases"]] == ["a", "b"]
    assert paired["cases"][1]["difference"] is None
    assert paired["better"] == 1 and paired["sd_difference"] is None
