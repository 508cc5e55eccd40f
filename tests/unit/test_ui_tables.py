"""What the studio pages show: rows, frames and snippets shaped from the services' public models, compared whole;
and the tqdm class that turns a Hub download's bytes-written bar into progress callbacks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from studio.models import (
    ApiKeyPublic,
    ClusterPublic,
    DeploymentPublic,
    EventPublic,
    ImagePublic,
    ModelPublic,
    ModelVersionPublic,
    PoolPublic,
    Traffic,
    UsageSummary,
)
from studio.modelstore import byte_reporter
from studio.pools import Claim, Free, free_of
from studio.services.pools import PoolUsage
from studio.ui import tables
from studio.values import Autoscale, Resources, RuntimeKind, Sharing, Status

T0 = datetime(2026, 11, 23, 9, 5, 7, tzinfo=UTC)
T1 = datetime(2026, 11, 24, 17, 45, 59, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ builders


def pool(name: str = "local", **overrides: object) -> PoolPublic:
    values: dict[str, object] = {
        "name": name,
        "purpose": "any",
        "sharing": Sharing.NONE.value,
        "gpu_model": "",
        "gpu_count": 0,
        "gpu_memory_mib": 0,
        "slice_mib": 128,
        "cpu_cores": 8.0,
        "memory_mib": 16384,
        "quota_gpus": None,
        "quota_cpu": None,
        "quota_memory_mib": None,
        "groups": [],
        "detected": True,
    }
    values.update(overrides)
    return PoolPublic(**values)  # type: ignore[arg-type]


def usage_of(p: PoolPublic, held: tuple[Claim, ...]) -> PoolUsage:
    """A PoolUsage the way list_pools builds one: free computed by admission's own free_of."""
    return PoolUsage(pool=p, held=held, free=free_of(p, held))


def deployment(name: str = "chat", **overrides: object) -> DeploymentPublic:
    values: dict[str, object] = {
        "name": name,
        "model": "qwen",
        "model_version": 2,
        "image": "transformers",
        "image_version": "4.57.1",
        "runtime": "transformers",
        "pool": "local",
        "runtime_args": [],
        "resources": Resources(cpu=1, memory_mib=2048),
        "replicas": 1,
        "autoscale": None,
        "status": Status.READY.value,
        "owner": "admin",
        "ready_replicas": 1,
        "endpoints": ["http://127.0.0.1:9001"],
        "message": "",
        "created_at": T0,
        "status_at": T0,
    }
    values.update(overrides)
    return DeploymentPublic(**values)  # type: ignore[arg-type]


def version(n: int, **overrides: object) -> ModelVersionPublic:
    values: dict[str, object] = {
        "version": n,
        "source_kind": "hf",
        "source": "Qwen/Qwen2.5-0.5B-Instruct",
        "revision": "abc123",
        "path": f"/cache/qwen/{n}",
        "size_bytes": 1536,
        "architecture": "Qwen2ForCausalLM",
        "model_type": "qwen2",
        "created_at": T0,
    }
    values.update(overrides)
    return ModelVersionPublic(**values)  # type: ignore[arg-type]


def image(name: str, version_: str, **overrides: object) -> ImagePublic:
    values: dict[str, object] = {
        "name": name,
        "version": version_,
        "runtime": name if name in {k.value for k in RuntimeKind} else RuntimeKind.CUSTOM,
        "ref": f"example.com/{name}",
        "local_command": None,
        "health_path": "/health",
        "dockerfile": None,
        "builtin": False,
        "description": "",
    }
    values.update(overrides)
    return ImagePublic(**values)  # type: ignore[arg-type]


def key(name: str, **overrides: object) -> ApiKeyPublic:
    values: dict[str, object] = {
        "name": name,
        "owner": "admin",
        "prefix": "cove-AbCdEfG",
        "created_at": T0,
        "revoked_at": None,
        "last_used_at": None,
    }
    values.update(overrides)
    return ApiKeyPublic(**values)  # type: ignore[arg-type]


def summary(key_: str | None, day: str, prompt: int, completion: int, deployment_: str = "chat") -> UsageSummary:
    return UsageSummary(
        key=key_, deployment=deployment_, day=day, requests=1, prompt_tokens=prompt, completion_tokens=completion
    )


# ---------------------------------------------------------------------------------------------------- pools


