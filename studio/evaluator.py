"""The evaluation process: ``python -m studio.evaluator PLAN_JSON`` runs one evaluation from an ``EvalPlan``; the
same run is ``evaluate(plan)`` in-process.

It reads the split's rows as fine-tuning reads them (``datastore.rows_of`` → ``chats.to_messages``; a row unfit to
train on is skipped and counted): the last assistant turn is the reference, the turns before it the prompt. Each
prompt is sent to the candidate deployment through an OpenAI-compatible base URL (the gateway, with a key) at
temperature 0, at most ``plan.concurrency`` at a time; its answer is scored by each scorer (``studio.scoring``).
With a judge, the production deployment answers too and the judge compares the two answers twice, the order
swapped. Progress goes to ``progress.json`` as it goes; the end is ``result.json`` (an ``EvalResult``), written
whole or not at all. It exits 0 when the run went through (examples the candidate failed are counted as errors, not
a failed run).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from studio.chats import ColumnMap, RowError, problems_of, to_messages
from studio.datastore import rows_of
from studio.errors import CoveError
from studio.scoring import (
    PROGRESS_FILE,
    RESULT_FILE,
    Endpoint,
    EvalPlan,
    EvalResult,
    Example,
    Progress,
    ScorerKind,
    aggregate,
    combine,
    judge_prompt,
    pairwise_score,
    parse_verdict,
    scorer_of,
)


class EvalFailure(Exception):
    """A run that cannot go on (no rows, an endpoint that refuses every call), with what to do."""


def examples_of(plan: EvalPlan) -> list[Example]:
    """The split's rows as examples (prompt, reference), in order; the held-out rows of a fine-tune when
    ``plan.held_out`` says so; the first ``plan.limit``."""
    columns = ColumnMap.model_validate({"format": plan.format, "columns": plan.columns})
    conversations: list[list[dict[str, str]]] = []
    for name in plan.files:
        for _line, row in rows_of(Path(name), plan.builder):
            try:
                if not isinstance(row, dict):
                    raise RowError("not a JSON object")
                messages = to_messages(row, columns)
                if problems_of(messages):
                    continue
            except RowError:
                continue
            conversations.append(messages)
    if plan.held_out is not None:
        conversations = _held_out(conversations, plan.held_out.fraction, plan.held_out.seed)
    if plan.limit is not None:
        conversations = conversations[: plan.limit]
    return [
        Example(index=i, prompt=messages[:-1], reference=messages[-1]["content"])
        for i, messages in enumerate(conversations)
    ]


def _held_out(conversations: list[list[dict[str, str]]], fraction: float, seed: int) -> list[list[dict[str, str]]]:
    """The rows the trainer held out: the same ``train_test_split`` on the same rows with the same seed."""
    import datasets

    if fraction <= 0 or len(conversations) < 2:
        return []
    rows = datasets.Dataset.from_list([{"i": i} for i in range(len(conversations))])
    held = max(1, round(len(conversations) * fraction))
    test = rows.train_test_split(test_size=held, seed=seed)["test"]
    return [conversations[i] for i in test["i"]]


def chat(client: httpx.Client, endpoint: Endpoint, messages: list[dict[str, str]], max_tokens: int) -> str:
    """One answer at temperature 0; httpx's errors and an error status raise ``EndpointError`` with its words."""
    try:
        answer = client.post(
            endpoint.base_url.rstrip("/") + "/chat/completions",
            headers={"Authorization": f"Bearer {endpoint.key}"} if endpoint.key else {},
            json={"model": endpoint.model, "messages": messages, "temperature": 0, "max_tokens": max_tokens},
        )
    except httpx.HTTPError as exc:
        raise EndpointError(f"{endpoint.model}: {exc}") from exc
    if answer.status_code >= 400:
        raise EndpointError(f"{endpoint.model} answered {answer.status_code}: {answer.text[:300]}")
    try:
        return str(answer.json()["choices"][0]["message"]["content"] or "")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EndpointError(f"{endpoint.model} answered something that is not a chat completion") from exc


