"""Real benchmark clients, unmodified, against Cove's gateway: `vllm bench serve`, GuideLLM and AIPerf.

Each client runs from its own venv with its own CLI, one profile at a fixed concurrency and one at a request rate,
streaming chat completions with an API key, and asks for a fixed output length the way its documentation says
(``ignore_eos``: the gateway translates it or drops it and says so). For each run this reads the client's own report
(requests sent, completed, failed; its TTFT and ITL at P50/P99; the tokens it counted) and the usage rows the
gateway wrote for that run (served / cancelled / errors and their tokens), so a client that "worked" but was metered
wrongly shows up too. A client that is not installed, or exits without a report, is listed with the reason; its run
is never left out silently.

Definitions differ between the clients (see benchmarks/RESULTS.md): vLLM's ITL is every gap between streamed chunks;
GuideLLM's "ITL" and AIPerf's "inter token latency" are each request's mean gap (vLLM's TPOT, roughly).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from studio.db import Database
from studio.services import usage
from studio.services.usage import CANCELLED


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where and what every client sends: the gateway, a deployment, its tokenizer folder, the request shape."""

    url: str
    key: str
    model: str
    tokenizer: str
    input_len: int
    output_len: int
    requests: int


@dataclass(frozen=True, kw_only=True)
class Load:
    """One profile: ``concurrency`` requests in flight, or ``rate`` requests per second (Poisson, as each client's
    default)."""

    concurrency: int | None = None
    rate: float | None = None

    def __str__(self) -> str:
        return f"concurrency {self.concurrency}" if self.concurrency else f"{self.rate:g} req/s"


@dataclass(frozen=True, kw_only=True)
class ClientRun:
    """What one client reported for one profile, in its own definitions; ``problem`` when it produced no report."""

    client: str
    load: str
    sent: int = 0
    completed: int = 0
    failed: int = 0
    ttft_ms: tuple[float, float] | None = None  # P50, P99
    itl_ms: tuple[float, float] | None = None  # P50, P99, in the client's own definition
    prompt_tokens: int | None = None  # the client's count of the prompts it sent (its tokenizer, no chat template)
    output_tokens: int | None = None  # the client's count of what it received
    problem: str | None = None


@dataclass(frozen=True)
class Metered:
    """The gateway's usage rows for one run."""

    rows: int = 0
    served: int = 0
    cancelled: int = 0
    errors: int = 0
    prompt_tokens: int = 0  # as the runtime counted them (chat template applied)
    completion_tokens: int = 0
    estimated: int = 0  # rows whose tokens the gateway counted itself (no usage from the runtime, or a cancel)


# ------------------------------------------------------------------------------------------------ running


def run_client(command: Sequence[str], log: Path, env: dict[str, str], timeout: float) -> str | None:
    """Runs a client's CLI to the end, its output into ``log``; returns why it failed, or None."""
    try:
        with log.open("wb") as sink:
            done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    except FileNotFoundError:
        return f"not installed: {command[0]}"
    except subprocess.TimeoutExpired:
        return f"still running after {timeout:.0f} s (log: {log})"
    if done.returncode != 0:
        last = log.read_text(errors="replace").strip().splitlines()[-3:]
        return f"exit {done.returncode}: {' | '.join(last)[-400:]} (log: {log})"
    return None


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def guidellm(cli: str, target: Target, load: Load, out: Path, timeout: float) -> ClientRun:
    report = out / "guidellm.json"
    profile = f"kind=concurrent,streams={load.concurrency}" if load.concurrency else f"kind=poisson,rate={load.rate:g}"
    command = [
        cli, "run",
        "--backend", f"kind=openai_http,target={target.url},model={target.model},api_key={target.key}",
        "--data", f"kind=synthetic_text,prompt_tokens={target.input_len},output_tokens={target.output_len}",
        "--tokenizer", f"kind=huggingface_auto,model={target.tokenizer}",
        "--profile", profile, "--constraint", f"kind=max_requests,count={target.requests}",
        "--output", f"kind=json,path={report}", "--disable-console-interactive",
    ]  # fmt: skip
    run = ClientRun(client=f"GuideLLM {version(cli, 'guidellm')}", load=str(load))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if problem := run_client(command, out / "guidellm.log", env, timeout) or missing(report):
        return replace(run, problem=problem)
    return read_guidellm(run, json.loads(report.read_text()))


