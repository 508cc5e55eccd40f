"""The promotion gate: each check with its numbers, passing and refusing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from studio.gate import GateConfig, Results, evaluate, watch

GATE = GateConfig(minimums={"exact_match": 0.8}, max_drop=0.02, slo="p99_e2el_ms<=2000", slo_rate=5)


def test_no_gate_promotes_freely() -> None:
    verdict = evaluate(GateConfig(), Results(), None)
    assert verdict.passed
    assert verdict.checks == ()
    assert GateConfig().empty
    assert verdict.describe() == "no gate: promotes freely"


def test_a_candidate_meeting_every_check_passes_with_its_numbers() -> None:
    verdict = evaluate(GATE, Results({"exact_match": 0.85}, slo_met=True), Results({"exact_match": 0.86}))
    assert verdict.passed
    assert [(c.name, c.observed, c.required) for c in verdict.checks] == [
        ("min:exact_match", 0.85, 0.8),
        ("drop:exact_match", 0.85, pytest.approx(0.84)),
        ("slo", None, 5),
    ]


def test_each_failing_check_is_named_with_its_numbers() -> None:
    verdict = evaluate(GATE, Results({"exact_match": 0.75}, slo_met=False), Results({"exact_match": 0.9}))
    assert not verdict.passed
    assert [c.name for c in verdict.failing] == ["min:exact_match", "drop:exact_match", "slo"]
    words = verdict.describe()
    assert "min:exact_match: 0.75 < 0.8" in words
    assert "-0.15 vs production's 0.9 (allowed -0.02)" in words
    assert "slo: p99_e2el_ms<=2000 at 5 req/s missed" in words


def test_a_drop_of_exactly_the_margin_passes_and_a_hair_more_fails() -> None:
    gate = GateConfig(max_drop=0.02)
    production = Results({"f1": 0.9})
    assert evaluate(gate, Results({"f1": 0.88}), production).passed
    assert not evaluate(gate, Results({"f1": 0.8799}), production).passed


def test_without_minimums_the_margin_covers_every_metric_production_has() -> None:
    gate = GateConfig(max_drop=0.0)
    verdict = evaluate(gate, Results({"a": 0.5, "b": 0.4}), Results({"a": 0.5, "b": 0.6}))
    assert [(c.name, c.passed) for c in verdict.checks] == [("drop:a", True), ("drop:b", False)]


def test_unmeasured_results_fail_and_say_so() -> None:
    verdict = evaluate(GATE, Results(), Results({}))
    assert [c.detail for c in verdict.failing] == [
        "not measured (needs ≥ 0.8)",
        "production's score not measured",
        "p99_e2el_ms<=2000 at 5 req/s not measured",
    ]


def test_the_first_production_version_has_nothing_to_drop_from() -> None:
    verdict = evaluate(GATE, Results({"exact_match": 0.9}, slo_met=True), None)
    assert verdict.passed, verdict.describe()
    assert verdict.checks[1].detail == "no production version to compare with"


def test_config_is_validated_and_described() -> None:
    with pytest.raises(ValidationError):
        GateConfig(max_drop=-0.1)
    with pytest.raises(ValidationError):
        GateConfig.model_validate({"minimum": {"a": 1}})
    assert GATE.describe() == "exact_match ≥ 0.8; at most 0.02 below production; SLO p99_e2el_ms<=2000 at 5 req/s"


def test_each_check_names_where_its_numbers_came_from() -> None:
    candidate, production = (
        Results({"exact_match": 0.75}, source="evaluation 7, 120 examples"),
        Results({"exact_match": 0.9}, source="evaluation 5, 120 examples"),
    )
    minimum, drop = evaluate(GateConfig(minimums={"exact_match": 0.8}, max_drop=0.02), candidate, production).checks
    assert (minimum.source, minimum.detail) == ("evaluation 7, 120 examples", "0.75 < 0.8 — evaluation 7, 120 examples")
    assert drop.source == "candidate: evaluation 7, 120 examples; production: evaluation 5, 120 examples"


def test_production_is_watched_against_the_minimums_only() -> None:
    verdict = watch(GATE, Results({"exact_match": 0.7}))
    assert [(c.name, c.passed) for c in verdict.checks] == [("min:exact_match", False)]
    assert watch(GATE, Results({"exact_match": 0.9})).passed
