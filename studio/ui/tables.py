"""What the studio pages show, shaped from the services' results: rows for tables, frames for charts, snippets.

Pure functions (no Streamlit, no database), so each is tested on its own and the pages stay descriptions of the UI.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from studio.chats import DEFAULT_COLUMNS, OPTIONAL, Format
from studio.finetuning import Lineage, Progress
from studio.gate import Check
from studio.models import (
    ApiKeyPublic,
    ClusterPublic,
    DatasetPublic,
    DeploymentPublic,
    EvaluationPublic,
    EventPublic,
    FineTunePublic,
    ImagePublic,
    ModelPublic,
    Traffic,
    UsageSummary,
)
from studio.modelstore import human_size
from studio.pools import total
from studio.services.pools import NOTEBOOK_OWNER, PoolUsage
from studio.tokens import LengthStats, Segment
from studio.values import DEFAULT_CLUSTER, JobStatus, Status

STATUS_COLORS = {
    Status.READY: "green",
    Status.STARTING: "blue",
    Status.PENDING: "gray",
    Status.FAILED: "red",
    Status.STOPPED: "gray",
    Status.DELETING: "orange",
}


def pool_rows(pools: Sequence[PoolUsage]) -> list[dict[str, Any]]:
    """One row per pool: its device, and capacity / allocated / free of CPU, memory and GPUs."""
    rows = []
    for usage in pools:
        p, held = usage.pool, total(usage.held)
        gpus = f"{p.gpu_count}× {p.gpu_model or 'GPU'}" if p.gpu_count else "none"
        rows.append(
            {
                "pool": p.name,
                "cluster": p.cluster,
                "purpose": p.purpose,
                "GPUs": gpus,
                "sharing": p.sharing,
                "CPU (allocated / total)": f"{held.cpu:g} / {p.cpu_cores:g}",
                "memory MiB (allocated / total)": f"{held.memory_mib} / {p.memory_mib}",
                "GPUs (allocated / total)": f"{p.gpu_count - usage.free.gpus} / {p.gpu_count}" if p.gpu_count else "–",
                "free": usage.free.describe(),
                "deployments": sum(1 for c in usage.held if not c.owner.startswith(NOTEBOOK_OWNER)),
                "notebooks": sum(1 for c in usage.held if c.owner.startswith(NOTEBOOK_OWNER)),
            }
        )
    return rows


def pool_choice(usage: PoolUsage) -> str:
    """A pool as the deploy form offers it: its name, its cluster when not this one, and what is free."""
    where = "" if usage.pool.cluster == DEFAULT_CLUSTER else f" (cluster {usage.pool.cluster})"
    return f"{usage.pool.name}{where} · free: {usage.free.describe()}"


def cluster_rows(found: Sequence[ClusterPublic]) -> list[dict[str, Any]]:
    """One row per registered cluster: where it is, and whether it answered the last capacity read."""
    return [
        {
            "cluster": c.name,
            "server": c.server,
            "context": c.context,
            "namespace": c.namespace,
            "state": c.state,
            "checked": f"{c.checked_at:%Y-%m-%d %H:%M:%S}" if c.checked_at else "–",
        }
        for c in found
    ]


def cpu_share(usage: PoolUsage) -> float:
    """The fraction of the pool's CPU that is allocated, 0..1 (for a progress bar)."""
    cores = usage.pool.cpu_cores
    return min(1.0, total(usage.held).cpu / cores) if cores else 0.0


def status_counts(counted: Mapping[str, int]) -> dict[str, int]:
    """Deployments per status with every status present (zeros included), in lifecycle order; statuses this
    version does not know come last."""
    counts = dict.fromkeys((s.value for s in STATUS_COLORS), 0)
    for status, n in counted.items():
        counts[status] = counts.get(status, 0) + n
    return counts


def deployment_rows(found: Sequence[DeploymentPublic]) -> list[dict[str, Any]]:
    return [
        {
            "name": d.name,
            "owner": owner_of(d.owner, d.group),
            "status": d.shown_status,
            "ready": f"{d.ready_replicas}/{d.replicas}",
            "model": f"{d.model} v{d.model_version}",
            "follows": d.follows or "",
            "canary": f"{d.canary_share}% to staging" if d.canary_share else "",
            "image": f"{d.image}:{d.image_version}",
            "pool": d.pool,
            "cluster": d.cluster,
            "autoscale": f"{d.autoscale.min_replicas}–{d.autoscale.max_replicas}" if d.autoscale else "",
            "message": d.sleep_words or (d.message.splitlines() or [""])[0],
        }
        for d in found
    ]


