"""``cove``: the command line. Human output by default, ``--json`` for scripts; errors say what to do next."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ValidationError

from studio.db import Database
from studio.errors import CoveError, InvalidSpec
from studio.settings import Settings


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


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
            click.secho(f"error: {_explain(exc)}", fg="red", err=True)
            ctx.exit(2)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.find_root().obj["settings"]
    return settings


def _db(ctx: click.Context) -> Database:
    root = ctx.find_root().obj
    if "db" not in root:
        from studio.bootstrap import open_studio

        root["db"] = open_studio(root["settings"])
        ctx.find_root().call_on_close(root["db"].dispose)
    return root["db"]


def _emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:

        def plain(x: Any) -> Any:
            return x.model_dump(mode="json") if isinstance(x, BaseModel) else x

        payload = [plain(x) for x in data] if isinstance(data, list) else plain(data)
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        human()


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if i == 0 else line)
    if not rows:
        click.echo("(none)")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def _server_running(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(settings.gateway_url + "/healthz", timeout=1):
            return True
    except (urllib.error.URLError, OSError):
        return False


@click.group(cls=CoveGroup)
@click.version_option(package_name="cove")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Cove: a self-hosted AI studio. State lives in COVE_HOME (default ~/.cove)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise InvalidSpec(f"bad COVE_* setting: {_explain(exc)}", hint="fix the environment variable") from exc
    ctx.obj = {"settings": settings}
    logging.basicConfig(
        level=settings.log_level.upper() if ctx.invoked_subcommand in ("server", "up") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------------------ processes


@cli.command()
@click.option(
    "--demo/--no-demo", default=None, help="Build and deploy the demo model on first start (default: COVE_DEMO, true)."
)
@click.pass_context
def up(ctx: click.Context, demo: bool | None) -> None:
    """Run everything in the foreground; Ctrl-C stops it all."""
    from studio.up import up as run_up

    settings = _settings(ctx)
    ctx.exit(run_up(settings, demo=settings.demo if demo is None else demo))


@cli.command()
@click.pass_context
def server(ctx: click.Context) -> None:
    """Run the gateway and the controller (what `cove up` starts)."""
    from studio.server import serve

    serve(_settings(ctx))


@cli.command("demo-model")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--steps", default=200, show_default=True, help="Training steps.")
def demo_model(path: Path, steps: int) -> None:
    """Build the tiny offline demo chat model into PATH."""
    from studio.demo import build_demo_model

    build_demo_model(path, steps=steps, progress=click.echo)


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
    settings = _settings(ctx)
    added = models.add_model(
        db=_db(ctx), data=data, cache_dir=settings.models_dir, progress=None if as_json else click.echo
    )
    v = added.latest
    _emit(
        added,
        as_json,
        lambda: click.echo(
            f"model {added.name} v{v.version}: {v.architecture or v.model_type}, {_size(v.size_bytes)}, from {v.source}"
        ),
    )


@model.command("list")
@json_option
@click.pass_context
def model_list(ctx: click.Context, as_json: bool) -> None:
    """Models and their versions."""
    from studio.services import models

    found = models.list_models(db=_db(ctx))
    _emit(
        found,
        as_json,
        lambda: _table(
            ["NAME", "VERSION", "ARCHITECTURE", "SIZE", "SOURCE"],
            [[m.name, v.version, v.architecture, _size(v.size_bytes), v.source] for m in found for v in m.versions],
        ),
    )


@model.command("delete")
@click.argument("name")
@click.pass_context
def model_delete(ctx: click.Context, name: str) -> None:
    """Remove a model from the catalog (its files stay in the cache)."""
    from studio.services import models

    models.delete_model(db=_db(ctx), name=name)
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

    found = images.list_images(db=_db(ctx))
    _emit(
        found,
        as_json,
        lambda: _table(
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
    added = images.add_image(db=_db(ctx), data=data)
    _emit(added, as_json, lambda: click.echo(f"image {added.name} {added.reference} registered"))


@cli.group()
def pool() -> None:
    """Capacity pools."""


@pool.command("list")
@json_option
@click.pass_context
def pool_list(ctx: click.Context, as_json: bool) -> None:
    from studio.services import pools

    found = pools.list_pools(db=_db(ctx))
    _emit(
        [u.pool for u in found],
        as_json,
        lambda: _table(
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
    """Print status changes of deployment NAME until ``until(dep)`` or the timeout."""
    from studio.services import deployments

    settings, db = _settings(ctx), _db(ctx)
    if not _server_running(settings):
        click.echo(
            f"note: no Cove server answers at {settings.gateway_url}; nothing will change until "
            "`cove up` (or `cove server`) runs",
            err=True,
        )
    last, deadline, dep = "", time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            dep = deployments.get_deployment(db=db, name=name)
        except CoveError:
            return None  # gone
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


@deploy.command("create", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--model", "model_ref", required=True, help="MODEL or MODEL:VERSION (default: newest version).")
@click.option("--image", "image_ref", help="IMAGE or IMAGE:VERSION (default: vllm on GPU pools, transformers on CPU).")
@click.option("--pool", default="local", show_default=True)
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
@click.option("--wait/--no-wait", default=False, help="Wait until it is Ready (or Failed).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.argument("runtime_args", nargs=-1, type=click.UNPROCESSED)
@json_option
@click.pass_context
def deploy_create(
    ctx: click.Context,
    name: str,
    model_ref: str,
    image_ref: str | None,
    pool: str,
    replicas: int,
    cpu: float,
    memory_mib: int,
    gpus: int,
    gpu_memory_mib: int,
    gpu_cores: int,
    min_replicas: int | None,
    max_replicas: int | None,
    target_inflight: float,
    wait: bool,
    timeout: float,
    runtime_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Deploy a model as NAME. Runtime flags go after `--`, e.g. `-- --dtype float32`."""
    from studio.models import Autoscale, DeploymentCreate, Resources, Status
    from studio.services import deployments

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
        image=image_name or None,
        image_version=image_version or None,
        pool=pool,
        runtime_args=list(runtime_args),
        replicas=replicas,
        resources=Resources(
            cpu=cpu, memory_mib=memory_mib, gpus=gpus, gpu_memory_mib=gpu_memory_mib, gpu_cores=gpu_cores
        ),
        autoscale=autoscale,
    )
    dep = deployments.create_deployment(db=_db(ctx), data=data)
    if not as_json:
        click.echo(
            f"deployment {dep.name}: {dep.model} v{dep.model_version} on {dep.image}:{dep.image_version}, "
            f"{dep.replicas} replica(s) in pool {dep.pool}"
        )
    if wait:
        dep = _watch(ctx, name, timeout, lambda d: d.status in (Status.READY, Status.FAILED)) or dep
        if dep.status == Status.FAILED:
            click.secho(dep.message, fg="red", err=True)
            ctx.exit(1)
    if as_json:
        _emit(dep, True, lambda: None)
    elif dep.status == Status.READY:
        click.echo(f"ready: {_settings(ctx).gateway_url}/v1 with model={dep.name!r}")


