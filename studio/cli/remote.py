"""`cove login`, `cove logout`, `cove whoami`: which Cove the other commands talk to, and as whom.

After `cove login URL` every command goes to that Cove's API with the saved token (``cove.login``: a file only its
owner may read, holding the token and never a password). Without a login (and no COVE_API_URL) commands act on this
machine's Cove in process, as before.
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

import click

from studio.cli.base import cli, client_of, emit, json_option, remote, settings_of
from studio.errors import BackendUnavailable, Forbidden, InvalidSpec, NotFound, Unauthorized

if TYPE_CHECKING:
    from cove.client import Client


def _url(text: str) -> str:
    url = text.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InvalidSpec(f"{text!r} is not a URL", hint="give the Cove's address, e.g. https://cove.example.com")
    return url.removesuffix("/api/v1")


def _password(user: str, from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidSpec("no password on standard input", hint='e.g. `echo "$PASSWORD" | cove login …`')
        return password
    typed: str = click.prompt(f"{user}'s password", hide_input=True)
    return typed


@cli.command()
@click.argument("url")
@click.option("--token", help="A token made in the studio or with `cove token create` (instead of a password).")
@click.option("--user", "user", metavar="NAME", help="Log in with this user's password (asked, not echoed).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
@click.option(
    "--expires-days", default=30, show_default=True, type=click.IntRange(1, 366), help="With --user: the token's life."
)
@click.pass_context
def login(
    ctx: click.Context, url: str, token: str | None, user: str | None, password_stdin: bool, expires_days: int
) -> None:
    """Log in to the Cove at URL: later commands on this machine go there, as you.

    With --user your password is exchanged for a token of yours (named cli-USER-HOST-…, shown in `cove token
    list`), which is saved; the password is not. With --token the token is checked and saved."""
    from cove import login as saved
    from cove.client import Client
    from studio.api.keys import token_name
    from studio.services.keys import KEY_PREFIX

    url = _url(url)
    if (token is None) == (user is None):
        raise InvalidSpec("give --token TOKEN or --user NAME", hint=f"e.g. `cove login {url} --user ana`")
    if token is not None:
        client = Client(url, token)
        try:
            me = client.whoami()
        finally:
            client.close()
        # a Cove token's name, to revoke it at logout (a hub token is the hub's to end)
        name, token_name_ = str(me["name"]), str(me["token"]) if token.startswith(KEY_PREFIX) else ""
    else:
        assert user is not None
        password = _password(user, password_stdin)
        client, created = Client.log_in(
            url, user, password, token_name=token_name(user, socket.gethostname()), expires_days=expires_days
        )
        client.close()
        name, token, token_name_ = created.owner, created.key, created.name
    path = saved.save(saved.Login(url=url, token=token, user=name, token_name=token_name_))
    click.echo(f"logged in to {url} as {name} (token {token_name_ or 'from the hub'}); saved in {path}")


@cli.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Forget the login on this machine, and revoke its token on the Cove (when it answers)."""
    from cove import login as saved
    from cove.client import Client

    found = saved.load()
    if found is None:
        click.echo("not logged in: commands act on this machine's Cove")
        return
    if found.token_name:
        try:
            with Client(found.url, found.token) as client:
                client.keys.revoke(found.token_name)
        except (Unauthorized, NotFound):
            pass  # expired, revoked or removed already: nothing left to revoke
        except (BackendUnavailable, Forbidden) as exc:
            click.echo(
                f"note: token {found.token_name} was not revoked ({exc.message}); revoke it in the studio, or it "
                "works until it expires",
                err=True,
            )
    saved.forget()
    click.echo(f"logged out of {found.url}")


@cli.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who the commands act as, and where: the Cove logged in to, or this machine's."""
    client: Client = client_of(ctx)
    me = client.whoami()
    where = client.url if remote(ctx) else f"this machine's Cove ({settings_of(ctx).home})"
    scopes = " ".join(me["scopes"]) if me.get("scopes") is not None else "all they may do"
    emit(
        {**me, "url": client.url if remote(ctx) else None},
        as_json,
        lambda: click.echo(f"{me['name']} ({me['role']}) at {where}, with token {me['token']}: {scopes}"),
    )
