"""A vLLM/SGLang deployment on GPUs is admitted by its memory plan: refused, saying what of the pool would hold it,
when one request at its context does not fit; given the plan's flags where its runtime args are silent; admitted
unplanned, saying so in its events, when the version's config.json cannot be read (docs/memory-plan.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from studio.cli import cli
from studio.db import Database
from studio.errors import InvalidSpec
from studio.kvlog import KvFigures
from studio.models import DeploymentCreate, ModelCreate, PoolSpec
from studio.services import deployments, events, models, plans, pools
from studio.settings import Settings
from studio.values import Resources, Sharing
from tests.integration.conftest import cove_env, write_stub_model
from tests.people import ADMIN
from tests.unit.test_memplan import LLAMA3_8B

GIB = 1024


@pytest.fixture
def llama(db: Database, tmp_path: Path) -> Path:
    """Llama-3-8B's config.json (8k context, 32 heads, 15.3 GiB of BF16 weights) on a stub's folder."""
    folder = write_stub_model(tmp_path / "llama")
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B | {"architectures": ["LlamaForCausalLM"]}))
    models.add_model(actor=ADMIN, db=db, data=ModelCreate(name="llama", source=str(folder)), cache_dir=tmp_path / "c")
    pools.sync_configured_pools(
        db=db,
        specs=[
            PoolSpec(name="t4", sharing=Sharing.WHOLE, gpu_count=4, gpu_memory_mib=16 * GIB, cpu_cores=32,
                     memory_mib=131072),
            PoolSpec(name="h100", sharing=Sharing.HAMI, gpu_count=2, gpu_memory_mib=80 * GIB, slice_mib=GIB,
                     cpu_cores=32, memory_mib=131072),
        ],
    )  # fmt: skip
    return folder


def _deploy(db: Database, name: str, *, pool: str, resources: Resources, args: list[str] | None = None, **kw: str):
    return deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(
            name=name, model="llama", image=kw.get("image", "vllm"), pool=pool, resources=resources,
            runtime_args=args or [],
        ),
    )  # fmt: skip


def test_a_gpu_that_cannot_hold_one_request_is_refused_with_what_would(db: Database, llama: Path) -> None:
    with pytest.raises(InvalidSpec) as one_gpu:
        _deploy(db, "chat", pool="t4", resources=Resources(cpu=2, memory_mib=8192, gpus=1))
    assert "the weights take 15,317 MiB per GPU" in str(one_gpu.value)
    assert "it needs 2 GPUs of 16 GiB at 8k context" in str(one_gpu.value)

    with pytest.raises(InvalidSpec) as small_slice:
        _deploy(db, "chat", pool="h100", resources=Resources(cpu=2, memory_mib=8192, gpu_memory_mib=12 * GIB))
    assert "it needs 1 GPU of 80 GiB or a 20 GiB slice at 8k context" in str(small_slice.value)

    with pytest.raises(InvalidSpec, match="3 GPUs cannot split the model's 32 attention heads"):
        _deploy(db, "chat", pool="t4", resources=Resources(cpu=2, memory_mib=8192, gpus=3))
    assert deployments.deployment_names(db=db, actor=ADMIN) == []  # nothing was recorded

    # the slice it named holds it
    _deploy(db, "chat", pool="h100", resources=Resources(cpu=2, memory_mib=8192, gpu_memory_mib=20 * GIB))


def test_the_plan_s_flags_are_added_where_the_user_set_none(db: Database, llama: Path) -> None:
    two = _deploy(db, "chat", pool="t4", resources=Resources(cpu=2, memory_mib=8192, gpus=2))
    assert two.runtime_args == []  # what the user wrote, as written (a spec applied again finds no change)
    assert two.planned_args[:2] == ["--max-model-len", "8192"]  # the model's context
    assert two.planned_args[-2:] == ["--tensor-parallel-size", "2"]
    assert "--max-num-seqs" in two.planned_args
    assert "--gpu-memory-utilization" in two.planned_args
    planned = [e for e in events.list_events(db=db, kind="deployment", name="chat") if e.reason == "Planned"]
    assert planned
    assert "runtime args added: --max-model-len 8192" in planned[0].message
    assert two.kv_planned is not None
    assert two.kv_planned.context == 8192
    runs = next(d.spec for d in deployments.desired_state(db=db) if d.name == "chat")
    assert runs.args == tuple(two.planned_args)  # what the runtime is started with

    mine = ["--max-model-len=4096", "--gpu-memory-utilization", "0.8", "--max-num-seqs", "3"]
    own = _deploy(db, "own", pool="h100", resources=Resources(cpu=2, memory_mib=8192, gpus=1), args=mine)
    # every flag the plan would add was the user's: theirs win, nothing is doubled
    assert (own.runtime_args, own.planned_args) == (mine, [])

    # a context the slice cannot hold at the user's fraction is refused; the model's own maximum is the limit
    with pytest.raises(InvalidSpec, match="reads at most 8192 tokens, not 16384"):
        _deploy(db, "long", pool="h100", resources=Resources(cpu=2, memory_mib=8192, gpus=1),
                args=["--max-model-len", "16384"])  # fmt: skip

    sglang = _deploy(db, "sg", pool="t4", resources=Resources(cpu=2, memory_mib=8192, gpus=2), image="sglang")
    assert sglang.planned_args[:2] == ["--context-length", "8192"]
    assert sglang.planned_args[-2:] == ["--tp-size", "2"]


def test_a_version_the_plan_cannot_read_is_admitted_saying_so(db: Database, llama: Path, tmp_path: Path) -> None:
    version = models.get_model(db=db, name="llama").versions[-1]
    (Path(version.path) / "config.json").unlink()
    made = _deploy(db, "chat", pool="t4", resources=Resources(cpu=2, memory_mib=8192, gpus=1))
    assert (made.planned_args, made.kv_planned) == ([], None)
    said = {e.reason: e for e in events.list_events(db=db, kind="deployment", name="chat")}
    assert "the memory plan cannot read this version's config.json" in said["Unplanned"].message
    assert said["Unplanned"].type == "Warning"


def test_cpu_runtimes_and_cpu_replicas_are_not_planned(db: Database, llama: Path) -> None:
    cpu = _deploy(db, "cpu", pool="t4", resources=Resources(cpu=2, memory_mib=8192), image="transformers")
    assert cpu.planned_args == []
    assert not [e for e in events.list_events(db=db, kind="deployment", name="cpu") if e.reason == "Planned"]


def test_cove_deploy_get_shows_the_plan_beside_what_the_runtime_reported(
    db: Database, llama: Path, settings: Settings
) -> None:
    _deploy(db, "chat", pool="t4", resources=Resources(cpu=2, memory_mib=8192, gpus=2))
    env = {k: v for k, v in cove_env(settings).items() if k.startswith(("COVE_", "HF_"))}
    before = CliRunner().invoke(cli, ["deploy", "get", "chat"], env=env)
    assert before.exit_code == 0, before.output
    assert "memory plan adds  --max-model-len 8192" in before.output
    assert "runtime: not reported yet" in before.output

    plans.record_kv_observed(db=db, name="chat", figures=KvFigures(kv_cache_tokens=41_000, max_concurrency=5.0,
                                                                   context=8192))  # fmt: skip
    after = CliRunner().invoke(cli, ["deploy", "get", "chat"], env=env)
    assert "runtime: 41,000 KV tokens, 5 requests of 8,192 tokens" in after.output
    assert "Measured" in after.output
