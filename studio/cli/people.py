"""`cove user …` and `cove audit`: who may log in, as what, and what people did."""

from __future__ import annotations

import secrets
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, table


@cli.group()
def user() -> None:
    """People who log in to the studio, the playground and the hub (admins manage them)."""


def _groups(text: str | None) -> list[str] | None:
    return None if text is None else [g.strip() for g in text.split(",") if g.strip()]


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin: pools, images with local commands, clusters, users.")
@click.option("--groups", metavar="G1,G2", help="Groups (they decide which pools the user may use).")
@click.option("--password", help="Their password (at least 8 characters). Default: one is generated and printed.")
@json_option
@click.pass_context
def user_add(
    ctx: click.Context, name: str, admin: bool, groups: str | None, password: str | None, as_json: bool
) -> None:
    """Add a user; their password is printed once when generated."""
    from studio.models import UserCreate
    from studio.values import Role

    generated = password is None
    password = password or secrets.token_urlsafe(12)
    data = UserCreate(  # checked here first, so a mistake is named before anything is sent
        name=name, role=Role.ADMIN if admin else Role.MEMBER, groups=_groups(groups) or [], password=password
    )
    added = client_of(ctx).users.add(**data.model_dump(mode="json"))
    shown = {**added.model_dump(mode="json"), "password": password} if generated else added
    emit(
        shown,
        as_json,
        lambda: click.echo(
            f"user {name} added as {data.role.value}"
            + (f"; password: {password}  (shown once; `cove user passwd {name}` sets another)" if generated else "")
        ),
    )


@user.command("list")
@json_option
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    found = list(client_of(ctx).users.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "ROLE", "GROUPS", "STATE", "LAST LOGIN"],
            [
                [
                    u.name,
                    u.role.value,
                    ",".join(u.groups) or "-",
                    "disabled" if u.disabled else ("active" if u.has_password else "no password"),
                    f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never",
                ]
                for u in found
            ],
        ),
    )


@user.command("set")
@click.argument("name")
@click.option("--admin/--member", "admin", default=None, help="Make them an admin, or a member.")
@click.option("--groups", metavar="G1,G2", help="Replace their groups ('' for none).")
@click.option("--disable/--enable", "disable", default=None, help="Stop them logging in (their keys stop too).")
@click.pass_context
def user_set(ctx: click.Context, name: str, admin: bool | None, groups: str | None, disable: bool | None) -> None:
    """Change a user's role, groups, or whether they may log in."""
    from studio.values import Role

    wanted = {
        "role": None if admin is None else (Role.ADMIN if admin else Role.MEMBER),
        "groups": _groups(groups),
        "disabled": disable,
    }
    changes: dict[str, Any] = {k: v for k, v in wanted.items() if v is not None}
    client = client_of(ctx)
    changed = client.users.update(name, **changes) if changes else client.users.get(name)
    state = "disabled" if changed.disabled else "enabled"
    click.echo(f"user {name}: {changed.role.value}, groups {','.join(changed.groups) or '-'}, {state}")


@user.command("passwd")
@click.argument("name")
@click.option("--password", help="The new password. Default: asked for (hidden), or generated with --generate.")
@click.option("--generate", is_flag=True, help="Generate one and print it once.")
@click.pass_context
def user_passwd(ctx: click.Context, name: str, password: str | None, generate: bool) -> None:
    """Set a user's password (admins: anyone's; members: their own)."""
    if generate:
        password = secrets.token_urlsafe(12)
    elif password is None:
        password = click.prompt("new password", hide_input=True, confirmation_prompt=True)
    client_of(ctx).users.set_password(name, password or "")
    click.echo(f"password of {name} set" + (f": {password}  (shown once)" if generate else ""))


@user.command("remove")
@click.argument("name")
@click.pass_context
def user_remove(ctx: click.Context, name: str) -> None:
    """Remove a user: what they own becomes yours, their API keys are revoked."""
    client = client_of(ctx)
    client.users.remove(name)
    me = client.whoami()["name"]
    click.echo(f"user {name} removed; what they owned is now {me}'s, their keys are revoked")


@cli.command()
@click.option("--user", "who", metavar="NAME", help="Only what this user did (admins).")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@click.pass_context
def audit(ctx: click.Context, who: str | None, limit: int, as_json: bool) -> None:
    """Who created, changed, deleted or revoked what, and when (a member sees their own)."""
    from itertools import islice

    found = list(islice(client_of(ctx).events.audit(actor=who), max(limit, 0)))
    emit(
        found,
        as_json,
        lambda: table(
            ["TIME", "WHO", "WHAT", "NAME", "DID", "DETAIL"],
            [[f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.actor, e.kind, e.name, e.reason, e.message] for e in found],
        ),
    )
