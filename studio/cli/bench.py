"""`cove bench DEPLOYMENT`: a serving benchmark from this process against the gateway (or one replica's URL).

One step at a fixed concurrency or request rate, or an SLO sweep for the largest rate (or concurrency) that meets
every ``--slo``. Progress goes to stderr; the summary (as ``vllm bench serve`` prints it) or ``--json`` to stdout.
Exits 1 when no request succeeded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from studio.benchmark import Arrival, BenchPlan, BenchResult, Load, StepSummary, Sweep, Workload, parse_slos
from studio.cli.base import cli, emit, json_option, settings_of, table
from studio.errors import InvalidSpec

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


@cli.command("bench")
@click.argument("deployment")
@click.option("--url", help="An OpenAI-compatible base URL. Default: this Cove's gateway.")
@click.option("--key", envvar="COVE_API_KEY", help="An API key for the gateway (default: COVE_API_KEY).")
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
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), help="Size prompts with this tokenizer.")
@click.option("--requests", type=int, help="Requests in a step (default 100 unless --duration-s).")
@click.option("--duration-s", type=float, help="Seconds a step sends requests for.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the result JSON here too.")
@json_option
@click.pass_context
def bench(ctx: click.Context, deployment: str, as_json: bool, **o: Any) -> None:
    """Benchmark DEPLOYMENT with vLLM's metrics (TTFT, TPOT, ITL, E2EL at mean, P50–P99; goodput; throughput).

    --concurrency N or --rate R runs one step; --slo alone sweeps for the largest rate (or --sweep concurrency)
    meeting every SLO, and says how sure it is."""
    slos = parse_slos(o["slos"])
    workload = Workload(
        input_len=o["input_len"],
        output_len=o["output_len"],
        range_ratio=o["range_ratio"],
        prefix_len=o["prefix_len"],
        seed=o["seed"],
    )
    common: dict[str, Any] = {
        "url": o["url"] or settings_of(ctx).gateway_url,
        "model": deployment,
        "endpoint": o["endpoint"],
        "tokenizer": o["tokenizer"],
        "workload": workload,
    }
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
        plan = BenchPlan(**common, sweep=sweep)
    else:
        load = Load(rate=o["rate"], concurrency=o["concurrency"], arrival=arrival, burstiness=o["burstiness"])
        requests = o["requests"] or (None if o["duration_s"] else 100)
        plan = BenchPlan(**common, load=load, requests=requests, duration_s=o["duration_s"], slos=slos)
    from studio.loadgen import run_plan

    result = asyncio.run(run_plan(plan, api_key=o["key"], say=lambda line: click.echo(line, err=True)))
    if o["out"] is not None:
        o["out"].write_text(result.model_dump_json(indent=2))
    emit(result, as_json, lambda: show(result))
    if not any(step.completed for step in result.steps):
        first = next((e for step in result.steps for e in step.error_examples), "")
        click.secho(f"error: no request succeeded ({first})", fg="red", err=True)
        click.echo("  next: check --url, the deployment's name and that it is ready, and the key", err=True)
        ctx.exit(1)
