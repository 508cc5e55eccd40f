"""`cove bench` next to `vllm bench serve` and GuideLLM on one server and one workload: the same percentiles, and the
same SLO limit.

Sets up a throwaway COVE_HOME whose one deployment runs ``tests/fakes/knee_server.py`` (K slots, one token every
D ms, so a request alone takes S = output × D and the server completes at most K / S requests/s), starts the real
``cove server`` and sends everything through its gateway with an API key. Then, in this one run:

1. **Percentiles.** The same steps (a fixed concurrency, then a constant request rate; the same input and output
   lengths and request count) with ``studio.loadgen`` (what ``cove bench`` runs), `vllm bench serve` (when
   installed, ``--vllm``) and GuideLLM's CLI. Prints TTFT, TPOT, ITL and E2EL at P50/P90/P99 for each tool and
   Cove's relative difference from each, all with Cove's percentile (numpy's linear interpolation) over each
   tool's per-request timings, and beside each the knee server's own record of the same requests (``--timings``):
   the truth the clients' numbers can be held against.
2. **The limit.** GuideLLM's ``goodput`` profile (doubling then bisecting concurrency until the share of requests
   meeting ``e2el <= 1.5 × S`` reaches 95 %) next to Cove's sweep over concurrency and over request rate against
   ``p95_e2el_ms <= 1.5 × S`` (the same criterion): the limit each finds, how many probes it took, and Cove's
   statement of how sure it is. By design the rate limit is K / S (under constant arrivals); the concurrency limit
   lies a little above K (past K some requests wait for a slot, how long depends on how completions spread out).

Definitions where the tools differ (see benchmarks/RESULTS.md): GuideLLM's "ITL" is each request's mean gap,
``(last token - first token) / (output - 1)``, which is vLLM's TPOT ended at the last token instead of the stream's
end; vLLM's (and Cove's) ITL is every gap of every request. So GuideLLM's ITL is set beside Cove's TPOT.

    .venv/bin/python benchmarks/bench_validation.py [--vllm /tmp/vllm-venv/bin/vllm]
        [--guidellm /tmp/gllm/bin/guidellm] [--tokenizer DEMO_FOLDER]

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
from dataclasses import dataclass
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


class ServerTimes:
    """The knee server's own record of the requests it answered (``--timings``): what happened, beside what each
    tool measured. A client's TTFT also holds the gateway's and the loopback's share (about a millisecond here)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        """From now on: the requests of the next step only."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self, skip: int = 0) -> dict[str, list[float]]:
        """TTFT and E2EL (ms) of the requests answered since ``mark``, the first ``skip`` left out (a warm-up)."""
        with self.path.open() as f:
            f.seek(self.offset)
            rows = [json.loads(line) for line in f if line.strip()][skip:]
        return {
            "ttft": [1000 * (r["first"] - r["arrived"]) for r in rows],
            "e2el": [1000 * (r["ended"] - r["arrived"]) for r in rows],
        }


def set_up(db: Database, home: Path, admin: Principal, slots: int, token_ms: float) -> str:
    """The knee server as a custom image, deployed as ``knee`` by the admin, writing its own timings to
    ``home/knee-timings.jsonl``; returns an API key's secret."""
    models.add_model(
        db=db,
        actor=admin,
        data=ModelCreate(name="tiny", source=str(write_fake_model(home / "tiny-model"))),
        cache_dir=home / "models",
    )
    command = [PYTHON, str(KNEE), "--port", "{port}", "--slots", str(slots), "--token-ms", str(token_ms)]
    command += ["--timings", str(home / "knee-timings.jsonl")]
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


def guidellm_load(load: Load, requests: int) -> list[str]:
    profile = f"kind=concurrent,streams={load.concurrency}" if load.concurrency else f"kind=constant,rate={load.rate:g}"
    return ["--profile", profile, "--constraint", f"kind=max_requests,count={requests}"]


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


# ------------------------------------------------------------------------------------------------ vLLM


