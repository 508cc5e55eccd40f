"""The `cove` group and what every command shares: settings, the database, human or JSON output, errors."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel, ValidationError

from studio.db import Database

if TYPE_CHECKING:
    from cove.client import Client
from studio.errors import CoveError, InvalidSpec, explain
from studio.settings import Settings
from studio.values import Principal


class CoveGroup(click.Group):
    """Turns Cove's errors into a message and a hint on stderr, and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoveError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  next: {exc.hint}", err=True)
            ctx.exit(1)
        except ValidationError as exc:
            click.secho(f"error: {explain(exc)}", fg="red", err=True)
            ctx.exit(2)


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.find_root().obj["settings"]
    return settings


def db_of(ctx: click.Context) -> Database:
    root = ctx.find_root().obj
    if "db" not in root:
        from studio.bootstrap import open_studio

        root["db"] = open_studio(root["settings"])
        ctx.find_root().call_on_close(root["db"].dispose)
    return root["db"]


def actor_of(ctx: click.Context) -> Principal:
    """Who a command acts as: ``--as NAME`` (or COVE_USER), else the first admin. The CLI runs where the database
    and the studio's key are, so whoever runs it is trusted as an admin; ``--as`` acts as someone else, seeing and
    changing only what they may."""
    root = ctx.find_root().obj
    if "actor" not in root:
        from studio.services import users

        db = db_of(ctx)
        name = root["settings"].user
        root["actor"] = users.principal(db=db, name=name) if name else users.first_admin(db=db)
    actor: Principal = root["actor"]
    return actor


def remote(ctx: click.Context) -> bool:
    """Whether commands go to a Cove elsewhere: COVE_API_URL is set, or `cove login` saved one on this machine."""
    root = ctx.find_root().obj
    if "remote" not in root:
        from cove import login

        root["remote"] = bool(os.environ.get("COVE_API_URL")) or login.load() is not None
    answer: bool = root["remote"]
    return answer


def client_of(ctx: click.Context) -> Client:
    """The Cove API for a command: the Cove logged in to (`cove login`, or COVE_API_URL with a token), as the
    token's owner; else this machine's own, in process, as ``actor_of`` (``--as``, COVE_USER, the first admin)."""
    root = ctx.find_root().obj
    if "client" not in root:
        from cove.client import Client

        if remote(ctx):
            if root["settings"].user:
                raise InvalidSpec(
                    "--as (COVE_USER) acts as someone else on this machine's Cove only",
                    hint="a remote Cove acts as the logged-in token's owner: log in as them instead",
                )
            client = Client()
        else:
            from studio.api.app import build_api
            from studio.api.auth import trusting

            settings = settings_of(ctx)
            client = Client.in_process(build_api(settings=settings, db=db_of(ctx), identify=trusting(actor_of(ctx))))
        root["client"] = client
        ctx.find_root().call_on_close(client.close)
    found: Client = root["client"]
    return found


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:

        def plain(x: Any) -> Any:
            return x.model_dump(mode="json") if isinstance(x, BaseModel) else x

        payload = [plain(x) for x in data] if isinstance(data, list) else plain(data)
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        human()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if i == 0 else line)
    if not rows:
        click.echo("(none)")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def server_running(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(settings.gateway_url + "/healthz", timeout=1):
            return True
    except (urllib.error.URLError, OSError):
        return False


@click.group(cls=CoveGroup)
@click.version_option(package_name="cove")
@click.option(
    "--as",
    "as_user",
    metavar="USER",
    default=None,
    help="Act as this user (seeing and changing only what they may). Default: COVE_USER, else the first admin.",
)
@click.pass_context
def cli(ctx: click.Context, as_user: str | None) -> None:
    """Cove: a self-hosted AI studio. State lives in COVE_HOME (default ~/.cove)."""
    try:
        settings = Settings()
        if as_user is not None:
            settings = settings.model_copy(update={"user": as_user})
    except ValidationError as exc:
        raise InvalidSpec(f"bad COVE_* setting: {explain(exc)}", hint="fix the environment variable") from exc
    ctx.obj = {"settings": settings}
    logging.basicConfig(
        level=settings.log_level.upper() if ctx.invoked_subcommand in ("server", "up") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
