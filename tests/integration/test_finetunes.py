"""Fine-tune jobs through the service and the controller's JobRunner, on a backend whose tasks do what each test
says (tests/fakes/backends.py): admission, plans, progress reports, the version a success registers, failures,
cancel and resume. Real training is in test_trainer.py and test_finetune_flow.py."""

from __future__ import annotations

import json
import stat
import struct
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlmodel import select

from cove.client import Client
from studio import finetuning
from studio.api.app import build_api
from studio.api.auth import trusting
from studio.backends.base import TaskState
from studio.backends.kubernetes.backend import KubernetesBackend
from studio.backends.kubernetes.client import KubeClient, connect
from studio.cli import cli
from studio.db import Database
from studio.errors import Conflict, Forbidden, InvalidSpec, NotFound, QuotaExceeded, Unauthorized
from studio.finetuning import Metrics, Outcome, Progress, Result, Sample
from studio.jobs import JobRunner
from studio.models import ApiKeyCreate, Dataset, DatasetVersion, DeploymentCreate, FineTuneCreate, Pool
from studio.services import deployments, finetunes, keys, models
from studio.settings import Settings
from studio.values import JobStatus, Purpose, Resources
from tests.fakes.backends import InstantBackend
from tests.fakes.kubeapi import Cluster
from tests.integration.conftest import cove_env, write_stub_model
from tests.people import ADMIN, member
from tests.schemas import assert_valid


def add_dataset(db: Database, settings: Settings, name: str = "facts", owner: str = "admin") -> DatasetVersion:
    """A registered dataset version, as the dataset store leaves one (its files under COVE_HOME/datasets)."""
    folder = settings.datasets_dir / f"{name}-sha"
    (folder / "train").mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    (folder / "train" / "train.jsonl").write_text(json.dumps(row) + "\n")
    with db.session() as session:
        dataset = Dataset(name=name, owner=owner)
        session.add(dataset)
        session.flush()
        assert dataset.id is not None
        version = DatasetVersion(
            dataset_id=dataset.id,
            version=1,
            sha256="f" * 64,
            source_kind="upload",
            source="train.jsonl",
            path=str(folder),
            builder="json",
            files={"train": ["train/train.jsonl"]},
            splits={"train": 1},
            rows=1,
            format="messages",
            columns={"messages": "messages"},
        )
        session.add(version)
        session.commit()
        session.refresh(version)
        return version


@pytest.fixture
def ready(db: Database, settings: Settings, stub_model: str) -> str:
    add_dataset(db, settings)
    return stub_model


def create(db: Database, name: str = "tune", **fields: object) -> finetunes.FineTunePublic:
    data = {"name": name, "model": "stub", "dataset": "facts", **fields}
    return finetunes.create_finetune(db=db, actor=ADMIN, data=FineTuneCreate.model_validate(data))


def runner_pass(db: Database, settings: Settings, backend: InstantBackend) -> set[str]:
    return JobRunner(db=db, settings=settings, python="python3").reconcile({"default": backend})


def job(db: Database, name: str = "tune") -> finetunes.FineTunePublic:
    return finetunes.get_finetune(db=db, actor=ADMIN, name=name)


def token_of(settings: Settings, name: str = "tune") -> str:
    plan = finetuning.TrainPlan.model_validate_json((settings.finetunes_dir / name / "plan.json").read_text())
    assert plan.report is not None
    return plan.report.token


def succeed(settings: Settings, backend: InstantBackend, task: str, name: str = "tune") -> None:
    folder = settings.finetunes_dir / name
    write_stub_model(folder / finetuning.MERGED_DIR)
    metrics = Metrics(eval_loss=0.5, perplexity=1.65, steps=60, samples=[Sample(prompt="Q", base="?", candidate="A")])
    result = Result(outcome=Outcome.SUCCEEDED, metrics=metrics, model_dir=str(folder / finetuning.MERGED_DIR))
    (folder / finetuning.RESULT_FILE).write_text(result.model_dump_json())
    backend.task_states[task] = TaskState("succeeded", exit_code=0)


