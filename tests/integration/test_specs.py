"""Declarative specs as users meet them: `cove apply -f`, `cove diff -f`, `cove get -o yaml`, `cove delete -f`, run
in process with click's runner against a real database (the CLI's in-process API), and `POST /api/v1/apply`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner, Result

from cove.client import Client
from studio.api.app import build_api
from studio.api.auth import trusting
from studio.cli import cli
from studio.db import Database, make_engine, migrate
from studio.errors import Forbidden, InvalidSpec
from studio.models import ApiKeyCreate
from studio.services import deployments, events, keys, models, pools
from studio.settings import Settings
from tests.integration.conftest import CoveServer, cove_env, register_demo, write_stub_model
from tests.integration.test_db import migrate_down
from tests.people import ADMIN, member

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"


def cove(settings: Settings, tmp_path: Path, *args: str) -> Result:
    """`cove ARGS` in process, on this machine's Cove (no login, no COVE_API_URL)."""
    env: dict[str, str | None] = {k: v for k, v in cove_env(settings).items() if k.startswith(("COVE_", "HF_"))}
    env |= {"COVE_CONFIG_DIR": str(tmp_path / "config"), "COVE_API_URL": None, "COVE_TOKEN": None}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def spec(tmp_path: Path, text: str, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def app_spec(tmp_path: Path, *, replicas: int = 1, cpu: float = 0.5) -> Path:
    """A model from a folder and a deployment of it."""
    folder = write_stub_model(tmp_path / "weights")
    return spec(
        tmp_path,
        f"""\
        apiVersion: cove/v1
        kind: Model
        metadata: {{name: tiny}}
        spec:
          source: {folder}
          description: a stub
        ---
        apiVersion: cove/v1
        kind: Deployment
        metadata: {{name: tiny-chat}}
        spec:
          model: tiny
          image: transformers
          replicas: {replicas}
          resources: {{cpu: {cpu}, memory_mib: 256}}
        """,
    )


def test_apply_creates_then_a_second_apply_changes_nothing(db: Database, settings: Settings, tmp_path: Path) -> None:
    path = app_spec(tmp_path)
    first = cove(settings, tmp_path, "apply", "-f", str(path))
    assert first.exit_code == 0, first.output
    assert "Model tiny: created" in first.output
    assert "Deployment tiny-chat: created" in first.output
    assert "  + spec.replicas: 1" in first.output
    assert first.output.strip().endswith("2 created")
    dep = deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat")
    assert (dep.model, dep.image, dep.replicas, dep.resources.cpu) == ("tiny", "transformers", 1, 0.5)

    second = cove(settings, tmp_path, "apply", "-f", str(path))
    assert second.exit_code == 0, second.output
    assert "Model tiny: unchanged" in second.output
    assert "Deployment tiny-chat: unchanged" in second.output
    assert second.output.strip().endswith("2 unchanged")
    assert deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat").generation == dep.generation


def test_diff_after_an_edit_shows_the_change_and_exits_1(db: Database, settings: Settings, tmp_path: Path) -> None:
    assert cove(settings, tmp_path, "apply", "-f", str(app_spec(tmp_path))).exit_code == 0
    assert cove(settings, tmp_path, "diff", "-f", str(app_spec(tmp_path))).exit_code == 0

    edited = app_spec(tmp_path, replicas=2)
    shown = cove(settings, tmp_path, "diff", "-f", str(edited))
    assert shown.exit_code == 1, shown.output
    assert "Deployment tiny-chat: would be updated" in shown.output
    assert "~ spec.replicas: 1 → 2" in shown.output
    assert deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat").replicas == 1  # a diff changes nothing

    applied = cove(settings, tmp_path, "apply", "-f", str(edited))
    assert "Deployment tiny-chat: updated" in applied.output
    assert "~ spec.replicas: 1 → 2" in applied.output
    assert deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat").replicas == 2
    assert cove(settings, tmp_path, "diff", "-f", str(edited)).output.strip() == "no changes"


def test_a_broken_spec_names_every_invalid_field_and_applies_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = spec(
        tmp_path,
        """\
        apiVersion: cove/v1
        kind: Model
        metadata: {name: fine}
        spec: {source: hf:org/fine}
        ---
        apiVersion: cove/v1
        kind: Deployment
        metadata: {name: Bad_Name}
        spec:
          model: fine
          replicas: -1
          resources: {cpu: 0}
          colour: blue
        ---
        apiVersion: cove/v1
        kind: Model
        metadata: {name: other}
        spec:
          deployments: [{runtime: tpu, versionRequired: "at least 1"}]
        """,
    )
    result = cove(settings, tmp_path, "apply", "-f", str(path))
    assert result.exit_code == 1
    where = f"{path}: document 2 (Deployment Bad_Name): "
    for line in (
        where + "metadata.name: 'Bad_Name' is not a valid name",
        where + "spec.replicas: Input should be greater than or equal to 0",
        where + "spec.resources.cpu: Input should be greater than 0",
        where + "spec.colour: Extra inputs are not permitted",
        f"{path}: document 3 (Model other): spec.deployments.0.runtime: Input should be",
        f"{path}: document 3 (Model other): spec.deployments.0.versionRequired: 'at least 1' is not a version",
    ):
        assert line in result.output
    assert "nothing was applied" in result.output
    assert models.list_models(db=db) == []


def test_an_immutable_change_is_refused_with_how_to_make_it(db: Database, settings: Settings, tmp_path: Path) -> None:
    assert cove(settings, tmp_path, "apply", "-f", str(app_spec(tmp_path))).exit_code == 0
    refused = cove(settings, tmp_path, "apply", "-f", str(app_spec(tmp_path, replicas=3, cpu=1)))
    assert refused.exit_code == 1
    assert "Deployment tiny-chat: fixed once created, so not changed: spec.resources.cpu 0.5 → 1.0" in refused.output
    assert "`cove delete -f FILE`, then `cove apply -f FILE`" in refused.output
    assert "new name" in refused.output
    dep = deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat")
    assert (dep.replicas, dep.resources.cpu) == (1, 0.5)  # the allowed change in the same apply was not made
    cannot = cove(settings, tmp_path, "diff", "-f", str(app_spec(tmp_path, replicas=3, cpu=1)))
    assert cannot.exit_code == 2  # not "something would change": it cannot be applied at all
    assert "spec.resources.cpu 0.5 → 1.0" in cannot.output


def test_a_version_constraint_no_image_meets_is_refused_naming_the_versions(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    folder = write_stub_model(tmp_path / "weights")
    path = spec(
        tmp_path,
        f"""\
        apiVersion: cove/v1
        kind: Model
        metadata: {{name: needy}}
        spec:
          source: {folder}
          deployments:
            - runtime: transformers
              versionRequired: ">=99.0"
        ---
        apiVersion: cove/v1
        kind: Deployment
        metadata: {{name: needy-chat}}
        spec: {{model: needy, recommended: transformers}}
        """,
    )
    result = cove(settings, tmp_path, "apply", "-f", str(path))
    assert result.exit_code == 1
    assert "Deployment needy-chat: spec.recommended:" in result.output
    assert "versionRequired '>=99.0'" in result.output
    assert "transformers:0.1.0" in result.output  # the versions there are
    assert models.list_models(db=db) == []  # nothing applied, the model neither
    pinned = path.read_text().replace(
        "recommended: transformers", "recommended: transformers, image: transformers:0.1.0"
    )
    result = cove(settings, tmp_path, "apply", "-f", str(spec(tmp_path, pinned, "pinned.yaml")))
    assert "spec.image: transformers:0.1.0 does not meet the recommendation for transformers" in result.output


def test_get_as_yaml_applies_as_a_no_op(db: Database, settings: Settings, tmp_path: Path) -> None:
    assert cove(settings, tmp_path, "apply", "-f", str(app_spec(tmp_path))).exit_code == 0
    for kind, name in (("deployment", "tiny-chat"), ("model", "tiny"), ("image", "transformers")):
        got = cove(settings, tmp_path, "get", kind, name, "-o", "yaml")
        assert got.exit_code == 0, got.output
        doc = yaml.safe_load(got.output)
        assert (doc["apiVersion"], doc["metadata"]["name"]) == ("cove/v1", name)
        again = cove(settings, tmp_path, "apply", "-f", str(spec(tmp_path, got.output, f"{kind}.yaml")))
        assert again.output.strip().endswith("1 unchanged"), again.output
    listed = json.loads(cove(settings, tmp_path, "get", "deployments", "-o", "json").output)
    assert [d["metadata"]["name"] for d in listed] == ["tiny-chat"]
    assert listed[0]["spec"]["model"] == "tiny:1"
    missing = cove(settings, tmp_path, "get", "deployment", "nope")
    assert missing.exit_code == 1
    assert "no deployment named 'nope'" in missing.output


def test_the_examples_bring_up_a_chat_deployment_of_the_demo_model(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    register_demo(db, settings, write_stub_model(tmp_path / "demo"))  # as `cove up` registers it
    result = cove(settings, tmp_path, "apply", "-f", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert "Model demo-chat: updated" in result.output  # its recommendation and description are added
    assert "Deployment chat: created" in result.output
    chat = deployments.get_deployment(db=db, actor=ADMIN, name="chat")
    assert (chat.model, chat.image, chat.runtime.value) == ("demo-chat", "transformers", "transformers")
    assert (chat.resources.cpu, chat.resources.memory_mib) == (0.5, 1024)  # from the recommendation
    [rec] = models.get_model(db=db, name="demo-chat").recommendations
    assert (rec.runtime.value, rec.version_required) == ("transformers", ">=0.1.0")
    assert cove(settings, tmp_path, "apply", "-f", str(EXAMPLES)).output.strip().endswith("2 unchanged")


def test_delete_removes_what_the_documents_name(db: Database, settings: Settings, tmp_path: Path) -> None:
    path = app_spec(tmp_path)
    key = spec(
        tmp_path, "apiVersion: cove/v1\nkind: Key\nmetadata: {name: ci}\nspec: {scopes: [models:read]}\n", "k.yml"
    )
    made = cove(settings, tmp_path, "apply", "-f", str(path), "-f", str(key))
    assert "Key ci: created" in made.output
    assert "key (shown this once): cove-" in made.output
    gone = cove(settings, tmp_path, "delete", "-f", str(path), "-f", str(key))
    assert "Deployment tiny-chat: deleted" in gone.output
    assert "Key ci: deleted" in gone.output
    assert "Model tiny: refused" in gone.output  # its deployment is still stopping
    assert gone.exit_code == 1
    assert deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat").status == "Deleting"
    assert [k.revoked_at is not None for k in keys.list_keys(db=db, actor=ADMIN) if k.name == "ci"] == [True]


def test_the_api_reports_invalid_documents_by_path_and_dry_runs(db: Database, settings: Settings) -> None:
    client = Client.in_process(build_api(settings=settings, db=db, identify=trusting(ADMIN)))
    broken = {"apiVersion": "cove/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": 1}}
    with pytest.raises(InvalidSpec) as caught:
        client.specs.apply([broken])
    assert caught.value.fields == [
        {"document": "request: document 1 (Deployment x)", "path": "spec.model", "message": "Field required"}
    ]
    image = {
        "apiVersion": "cove/v1",
        "kind": "Image",
        "metadata": {"name": "srv"},
        "spec": {"version": "1", "ref": "example.com/srv"},
    }
    [planned] = client.specs.apply([image], dry_run=True)
    assert (planned.action, planned.name) == ("created", "srv:1")
    assert {c.path: c.after for c in planned.changes}["spec.ref"] == "example.com/srv"
    [made] = client.specs.apply([image])
    assert made.action == "created"
    assert client.specs.get("image", "srv:1")["spec"]["ref"] == "example.com/srv"
    assert client.specs.schema()["title"].startswith("Cove spec document")
    client.close()


def test_models_gain_recommendations_on_upgrade_and_lose_them_on_downgrade(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate(engine, "0007")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (name, role, groups, disabled, created_at)"
                " VALUES ('ann', 'admin', '[]', false, '2026-01-01')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO models (name, description, owner, created_at) VALUES ('old', 'kept', 'ann', '2026-01-01')"
            )
        )
    migrate(engine, "0008")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT recommendations FROM models WHERE name = 'old'")).scalar_one() in ([], "[]")
    migrate_down(engine, "0007")
    with engine.connect() as conn:
        assert "recommendations" not in {c["name"] for c in sa.inspect(conn).get_columns("models")}
        assert conn.execute(sa.text("SELECT description FROM models WHERE name = 'old'")).scalar_one() == "kept"
    engine.dispose()


@pytest.mark.runtime
def test_apply_over_http_acts_as_the_tokens_owner_within_its_scopes(
    db: Database, settings: Settings, tmp_path: Path, stub_model: str
) -> None:
    bo = member(db, "bo", "ml")
    scopes = ["deployments:write", "models:read"]
    token = keys.create_key(db=db, actor=bo, data=ApiKeyCreate(name="bo-ci", scopes=scopes)).key
    server = CoveServer(settings, tmp_path / "server.log").start()
    try:
        env: dict[str, str | None] = {k: v for k, v in cove_env(settings).items() if k.startswith(("COVE_", "HF_"))}
        env |= {"COVE_CONFIG_DIR": str(tmp_path / "config"), "COVE_API_URL": settings.gateway_url, "COVE_TOKEN": token}

        def remote(*args: str) -> Result:
            return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

        chat = spec(
            tmp_path,
            f"""\
            apiVersion: cove/v1
            kind: Deployment
            metadata: {{name: bo-chat, group: ml}}
            spec: {{model: {stub_model}, replicas: 0, resources: {{cpu: 0.5, memory_mib: 256}}}}
            """,
        )
        made = remote("apply", "-f", str(chat))
        assert made.exit_code == 0, made.output + server.log()
        assert "Deployment bo-chat: created" in made.output
        dep = deployments.get_deployment(db=db, actor=ADMIN, name="bo-chat")
        assert (dep.owner, dep.group) == ("bo", "ml")

        got = remote("get", "deployment", "bo-chat", "-o", "yaml")
        again = remote("apply", "-f", str(spec(tmp_path, got.output, "got.yaml")))
        assert again.output.strip().endswith("1 unchanged"), again.output

        model = spec(
            tmp_path, "apiVersion: cove/v1\nkind: Model\nmetadata: {name: m}\nspec: {source: hf:a/b}\n", "m.yaml"
        )
        refused = remote("apply", "-f", str(model))
        assert refused.exit_code == 1
        assert "models:write" in refused.output  # the scope the token lacks
    finally:
        server.stop()


def pool_spec(tmp_path: Path, *, groups: str = "[research]", quota: int = 2, extra: str = "") -> Path:
    return spec(
        tmp_path,
        f"""\
        apiVersion: cove/v1
        kind: Pool
        metadata: {{name: serving}}
        spec:
          purpose: serve
          cpuCores: 4
          memoryMib: 8192
          quotaCpu: {quota}
          groups: {groups}
          nodeSelector: {{cove.dev/pool: serving}}
        {extra}""",
        "pool.yaml",
    )


def test_an_admin_applies_a_pool_then_updates_its_groups_and_quota(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    first = cove(settings, tmp_path, "apply", "-f", str(pool_spec(tmp_path)))
    assert first.exit_code == 0, first.output
    assert "Pool serving: created" in first.output
    assert "  + spec.quotaCpu: 2.0" in first.output
    [made] = [u.pool for u in pools.list_pools(db=db) if u.pool.name == "serving"]
    assert (made.purpose, made.cpu_cores, made.quota_cpu, made.groups) == ("serve", 4, 2, ["research"])
    assert made.node_selector == {"cove.dev/pool": "serving"}
    assert not made.detected
    again = cove(settings, tmp_path, "apply", "-f", str(pool_spec(tmp_path)))
    assert again.output.strip().endswith("1 unchanged"), again.output

    updated = cove(settings, tmp_path, "apply", "-f", str(pool_spec(tmp_path, groups="[research, ops]", quota=3)))
    assert updated.exit_code == 0, updated.output
    assert "Pool serving: updated" in updated.output
    assert '~ spec.groups: ["research"] → ["research", "ops"]' in updated.output
    assert "~ spec.quotaCpu: 2.0 → 3.0" in updated.output
    now = pools.get_pool(db=db, name="serving")
    assert (now.groups, now.quota_cpu, now.cpu_cores) == (["research", "ops"], 3, 4)  # unstated fields kept
    trail = [(e.name, e.message) for e in events.audit_trail(db=db, actor=ADMIN) if e.kind == "pool"]
    assert trail == [("serving", "updated: groups, quota_cpu"), ("serving", "created")]

    kept = cove(settings, tmp_path, "delete", "-f", str(pool_spec(tmp_path)))
    assert "Pool serving: kept (pools are kept" in kept.output
    assert kept.exit_code == 0
    assert pools.get_pool(db=db, name="serving").name == "serving"


def test_a_member_may_not_apply_a_pool(db: Database, settings: Settings, tmp_path: Path) -> None:
    someone = member(db, "mia", "research")
    client = Client.in_process(build_api(settings=settings, db=db, identify=trusting(someone)))
    doc = yaml.safe_load(pool_spec(tmp_path).read_text())
    with pytest.raises(Forbidden, match="only an admin may configure pools"):
        client.specs.apply([doc])
    with pytest.raises(Forbidden):
        client.specs.apply([doc], dry_run=True)
    client.close()
    assert "serving" not in [u.pool.name for u in pools.list_pools(db=db)]


def test_a_pools_cluster_is_fixed_and_a_detected_pool_keeps_its_capacity(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    assert cove(settings, tmp_path, "apply", "-f", str(pool_spec(tmp_path))).exit_code == 0
    moved = cove(settings, tmp_path, "apply", "-f", str(pool_spec(tmp_path, quota=3, extra="  cluster: east\n")))
    assert moved.exit_code == 1
    assert "Pool serving: fixed once created, so not changed: spec.cluster 'default' → 'east'" in moved.output
    assert "apply a pool of another name on that cluster" in moved.output
    assert pools.get_pool(db=db, name="serving").quota_cpu == 2  # nothing of that apply was done

    local = pools.get_pool(db=db, name="local")  # the machine's pool: its backend detects its capacity
    assert local.detected
    assert local.cpu_cores > 0
    doc = yaml.safe_load(cove(settings, tmp_path, "get", "pool", "local").output)
    doc["spec"] |= {"cpuCores": local.cpu_cores + 8, "groups": ["ops"]}
    bigger = spec(tmp_path, yaml.safe_dump(doc), "local.yaml")
    refused = cove(settings, tmp_path, "apply", "-f", str(bigger))
    assert refused.exit_code == 1
    said = f"Pool local: its backend detects its capacity, so not changed: spec.cpuCores {local.cpu_cores} → "
    assert said in refused.output
    assert "Leave these fields out" in refused.output
    assert pools.get_pool(db=db, name="local").groups == []
    doc["spec"]["cpuCores"] = local.cpu_cores
    fine = cove(settings, tmp_path, "apply", "-f", str(spec(tmp_path, yaml.safe_dump(doc), "local.yaml")))
    assert "Pool local: updated" in fine.output, fine.output
    now = pools.get_pool(db=db, name="local")
    assert (now.groups, now.cpu_cores, now.detected) == (["ops"], local.cpu_cores, True)


def test_a_pool_from_get_applies_as_a_no_op_and_a_deployment_lands_in_a_new_pool(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    folder = write_stub_model(tmp_path / "weights")
    both = spec(
        tmp_path,
        f"""\
        apiVersion: cove/v1
        kind: Deployment
        metadata: {{name: tiny-chat}}
        spec: {{model: tiny, image: transformers, pool: serving, resources: {{cpu: 0.5, memory_mib: 256}}}}
        ---
        apiVersion: cove/v1
        kind: Model
        metadata: {{name: tiny}}
        spec: {{source: {folder}}}
        ---
        apiVersion: cove/v1
        kind: Pool
        metadata: {{name: serving}}
        spec: {{cpuCores: 2, memoryMib: 2048}}
        """,
    )
    made = cove(settings, tmp_path, "apply", "-f", str(both))
    assert made.exit_code == 0, made.output
    assert made.output.index("Pool serving: created") < made.output.index("Deployment tiny-chat: created")
    assert deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat").pool == "serving"

    got = cove(settings, tmp_path, "get", "pool", "serving", "-o", "yaml")
    assert got.exit_code == 0, got.output
    doc = yaml.safe_load(got.output)
    assert (doc["kind"], doc["spec"]["cpuCores"], doc["spec"]["cluster"]) == ("Pool", 2, "default")
    again = cove(settings, tmp_path, "apply", "-f", str(spec(tmp_path, got.output, "pool.yaml")))
    assert again.output.strip().endswith("1 unchanged"), again.output
    listed = yaml.safe_load_all(cove(settings, tmp_path, "get", "pools").output)
    assert "serving" in [d["metadata"]["name"] for d in listed]


def test_a_deployments_caps_are_applied_exported_and_diffed(db: Database, settings: Settings, tmp_path: Path) -> None:
    def capped(caps: str) -> Path:
        text = app_spec(tmp_path).read_text() + "".join(f"  {line}\n" for line in caps.splitlines())
        return spec(tmp_path, text, "capped.yaml")

    created = cove(settings, tmp_path, "apply", "-f", str(capped("max_tokens_cap: 1000\nn_cap: 2")))
    assert created.exit_code == 0, created.output
    assert "  + spec.max_tokens_cap: 1000" in created.output
    dep = deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat")
    assert (dep.max_tokens_cap, dep.n_cap) == (1000, 2)  # what the gateway caps requests with

    got = yaml.safe_load(cove(settings, tmp_path, "get", "deployment", "tiny-chat", "-o", "yaml").output)
    assert (got["spec"]["max_tokens_cap"], got["spec"]["n_cap"]) == (1000, 2)
    assert "no changes" in cove(settings, tmp_path, "diff", "-f", str(capped("max_tokens_cap: 1000"))).output

    raised = capped("max_tokens_cap: 4000")  # n_cap left out: it keeps its value
    shown = cove(settings, tmp_path, "diff", "-f", str(raised))
    assert shown.exit_code == 1, shown.output
    assert "~ spec.max_tokens_cap: 1000 → 4000" in shown.output
    assert "Deployment tiny-chat: updated" in cove(settings, tmp_path, "apply", "-f", str(raised)).output
    dep = deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat")
    assert (dep.max_tokens_cap, dep.n_cap, dep.replicas) == (4000, 2, 1)

    too_many = cove(settings, tmp_path, "apply", "-f", str(capped("n_cap: 500")))
    assert too_many.exit_code != 0
    assert "spec.n_cap" in too_many.output
    assert deployments.get_deployment(db=db, actor=ADMIN, name="tiny-chat").n_cap == 2
