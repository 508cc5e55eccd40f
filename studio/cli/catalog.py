"""`cove model …`, `cove image …`, `cove pool …`, `cove cluster …`: what can be deployed, and where."""

from __future__ import annotations

from pathlib import Path

import click

from studio.cli.base import cli, client_of, emit, json_option, table
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
    """Register SOURCE (a folder, hf:org/name[@revision], or org/name) as model NAME.

    A folder is read by the Cove server, not by this command (so only an admin may name one): after `cove login`,
    the path must exist on the remote Cove's machine or its shared storage."""
    from studio.models import ModelCreate

    data = ModelCreate(name=name, source=source, description=description, new_version=new_version)
    fields = data.model_dump(mode="json", exclude_unset=True, exclude={"name", "source"})
    added = client_of(ctx).models.add(data.name, data.source, on_progress=None if as_json else click.echo, **fields)
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
    found = list(client_of(ctx).models.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "OWNER", "VERSION", "ARCHITECTURE", "SIZE", "SOURCE"],
            [
                [m.name, m.owner, v.version, v.architecture, human_size(v.size_bytes), v.source]
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
    client_of(ctx).models.delete(name)
    click.echo(f"model {name} deleted")


# ------------------------------------------------------------------------------------------------ images, pools


@cli.group()
def image() -> None:
    """Runtime images."""


@image.command("list")
@json_option
@click.pass_context
def image_list(ctx: click.Context, as_json: bool) -> None:
    found = list(client_of(ctx).images.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "VERSION", "RUNTIME", "IMAGE", "LOCAL", "BUILD"],
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
                    (f"{i.build_status}: {i.build_message.splitlines()[0]}" if i.build_message else i.build_status)
                    if i.build_status
                    else "-",
                ]
                for i in found
            ],
        ),
    )


@image.command("add")
@click.argument("name")
@click.argument("version")
@click.argument("ref", required=False)
@click.option(
    "--runtime", default="custom", show_default=True,
    type=click.Choice(["vllm", "sglang", "triton", "transformers", "custom"]),
    help="What it runs: Cove starts the known runtimes with their own command; custom images use their entrypoint.",
)  # fmt: skip
@click.option("--local-command", help="How to run it here, e.g. 'my-server --model {model} --port {port}'.")
@click.option("--health-path", default="/health", show_default=True)
@click.option("--dockerfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def image_add(
    ctx: click.Context,
    name: str,
    version: str,
    ref: str | None,
    runtime: str,
    local_command: str | None,
    health_path: str,
    dockerfile: Path | None,
    as_json: bool,
) -> None:
    """Register a custom runtime image REF:VERSION as NAME. With --dockerfile it is built in the cluster and pushed
    to REF (default: COVE_REGISTRY/NAME)."""
    import shlex

    from studio.models import ImageCreate, RuntimeKind

    data = ImageCreate(  # checked here first, so a mistake is named before anything is sent
        name=name,
        version=version,
        runtime=RuntimeKind(runtime),
        ref=ref,
        health_path=health_path,
        local_command=shlex.split(local_command) if local_command else None,
        dockerfile=dockerfile.read_text() if dockerfile else None,
    )
    fields = data.model_dump(mode="json", exclude={"name", "version"}, exclude_none=True)
    added = client_of(ctx).images.add(name, version, **fields)
    building = "; it will be built by the controller" if added.build_status else ""
    emit(added, as_json, lambda: click.echo(f"image {added.name} {added.reference} registered{building}"))


@image.command("rebuild")
@click.argument("name")
@click.argument("version")
@click.pass_context
def image_rebuild(ctx: click.Context, name: str, version: str) -> None:
    """Build a Dockerfile image NAME:VERSION again (after a failed build, or to take a moved base image)."""
    again = client_of(ctx).images.rebuild(name, version)
    click.echo(f"image {again.reference}: queued for building")


@cli.group()
def pool() -> None:
    """Capacity pools."""


@pool.command("list")
@json_option
@click.pass_context
def pool_list(ctx: click.Context, as_json: bool) -> None:
    found = list(client_of(ctx).pools.list())
    emit(
        [u.pool for u in found],
        as_json,
        lambda: table(
            ["NAME", "CLUSTER", "PURPOSE", "CPU", "MEMORY", "GPUS", "FREE"],
            [
                [
                    u.pool.name,
                    u.pool.cluster,
                    u.pool.purpose,
                    f"{u.pool.cpu_cores:g}",
                    f"{u.pool.memory_mib} MiB",
                    f"{u.pool.gpu_count}× {u.pool.gpu_model}" if u.pool.gpu_count else "-",
                    u.free.summary,
                ]
                for u in found
            ],
        ),
    )


# ------------------------------------------------------------------------------------------------ clusters


@cli.group()
def cluster() -> None:
    """Kubernetes clusters besides the control plane's own (`default`): deployments run on their pools' cluster."""


@cluster.command("add")
@click.argument("name")
@click.option(
    "--kubeconfig", "kubeconfig", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A self-contained kubeconfig (`kubectl config view --raw --minify --flatten`), kept in the database.",
)  # fmt: skip
@click.option("--context", default="", help="One of its contexts (default: its current context).")
@click.option("--namespace", default="cove", show_default=True, help="Where Cove makes its objects there.")
@json_option
@click.pass_context
def cluster_add(ctx: click.Context, name: str, kubeconfig: Path, context: str, namespace: str, as_json: bool) -> None:
    """Register cluster NAME. Its nodes labelled cove.dev/pool=POOL become pool POOL within a capacity refresh."""
    added = client_of(ctx).clusters.add(name, kubeconfig.read_text(), context=context, namespace=namespace)
    emit(
        added,
        as_json,
        lambda: click.echo(
            f"cluster {added.name}: {added.server} (context {added.context}, namespace {added.namespace})"
        ),
    )


@cluster.command("list")
@json_option
@click.pass_context
def cluster_list(ctx: click.Context, as_json: bool) -> None:
    """Registered clusters, and whether each answered the last capacity read."""
    found = list(client_of(ctx).clusters.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "SERVER", "CONTEXT", "NAMESPACE", "STATE"],
            [[c.name, c.server, c.context, c.namespace, c.state] for c in found],
        ),
    )


@cluster.command("remove")
@click.argument("name")
@click.pass_context
def cluster_remove(ctx: click.Context, name: str) -> None:
    """Forget cluster NAME and its pools (refused while deployments or notebooks use them)."""
    client_of(ctx).clusters.remove(name)
    click.echo(f"cluster {name} removed")