def vllm_bench(args: argparse.Namespace, url: str, key: str, out: Path, load: Load) -> dict[str, Any]:
    """Runs `vllm bench serve` unmodified against ``url`` (its random dataset, exactly the output length with
    ``--ignore-eos``) and returns its detailed result. A constant rate is its gamma arrivals with a burstiness so
    high that the gaps are even (coefficient of variation 1 %)."""
    shape = ["--max-concurrency", str(load.concurrency)] if load.concurrency else []
    if load.rate is not None:
        shape = ["--request-rate", f"{load.rate:g}", "--burstiness", "10000"]
    command = [
        args.vllm, "bench", "serve", "--backend", "openai-chat", "--base-url", url,
        "--endpoint", "/v1/chat/completions", "--model", DEPLOYMENT, "--tokenizer", args.tokenizer,
        "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--num-prompts", str(args.requests), "--ignore-eos",
        "--save-result", "--save-detailed", "--result-dir", str(out.parent), "--result-filename", out.name, *shape,
    ]  # fmt: skip
    log = out.with_suffix(".log")
    began = time.perf_counter()
    with log.open("wb") as sink:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": key}
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"vllm bench serve exited with {done.returncode}:\n{tail}")
    print(f"  vllm bench serve ran {time.perf_counter() - began:.0f} s (its log: {log})")
    return dict(json.loads(out.read_text()))


# ------------------------------------------------------------------------------------------------ Cove


def cove(plan: BenchPlan, key: str) -> BenchResult:
    def say(line: str) -> None:  # a sweep's probes and verdicts as they come; a step's progress lines are left out
        if line.startswith(("probe", "  pass", "  FAIL")):
            print(f"  {line.strip()}", flush=True)

    began = time.perf_counter()
    result = asyncio.run(run_plan(plan, api_key=key, say=say))
    print(f"  cove bench ran {time.perf_counter() - began:.0f} s")
    return result


# ------------------------------------------------------------------------------------------------ measurements


@dataclass(frozen=True)
class Measured:
    """One tool's run of a compared step: its percentiles (ms) of each metric it measures, and the knee server's own
    record of the same requests."""

    tool: str
    stats: dict[str, dict[int, float]]  # ttft, tpot, itl (per gap), e2el → quantile → ms
    server: dict[str, dict[int, float]]  # ttft, e2el as the server saw them
    done: int
    errors: int


def quantiles(values: dict[str, list[float]]) -> dict[str, dict[int, float]]:
    return {m: {q: percentile(v, q) for q in QUANTILES} for m, v in values.items() if v}


def cove_measured(step: StepSummary, seen: dict[str, list[float]]) -> Measured:
    stats = {
        m: {q: getattr(getattr(step, m), f"p{q}") or 0.0 for q in QUANTILES} for m in ("ttft", "tpot", "itl", "e2el")
    }
    return Measured("cove", stats, quantiles(seen), step.completed, step.errors)


def guidellm_measured(report: dict[str, Any], seen: dict[str, list[float]]) -> Measured:
    """GuideLLM's per-request timings with Cove's percentile (its own reported percentiles agree to a few tenths);
    its "ITL" (a request's mean gap) stands in the TPOT row."""
    bench = report["benchmarks"][0]
    requests = bench["requests"]
    return Measured(
        "guidellm",
        quantiles(guidellm_values(bench)),
        quantiles(seen),
        len(requests["successful"]),
        len(requests["errored"]),
    )


def vllm_measured(result: dict[str, Any], seen: dict[str, list[float]]) -> Measured:
    """`vllm bench serve`'s detailed result (``--save-detailed``: per-request TTFT, gaps and latency, in seconds),
    with its own definitions: TPOT = (latency − TTFT) / (output tokens − 1), ITL = every gap."""
    ok = [i for i, error in enumerate(result["errors"]) if not error]
    ttft = [1000 * result["ttfts"][i] for i in ok]
    e2el = [1000 * result["latencies"][i] for i in ok]
    tpot = [
        1000 * (result["latencies"][i] - result["ttfts"][i]) / (result["output_lens"][i] - 1)
        for i in ok
        if result["output_lens"][i] > 1
    ]
    itl = [1000 * gap for i in ok for gap in result["itls"][i]]
    values = {"ttft": ttft, "tpot": tpot, "itl": itl, "e2el": e2el}
    return Measured("vllm", quantiles(values), quantiles(seen), len(ok), len(result["errors"]) - len(ok))


