"""`cove plan MODEL[:V]`: will a model version serve on this GPU (or slice), and with which runtime flags."""

from __future__ import annotations

import shlex
from typing import Any

import click

from studio.cli.base import cli, client_of, emit, json_option
from studio.cli.deploy import _model_ref
from studio.memplan import DEFAULT_RESERVE_MIB, Plan, Precision


def describe(model: str, plan: Plan) -> list[str]:
    """The plan in lines for people: the verdict first, then the figures, then the flags."""
    gpus = f"{plan.gpus} × " if plan.gpus > 1 else ""
    head = f"{model} on {gpus}{plan.gpu_memory_mib} MiB with {plan.runtime} (memory fraction {plan.memory_fraction:g})"
    lines = [head, ""]
    lines.append(f"  weights      {plan.weights_mib_per_gpu:,.0f} MiB per GPU ({plan.weights_precision})")
    lines.append(
        f"  KV cache     {plan.kv_cache_mib_per_gpu:,.0f} MiB per GPU after a {plan.reserve_mib} MiB reserve: "
        f"{plan.kv_cache_tokens:,} tokens ({plan.kv_bytes_per_token / 1024:,.0f} KiB per token, "
        f"{plan.kv_cache_dtype})"
    )
    lines.append(f"  concurrency  {plan.max_concurrency} requests of {plan.context:,} tokens")
    lines.append(f"  context      {plan.max_context:,} tokens at {plan.concurrency or 1} request(s) at once")
    lines.append("")
    if plan.fits:
        lines.append(f"  fits         {shlex.join(plan.flags)}")
    else:
        lines.append(f"  does not fit: {plan.reason}")
    return lines


@cli.command("plan")
@click.argument("model_ref", metavar="MODEL[:VERSION]")
@click.option("--gpu-memory-mib", type=int, required=True, help="Memory of each GPU, or of the HAMi slice.")
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs, as tensor-parallel ranks.")
@click.option("--context", type=int, help="Tokens per request (default: the model's maximum).")
@click.option("--concurrency", type=int, help="Requests served at once.")
@click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), default="auto", show_default=True)
@click.option("--runtime", type=click.Choice(["vllm", "sglang"]), default="vllm", show_default=True)
@click.option("--weights", type=click.Choice([p.value for p in Precision]), help="Quantize to this on load.")
@click.option("--memory-fraction", type=float, help="Default: the runtime's own (vLLM 0.90, SGLang 0.85).")
@click.option("--reserve-mib", type=int, default=DEFAULT_RESERVE_MIB, show_default=True, help="Activations, graphs.")
@json_option
@click.pass_context
def plan(ctx: click.Context, model_ref: str, as_json: bool, **asked: Any) -> None:
    """How MODEL (at VERSION, default the newest) fits a GPU or slice: weights and KV cache per GPU, concurrent
    requests at --context, the longest context at --concurrency, and the runtime flags that realise it.

    Exits 1 when it does not fit, saying why and what would."""
    name, version = _model_ref(model_ref)
    hardware = {k: v for k, v in asked.items() if v is not None}
    found = client_of(ctx).models.plan(name, version=version, **hardware)
    emit(found, as_json, lambda: click.echo("\n".join(describe(model_ref, found))))
    if not found.fits:
        ctx.exit(1)