def alias_words(aliases: dict[str, int]) -> str:
    """``production v2 · staging v3`` (production first), or '' when none is set."""
    return " · ".join(f"{a} v{aliases[a]}" for a in ("production", "staging") if a in aliases)


def check_rows(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """The promotion gate's checks, one row each."""
    return [{"check": c.name, "passed": c.passed, "numbers": c.detail} for c in checks]


def model_rows(found: Sequence[ModelPublic]) -> list[dict[str, Any]]:
    """One row per model, described by its newest version."""
    rows = []
    for m in found:
        newest = m.versions[-1] if m.versions else None
        rows.append(
            {
                "model": m.name,
                "owner": owner_of(m.owner, m.group),
                "versions": len(m.versions),
                "newest": f"v{newest.version}" if newest else "",
                "aliases": alias_words(m.aliases),
                "architecture": newest.architecture if newest else "",
                "size": human_size(newest.size_bytes) if newest else "",
                "source": f"{newest.source_kind}: {newest.source}" if newest else "",
                "description": m.description,
            }
        )
    return rows


def image_rows(found: Sequence[ImagePublic], problems: dict[str, str]) -> list[dict[str, Any]]:
    """One row per image version; ``problems`` maps ``name:version`` to why it cannot run here ('' if it can)."""
    return [
        {
            "image": i.name,
            "version": i.version,
            "runtime": i.runtime,
            "reference": i.reference,
            "kind": "built-in" if i.builtin else ("Dockerfile" if i.dockerfile else "custom"),
            "build": i.build_status or "–",
            "runs here": "yes" if not problems.get(f"{i.name}:{i.version}") else "no",
            "description": i.description,
        }
        for i in found
    ]


def event_rows(found: Sequence[EventPublic], *, noun: str = "deployment") -> list[dict[str, Any]]:
    """Events as rows; ``noun`` heads the column naming what each happened to."""
    return [
        {
            "time": f"{e.created_at:%Y-%m-%d %H:%M:%S}",
            noun: e.name,
            "type": e.type,
            "reason": e.reason,
            "message": e.message,
        }
        for e in found
    ]


def audit_rows(found: Sequence[EventPublic]) -> list[dict[str, Any]]:
    return [
        {
            "time": f"{e.created_at:%Y-%m-%d %H:%M:%S}",
            "who": e.actor,
            "what": e.kind,
            "name": e.name,
            "did": e.reason,
            "detail": e.message,
        }
        for e in found
    ]


def owner_of(owner: str, group: str | None) -> str:
    return f"{owner} · {group}" if group else owner


def key_state(k: ApiKeyPublic, now: datetime) -> str:
    if k.revoked_at:
        return f"revoked {k.revoked_at:%Y-%m-%d}"
    if k.expires_at is None:
        return "active"
    return f"expired {k.expires_at:%Y-%m-%d}" if k.expires_at <= now else f"active until {k.expires_at:%Y-%m-%d}"


def key_rows(found: Sequence[ApiKeyPublic], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "name": k.name,
            "owner": k.owner,
            "key": f"{k.prefix}…",
            "may call": ", ".join(k.deployments) if k.deployments else "any of its owner's",
            "API scopes": " ".join(k.scopes) if k.scopes is not None else "— (gateway only)",
            "created": f"{k.created_at:%Y-%m-%d %H:%M}",
            "last used": f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
            "state": key_state(k, now),
        }
        for k in found
    ]


def tokens_per_key_day(summary: Sequence[UsageSummary]) -> pd.DataFrame:
    """Tokens (prompt + completion) per day (rows) and key (columns); requests without a key show as '(no key)'."""
    if not summary:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {
            "day": s.day,
            "key": s.key or "(no key)",
            "tokens": s.prompt_tokens + s.completion_tokens,
        }
        for s in summary
    )
    return frame.pivot_table(index="day", columns="key", values="tokens", aggfunc="sum", fill_value=0)


def traffic_frame(points: Sequence[Traffic]) -> pd.DataFrame:
    """Per-minute traffic indexed by minute: requests, errors, tokens and mean latencies."""
    if not points:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {
            "minute": pd.Timestamp(p.minute),
            "requests": p.requests,
            "errors": p.errors,
            "prompt tokens": p.prompt_tokens,
            "completion tokens": p.completion_tokens,
            "latency ms": round(p.latency_ms, 1),
            "time to first token ms": round(p.ttft_ms, 1) if p.ttft_ms is not None else None,
        }
        for p in points
    )
    return frame.set_index("minute")


