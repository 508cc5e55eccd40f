"""Scoring an evaluation's answers: values in, values out (no I/O; ``studio.evaluator`` calls the models).

A scorer looks at one example — the candidate's ``prediction``, the dataset's ``reference`` (the last assistant
turn) and the ``row`` (the prompt's messages) — and gives a score in [0, 1] with a short reason when it is not 1.

- ``exact_match``: the prediction equals the reference after SQuAD's ``normalize_answer`` (lower case, punctuation,
  the articles a/an/the and extra whitespace removed), as in the SQuAD v1.1 evaluation script.
- ``regex``: the pattern is found in the prediction (``re.search``); a pattern that does not compile is refused
  when the scorer is made, with the compiler's error.
- ``json_schema``: the prediction parses as JSON and validates against the schema given with the evaluation
  (``jsonschema``, the schema's own draft); a schema that is not valid is refused up front.
- ``pairwise``: a judge model compares the candidate's answer with the production version's on the same question,
  asked twice with the order swapped (``judge_prompt``, ``parse_verdict``, ``combine``) so a judge that favours a
  position cancels out: a win only when both orders prefer the candidate, a loss only when both prefer production,
  a tie otherwise; the score is the win rate with ties counted as half.

``aggregate`` sums per-example scores into a ``ScorerSummary`` per scorer (mean, count, and for pairwise the
wins, ties and losses); errors (an example the candidate did not answer) are counted apart and score nothing.
"""

from __future__ import annotations

import enum
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.errors import InvalidSpec

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = frozenset(string.punctuation)


class ScorerKind(enum.StrEnum):
    EXACT_MATCH = "exact_match"
    REGEX = "regex"
    JSON_SCHEMA = "json_schema"
    PAIRWISE = "pairwise"


class ScorerSpec(BaseModel):
    """One scorer as a user asks for it: its kind and its setting (a pattern for regex, a schema for json_schema)."""

    kind: ScorerKind
    pattern: str | None = None
    json_schema: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.kind.value


class Score(BaseModel):
    """One scorer's verdict on one example."""

    score: float
    reason: str = ""


# --------------------------------------------------------------------------------------------- plain scorers


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lower case, punctuation removed, articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> Score:
    if normalize_answer(prediction) == normalize_answer(reference):
        return Score(score=1.0)
    return Score(score=0.0, reason=f"{normalize_answer(prediction)!r} is not {normalize_answer(reference)!r}")


def compiled(pattern: str) -> re.Pattern[str]:
    """The pattern compiled, or InvalidSpec with the compiler's error (so a bad pattern stops the run up front)."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidSpec(
            f"the regex scorer's pattern {pattern!r} does not compile: {exc}", hint="fix the pattern (Python syntax)"
        ) from exc


def regex_match(prediction: str, pattern: re.Pattern[str]) -> Score:
    if pattern.search(prediction):
        return Score(score=1.0)
    return Score(score=0.0, reason=f"no match for {pattern.pattern!r}")


def checked_schema(schema: Any) -> dict[str, Any]:
    """The schema, checked against its own draft's metaschema; InvalidSpec with where it is wrong."""
    if not isinstance(schema, dict):
        raise InvalidSpec("the json_schema scorer's schema is not a JSON object", hint="give a JSON Schema document")
    import jsonschema  # here, not at the top: importing it costs a second (its format checkers build grammars)

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidSpec(f"the JSON schema is not valid at {where}: {exc.message}", hint="fix the schema") from exc
    return schema


def json_schema_valid(prediction: str, schema: Mapping[str, Any]) -> Score:
    """1 when the prediction is JSON (surrounding whitespace and a ```json fence allowed) and the schema accepts it."""
    text = prediction.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError as exc:
        return Score(score=0.0, reason=f"not JSON: {exc}")
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Score(score=0.0, reason=f"schema: {error.message} at {where}")
    return Score(score=1.0)


