"""`cove bench DEPLOYMENT`: a serving benchmark of a deployment, run by the server and stored (``--local``, or
``--url``: from this process); `cove bench list|show|compare|delete` read the stored runs.

One step at a fixed concurrency or request rate, or an SLO sweep for the largest rate (or concurrency) that meets
every ``--slo``. Progress goes to stderr; the summary (as ``vllm bench serve`` prints it) or ``--json`` to stdout.
Exits 1 when no request succeeded (or the stored run failed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from studio.benchmark import (
    Arrival,
    BenchPlan,
    BenchResult,
    BenchSpec,
    Load,
    StepSummary,
    Sweep,
    Workload,
    parse_slos,
)
from studio.cli.base import cli, client_of, emit, json_option, remote, server_running, settings_of, table
from studio.cli.deploy import _model_ref
from studio.errors import CoveError, InvalidSpec
from studio.models import BenchmarkRunPublic

RULE = 50


def _row(label: str, value: Any) -> str:
    shown = f"{value:.2f}" if isinstance(value, float) else ("–" if value is None else str(value))
    return f"{label:<40}{shown:>10}"


def describe_step(step: StepSummary) -> list[str]:
    """One step's summary in the layout of vLLM's benchmark."""
    lines = [" Serving Benchmark Result ".center(RULE, "=")]
    lines += [
        _row("Load:", step.load.words()),
        _row("Successful requests:", step.completed),
        _row("Failed requests:", step.errors),
        _row("Benchmark duration (s):", step.duration_s),
        _row("Total input tokens:", step.input_tokens),
        _row("Total generated tokens:", step.output_tokens),
        _row("Request throughput (req/s):", step.request_throughput),
        _row("Output token throughput (tok/s):", step.output_throughput),
    ]
    if step.goodput is not None:
        lines += [_row("Request goodput (req/s):", step.goodput), _row("SLO attainment (%):", step.slo_attainment_pct)]
    for title, short, stats in (
        ("Time to First Token", "TTFT", step.ttft),
        ("Time per Output Token (excl. 1st token)", "TPOT", step.tpot),
        ("Inter-token Latency", "ITL", step.itl),
        ("End-to-end Latency", "E2EL", step.e2el),
    ):
        lines.append(f" {title} ".center(RULE, "-"))
        lines.append(_row(f"Mean {short} (ms):", stats.mean))
        lines += [_row(f"{name.upper()} {short} (ms):", getattr(stats, name)) for name in ("p50", "p90", "p95", "p99")]
    for c in step.checks:
        lines.append(f"SLO {c.slo}: {c.value_ms or 0:.1f} ms, {'met' if c.met else 'MISSED'}")
    if step.error_examples:
        lines.append("errors: " + "; ".join(step.error_examples))
    if step.saturated:
        lines.append("the server did not keep up: completions fell behind arrivals (saturated)")
    lines.append("=" * RULE)
    return lines


def show(result: BenchResult) -> None:
    if result.sweep is None:
        click.echo("\n".join(describe_step(result.steps[0])))
        return
    rows = []
    for value, step in zip(result.sweep.probes, result.steps, strict=True):
        checks = "  ".join(f"{c.value_ms or 0:.0f}{'' if c.met else '!'}" for c in step.checks)
        rows.append(
            [f"{value:g}", step.completed, step.errors, f"{step.request_throughput:.2f}", f"{step.e2el.p99 or 0:.0f}",
             checks, "yes" if step.saturated else "", "yes" if step.cut_short else ""]
        )  # fmt: skip
    slos = " ".join(s.text for s in result.plan.sweep.slos) if result.plan.sweep else ""
    headers = [result.sweep.over, "done", "errors", "req/s", "p99 E2EL ms", f"SLOs ms ({slos})", "saturated", "cut"]
    table(headers, rows)
    click.echo("")
    click.echo(result.sweep.statement)


class BenchGroup(click.Group):
    """`cove bench DEPLOYMENT …` is `cove bench run DEPLOYMENT …`: the first word is a deployment unless it names a
    subcommand (a deployment called ``list`` is `cove bench run list`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@cli.group("bench", cls=BenchGroup)
def bench() -> None:
    """Serving benchmarks: `cove bench DEPLOYMENT …` runs one (stored, run by the server; --local here), and
    list, show, compare and delete read the stored runs."""


def spec_of(o: dict[str, Any]) -> BenchSpec:
    """The options as a ``BenchSpec``: one step (--concurrency / --rate) or an SLO sweep (--slo alone)."""
    slos = parse_slos(o["slos"])
    workload = Workload(
        input_len=o["input_len"],
        output_len=o["output_len"],
        range_ratio=o["range_ratio"],
        prefix_len=o["prefix_len"],
        seed=o["seed"],
    )
    arrival = Arrival(o["arrival"])
    if o["rate"] is None and o["concurrency"] is None:
        if not slos:
            raise InvalidSpec("say what load to offer", hint="give --concurrency N, --rate R, or --slo for a sweep")
        sweep = Sweep(
            slos=slos,
            over=o["sweep_over"],
            start=o["start"] or 1.0,
            min_samples=o["min_samples"],
            max_probes=o["max_probes"],
            arrival=arrival,
            burstiness=o["burstiness"],
        )
        return BenchSpec(endpoint=o["endpoint"], workload=workload, sweep=sweep)
    load = Load(rate=o["rate"], concurrency=o["concurrency"], arrival=arrival, burstiness=o["burstiness"])
    requests = o["requests"] or (None if o["duration_s"] else 100)
    return BenchSpec(
        endpoint=o["endpoint"], workload=workload, load=load, requests=requests, duration_s=o["duration_s"], slos=slos
    )


def _failed(ctx: click.Context, result: BenchResult) -> None:
    if not any(step.completed for step in result.steps):
        first = next((e for step in result.steps for e in step.error_examples), "")
        click.secho(f"error: no request succeeded ({first})", fg="red", err=True)
        click.echo("  next: check --url, the deployment's name and that it is ready, and the key", err=True)
        ctx.exit(1)


@bench.command("run")
@click.argument("deployment")
@click.option("--local", is_flag=True, help="Run it from this process (not stored) rather than on the server.")
@click.option("--url", help="With --local: an OpenAI-compatible base URL. Default: this Cove's gateway.")
@click.option("--key", envvar="COVE_API_KEY", help="With --local: a key for the gateway (default: COVE_API_KEY).")
@click.option("--replica", type=int, help="Straight to this replica (its index among the ready ones), not the gateway.")
@click.option("--dataset", "dataset_ref", help="Lengths from a dataset's rows: DATASET or DATASET:VERSION.")
@click.option("--words", is_flag=True, help="Size prompts in common words, not with the deployment's tokenizer.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the stored run to its end.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait for the stored run.")
@click.option("--endpoint", type=click.Choice(["chat", "completions"]), default="chat", show_default=True)
@click.option("--concurrency", type=int, help="Requests in flight: alone, each answer is followed by the next.")
@click.option("--rate", type=float, help="Requests per second offered.")
@click.option("--arrival", type=click.Choice([a.value for a in Arrival]), default="poisson", show_default=True)
@click.option("--burstiness", type=float, default=1.0, show_default=True, help="Bursty arrivals' gamma shape.")
@click.option("--slo", "slos", multiple=True, help="E.g. p99_e2el_ms<=2000 (repeatable). Alone: an SLO sweep.")
@click.option("--sweep", "sweep_over", type=click.Choice(["rate", "concurrency"]), default="rate", show_default=True)
@click.option("--start", type=float, help="The sweep's first rate (default 1) or concurrency (default 1).")
@click.option("--min-samples", type=int, default=50, show_default=True, help="Requests per sweep step, at least.")
@click.option("--max-probes", type=int, default=12, show_default=True)
@click.option("--input-len", type=int, default=256, show_default=True, help="Prompt tokens (mean).")
@click.option("--output-len", type=int, default=128, show_default=True, help="Output tokens (mean).")
@click.option("--range-ratio", type=float, default=0.0, show_default=True, help="Lengths uniform in mean×(1±r).")
@click.option("--prefix-len", type=int, default=0, show_default=True, help="Tokens of a prefix every prompt shares.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), help="With --local: size prompts with it.")
@click.option("--requests", type=int, help="Requests in a step (default 100 unless --duration-s).")
@click.option("--duration-s", type=float, help="Seconds a step sends requests for.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the result JSON here too.")
@json_option
@click.pass_context
def bench_run(ctx: click.Context, deployment: str, as_json: bool, **o: Any) -> None:
    """Benchmark DEPLOYMENT with vLLM's metrics (TTFT, TPOT, ITL, E2EL at mean, P50–P99; goodput; throughput).

    --concurrency N or --rate R runs one step; --slo alone sweeps for the largest rate (or --sweep concurrency)
    meeting every SLO, and says how sure it is. The server runs it and keeps the result per deployment and model
    version (`cove bench list`); --local (or --url) runs it from this process instead."""
    spec = spec_of(o)
    if o["local"] or o["url"] is not None:
        _run_here(ctx, deployment, spec, as_json, o)
        return
    dataset, dataset_version = _model_ref(o["dataset_ref"]) if o["dataset_ref"] else (None, None)
    client = client_of(ctx)
    created = client.benchmarks.create(
        deployment,
        spec,
        target="gateway" if o["replica"] is None else "replica",
        replica=o["replica"],
        dataset=dataset,
        dataset_version=dataset_version,
        tokenizer=not o["words"],
    )
    click.echo(
        f"benchmark run {created.id}: {created.deployment} ({created.model} v{created.model_version}), "
        f"{created.spec.words()}",
        err=True,
    )
    if not o["wait"]:
        emit(created, as_json, lambda: None)
        return
    settings = settings_of(ctx)
    if not remote(ctx) and not server_running(settings):
        click.echo(f"note: no Cove server answers at {settings.gateway_url}; it runs when one does", err=True)
    try:
        done = client.benchmarks.wait(
            created.id,
            timeout=o["timeout"],
            on_progress=lambda r: click.echo(f"run {r.id}: {r.status.value} {r.progress}".rstrip(), err=True),
        )
    except CoveError as exc:
        click.secho(str(exc), fg="red", err=True)
        ctx.exit(1)
        return
    assert done.result is not None
    if o["out"] is not None:
        o["out"].write_text(done.result.model_dump_json(indent=2))
    emit(done, as_json, lambda: show(done.result))  # type: ignore[arg-type]


def _run_here(ctx: click.Context, deployment: str, spec: BenchSpec, as_json: bool, o: dict[str, Any]) -> None:
    if o["dataset_ref"] or o["replica"] is not None:
        raise InvalidSpec("--dataset and --replica are for runs on the server", hint="leave out --local and --url")
    plan = BenchPlan(
        **spec.model_dump(), url=o["url"] or settings_of(ctx).gateway_url, model=deployment, tokenizer=o["tokenizer"]
    )
    from studio.loadgen import run_plan

    result = asyncio.run(run_plan(plan, api_key=o["key"], say=lambda line: click.echo(line, err=True)))
    if o["out"] is not None:
        o["out"].write_text(result.model_dump_json(indent=2))
    emit(result, as_json, lambda: show(result))
    _failed(ctx, result)


def _answer(run: BenchmarkRunPublic) -> str:
    if run.max_rate is not None:
        unit = "req/s" if run.spec.sweep and run.spec.sweep.over == "rate" else "concurrent"
        return f"max {run.max_rate:g} {unit}"
    return (run.message.splitlines() or [""])[0][:60]


@bench.command("list")
@click.option("--deployment", help="Only this deployment's runs.")
@click.option("--model", "model_ref", help="Only this model's (MODEL or MODEL:VERSION).")
@json_option
@click.pass_context
def bench_list(ctx: click.Context, deployment: str | None, model_ref: str | None, as_json: bool) -> None:
    """Stored benchmark runs, newest first."""
    model, version = _model_ref(model_ref) if model_ref else (None, None)
    found = list(client_of(ctx).benchmarks.list(deployment=deployment, model=model, version=version))
    rows = [
        [str(r.id), r.status.value, r.deployment, f"{r.model}:{r.model_version}", r.target, r.spec.words(), _answer(r)]
        for r in found
    ]
    emit(found, as_json, lambda: table(["ID", "STATUS", "DEPLOYMENT", "MODEL", "TARGET", "RUN", "FOUND"], rows))


@bench.command("show")
@click.argument("run_id", type=int)
@json_option
@click.pass_context
def bench_show(ctx: click.Context, run_id: int, as_json: bool) -> None:
    """One stored run: what it ran and what it found, step by step."""
    found = client_of(ctx).benchmarks.get(run_id)

    def human() -> None:
        click.echo(
            f"benchmark run {found.id}: {found.status.value}; {found.deployment} ({found.model} v{found.model_version})"
            f" through the {found.target}; {found.spec.words()}"
        )
        if found.result is not None:
            show(found.result)
        elif found.message or found.progress:
            click.echo(found.message or found.progress)

    emit(found, as_json, human)


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


@bench.command("compare")
@click.argument("a", type=int)
@click.argument("b", type=int)
@json_option
@click.pass_context
def bench_compare(ctx: click.Context, a: int, b: int, as_json: bool) -> None:
    """Two stored runs side by side: each metric at each percentile, the max rate, goodput; B − A."""
    found = client_of(ctx).benchmarks.compare(a, b)
    rows = [
        [d.name, _figure(d.a), _figure(d.b), _figure(d.delta), "–" if d.pct is None else f"{d.pct:+.1f} %"]
        for d in found
    ]
    emit(found, as_json, lambda: table(["", f"run {a}", f"run {b}", "B − A", "%"], rows))


@bench.command("delete")
@click.argument("run_id", type=int)
@click.pass_context
def bench_delete(ctx: click.Context, run_id: int) -> None:
    client_of(ctx).benchmarks.delete(run_id)
    click.echo(f"deleted benchmark run {run_id}")
