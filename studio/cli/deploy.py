"""`cove deploy …`: deployments from creation to deletion, through the Cove API (``client_of``: the Cove logged in
to, or this machine's in process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, remote, server_running, settings_of, table
from studio.errors import InvalidSpec, NotFound

# ------------------------------------------------------------------------------------------------ deployments


@cli.group()
def deploy() -> None:
    """Deployments: a model version served by replicas of a runtime."""


def _model_ref(text: str) -> tuple[str, int | None]:
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise InvalidSpec(f"{text!r}: the version after ':' must be a number", hint="e.g. --model demo-chat:2")
    return name, int(version) if version else None


def _watch(ctx: click.Context, name: str, timeout: float, until: Callable[[Any], bool]) -> Any:
    """Print status changes of deployment NAME until ``until(dep)`` or the timeout; None once it is gone."""
    settings, client = settings_of(ctx), client_of(ctx)
    if not remote(ctx) and not server_running(settings):
        click.echo(
            f"note: no Cove server answers at {settings.gateway_url}; nothing will change until "
            "`cove up` (or `cove server`) runs",
            err=True,
        )
    last, deadline, dep = "", time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            dep = client.deployments.get(name)
        except NotFound:
            return None
        line = f"{name}: {dep.status} {dep.ready_replicas}/{dep.replicas}" + (
            f" ({dep.message.splitlines()[0]})" if dep.message else ""
        )
        if line != last:
            click.echo(line, err=True)
            last = line
        if until(dep):
            return dep
        time.sleep(0.5)
    click.echo(
        f"still {dep.status if dep else 'unknown'} after {timeout:.0f} s; see `cove deploy get {name}`", err=True
    )
    return dep


def _gateway(ctx: click.Context) -> str:
    """Where clients call the deployments: the remote Cove's gateway, or this machine's."""
    return client_of(ctx).url if remote(ctx) else settings_of(ctx).gateway_url


if_match_option = click.option(
    "--if-match",
    "if_match",
    type=int,
    metavar="GEN",
    help="Only if its generation is still GEN (from `deploy get --json`): refused if someone changed it since.",
)


@deploy.command("create", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option(
    "--model", "model_ref", required=True, help="MODEL, MODEL:VERSION (default: newest) or MODEL@ALIAS (follows it)."
)
@click.option("--follow", type=click.Choice(["production", "staging"]), help="Follow this alias of the model.")
@click.option("--image", "image_ref", help="IMAGE or IMAGE:VERSION (default: vllm on GPU pools, transformers on CPU).")
@click.option("--pool", default="local", show_default=True)
@click.option("--cluster", help="The cluster it must run on (default: its pool's).")
@click.option("--group", help="Share it with this group of yours: its members may see and change it too.")
@click.option("--replicas", default=1, show_default=True, type=int)
@click.option("--cpu", default=1.0, show_default=True, help="CPU cores per replica.")
@click.option("--memory-mib", default=2048, show_default=True, help="Memory per replica.")
@click.option("--gpus", default=0, show_default=True, help="Whole GPUs per replica.")
@click.option("--gpu-memory-mib", default=0, show_default=True, help="A GPU memory slice per replica (HAMi).")
@click.option("--gpu-cores", default=0, show_default=True, help="Percent of a GPU's cores with a slice (HAMi).")
@click.option("--min-replicas", type=int, help="Autoscale: fewest replicas.")
@click.option("--max-replicas", type=int, help="Autoscale: most replicas.")
@click.option(
    "--target-inflight", type=float, default=4.0, show_default=True, help="Autoscale: requests in flight per replica."
)
@click.option("--max-tokens-cap", type=int, help="The most max_tokens a request may ask (default: the studio's).")
@click.option("--n-cap", type=int, help="The most answers (n) a request may ask (default: the studio's).")
@click.option("--wait/--no-wait", default=False, help="Wait until it is Ready (or Failed).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.argument("runtime_args", nargs=-1, type=click.UNPROCESSED)
@json_option
@click.pass_context
def deploy_create(
    ctx: click.Context,
    name: str,
    model_ref: str,
    follow: str | None,
    image_ref: str | None,
    pool: str,
    cluster: str | None,
    group: str | None,
    replicas: int,
    cpu: float,
    memory_mib: int,
    gpus: int,
    gpu_memory_mib: int,
    gpu_cores: int,
    min_replicas: int | None,
    max_replicas: int | None,
    target_inflight: float,
    max_tokens_cap: int | None,
    n_cap: int | None,
    wait: bool,
    timeout: float,
    runtime_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Deploy a model as NAME. Runtime flags go after `--`, e.g. `-- --dtype float32`."""
    from studio.models import Autoscale, DeploymentCreate, Resources, Status

    model_ref, _, alias = model_ref.partition("@")
    model_name, model_version = _model_ref(model_ref)
    image_name, _, image_version = (image_ref or "").partition(":")
    autoscale = None
    if min_replicas is not None or max_replicas is not None:
        autoscale = Autoscale(
            min_replicas=min_replicas if min_replicas is not None else 1,
            max_replicas=max_replicas if max_replicas is not None else replicas,
            target_inflight=target_inflight,
        )
    data = DeploymentCreate(
        name=name,
        model=model_name,
        model_version=model_version,
        follows=follow or alias or None,
        image=image_name or None,
        image_version=image_version or None,
        pool=pool,
        cluster=cluster,
        group=group,
        runtime_args=list(runtime_args),
        replicas=replicas,
        resources=Resources(
            cpu=cpu, memory_mib=memory_mib, gpus=gpus, gpu_memory_mib=gpu_memory_mib, gpu_cores=gpu_cores
        ),
        autoscale=autoscale,
        **{k: v for k, v in (("max_tokens_cap", max_tokens_cap), ("n_cap", n_cap)) if v is not None},
    )
    # Built here first, so a bad field is named before anything is sent (exit 2, as for any bad option).
    fields = data.model_dump(mode="json", exclude_unset=True, exclude={"name", "model"})
    dep = client_of(ctx).deployments.create(data.name, data.model, **fields)
    if not as_json:
        click.echo(
            f"deployment {dep.name}: {dep.model} v{dep.model_version}"
            f"{f' (following {dep.follows})' if dep.follows else ''} on {dep.image}:{dep.image_version}, "
            f"{dep.replicas} replica(s) in pool {dep.pool} (cluster {dep.cluster})"
        )
    if wait:
        dep = _watch(ctx, name, timeout, lambda d: d.status in (Status.READY, Status.FAILED)) or dep
        if dep.status == Status.FAILED:
            click.secho(dep.message, fg="red", err=True)
            ctx.exit(1)
    if as_json:
        emit(dep, True, lambda: None)
    elif dep.status == Status.READY:
        click.echo(f"ready: {_gateway(ctx)}/v1 with model={dep.name!r}")


