"""`cove bench` next to GuideLLM on one server and one workload: the same percentiles, and the same SLO limit.

Sets up a throwaway COVE_HOME whose one deployment runs ``tests/fakes/knee_server.py`` (K slots, one token every
D ms, so a request alone takes S = output × D and the server completes at most K / S requests/s), starts the real
``cove server`` and sends everything through its gateway with an API key. Then, in this one run:

1. **Percentiles.** The same steps (a fixed concurrency, then a constant request rate; the same input and output
   lengths and request count) with GuideLLM's CLI and with ``studio.loadgen`` (what ``cove bench`` runs). Prints
   TTFT, TPOT, E2EL (and Cove's per-gap ITL) at P50/P90/P99 for each tool and their relative difference. GuideLLM's
   numbers are read from its JSON: as it reports them, and recomputed from its per-request timings with Cove's
   percentile (numpy's linear interpolation), which separates a difference of measurement from one of method.
2. **The limit.** GuideLLM's ``goodput`` profile (doubling then bisecting concurrency until the share of requests
   meeting ``e2el <= 1.5 × S`` reaches 95 %) next to Cove's sweep over concurrency and over request rate against
   ``p95_e2el_ms <= 1.5 × S`` (the same criterion): the limit each finds, how many probes it took, and Cove's
   statement of how sure it is. By design the rate limit is K / S (under constant arrivals); the concurrency limit
   lies a little above K (past K some requests wait for a slot, how long depends on how completions spread out).

Definitions where the tools differ (see benchmarks/RESULTS.md): GuideLLM's "ITL" is each request's mean gap,
``(last token - first token) / (output - 1)``, which is vLLM's TPOT ended at the last token instead of the stream's
end; vLLM's (and Cove's) ITL is every gap of every request. So GuideLLM's ITL is set beside Cove's TPOT.

    .venv/bin/python benchmarks/bench_validation.py [--guidellm /tmp/gllm/bin/guidellm] [--tokenizer DEMO_FOLDER]

``--compat`` instead runs the three real clients (`vllm bench serve`, GuideLLM, AIPerf; each from its own venv,
``--vllm``/``--guidellm``/``--aiperf``) against the demo model behind the gateway, and sets what each reported beside
what the gateway metered (``benchmarks/client_compat.py``). A client that is not installed is listed with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import client_compat  # noqa: E402
from benchmarks.gateway_overhead import (  # noqa: E402
    PYTHON,
    CoveServer,
    bench_settings,
    cove_home,
    wait_ready,
    write_fake_model,
)
from studio.benchmark import (  # noqa: E402
    Arrival,
    BenchPlan,
    BenchResult,
    Load,
    StepSummary,
    Sweep,
    Workload,
    percentile,
)
from studio.bootstrap import open_studio  # noqa: E402
from studio.db import Database  # noqa: E402
from studio.loadgen import run_plan  # noqa: E402
from studio.models import ApiKeyCreate, DeploymentCreate, ImageCreate, ModelCreate  # noqa: E402
from studio.services import deployments, images, keys, models, users  # noqa: E402
from studio.values import Principal, Resources  # noqa: E402

KNEE = ROOT / "tests" / "fakes" / "knee_server.py"
DEPLOYMENT = "knee"
QUANTILES = (50, 90, 99)


# ------------------------------------------------------------------------------------------------ set-up


def set_up(db: Database, home: Path, admin: Principal, slots: int, token_ms: float) -> str:
    """The knee server as a custom image, deployed as ``knee`` by the admin; returns an API key's secret."""
    models.add_model(
        db=db,
        actor=admin,
        data=ModelCreate(name="tiny", source=str(write_fake_model(home / "tiny-model"))),
        cache_dir=home / "models",
    )
    command = [PYTHON, str(KNEE), "--port", "{port}", "--slots", str(slots), "--token-ms", str(token_ms)]
    images.add_image(
        db=db,
        actor=admin,
        data=ImageCreate(name="knee", version="1", ref="example.com/cove/knee", local_command=command),
    )
    deployments.create_deployment(
        db=db,
        actor=admin,
        data=DeploymentCreate(
            name=DEPLOYMENT, model="tiny", image="knee", resources=Resources(cpu=0.5, memory_mib=256)
        ),
    )
    return keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name="bench-validation")).key


# ------------------------------------------------------------------------------------------------ GuideLLM


