"""`cove key …`, `cove token …` and `cove usage`: who may call the gateway and the API, and what they used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from studio.cli.base import cli, client_of, emit, json_option, table
from studio.errors import InvalidSpec

if TYPE_CHECKING:
    from studio.models import ApiKeyCreated

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


scope_option = click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help="What it may do through the Cove API (repeat for several): '*', or NOUN:read / NOUN:write, e.g. "
    "deployments:write. With a scope the key is also a personal access token.",
)
expires_option = click.option(
    "--expires", metavar="WHEN", help="When it stops working: 30d, 12h, or a date (2027-01-31)."
)


def _create(
    ctx: click.Context, name: str, deployments: tuple[str, ...], scopes: tuple[str, ...], expires: str | None
) -> ApiKeyCreated:
    """A new key of the caller's, built here first (a bad field is named before anything is sent)."""
    from studio.db import utcnow
    from studio.models import ApiKeyCreate

    data = ApiKeyCreate(
        name=name,
        deployments=_names(deployments),
        scopes=sorted(set(scopes)) if scopes else None,
        expires_at=expiry(expires, utcnow()),
    )
    return client_of(ctx).keys.create(data.name, **data.model_dump(mode="json", exclude_unset=True, exclude={"name"}))


def _names(names: tuple[str, ...]) -> list[str] | None:
    cleaned = sorted({n.strip() for n in names if n.strip()})
    return cleaned or None


@key.command("create")
@click.argument("name")
@click.option(
    "--deployment",
    "deployments",
    multiple=True,
    metavar="NAME",
    help="Limit the key to this deployment (repeat for several). Default: any its owner may use.",
)
@scope_option
@expires_option
@click.option("--rpm", type=click.IntRange(min=1), metavar="N", help="At most N requests a minute with this key.")
@click.option("--tpm", type=click.IntRange(min=1), metavar="N", help="At most N tokens a minute with this key.")
@click.option("--concurrency", type=click.IntRange(min=1), metavar="N", help="At most N requests at once.")
@json_option
@click.pass_context
def key_create(
    ctx: click.Context,
    name: str,
    deployments: tuple[str, ...],
    scopes: tuple[str, ...],
    expires: str | None,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Create a key of yours; it is printed once and never again. --rpm, --tpm and --concurrency limit it (see
    `cove limit`)."""
    created = _create(ctx, name, deployments, scopes, expires)
    values = {k: v for k, v in {"rpm": rpm, "tpm": tpm, "concurrency": concurrency}.items() if v is not None}
    if values:
        client_of(ctx).limits.set("key", name, **values)
    kind = "token" if created.scopes is not None else "API key"
    emit(
        created,
        as_json,
        lambda: click.echo(
            f"{created.key}\n({kind} {name}: store it now; Cove keeps only a hash and cannot show it again)"
        ),
    )


@key.command("list")
@json_option
@click.pass_context
def key_list(ctx: click.Context, as_json: bool) -> None:
    from studio.db import utcnow
    from studio.ui.tables import key_state

    found, now = list(client_of(ctx).keys.list()), utcnow()
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
    client_of(ctx).keys.revoke(name)
    click.echo(f"API key {name} revoked")


@cli.group()
def token() -> None:
    """Personal access tokens for the Cove API (keys with scopes; `cove key` lists and revokes them too)."""


@token.command("create")
@click.argument("name")
@scope_option
@expires_option
@json_option
@click.pass_context
def token_create(ctx: click.Context, name: str, scopes: tuple[str, ...], expires: str | None, as_json: bool) -> None:
    """A token for scripts and notebooks (COVE_TOKEN): printed once and never again."""
    if not scopes:
        raise InvalidSpec("a token needs at least one --scope", hint="e.g. --scope deployments:write, or --scope '*'")
    created = _create(ctx, name, (), scopes, expires)
    emit(
        created,
        as_json,
        lambda: click.echo(
            f"{created.key}\n(token {name}, scopes {' '.join(created.scopes or [])}: store it now; "
            "Cove keeps only a hash and cannot show it again)"
        ),
    )


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Your tokens (an admin: everyone's) and their scopes."""
    from studio.db import utcnow
    from studio.ui.tables import key_state

    found, now = [k for k in client_of(ctx).keys.list() if k.scopes is not None], utcnow()
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "OWNER", "PREFIX", "SCOPES", "LAST USED", "STATE"],
            [
                [
                    k.name,
                    k.owner,
                    k.prefix + "…",
                    " ".join(k.scopes or []) or "-",
                    f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
                    key_state(k, now),
                ]
                for k in found
            ],
        ),
    )


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    client_of(ctx).keys.revoke(name)
    click.echo(f"token {name} revoked")


@cli.command()
@click.option("--days", default=7, show_default=True, help="How many days back (without --by).")
@click.option(
    "--by", type=click.Choice(["user", "group", "deployment", "key"]), help="Sum requests, tokens and cost per this."
)
@click.option("--since", type=click.DateTime(), help="With --by: from then (UTC; default: the month's start).")
@click.option("--until", type=click.DateTime(), help="With --by: before then (UTC; default: now).")
@click.option("--csv", "as_csv", is_flag=True, help="With --by: as CSV.")
@json_option
@click.pass_context
def usage(
    ctx: click.Context,
    days: int,
    by: str | None,
    since: datetime | None,
    until: datetime | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """Requests, tokens and cost per API key, deployment and day (a member's: their keys'); errors and cancels
    apart. With --by: summed per user, group, deployment or key over a period."""
    from studio.cli.prices import usage_by
    from studio.db import utcnow
    from studio.prices import money

    if by is not None:
        aware = [t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t for t in (since, until)]
        usage_by(ctx, by, aware[0], aware[1], as_csv, as_json)
        return
    rows = list(client_of(ctx).usage.summary(since=utcnow() - timedelta(days=days)))
    emit(
        rows,
        as_json,
        lambda: table(
            [
                "DAY",
                "KEY",
                "DEPLOYMENT",
                "REQUESTS",
                "SERVED",
                "CANCELLED",
                "ERRORS",
                "PROMPT TOKENS",
                "COMPLETION TOKENS",
                "COST",
            ],
            [
                [
                    r.day,
                    r.key or "-",
                    r.deployment,
                    r.requests,
                    r.served,
                    r.cancelled,
                    r.errors,
                    r.prompt_tokens,
                    r.completion_tokens,
                    str(money(r.cost_micros)),
                ]
                for r in rows
            ],
        ),
    )
