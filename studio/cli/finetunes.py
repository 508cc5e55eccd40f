"""`cove finetune …`: fine-tune jobs from creation to their new model version, through the Cove API (``client_of``:
the Cove logged in to, or this machine's in process)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option, remote, server_running, settings_of, table
from studio.cli.deploy import _model_ref
from studio.errors import CoveError, InvalidSpec
from studio.finetuning import Progress
from studio.models import FineTunePreview, FineTunePublic
from studio.values import JobStatus


@cli.group()
def finetune() -> None:
    """Fine-tune jobs: LoRA on a dataset, registered as a new model version."""


def _settings(pairs: tuple[str, ...], **given: Any) -> dict[str, Any]:
    """The options given, then each ``KEY=VALUE`` (a JSON value, or text)."""
    settings = {k: v for k, v in given.items() if v is not None}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"--set {pair!r} is not KEY=VALUE", hint="e.g. --set warmup_ratio=0.1")
        try:
            settings[key] = json.loads(text)
        except ValueError:
            settings[key] = text
    return settings


def describe(job: FineTunePublic) -> str:
    """One line: where it is, in words."""
    progress = Progress.model_validate(job.progress)
    if job.status == JobStatus.RUNNING and progress.total_steps:
        words = progress.words()
        words[0] += f" ({100 * progress.step // progress.total_steps}%)"  # "step 3/5 (60%)"
        return f"{job.name}: Running, " + ", ".join(words)
    if job.status == JobStatus.RUNNING and job.progress.get("phase"):
        said = f": {progress.message}" if progress.message else ""
        return f"{job.name}: Running ({progress.phase}{said})"
    return f"{job.name}: {job.status.value}" + (f" ({job.message.splitlines()[0]})" if job.message else "")


@finetune.command("create")
@click.argument("name")
@click.option("--model", "model_ref", required=True, help="The base: MODEL or MODEL:VERSION (default: newest).")
@click.option("--dataset", "dataset_ref", required=True, help="DATASET or DATASET:VERSION (default: newest).")
@click.option("--pool", default="local", show_default=True, help="A training pool (the local machine embedded).")
@click.option("--target-model", help="Register the result as a version of this model (default: the base model).")
@click.option("--group", help="Share it with this group of yours.")
@click.option("--rank", type=int, help="LoRA rank (default by model size).")
@click.option("--alpha", type=int, help="LoRA alpha.")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, help="Peak learning rate.")
@click.option("--epochs", type=float, help="Passes over the training split.")
@click.option("--max-steps", type=int, help="Optimizer steps (wins over --epochs).")
@click.option("--batch-size", type=int, help="Rows per step per device.")
@click.option("--grad-accum", type=int, help="Steps accumulated per optimizer step.")
@click.option("--max-length", type=int, help="Tokens per row; longer rows are truncated.")
@click.option("--target-modules", help="Comma-separated module names (default: all linear layers).")
@click.option("--serving", type=click.Choice(["merged", "adapter"]), help="Serve merged weights, or the adapter.")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE", help="Any other setting (studio.finetuning).")
@click.option("--cpu", default=2.0, show_default=True, help="CPU cores of the training process.")
@click.option("--memory-mib", default=4096, show_default=True, help="Memory of the training process.")
@click.option("--gpus", default=0, show_default=True, help="Whole GPUs.")
@click.option("--gpu-memory-mib", default=0, show_default=True, help="A GPU memory slice (HAMi).")
@click.option("--dry-run", is_flag=True, help="Say what it would be (settings, estimates, room), start nothing.")
@click.option("--wait/--no-wait", default=False, help="Follow it until it ends, printing its progress.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait with --wait.")
@json_option
@click.pass_context
def finetune_create(
    ctx: click.Context,
    name: str,
    model_ref: str,
    dataset_ref: str,
    pool: str,
    target_model: str | None,
    group: str | None,
    pairs: tuple[str, ...],
    cpu: float,
    memory_mib: int,
    gpus: int,
    gpu_memory_mib: int,
    dry_run: bool,
    wait: bool,
    timeout: float,
    as_json: bool,
    target_modules: str | None,
    **options: Any,
) -> None:
    """Fine-tune MODEL on DATASET as job NAME; on success it becomes a new version of the model (or of
    --target-model), ready for `cove deploy create`."""
    from studio.models import FineTuneCreate, Resources

    model, model_version = _model_ref(model_ref)
    dataset, dataset_version = _model_ref(dataset_ref)
    modules = [m.strip() for m in target_modules.split(",") if m.strip()] if target_modules else None
    data = FineTuneCreate(
        name=name,
        model=model,
        model_version=model_version,
        dataset=dataset,
        dataset_version=dataset_version,
        pool=pool,
        target_model=target_model,
        group=group,
        resources=Resources(cpu=cpu, memory_mib=memory_mib, gpus=gpus, gpu_memory_mib=gpu_memory_mib),
        settings=_settings(pairs, target_modules=modules, **options),
    )
    fields = data.model_dump(mode="json", exclude_unset=True, exclude={"name", "model", "dataset"})
    if dry_run:
        preview = client_of(ctx).finetunes.preview(data.name, data.model, data.dataset, **fields)
        emit(preview, as_json, lambda: _show_preview(preview))
        return
    job = client_of(ctx).finetunes.create(data.name, data.model, data.dataset, **fields)
    if not as_json:
        s = job.settings
        click.echo(
            f"fine-tune {job.name}: {job.model} v{job.model_version} on {job.dataset} v{job.dataset_version} in pool "
            f"{job.pool}; LoRA rank {s.rank}, alpha {s.alpha}, learning rate {s.learning_rate:g}, "
            + (f"{s.max_steps} steps" if s.max_steps else f"{s.epochs:g} epochs")
            + f"; becomes a new version of {job.target_model}"
        )
    if wait:
        job = _follow(ctx, name, timeout)
    if as_json:
        emit(job, True, lambda: None)
    elif job.status == JobStatus.SUCCEEDED:
        click.echo(f"registered {job.target_model} v{job.result_version}: deploy it with")
        click.echo(f"  cove deploy create NAME --model {job.target_model}:{job.result_version}")


def _show_preview(preview: FineTunePreview) -> None:
    s = preview.settings
    click.echo(f"base: {preview.parameters:,} parameters; LoRA may target {', '.join(preview.targets) or '?'}")
    click.echo(f"settings: {s.model_dump(mode='json')}")
    click.echo(
        f"about {preview.steps} steps over {preview.rows} rows: roughly {preview.memory_mib} MiB and "
        f"{preview.seconds:.0f} s (an estimate, good to a factor of two)"
    )
    click.echo(("fits: " if preview.fits else "does not fit now: ") + preview.free)
    for warning in preview.warnings:
        click.secho(f"warning: {warning}", fg="yellow")


def _follow(ctx: click.Context, name: str, timeout: float) -> FineTunePublic:
    settings, client = settings_of(ctx), client_of(ctx)
    if not remote(ctx) and not server_running(settings):
        click.echo(
            f"note: no Cove server answers at {settings.gateway_url}; the job starts when `cove up` (or `cove "
            "server`) runs",
            err=True,
        )
    try:
        job = client.finetunes.wait(
            name, timeout=timeout, poll=0.5, on_progress=lambda j: click.echo(describe(j), err=True)
        )
    except CoveError as exc:
        click.secho(str(exc), fg="red", err=True)
        ctx.exit(1)
    return job


@finetune.command("list")
@json_option
@click.pass_context
def finetune_list(ctx: click.Context, as_json: bool) -> None:
    found = list(client_of(ctx).finetunes.list())
    emit(
        found,
        as_json,
        lambda: table(
            ["NAME", "OWNER", "STATUS", "BASE", "DATASET", "PROGRESS", "RESULT"],
            [
                [
                    j.name,
                    f"{j.owner}/{j.group}" if j.group else j.owner,
                    j.status.value,
                    f"{j.model}:{j.model_version}",
                    f"{j.dataset}:{j.dataset_version}",
                    f"{j.progress.get('step', 0)}/{j.progress.get('total_steps', '?')}" if j.progress else "",
                    f"{j.target_model}:{j.result_version}" if j.result_version else "",
                ]
                for j in found
            ],
        ),
    )


@finetune.command("get")
@click.argument("name")
@json_option
@click.pass_context
def finetune_get(ctx: click.Context, name: str, as_json: bool) -> None:
    """Status, progress, settings, metrics and recent events of one job."""
    client = client_of(ctx)
    job = client.finetunes.get(name)

    def human() -> None:
        click.echo(describe(job))
        click.echo(
            f"  base {job.model} v{job.model_version}, dataset {job.dataset} v{job.dataset_version}, pool {job.pool}"
        )
        click.echo(f"  settings {job.settings.model_dump(mode='json', exclude_defaults=True)}")
        metrics = job.metrics
        if metrics.get("eval_loss") is not None:
            click.echo(f"  eval loss {metrics['eval_loss']:.4f}, perplexity {metrics.get('perplexity', 0):.2f}")
        for sample in metrics.get("samples", []):
            click.echo(
                f"  Q: {sample['prompt']}\n    base:      {sample['base']}\n    candidate: {sample['candidate']}"
            )
        if job.result_version:
            click.echo(f"  registered as {job.target_model} v{job.result_version}")
        for event in client.finetunes.events(name, limit=10):
            click.echo(f"  {event.created_at:%H:%M:%S} {event.reason}: {event.message}")

    emit(job, as_json, human)


@finetune.command("logs")
@click.argument("name")
@click.option("--tail", default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@click.pass_context
def finetune_logs(ctx: click.Context, name: str, tail: int, follow: bool) -> None:
    """The newest attempt's log: data, model, each progress report, evaluation and the merge."""
    client = client_of(ctx)
    seen: list[str] = []
    while True:
        lines = client.finetunes.logs(name, tail=tail if not seen else 1000)
        start = _overlap(seen, lines)
        for line in lines[start:]:
            click.echo(line)
        seen = lines
        if not follow or client.finetunes.get(name).status.finished:
            return
        time.sleep(1)


