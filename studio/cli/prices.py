"""`cove price set|list|delete`, `cove budget set|list|delete`, `cove statement`, and the cost tables `cove usage --by`
prints. Money is read as decimal text and kept in micro-units, never as a float."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from datetime import datetime

import click

from studio.cli.base import cli, client_of, emit, json_option, table
from studio.errors import InvalidSpec
from studio.models import BudgetPublic, UsageLine
from studio.prices import MoneyError, parse_money, plain, show_money


def amount(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """A money option checked here (so a typo fails before any request), passed on as the text given."""
    if value is None:
        return None
    try:
        parse_money(value)
    except MoneyError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def percent(ctx: click.Context | None, param: click.Parameter | None, value: str) -> int:
    try:
        number = int(value.strip().rstrip("%"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a percentage (e.g. 80%)") from exc
    if not 1 <= number <= 100:
        raise click.BadParameter("give 1% to 100%")
    return number


@cli.group()
def price() -> None:
    """What a deployment costs: per million input and output tokens, and per replica-hour."""


@price.command("set")
@click.argument("deployment")
@click.option("--input-per-m", callback=amount, metavar="X", help="Per million prompt tokens.")
@click.option("--output-per-m", callback=amount, metavar="Y", help="Per million completion tokens.")
@click.option("--hourly", callback=amount, metavar="Z", help="Per replica-hour of a dedicated deployment.")
@click.option(
    "--hourly-gpu",
    multiple=True,
    metavar="TYPE=Z",
    help="Per replica-hour when its pool's GPU type is TYPE (overrides --hourly; 0 removes it). Repeatable.",
)
@json_option
@click.pass_context
def price_set(
    ctx: click.Context,
    deployment: str,
    input_per_m: str | None,
    output_per_m: str | None,
    hourly: str | None,
    hourly_gpu: tuple[str, ...],
    as_json: bool,
) -> None:
    """Price DEPLOYMENT (an admin); amounts not given keep theirs. Past usage keeps the cost it was served at."""
    if input_per_m is None and output_per_m is None and hourly is None and not hourly_gpu:
        raise InvalidSpec(
            "give --input-per-m, --output-per-m, --hourly or --hourly-gpu",
            hint=f"e.g. cove price set {deployment} --input-per-m 0.15 --output-per-m 0.60",
        )
    per_gpu: dict[str, str] = {}
    for pair in hourly_gpu:
        gpu, sep, value = pair.partition("=")
        if not sep or not gpu.strip():
            raise click.BadParameter(f"{pair!r}: give TYPE=AMOUNT, e.g. H100=2.50", param_hint="--hourly-gpu")
        per_gpu[gpu.strip()] = amount(None, None, value) or "0"
    done = client_of(ctx).prices.set(
        deployment, input_per_m=input_per_m, output_per_m=output_per_m, hourly=hourly, hourly_gpu=per_gpu or None
    )
    emit(
        done,
        as_json,
        lambda: click.echo(
            f"{deployment}: {show_money(done.input_per_m, done.currency, places=6)} per million input tokens, "
            f"{show_money(done.output_per_m, done.currency, places=6)} per million output tokens, "
            f"{show_money(done.hourly, done.currency, places=6)} per replica-hour"
            + (f" ({done.gpu})" if done.gpu else "")
            + "".join(f", {show_money(v, done.currency, places=6)} on {g}" for g, v in done.hourly_gpu.items())
        ),
    )


@price.command("list")
@json_option
@click.pass_context
def price_list(ctx: click.Context, as_json: bool) -> None:
    found = client_of(ctx).prices.list()
    emit(
        found,
        as_json,
        lambda: table(
            ["DEPLOYMENT", "INPUT/1M", "OUTPUT/1M", "HOURLY", "HOURLY BY GPU", "GPU", "CURRENCY"],
            [
                [
                    p.deployment,
                    plain(p.input_per_m),
                    plain(p.output_per_m),
                    plain(p.hourly),
                    " ".join(f"{g}={plain(v)}" for g, v in p.hourly_gpu.items()) or "-",
                    p.gpu or "-",
                    p.currency,
                ]
                for p in found
            ],
        ),
    )


@price.command("delete")
@click.argument("deployment")
@click.pass_context
def price_delete(ctx: click.Context, deployment: str) -> None:
    client_of(ctx).prices.delete(deployment)
    click.echo(f"price of {deployment} deleted: it is free from the gateways' next refresh")


# ------------------------------------------------------------------------------------------------ budgets


def one_of(user: str | None, group: str | None, example: str) -> tuple[str, str]:
    if (user is None) == (group is None):
        raise InvalidSpec("name exactly one of --user or --group", hint=example)
    return ("user", user) if user is not None else ("group", group or "")


def shown_budget(b: BudgetPublic, value: int) -> str:
    return f"{value} tokens" if b.unit.value == "tokens" else show_money(value, b.currency)


@cli.group()
def budget() -> None:
    """Monthly budgets of tokens or money per user and group: a warning past a threshold, a hard stop at 100%."""


@budget.command("set")
@click.option("--user", metavar="USER")
@click.option("--group", metavar="GROUP")
@click.option("--tokens", type=click.IntRange(min=1), metavar="N", help="At most N tokens a month.")
@click.option("--money", callback=amount, metavar="X", help="At most X (the studio's currency) a month.")
@click.option("--warn-at", default="80%", show_default=True, callback=percent, help="Warn past this share.")
@json_option
@click.pass_context
def budget_set(
    ctx: click.Context,
    user: str | None,
    group: str | None,
    tokens: int | None,
    money: str | None,
    warn_at: int,
    as_json: bool,
) -> None:
    """Give a user or a group a monthly budget (an admin); the gateways refuse their requests once it is spent."""
    scope, subject = one_of(user, group, "e.g. cove budget set --group lab --money 100 --warn-at 80%")
    if (tokens is None) == (money is None):
        raise InvalidSpec("give --tokens or --money", hint="e.g. cove budget set --user ada --tokens 1000000")
    done = client_of(ctx).budgets.set(scope, subject, tokens=tokens, money=money, warn_at=warn_at)
    emit(
        done,
        as_json,
        lambda: click.echo(
            f"{scope} {subject}: {shown_budget(done, done.amount)} a month, warning at {done.warn_at}%; "
            f"{shown_budget(done, done.spent)} spent this month"
        ),
    )


@budget.command("list")
@json_option
@click.pass_context
def budget_list(ctx: click.Context, as_json: bool) -> None:
    found = client_of(ctx).budgets.list()
    emit(
        found,
        as_json,
        lambda: table(
            ["SCOPE", "SUBJECT", "BUDGET", "SPENT", "WARN AT", "STANDING"],
            [
                [
                    b.scope.value,
                    b.subject,
                    shown_budget(b, b.amount),
                    shown_budget(b, b.spent),
                    f"{b.warn_at}%",
                    b.standing,
                ]
                for b in found
            ],
        ),
    )


@budget.command("delete")
@click.option("--user", metavar="USER")
@click.option("--group", metavar="GROUP")
@click.pass_context
def budget_delete(ctx: click.Context, user: str | None, group: str | None) -> None:
    scope, subject = one_of(user, group, "e.g. cove budget delete --user ada")
    client_of(ctx).budgets.delete(scope, subject)
    click.echo(f"budget of {scope} {subject} deleted")


# ------------------------------------------------------------------------------------------------ bills


def print_lines(lines: Sequence[UsageLine], *, as_csv: bool) -> None:
    """Usage lines as a table, or as CSV (cost exact, in the currency's units) for spreadsheets."""
    headers = [
        lines[0].by.upper() if lines else "NAME",
        "REQUESTS",
        "PROMPT TOKENS",
        "COMPLETION TOKENS",
        "COST",
        "CURRENCY",
    ]
    rows = [
        [x.name or "-", x.requests, x.prompt_tokens, x.completion_tokens, plain(x.cost_micros), x.currency]
        for x in lines
    ]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([h.lower().replace(" ", "_") for h in headers])
        writer.writerows(rows)
    else:
        table(
            headers,
            [
                [*r[:4], show_money(x.cost_micros, x.currency)[: -len(x.currency) - 1], r[5]]
                for r, x in zip(rows, lines, strict=True)
            ],
        )


def usage_by(
    ctx: click.Context, by: str, since: datetime | None, until: datetime | None, as_csv: bool, as_json: bool
) -> None:
    lines = client_of(ctx).usage.by(by, since=since, until=until)
    emit(lines, as_json, lambda: print_lines(lines, as_csv=as_csv))


@cli.command()
@click.option("--user", metavar="USER")
@click.option("--group", metavar="GROUP")
@click.option("--month", metavar="YYYY-MM", help="Default: this month.")
@json_option
@click.pass_context
def statement(ctx: click.Context, user: str | None, group: str | None, month: str | None, as_json: bool) -> None:
    """A month's bill for a user or group: a line per deployment, and the total."""
    scope, subject = one_of(user, group, "e.g. cove statement --group lab --month 2026-11")
    found = client_of(ctx).usage.statement(scope, subject, month=month)

    def human() -> None:
        click.echo(f"{scope} {subject}, {found.month}")
        print_lines(found.lines, as_csv=False)
        if found.instances:
            table(
                ["DEPLOYMENT", "GPU", "INSTANCE HOURS", "HOURLY", "COST"],
                [
                    [x.deployment, x.gpu or "-", f"{x.replica_hours:.4f}", plain(x.hourly_micros), plain(x.cost_micros)]
                    for x in found.instances
                ],
            )
        click.echo(
            f"total: {found.requests} requests, {found.prompt_tokens} prompt and {found.completion_tokens} completion "
            f"tokens, {show_money(found.cost_micros, found.currency)}"
        )

    emit(found, as_json, human)