# ------------------------------------------------------------------------------------------------ create


def test_a_job_takes_the_defaults_for_its_base_s_size_with_the_user_s_values_laid_over(
    db: Database, ready: str
) -> None:
    got = create(db, settings={"max_steps": 30, "learning_rate": 0.01})

    assert got.status == JobStatus.QUEUED
    assert (got.model, got.model_version, got.dataset, got.dataset_version) == ("stub", 1, "facts", 1)
    assert got.target_model == "stub"  # a new version of the base model unless told otherwise
    assert got.settings.max_steps == 30
    assert got.settings.learning_rate == 0.01
    assert got.settings.rank == 8  # a tiny model's default


def test_every_wrong_setting_is_named(db: Database, ready: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        create(db, settings={"rank": 0, "dropout": 2, "colour": "red"})

    paths = [f["path"] for f in caught.value.fields]
    assert paths == ["settings.rank", "settings.dropout", "settings.colour"]


def test_target_modules_the_base_lacks_are_refused_naming_those_it_has(db: Database, ready: str) -> None:
    with pytest.raises(InvalidSpec, match="has no module 'c_attn'") as caught:
        create(db, settings={"target_modules": ["q_proj", "c_attn"]})

    assert caught.value.hint.startswith("it can target: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
    assert create(db, settings={"target_modules": ["q_proj", "v_proj"]}).settings.target_modules == ["q_proj", "v_proj"]


def test_a_preview_says_the_settings_targets_estimates_and_room_and_makes_nothing(db: Database, ready: str) -> None:
    data = FineTuneCreate(
        name="tune", model="stub", dataset="facts", resources=Resources(cpu=1, memory_mib=64), settings={"epochs": 2}
    )

    got = finetunes.preview_finetune(db=db, actor=ADMIN, data=data)

    assert got.settings.rank == 8
    assert "q_proj" in got.targets
    assert got.rows == 1
    assert got.steps == 2  # one step an epoch over one row
    assert got.memory_mib > 64
    assert got.fits
    assert got.warnings == [
        f"it may need about {got.memory_mib} MiB, more than the 64 MiB asked for: ask for more memory, or lower "
        "batch_size or max_length"
    ]
    assert finetunes.list_finetunes(db=db, actor=ADMIN) == []


def test_a_missing_dataset_says_how_to_add_one(db: Database, ready: str) -> None:
    with pytest.raises(NotFound, match="no dataset named 'nope'") as caught:
        create(db, dataset="nope")

    assert "cove dataset add" in caught.value.hint


def test_a_serving_pool_is_refused_naming_the_training_pools(db: Database, ready: str) -> None:
    with db.session() as session:
        session.add(Pool(name="serve", purpose=Purpose.SERVE, cpu_cores=8, memory_mib=8192))
        session.add(Pool(name="train", purpose=Purpose.TRAIN, cpu_cores=8, memory_mib=8192))
        session.commit()

    with pytest.raises(InvalidSpec, match="pool 'serve' is for serve, not training") as caught:
        create(db, pool="serve")

    assert "train" in caught.value.hint


def test_a_job_holds_its_pool_until_it_ends_so_a_deployment_cannot_take_its_room(
    db: Database, settings: Settings, ready: str
) -> None:
    with db.session() as session:
        session.add(Pool(name="small", cpu_cores=4, memory_mib=4096))
        session.commit()
    create(db, pool="small", resources={"cpu": 3, "memory_mib": 3072})

    with pytest.raises(QuotaExceeded) as caught:
        deployments.create_deployment(
            db=db,
            actor=ADMIN,
            data=DeploymentCreate(name="chat", model="stub", pool="small", resources=Resources(cpu=2, memory_mib=512)),
        )
    assert "1 CPU cores" in caught.value.hint  # what is free, as deployments say it

    with pytest.raises(QuotaExceeded):  # a second job does not fit either: refused with what is free
        create(db, name="tune-2", pool="small", resources={"cpu": 3, "memory_mib": 1024})


def test_with_a_queue_a_job_that_does_not_fit_waits_instead_of_being_refused(db: Database, ready: str) -> None:
    with db.session() as session:
        session.add(Pool(name="small", cpu_cores=1, memory_mib=1024))
        session.commit()
    data = FineTuneCreate(name="tune", model="stub", dataset="facts", pool="small", resources=Resources(cpu=4))

    got = finetunes.create_finetune(db=db, actor=ADMIN, data=data, queued=True)

    assert got.status == JobStatus.QUEUED
    assert got.message.startswith("queued until pool 'small' has room")


def test_a_member_cannot_see_or_cancel_another_member_s_job(db: Database, ready: str) -> None:
    create(db)
    alice = member(db, "alice")

    assert finetunes.list_finetunes(db=db, actor=alice) == []
    with pytest.raises(Forbidden):
        finetunes.cancel_finetune(db=db, actor=alice, name="tune")


# ------------------------------------------------------------------------------------------------ running


def test_the_controller_writes_the_plan_and_runs_the_trainer_as_a_task(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db, settings={"max_steps": 5})
    backend = InstantBackend()

    assert runner_pass(db, settings, backend) == {"ft-tune-1"}

    spec = backend.task_specs["ft-tune-1"]
    folder = settings.finetunes_dir / "tune"
    assert spec.command == ("python3", "-m", "studio.trainer", f"{folder}/plan.json")
    assert ("HF_HUB_OFFLINE", "1") in spec.env
    plan_file = folder / "plan.json"
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600  # it holds the job's token
    plan = finetuning.TrainPlan.model_validate_json(plan_file.read_text())
    assert plan.settings.max_steps == 5
    assert not plan.resume
    assert plan.dataset.files == {"train": [str(settings.datasets_dir / "facts-sha" / "train" / "train.jsonl")]}
    assert plan.report is not None
    assert plan.report.url.endswith("/api/v1/finetunes/tune/progress")
    assert job(db).status == JobStatus.RUNNING


def test_progress_with_the_job_s_token_is_kept_and_drawn_as_a_loss_curve(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db)
    runner_pass(db, settings, InstantBackend())
    token = token_of(settings)

    for step, loss in ((5, 2.0), (10, 1.5), (15, float("nan"))):
        progress = Progress(step=step, total_steps=60, loss=loss, learning_rate=0.005, eta_s=30)
        finetunes.report(db=db, name="tune", token=token, progress=progress)

    got = job(db)
    assert got.progress["step"] == 15
    assert got.progress["total_steps"] == 60
    assert [p["step"] for p in got.history] == [5, 10, 15]
    assert "loss" not in got.history[-1]  # NaN is not a point of the curve


def test_a_report_without_the_job_s_token_is_refused(db: Database, settings: Settings, ready: str) -> None:
    create(db)
    runner_pass(db, settings, InstantBackend())

    with pytest.raises(Forbidden):
        finetunes.report(db=db, name="tune", token="guessed", progress=Progress(step=1))


def test_a_success_becomes_a_new_version_of_the_model_with_its_lineage(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db, settings={"max_steps": 60})
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    succeed(settings, backend, "ft-tune-1")

    runner_pass(db, settings, backend)

    got = job(db)
    assert got.status == JobStatus.SUCCEEDED
    assert got.result_version == 2
    assert got.message == "registered as stub v2"
    assert got.metrics["perplexity"] == 1.65
    assert backend.tasks() == set()  # the ended task is forgotten
    version = models.get_model(db=db, name="stub").versions[-1]
    assert version.version == 2
    assert version.lineage is not None
    assert version.lineage["base"] == "stub@1"
    assert version.lineage["dataset"] == "facts@1"
    assert version.lineage["dataset_sha256"] == "f" * 64
    assert version.lineage["job"] == "tune"
    assert version.lineage["settings"]["max_steps"] == 60
    assert version.lineage["settings_hash"] == got.settings.hash


def test_a_success_may_become_a_version_of_another_model(db: Database, settings: Settings, ready: str) -> None:
    create(db, target_model="stub-facts")
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    succeed(settings, backend, "ft-tune-1")

    runner_pass(db, settings, backend)

    assert [v.version for v in models.get_model(db=db, name="stub-facts").versions] == [1]
    assert [v.version for v in models.get_model(db=db, name="stub").versions] == [1]


def test_an_adapter_version_is_served_on_its_base_by_vllm_and_refused_by_runtimes_that_cannot(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db, settings={"serving": "adapter", "rank": 8})
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    adapter = settings.finetunes_dir / "tune" / finetuning.ADAPTER_DIR
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    succeed(settings, backend, "ft-tune-1")

    runner_pass(db, settings, backend)

    version = models.get_model(db=db, name="stub").versions[-1]
    assert (version.version, version.model_type, version.adapter_of) == (2, "lora", "stub@1")
    with pytest.raises(InvalidSpec, match="is a LoRA adapter, and the transformers runtime cannot serve adapters"):
        deployments.create_deployment(
            db=db, actor=ADMIN, data=DeploymentCreate(name="tuned", model="stub", model_version=2)
        )
    deployments.create_deployment(
        db=db, actor=ADMIN, data=DeploymentCreate(name="tuned", model="stub", model_version=2, image="vllm")
    )
    (spec,) = [d.spec for d in deployments.desired_state(db=db)]
    base = models.get_model(db=db, name="stub").versions[0]
    assert (spec.model_path, spec.adapter, spec.adapter_rank) == (base.path, version.path, 8)


def test_a_killed_task_fails_the_job_with_the_cause_and_resume_goes_on_from_the_checkpoint(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db)
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    checkpoint = settings.finetunes_dir / "tune" / finetuning.CHECKPOINTS_DIR / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    killed = TaskState("failed", "the process was killed (no exit status: SIGKILL, or out of memory)")
    backend.task_states["ft-tune-1"] = killed

    runner_pass(db, settings, backend)

    failed = job(db)
    assert failed.status == JobStatus.FAILED
    assert failed.message.startswith("the process was killed")
    assert "cove finetune resume tune" in failed.message

    finetunes.resume_finetune(db=db, actor=ADMIN, name="tune")
    runner_pass(db, settings, backend)

    assert job(db).attempt == 2
    assert "ft-tune-2" in backend.task_specs  # a new task: a Kubernetes Job is made once
    plan = finetuning.TrainPlan.model_validate_json((settings.finetunes_dir / "tune" / "plan.json").read_text())
    assert plan.resume


def test_the_trainer_s_own_words_say_why_it_failed(db: Database, settings: Settings, ready: str) -> None:
    create(db)
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    result = Result(outcome=Outcome.DIVERGED, message="loss became NaN at step 12", last_checkpoint=10)
    (settings.finetunes_dir / "tune" / finetuning.RESULT_FILE).write_text(result.model_dump_json())
    backend.task_states["ft-tune-1"] = TaskState("failed", "the process exited with code 3", 3)

    runner_pass(db, settings, backend)

    got = job(db)
    assert got.status == JobStatus.FAILED
    assert got.message == "loss became NaN at step 12 — `cove finetune resume tune` goes on from step 10"


def test_cancel_stops_the_task_and_the_job_is_cancelled_and_resumable(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db)
    backend = InstantBackend()
    runner_pass(db, settings, backend)

    finetunes.cancel_finetune(db=db, actor=ADMIN, name="tune")
    runner_pass(db, settings, backend)

    assert job(db).status == JobStatus.CANCELLED
    assert backend.tasks() == set()
    with pytest.raises(Conflict, match="has ended"):
        finetunes.cancel_finetune(db=db, actor=ADMIN, name="tune")
    assert finetunes.resume_finetune(db=db, actor=ADMIN, name="tune").status == JobStatus.QUEUED


def test_a_running_job_is_not_resumed_or_deleted(db: Database, settings: Settings, ready: str) -> None:
    create(db)
    runner_pass(db, settings, InstantBackend())

    with pytest.raises(Conflict, match="only a failed or cancelled one resumes"):
        finetunes.resume_finetune(db=db, actor=ADMIN, name="tune")
    with pytest.raises(Conflict, match="cancel it first"):
        finetunes.delete_finetune(db=db, actor=ADMIN, name="tune", folders=Path("/nonexistent"))


def test_a_dataset_version_in_use_by_a_job_cannot_vanish(db: Database, settings: Settings, ready: str) -> None:
    create(db)

    with db.session() as session:
        version = session.exec(select(DatasetVersion)).one()
        session.delete(version)
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


# ------------------------------------------------------------------------------------------------ API and CLI


def test_the_api_reports_progress_only_with_the_job_s_token_and_the_client_follows_it(
    db: Database, settings: Settings, ready: str
) -> None:
    with Client.in_process(build_api(settings=settings, db=db, identify=trusting(ADMIN))) as client:
        created = client.finetunes.create("tune", "stub", "facts", settings={"max_steps": 5})
        assert created.status == JobStatus.QUEUED
        backend = InstantBackend()
        runner_pass(db, settings, backend)
        path = "/finetunes/tune/progress"

        with pytest.raises(Unauthorized):
            client.request("POST", path, body={"step": 1})
        with pytest.raises(Forbidden):
            client.request("POST", path, body={"step": 1}, headers={"Authorization": "Bearer guessed"})
        token = {"Authorization": f"Bearer {token_of(settings)}"}
        client.request("POST", path, body={"step": 3, "total_steps": 5, "loss": 1.25}, headers=token)

        assert client.finetunes.get("tune").progress["step"] == 3
        succeed(settings, backend, "ft-tune-1")
        runner_pass(db, settings, backend)
        seen: list[JobStatus] = []
        done = client.finetunes.wait("tune", timeout=5, on_progress=lambda j: seen.append(j.status))
        assert done.result_version == 2
        assert seen == [JobStatus.SUCCEEDED]
        assert [e.reason for e in client.finetunes.events("tune")][:2] == ["Succeeded", "Running"]


def test_a_member_s_token_without_the_finetunes_scope_is_refused(db: Database, settings: Settings, ready: str) -> None:
    alice = member(db, "alice")
    key = keys.create_key(db=db, actor=alice, data=ApiKeyCreate(name="ci", scopes=["deployments:read"])).key
    with Client.in_process(build_api(settings=settings, db=db)) as client:
        client.http.headers["Authorization"] = f"Bearer {key}"
        with pytest.raises(Forbidden, match="finetunes:read"):
            list(client.finetunes.list())


def test_the_cli_creates_follows_and_lists_a_job(db: Database, settings: Settings, ready: str) -> None:
    env = {k: v for k, v in cove_env(settings).items() if k.startswith(("COVE_", "HF_"))}

    created = CliRunner().invoke(
        cli,
        ["finetune", "create", "tune", "--model", "stub:1", "--dataset", "facts", "--max-steps", "40", "--lr", "0.01",
         "--set", "warmup_ratio=0.1", "--set", "schedule=linear"],
        env=env,
    )  # fmt: skip

    assert created.exit_code == 0, created.output
    assert "stub v1 on facts v1 in pool local; LoRA rank 8, alpha 16, learning rate 0.01, 40 steps" in created.output
    job_row = job(db)
    assert (job_row.settings.warmup_ratio, job_row.settings.schedule) == (0.1, "linear")
    listed = CliRunner().invoke(cli, ["finetune", "list"], env=env)
    assert "tune" in listed.output
    assert "Queued" in listed.output

    runner_pass(db, settings, InstantBackend())
    progress = Progress(step=10, total_steps=40, loss=1.25, tokens_per_s=900, eta_s=30)
    finetunes.report(db=db, name="tune", token=token_of(settings), progress=progress)
    got = CliRunner().invoke(cli, ["finetune", "get", "tune"], env=env)
    assert "tune: Running, step 10/40 (25%), loss 1.2500, 900 tokens/s, ETA 30 s" in got.output

    wrong = CliRunner().invoke(cli, ["finetune", "create", "t2", "--model", "stub", "--dataset", "facts",
                                     "--set", "rank=0"], env=env)  # fmt: skip
    assert wrong.exit_code != 0
    assert "settings.rank" in wrong.output


# ------------------------------------------------------------------------------------------------ on Kubernetes


def test_on_kubernetes_a_job_runs_as_a_job_that_sees_the_claims_and_its_success_is_registered(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """The JobRunner with the Kubernetes backend on the API emulator, the test playing the Job controller: the plan
    and the Job speak the pod's paths; the control plane reads what the pod wrote on the claim it mounts too."""
    models.register_built(
        db=db, actor=ADMIN, name="base", folder=write_stub_model(tmp_path / "base"), repo_id="team/base",
        cache_dir=settings.models_dir,
    )  # fmt: skip
    add_dataset(db, settings)
    create(db, model="base")
    with Cluster() as cluster:
        backend = KubernetesBackend(
            settings.model_copy(update={"kueue_queue": "team-a"}), KubeClient(connect(host=cluster.url), "cove")
        )
        try:
            runner = JobRunner(db=db, settings=settings.model_copy(update={"kueue_queue": "team-a"}))
            backend.observe()
            runner.reconcile({"default": backend})

            assert cluster.api is not None
            (sent,) = cluster.api.sent("POST", "jobs")
            assert_valid(sent)
            assert sent["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
            box = sent["spec"]["template"]["spec"]["containers"][0]
            assert [*box["command"], *box["args"]] == [
                "python",
                "-m",
                "studio.trainer",
                "/data/models/finetunes/tune/plan.json",
            ]
            plan = finetuning.TrainPlan.model_validate_json((settings.finetunes_dir / "tune" / "plan.json").read_text())
            assert plan.base_path.startswith("/data/models/models--team--base/snapshots/")
            assert plan.dataset.files == {"train": ["/data/datasets/facts-sha/train/train.jsonl"]}
            assert plan.output_dir == "/data/models/finetunes/tune"
            assert job(db).status == JobStatus.QUEUED  # suspended until Kueue admits it

            succeed(settings, InstantBackend(), "ft-tune-1")  # what the pod leaves on the models claim
            cluster.patch(
                "/apis/batch/v1/namespaces/cove/jobs/ft-tune-1/status",
                {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}},
            )
            backend.observe()
            runner.reconcile({"default": backend})
        finally:
            backend.close(stop_workloads=False)

    assert job(db).status == JobStatus.SUCCEEDED
    assert [v.version for v in models.get_model(db=db, name="base").versions] == [1, 2]


def test_on_kubernetes_a_base_outside_the_models_claim_fails_the_job_saying_why(
    db: Database, settings: Settings, ready: str
) -> None:
    create(db)  # the stub model is a folder on the server, which no pod can see
    with Cluster() as cluster:
        backend = KubernetesBackend(settings, KubeClient(connect(host=cluster.url), "cove"))
        try:
            backend.observe()
            JobRunner(db=db, settings=settings).reconcile({"default": backend})
        finally:
            backend.close(stop_workloads=False)

    failed = job(db)
    assert failed.status == JobStatus.FAILED
    assert "is on neither the models claim" in failed.message