def free_name(base: str, taken: Iterable[str]) -> str:
    """``base``, or ``base-2``, ``base-3`` … : the first name no deployment has."""
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def client_snippets(base_url: str, model: str) -> dict[str, str]:
    """Copy-paste code that calls ``model`` through the gateway; the key is read from $COVE_API_KEY."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    return {
        "curl": (
            f"curl {base_url}/v1/chat/completions \\\n"
            '  -H "Authorization: Bearer $COVE_API_KEY" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d '{body}'"
        ),
        "python": (
            "import os\n"
            "from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{base_url}/v1", api_key=os.environ["COVE_API_KEY"])\n'
            "reply = client.chat.completions.create(\n"
            f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]\n'
            ")\n"
            "print(reply.choices[0].message.content)"
        ),
    }


# ---------------------------------------------------------------------------------------------------- datasets

NO_COLUMN = "(none)"  # an optional part read from no column


def short_sha(sha256: str) -> str:
    return sha256[:12]


def dataset_rows(found: Sequence[DatasetPublic]) -> list[dict[str, Any]]:
    """One row per dataset version, newest version first within each dataset."""
    rows = []
    for d in found:
        for v in reversed(d.versions):
            rows.append(
                {
                    "dataset": d.name,
                    "version": v.version,
                    "rows": v.rows,
                    "splits": ", ".join(f"{s} {n}" for s, n in v.splits.items()),
                    "size": human_size(v.size_bytes),
                    "sha256": short_sha(v.sha256),
                    "format": v.format,
                    "source": f"{v.source_kind}: {v.source}",
                    "Hub revision": (v.revision or "")[:12],
                    "owner": owner_of(d.owner, d.group),
                    "added": v.created_at.strftime("%Y-%m-%d %H:%M"),
                }
            )
    return rows


def column_problems(fmt: Format, mapping: Mapping[str, str], present: Sequence[str]) -> dict[str, str]:
    """What is wrong with each part of a column map, in words (a part left out: nothing to read it from; a column
    the file lacks); parts that are fine are absent."""
    wrong = {}
    for part in DEFAULT_COLUMNS[fmt]:
        column = mapping.get(part, NO_COLUMN)
        if column == NO_COLUMN:
            if part not in OPTIONAL:
                wrong[part] = f"the {fmt.value} format needs a column for {part}"
        elif column not in present:
            wrong[part] = f"the file has no column {column!r}"
    return wrong


def chosen_columns(mapping: Mapping[str, str]) -> dict[str, str]:
    """The column map as the service takes it: parts read from no column left out."""
    return {part: column for part, column in mapping.items() if column != NO_COLUMN}


def problem_rows(split_report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"file": p.get("file", ""), "line": p["line"], "problem": p["message"]}
        for p in split_report.get("problems", [])
    ]


def problems_left_out(split_report: Mapping[str, Any]) -> int:
    """Problems counted but not kept in the report (only the first few are)."""
    return int(split_report.get("problem_count", 0)) - len(split_report.get("problems", []))


def length_frame(stats: LengthStats) -> pd.DataFrame:
    """The token-length histogram as a frame ``st.bar_chart`` draws: rows per bin, labelled by its range."""
    return pd.DataFrame(
        {"rows": [b.rows for b in stats.bins]}, index=pd.Index([f"{b.low}–{b.high}" for b in stats.bins], name="tokens")
    )


def segments_html(segments: Sequence[Segment]) -> str:
    """A rendered row with what is trained on highlighted and what the cutoff drops struck through (HTML, escaped)."""
    parts = []
    for s in segments:
        style = "background:#b7f0c0;color:#0b3d16" if s.trained else "color:#666"
        if not s.kept:
            style += ";text-decoration:line-through;opacity:.5"
        parts.append(f'<span style="{style}">{html.escape(s.text)}</span>')
    return '<div style="white-space:pre-wrap;font-family:monospace;font-size:.85rem">' + "".join(parts) + "</div>"


# -------------------------------------------------------------------------------------------------- fine-tunes

JOB_COLORS = {
    JobStatus.QUEUED: "gray",
    JobStatus.RUNNING: "blue",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "orange",
}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def finetune_rows(found: Sequence[FineTunePublic]) -> list[dict[str, Any]]:
    rows = []
    for j in found:
        step, total_steps = j.progress.get("step", 0), j.progress.get("total_steps", 0)
        rows.append(
            {
                "fine-tune": j.name,
                "status": j.status.value + (" (cancelling)" if j.cancelling and not j.status.finished else ""),
                "base": f"{j.model} v{j.model_version}",
                "dataset": f"{j.dataset} v{j.dataset_version}",
                "step": f"{step} / {total_steps}" if total_steps else "–",
                "eval loss": j.metrics.get("eval_loss"),
                "result": f"{j.target_model} v{j.result_version}" if j.result_version else "",
                "pool": j.pool,
                "owner": owner_of(j.owner, j.group),
                "created": j.created_at.strftime("%Y-%m-%d %H:%M"),
            }
        )
    return rows


def progress_of(progress: Mapping[str, Any]) -> tuple[float, str]:
    """A job's newest progress as a bar's fraction and its words: step of total, ETA, tokens/s, phase."""
    p = Progress.model_validate(progress) if progress else Progress()
    fraction = min(1.0, p.step / p.total_steps) if p.total_steps else 0.0
    said = [f"step {p.step} / {p.total_steps or '?'}", p.phase]
    if p.eta_s is not None and p.phase == "training":
        said.append(f"ETA {duration(p.eta_s)}")
    if p.tokens_per_s:
        said.append(f"{p.tokens_per_s:,.0f} tokens/s")
    if p.checkpoint:
        said.append(f"checkpoint at step {p.checkpoint}")
    return fraction, " · ".join(said)


def loss_frame(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The loss curve by step: training loss and eval loss (each where reported), for ``st.line_chart``."""
    points: dict[int, dict[str, float]] = {}
    for h in history:
        point = points.setdefault(int(h.get("step", 0)), {})
        for key, label in (("loss", "loss"), ("eval_loss", "eval loss")):
            if h.get(key) is not None:
                point[label] = float(h[key])
    frame = pd.DataFrame.from_dict(points, orient="index", columns=["loss", "eval loss"]).sort_index()
    frame.index.name = "step"
    return frame