def test_pool_rows_of_a_cpu_pool_sum_replicas_times_resources() -> None:
    held = (
        Claim("chat", Resources(cpu=1.5, memory_mib=1024), replicas=2),
        Claim("embed", Resources(cpu=0.5, memory_mib=512)),
    )

    rows = tables.pool_rows([usage_of(pool(), held)])

    assert rows == [
        {
            "pool": "local",
            "cluster": "default",
            "purpose": "any",
            "GPUs": "none",
            "sharing": "none",
            "CPU (allocated / total)": "3.5 / 8",
            "memory MiB (allocated / total)": "2560 / 16384",
            "GPUs (allocated / total)": "–",
            "free": "4.5 CPU cores, 13824 MiB memory",
            "deployments": 2,
            "notebooks": 0,
        }
    ]


def test_pool_rows_count_notebook_servers_apart_from_deployments() -> None:
    held = (
        Claim("chat", Resources(cpu=1)),
        Claim("notebook alice", Resources(cpu=2)),
        Claim("notebook bob/x", Resources()),
    )

    (row,) = tables.pool_rows([usage_of(pool(), held)])

    assert (row["deployments"], row["notebooks"], row["CPU (allocated / total)"]) == (1, 2, "4 / 8")


def test_pool_rows_of_a_gpu_pool_count_allocated_gpus_and_name_the_device() -> None:
    gpu_pool = pool(
        "gpu",
        purpose="serve",
        sharing=Sharing.WHOLE.value,
        gpu_model="H100",
        gpu_count=4,
        gpu_memory_mib=81920,
        cpu_cores=64.0,
        memory_mib=262144,
    )
    held = (Claim("llama", Resources(cpu=4, memory_mib=32768, gpus=1), replicas=3),)

    rows = tables.pool_rows([usage_of(gpu_pool, held), usage_of(pool("empty", gpu_count=0), ())])

    assert rows == [
        {
            "pool": "gpu",
            "cluster": "default",
            "purpose": "serve",
            "GPUs": "4× H100",
            "sharing": "whole",
            "CPU (allocated / total)": "12 / 64",
            "memory MiB (allocated / total)": "98304 / 262144",
            "GPUs (allocated / total)": "3 / 4",
            "free": "52 CPU cores, 163840 MiB memory, 1 of 4 GPUs",
            "deployments": 1,
            "notebooks": 0,
        },
        {
            "pool": "empty",
            "cluster": "default",
            "purpose": "any",
            "GPUs": "none",
            "sharing": "none",
            "CPU (allocated / total)": "0 / 8",
            "memory MiB (allocated / total)": "0 / 16384",
            "GPUs (allocated / total)": "–",
            "free": "8 CPU cores, 16384 MiB memory",
            "deployments": 0,
            "notebooks": 0,
        },
    ]


def test_pool_rows_of_a_gpu_pool_without_a_model_name_say_gpu() -> None:
    gpu_pool = pool("gpu", sharing=Sharing.WHOLE.value, gpu_count=2, gpu_memory_mib=1024)
    free = Free(cpu=8.0, memory_mib=16384, gpus=2, gpu_total=2)

    (row,) = tables.pool_rows([PoolUsage(pool=gpu_pool, held=(), free=free)])

    assert (row["GPUs"], row["GPUs (allocated / total)"]) == ("2× GPU", "0 / 2")


def test_pool_rows_of_no_pools_are_empty() -> None:
    assert tables.pool_rows([]) == []


@pytest.mark.parametrize(
    ("cores", "held", "share"),
    [
        (8.0, (), 0.0),
        (8.0, (Claim("a", Resources(cpu=1)), Claim("b", Resources(cpu=0.5), replicas=2)), 0.25),
        (8.0, (Claim("a", Resources(cpu=4), replicas=3),), 1.0),  # over-allocated (capacity shrank): capped
        (0.0, (Claim("a", Resources(cpu=1)),), 0.0),  # a pool without CPU cores does not divide by zero
    ],
)
def test_cpu_share_is_the_allocated_fraction_capped_at_one(cores: float, held: tuple[Claim, ...], share: float) -> None:
    usage = PoolUsage(pool=pool(cpu_cores=cores), held=held, free=Free(cpu=0, memory_mib=0, gpus=0))

    assert tables.cpu_share(usage) == share


# ---------------------------------------------------------------------------------------------- deployments


