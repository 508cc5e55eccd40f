"""`cove model …`, `cove image …`, `cove pool …`: what can be deployed, and where."""

from __future__ import annotations

from pathlib import Path

import click

from studio.cli.base import cli, db_of, emit, json_option, settings_of, table
from studio.modelstore import human_size

# ------------------------------------------------------------------------------------------------ models


@cli.group()
def model() -> None:
    """The model catalog."""


@model.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--description", default="")
@click.option("--new-version", is_flag=True, help="Add SOURCE as a new version of an existing model.")
@json_option
@click.pass_context
def model_add(ctx: click.Context, name: str, source: str, description: str, new_version: bool, as_json: bool) -> None:
    """Register SOURCE (a folder, hf:org/name[@revision], or org/name) as model NAME."""
    from studio.models import ModelCreate
    from studio.services import models

    data = ModelCreate(name=name, source=source, description=description, new_version=new_version)
    settings = settings_of(ctx)
    added = models.add_model(
        db=db_of(ctx), data=data, cache_dir=settings.models_dir, progress=None if as_json else click.echo
    )
    v = added.latest
    emit(
        added,
        as_json,
        lambda: click.echo(
            f"model {added.name} v{v.version}: {v.architecture or v.model_type}, "
            f"{human_size(v.size_bytes)}, from {v.source}"
        ),
    )


@model.command("list")
@json_option
@click.pass_context
def model_list(ctx: click.Context, as_json: bool) -> None:
    """Models and their versions."""
    from studio.services import models

    found = models.list_models(db=db_of(ctx))
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "VERSION", "ARCHITECTURE", "SIZE", "SOURCE"],
            [
                [m.name, v.version, v.architecture, human_size(v.size_bytes), v.source]
                for m in found
                for v in m.versions
            ],
        ),
    )


@model.command("delete")
@click.argument("name")
@click.pass_context
def model_delete(ctx: click.Context, name: str) -> None:
    """Remove a model from the catalog (its files stay in the cache)."""
    from studio.services import models

    models.delete_model(db=db_of(ctx), name=name)
    click.echo(f"model {name} deleted")


# ------------------------------------------------------------------------------------------------ images, pools


@cli.group()
def image() -> None:
    """Runtime images."""


@image.command("list")
@json_option
@click.pass_context
def image_list(ctx: click.Context, as_json: bool) -> None:
    from studio.services import images

    found = images.list_images(db=db_of(ctx))
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "VERSION", "RUNTIME", "IMAGE", "LOCAL"],
            [
                [
                    i.name,
                    i.version,
                    i.runtime,
                    i.reference,
                    "yes"
                    if i.local_command or i.runtime == "transformers"
                    else "gpu"
                    if i.runtime in ("vllm", "sglang")
                    else "no",
                ]
                for i in found
            ],
        ),
    )


@image.command("add")
@click.argument("name")
@click.argument("version")
@click.argument("ref")
@click.option("--local-command", help="How to run it here, e.g. 'my-server --model {model} --port {port}'.")
@click.option("--health-path", default="/health", show_default=True)
@click.option("--dockerfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def image_add(
    ctx: click.Context,
    name: str,
    version: str,
    ref: str,
    local_command: str | None,
    health_path: str,
    dockerfile: Path | None,
    as_json: bool,
) -> None:
    """Register a custom runtime image REF:VERSION as NAME."""
    import shlex

    from studio.models import ImageCreate
    from studio.services import images

    data = ImageCreate(
        name=name,
        version=version,
        ref=ref,
        health_path=health_path,
        local_command=shlex.split(local_command) if local_command else None,
        dockerfile=dockerfile.read_text() if dockerfile else None,
    )
    added = images.add_image(db=db_of(ctx), data=data)
    emit(added, as_json, lambda: click.echo(f"image {added.name} {added.reference} registered"))


@cli.group()
def pool() -> None:
    """Capacity pools."""


@pool.command("list")
@json_option
@click.pass_context
def pool_list(ctx: click.Context, as_json: bool) -> None:
    from studio.services import pools

    found = pools.list_pools(db=db_of(ctx))
    emit(
        [u.pool for u in found],
        as_json,
        lambda: table(
            ["NAME", "PURPOSE", "CPU", "MEMORY", "GPUS", "FREE"],
            [
                [
                    u.pool.name,
                    u.pool.purpose,
                    f"{u.pool.cpu_cores:g}",
                    f"{u.pool.memory_mib} MiB",
                    f"{u.pool.gpu_count}× {u.pool.gpu_model}" if u.pool.gpu_count else "-",
                    u.free.describe(),
                ]
                for u in found
            ],
        ),
    )