@dataclass(frozen=True)
class Scorer:
    """A ready scorer: its spec checked (pattern compiled, schema valid) once, then applied to each example."""

    spec: ScorerSpec
    pattern: re.Pattern[str] | None = None

    def __call__(self, prediction: str, reference: str, row: Sequence[Mapping[str, str]] = ()) -> Score:
        kind = self.spec.kind
        if kind is ScorerKind.EXACT_MATCH:
            return exact_match(prediction, reference)
        if kind is ScorerKind.REGEX:
            assert self.pattern is not None
            return regex_match(prediction, self.pattern)
        if kind is ScorerKind.JSON_SCHEMA:
            assert self.spec.json_schema is not None
            return json_schema_valid(prediction, self.spec.json_schema)
        raise InvalidSpec("the pairwise scorer is scored by a judge, not per answer")


def scorer_of(spec: ScorerSpec) -> Scorer:
    """A scorer for ``spec``, its settings checked; InvalidSpec for a missing or broken setting."""
    if spec.kind is ScorerKind.REGEX:
        if not spec.pattern:
            raise InvalidSpec("the regex scorer needs a pattern", hint="--scorer regex=PATTERN")
        return Scorer(spec, compiled(spec.pattern))
    if spec.kind is ScorerKind.JSON_SCHEMA:
        if spec.json_schema is None:
            raise InvalidSpec("the json_schema scorer needs a schema", hint="--scorer json_schema=FILE")
        checked_schema(spec.json_schema)
    return Scorer(spec)


# ----------------------------------------------------------------------------------------- pairwise judgement


class Verdict(enum.StrEnum):
    A = "A"
    B = "B"
    TIE = "tie"


class Outcome(enum.StrEnum):
    WIN = "win"
    TIE = "tie"
    LOSS = "loss"


JUDGE_SYSTEM = (
    "You are an impartial judge. Compare two answers to the user's question for correctness, helpfulness and "
    "faithfulness to the question. Do not let the order of the answers, their length or their style sway you. "
    'End your reply with one line: "Verdict: A", "Verdict: B" or "Verdict: tie".'
)