def test_status_counts_list_every_status_in_lifecycle_order_with_zeros() -> None:
    counts = tables.status_counts({"Failed": 1, "Ready": 2, "Pending": 1})

    assert counts == {"Ready": 2, "Starting": 0, "Pending": 1, "Failed": 1, "Stopped": 0, "Deleting": 0}
    assert list(counts) == ["Ready", "Starting", "Pending", "Failed", "Stopped", "Deleting"]


def test_status_counts_of_nothing_are_all_zero_and_an_unknown_status_is_counted_last() -> None:
    assert tables.status_counts({}) == dict.fromkeys(
        ["Ready", "Starting", "Pending", "Failed", "Stopped", "Deleting"], 0
    )
    counts = tables.status_counts({"Unknown": 1})
    assert list(counts.items())[-1] == ("Unknown", 1)
    assert sum(counts.values()) == 1


def test_deployment_rows_show_readiness_versions_and_the_first_line_of_the_message() -> None:
    found = [
        deployment(
            "chat",
            status="Starting",
            replicas=3,
            ready_replicas=1,
            message="loading weights\nshard 1 of 4\nshard 2 of 4",
        ),
        deployment(
            "embed",
            owner="ana",
            group="nlp",
            model="bge",
            model_version=1,
            image="vllm",
            image_version="0.11.0",
            pool="gpu",
            replicas=1,
            ready_replicas=0,
            status="Stopped",
            autoscale=Autoscale(min_replicas=0, max_replicas=4, target_inflight=2),
        ),
    ]

    assert tables.deployment_rows(found) == [
        {
            "name": "chat",
            "owner": "admin",
            "status": "Starting",
            "ready": "1/3",
            "model": "qwen v2",
            "follows": "",
            "canary": "",
            "image": "transformers:4.57.1",
            "pool": "local",
            "cluster": "default",
            "autoscale": "",
            "message": "loading weights",
        },
        {
            "name": "embed",
            "owner": "ana · nlp",
            "status": "Stopped",
            "ready": "0/1",
            "model": "bge v1",
            "follows": "",
            "canary": "",
            "image": "vllm:0.11.0",
            "pool": "gpu",
            "cluster": "default",
            "autoscale": "0–4",
            "message": "",
        },
    ]


def test_deployment_rows_of_nothing_are_empty() -> None:
    assert tables.deployment_rows([]) == []


# ---------------------------------------------------------------------------------------------------- models


