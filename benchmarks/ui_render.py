"""How long each studio page takes to render with a full catalog, and which facade calls the time goes to.

In a throwaway COVE_HOME (SQLite, or the empty PostgreSQL database given with ``--database-url``) the real services
register 1,000 models (one version each, all the same stub folder), a pool big enough for everything (4,096 CPU
cores, 16 TiB memory), 1,000 deployments spread over the models (1 CPU / 256 MiB each, every tenth autoscaled) with
the statuses a controller would write (Ready, Starting, Failed with a multi-line message, Stopped, Pending) and their
events, 50 API keys (some revoked, some never used) and 10,000 usage records over 30 days, the gateway's batch size
at a time, 600 of them in the last hour on the deployment the Deployments page opens on.

Then each page runs with Streamlit's AppTest, the way a browser session would (the entry file's navigation, then the
page): one warm-up run, then ``--runs`` measured runs; the median and the slowest are compared with the goal (1 s).
For the Deployments page, its two ``run_every=2 s`` fragments are also rerun alone, as their timers do while the page
is open. While pages run, every ``Studio`` (facade) method is timed and the SQL statements it sends are counted, so a
slow call, or one that sends a query per row, is visible per page. Pages slower than ``--profile-above`` ms (or all,
with ``--profile``) are run once more under cProfile and their hotspots printed.

    .venv/bin/python benchmarks/ui_render.py [--runs 5] [--database-url URL] [--profile] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import logging
import os
import pstats
import random
import statistics
import struct
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from gateway_overhead import cove_home  # a sibling script
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from studio.bootstrap import open_studio
from studio.db import Database, utcnow
from studio.models import ApiKey, ApiKeyCreate, DeploymentCreate, ModelCreate, Observed, Pool
from studio.services import deployments, keys, models, usage
from studio.services.events import NewEvent
from studio.settings import Settings
from studio.values import Autoscale, Purpose, Resources, Sharing, Status

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "studio" / "ui" / "app.py"
PAGES = ["overview", "models", "images", "deploy", "deployments", "keys"]
GOAL_MS = 1000.0
POOL = "big"
USAGE_BATCH = 1000  # what the gateway writes per flush at most, roughly


@dataclass(frozen=True)
class Sizes:
    models: int
    deployments: int
    keys: int
    usage: int


# ------------------------------------------------------------------------------------------------------ filling


def write_stub_model(folder: Path) -> Path:
    """The smallest folder Cove accepts as a model (as tests/integration/conftest.py writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text("# Stub\n\nA model folder for benchmarks; no weights.\n")
    return folder


def deployment_name(i: int) -> str:
    return f"dep-{i:04d}"


def observed_for(i: int) -> tuple[Observed, list[NewEvent]] | None:
    """What a controller would have written for deployment ``i``: a mix of statuses (None: still Pending)."""
    kind = i % 20
    if kind < 14:
        return Observed(
            status=Status.READY, ready_replicas=1, endpoints=[f"http://127.0.0.1:{20000 + i}"], upstream_model="stub"
        ), [
            NewEvent("Started", "replica 0 started"),
            NewEvent("Ready", "1/1 replicas ready"),
        ]
    if kind < 16:
        return Observed(status=Status.STARTING, message="loading weights"), [NewEvent("Started", "replica 0 started")]
    if kind < 17:
        message = "replica 0 exited with code 1\nTraceback (most recent call last):\n  ...\nOSError: out of memory"
        return Observed(status=Status.FAILED, message=message), [NewEvent("Crashed", message, type="Warning")]
    if kind < 18:
        return Observed(status=Status.STOPPED), [NewEvent("Stopped", "scaled to 0")]
    return None


def fill(db: Database, settings: Settings, sizes: Sizes, rng: random.Random) -> list[str]:
    """Fill the studio through the services; prints what each part took. Returns the deployments' names."""
    started = time.perf_counter()
    with db.session() as session:
        session.add(
            Pool(
                name=POOL,
                purpose=Purpose.SERVE.value,
                sharing=Sharing.NONE.value,
                cpu_cores=4096,
                memory_mib=16 * 1024 * 1024,
            )
        )
        session.commit()

    folder = write_stub_model(settings.home / "stub-model")
    for i in range(sizes.models):
        models.add_model(
            db=db,
            data=ModelCreate(name=f"model-{i:04d}", source=str(folder), description=f"benchmark model {i}"),
            cache_dir=settings.models_dir,
        )
    print(f"  {sizes.models:,} models in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    names = []
    for i in range(sizes.deployments):
        name = deployment_name(i)
        deployments.create_deployment(
            db=db,
            data=DeploymentCreate(
                name=name,
                model=f"model-{i % sizes.models:04d}",
                image="transformers",
                pool=POOL,
                resources=Resources(cpu=1, memory_mib=256),
                autoscale=Autoscale(min_replicas=1, max_replicas=3) if i % 10 == 5 else None,
            ),
        )
        names.append(name)
    created_s = time.perf_counter() - started
    started = time.perf_counter()
    for i, name in enumerate(names):
        if i % 20 == 17:  # Stopped: scaled to zero first, as a user would
            deployments.scale_deployment(db=db, name=name, replicas=0)
        found = observed_for(i)
        if found is not None:
            deployments.record_observed(db=db, name=name, generation=1, observed=found[0], events=found[1])
    print(
        f"  {sizes.deployments:,} deployments in {created_s:.1f} s (each admitted against the pool), "
        f"observed states in {time.perf_counter() - started:.1f} s"
    )

    started = time.perf_counter()
    for i in range(sizes.keys):
        keys.create_key(db=db, data=ApiKeyCreate(name=f"key-{i:02d}"))
    with db.session() as session:
        key_ids = list(session.exec(select(ApiKey.id).order_by(col(ApiKey.name))).all())
    used_ids = key_ids[: max(1, len(key_ids) * 4 // 5)]  # the last fifth is never used
    now = utcnow()
    records: list[dict[str, Any]] = []
    for n in range(sizes.usage):
        recent = n < min(600, sizes.usage // 10)  # the last hour of the deployment the page opens on
        at = now - (timedelta(seconds=6 * n) if recent else timedelta(seconds=rng.uniform(3600, 30 * 86400)))
        streamed = rng.random() < 0.5
        records.append(
            {
                "api_key_id": None if rng.random() < 0.1 else rng.choice(used_ids),
                "deployment": names[0] if recent else rng.choice(names),
                "endpoint": "chat.completions",
                "stream": streamed,
                "status_code": 200 if rng.random() < 0.97 else 500,
                "prompt_tokens": rng.randint(10, 2000),
                "completion_tokens": rng.randint(1, 500),
                "estimated": False,
                "latency_ms": rng.uniform(50, 3000),
                "ttft_ms": rng.uniform(20, 300) if streamed else None,
                "created_at": at,
            }
        )
    records.sort(key=lambda r: r["created_at"])
    for start in range(0, len(records), USAGE_BATCH):
        usage.record_usage(db=db, records=records[start : start + USAGE_BATCH])
    for i in range(0, sizes.keys, 10):  # every tenth key revoked
        keys.revoke_key(db=db, name=f"key-{i:02d}")
    print(f"  {sizes.keys} API keys and {sizes.usage:,} usage records in {time.perf_counter() - started:.1f} s")
    return names


# ------------------------------------------------------------------------------------------- facade and SQL


class Recorder:
    """Times every public ``Studio`` method and counts the SQL statements sent meanwhile, per page."""

    def __init__(self) -> None:
        self.statements = 0
        self.facade_ms = 0.0  # time inside facade calls while recording
        self.page: str | None = None  # None: not recording
        self.calls: dict[str, dict[str, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
        self.runs: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def count_statement(self, *_: Any) -> None:
        with self._lock:
            self.statements += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from studio.ui.facade import Studio

        originals = {}
        for name, member in vars(Studio).items():
            if name.startswith("_") or not callable(member):  # `now` is a property
                continue
            originals[name] = member
            if isinstance(member, staticmethod):
                setattr(Studio, name, staticmethod(self._timed(name, member.__func__)))
            else:
                setattr(Studio, name, self._timed(name, member))
        sa.event.listen(Engine, "before_cursor_execute", self.count_statement)
        try:
            yield
        finally:
            sa.event.remove(Engine, "before_cursor_execute", self.count_statement)
            for name, method in originals.items():
                setattr(Studio, name, method)

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            before, started = self.statements, time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if self.page is not None:
                    elapsed = (time.perf_counter() - started) * 1000
                    self.calls[self.page][name].append((elapsed, self.statements - before))
                    self.facade_ms += elapsed

        return timed

    @contextlib.contextmanager
    def recording(self, page: str) -> Iterator[None]:
        self.page = page
        try:
            yield
        finally:
            self.page = None


# ------------------------------------------------------------------------------------------------------- pages


@dataclass
class PageResult:
    label: str
    times_ms: list[float]
    statements: list[int] = field(default_factory=list)
    facade_ms: list[float] = field(default_factory=list)  # of each run, time inside facade calls

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def slowest(self) -> float:
        return max(self.times_ms)


def run_checked(at: Any) -> float:
    started = time.perf_counter()
    at.run()
    elapsed = (time.perf_counter() - started) * 1000
    if at.exception:
        raise SystemExit(f"the page raised: {[e.value for e in at.exception]}")
    return elapsed


def open_page(page: str) -> Any:
    """A fresh session on ``page``, after its warm-up run (not measured)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()  # the default page first, as a browser opening the studio
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py")
    run_checked(at)  # warm-up
    return at


def measure_page(at: Any, label: str, runs: int, recorder: Recorder) -> PageResult:
    result = PageResult(label, [])
    with recorder.recording(label):
        for _ in range(runs):
            before, facade_before = recorder.statements, recorder.facade_ms
            result.times_ms.append(run_checked(at))
            result.statements.append(recorder.statements - before)
            result.facade_ms.append(recorder.facade_ms - facade_before)
            recorder.runs[label] += 1
    return result


@contextlib.contextmanager
def fragment_rerun(fragment_id: str) -> Iterator[None]:
    """Make AppTest's next run a fragment-only rerun of ``fragment_id``, the request a ``run_every`` timer sends."""
    import streamlit.testing.v1.local_script_runner as runner_module

    original = runner_module.RerunData

    def rerun_data(**kwargs: Any) -> Any:
        return original(**kwargs, fragment_id_queue=[fragment_id], is_auto_rerun=True)

    runner_module.RerunData = rerun_data  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        runner_module.RerunData = original  # type: ignore[misc]


def measure_fragments(at: Any, runs: int, recorder: Recorder) -> list[PageResult]:
    """Rerun each of the Deployments page's fragments alone; named by the facade call it makes."""
    ids = list(at._fragment_storage._fragments)  # AppTest's (private) store: the last full run's, in order
    results = []
    for fragment_id in ids:
        probe = f"fragment {fragment_id[:8]}"
        with fragment_rerun(fragment_id):
            result = measure_page(at, probe, runs, recorder)
        made = ", ".join(sorted(recorder.calls[probe]))
        known = {"deployments": "overview()", "deployment": "live()"}
        label = f"deployments: fragment {known.get(made, 'calling ' + (made or 'nothing'))} (every 2 s)"
        recorder.calls[label] = recorder.calls.pop(probe)
        recorder.runs[label] = recorder.runs.pop(probe)
        result.label = label
        results.append(result)
    return results


def profile_page(page: str, runs: int, fragments: bool = False) -> pstats.Stats:
    """cProfile of ``runs`` runs of ``page`` (after its warm-up). AppTest runs the script on its own thread, so the
    profiler is switched on inside that thread."""
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    at = open_page(page)
    profiles: list[cProfile.Profile] = []
    original = LocalScriptRunner._run_script_thread

    def profiled(self: LocalScriptRunner) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()
            profiles.append(profile)

    LocalScriptRunner._run_script_thread = profiled  # type: ignore[method-assign]
    try:
        for _ in range(runs):
            if fragments:
                for fragment_id in list(at._fragment_storage._fragments):
                    with fragment_rerun(fragment_id):
                        run_checked(at)
            else:
                run_checked(at)
    finally:
        LocalScriptRunner._run_script_thread = original  # type: ignore[method-assign]
    stats = pstats.Stats(profiles[0], stream=io.StringIO())
    for profile in profiles[1:]:
        stats.add(profile)
    return stats


def where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    for prefix in (str(ROOT) + "/", *sorted((p + "/" for p in sys.path if p), key=len, reverse=True)):
        if filename.startswith(prefix):
            filename = filename[len(prefix) :]
            break
    return f"{name} ({filename}:{line})" if line else name


def print_page_calls(stats: pstats.Stats, runs: int, top: int) -> None:
    """What the calls written in the page file cost (cumulative): facade methods, tables.*, st.* elements. Streamlit
    routes every st.* call through one metrics wrapper, so its callees stand for the page's st.* calls."""
    entries = stats.stats  # type: ignore[attr-defined]
    wrappers = {f for f in entries if f[2] == "wrapped_func" and f[0].endswith("metrics_util.py")}
    costs: dict[tuple[str, int, str], tuple[float, float]] = {}
    for func, (_cc, _nc, _tt, _ct, callers) in entries.items():
        if func in wrappers:
            continue
        from_page = [v for c, v in callers.items() if "/ui/app_pages/" in c[0]]
        from_st = [v for c, v in callers.items() if c in wrappers] if "streamlit" in func[0] else []
        calls = from_page + from_st
        if calls:
            costs[func] = (sum(v[1] for v in calls), sum(v[3] for v in calls))
    print(f"    the page's own calls, by cumulative time (ms per run; calls per run), top {top}:")
    for func, (nc, ct) in sorted(costs.items(), key=lambda kv: kv[1][1], reverse=True)[:top]:
        print(f"    {ct * 1000 / runs:9.1f}  {nc / runs:>9.0f}×  {where(func)}")


def print_hotspots(stats: pstats.Stats, runs: int, top: int) -> None:
    print_page_calls(stats, runs, top)
    entries = stats.stats  # type: ignore[attr-defined]
    rows = [(func, nc, tt, ct) for func, (_cc, nc, tt, ct, _callers) in entries.items()]
    skip = ("threading.py", "script_runner.py", "exec_code.py", "local_script_runner.py", "<string>")
    print(f"    by cumulative time (ms per run; ncalls per run), top {top}:")
    shown = 0
    for func, nc, _tt, ct in sorted(rows, key=lambda r: r[3], reverse=True):
        if any(s in func[0] for s in skip) or func[2] in ("<module>", "exec", "run"):
            continue
        print(f"    {ct * 1000 / runs:9.1f}  {nc / runs:>9.0f}×  {where(func)}")
        shown += 1
        if shown >= top:
            break
    print(f"    by own time (ms per run; ncalls per run), top {top}:")
    for func, nc, tt, _ct in sorted(rows, key=lambda r: r[2], reverse=True)[:top]:
        print(f"    {tt * 1000 / runs:9.1f}  {nc / runs:>9.0f}×  {where(func)}")


# ------------------------------------------------------------------------------------------------------ report


def print_table(results: list[PageResult], runs: int) -> None:
    width = max(len(r.label) for r in results)
    print(f"\nrender time per page ({runs} measured runs each after one warm-up; AppTest, whole script run):")
    print(f"{'page':<{width}}  {'median ms':>9}  {'max ms':>8}  {'SQL/run':>7}  {'goal':>9}  result")
    for r in results:
        verdict = "pass" if r.slowest <= GOAL_MS else ("FAIL" if r.median > GOAL_MS else "FAIL (max)")
        sql = statistics.median(r.statements) if r.statements else 0
        print(
            f"{r.label:<{width}}  {r.median:9.1f}  {r.slowest:8.1f}  {sql:7.0f}  {'≤ ' + f'{GOAL_MS:.0f} ms':>9}  "
            f"{verdict}"
        )


def print_facade(results: list[PageResult], recorder: Recorder) -> None:
    print("\nfacade calls per page (ms per call: median / max; SQL statements per call; share of the page's time):")
    for r in results:
        calls = recorder.calls.get(r.label, {})
        runs = recorder.runs.get(r.label, 1)
        print(f"  {r.label}")
        page_ms = statistics.mean(r.times_ms)
        for name, samples in sorted(calls.items(), key=lambda kv: -sum(s[0] for s in kv[1])):
            times = [s[0] for s in samples]
            per_run = sum(times) / runs
            sql = statistics.median(s[1] for s in samples)
            print(
                f"    studio.{name + '()':<18} {len(samples) / runs:4.0f}×/run  {statistics.median(times):8.1f} /"
                f" {max(times):7.1f} ms  {sql:6.0f} SQL  {per_run:8.1f} ms/run  {per_run / page_ms:5.0%}"
            )
        rest = statistics.mean(t - f for t, f in zip(r.times_ms, r.facade_ms, strict=True))
        print(f"    {'rest: Streamlit, shaping, serialization':<47} {rest:8.1f} ms/run  {rest / page_ms:5.0%}")


def print_direct(studio: Any, names: list[str]) -> None:
    """The heavy calls alone (no Streamlit), and what turning their rows into a table costs."""
    import pandas as pd
    from streamlit import dataframe_util

    from studio.ui import tables

    def clock(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
        times, value = [], None
        for _ in range(repeat):
            started = time.perf_counter()
            value = fn()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), value

    print("\nthe same calls alone, outside Streamlit (median of 5, ms):")
    pairs: list[tuple[str, Callable[[], Any]]] = [
        ("studio.models()", studio.models),
        ("studio.deployments()", studio.deployments),
        ("studio.deployment_names()", studio.deployment_names),
        (f"studio.deployment({names[0]!r})", lambda: studio.deployment(names[0])),
        ("studio.pools()", studio.pools),
        ("studio.images()", studio.images),
        ("studio.recent_events(limit=20)", lambda: studio.recent_events(limit=20)),
        ("studio.keys()", studio.keys),
        ("studio.usage(days=30)", lambda: studio.usage(days=30)),
        (f"studio.traffic({names[0]!r})", lambda: studio.traffic(names[0])),
        (
            "studio.fit(pool='big', …)",
            lambda: studio.fit(pool=POOL, resources=Resources(), replicas=1),
        ),
    ]
    values = {}
    for label, fn in pairs:
        ms, values[label] = clock(fn)
        size = f"{len(values[label]):,} items" if isinstance(values[label], list) else ""
        print(f"  {label:<36} {ms:8.1f}  {size}")
    found_models, found_deployments = values["studio.models()"], values["studio.deployments()"]
    shaping: list[tuple[str, Callable[[], Any]]] = [
        ("tables.model_rows", lambda: tables.model_rows(found_models)),
        ("tables.deployment_rows", lambda: tables.deployment_rows(found_deployments)),
    ]
    for label, fn in shaping:
        ms, rows = clock(fn)
        frame_ms, _ = clock(functools.partial(pd.DataFrame, rows))
        arrow_ms, data = clock(functools.partial(dataframe_util.convert_anything_to_arrow_bytes, rows))
        print(
            f"  {label:<36} {ms:8.1f}  then DataFrame {frame_ms:.1f} ms, Arrow bytes for st.dataframe {arrow_ms:.1f} ms"
            f" ({len(data) / 1024:.0f} KiB)"
        )


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per page, after one warm-up run")
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--usage", type=int, default=10_000, help="usage records")
    parser.add_argument(
        "--database-url", default="", help="an empty PostgreSQL database, left filled (default: SQLite in COVE_HOME)"
    )
    parser.add_argument("--profile", action="store_true", help="profile every page, not only the slow ones")
    parser.add_argument(
        "--profile-above", type=float, default=0.8 * GOAL_MS, help="profile pages whose slowest run exceeds this (ms)"
    )
    parser.add_argument("--top", type=int, default=20, help="hotspots shown per profiled page")
    parser.add_argument("--keep", action="store_true", help="keep the temporary COVE_HOME (database, stub model)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    if args.models < 1 or args.deployments < 1 or args.keys < 1:
        parser.error("--models, --deployments and --keys must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # facade.py's st.cache_resource and the direct calls below run outside a script run: Streamlit warns, harmlessly
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in record.getMessage()
    )
    sizes = Sizes(models=args.models, deployments=args.deployments, keys=args.keys, usage=args.usage)

    with cove_home(args.keep, "cove-bench-ui-") as home:
        settings = Settings(home=home, database_url=args.database_url, demo=False)
        # the pages build their settings from COVE_* (facade.current()), as `cove ui` gives them
        os.environ.update({"COVE_HOME": str(home), "COVE_DEMO": "false", "COVE_DATABASE_URL": args.database_url})
        db = open_studio(settings)
        print(f"filling {db.url} through the services:")
        names = fill(db, settings, sizes, random.Random(7))
        print(
            f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {load_average()}; "
            f"streamlit {version('streamlit')}, pandas {version('pandas')}, SQLAlchemy {version('sqlalchemy')}"
        )

        recorder = Recorder()
        results: list[PageResult] = []
        with recorder.installed():
            for page in PAGES:
                at = open_page(page)
                results.append(measure_page(at, page, args.runs, recorder))
                if page == "deployments":
                    results += measure_fragments(at, args.runs, recorder)
        print_table(results, args.runs)
        print(f"load average after the pages: {load_average()}")
        fragments = [r for r in results if "fragment" in r.label]
        if fragments:
            tick = sum(r.median for r in fragments)
            print(
                f"an open Deployments page costs {tick:.0f} ms of server time every 2 s for its fragments "
                f"({tick / 2000:.0%} of a core per open browser tab)"
            )
        print_facade(results, recorder)

        from studio.ui.facade import Studio

        print_direct(Studio(settings, db), names)

        slow = [r for r in results if args.profile or r.slowest > args.profile_above]
        for r in slow:
            page = r.label.split(":")[0]
            fragments_only = "fragment" in r.label
            if fragments_only and any("fragment" in s.label for s in slow[: slow.index(r)]):
                continue  # both fragments are profiled together
            what = "its fragments' reruns" if fragments_only else "full runs"
            print(f"\nprofile of {page} ({what}, {args.runs} runs; cProfile inflates Python-heavy code):")
            print_hotspots(profile_page(page, args.runs, fragments=fragments_only), args.runs, args.top)
        if not slow:
            print(
                f"\nno page's slowest run exceeded {args.profile_above:.0f} ms: nothing profiled (--profile to force)"
            )
        db.dispose()


if __name__ == "__main__":
    main()