def guidellm(
    args: argparse.Namespace,
    url: str,
    key: str,
    out: Path,
    *extra: str,
    model: str = DEPLOYMENT,
    input_len: int | None = None,
    output_len: int | None = None,
) -> dict[str, Any]:
    """Runs GuideLLM's CLI unmodified against ``url`` and returns its JSON report."""
    lengths = f"prompt_tokens={input_len or args.input_len},output_tokens={output_len or args.output_len}"
    command = [
        args.guidellm,
        "run",
        "--backend",
        f"kind=openai_http,target={url},model={model},api_key={key}",
        "--data",
        f"kind=synthetic_text,{lengths}",
        "--tokenizer",
        f"kind=huggingface_auto,model={args.tokenizer}",
        "--output",
        f"kind=json,path={out}",
        "--disable-console-interactive",
        *extra,
    ]
    log = out.with_suffix(".log")
    began = time.perf_counter()
    with log.open("wb") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"guidellm exited with {done.returncode}:\n{tail}")
    print(f"  guidellm ran {time.perf_counter() - began:.0f} s (its log: {log})")
    return dict(json.loads(out.read_text()))


def guidellm_values(benchmark: dict[str, Any]) -> dict[str, list[float]]:
    """Per successful request, in ms, from GuideLLM's timings: TTFT, its ITL (a request's mean gap), E2EL."""
    values: dict[str, list[float]] = {"ttft": [], "tpot": [], "e2el": []}
    for request in benchmark["requests"]["successful"]:
        t = request["info"]["timings"]
        values["ttft"].append(1000 * (t["first_token_iteration"] - t["request_start"]))
        values["e2el"].append(1000 * (t["request_end"] - t["request_start"]))
        if (itl := request.get("inter_token_latency_ms")) is not None:
            values["tpot"].append(itl)
    return values


def guidellm_reported(benchmark: dict[str, Any]) -> dict[str, dict[int, float]]:
    """GuideLLM's own percentiles (ms) of TTFT, its ITL (set beside TPOT) and request latency."""
    metrics = benchmark["metrics"]
    named = {"ttft": "time_to_first_token_ms", "tpot": "inter_token_latency_ms", "e2el": "request_latency"}
    reported = {}
    for ours, theirs in named.items():
        pct = metrics[theirs]["successful"]["percentiles"]
        scale = 1000 if ours == "e2el" else 1  # request latency is in seconds
        reported[ours] = {q: pct[f"p{q:02d}"] * scale for q in QUANTILES}
    return reported


# ------------------------------------------------------------------------------------------------ Cove


def cove(plan: BenchPlan, key: str) -> BenchResult:
    def say(line: str) -> None:  # a sweep's probes and verdicts as they come; a step's progress lines are left out
        if line.startswith(("probe", "  pass", "  FAIL")):
            print(f"  {line.strip()}", flush=True)

    began = time.perf_counter()
    result = asyncio.run(run_plan(plan, api_key=key, say=say))
    print(f"  cove bench ran {time.perf_counter() - began:.0f} s")
    return result


def cove_stats(step: StepSummary) -> dict[str, dict[int, float]]:
    return {
        m: {q: getattr(getattr(step, m), f"p{q}") or 0.0 for q in QUANTILES} for m in ("ttft", "tpot", "itl", "e2el")
    }


# ------------------------------------------------------------------------------------------------ reporting


def compare(title: str, ours: StepSummary, report: dict[str, Any]) -> float:
    """Prints one step's table; returns the largest relative difference (Cove vs GuideLLM recomputed)."""
    bench = report["benchmarks"][0]
    recomputed = {m: {q: percentile(v, q) for q in QUANTILES} for m, v in guidellm_values(bench).items()}
    reported = guidellm_reported(bench)
    mine = cove_stats(ours)
    done = len(bench["requests"]["successful"])
    failed = len(bench["requests"]["errored"])
    print(f"\n{title}: cove {ours.completed} done / {ours.errors} errors; guidellm {done} done / {failed} errors")
    print(f"{'metric':<10}{'cove ms':>10}{'guidellm ms':>13}{'(reported)':>12}{'diff':>9}")
    worst = 0.0
    for metric in ("ttft", "tpot", "e2el"):
        for q in QUANTILES:
            a, b, shown = mine[metric][q], recomputed[metric][q], reported[metric][q]
            diff = (a - b) / b * 100 if b else 0.0
            worst = max(worst, abs(diff))
            label = f"P{q} {metric.upper()}" + (" (GuideLLM ITL)" if metric == "tpot" else "")
            print(f"{label:<10}{a:>10.1f}{b:>13.1f}{shown:>12.1f}{diff:>+8.1f}%")
    itl = mine["itl"]
    print(f"cove's per-gap ITL (no GuideLLM equivalent): P50 {itl[50]:.1f}, P90 {itl[90]:.1f}, P99 {itl[99]:.1f} ms")
    return worst