class EndpointError(Exception):
    """A call to a model that did not give an answer."""


def _question(prompt: list[dict[str, str]]) -> str:
    """The conversation so far, for the judge: the last user turn alone when it is the only one."""
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _one(
    client: httpx.Client, plan: EvalPlan, example: Example, scorers: list[Any], clock: Callable[[], float]
) -> Example:
    started = clock()
    try:
        example.prediction = chat(client, plan.candidate, example.prompt, plan.max_tokens)
    except EndpointError as exc:
        example.error = str(exc)
        example.seconds = clock() - started
        return example
    example.scores = {s.spec.label: s(example.prediction, example.reference, example.prompt) for s in scorers}
    if plan.judge is not None and plan.against is not None:
        try:
            example.production = chat(client, plan.against, example.prompt, plan.max_tokens)
            question = _question(example.prompt)
            first = chat(
                client,
                plan.judge,
                judge_prompt(question, example.prediction, example.production),
                plan.judge_max_tokens,
            )
            second = chat(
                client,
                plan.judge,
                judge_prompt(question, example.production, example.prediction),
                plan.judge_max_tokens,
            )
        except EndpointError as exc:
            example.error = f"judging: {exc}"
        else:
            verdicts = (parse_verdict(first), parse_verdict(second))
            example.verdicts = [v.value if v else "none" for v in verdicts]
            example.scores[ScorerKind.PAIRWISE.value] = pairwise_score(combine(*verdicts))
    example.seconds = clock() - started
    return example


def evaluate(
    plan: EvalPlan,
    *,
    progress: Callable[[Progress], None] = lambda _p: None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> EvalResult:
    """Run ``plan``: every example asked of the candidate (and judged, when the plan has a judge), scored and
    summed. ``progress`` hears how many are done after each. EvalFailure when there is nothing to evaluate or the
    candidate answered none of them."""
    started = clock()
    scorers = [scorer_of(s) for s in plan.scorers if s.kind is not ScorerKind.PAIRWISE]
    examples = examples_of(plan)
    if not examples:
        raise EvalFailure("the evaluation set has no rows fit to evaluate on")
    done: list[Example] = []
    with (
        httpx.Client(timeout=plan.timeout_s, transport=transport) as client,
        ThreadPoolExecutor(max_workers=max(1, plan.concurrency)) as pool,
    ):
        for example in pool.map(lambda e: _one(client, plan, e, scorers, clock), examples):
            done.append(example)
            progress(Progress(done=len(done), total=len(examples)))
    errors = sum(1 for e in done if e.prediction is None)
    if errors == len(done):
        raise EvalFailure(f"the candidate answered none of {len(done)} examples; the first error: {done[0].error}")
    return EvalResult(
        summary=aggregate(e.scores for e in done),
        examples=done,
        errors=errors,
        timings={"total": clock() - started, "per_example": sum(e.seconds for e in done) / len(done)},
    )


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m studio.evaluator PLAN_JSON``: run the plan, leave result.json beside it; 0 when it went through."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m studio.evaluator PLAN_JSON", file=sys.stderr)
        return 2
    plan = EvalPlan.model_validate_json(Path(args[0]).read_text())
    out = Path(plan.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = [0.0]

    def said(p: Progress) -> None:
        if p.done == p.total or time.monotonic() - last[0] > 1:  # a line a second at most
            last[0] = time.monotonic()
            _write(out / PROGRESS_FILE, p.model_dump_json())
            print(f"[evaluate] {p.done}/{p.total}", flush=True)

    try:
        result = evaluate(plan, progress=said)
    except (EvalFailure, CoveError) as exc:  # CoveError: a dataset file that cannot be read, a bad scorer
        result = EvalResult(summary={}, examples=[], errors=0, timings={}, failure=str(exc))
    _write(out / RESULT_FILE, result.model_dump_json())
    if result.failure:
        print(f"[evaluate] failed: {result.failure}", flush=True)
        return 1
    print(f"[evaluate] {json.dumps({k: round(v.mean, 4) for k, v in result.summary.items()})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
