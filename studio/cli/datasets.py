"""`cove dataset …`: chat datasets — add, list, show, preview (what is trained on), token lengths, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, remote, table
from studio.errors import InvalidSpec
from studio.models import DatasetLengths, DatasetPreview, DatasetPublic, DatasetVersionPublic
from studio.modelstore import human_size
from studio.tokens import bars


def _ref(text: str, what: str = "dataset") -> tuple[str, int | None]:
    """NAME or NAME:VERSION."""
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise InvalidSpec(f"{text!r}: the version after ':' must be a number", hint=f"e.g. my-{what}:2")
    return name, int(version) if version else None


def _columns(pairs: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        part, sep, column = pair.partition("=")
        if not sep or not part:
            raise InvalidSpec(f"--column {pair!r} is not PART=COLUMN", hint="e.g. --column prompt=question")
        found[part] = column
    return found


def _version(found: DatasetPublic, version: int | None) -> DatasetVersionPublic:
    if version is None:
        return found.latest
    for v in found.versions:
        if v.version == version:
            return v
    have = ", ".join(str(v.version) for v in found.versions)
    raise InvalidSpec(f"dataset {found.name!r} has no version {version}", hint=f"its versions: {have}")


@cli.group()
def dataset() -> None:
    """Chat datasets for fine-tuning."""


@dataset.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--format", "fmt", help="messages, sharegpt, alpaca or prompt_completion (default: detected).")
@click.option("--column", "columns", multiple=True, metavar="PART=COLUMN", help="Read PART from COLUMN (repeat).")
@click.option("--description", default="")
@click.option("--group", help="Share it with a group of yours.")
@click.option("--new-version", is_flag=True, help="Add SOURCE as a new version of an existing dataset.")
@json_option
@click.pass_context
def dataset_add(
    ctx: click.Context,
    name: str,
    source: str,
    fmt: str | None,
    columns: tuple[str, ...],
    description: str,
    group: str | None,
    new_version: bool,
    as_json: bool,
) -> None:
    """Register SOURCE as dataset NAME: a .jsonl, .json, .csv or .parquet file, a folder of them (train*,
    eval*/validation*/test* name the splits), or hf:org/name[@revision] (a Hub dataset, pinned to its commit).

    A file on this machine is uploaded when this command talks to a remote Cove (after `cove login`); a folder is
    read by the Cove server itself (admins only)."""
    client = client_of(ctx)
    fields: dict[str, Any] = {"description": description, "group": group, "new_version": new_version}
    fields["format"], mapped = fmt, _columns(columns)
    local = Path(source).expanduser()
    if remote(ctx) and local.is_file():
        added = client.datasets.upload(name, local, columns=mapped, **fields)
    else:
        where = str(local.resolve()) if not source.startswith("hf:") and local.exists() else source
        say = None if as_json else click.echo
        added = client.datasets.add(name, where, on_progress=say, columns=mapped, **fields)
    v = _version(added.dataset, added.version)

    def human() -> None:
        if added.unchanged:
            click.echo(f"dataset {name} unchanged: version {added.version} has this content ({v.sha256[:12]})")
            return
        splits = ", ".join(f"{s} {n}" for s, n in v.splits.items())
        click.echo(
            f"dataset {name} v{v.version}: {v.rows} rows ({splits}), {v.format}, {human_size(v.size_bytes)},"
            f" sha256 {v.sha256[:12]}"
        )
        _report(v)

    emit(added, as_json, human)


def _report(v: DatasetVersionPublic) -> None:
    for split, said in v.report.get("splits", {}).items():
        click.echo(f"{split}: {said['summary']}")
        for problem in said["problems"]:
            click.echo(f"  {problem['file']}:{problem['line']}: {problem['message']}")
        hidden = said["problem_count"] - len(said["problems"])
        if hidden > 0:
            click.echo(f"  … and {hidden} more")


@dataset.command("list")
@json_option
@click.pass_context
def dataset_list(ctx: click.Context, as_json: bool) -> None:
    """Datasets you may see, and their versions."""
    found = list(client_of(ctx).datasets.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "OWNER", "VERSION", "ROWS", "SPLITS", "FORMAT", "SIZE", "SOURCE"],
            [
                [
                    d.name,
                    d.owner,
                    v.version,
                    v.rows,
                    ", ".join(f"{s} {n}" for s, n in v.splits.items()),
                    v.format,
                    human_size(v.size_bytes),
                    f"{v.source}@{v.revision[:12]}" if v.revision else v.source,
                ]
                for d in found
                for v in d.versions
            ],
        ),
    )


@dataset.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@json_option
@click.pass_context
def dataset_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """A version (the newest by default): its files, column map and validation report, problems by line."""
    name, version = _ref(ref)
    found = client_of(ctx).datasets.get(name)
    v = _version(found, version)

    def human() -> None:
        click.echo(f"dataset {found.name} v{v.version} (of {len(found.versions)}), owned by {found.owner}")
        if found.description:
            click.echo(found.description)
        revision = f"@{v.revision}" if v.revision else ""
        click.echo(f"source:  {v.source_kind} {v.source}{revision}")
        click.echo(f"sha256:  {v.sha256}")
        click.echo(f"files:   {v.path} ({v.builder}, {human_size(v.size_bytes)})")
        for split, names in v.files.items():
            click.echo(f"  {split}: {', '.join(names)} ({v.splits.get(split, 0)} rows)")
        click.echo(f"format:  {v.format}  columns: {', '.join(f'{p}={c}' for p, c in v.columns.items())}")
        _report(v)

    emit(v, as_json, human)


def _styled(preview: DatasetPreview) -> None:
    for row in preview.rows:
        click.echo(click.style(f"── line {row.line}", bold=True))
        if row.problem:
            click.echo(f"  problem: {row.problem}")
            click.echo(f"  raw: {json.dumps(row.raw, ensure_ascii=False)[:300]}")
            continue
        if row.segments is None:
            for turn in row.messages or []:
                click.echo(f"  {turn['role']}: {turn['content']}")
            continue
        text = ""
        for seg in row.segments:
            piece = f"⟦{seg.text}⟧" if seg.trained else seg.text
            piece = piece if seg.kept else f"✂{piece}"
            text += click.style(piece, fg="green" if seg.trained else None, dim=not seg.kept)
        click.echo(text)
    if any(r.segments for r in preview.rows):
        click.echo("⟦…⟧ is trained on (green); ✂ marks what max_length cuts off")


@dataset.command("preview")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--rows", default=5, show_default=True)
@click.option("--split", default="train", show_default=True)
@click.option("--model", "model_ref", help="MODEL[:VERSION]: render with its chat template, marking what is trained.")
@click.option("--max-length", default=1024, show_default=True, help="The training cutoff, in tokens.")
@json_option
@click.pass_context
def dataset_preview(
    ctx: click.Context, ref: str, rows: int, split: str, model_ref: str | None, max_length: int, as_json: bool
) -> None:
    """The first rows as messages (or what is wrong with them, by line); with --model, as the model sees them."""
    name, version = _ref(ref)
    model, model_version = _ref(model_ref, "model") if model_ref else (None, None)
    shown = client_of(ctx).datasets.preview(
        name,
        version=version,
        rows=rows,
        split=split,
        model=model,
        model_version=model_version,
        max_length=max_length,
    )
    emit(shown, as_json, lambda: _styled(shown))


def _lengths(found: DatasetLengths) -> None:
    s = found.stats
    click.echo(
        f"dataset {found.dataset} v{found.version} ({found.split}) with {found.model} v{found.model_version}'s chat"
        f" template: {s.rows} rows measured"
    )
    click.echo(f"tokens: P50 {s.p50}  P95 {s.p95}  P99 {s.p99}  max {s.max}  mean {s.mean}")
    for line in bars(s):
        click.echo(f"  {line}")
    click.echo(f"max_length {s.max_length}: {s.truncated} truncated, {s.untrainable} with no trainable tokens")
    click.echo(f"dropped (not fit to train on): {s.dropped}")


@dataset.command("lengths")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--model", "model_ref", required=True, help="MODEL[:VERSION]: the base model whose template renders.")
@click.option("--max-length", default=1024, show_default=True, help="The training cutoff, in tokens.")
@click.option("--split", default="train", show_default=True)
@json_option
@click.pass_context
def dataset_lengths(ctx: click.Context, ref: str, model_ref: str, max_length: int, split: str, as_json: bool) -> None:
    """Token lengths with a base model's chat template: percentiles, a histogram, and the rows the cutoff would
    truncate, leave with no trainable tokens, or that are dropped as unfit."""
    name, version = _ref(ref)
    model, model_version = _ref(model_ref, "model")
    found = client_of(ctx).datasets.lengths(
        name, model, version=version, model_version=model_version, max_length=max_length, split=split
    )
    emit(found, as_json, lambda: _lengths(found))


@dataset.command("delete")
@click.argument("name")
@click.pass_context
def dataset_delete(ctx: click.Context, name: str) -> None:
    """Remove a dataset no fine-tune uses, with its versions (files no other version shares go too)."""
    client_of(ctx).datasets.delete(name)
    click.echo(f"dataset {name} deleted")
