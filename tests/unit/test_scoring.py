"""The evaluation scorers: SQuAD's normalization, regex, JSON-schema validity, the judge's verdicts and the
order-swapped combination that cancels a judge's position bias."""

from __future__ import annotations

import pytest

from studio.errors import InvalidSpec
from studio.scoring import (
    Outcome,
    Score,
    ScorerKind,
    ScorerSpec,
    Verdict,
    aggregate,
    combine,
    judge_prompt,
    normalize_answer,
    pairwise_score,
    parse_verdict,
    scorer_of,
)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Eiffel Tower.", "eiffel tower"),
        ("  an   Apple, a day!  ", "apple day"),
        ("Paris", "paris"),
        ("theatre", "theatre"),  # an article inside a word stays
        ("A-B", "ab"),  # punctuation is removed, not replaced by a space (as SQuAD does)
        ("", ""),
    ],
)
def test_normalize_answer_follows_squad(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_ignores_case_articles_and_punctuation_but_not_words() -> None:
    em = scorer_of(ScorerSpec(kind=ScorerKind.EXACT_MATCH))
    assert em("The answer is: Paris.", "the answer is paris").score == 1.0
    wrong = em("Lyon", "Paris")
    assert wrong.score == 0.0
    assert "'lyon' is not 'paris'" in wrong.reason


def test_regex_must_be_found_in_the_prediction() -> None:
    rx = scorer_of(ScorerSpec(kind=ScorerKind.REGEX, pattern=r"\b\d{4}-\d{2}-\d{2}\b"))
    assert rx("It happened on 2024-05-01.", "").score == 1.0
    miss = rx("It happened in May.", "")
    assert miss.score == 0.0
    assert "no match" in miss.reason


def test_a_bad_pattern_is_refused_up_front_with_its_error() -> None:
    with pytest.raises(InvalidSpec, match=r"does not compile: missing \), unterminated subpattern"):
        scorer_of(ScorerSpec(kind=ScorerKind.REGEX, pattern="(unclosed"))
    with pytest.raises(InvalidSpec, match="needs a pattern"):
        scorer_of(ScorerSpec(kind=ScorerKind.REGEX))


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def test_json_schema_accepts_valid_json_fenced_or_not() -> None:
    js = scorer_of(ScorerSpec(kind=ScorerKind.JSON_SCHEMA, json_schema=SCHEMA))
    assert js('{"name": "Ada", "age": 36}', "").score == 1.0
    assert js('```json\n{"name": "Ada", "age": 36}\n```', "").score == 1.0


@pytest.mark.parametrize(
    ("prediction", "reason"),
    [
        ("Ada, 36", "not JSON"),
        ('{"name": "Ada"}', "'age' is a required property at (root)"),
        ('{"name": "Ada", "age": -1}', "-1 is less than the minimum of 0 at age"),
        ('{"name": "Ada", "age": "36"}', "'36' is not of type 'integer' at age"),
    ],
)
def test_json_schema_failures_say_why(prediction: str, reason: str) -> None:
    score = scorer_of(ScorerSpec(kind=ScorerKind.JSON_SCHEMA, json_schema=SCHEMA))(prediction, "")
    assert score.score == 0.0
    assert reason in score.reason


def test_a_broken_schema_is_refused_up_front() -> None:
    with pytest.raises(InvalidSpec, match="not valid at type"):
        scorer_of(ScorerSpec(kind=ScorerKind.JSON_SCHEMA, json_schema={"type": "objekt"}))
    with pytest.raises(InvalidSpec, match="needs a schema"):
        scorer_of(ScorerSpec(kind=ScorerKind.JSON_SCHEMA))


def test_judge_prompt_shows_both_answers_in_the_order_given() -> None:
    messages = judge_prompt("What is 2+2?", "four", "five")
    assert messages[0]["role"] == "system"
    assert "Verdict: A" in messages[0]["content"]
    user = messages[1]["content"]
    assert user.index("What is 2+2?") < user.index("[Answer A]\nfour") < user.index("[Answer B]\nfive")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Verdict: A", Verdict.A),
        ("verdict: b", Verdict.B),
        ("**Verdict:** tie", Verdict.TIE),
        ("Answer A is wrong and B is right.\nVerdict: B", Verdict.B),
        ("Verdict: A\n...on reflection...\nVerdict: B", Verdict.B),  # the last one counts
        ("My final verdict is [[A]]", Verdict.A),
        ("[[C]]", Verdict.TIE),
        ("B", Verdict.B),
        ("  tie. ", Verdict.TIE),
        ("Both are fine.", None),
        ("", None),
    ],
)
def test_parse_verdict_reads_what_judges_write(reply: str, verdict: Verdict | None) -> None:
    assert parse_verdict(reply) is verdict


def test_combine_needs_both_orders_to_agree() -> None:
    assert combine(Verdict.A, Verdict.B) is Outcome.WIN  # candidate first and preferred; production first, B
    assert combine(Verdict.B, Verdict.A) is Outcome.LOSS
    assert combine(Verdict.TIE, Verdict.B) is Outcome.TIE
    assert combine(None, Verdict.B) is Outcome.TIE


def test_a_judge_that_always_prefers_the_first_answer_cancels_to_ties() -> None:
    outcomes = [combine(Verdict.A, Verdict.A) for _ in range(5)]
    assert outcomes == [Outcome.TIE] * 5
    summary = aggregate({"pairwise": pairwise_score(o)} for o in outcomes)["pairwise"]
    assert (summary.mean, summary.wins, summary.ties, summary.losses) == (0.5, 0, 5, 0)


def test_aggregate_per_scorer_mean_and_count() -> None:
    examples = [
        {"exact_match": Score(score=1.0), "regex": Score(score=0.0)},
        {"exact_match": Score(score=0.0), "regex": Score(score=1.0)},
        {"exact_match": Score(score=1.0)},  # regex not scored here (e.g. the answer failed)
        {"pairwise": pairwise_score(Outcome.WIN)},
        {"pairwise": pairwise_score(Outcome.TIE)},
    ]
    summary = aggregate(examples)
    assert summary["exact_match"].mean == pytest.approx(2 / 3)
    assert summary["exact_match"].count == 3
    assert summary["regex"].mean == 0.5
    assert summary["regex"].count == 2
    assert summary["pairwise"].mean == 0.75
    assert (summary["pairwise"].wins, summary["pairwise"].ties) == (1, 1)
    assert summary["exact_match"].wins is None
