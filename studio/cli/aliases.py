"""`cove model alias|promote|aliases|gate`, `cove rollback`, `cove deploy canary`: a model's aliases, the promotion
gate, and canaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, table
from studio.cli.catalog import model
from studio.cli.deploy import deploy
from studio.errors import InvalidSpec


def _scores(pairs: Sequence[str], option: str) -> dict[str, float]:
    """``metric=value`` pairs as a mapping; InvalidSpec naming the one that is not."""
    found = {}
    for pair in pairs:
        metric, _, value = pair.partition("=")
        try:
            found[metric.strip()] = float(value)
        except ValueError:
            raise InvalidSpec(
                f"{option} {pair!r}: write it as METRIC=NUMBER", hint=f"e.g. {option} exact_match=0.8"
            ) from None
        if not metric.strip():
            raise InvalidSpec(f"{option} {pair!r} names no metric", hint=f"e.g. {option} exact_match=0.8")
    return found


def _said(done: Any) -> str:
    was = f" (was {done.previous})" if done.previous is not None else ""
    text = f"{done.model}@{done.alias} → version {done.version}{was}"
    if done.overridden:
        text += ", past the gate (override recorded)"
    if done.deployments:
        text += f"; rolling {', '.join(done.deployments)}"
    return text


@model.command("alias")
@click.argument("name")
@click.argument("alias", type=click.Choice(["staging", "production"]))
@click.argument("version", type=int)
@json_option
@click.pass_context
def model_alias(ctx: click.Context, name: str, alias: str, version: int, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION (production goes through the gate: see `cove model promote`)."""
    done = client_of(ctx).aliases.move(name, alias, version)
    emit(done, as_json, lambda: click.echo(_said(done)))


@model.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--to", "alias", default="production", show_default=True, type=click.Choice(["production", "staging"]))
@click.option("--score", "scores", multiple=True, help="The candidate's METRIC=VALUE (repeat).")
@click.option("--production-score", "production_scores", multiple=True, help="Production's METRIC=VALUE (repeat).")
@click.option("--slo-met/--slo-missed", default=None, help="Whether the candidate met the gate's SLO at its rate.")
@click.option("--source", default="", help="Where these results come from (an evaluation, a benchmark run).")
@click.option("--override", "override_reason", help="Admins: promote past a refusing gate, for this reason.")
@json_option
@click.pass_context
def model_promote(
    ctx: click.Context,
    name: str,
    version: int,
    alias: str,
    scores: tuple[str, ...],
    production_scores: tuple[str, ...],
    slo_met: bool | None,
    source: str,
    override_reason: str | None,
    as_json: bool,
) -> None:
    """Promote VERSION of model NAME to production if its gate passes; a refusal names each failing check."""
    client = client_of(ctx)
    results: dict[int, dict[str, Any]] = {
        version: {"scores": _scores(scores, "--score"), "slo_met": slo_met, "source": source}
    }
    current = client.models.get(name).aliases.get("production")
    if current is not None and current != version and production_scores:
        results[current] = {"scores": _scores(production_scores, "--production-score"), "source": source}
    done = client.aliases.promote(name, version, to=alias, override_reason=override_reason, results=results)

    def human() -> None:
        for check in done.checks:
            click.echo(f"  {'pass' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")
        click.echo(_said(done))

    emit(done, as_json, human)


@model.command("aliases")
@click.argument("name")
@json_option
@click.pass_context
def model_aliases(ctx: click.Context, name: str, as_json: bool) -> None:
    """Where NAME's aliases point, its gate, and every move (newest first)."""
    client = client_of(ctx)
    found, moves = client.models.get(name), client.aliases.history(name)

    def human() -> None:
        now = ", ".join(f"{a} → v{v}" for a, v in sorted(found.aliases.items())) or "none set"
        click.echo(f"aliases: {now}\ngate: {found.gate.describe()}")
        _failing(found)
        table(
            ["WHEN", "ALIAS", "VERSION", "BY", "NOTE"],
            [
                [
                    f"{m.created_at:%Y-%m-%d %H:%M}",
                    m.alias,
                    m.version,
                    m.actor or "",
                    "rollback" if m.rollback else (f"override: {m.override_reason}" if m.override_reason else ""),
                ]
                for m in moves
            ],
        )

    emit(moves, as_json, human)


def _failing(found: Any) -> None:
    """The gate_failing mark, when production failed its re-evaluation."""
    marked = found.gate_failing
    if marked is None:
        return
    click.echo(
        f"GATE FAILING since {marked.since:%Y-%m-%d %H:%M}: "
        f"production v{marked.version}, evaluation {marked.evaluation}"
    )
    for check in marked.checks:
        click.echo(f"  FAIL  {check['name']}: {check['detail']}")