def test_model_rows_describe_each_model_by_its_newest_version() -> None:
    qwen = ModelPublic(
        name="qwen",
        owner="ana",
        description="chat",
        created_at=T0,
        versions=[
            version(1, size_bytes=512, architecture="Old"),
            version(2, size_bytes=3 * 1024**3 // 2, source_kind="local", source="/data/qwen"),
        ],
    )
    empty = ModelPublic(name="empty", owner="admin", group="ml", description="", created_at=T0, versions=[])

    assert tables.model_rows([qwen, empty]) == [
        {
            "model": "qwen",
            "owner": "ana",
            "versions": 2,
            "newest": "v2",
            "aliases": "",
            "architecture": "Qwen2ForCausalLM",
            "size": "1.5 GiB",
            "source": "local: /data/qwen",
            "description": "chat",
        },
        {
            "model": "empty",
            "owner": "admin · ml",
            "versions": 0,
            "newest": "",
            "aliases": "",
            "architecture": "",
            "size": "",
            "source": "",
            "description": "",
        },
    ]


def test_model_rows_of_nothing_are_empty() -> None:
    assert tables.model_rows([]) == []


# ---------------------------------------------------------------------------------------------------- images


def test_image_rows_tell_built_in_dockerfile_and_custom_images_apart_and_whether_each_runs_here() -> None:
    found = [
        image("vllm", "0.11.0", builtin=True, description="vLLM"),
        image("mine", "1.0", dockerfile="FROM python:3.11-slim\n", build_status="Building"),
        image("mine", "2.0", local_command=["python", "serve.py", "--port", "{port}"]),
    ]
    problems = {"vllm:0.11.0": "needs an NVIDIA GPU", "mine:1.0": "", "other:9": "irrelevant"}

    assert tables.image_rows(found, problems) == [
        {
            "image": "vllm",
            "version": "0.11.0",
            "runtime": "vllm",
            "reference": "example.com/vllm:0.11.0",
            "kind": "built-in",
            "build": "–",
            "runs here": "no",
            "description": "vLLM",
        },
        {
            "image": "mine",
            "version": "1.0",
            "runtime": "custom",
            "reference": "example.com/mine:1.0",
            "kind": "Dockerfile",
            "build": "Building",
            "runs here": "yes",
            "description": "",
        },
        {
            "image": "mine",
            "version": "2.0",
            "runtime": "custom",
            "reference": "example.com/mine:2.0",
            "kind": "custom",
            "build": "–",
            "runs here": "yes",  # no entry in problems: nothing known against it
            "description": "",
        },
    ]


def test_image_rows_of_nothing_are_empty() -> None:
    assert tables.image_rows([], {"vllm:1": "x"}) == []


# ---------------------------------------------------------------------------------------------------- events


def test_event_rows_show_the_time_to_the_second_and_the_deployment() -> None:
    found = [
        EventPublic(kind="deployment", name="chat", type="Warning", reason="Crashed", message="exit 1", created_at=T1),
        EventPublic(kind="deployment", name="chat", type="Normal", reason="Created", message="qwen v2", created_at=T0),
    ]

    assert tables.event_rows(found) == [
        {
            "time": "2026-11-24 17:45:59",
            "deployment": "chat",
            "type": "Warning",
            "reason": "Crashed",
            "message": "exit 1",
        },
        {
            "time": "2026-11-23 09:05:07",
            "deployment": "chat",
            "type": "Normal",
            "reason": "Created",
            "message": "qwen v2",
        },
    ]
    assert tables.event_rows([]) == []


# ------------------------------------------------------------------------------------------------------ keys


def test_key_rows_show_owner_scope_api_scopes_prefix_use_expiry_and_revocation() -> None:
    found = [
        key("app", last_used_at=T1, deployments=["chat", "embed"]),
        key("fresh", owner="ana", prefix="cove-ZZZZZZZ", expires_at=T1 + timedelta(days=30), scopes=["models:read"]),
        key("old", last_used_at=T0, revoked_at=T1),
        key("lapsed", expires_at=T1),
    ]

    assert tables.key_rows(found, now=T1) == [
        {
            "name": "app",
            "owner": "admin",
            "key": "cove-AbCdEfG…",
            "may call": "chat, embed",
            "API scopes": "— (gateway only)",
            "created": "2026-11-23 09:05",
            "last used": "2026-11-24 17:45",
            "state": "active",
        },
        {
            "name": "fresh",
            "owner": "ana",
            "key": "cove-ZZZZZZZ…",
            "may call": "any of its owner's",
            "API scopes": "models:read",
            "created": "2026-11-23 09:05",
            "last used": "never",
            "state": "active until 2026-12-24",
        },
        {
            "name": "old",
            "owner": "admin",
            "key": "cove-AbCdEfG…",
            "may call": "any of its owner's",
            "API scopes": "— (gateway only)",
            "created": "2026-11-23 09:05",
            "last used": "2026-11-23 09:05",
            "state": "revoked 2026-11-24",
        },
        {
            "name": "lapsed",
            "owner": "admin",
            "key": "cove-AbCdEfG…",
            "may call": "any of its owner's",
            "API scopes": "— (gateway only)",
            "created": "2026-11-23 09:05",
            "last used": "never",
            "state": "expired 2026-11-24",
        },
    ]
    assert tables.key_rows([], now=T1) == []


# ----------------------------------------------------------------------------------------------------- usage


def test_tokens_per_key_day_sums_prompt_and_completion_per_day_and_key() -> None:
    found = [
        summary("app", "2026-11-23", 10, 5),
        summary("app", "2026-11-23", 1, 1, deployment_="embed"),  # same key and day, another deployment: summed
        summary(None, "2026-11-23", 7, 0),
        summary("batch", "2026-11-24", 100, 200),
    ]

    frame = tables.tokens_per_key_day(found)

    assert frame.to_dict() == {
        "(no key)": {"2026-11-23": 7, "2026-11-24": 0},
        "app": {"2026-11-23": 17, "2026-11-24": 0},
        "batch": {"2026-11-23": 0, "2026-11-24": 300},
    }
    assert (frame.index.name, frame.columns.name) == ("day", "key")
    assert list(frame.index) == ["2026-11-23", "2026-11-24"]


def test_tokens_per_key_day_of_no_usage_is_an_empty_frame() -> None:
    frame = tables.tokens_per_key_day([])

    assert frame.empty
    assert frame.to_dict() == {}


def test_traffic_frame_is_indexed_by_minute_with_rounded_latencies() -> None:
    points = [
        Traffic(
            minute="2026-11-23 09:05",
            requests=4,
            errors=1,
            prompt_tokens=40,
            completion_tokens=64,
            latency_ms=123.456,
            ttft_ms=20.04,
        ),
        Traffic(
            minute="2026-11-23 09:07",
            requests=2,
            errors=0,
            prompt_tokens=10,
            completion_tokens=8,
            latency_ms=50.0,
            ttft_ms=None,
        ),
    ]

    frame = tables.traffic_frame(points)

    first, second = pd.Timestamp("2026-11-23 09:05"), pd.Timestamp("2026-11-23 09:07")
    got = frame.to_dict()
    ttft = got.pop("time to first token ms")
    assert got == {
        "requests": {first: 4, second: 2},
        "errors": {first: 1, second: 0},
        "prompt tokens": {first: 40, second: 10},
        "completion tokens": {first: 64, second: 8},
        "latency ms": {first: 123.5, second: 50.0},
    }
    assert ttft[first] == 20.0
    assert math.isnan(ttft[second])  # not streamed: no time to first token, a gap in the chart
    assert frame.index.name == "minute"
    assert list(frame.columns) == [
        "requests",
        "errors",
        "prompt tokens",
        "completion tokens",
        "latency ms",
        "time to first token ms",
    ]


def test_traffic_frame_of_no_traffic_is_an_empty_frame() -> None:
    frame = tables.traffic_frame([])

    assert frame.empty
    assert frame.to_dict() == {}


# ------------------------------------------------------------------------------------------------- deploy form


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ([], "qwen"),
        (["other", "qwen-2"], "qwen"),
        (["qwen"], "qwen-2"),
        (["qwen", "qwen-2"], "qwen-3"),
        (["qwen", "qwen-2", "qwen-3", "qwen-5"], "qwen-4"),
        (iter(["qwen", "qwen-2"]), "qwen-3"),  # any iterable, read once
    ],
)
def test_free_name_is_the_base_or_the_first_numbered_name_not_taken(taken: list[str], expected: str) -> None:
    assert tables.free_name("qwen", taken) == expected