def goodput_answer(report: dict[str, Any]) -> tuple[int | None, list[int]]:
    """GuideLLM goodput's limit and the concurrencies it probed, from its JSON report."""
    conclusion = next(
        (c for c in report.get("conclusions") or [] if isinstance(c, dict) and "probes" in json.dumps(c)), None
    )
    search = conclusion.get("conclusion", conclusion) if conclusion else None
    if search is None:  # older layouts: one benchmark per probe
        probes = [int(b["config"]["strategy"]["streams"]) for b in report["benchmarks"]]
        return None, probes
    return search.get("best_passing_streams"), [p["streams"] for p in search.get("probes", [])]


def cove_sweeps(args: argparse.Namespace, base: dict[str, Any], key: str, slo: str, service_ms: float) -> None:
    """Cove's sweep over concurrency (from 4, as GuideLLM's goodput) and over request rate (from a quarter of the
    designed capacity), printing each one's answer and statement."""
    for over, start in (("concurrency", 4.0), ("rate", args.slots / service_ms * 1000 / 4)):
        began = time.perf_counter()
        sweep = Sweep(slos=[slo], over=over, start=start, min_samples=args.probe_requests, arrival=Arrival.CONSTANT)  # type: ignore[arg-type]
        answer = cove(BenchPlan(**base, sweep=sweep), key).sweep
        assert answer is not None
        print(
            f"Cove sweep over {over}: {answer.value} ({len(answer.probes)} probes: {answer.probes}; "
            f"{time.perf_counter() - began:.0f} s; confident: {answer.confident})"
        )
        print(f"  {answer.statement}")


# ------------------------------------------------------------------------------------------------ compatibility