@deploy.command("list")
@json_option
@click.pass_context
def deploy_list(ctx: click.Context, as_json: bool) -> None:
    found = list(client_of(ctx).deployments.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "OWNER", "STATUS", "READY", "MODEL", "IMAGE", "POOL", "MESSAGE"],
            [
                [
                    d.name,
                    f"{d.owner}/{d.group}" if d.group else d.owner,
                    d.shown_status,
                    f"{d.ready_replicas}/{d.replicas}",
                    f"{d.model}:{d.model_version}",
                    f"{d.image}:{d.image_version}",
                    d.pool,
                    (d.message.splitlines() or [""])[0][:60],
                ]
                for d in found
            ],
        ),
    )


@deploy.command("get")
@click.argument("name")
@json_option
@click.pass_context
def deploy_get(ctx: click.Context, name: str, as_json: bool) -> None:
    """Status, message and recent events of one deployment."""
    client = client_of(ctx)
    dep = client.deployments.get(name)
    recent = client.deployments.events(name, limit=15)

    def human() -> None:
        click.echo(f"{dep.name}: {dep.shown_status}, {dep.ready_replicas}/{dep.replicas} ready")
        click.echo(
            f"  model {dep.model} v{dep.model_version}, image {dep.image}:{dep.image_version}, "
            f"pool {dep.pool}, {dep.resources.cpu:g} CPU / {dep.resources.memory_mib} MiB per replica"
        )
        if dep.autoscale:
            a = dep.autoscale
            click.echo(
                f"  autoscale {a.min_replicas}–{a.max_replicas} at {a.target_inflight:g} in flight each"
                + (f", sleeps after {a.idle_s:g} s idle" if a.min_replicas == 0 else "")
            )
            if a.min_replicas == 0 and dep.cold_start_s is not None:
                click.echo(f"  last cold start {dep.cold_start_s:.1f} s (held request to first token)")
        if dep.max_tokens_cap or dep.n_cap:
            caps = f"max_tokens ≤ {dep.max_tokens_cap or 'default'}, n ≤ {dep.n_cap or 'default'}"
            click.echo(f"  caps per request  {caps}")
        if dep.planned_args:
            click.echo(f"  memory plan adds  {' '.join(dep.planned_args)}")
        if dep.kv_planned or dep.kv_observed:
            planned = dep.kv_planned.describe() if dep.kv_planned else "not planned"
            click.echo(f"  KV cache  planned: {planned}")
            click.echo(f"            runtime: {dep.kv_observed.describe() if dep.kv_observed else 'not reported yet'}")
        if dep.message:
            click.echo("  " + dep.message.replace("\n", "\n  "))
        click.echo("events (newest first):")
        for e in recent:
            click.echo(f"  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.type:<7} {e.reason:<10} {e.message}")

    emit(
        {"deployment": dep.model_dump(mode="json"), "events": [e.model_dump(mode="json") for e in recent]},
        as_json,
        human,
    )