@model.command("get")
@click.argument("name")
@json_option
@click.pass_context
def model_get(ctx: click.Context, name: str, as_json: bool) -> None:
    """Model NAME: its versions, where its aliases point, its gate, and whether production fails it."""
    found = client_of(ctx).models.get(name)

    def human() -> None:
        click.echo(f"{found.name} (owner {found.owner}){': ' + found.description if found.description else ''}")
        now = ", ".join(f"{a} → v{v}" for a, v in sorted(found.aliases.items())) or "none set"
        click.echo(f"versions: {', '.join(f'v{v.version}' for v in found.versions)}\naliases: {now}")
        click.echo(f"gate: {found.gate.describe()}")
        _failing(found)

    emit(found, as_json, human)


@model.group("gate")
def gate() -> None:
    """What a version must show to become production."""


@gate.command("set")
@click.argument("name")
@click.option("--min", "minimums", multiple=True, help="METRIC=LOWEST acceptable score (repeat).")
@click.option("--max-drop", type=float, help="How much worse than production a metric may be.")
@click.option("--slo", help="The SLO the candidate must meet, e.g. 'p99_e2el_ms<=2000'.")
@click.option("--slo-rate", type=float, help="Requests per second the SLO must hold at.")
@click.option("--eval-set", "eval_set", metavar="DATASET:VERSION", help="Read scores from evaluations on this set.")
@click.option("--split", default="eval", show_default=True, help="The evaluation set's split.")
@click.option("--scorer", "scorers", multiple=True, help="The set's scorers: exact_match, regex=…, json_schema=FILE.")
@click.option("--limit", type=int, help="The set's first N rows only.")
@click.option("--start-missing", is_flag=True, help="A promotion starts the evaluations it lacks.")
@click.option("--every-h", type=float, help="Evaluate production on the set again every N hours.")
@click.option("--webhook", help="POSTed to when production fails its gate (default: COVE_GATE_WEBHOOK_URL).")
@json_option
@click.pass_context
def gate_set(
    ctx: click.Context,
    name: str,
    minimums: tuple[str, ...],
    max_drop: float | None,
    slo: str | None,
    slo_rate: float | None,
    eval_set: str | None,
    split: str,
    scorers: tuple[str, ...],
    limit: int | None,
    start_missing: bool,
    every_h: float | None,
    webhook: str | None,
    as_json: bool,
) -> None:
    """Set NAME's gate (no options: none, so versions promote freely)."""
    from studio.cli.evaluations import scorer_of
    from studio.gate import EvalSet, GateConfig

    evaluation = None
    if eval_set is not None:
        dataset, _, number = eval_set.partition(":")
        if not number.isdigit():
            raise InvalidSpec(f"--eval-set {eval_set!r}: name a dataset version", hint="e.g. --eval-set facts:3")
        specs = [scorer_of(s) for s in scorers] or [{"kind": "exact_match"}]
        evaluation = EvalSet.model_validate(
            {"dataset": dataset, "dataset_version": int(number), "split": split, "scorers": specs, "limit": limit}
        )
    elif start_missing or every_h is not None:
        raise InvalidSpec("--start-missing and --every-h need an evaluation set", hint="add --eval-set DATASET:VERSION")
    config = GateConfig(
        minimums=_scores(minimums, "--min"),
        max_drop=max_drop,
        slo=slo,
        slo_rate=slo_rate,
        evaluation=evaluation,
        start_missing=start_missing,
        every_h=every_h,
        webhook=webhook,
    )
    found = client_of(ctx).aliases.set_gate(name, config)
    emit(found, as_json, lambda: click.echo(f"gate of {name}: {found.gate.describe()}"))


@cli.command("rollback")
@click.argument("name")
@json_option
@click.pass_context
def rollback(ctx: click.Context, name: str, as_json: bool) -> None:
    """Move model NAME's production back to the version it pointed at before."""
    done = client_of(ctx).aliases.rollback(name)
    emit(done, as_json, lambda: click.echo(_said(done)))


@deploy.command("canary")
@click.argument("name")
@click.option("--share", type=click.IntRange(0, 99), required=True, help="Percent of requests; 0 turns it off.")
@json_option
@click.pass_context
def deploy_canary(ctx: click.Context, name: str, share: int, as_json: bool) -> None:
    """Send SHARE percent of NAME's requests to its model's staging version (NAME must follow production)."""
    dep = client_of(ctx).aliases.canary(name, share)
    said = f"{name}: {share}% of requests to {dep.model}@staging ({name}-canary)" if share else f"{name}: canary off"
    emit(dep, as_json, lambda: click.echo(said))
