"""`cove limit set|list|delete`: requests and tokens per minute, and requests at once, on a key, a user, a group or a
deployment (`cove key create NAME --rpm N --tpm N` limits a new key at once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, table
from studio.errors import InvalidSpec

SCOPES = ("key", "user", "group", "deployment")


def subject_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for scope in reversed(SCOPES):
        command = click.option(f"--{scope}", metavar=scope.upper(), help=f"Limit this {scope}.")(command)
    return command


def value_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for name, what in (
        ("concurrency", "requests at once"),
        ("tpm", "tokens per minute (prompt and answer)"),
        ("rpm", "requests per minute"),
    ):
        command = click.option(
            f"--{name}", type=click.IntRange(min=0), metavar="N", help=f"At most N {what}; 0 removes this part."
        )(command)
    return command


def one_subject(given: dict[str, str | None]) -> tuple[str, str]:
    chosen = [(scope, subject) for scope, subject in given.items() if subject]
    if len(chosen) != 1:
        raise InvalidSpec(
            "name exactly one of --key, --user, --group or --deployment",
            hint="e.g. cove limit set --key my-app --rpm 60",
        )
    return chosen[0]


def values_of(rpm: int | None, tpm: int | None, concurrency: int | None) -> dict[str, int | None]:
    """The values given, 0 sent as null (remove); those not given are left out (kept)."""
    given = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency}
    return {name: value or None for name, value in given.items() if value is not None}


def shown(value: int | None) -> str:
    return "-" if value is None else str(value)


@cli.group()
def limit() -> None:
    """Rate limits: a request counts against its key's, its owner's, the owner's groups' and its deployment's."""


@limit.command("set")
@subject_options
@value_options
@json_option
@click.pass_context
def limit_set(
    ctx: click.Context,
    key: str | None,
    user: str | None,
    group: str | None,
    deployment: str | None,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Set a limit (the values given; the others keep theirs). An admin limits users, groups and deployments; a
    key's owner limits that key."""
    scope, subject = one_subject({"key": key, "user": user, "group": group, "deployment": deployment})
    values = values_of(rpm, tpm, concurrency)
    if not values:
        raise InvalidSpec(
            "give --rpm, --tpm or --concurrency", hint=f"e.g. cove limit set --{scope} {subject} --rpm 60"
        )
    done = client_of(ctx).limits.set(scope, subject, **values)
    emit(
        done,
        as_json,
        lambda: click.echo(
            f"{scope} {subject}: {shown(done.rpm)} requests/min, {shown(done.tpm)} tokens/min, "
            f"{shown(done.concurrency)} at once"
        ),
    )


@limit.command("list")
@json_option
@click.pass_context
def limit_list(ctx: click.Context, as_json: bool) -> None:
    found = list(client_of(ctx).limits.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["SCOPE", "SUBJECT", "RPM", "TPM", "CONCURRENCY", "SET BY"],
            [[x.scope.value, x.subject, shown(x.rpm), shown(x.tpm), shown(x.concurrency), x.set_by] for x in found],
        ),
    )


@limit.command("delete")
@subject_options
@click.pass_context
def limit_delete(
    ctx: click.Context, key: str | None, user: str | None, group: str | None, deployment: str | None
) -> None:
    scope, subject = one_subject({"key": key, "user": user, "group": group, "deployment": deployment})
    client_of(ctx).limits.delete(scope, subject)
    click.echo(f"limit on {scope} {subject} deleted")
