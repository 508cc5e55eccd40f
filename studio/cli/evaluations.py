"""`cove eval …`: evaluate a model version on a dataset through its deployment, list the results per version, show
one with its examples, delete one — through the Cove API (``client_of``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, remote, server_running, settings_of, table
from studio.cli.deploy import _model_ref
from studio.errors import CoveError, InvalidSpec
from studio.models import EvaluationPublic
from studio.scoring import ScorerKind
from studio.values import JobStatus


@cli.group("eval")
def evaluation() -> None:
    """Evaluations: a model version's scores on a dataset, with every example."""


def scorer_of(text: str) -> dict[str, Any]:
    """``exact_match``, ``regex=PATTERN`` or ``json_schema=FILE`` (a JSON Schema document) as a scorer's spec."""
    kind, sep, setting = text.partition("=")
    try:
        scorer = ScorerKind(kind)
    except ValueError as exc:
        kinds = ", ".join(k.value for k in ScorerKind if k is not ScorerKind.PAIRWISE)
        raise InvalidSpec(f"unknown scorer {kind!r}", hint=f"one of {kinds}; pairwise comes with --judge") from exc
    if scorer is ScorerKind.REGEX:
        return {"kind": scorer.value, "pattern": setting if sep else None}
    if scorer is ScorerKind.JSON_SCHEMA:
        if not sep:
            raise InvalidSpec("json_schema needs a schema file", hint="--scorer json_schema=schema.json")
        try:
            schema = json.loads(Path(setting).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidSpec(f"cannot read the schema {setting}: {exc}", hint="give a JSON Schema file") from exc
        return {"kind": scorer.value, "json_schema": schema}
    return {"kind": scorer.value}


def summary_line(e: EvaluationPublic) -> str:
    scores = ", ".join(f"{name} {s['mean']:.3f} (n={s['count']})" for name, s in e.summary.items())
    return scores or (e.message.splitlines()[0] if e.message else "")


@evaluation.command("run")
@click.argument("model_ref")
@click.option("--dataset", "dataset_ref", required=True, help="DATASET or DATASET:VERSION (default: newest).")
@click.option("--split", default="eval", show_default=True, help="A split of the dataset, or held_out.")
@click.option("--deployment", required=True, help="The deployment serving the version evaluated.")
@click.option("--scorer", "scorers", multiple=True, help="exact_match, regex=PATTERN or json_schema=FILE; repeatable.")
@click.option("--judge", help="The judge's deployment, for pairwise judgement (with --against).")
@click.option("--against", help="The production version's deployment to compare with (with --judge).")
@click.option("--limit", type=click.IntRange(min=1), help="The first N rows only.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow it to the end.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait.")
@json_option
@click.pass_context
def eval_run(
    ctx: click.Context,
    model_ref: str,
    dataset_ref: str,
    split: str,
    deployment: str,
    scorers: tuple[str, ...],
    judge: str | None,
    against: str | None,
    limit: int | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Evaluate MODEL[:VERSION], served by --deployment, on a dataset's split with each --scorer."""
    model, model_version = _model_ref(model_ref)
    dataset, dataset_version = _model_ref(dataset_ref)
    specs = [scorer_of(s) for s in scorers]
    if judge:
        specs.append({"kind": ScorerKind.PAIRWISE.value})
    if not specs:
        raise InvalidSpec("no scorer given", hint="--scorer exact_match (or regex=…, json_schema=…, --judge …)")
    client = client_of(ctx)
    created = client.evaluations.create(
        model,
        dataset,
        deployment,
        specs,
        model_version=model_version,
        dataset_version=dataset_version,
        split=split,
        judge=judge,
        against=against,
        limit=limit,
    )
    if not as_json:
        click.echo(
            f"evaluation {created.id}: {created.model} v{created.model_version} through {created.deployment} on "
            f"{created.dataset} v{created.dataset_version} ({created.split}); "
            + ", ".join(s.label for s in created.scorers)
        )
    if wait:
        settings = settings_of(ctx)
        if not remote(ctx) and not server_running(settings):
            click.echo(f"note: no Cove server answers at {settings.gateway_url}; it runs when one does", err=True)
        try:
            created = client.evaluations.wait(
                created.id,
                timeout=timeout,
                on_progress=lambda e: click.echo(f"evaluation {e.id}: {e.status.value} {e.done}/{e.total}", err=True),
            )
        except CoveError as exc:
            click.secho(str(exc), fg="red", err=True)
            ctx.exit(1)
    emit(created, as_json, lambda: click.echo(f"evaluation {created.id}: {summary_line(created)}"))


@evaluation.command("list")
@click.option("--model", "model_ref", help="Only this model's (MODEL or MODEL:VERSION).")
@json_option
@click.pass_context
def eval_list(ctx: click.Context, model_ref: str | None, as_json: bool) -> None:
    """Evaluations, newest first, with their scores per scorer."""
    model, version = _model_ref(model_ref) if model_ref else (None, None)
    found = list(client_of(ctx).evaluations.list(model=model, version=version))
    emit(
        found,
        as_json,
        lambda: table(
            ["ID", "OWNER", "STATUS", "MODEL", "DATASET", "SPLIT", "SCORES"],
            [
                [
                    str(e.id),
                    e.owner,
                    e.status.value,
                    f"{e.model}:{e.model_version}",
                    f"{e.dataset}:{e.dataset_version}",
                    e.split,
                    summary_line(e),
                ]
                for e in found
            ],
        ),
    )


@evaluation.command("show")
@click.argument("evaluation_id", type=int)
@click.option("--examples", default=10, show_default=True, help="How many examples to print (0: none).")
@json_option
@click.pass_context
def eval_show(ctx: click.Context, evaluation_id: int, examples: int, as_json: bool) -> None:
    """One evaluation: its scores, errors, timings and examples (prompt, reference, prediction, scores)."""
    found = client_of(ctx).evaluations.get(evaluation_id)

    def human() -> None:
        click.echo(
            f"evaluation {found.id}: {found.status.value}; {found.model} v{found.model_version} through "
            f"{found.deployment} on {found.dataset} v{found.dataset_version} ({found.split})"
        )
        for name, s in found.summary.items():
            extra = f" ({s['wins']} won, {s['ties']} tied, {s['losses']} lost)" if "wins" in s else ""
            click.echo(f"  {name}: {s['mean']:.3f} over {s['count']}{extra}")
        if found.errors:
            click.echo(f"  {found.errors} example(s) not answered")
        if found.status == JobStatus.FAILED:
            click.echo(f"  failed: {found.message}")
        for ex in found.examples[:examples]:
            prompt = ex.prompt[-1]["content"] if ex.prompt else ""
            scores = ", ".join(f"{k} {v.score:g}" for k, v in ex.scores.items())
            click.echo(f"  [{ex.index}] Q: {prompt}\n      expected: {ex.reference}\n      answered: {ex.prediction}")
            click.echo(f"      {scores or ex.error or ''}")

    emit(found, as_json, human)


@evaluation.command("delete")
@click.argument("evaluation_id", type=int)
@click.pass_context
def eval_delete(ctx: click.Context, evaluation_id: int) -> None:
    client_of(ctx).evaluations.delete(evaluation_id)
    click.echo(f"deleted evaluation {evaluation_id}")