# ------------------------------------------------------------------------------------------------ reporting


def cell(m: Measured, metric: str, q: int) -> str:
    """A tool's value, and the server's record of the same requests in brackets."""
    value = m.stats.get(metric, {}).get(q)
    seen = m.server.get(metric, {}).get(q)
    shown = "–" if value is None else f"{value:.1f}"
    return f"{shown} ({seen:.1f})" if seen is not None else shown


def compare(title: str, ours: Measured, others: list[Measured]) -> dict[str, float]:
    """Prints one step's table: each metric's percentiles by Cove and by each other tool (the server's own record
    of the same requests in brackets), and Cove's difference from each; returns each tool's largest difference."""
    runs = ", ".join(f"{m.tool} {m.done} done / {m.errors} errors" for m in (ours, *others))
    print(f"\n{title}: {runs}")
    print("(in brackets: the knee server's own record of the same requests, arrival to first token / to the end)")
    head = f"{'metric':<10}{ours.tool:>16}" + "".join(f"{m.tool:>16}{'diff':>8}" for m in others)
    print(head + "   ms")
    worst = dict.fromkeys((m.tool for m in others), 0.0)
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for q in QUANTILES:
            mine = ours.stats[metric][q]
            line = f"P{q} {metric.upper():<6}{cell(ours, metric, q):>16}"
            for m in others:
                theirs = m.stats.get(metric, {}).get(q)
                diff = (mine - theirs) / theirs * 100 if theirs else None
                if diff is not None:
                    worst[m.tool] = max(worst[m.tool], abs(diff))
                line += f"{cell(m, metric, q):>16}{'' if diff is None else f'{diff:+.1f}%':>8}"
            print(line)
    print("GuideLLM's TPOT row is its \"ITL\" (a request's mean gap); it has no per-gap ITL.")
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
    parser.add_argument(
        "--vllm", default="/tmp/vllm-venv/bin/vllm", help="vLLM's CLI (its own venv), for vllm bench serve"
    )
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
            out = Path(tempfile.mkdtemp(prefix="reports-", dir=home))

            if args.sweeps_only:
                cove_sweeps(args, base, key, f"p95_e2el_ms<={limit_ms:g}", service_ms)
                return
            times = ServerTimes(home / "knee-timings.jsonl")
            steps = (
                (f"concurrency {args.concurrency}", Load(concurrency=args.concurrency)),
                (f"constant {args.rate:g} req/s", Load(rate=args.rate, arrival=Arrival.CONSTANT)),
            )
            worst: dict[str, float] = {}
            for title, load in steps:
                print(f"\n== {title}, {args.requests} requests each")
                times.mark()
                ours = cove(BenchPlan(**base, load=load, requests=args.requests), key)
                mine = cove_measured(ours.steps[0], times.since_mark(skip=1))  # skip cove bench's warm-up request
                others = []
                if Path(args.vllm).exists():
                    times.mark()
                    result = vllm_bench(args, url, key, out / f"vllm-{load.concurrency or 'rate'}.json", load)
                    others.append(vllm_measured(result, times.since_mark(skip=1)))  # its initial test prompt
                times.mark()
                report = guidellm(
                    args,
                    url,
                    key,
                    out / f"guidellm-{load.concurrency or 'rate'}.json",
                    *guidellm_load(load, args.requests),
                )
                others.append(guidellm_measured(report, times.since_mark()))
                for tool, diff in compare(title, mine, others).items():
                    worst[tool] = max(worst.get(tool, 0.0), diff)
            for tool, diff in worst.items():
                print(f"largest relative difference of a percentile, cove vs {tool}: {diff:.1f} %")
            if not Path(args.vllm).exists():
                print(f"vllm bench serve: not installed at {args.vllm} (--vllm), left out")
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