@deploy.command("list")
@json_option
@click.pass_context
def deploy_list(ctx: click.Context, as_json: bool) -> None:
    from studio.services import deployments

    found = deployments.list_deployments(db=_db(ctx))
    _emit(
        found,
        as_json,
        lambda: _table(
            ["NAME", "STATUS", "READY", "MODEL", "IMAGE", "POOL", "MESSAGE"],
            [
                [
                    d.name,
                    d.status,
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
    from studio.services import deployments, events

    dep = deployments.get_deployment(db=_db(ctx), name=name)
    recent = events.list_events(db=_db(ctx), kind="deployment", name=name, limit=15)

    def human() -> None:
        click.echo(f"{dep.name}: {dep.status}, {dep.ready_replicas}/{dep.replicas} ready")
        click.echo(
            f"  model {dep.model} v{dep.model_version}, image {dep.image}:{dep.image_version}, "
            f"pool {dep.pool}, {dep.resources.cpu:g} CPU / {dep.resources.memory_mib} MiB per replica"
        )
        if dep.autoscale:
            a = dep.autoscale
            click.echo(f"  autoscale {a.min_replicas}–{a.max_replicas} at {a.target_inflight:g} in flight each")
        if dep.message:
            click.echo("  " + dep.message.replace("\n", "\n  "))
        click.echo("events (newest first):")
        for e in recent:
            click.echo(f"  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.type:<7} {e.reason:<10} {e.message}")

    _emit(
        {"deployment": dep.model_dump(mode="json"), "events": [e.model_dump(mode="json") for e in recent]},
        as_json,
        human,
    )


@deploy.command("scale")
@click.argument("name")
@click.argument("replicas", type=int)
@click.option("--wait/--no-wait", default=False, help="Wait until that many replicas are ready.")
@click.option("--timeout", default=600.0, show_default=True)
@json_option
@click.pass_context
def deploy_scale(ctx: click.Context, name: str, replicas: int, wait: bool, timeout: float, as_json: bool) -> None:
    """Set the number of replicas (0 stops it and keeps it)."""
    from studio.services import deployments

    dep = deployments.scale_deployment(db=_db(ctx), name=name, replicas=replicas)
    if wait:
        dep = _watch(ctx, name, timeout, lambda d: d.ready_replicas == replicas) or dep
    _emit(dep, as_json, lambda: click.echo(f"deployment {name}: {replicas} replica(s) wanted"))


@deploy.command("autoscale")
@click.argument("name")
@click.option("--min", "lo", type=int, default=1, show_default=True)
@click.option("--max", "hi", type=int, required=False)
@click.option("--target-inflight", type=float, default=4.0, show_default=True)
@click.option("--off", is_flag=True, help="Turn autoscaling off (the replica count stays).")
@json_option
@click.pass_context
def deploy_autoscale(
    ctx: click.Context, name: str, lo: int, hi: int | None, target_inflight: float, off: bool, as_json: bool
) -> None:
    """Scale NAME by requests in flight, between --min and --max replicas."""
    from studio.models import Autoscale
    from studio.services import deployments

    if not off and hi is None:
        raise InvalidSpec("--max is required", hint="e.g. --min 1 --max 4, or --off")
    bounds = None if off else Autoscale(min_replicas=lo, max_replicas=hi or lo, target_inflight=target_inflight)
    dep = deployments.set_autoscale(db=_db(ctx), name=name, autoscale=bounds)
    _emit(
        dep,
        as_json,
        lambda: click.echo(
            f"deployment {name}: "
            + ("autoscaling off" if off else f"autoscaling {lo}–{hi} at {target_inflight:g} in flight per replica")
        ),
    )


@deploy.command("delete")
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Wait until its replicas are stopped and it is gone.")
@click.option("--timeout", default=120.0, show_default=True)
@click.pass_context
def deploy_delete(ctx: click.Context, name: str, wait: bool, timeout: float) -> None:
    """Stop the replicas and remove the deployment."""
    from studio.services import deployments

    deployments.delete_deployment(db=_db(ctx), name=name)
    click.echo(f"deployment {name}: deleting")
    if wait and _watch(ctx, name, timeout, lambda d: False) is None:
        click.echo(f"deployment {name}: deleted")


@deploy.command("logs")
@click.argument("name")
@click.option("--tail", default=100, show_default=True)
@click.pass_context
def deploy_logs(ctx: click.Context, name: str, tail: int) -> None:
    """The last lines each replica wrote."""
    from studio.backends.local import log_tail
    from studio.services import deployments

    deployments.get_deployment(db=_db(ctx), name=name)
    for line in log_tail(_settings(ctx), name, tail=tail):
        click.echo(line)


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

    created = keys.create_key(db=_db(ctx), data=ApiKeyCreate(name=name))
    _emit(
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

    found = keys.list_keys(db=_db(ctx))
    _emit(
        found,
        as_json,
        lambda: _table(
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

    keys.revoke_key(db=_db(ctx), name=name)
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

    rows = usage_service.usage_summary(db=_db(ctx), since=utcnow() - timedelta(days=days))
    _emit(
        rows,
        as_json,
        lambda: _table(
            ["DAY", "KEY", "DEPLOYMENT", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS"],
            [[r.day, r.key or "-", r.deployment, r.requests, r.prompt_tokens, r.completion_tokens] for r in rows],
        ),
    )


def main() -> None:
    cli(prog_name="cove")


if __name__ == "__main__":
    main()