def judge_prompt(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The judge's chat messages for one comparison (answer A shown first)."""
    user = (
        f"[Question]\n{question}\n\n[Answer A]\n{answer_a}\n[End of answer A]\n\n"
        f"[Answer B]\n{answer_b}\n[End of answer B]\n\nWhich answer is better?"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_VERDICT_LINE = re.compile(r"verdict\s*[:=\-]?\s*\**\s*\[*\s*(a|b|tie|draw|equal)\b", re.IGNORECASE)
_BRACKETED = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^\W*(?:answer\s+)?(a|b|tie)\W*$", re.IGNORECASE)
_WORDS = {"a": Verdict.A, "b": Verdict.B, "tie": Verdict.TIE, "draw": Verdict.TIE, "equal": Verdict.TIE}


def parse_verdict(reply: str) -> Verdict | None:
    """The judge's verdict from its reply, or None when it gave none: the last "Verdict: X" line wins (a judge may
    reason first and mention both letters), then MT-Bench's "[[A]]"/"[[B]]"/"[[C]]" (C: a tie), then a reply that
    is only "A", "B" or "tie"."""
    found = _VERDICT_LINE.findall(reply)
    if found:
        return _WORDS[found[-1].lower()]
    bracketed = _BRACKETED.findall(reply)
    if bracketed:
        letter = bracketed[-1].lower()
        return Verdict.TIE if letter in ("c", "tie") else _WORDS[letter]
    bare = _BARE.match(reply.strip())
    return _WORDS[bare.group(1).lower()] if bare else None


def combine(candidate_first: Verdict | None, production_first: Verdict | None) -> Outcome:
    """The candidate's outcome from the two orders: asked with the candidate as A, then with production as A. A win
    only when both prefer the candidate, a loss only when both prefer production; a tie otherwise (a judge that
    always picks one position gives a tie every time, and a missing verdict never decides)."""
    prefers_candidate = (candidate_first is Verdict.A, production_first is Verdict.B)
    prefers_production = (candidate_first is Verdict.B, production_first is Verdict.A)
    if all(prefers_candidate):
        return Outcome.WIN
    if all(prefers_production):
        return Outcome.LOSS
    return Outcome.TIE


OUTCOME_SCORE = {Outcome.WIN: 1.0, Outcome.TIE: 0.5, Outcome.LOSS: 0.0}


# -------------------------------------------------------------------------------------------------- aggregates


class ScorerSummary(BaseModel):
    """One scorer over an evaluation: the mean score over the examples it scored, and how many it scored."""

    mean: float
    count: int
    wins: int | None = None  # pairwise only
    ties: int | None = None
    losses: int | None = None


def pairwise_score(outcome: Outcome) -> Score:
    """An example's pairwise score: 1 for a win, ½ for a tie, 0 for a loss."""
    return Score(score=OUTCOME_SCORE[outcome], reason="" if outcome is Outcome.WIN else outcome.value)


def aggregate(scores: Iterable[Mapping[str, Score]]) -> dict[str, ScorerSummary]:
    """Per scorer, the mean and count of the examples' scores (each example: scorer name → Score). For pairwise
    the mean is the win rate with ties as half, and the wins, ties and losses are counted too."""
    totals: dict[str, list[float]] = {}
    for example in scores:
        for name, score in example.items():
            totals.setdefault(name, []).append(score.score)
    summary = {}
    for name, values in totals.items():
        summary[name] = ScorerSummary(mean=sum(values) / len(values), count=len(values))
        if name == ScorerKind.PAIRWISE.value:
            summary[name].wins = values.count(1.0)
            summary[name].ties = values.count(0.5)
            summary[name].losses = values.count(0.0)
    return summary


# ------------------------------------------------------------------------------------- a run's plan and result

PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"


class Endpoint(BaseModel):
    """An OpenAI-compatible server and the model name to ask it for (the gateway and a deployment's name)."""

    base_url: str  # ending in /v1
    model: str
    key: str = Field(default="", repr=False)


class HeldOut(BaseModel):
    """The rows a fine-tune held out of its training split (``TrainSettings.eval_fraction`` with its seed), as the
    trainer carved them."""

    fraction: float
    seed: int


class EvalPlan(BaseModel):
    """Everything one evaluation run needs: written by the control plane, read by ``studio.evaluator``."""

    model_config = ConfigDict(extra="forbid")

    evaluation: int
    builder: str  # how the dataset's files are read: json | csv | parquet
    files: list[str]  # the split's files, absolute paths
    format: str  # ``studio.chats.Format``
    columns: dict[str, str]  # the column map
    held_out: HeldOut | None = None  # carve the fine-tune's held-out rows from ``files`` instead of reading all
    limit: int | None = None  # the first N rows only
    candidate: Endpoint
    scorers: list[ScorerSpec]
    judge: Endpoint | None = None  # with ``against``: pairwise judgement
    against: Endpoint | None = None  # the production version's deployment
    max_tokens: int = 256  # per answer
    judge_max_tokens: int = 512  # room for a judge that reasons before its verdict line
    concurrency: int = 4
    timeout_s: float = 120.0
    output_dir: str  # result.json and progress.json


class Example(BaseModel):
    """One evaluated row: what was asked, what was expected, what came back and how it scored."""

    index: int  # the row's place in the split
    prompt: list[dict[str, str]]  # the turns before the last assistant turn
    reference: str  # the last assistant turn
    prediction: str | None = None  # None: the candidate gave no answer (see ``error``)
    production: str | None = None  # the production deployment's answer, when judged
    verdicts: list[str] = []  # the judge's verdicts: candidate first, then production first
    scores: dict[str, Score] = {}
    error: str | None = None
    seconds: float = 0.0


class Progress(BaseModel):
    done: int
    total: int


class EvalResult(BaseModel):
    """What a run leaves in ``result.json``: per-scorer aggregates, every example, and how long it took."""

    summary: dict[str, ScorerSummary]
    examples: list[Example]
    errors: int  # examples the candidate did not answer (scored by nothing)
    timings: dict[str, float]  # seconds: total, candidate, judge
    failure: str = ""  # the run could not go on (no rows, the gateway refused the key): why