def read_guidellm(run: ClientRun, report: dict[str, Any]) -> ClientRun:
    """GuideLLM's JSON report: its first benchmark's requests (errored and incomplete ones are failures) and its
    own percentiles of TTFT and of its "ITL" (each request's mean gap)."""
    bench = report["benchmarks"][0]
    requests = bench["requests"]
    done = requests["successful"]
    failed = len(requests["errored"]) + len(requests.get("incomplete") or [])
    pct = bench["metrics"]
    return replace(
        run,
        sent=len(done) + failed,
        completed=len(done),
        failed=failed,
        ttft_ms=p50_p99(pct["time_to_first_token_ms"]["successful"]["percentiles"], "p50", "p99"),
        itl_ms=p50_p99(pct["inter_token_latency_ms"]["successful"]["percentiles"], "p50", "p99"),
        prompt_tokens=sum(r.get("prompt_tokens") or 0 for r in done),
        output_tokens=sum(r.get("output_tokens") or 0 for r in done),
    )


def aiperf(cli: str, target: Target, load: Load, out: Path, timeout: float) -> ClientRun:
    artifacts = out / "aiperf"
    shape = ["--concurrency", str(load.concurrency)] if load.concurrency else ["--request-rate", f"{load.rate:g}"]
    command = [
        cli, "profile", "--model", target.model, "--url", target.url, "--endpoint-type", "chat", "--streaming",
        "--api-key", target.key, *shape, "--request-count", str(target.requests),
        "--isl", str(target.input_len), "--osl", str(target.output_len), "--extra-inputs", "ignore_eos:true",
        "--tokenizer", target.tokenizer, "--artifact-dir", str(artifacts), "--ui-type", "none",
    ]  # fmt: skip
    run = ClientRun(client=f"AIPerf {version(cli, 'aiperf')}", load=str(load))
    # AIPerf 0.13.0 in offline mode looks every tokenizer name up in the Hub cache with snapshot_download, which
    # refuses a folder path (HFValidationError); online mode loads a local folder directly and needs no network.
    env = without(dict(os.environ), "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    report = artifacts / "profile_export_aiperf.json"
    if problem := run_client(command, out / "aiperf.log", env, timeout) or missing(report):
        return replace(run, problem=problem)
    return read_aiperf(run, json.loads(report.read_text()))


def read_aiperf(run: ClientRun, summary: dict[str, Any]) -> ClientRun:
    """AIPerf's ``profile_export_aiperf.json``: ``request_count`` counts the successful requests,
    ``error_request_count`` the failed ones (absent when there are none); its "inter token latency" is each request's
    mean gap."""

    def total(name: str) -> int:
        return int((summary.get(name) or {}).get("avg") or 0)

    failed = total("error_request_count")
    completed = total("request_count")
    return replace(
        run,
        sent=completed + failed,
        completed=completed,
        failed=failed,
        ttft_ms=p50_p99(summary["time_to_first_token"], "p50", "p99"),
        itl_ms=p50_p99(summary["inter_token_latency"], "p50", "p99"),
        prompt_tokens=total("total_isl"),
        output_tokens=total("total_osl"),
    )


def vllm_bench(cli: str, target: Target, load: Load, out: Path, timeout: float) -> ClientRun:
    shape = ["--max-concurrency", str(load.concurrency)] if load.concurrency else []
    command = [
        cli, "bench", "serve", "--backend", "openai-chat", "--base-url", target.url,
        "--endpoint", "/v1/chat/completions", "--model", target.model, "--tokenizer", target.tokenizer,
        "--dataset-name", "random", "--random-input-len", str(target.input_len),
        "--random-output-len", str(target.output_len), "--num-prompts", str(target.requests), "--ignore-eos",
        *shape, "--request-rate", f"{load.rate:g}" if load.rate else "inf",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(out), "--result-filename", "vllm.json",
    ]  # fmt: skip
    run = ClientRun(client=f"vllm bench serve {version(cli, 'vllm')}", load=str(load))
    env = {**os.environ, "OPENAI_API_KEY": target.key, "HF_HUB_OFFLINE": "1"}
    report = out / "vllm.json"
    if problem := run_client(command, out / "vllm.log", env, timeout) or missing(report):
        return replace(run, problem=problem)
    return read_vllm(run, json.loads(report.read_text()))


def read_vllm(run: ClientRun, result: dict[str, Any]) -> ClientRun:
    """``vllm bench serve --save-result``'s JSON, with ``--metric-percentiles 50,99``: its ITL is every gap."""
    completed = int(result["completed"])
    failed = int(result.get("failed", int(result["num_prompts"]) - completed))
    return replace(
        run,
        sent=completed + failed,
        completed=completed,
        failed=failed,
        ttft_ms=p50_p99(result, "p50_ttft_ms", "p99_ttft_ms"),
        itl_ms=p50_p99(result, "p50_itl_ms", "p99_itl_ms"),
        prompt_tokens=int(result["total_input_tokens"]),
        output_tokens=int(result["total_output_tokens"]),
    )


Runner = Callable[[str, Target, Load, Path, float], ClientRun]
CLIENTS: dict[str, Runner] = {"vllm": vllm_bench, "guidellm": guidellm, "aiperf": aiperf}


def missing(report: Path) -> str | None:
    return None if report.exists() else f"exited 0 but wrote no report at {report}"


def p50_p99(values: dict[str, Any], p50: str, p99: str) -> tuple[float, float] | None:
    if values.get(p50) is None or values.get(p99) is None:
        return None
    return float(values[p50]), float(values[p99])


def version(cli: str, package: str) -> str:
    """The package's version in the venv that holds ``cli`` (its ``bin/`` folder), without importing it."""
    found = sorted(Path(cli).resolve().parent.parent.glob(f"lib/python*/site-packages/{package}-*.dist-info"))
    return found[0].name.removeprefix(f"{package}-").removesuffix(".dist-info") if found else "?"


# ------------------------------------------------------------------------------------------------ the gateway's side


def last_usage_id(db: Database, deployment: str) -> int:
    rows = usage.usage_records(db=db, deployment=deployment, limit=1)
    return rows[0].id or 0 if rows else 0


def metered(db: Database, deployment: str, after: int, expected: int, timeout: float = 30) -> Metered:
    """The usage rows of ``deployment`` written after row ``after``, once there are ``expected`` of them (the
    gateway writes them in batches) or ``timeout`` has passed (then with what is there: fewer rows than requests
    is itself a finding)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in usage.usage_records(db=db, deployment=deployment, limit=100_000) if (r.id or 0) > after]
        if len(rows) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    served = [r for r in rows if r.status_code < 400]
    cancelled = [r for r in rows if r.status_code == CANCELLED]
    billed = served + cancelled
    return Metered(
        rows=len(rows),
        served=len(served),
        cancelled=len(cancelled),
        errors=len(rows) - len(billed),
        prompt_tokens=sum(r.prompt_tokens for r in billed),
        completion_tokens=sum(r.completion_tokens for r in billed),
        estimated=sum(r.estimated for r in rows),
    )


# ------------------------------------------------------------------------------------------------ reporting


def row(run: ClientRun, gateway: Metered | None) -> str:
    def pair(values: tuple[float, float] | None) -> str:
        return f"{values[0]:.0f}/{values[1]:.0f}" if values else "-"

    if run.problem:
        seen = f" (gateway rows: {gateway.rows})" if gateway else ""
        return f"{run.client:<24}{run.load:<16}DID NOT RUN: {run.problem}{seen}"
    client = f"{run.sent}/{run.completed}/{run.failed}"
    tokens = f"{run.prompt_tokens}/{run.output_tokens}"
    mine = "-"
    if gateway is not None:
        mine = (
            f"{gateway.rows}: {gateway.served}/{gateway.cancelled}/{gateway.errors}  "
            f"{gateway.prompt_tokens}/{gateway.completion_tokens}"
        )
    latency = f"{pair(run.ttft_ms):>12}{pair(run.itl_ms):>11}"
    return f"{run.client:<24}{run.load:<16}{client:>11}{latency}{tokens:>13}  {mine}"


HEADER = (
    f"{'client':<24}{'load':<16}{'sent/ok/err':>11}{'TTFT P50/99':>12}{'ITL P50/99':>11}{'tok in/out':>13}  "
    "gateway rows: served/cancelled/errors  tokens in/out"
)


def run_all(
    *,
    db: Database,
    target: Target,
    clis: dict[str, str],
    loads: Sequence[Load],
    out: Path,
    timeout: float = 600,
) -> list[tuple[ClientRun, Metered]]:
    """Every client in ``clis`` (name in CLIENTS → its CLI) with every load, one after another; prints each row as
    it comes and returns them all."""
    print(HEADER, flush=True)
    results = []
    for name, cli in clis.items():
        for load in loads:
            folder = out / f"{name}-{str(load).replace(' ', '-').replace('/', '')}"
            folder.mkdir(parents=True, exist_ok=True)
            before = last_usage_id(db, target.model)
            run = CLIENTS[name](cli, target, load, folder, timeout)
            expected = run.sent
            # a client that failed may still have sent requests: what the gateway made of them is shown too
            gateway = metered(db, target.model, before, expected, timeout=5 if run.problem else 30)
            print(row(run, gateway), flush=True)
            results.append((run, gateway))
    return results
