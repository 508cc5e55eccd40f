"""`cove key …` and `cove usage`: who may call the gateway, and what they used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from studio.cli.base import actor_of, cli, client_of, db_of, emit, json_option, table
from studio.errors import InvalidSpec

# ------------------------------------------------------------------------------------------------ keys, usage


@cli.group()
def key() -> None:
    """API keys for the gateway."""


def expiry(text: str | None, now: datetime) -> datetime | None:
    """``30d``, ``12h``, ``90m`` from ``now``, or a date (``2027-01-31``, UTC midnight); None for None."""
    if text is None:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    number, unit = text[:-1], text[-1:]
    if unit in units and number.isdigit() and int(number) > 0:
        return now + timedelta(**{units[unit]: int(number)})
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidSpec(
            f"--expires {text!r} is neither a duration nor a date", hint="e.g. 30d, 12h, or 2027-01-31"
        ) from exc


@key.command("create")
@click.argument("name")
@click.option(
    "--deployment",
    "deployments",
    multiple=True,
    metavar="NAME",
    help="Limit the key to this deployment (repeat for several). Default: any its owner may use.",
)
@click.option("--expires", metavar="WHEN", help="When it stops working: 30d, 12h, or a date (2027-01-31).")
@json_option
@click.pass_context
def key_create(ctx: click.Context, name: str, deployments: tuple[str, ...], expires: str | None, as_json: bool) -> None:
    """Create a key of yours; it is printed once and never again."""
    from studio.db import utcnow
    from studio.models import ApiKeyCreate
    from studio.services import keys

    data = ApiKeyCreate(name=name, deployments=keys.scope_names(deployments), expires_at=expiry(expires, utcnow()))
    created = keys.create_key(db=db_of(ctx), actor=actor_of(ctx), data=data)
    emit(
        created,
        as_json,
        lambda: click.echo(
            f"{created.key}\n(API key {name}: store it now; Cove keeps only a hash and cannot show it again)"
        ),
    )


@key.command("list")
@json_option
@click.pass_context
def key_list(ctx: click.Context, as_json: bool) -> None:
    from studio.db import utcnow
    from studio.services import keys
    from studio.ui.tables import key_state

    found, now = keys.list_keys(db=db_of(ctx), actor=actor_of(ctx)), utcnow()
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "OWNER", "PREFIX", "MAY CALL", "CREATED", "LAST USED", "STATE"],
            [
                [
                    k.name,
                    k.owner,
                    k.prefix + "…",
                    ",".join(k.deployments) if k.deployments else "*",
                    f"{k.created_at:%Y-%m-%d %H:%M}",
                    f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
                    key_state(k, now),
                ]
                for k in found
            ],
        ),
    )


@key.command("revoke")
@click.argument("name")
@click.pass_context
def key_revoke(ctx: click.Context, name: str) -> None:
    from studio.services import keys

    keys.revoke_key(db=db_of(ctx), actor=actor_of(ctx), name=name)
    click.echo(f"API key {name} revoked")


@cli.command()
@click.option("--days", default=7, show_default=True, help="How many days back.")
@json_option
@click.pass_context
def usage(ctx: click.Context, days: int, as_json: bool) -> None:
    """Requests and tokens per API key, deployment and day (a member's: their keys')."""
    from studio.db import utcnow

    rows = list(client_of(ctx).usage.summary(since=utcnow() - timedelta(days=days)))
    emit(
        rows,
        as_json,
        lambda: table(
            ["DAY", "KEY", "DEPLOYMENT", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS"],
            [[r.day, r.key or "-", r.deployment, r.requests, r.prompt_tokens, r.completion_tokens] for r in rows],
        ),
    )
