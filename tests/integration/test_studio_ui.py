"""The studio pages, run headless with Streamlit's AppTest against a real database: what a user sees and what their
clicks change. Each test drives one page the way a user would (fill in, click) and checks both the page and the
state the services hold afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from studio.db import Database
from studio.errors import Forbidden
from studio.kvlog import KvFigures
from studio.logs import LogReader
from studio.models import Deployment, ImageCreate, ModelCreate, Pool
from studio.services import clusters, deployments, images, keys, models, plans, usage
from studio.settings import Settings
from studio.ui import facade
from studio.values import BuildStatus, Resources, Sharing
from tests.integration.conftest import deploy, page, settle, table, texts, write_stub_model
from tests.people import ADMIN, member
from tests.unit.test_memplan import LLAMA3_8B

# ---------------------------------------------------------------------------------------------------- overview


def test_overview_shows_the_pool_the_deployments_by_status_and_events(
    ui: AppTest, db: Database, stub_model: str
) -> None:
    deploy(db, "chat", stub_model, "transformers")

    at = ui
    at.run()

    assert not at.exception
    pool = table(at, 0)[0]
    assert (pool["pool"], pool["CPU (allocated / total)"].split(" / ")[0], pool["deployments"]) == ("local", "0.5", 1)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Pending"], metrics["Ready"]) == ("1", "0")
    events = table(at, 1)
    assert events[0]["deployment"] == "chat"
    assert events[0]["reason"] == "Created"


def test_overview_of_an_empty_studio_points_to_deploy(ui: AppTest) -> None:
    ui.run()

    assert "Nothing is deployed yet" in texts(ui.info)


def test_a_cluster_is_registered_and_removed_from_the_overview(ui: AppTest, db: Database) -> None:
    kubeconfig = (
        "apiVersion: v1\nkind: Config\ncurrent-context: east\n"
        "clusters: [{name: east, cluster: {server: 'https://east.example.com:6443'}}]\n"
        "contexts: [{name: east, context: {cluster: east, user: ops}}]\nusers: [{name: ops, user: {token: t0k3n}}]\n"
    )
    at = ui
    at.run()
    register = next(b for b in at.button if b.label == "Register cluster")
    at.text_input(key="cluster-name").input("east")
    at.text_area(key="cluster-kubeconfig").input(kubeconfig.replace("current-context: east", "current-context: x"))
    register.click().run()
    assert "the kubeconfig has no context named 'x'" in texts(at.error)

    at.text_area(key="cluster-kubeconfig").input(kubeconfig)
    next(b for b in at.button if b.label == "Register cluster").click().run()
    assert not at.error, texts(at.error)
    assert "Registered cluster east (https://east.example.com:6443)." in texts(at.success)
    (row,) = [r for r in table(at, 1) if r.get("cluster") == "east"]
    assert (row["server"], row["state"]) == ("https://east.example.com:6443", "not checked yet")
    assert "t0k3n" not in str(table(at, 1))

    at.button(key="remove-cluster").click().run()
    assert "Removed cluster east." in texts(at.success)
    assert clusters.list_clusters(db=db) == []


# ------------------------------------------------------------------------------------------------------ models


def add_model(at: AppTest, name: str, source: str, new_version: bool = False) -> AppTest:
    at.text_input(key="new-model-name").input(name)
    at.text_input(key="new-model-source").input(source)
    at.checkbox(key="new-model-version").set_value(new_version)
    at.button[0].click().run()  # the form's submit button is the page's first button
    return at


def test_add_a_model_from_a_folder_then_see_its_card_and_config(ui: AppTest, tmp_path: Path) -> None:
    folder = write_stub_model(tmp_path / "tiny")
    (folder / "README.md").write_text("# Tiny\nA stub for tests.")
    at = page(ui, "models")
    assert "catalog is empty" in texts(at.info)

    add_model(at, "tiny", str(folder))

    assert not at.error, texts(at.error)
    assert table(at)[0]["model"] == "tiny"
    assert table(at)[0]["architecture"] == "LlamaForCausalLM"
    assert "# Tiny" in texts(at.markdown)
    assert at.json[0].value
    assert json.loads(at.json[0].value)["model_type"] == "llama"


def test_model_mistakes_are_shown_with_the_next_step(ui: AppTest, tmp_path: Path) -> None:
    folder = write_stub_model(tmp_path / "tiny")
    at = add_model(page(ui, "models"), "tiny", str(folder))

    add_model(at, "tiny", str(folder))
    assert "exists" in texts(at.error)
    assert "Next:" in texts(at.error)

    add_model(at, "empty", str(tmp_path))  # a folder, but no model in it
    assert "config.json" in texts(at.error)

    add_model(at, "remote", "example-org/not-cached")  # the Hub is unreachable here (HF_HUB_OFFLINE)
    assert "cannot be reached" in texts(at.error)
    assert "add it by path" in texts(at.error)

    add_model(at, "tiny", str(folder), new_version=True)
    assert not at.error
    assert [v.version for v in models.get_model(db=facade._shared().db, name="tiny").versions] == [1, 2]


# ------------------------------------------------------------------------------------------------------ images


def register(at: AppTest, **fields: str) -> AppTest:
    for key, value in fields.items():
        widget = at.text_area(key="image-dockerfile") if key == "dockerfile" else at.text_input(key=f"image-{key}")
        widget.input(value)
    settle(at.button[0].click().run())
    return at


def test_images_list_the_builtin_runtimes_and_what_runs_here(ui: AppTest) -> None:
    at = page(ui, "images")

    rows = {r["image"]: r for r in table(at)}
    assert {"vllm", "sglang", "triton", "transformers"} <= set(rows)
    assert rows["transformers"]["runs here"] == "yes"
    assert rows["vllm"]["runs here"] == "no"
    assert "vllm" in texts(at.caption)
    assert "GPU" in texts(at.caption)


def test_register_a_custom_image_with_a_dockerfile(ui: AppTest, db: Database) -> None:
    at = page(ui, "images")

    register(
        at,
        name="my-server",
        version="1.0.0",
        ref="registry.example.com/team/my-server",
        dockerfile="FROM python:3.11-slim\nRUN pip install my-server\n",
    )

    assert not at.error, texts(at.error)
    assert "Registered registry.example.com/team/my-server:1.0.0" in texts(at.success)
    mine = next(i for i in images.list_images(db=db) if i.name == "my-server")
    assert mine.dockerfile
    assert mine.dockerfile.startswith("FROM python")
    assert {"image": "my-server", "kind": "Dockerfile", "build": "Pending", "runs here": "no"}.items() <= next(
        r for r in table(at) if r["image"] == "my-server"
    ).items()
    assert "**my-server:1.0.0**: waiting for the controller to start the build" in texts(at.info)


def test_a_failed_build_is_shown_with_its_reason_and_can_be_built_again(ui: AppTest, db: Database) -> None:
    data = ImageCreate(name="srv", version="2", ref="registry.example.com/team/srv", dockerfile="FROM python:3.11\n")
    images.add_image(actor=ADMIN, db=db, data=data)
    images.record_build(
        db=db, name="srv", version="2", status=BuildStatus.FAILED, message="the build exited with code 1"
    )
    at = page(ui, "images")
    assert "**srv:2** could not be built: the build exited with code 1" in texts(at.error)

    at.button(key="rebuild-srv-2").click().run()
    (again,) = [i for i in images.list_images(db=db) if i.name == "srv"]
    assert again.build_status == "Pending"
    assert "Rebuilding registry.example.com/team/srv:2." in texts(at.success)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "x", "version": "latest", "ref": "r.example.com/x"}, "latest"),
        ({"name": "x", "version": "1", "ref": "r.example.com/x", "dockerfile": "RUN true"}, "FROM"),
        ({"name": "x", "version": "1", "ref": "r.example.com/x", "command": "serve --port 80"}, "{port}"),
        ({"name": "x", "version": "1", "ref": "r.example.com/x", "command": "serve 'open"}, "quote"),
        ({"name": "Bad Name", "version": "1", "ref": "r.example.com/x"}, "name"),
    ],
)
def test_invalid_images_are_refused_with_the_reason(ui: AppTest, fields: dict[str, str], says: str) -> None:
    at = register(page(ui, "images"), **fields)

    assert says in texts(at.error)
    assert "x" not in {r["image"] for r in table(at)}


# ------------------------------------------------------------------------------------------------------ deploy


def test_deploy_is_one_click_with_the_defaults(ui: AppTest, db: Database, stub_model: str) -> None:
    at = page(ui, "deploy")

    assert at.text_input(key="name-stub").value == "stub"
    assert at.selectbox(key="image").value == "transformers"
    settle(at.button(key="deploy").click().run())

    assert not at.error, texts(at.error)
    dep = deployments.get_deployment(actor=ADMIN, db=db, name="stub")
    assert (dep.model, dep.image, dep.replicas, dep.pool, dep.resources.cpu) == ("stub", "transformers", 1, "local", 1)
    assert "Deploying stub" in texts(at.success)  # the Deployments page shows the new deployment
    assert at.selectbox(key="deployment").value == "stub"


def test_deploy_names_the_next_free_name_and_passes_runtime_args(ui: AppTest, db: Database, stub_model: str) -> None:
    deploy(db, "stub", stub_model)
    at = page(ui, "deploy")

    assert at.text_input(key="name-stub").value == "stub-2"
    at.text_input(key="runtime-args").input("--dtype float32 --chat-template-kwargs '{\"a\": 1}'")
    at.toggle(key="autoscale").set_value(True).run()
    at.number_input(key="max-replicas").set_value(2).run()
    at.button(key="deploy").click().run()

    dep = deployments.get_deployment(actor=ADMIN, db=db, name="stub-2")
    assert dep.runtime_args == ["--dtype", "float32", "--chat-template-kwargs", '{"a": 1}']
    assert dep.autoscale is not None
    assert (dep.autoscale.min_replicas, dep.autoscale.max_replicas) == (1, 2)


def test_what_does_not_fit_is_blocked_with_the_reason(ui: AppTest, db: Database, stub_model: str) -> None:
    at = page(ui, "deploy")

    at.number_input(key="cpu").set_value(64.0).run()
    assert "Does not fit in pool local" in texts(at.warning)
    assert "CPU" in texts(at.warning)
    assert at.button(key="deploy").disabled

    at.number_input(key="cpu").set_value(1.0).run()
    at.selectbox(key="image").set_value("vllm").run()
    assert "Image vllm cannot run here" in texts(at.warning)
    assert at.button(key="deploy").disabled

    at.selectbox(key="image").set_value("transformers").run()
    assert not at.warning
    assert not at.button(key="deploy").disabled


def test_gpu_pools_offer_whole_gpus_and_slices_marking_what_is_taken(
    ui: AppTest, db: Database, stub_model: str
) -> None:
    with db.session() as session:
        session.add(
            Pool(
                name="l20",
                sharing=Sharing.HAMI.value,
                gpu_model="L20",
                gpu_count=2,
                gpu_memory_mib=46068,
                cpu_cores=32,
                memory_mib=256_000,
            )
        )
        session.commit()
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=deployments.DeploymentCreate(
            name="big", model=stub_model, pool="l20", image="transformers", resources=Resources(gpus=1)
        ),
    )
    at = page(ui, "deploy")
    at.selectbox(key="pool").set_value("l20").run()

    gpus = at.selectbox(key="gpus")
    assert gpus.options == ["1", "2 — does not fit: 1 free"]
    gpus.set_value(2).run()
    assert "Does not fit in pool l20" in texts(at.warning)

    at.radio(key="gpu-mode").set_value("GPU memory slice").run()
    at.number_input(key="gpu-memory").set_value(8192).run()
    assert "Does not fit" not in texts(at.warning)


def test_a_taken_name_is_refused_by_the_service_not_silently_replaced(
    ui: AppTest, db: Database, stub_model: str
) -> None:
    at = page(ui, "deploy")
    deploy(db, "stub", stub_model)  # someone else took the name after the page was drawn

    at.button(key="deploy").click().run()

    assert "exists" in texts(at.error)


def test_deploy_without_models_points_to_the_catalog(ui: AppTest) -> None:
    at = page(ui, "deploy")

    assert "no model to deploy" in texts(at.info)


# ------------------------------------------------------------------------------------------------- deployments


def test_a_deployment_shows_status_endpoint_code_logs_and_traffic(
    ui: AppTest, db: Database, settings: Settings, stub_model: str
) -> None:
    deploy(db, "chat", stub_model)
    log = settings.logs_dir / "chat" / "replica-0.log"
    log.parent.mkdir(parents=True)
    log.write_text("--- cove start\nloading model\nlistening on port 1234\n")
    usage.record_usage(
        db=db,
        records=[
            {
                "api_key_id": None,
                "deployment": "chat",
                "endpoint": "chat.completions",
                "stream": True,
                "status_code": code,
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "latency_ms": 40.0,
                "ttft_ms": 12.0,
            }
            for code in (200, 200, 502)
        ],
    )

    at = page(ui, "deployments")

    assert "chat · :gray[Pending] · 0/1 ready" in texts(at.markdown)
    assert f"{settings.gateway_url}/v1" in texts(at.markdown)
    code = texts(at.code)
    assert f"curl {settings.gateway_url}/v1/chat/completions" in code
    assert '"model": "chat"' in code
    assert 'model="chat"' in code
    assert "COVE_API_KEY" in code
    assert "[0] listening on port 1234" in code
    assert len(at.get("vega_lite_chart")) == 3  # requests/errors, tokens, latencies per minute
    assert table(at, 0)[0]["status"] == "Pending"


def test_scale_stop_and_delete(ui: AppTest, db: Database, stub_model: str) -> None:
    deploy(db, "chat", stub_model)
    at = page(ui, "deployments")

    at.number_input(key="replicas-chat").set_value(2).run()
    settle(at.button(key="scale").click().run())
    assert deployments.get_deployment(actor=ADMIN, db=db, name="chat").replicas == 2
    assert "Scaling chat to 2" in texts(at.success)

    settle(at.button(key="stop").click().run())
    assert deployments.get_deployment(actor=ADMIN, db=db, name="chat").replicas == 0
    assert at.button(key="stop").disabled

    at.button(key="delete-deployment").click().run()
    assert deployments.get_deployment(actor=ADMIN, db=db, name="chat").status == "Deleting"


def test_scaling_past_the_pool_is_refused_with_what_is_free(ui: AppTest, db: Database, stub_model: str) -> None:
    deploy(db, "chat", stub_model)
    at = page(ui, "deployments")

    at.number_input(key="replicas-chat").set_value(64).run()
    at.button(key="scale").click().run()

    assert "Could not scale chat" in texts(at.error)
    assert "free in pool" in texts(at.error)
    assert deployments.get_deployment(actor=ADMIN, db=db, name="chat").replicas == 1


# ------------------------------------------------------------------------------------------------ keys & usage


def test_a_new_key_is_shown_once_and_works(ui: AppTest, db: Database) -> None:
    at = page(ui, "keys")

    at.text_input(key="key-name").input("my-app")
    at.button[0].click().run()

    secret = at.code[0].value
    assert "shown only this once" in texts(at.success)
    assert keys.find_key(db=db, key_hash=keys.hash_key(secret)) is not None
    assert table(at)[0]["name"] == "my-app"
    assert table(at)[0]["state"] == "active"

    at.run()  # the next visit no longer shows it
    assert not at.code


def test_a_key_with_api_scopes_is_a_personal_access_token(ui: AppTest, db: Database) -> None:
    at = page(ui, "keys")

    at.text_input(key="key-name").input("laptop")
    at.multiselect(key="key-api-scopes").select("deployments:write").select("models:read")
    at.button[0].click().run()

    found = keys.find_key(db=db, key_hash=keys.hash_key(at.code[0].value))
    assert found is not None
    assert found.scopes == {"deployments:write", "models:read"}
    assert table(at)[0]["API scopes"] == "deployments:write models:read"


def test_revoke_a_key(ui: AppTest, db: Database) -> None:
    secret = keys.create_key(actor=ADMIN, db=db, data=keys.ApiKeyCreate(name="old")).key
    at = page(ui, "keys")

    at.selectbox(key="revoke-key").set_value("old")
    settle(at.button(key="revoke").click().run())

    assert keys.find_key(db=db, key_hash=keys.hash_key(secret)) is None
    assert table(at)[0]["state"].startswith("revoked")
    assert "Revoked old" in texts(at.success)


def test_tokens_per_key_per_day(ui: AppTest, db: Database) -> None:
    made = keys.create_key(actor=ADMIN, db=db, data=keys.ApiKeyCreate(name="app"))
    key_id = keys.find_key(db=db, key_hash=keys.hash_key(made.key))
    assert key_id is not None
    usage.record_usage(
        db=db,
        records=[
            {
                "api_key_id": key_id.id,
                "deployment": "chat",
                "endpoint": "chat.completions",
                "stream": False,
                "status_code": 200,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "latency_ms": 1.0,
            }
        ]
        * 3,
    )

    at = page(ui, "keys")

    rows = table(at, 1)
    assert (rows[0]["key"], rows[0]["requests"], rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (
        "app",
        3,
        30,
        15,
    )
    assert len(at.get("vega_lite_chart")) == 1


def test_a_member_starts_and_stops_only_their_own_notebook_server(settings: Settings, db: Database) -> None:
    """The studio reaches the hub with its own token, so it is the studio that refuses (before any call to the hub)."""
    ana = member(db, "ana")
    studio = facade.Studio(facade.Shared(settings, db, LogReader(settings=settings, db=db)), ana)
    with pytest.raises(Forbidden, match="only an admin may start another person's notebook server"):
        studio.start_notebook("bo", "lab-cpu-1")
    with pytest.raises(Forbidden, match="only an admin may stop another person's notebook server"):
        studio.stop_notebook("bo")


def test_the_deploy_form_plans_gpu_memory_and_blocks_what_cannot_hold_one_request(
    ui: AppTest, db: Database, tmp_path: Path
) -> None:
    folder = write_stub_model(tmp_path / "llama")
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B | {"architectures": ["LlamaForCausalLM"]}))
    models.add_model(actor=ADMIN, db=db, data=ModelCreate(name="llama", source=str(folder)), cache_dir=tmp_path / "c")
    with db.session() as session:
        session.add(Pool(name="t4", sharing=Sharing.HAMI.value, gpu_count=4, gpu_memory_mib=16384, slice_mib=1024,
                         cpu_cores=32, memory_mib=256_000))  # fmt: skip
        session.commit()
    at = page(ui, "deploy")
    at.selectbox(key="model").set_value("llama").run()
    at.selectbox(key="pool").set_value("t4").run()
    at.selectbox(key="image").set_value("vllm").run()  # (vLLM is not installed here: that blocks too, and says so)

    gpus = at.selectbox(key="gpus")  # Llama-3-8B's 15 GiB of weights do not leave room for 8k tokens on one T4
    assert gpus.options[:2] == ["1 — cannot hold one request of 8,192 tokens", "2"]
    assert "The model does not fit: the weights take 15,317 MiB per GPU" in texts(at.warning)
    assert at.button(key="deploy").disabled
    assert "It needs 2 GPUs of 16 GiB at 8k context." in texts(at.caption)

    gpus.set_value(2).run()
    assert "does not fit" not in texts(at.warning)
    assert "Runtime flags: --max-model-len 8192 --max-num-seqs 10 --gpu-memory-utilization 0.9" in texts(at.caption)
    labels = ["Weights per GPU", "KV cache per GPU", "KV tokens", "Requests of 8,192 tokens"]
    assert [m.label for m in at.metric] == labels

    at.number_input(key="conc").set_value(500).run()  # more than fits: said, not blocked (one request fits)
    assert "Target concurrency out of reach: 500 requests of 8192 tokens" in texts(at.caption)
    assert "does not fit" not in texts(at.warning)

    at.number_input(key="context-llama-1").set_value(4096).run()
    at.number_input(key="conc").set_value(0).run()
    at.selectbox(key="gpus").set_value(1).run()  # a shorter context does not help: the weights alone fill one T4
    assert at.selectbox(key="gpus").options[0] == "1 — cannot hold one request of 4,096 tokens"
    assert "It needs 2 GPUs of 16 GiB at 4k context." in texts(at.caption)


def test_the_deployments_page_shows_the_planned_kv_cache_beside_the_runtime_s(
    ui: AppTest, db: Database, stub_model: str
) -> None:
    deploy(db, "chat", stub_model)
    with db.session() as session:  # as admission and the controller leave a planned GPU deployment
        row = session.exec(select(Deployment).where(Deployment.name == "chat")).one()
        row.kv_planned = KvFigures(kv_cache_tokens=42_112, max_concurrency=5, context=8192)
        session.add(row)
        session.commit()
    at = page(ui, "deployments")
    assert "KV cache · planned: 42,112 KV tokens, 5 requests of 8,192 tokens · runtime: not reported yet" in texts(
        at.caption
    )

    plans.record_kv_observed(db=db, name="chat", figures=KvFigures(kv_cache_tokens=41_000, max_concurrency=5.0,
                                                                   context=8192))  # fmt: skip
    at.run()
    assert "runtime: 41,000 KV tokens, 5 requests of 8,192 tokens" in texts(at.caption)