def settings_rows(settings: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"setting": k, "value": json.dumps(v) if not isinstance(v, str) else v} for k, v in settings.items()]


def lineage_lines(lineage: Mapping[str, Any]) -> list[str]:
    """A version's lineage in words (markdown): what it was made from, how, and how well it did."""
    made = Lineage.model_validate(lineage)
    m = made.metrics
    said = [
        f"**Base:** {made.base}" + (f" @ `{made.base_revision[:12]}`" if made.base_revision else ""),
        f"**Dataset:** {made.dataset} · sha256 `{short_sha(made.dataset_sha256)}`",
        f"**Settings:** hash `{made.settings_hash}` · served {made.serving.value}",
        f"**Job:** {made.job}",
    ]
    scores = [f"eval loss {m.eval_loss:.4g}" if m.eval_loss is not None else ""]
    scores.append(f"perplexity {m.perplexity:.4g}" if m.perplexity is not None else "")
    scores.append(f"{m.steps} steps" if m.steps else "")
    scores.append(f"{duration(m.seconds)}" if m.seconds else "")
    if any(scores):
        said.append("**Metrics:** " + " · ".join(s for s in scores if s))
    return said


def evaluation_rows(found: Iterable[EvaluationPublic]) -> list[dict[str, Any]]:
    """A version's evaluations: one row each, a column per scorer (its mean), newest first."""
    rows = []
    for e in found:
        row: dict[str, Any] = {
            "id": e.id,
            "status": e.status.value,
            "dataset": f"{e.dataset} v{e.dataset_version} ({e.split})",
            "deployment": e.deployment,
        }
        row |= {name: round(float(s["mean"]), 4) for name, s in e.summary.items()}
        row["examples"] = e.total
        row["errors"] = e.errors
        row["finished"] = e.finished_at.strftime("%Y-%m-%d %H:%M") if e.finished_at else ""
        rows.append(row)
    return rows


def example_rows(evaluation: EvaluationPublic) -> list[dict[str, Any]]:
    """An evaluation's examples: the question (the last prompt turn), the reference, the answer and each score."""
    return [
        {
            "#": ex.index,
            "prompt": ex.prompt[-1]["content"] if ex.prompt else "",
            "reference": ex.reference,
            "prediction": ex.prediction if ex.prediction is not None else f"(error: {ex.error})",
        }
        | {name: score.score for name, score in ex.scores.items()}
        for ex in evaluation.examples
    ]
