"""Services against SQLite and PostgreSQL: the catalog, images, keys, and deployments' validation and admission.
Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from studio.backends.base import WorkloadSpec
from studio.db import Database, open_database, utcnow
from studio.errors import Conflict, InvalidSpec, NotFound, QuotaExceeded, SourceUnavailable
from studio.models import ApiKeyCreate, DeploymentCreate, ImageCreate, ModelCreate, Observed, PoolSpec
from studio.modelstore import import_folder
from studio.services import deployments, images, keys, models, pools, usage
from studio.services.events import KEEP_PER_OBJECT, NewEvent, add_events, list_events, prune_events
from studio.values import Autoscale, BuildStatus, PoolBase, Purpose, Resources, RuntimeKind, Sharing, Status
from tests.integration.conftest import write_stub_model
from tests.people import ADMIN


@pytest.fixture
def catalog(database_url: str) -> Database:
    db = open_database(database_url)
    images.ensure_builtin_images(db=db)
    pools.sync_detected_pools(db=db, cluster="default", detected=[PoolBase(name="local", cpu_cores=4, memory_mib=8192)])
    yield db
    db.dispose()


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    return write_stub_model(tmp_path / "stub")


def _add(db: Database, name: str, source: Path | str, cache: Path, **kw: object) -> models.ModelPublic:
    return models.add_model(actor=ADMIN, db=db, data=ModelCreate(name=name, source=str(source), **kw), cache_dir=cache)


# ------------------------------------------------------------------------------------------------ models


def test_model_from_a_folder_records_architecture_size_and_versions(
    catalog: Database, stub: Path, tmp_path: Path
) -> None:
    first = _add(catalog, "llama-tiny", stub, tmp_path)
    version = first.latest
    assert (version.version, version.source_kind, version.architecture, version.model_type) == (
        1,
        "local",
        "LlamaForCausalLM",
        "llama",
    )
    assert version.size_bytes == sum(p.stat().st_size for p in stub.iterdir())
    with pytest.raises(Conflict, match="exists") as caught:
        _add(catalog, "llama-tiny", stub, tmp_path)
    assert "--new-version" in caught.value.hint
    second = _add(catalog, "llama-tiny", stub, tmp_path, new_version=True)
    assert [v.version for v in second.versions] == [1, 2]
    assert [m.name for m in models.list_models(db=catalog)] == ["llama-tiny"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "config.json").unlink(), "has no config.json"),
        (lambda p: (p / "config.json").write_text("{not json"), "is not valid JSON"),
        (lambda p: (p / "config.json").write_text(json.dumps({"architectures": []})), "has no model_type"),
        (lambda p: (p / "model.safetensors").unlink(), "has no weights"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x10\x00"), "model.safetensors is truncated"),
        (lambda p: (p / "model.safetensors").write_bytes((400).to_bytes(8, "little") + b"{}"), "is truncated"),
        (lambda p: (p / "tokenizer.json").unlink(), "has no tokenizer"),
    ],
)
def test_corrupt_model_folder_is_refused_with_what_is_wrong(
    catalog: Database, stub: Path, tmp_path: Path, damage: object, message: str
) -> None:
    damage(stub)  # type: ignore[operator]
    with pytest.raises(InvalidSpec, match=message):
        _add(catalog, "broken", stub, tmp_path)
    assert models.list_models(db=catalog) == []  # nothing half-registered


def test_truncated_weights_of_a_real_model_are_caught(catalog: Database, demo_folder: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(demo_folder, tmp_path / "copy"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InvalidSpec, match="tensors end past the file"):
        _add(catalog, "half", copy, tmp_path)


def test_missing_folder_and_nonsense_sources_are_explained(catalog: Database, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no model folder"):
        _add(catalog, "gone", tmp_path / "nowhere", tmp_path)
    with pytest.raises(InvalidSpec, match="neither a folder nor a Hugging Face repo id"):
        _add(catalog, "what", "not a source", tmp_path)


def test_hub_model_resolves_from_the_cache_offline(catalog: Database, stub: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snapshot = import_folder(stub, "acme/tiny", cache)
    added = _add(catalog, "tiny", "hf:acme/tiny", cache)
    assert (added.latest.source_kind, added.latest.source, added.latest.revision) == (
        "hf",
        "acme/tiny",
        snapshot.revision,
    )
    assert Path(added.latest.path) == snapshot.path


def test_hub_model_not_cached_while_offline_says_what_to_do(catalog: Database, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="not in the local model cache") as caught:
        _add(catalog, "absent", "hf:acme/absent", tmp_path / "hub")
    assert "add it by path" in caught.value.hint


def test_model_in_use_cannot_be_deleted(catalog: Database, stub: Path, tmp_path: Path) -> None:
    _add(catalog, "used", stub, tmp_path)
    deployments.create_deployment(actor=ADMIN, db=catalog, data=DeploymentCreate(name="d1", model="used"))
    with pytest.raises(Conflict, match="deployed as d1"):
        models.delete_model(actor=ADMIN, db=catalog, name="used")


# ------------------------------------------------------------------------------------------------ images, keys


def test_custom_images_are_validated_and_unique(catalog: Database) -> None:
    data = ImageCreate(
        name="my-rt",
        version="1.0",
        ref="registry.example.com/team/my-rt",
        local_command=["my-server", "--port", "{port}"],
    )
    assert images.add_image(actor=ADMIN, db=catalog, data=data).reference == "registry.example.com/team/my-rt:1.0"
    with pytest.raises(Conflict, match=r"my-rt:1\.0 exists"):
        images.add_image(actor=ADMIN, db=catalog, data=data)
    with pytest.raises(ValidationError, match="'latest' is not a version"):
        ImageCreate(name="x", version="latest", ref="example.com/x")
    with pytest.raises(ValidationError, match=r"use the \{port\} placeholder"):
        ImageCreate(name="x", version="1", ref="example.com/x", local_command=["srv"])
    builtin = {i.name for i in images.list_images(db=catalog) if i.builtin}
    assert builtin == {"vllm", "sglang", "triton", "transformers"}


def test_keys_are_shown_once_stored_hashed_and_revocable(catalog: Database) -> None:
    created = keys.create_key(actor=ADMIN, db=catalog, data=ApiKeyCreate(name="app"))
    assert created.key.startswith("cove-")
    assert len(created.key) > 40
    assert keys.hash_key(created.key) in keys.active_keys(db=catalog)
    listed = keys.list_keys(actor=ADMIN, db=catalog)
    assert [(k.name, k.prefix) for k in listed] == [("app", created.key[:12])]
    assert "key" not in listed[0].model_dump()
    with pytest.raises(Conflict):
        keys.create_key(actor=ADMIN, db=catalog, data=ApiKeyCreate(name="app"))
    keys.revoke_key(actor=ADMIN, db=catalog, name="app")
    assert keys.active_keys(db=catalog) == {}
    with pytest.raises(NotFound, match="no API key named 'nope'"):
        keys.revoke_key(actor=ADMIN, db=catalog, name="nope")


# ------------------------------------------------------------------------------------------------ deployments


def test_invalid_names_are_refused_with_how_to_fix_them() -> None:
    for bad, why in [
        ("Has-Caps", "lowercase letters"),
        ("-dash", "starting and ending"),
        ("a" * 54, "at most 53"),
        ("", "a name is required"),
        ("under_score", "lowercase letters"),
    ]:
        with pytest.raises(ValidationError, match=why):
            DeploymentCreate(name=bad, model="m")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        DeploymentCreate(name="ok", model="m", replicas=-1)


def test_unknown_model_image_and_pool_are_named(catalog: Database, stub: Path, tmp_path: Path) -> None:
    _add(catalog, "m", stub, tmp_path)
    cases = [
        (DeploymentCreate(name="a", model="nope"), NotFound, "no model named 'nope'"),
        (DeploymentCreate(name="a", model="m", model_version=9), NotFound, "has no version 9"),
        (DeploymentCreate(name="a", model="m", image="nope"), NotFound, "no image 'nope'"),
        (DeploymentCreate(name="a", model="m", image="vllm", image_version="v0"), NotFound, "no image 'vllm:v0'"),
        (DeploymentCreate(name="a", model="m", pool="gpu"), NotFound, "no pool named 'gpu'"),
        (
            DeploymentCreate(name="a", model="m", runtime_args=["--port", "9"]),
            InvalidSpec,
            "--port: Cove sets it itself",
        ),
    ]
    for data, error, message in cases:
        with pytest.raises(error, match=message):
            deployments.create_deployment(actor=ADMIN, db=catalog, data=data)
    assert deployments.list_deployments(actor=ADMIN, db=catalog) == []


def test_admission_refuses_what_does_not_fit_and_says_what_is_free(
    catalog: Database, stub: Path, tmp_path: Path
) -> None:
    _add(catalog, "m", stub, tmp_path)
    big = Resources(cpu=3, memory_mib=1024)
    deployments.create_deployment(actor=ADMIN, db=catalog, data=DeploymentCreate(name="big", model="m", resources=big))
    with pytest.raises(
        QuotaExceeded,
        match=r"needs 2 CPU cores \(2 × 1\) but pool 'local' has 1 free "
        r"\(held by big\)",
    ) as caught:
        deployments.create_deployment(
            actor=ADMIN, db=catalog, data=DeploymentCreate(name="more", model="m", replicas=2)
        )
    assert "1 CPU cores, 7168 MiB memory" in caught.value.hint
    with pytest.raises(QuotaExceeded, match="has no GPUs"):
        deployments.create_deployment(
            actor=ADMIN, db=catalog, data=DeploymentCreate(name="gpu", model="m", resources=Resources(gpus=1))
        )
    with pytest.raises(QuotaExceeded, match="needs 6 CPU cores"):
        deployments.scale_deployment(actor=ADMIN, db=catalog, name="big", replicas=2)
    with pytest.raises(InvalidSpec, match="0 or more"):
        deployments.scale_deployment(actor=ADMIN, db=catalog, name="big", replicas=-1)
    assert deployments.get_deployment(actor=ADMIN, db=catalog, name="big").replicas == 1  # unchanged
    deployments.scale_deployment(actor=ADMIN, db=catalog, name="big", replicas=0)  # scaling down always fits
    deployments.create_deployment(actor=ADMIN, db=catalog, data=DeploymentCreate(name="more", model="m", replicas=2))


def test_slices_are_admitted_against_the_gpus_their_replicas_really_hold(
    catalog: Database, stub: Path, tmp_path: Path
) -> None:
    """Two 8 GiB slices that the backend put on different GPUs leave 8 GiB free on each: a 12 GiB slice fits the
    pool's total but no real GPU, and is refused, although re-packing the two onto one GPU would have made room."""
    hami = PoolSpec(name="hami", sharing=Sharing.HAMI, gpu_count=2, gpu_memory_mib=16384, slice_mib=1024,
                    cpu_cores=8, memory_mib=8192)  # fmt: skip
    pools.sync_configured_pools(db=catalog, specs=[hami])
    _add(catalog, "m", stub, tmp_path)
    slice_of = lambda mib: Resources(cpu=1, memory_mib=256, gpu_memory_mib=mib)  # noqa: E731
    create = DeploymentCreate(name="a", model="m", pool="hami", replicas=2, resources=slice_of(8192))
    deployments.create_deployment(actor=ADMIN, db=catalog, data=create)
    bigger = DeploymentCreate(name="b", model="m", pool="hami", resources=slice_of(12288))
    before = deployments.preview_admission(db=catalog, pool="hami", resources=slice_of(12288), replicas=1)
    assert before.fits  # not yet placed: admission places the two slices together, leaving a GPU whole
    spread = Observed(status=Status.READY, ready_replicas=2, placed=[[0], [1]])
    deployments.record_observed(db=catalog, name="a", generation=1, observed=spread, events=[])
    (usage_row,) = [u for u in pools.list_pools(db=catalog) if u.pool.name == "hami"]
    assert usage_row.free.gpu_memory_mib == (8192, 8192)
    assert usage_row.held[0].on == ((0,), (1,))
    with pytest.raises(QuotaExceeded, match=r"no room for a 12288 MiB GPU slice .* largest GPU memory slice 8192 MiB"):
        deployments.create_deployment(actor=ADMIN, db=catalog, data=bigger)
    fits = DeploymentCreate(name="c", model="m", pool="hami", resources=slice_of(8192))
    deployments.create_deployment(actor=ADMIN, db=catalog, data=fits)