def compat(args: argparse.Namespace, db: Database, admin: Principal, url: str, key: str, home: Path) -> None:
    """`vllm bench serve`, GuideLLM and AIPerf, unmodified, against the gateway in front of the demo model on
    ``transformers serve``: a fixed concurrency and a request rate each, with what each client reported and what the
    gateway metered (``benchmarks/client_compat.py``)."""
    models.register_built(
        db=db, actor=admin, name="demo-chat", folder=Path(args.tokenizer), repo_id="cove/demo-chat",
        cache_dir=home / "models",
    )  # fmt: skip
    deployments.create_deployment(
        db=db,
        actor=admin,
        data=DeploymentCreate(name="demo", model="demo-chat", resources=Resources(cpu=1, memory_mib=1024)),
    )
    wait_ready(db, admin, "demo", 300, home / "server.log")
    out = Path(tempfile.mkdtemp(prefix="compat-", dir=home))
    target = client_compat.Target(
        url=url, key=key, model="demo", tokenizer=str(Path(args.tokenizer).resolve()),
        input_len=args.compat_input_len, output_len=args.compat_output_len, requests=args.compat_requests,
    )  # fmt: skip
    loads = [client_compat.Load(concurrency=args.compat_concurrency), client_compat.Load(rate=args.compat_rate)]
    clis = {"vllm": args.vllm, "guidellm": args.guidellm, "aiperf": args.aiperf}
    print(
        f"\n== compatibility: the demo model on transformers serve behind {url}; {target.requests} requests of "
        f"{target.input_len} in / {target.output_len} out tokens (ignore_eos asked) per run; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    client_compat.run_all(db=db, target=target, clis=clis, loads=loads, out=out)


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guidellm", default="/tmp/gllm/bin/guidellm", help="GuideLLM's CLI (its own venv)")
    parser.add_argument("--tokenizer", help="a model folder whose tokenizer both tools use (default: build the demo)")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--token-ms", type=float, default=25.0)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--requests", type=int, default=300, help="requests in each compared step")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=15.0, help="constant requests/s of the second compared step")
    parser.add_argument("--probe-requests", type=int, default=80, help="requests in each limit-search probe")
    parser.add_argument("--aiperf", default="/tmp/aiperf-venv/bin/aiperf", help="AIPerf's CLI (its own venv)")
    parser.add_argument("--vllm", default="/tmp/vllm-venv/bin/vllm", help="vLLM's CLI (its own venv)")
    parser.add_argument(
        "--compat", action="store_true", help="only run vllm bench serve, GuideLLM and AIPerf against the demo model"
    )
    parser.add_argument("--compat-requests", type=int, default=100, help="requests in each --compat run")
    parser.add_argument("--compat-input-len", type=int, default=128)
    parser.add_argument("--compat-output-len", type=int, default=16)
    parser.add_argument("--compat-concurrency", type=int, default=8)
    parser.add_argument("--compat-rate", type=float, default=4.0, help="Poisson requests/s of the second --compat run")
    parser.add_argument("--sweeps-only", action="store_true", help="only Cove's two sweeps (no GuideLLM)")
    parser.add_argument("--percentiles-only", action="store_true", help="only the two compared steps (no limit search)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary COVE_HOME and GuideLLM's reports")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.compat and not Path(args.guidellm).exists():
        raise SystemExit(f"no GuideLLM at {args.guidellm}: python3 -m venv /tmp/gllm && pip install guidellm==0.8.1")
    service_ms = args.output_len * args.token_ms
    limit_ms = 1.5 * service_ms

    with cove_home(args.keep, "cove-bench-validation-") as home:
        if args.tokenizer is None:
            from studio.demo import build_demo_model

            args.tokenizer = str(build_demo_model(home / "demo-chat"))
        settings = bench_settings(home)
        db = open_studio(settings)
        admin = users.first_admin(db=db)
        key = set_up(db, home, admin, args.slots, args.token_ms)
        server = CoveServer(settings)
        try:
            server.start()
            wait_ready(db, admin, DEPLOYMENT, 120, server.log_path)
            url = settings.gateway_url
            if args.compat:
                compat(args, db, admin, url, key, home)
                return
            print(
                f"knee server behind the gateway {url}: {args.slots} slots, {args.token_ms:g} ms a token, "
                f"{args.input_len} in / {args.output_len} out tokens, S = {service_ms:g} ms; "
                f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
            )
            workload = Workload(input_len=args.input_len, output_len=args.output_len)
            base = {"url": url, "model": DEPLOYMENT, "tokenizer": args.tokenizer, "workload": workload}
            worst = 0.0
            out = Path(tempfile.mkdtemp(prefix="guidellm-", dir=home))

            if args.sweeps_only:
                cove_sweeps(args, base, key, f"p95_e2el_ms<={limit_ms:g}", service_ms)
                return
            print(f"\n== concurrency {args.concurrency}, {args.requests} requests each")
            ours = cove(BenchPlan(**base, load=Load(concurrency=args.concurrency), requests=args.requests), key)
            theirs = guidellm(
                args, url, key, out / "concurrent.json",
                "--profile", f"kind=concurrent,streams={args.concurrency}",
                "--constraint", f"kind=max_requests,count={args.requests}",
            )  # fmt: skip
            worst = max(worst, compare(f"concurrency {args.concurrency}", ours.steps[0], theirs))

            print(f"\n== constant {args.rate:g} req/s, {args.requests} requests each")
            load = Load(rate=args.rate, arrival=Arrival.CONSTANT)
            ours = cove(BenchPlan(**base, load=load, requests=args.requests), key)
            theirs = guidellm(
                args, url, key, out / "constant.json",
                "--profile", f"kind=constant,rate={args.rate:g}",
                "--constraint", f"kind=max_requests,count={args.requests}",
            )  # fmt: skip
            worst = max(worst, compare(f"constant {args.rate:g} req/s", ours.steps[0], theirs))
            print(f"\nlargest relative difference of a percentile: {worst:.1f} %")
            if args.percentiles_only:
                return

            print(f"\n== the limit: e2el <= {limit_ms:g} ms for 95 % of requests")
            began = time.perf_counter()
            report = guidellm(
                args, url, key, out / "goodput.json",
                "--profile", "kind=goodput,initial_streams=4,target_attainment=0.95",
                "--metrics", json.dumps({"kind": "generative", "slo": {"e2el_ms": limit_ms}}),
                "--constraint", f"kind=max_requests,count={args.probe_requests}",
            )  # fmt: skip
            found, probes = goodput_answer(report)
            print(
                f"GuideLLM goodput: concurrency {found} ({len(probes)} probes: {probes}; "
                f"{time.perf_counter() - began:.0f} s)"
            )
            cove_sweeps(args, base, key, f"p95_e2el_ms<={limit_ms:g}", service_ms)
            print(f"designed rate limit: {args.slots / service_ms * 1000:g} req/s; concurrency: above {args.slots}")
        finally:
            leftovers = server.stop()
            db.dispose()
        if leftovers:
            raise SystemExit("LEFT BEHIND (killed now): " + "; ".join(leftovers))


if __name__ == "__main__":
    main()