def test_client_snippets_call_the_gateway_with_the_model_and_the_key_from_the_environment() -> None:
    snippets = tables.client_snippets("http://studio.example:8000", "chat-2")

    assert snippets == {
        "curl": (
            "curl http://studio.example:8000/v1/chat/completions \\\n"
            '  -H "Authorization: Bearer $COVE_API_KEY" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            """  -d '{"model": "chat-2", "messages": [{"role": "user", "content": "Hello!"}]}'"""
        ),
        "python": (
            "import os\n"
            "from openai import OpenAI\n"
            "\n"
            'client = OpenAI(base_url="http://studio.example:8000/v1", api_key=os.environ["COVE_API_KEY"])\n'
            "reply = client.chat.completions.create(\n"
            '    model="chat-2", messages=[{"role": "user", "content": "Hello!"}]\n'
            ")\n"
            "print(reply.choices[0].message.content)"
        ),
    }
    for code in snippets.values():
        assert "cove-" not in code  # no secret, not even a key prefix: the key comes from $COVE_API_KEY
    compile(snippets["python"], "<snippet>", "exec")  # the Python snippet is valid Python


def test_status_colors_cover_every_status() -> None:
    assert set(tables.STATUS_COLORS) == set(Status)
    assert tables.STATUS_COLORS[Status.READY] == "green"
    assert tables.STATUS_COLORS[Status.FAILED] == "red"


# ------------------------------------------------------------------------------------------- download progress


def test_byte_reporter_reports_bytes_written_of_byte_bars_only() -> None:
    reports: list[tuple[str, int, int]] = []
    bar_class = byte_reporter(lambda done, total: reports.append(("report", done, total)))

    with bar_class(total=1000, unit="B", desc="Reconstructing (incomplete total...)") as written:
        written.update(300)
        written.update(700)
    with bar_class(total=1000, unit="B", desc="Downloading (incomplete total...)") as transfer:
        transfer.update(500)
    with bar_class(total=3, desc="Fetching 3 files") as files:  # unit "it"
        files.update(1)

    assert reports == [("report", 300, 1000), ("report", 1000, 1000)]