def test_two_concurrent_creates_of_one_name_exactly_one_wins(catalog: Database, stub: Path, tmp_path: Path) -> None:
    _add(catalog, "m", stub, tmp_path)
    barrier, results = threading.Barrier(4), []

    def create(i: int) -> None:
        barrier.wait()
        try:
            deployments.create_deployment(
                actor=ADMIN,
                db=catalog,
                data=DeploymentCreate(
                    name="same", model="m", runtime_args=[f"--default-seed={i}"], resources=Resources(cpu=0.5)
                ),
            )
            results.append("won")
        except Conflict as exc:
            results.append(f"conflict: {exc.message}")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict: deployment 'same' exists"] * 3 + ["won"]
    assert [d.name for d in deployments.list_deployments(actor=ADMIN, db=catalog)] == ["same"]


def test_concurrent_creates_cannot_overcommit_a_pool(catalog: Database, stub: Path, tmp_path: Path) -> None:
    _add(catalog, "m", stub, tmp_path)
    barrier, outcomes = threading.Barrier(6), []

    def create(i: int) -> None:
        barrier.wait()
        try:
            deployments.create_deployment(
                actor=ADMIN,
                db=catalog,
                data=DeploymentCreate(name=f"d{i}", model="m", resources=Resources(cpu=1, memory_mib=512)),
            )
            outcomes.append("admitted")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["admitted"] * 4 + ["refused"] * 2  # 4 cores, 1 each