def _overlap(before: list[str], now: list[str]) -> int:
    """How many of ``now``'s first lines were printed already (the end of ``before``)."""
    for size in range(min(len(before), len(now)), 0, -1):
        if before[-size:] == now[:size]:
            return size
    return 0


@finetune.command("cancel")
@click.argument("name")
@click.pass_context
def finetune_cancel(ctx: click.Context, name: str) -> None:
    """Stop it; the trainer saves a checkpoint first, and `cove finetune resume` goes on from there."""
    client_of(ctx).finetunes.cancel(name)
    click.echo(f"fine-tune {name}: cancelling")


@finetune.command("resume")
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Follow it until it ends.")
@click.option("--timeout", default=3600.0, show_default=True)
@click.pass_context
def finetune_resume(ctx: click.Context, name: str, wait: bool, timeout: float) -> None:
    """A new attempt of a failed or cancelled job, from its newest checkpoint."""
    job = client_of(ctx).finetunes.resume(name)
    click.echo(f"fine-tune {name}: attempt {job.attempt} queued")
    if wait:
        _follow(ctx, name, timeout)


@finetune.command("delete")
@click.argument("name")
@click.pass_context
def finetune_delete(ctx: click.Context, name: str) -> None:
    """Forget an ended job and its checkpoints (the version it registered stays)."""
    client_of(ctx).finetunes.delete(name)
    click.echo(f"fine-tune {name}: deleted")