def test_byte_reporter_reports_a_total_of_zero_when_the_size_is_unknown_and_draws_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports: list[tuple[int, int]] = []
    bar_class = byte_reporter(lambda done, total: reports.append((done, total)))

    with bar_class(unit="B", desc="model.safetensors") as bar:
        bar.update(4096)

    assert reports == [(4096, 0)]
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------------------------------------------- clusters


def test_cluster_rows_say_whether_each_cluster_answered() -> None:
    checked = datetime(2026, 11, 23, 14, 0, 5, tzinfo=UTC)
    common = {"context": "east", "namespace": "cove", "created_at": checked}
    found = [
        ClusterPublic(name="east", server="https://east:6443", message="", checked_at=checked, **common),  # type: ignore[arg-type]
        ClusterPublic(name="west", server="https://west:6443", message="the Kubernetes API does not answer",
                      checked_at=checked, **common),  # type: ignore[arg-type]
        ClusterPublic(name="lab", server="https://lab:6443", message="", checked_at=None, **common),  # type: ignore[arg-type]
    ]  # fmt: skip
    assert [(r["cluster"], r["state"], r["checked"]) for r in tables.cluster_rows(found)] == [
        ("east", "answering", "2026-11-23 14:00:05"),
        ("west", "the Kubernetes API does not answer", "2026-11-23 14:00:05"),
        ("lab", "not checked yet", "–"),
    ]


def test_the_deploy_form_names_a_pools_cluster_when_it_is_not_this_one() -> None:
    assert tables.pool_choice(usage_of(pool(), ())) == "local · free: 8 CPU cores, 16384 MiB memory"
    far = usage_of(pool("h100", cluster="east"), ())
    assert tables.pool_choice(far) == "h100 (cluster east) · free: 8 CPU cores, 16384 MiB memory"


def test_the_loss_curve_is_by_step_with_eval_loss_only_where_reported() -> None:
    from studio.ui.tables import loss_frame

    frame = loss_frame([{"step": 10, "loss": 1.5}, {"step": 5, "loss": 2.0}, {"step": 10, "eval_loss": 1.7}])

    assert list(frame.index) == [5, 10]
    assert frame.loc[10, "loss"] == 1.5
    assert frame.loc[10, "eval loss"] == 1.7
    assert frame["eval loss"].isna().tolist() == [True, False]


def test_progress_reads_as_a_fraction_and_words() -> None:
    from studio.ui.tables import progress_of

    fraction, said = progress_of({"step": 15, "total_steps": 60, "eta_s": 75, "tokens_per_s": 1234.5})

    assert fraction == 0.25
    assert said == "step 15 / 60 · training · ETA 1m 15s · 1,234 tokens/s"
    assert progress_of({}) == (0.0, "step 0 / ? · training")


def test_a_column_map_s_problems_are_said_per_part() -> None:
    from studio.chats import Format
    from studio.ui.tables import NO_COLUMN, column_problems

    present = ["question", "answer"]
    wrong = column_problems(
        Format.ALPACA, {"instruction": "question", "output": NO_COLUMN, "input": NO_COLUMN}, present
    )

    assert wrong == {"output": "the alpaca format needs a column for output"}  # input is optional
    assert column_problems(Format.PROMPT_COMPLETION, {"prompt": "q", "completion": "answer"}, present) == {
        "prompt": "the file has no column 'q'"
    }


def test_a_deployment_scaled_to_zero_by_its_autoscaler_shows_as_sleeping_with_its_last_cold_start() -> None:
    naps = Autoscale(min_replicas=0, max_replicas=2, idle_s=60)
    found = [
        deployment("woken-before", replicas=0, status="Stopped", autoscale=naps, cold_start_s=12.34),
        deployment("never-woken", replicas=0, status="Stopped", autoscale=naps),
        deployment("stopped", replicas=0, status="Stopped", message="scaled to zero"),  # stopped by hand: no sleep
    ]
    assert [(r["status"], r["message"]) for r in tables.deployment_rows(found)] == [
        ("Sleeping", "sleeping: the next request wakes it; last cold start 12.3 s"),
        ("Sleeping", "sleeping: the next request wakes it"),
        ("Stopped", "scaled to zero"),
    ]