def test_events_are_pruned_to_the_newest(catalog: Database) -> None:
    with catalog.session() as session:
        add_events(
            session,
            kind="deployment",
            name="loop",
            events=[NewEvent("BackOff", f"restart {i}", "Warning") for i in range(KEEP_PER_OBJECT + 25)],
        )
        add_events(session, kind="deployment", name="other", events=[NewEvent("Created", "kept")])
        session.commit()
    assert prune_events(db=catalog, kind="deployment", name="loop") == 25
    kept = list_events(db=catalog, kind="deployment", name="loop", limit=1000)
    assert len(kept) == KEEP_PER_OBJECT
    assert (kept[0].message, kept[-1].message) == (f"restart {KEEP_PER_OBJECT + 24}", "restart 25")
    assert [e.message for e in list_events(db=catalog, name="other")] == ["kept"]


def test_the_controller_reads_each_deployment_resolved_into_the_spec_its_backend_runs(
    catalog: Database, stub: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "hub"
    snapshot = import_folder(stub, "acme/tiny", cache)
    _add(catalog, "tiny", "hf:acme/tiny", cache)
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    gpu = PoolSpec(name="gpu", sharing=Sharing.WHOLE, gpu_count=2, cpu_cores=32, memory_mib=131072, cluster="east",
                   node_selector={"cove.dev/pool": "gpu"}, tolerations=[toleration])  # fmt: skip
    pools.sync_configured_pools(db=catalog, specs=[gpu])
    resources = Resources(cpu=2, memory_mib=4096, gpus=1)
    autoscale = Autoscale(min_replicas=1, max_replicas=2)
    deployments.create_deployment(
        actor=ADMIN, db=catalog,
        data=DeploymentCreate(name="chat", model="tiny", image="vllm", pool="gpu", resources=resources,
                              runtime_args=["--max-model-len", "8192"], autoscale=autoscale),
    )  # fmt: skip

    (desired,) = deployments.desired_state(db=catalog)

    assert desired.spec == WorkloadSpec(
        name="chat",
        runtime=RuntimeKind.VLLM,
        model="acme/tiny",  # a Hub repo id, resolved in the model cache at its registered revision
        model_revision=snapshot.revision,
        model_path=str(snapshot.path),
        image="docker.io/vllm/vllm-openai:v0.33.0",
        health_path="/health",
        local_command=None,
        args=("--max-model-len", "8192"),
        resources=resources,
        replicas=1,
        pool="gpu",
        node_selector=(("cove.dev/pool", "gpu"),),
        tolerations=(toleration,),
        autoscale=autoscale,
    )
    assert (desired.cluster, desired.generation, desired.deleting) == ("east", 1, False)
    assert desired.observed == Observed()  # nothing seen yet: Pending
    assert (desired.image_build, desired.image_build_message) == (BuildStatus.NONE, "")


def test_admission_preview_matches_what_create_decides(catalog: Database, stub: Path, tmp_path: Path) -> None:
    _add(catalog, "m", stub, tmp_path)
    deployments.create_deployment(
        actor=ADMIN, db=catalog, data=DeploymentCreate(name="big", model="m", resources=Resources(cpu=3))
    )

    refused = deployments.preview_admission(db=catalog, pool="local", resources=Resources(cpu=2), replicas=1)
    fits = deployments.preview_admission(db=catalog, pool="local", resources=Resources(cpu=1), replicas=1)
    own = deployments.preview_admission(db=catalog, pool="local", resources=Resources(cpu=4), replicas=1, name="big")

    assert (refused.fits, fits.fits, own.fits) == (False, True, True)  # a deployment's own claim is set aside
    assert "held by big" in refused.reason
    assert refused.free.cpu == 1
    with pytest.raises(QuotaExceeded):
        deployments.create_deployment(
            actor=ADMIN, db=catalog, data=DeploymentCreate(name="x", model="m", resources=Resources(cpu=2))
        )
    with pytest.raises(NotFound, match="no pool named 'gpu'"):
        deployments.preview_admission(db=catalog, pool="gpu", resources=Resources(), replicas=1)


def test_traffic_per_minute_counts_requests_errors_tokens_and_latency(catalog: Database) -> None:
    now = utcnow().replace(second=30, microsecond=0)
    earlier = now - timedelta(minutes=2)

    def record(at: datetime, status: int, latency: float, ttft: float | None, deployment: str = "chat") -> dict:
        return {
            "api_key_id": None, "deployment": deployment, "endpoint": "chat.completions", "stream": ttft is not None,
            "status_code": status, "prompt_tokens": 10, "completion_tokens": 4, "latency_ms": latency,
            "ttft_ms": ttft, "created_at": at,
        }  # fmt: skip

    usage.record_usage(
        db=catalog,
        records=[
            record(earlier, 200, 100.0, 20.0),
            record(now, 200, 30.0, None),
            record(now, 502, 50.0, 10.0),
            record(now, 200, 10.0, None, deployment="other"),
            record(now - timedelta(hours=2), 200, 1.0, None),  # before the window
        ],
    )

    got = usage.traffic(db=catalog, deployment="chat", since=now - timedelta(hours=1))

    assert [p.model_dump() for p in got] == [
        {"minute": f"{earlier:%Y-%m-%d %H:%M}", "requests": 1, "errors": 0, "prompt_tokens": 10,
         "completion_tokens": 4, "latency_ms": 100.0, "ttft_ms": 20.0},
        {"minute": f"{now:%Y-%m-%d %H:%M}", "requests": 2, "errors": 1, "prompt_tokens": 20,
         "completion_tokens": 8, "latency_ms": 40.0, "ttft_ms": 10.0},
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------ pools found


def test_pools_found_on_a_cluster_get_its_capacity_and_keep_what_was_configured(catalog: Database) -> None:
    configured = PoolSpec(name="a100", purpose=Purpose.SERVE, sharing=Sharing.HAMI, gpu_count=2, cluster="east",
                          quota_gpus=4, groups=["ml"])  # fmt: skip
    pools.sync_configured_pools(db=catalog, specs=[configured])
    found = [
        PoolBase(name="a100", cpu_cores=192, memory_mib=2_000_000, gpu_model="A100", gpu_count=16, gpu_memory_mib=81920,
                     node_selector={"cove.dev/pool": "a100"}),
        PoolBase(name="l4", cpu_cores=32, memory_mib=128_000, gpu_model="L4", gpu_count=4, gpu_memory_mib=23034,
                     node_selector={"cove.dev/pool": "l4"}),
        PoolBase(name="local", cpu_cores=8, memory_mib=1),  # a pool of another cluster: not taken over
    ]  # fmt: skip
    problems = pools.sync_detected_pools(db=catalog, cluster="east", detected=found)
    assert problems == ["pool 'local' is on cluster 'default': nodes of 'east' labelled for it do not count"]
    by_name = {u.pool.name: u.pool for u in pools.list_pools(db=catalog)}
    a100, l4 = by_name["a100"], by_name["l4"]
    assert (a100.gpu_count, a100.cpu_cores, a100.gpu_model) == (16, 192, "A100")  # the nodes' capacity
    assert (a100.sharing, a100.purpose, a100.quota_gpus, a100.groups, a100.detected) == (
        "hami",
        "serve",
        4,
        ["ml"],
        False,
    )
    assert (l4.cluster, l4.sharing, l4.detected, l4.node_selector) == ("east", "whole", True, {"cove.dev/pool": "l4"})
    assert by_name["local"].cpu_cores == 4  # untouched

    pools.sync_detected_pools(db=catalog, cluster="east", detected=found[:1])  # the L4 nodes are gone
    by_name = {u.pool.name: u.pool for u in pools.list_pools(db=catalog)}
    assert (by_name["l4"].gpu_count, by_name["l4"].cpu_cores) == (0, 0)  # kept for what it holds, with no room
    assert by_name["a100"].gpu_count == 16


def test_an_image_built_by_cove_is_pushed_under_the_registry_only(catalog: Database) -> None:
    registry = "registry.example.com/team"
    outside = ImageCreate(name="srv", version="1", ref="registry.example.com/other/srv", dockerfile="FROM python:3\n")

    with pytest.raises(InvalidSpec) as raised:
        images.add_image(actor=ADMIN, db=catalog, data=outside, registry=registry)

    assert raised.value.message == (
        "registry.example.com/other/srv is not under COVE_REGISTRY registry.example.com/team: Cove pushes the "
        "images it builds there and nowhere else"
    )
    assert raised.value.hint == "leave the reference out (it is then registry.example.com/team/srv)"
    inside = ImageCreate(name="srv", version="1", dockerfile="FROM python:3\n")
    assert images.add_image(actor=ADMIN, db=catalog, data=inside, registry=registry).ref == f"{registry}/srv"
    # an image Cove does not build may live anywhere
    pulled = ImageCreate(name="other", version="1", ref="docker.io/vllm/vllm-openai")
    assert images.add_image(actor=ADMIN, db=catalog, data=pulled, registry=registry).ref == "docker.io/vllm/vllm-openai"