@deploy.command("scale")
@click.argument("name")
@click.argument("replicas", type=int)
@click.option("--wait/--no-wait", default=False, help="Wait until that many replicas are ready.")
@click.option("--timeout", default=600.0, show_default=True)
@if_match_option
@json_option
@click.pass_context
def deploy_scale(
    ctx: click.Context, name: str, replicas: int, wait: bool, timeout: float, if_match: int | None, as_json: bool
) -> None:
    """Set the number of replicas (0 stops it and keeps it)."""
    dep = client_of(ctx).deployments.scale(name, replicas, if_match=if_match)
    if wait:
        dep = _watch(ctx, name, timeout, lambda d: d.ready_replicas == replicas) or dep
    emit(dep, as_json, lambda: click.echo(f"deployment {name}: {replicas} replica(s) wanted"))


@deploy.command("autoscale")
@click.argument("name")
@click.option("--min", "lo", type=int, default=1, show_default=True)
@click.option("--max", "hi", type=int, required=False)
@click.option("--target-inflight", type=float, default=4.0, show_default=True)
@click.option(
    "--idle-s",
    type=float,
    default=300.0,
    show_default=True,
    help="With --min 0: sleep (0 replicas, the pool's room given back) after this long without a request; the "
    "gateway wakes it when one comes.",
)
@click.option("--off", is_flag=True, help="Turn autoscaling off (the replica count stays).")
@if_match_option
@json_option
@click.pass_context
def deploy_autoscale(
    ctx: click.Context,
    name: str,
    lo: int,
    hi: int | None,
    target_inflight: float,
    idle_s: float,
    off: bool,
    if_match: int | None,
    as_json: bool,
) -> None:
    """Scale NAME by requests in flight, between --min and --max replicas. With --min 0 it sleeps once idle for
    --idle-s and wakes on the next request (held by the gateway meanwhile)."""
    from studio.models import Autoscale

    if not off and hi is None:
        raise InvalidSpec("--max is required", hint="e.g. --min 1 --max 4, or --off")
    bounds = (
        None
        if off
        else Autoscale(min_replicas=lo, max_replicas=hi or lo, target_inflight=target_inflight, idle_s=idle_s)
    )
    dep = client_of(ctx).deployments.autoscale(name, bounds, if_match=if_match)
    emit(
        dep,
        as_json,
        lambda: click.echo(
            f"deployment {name}: "
            + ("autoscaling off" if off else f"autoscaling {lo}–{hi} at {target_inflight:g} in flight per replica")
            + (f", sleeping after {idle_s:g} s idle" if not off and lo == 0 else "")
        ),
    )


@deploy.command("caps")
@click.argument("name")
@click.option("--max-tokens", "max_tokens_cap", type=int, help="The most max_tokens a request may ask.")
@click.option("--n", "n_cap", type=int, help="The most answers (n) a request may ask.")
@click.option("--default", "reset", is_flag=True, help="Back to the studio's defaults for both.")
@if_match_option
@json_option
@click.pass_context
def deploy_caps(
    ctx: click.Context,
    name: str,
    max_tokens_cap: int | None,
    n_cap: int | None,
    reset: bool,
    if_match: int | None,
    as_json: bool,
) -> None:
    """Cap what a request may ask of NAME: the gateway answers 400 to more max_tokens or n, and a request naming no
    max_tokens reserves the cap against token limits."""
    if reset:
        caps: dict[str, int | None] = {"max_tokens_cap": None, "n_cap": None}
    else:
        caps = {k: v for k, v in (("max_tokens_cap", max_tokens_cap), ("n_cap", n_cap)) if v is not None}
    if not caps:
        raise InvalidSpec("nothing to change", hint="give --max-tokens, --n or --default")
    dep = client_of(ctx).deployments.caps(name, if_match=if_match, **caps)
    emit(
        dep,
        as_json,
        lambda: click.echo(
            f"deployment {name}: max_tokens ≤ {dep.max_tokens_cap or 'default'}, n ≤ {dep.n_cap or 'default'}"
        ),
    )


@deploy.command("delete")
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Wait until its replicas are stopped and it is gone.")
@click.option("--timeout", default=120.0, show_default=True)
@click.pass_context
def deploy_delete(ctx: click.Context, name: str, wait: bool, timeout: float) -> None:
    """Stop the replicas and remove the deployment."""
    client_of(ctx).deployments.delete(name)
    click.echo(f"deployment {name}: deleting")
    if wait and _watch(ctx, name, timeout, lambda d: False) is None:
        click.echo(f"deployment {name}: deleted")


@deploy.command("logs")
@click.argument("name")
@click.option("--tail", default=100, show_default=True)
@click.pass_context
def deploy_logs(ctx: click.Context, name: str, tail: int) -> None:
    """The last lines its replicas wrote (on Kubernetes: its newest pod)."""
    for line in client_of(ctx).deployments.logs(name, tail=tail):
        click.echo(line)
