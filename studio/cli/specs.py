"""`cove apply`, `cove diff`, `cove get`, `cove delete`: declarative specs (docs/specs.md), through the API (a
remote Cove after `cove login`, else this machine's in process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from studio import specs
from studio.cli.base import cli, client_of
from studio.errors import CoveError, InvalidSpec
from studio.specs import AnyDocument, ModelDocument, Result

SUFFIXES = (".yaml", ".yml")
path_option = click.option(
    "-f",
    "--filename",
    "paths",
    required=True,
    multiple=True,
    metavar="PATH",
    help="A YAML file, or a folder of *.yaml/*.yml files ('-' reads standard input). May be given again.",
)


def _files(path: str) -> list[tuple[str, str]]:
    """(where, text) of each file ``path`` names: the file, a folder's YAML files by name, or standard input."""
    if path == "-":
        return [("<stdin>", sys.stdin.read())]
    found = Path(path)
    if found.is_dir():
        files = sorted(p for p in found.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise InvalidSpec(f"{path}: no *.yaml or *.yml files in this folder")
        return [(str(p), p.read_text()) for p in files]
    if not found.is_file():
        raise InvalidSpec(f"{path}: no such file or folder")
    return [(path, found.read_text())]


def _anchored(doc: AnyDocument, folder: Path) -> AnyDocument:
    """A model's relative folder source (``./weights``) is relative to its spec file, as a reader expects."""
    if isinstance(doc, ModelDocument) and doc.spec.source and doc.spec.source.startswith(("./", "../")):
        absolute = str((folder / doc.spec.source).resolve())
        return doc.model_copy(update={"spec": doc.spec.model_copy(update={"source": absolute})})
    return doc


def read_documents(paths: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every document the paths hold, checked here first, so invalid fields are named by file and document."""
    docs: list[AnyDocument] = []
    problems: list[CoveError] = []
    for path in paths:
        for where, text in _files(path):
            try:
                parsed = specs.parse(text, where=where)
            except InvalidSpec as exc:
                problems.append(exc)
                continue
            folder = Path(where).parent if where != "<stdin>" else Path.cwd()
            docs += [_anchored(d, folder) for d in parsed]
    if problems:
        fields = [f for p in problems for f in p.fields]
        lines = [line for p in problems for line in (p.message.splitlines()[1:] if p.fields else [p.message])]
        raise InvalidSpec(
            f"{len(lines)} problem{'s' if len(lines) != 1 else ''}; nothing was applied:\n" + "\n".join(lines),
            hint=problems[0].hint,
            fields=fields,
        )
    if not docs:
        raise InvalidSpec(f"no documents in {', '.join(paths)}", hint="see docs/specs.md for what one looks like")
    return [specs.dump(d) for d in docs]


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def show(results: list[Result], *, dry_run: bool = False) -> None:
    """A line per document, a line per change (``+`` new, ``~`` changed), then a summary."""
    for r in results:
        colour = {"created": "green", "updated": "yellow", "deleted": "red", "refused": "red"}.get(r.action)
        line = f"{r.kind.value} {r.name}: " + click.style(r.action, fg=colour)
        click.echo(line + (f" ({r.message})" if r.message else ""))
        for c in r.changes:
            if r.action == "created":
                click.echo(f"  + {c.path}: {_value(c.after)}")
            else:
                click.echo(f"  ~ {c.path}: {_value(c.before)} → {_value(c.after)}")
        if r.secret:
            click.echo(f"  key (shown this once): {r.secret}")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    summary = ", ".join(f"{n} {action}" for action, n in counts.items()) or "nothing"
    click.echo(summary + (" (dry run: nothing was changed)" if dry_run else ""))


@cli.command("apply")
@path_option
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
@click.pass_context
def apply_command(ctx: click.Context, paths: tuple[str, ...], dry_run: bool) -> None:
    """Make the objects that spec documents describe so: create what is missing, update what may change
    (replicas, autoscale, a model's description and recommendations, a pool's settings). Pools, images, models,
    keys, then deployments."""
    show(client_of(ctx).specs.apply(read_documents(paths), dry_run=dry_run), dry_run=dry_run)


@cli.command("diff")
@path_option
@click.pass_context
def diff_command(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """What `cove apply` would change. Exit 0: nothing; 1: something would change; 2: the documents cannot be
    applied (as `kubectl diff`)."""
    try:
        results = client_of(ctx).specs.apply(read_documents(paths), dry_run=True)
    except CoveError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  next: {exc.hint}", err=True)
        ctx.exit(2)
    changing = [r for r in results if r.action != "unchanged"]
    for r in changing:
        click.echo(f"{r.kind.value} {r.name}: would be {r.action}")
        for c in r.changes:
            sign = "+" if r.action == "created" else "~"
            shown = _value(c.after) if r.action == "created" else f"{_value(c.before)} → {_value(c.after)}"
            click.echo(f"  {sign} {c.path}: {shown}")
    if not changing:
        click.echo("no changes")
    ctx.exit(1 if changing else 0)


@cli.command("get")
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.pass_context
def get_command(ctx: click.Context, kind: str, name: str | None, output: str) -> None:
    """Objects as spec documents: KIND is pool, model, deployment, image or key; NAME one of them (an image:
    NAME or NAME:VERSION), else every one. Applying what it prints changes nothing."""
    client = client_of(ctx)
    docs = [client.specs.get(kind, name)] if name else client.specs.list(kind)
    if output == "json":
        click.echo(json.dumps(docs[0] if name else docs, indent=2))
    else:
        click.echo(yaml.safe_dump_all(docs, sort_keys=False, width=120).rstrip("\n"))


@cli.command("delete")
@path_option
@click.pass_context
def delete_command(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """Remove the objects spec documents name, dependents first (deployments, keys, models; images stay)."""
    results = client_of(ctx).specs.delete(read_documents(paths))
    show(results)
    if any(r.action == "refused" for r in results):
        ctx.exit(1)
