"""`cove key …` and `cove usage`: who may call the gateway, and what they used."""

from __future__ import annotations

import click

from studio.cli.base import actor_of, cli, db_of, emit, json_option, table

# ------------------------------------------------------------------------------------------------ keys, usage


@cli.group()
def key() -> None:
    """API keys for the gateway."""


@key.command("create")
@click.argument("name")
@json_option
@click.pass_context
def key_create(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create a key; it is printed once and never again."""
    from studio.models import ApiKeyCreate
    from studio.services import keys

    created = keys.create_key(db=db_of(ctx), actor=actor_of(ctx), data=ApiKeyCreate(name=name))
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
    from studio.services import keys

    found = keys.list_keys(db=db_of(ctx), actor=actor_of(ctx))
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "PREFIX", "CREATED", "LAST USED", "STATE"],
            [
                [
                    k.name,
                    k.prefix + "…",
                    f"{k.created_at:%Y-%m-%d %H:%M}",
                    f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
                    "revoked" if k.revoked_at else "active",
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
    """Requests and tokens per API key, deployment and day."""
    from datetime import timedelta

    from studio.db import utcnow
    from studio.services import usage as usage_service

    rows = usage_service.usage_summary(db=db_of(ctx), since=utcnow() - timedelta(days=days))
    emit(
        rows,
        as_json,
        lambda: table(
            ["DAY", "KEY", "DEPLOYMENT", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS"],
            [[r.day, r.key or "-", r.deployment, r.requests, r.prompt_tokens, r.completion_tokens] for r in rows],
        ),
    )
