"""The Cove API over real HTTP: a `cove server` process per database (SQLite, PostgreSQL), called with raw httpx
(status codes, the error shape, ETag / If-Match, Location) and with ``cove.Client`` (typed answers, the server's
own error classes). Each test uses names of its own, so they share one server per database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, update

import cove
from studio.api.app import PREFIX, build_api
from studio.bootstrap import open_studio
from studio.db import Database, utcnow
from studio.models import ApiKey, ApiKeyCreate, ModelCreate
from studio.services import keys, models, notebooks, usage
from studio.settings import Settings
from studio.values import Principal, Resources
from tests.conftest import copy_sqlite_template, make_settings, new_postgres_database
from tests.integration.conftest import CoveServer, add_fake_image, wait_until, write_stub_model
from tests.people import ADMIN, member

LIMIT = 16_384  # the server's body limit here (COVE_MAX_BODY_BYTES)
SMALL = {"cpu": 0.1, "memory_mib": 64}
KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: far
contexts: [{name: far, context: {cluster: far, user: far}}]
clusters: [{name: far, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: far, user: {token: not-a-real-token}}]
"""


@dataclass
class Cove:
    """A running `cove server`, its database (to arrange what the API does not make), and tokens of its people."""

    url: str
    db: Database
    settings: Settings
    image: str  # a fake runtime image, so deployments need no model server
    tokens: dict[str, str] = field(default_factory=dict)

    def http(self, who: str | None = "admin", **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url + PREFIX, headers={**auth, **headers}, timeout=30)

    def client(self, who: str = "admin") -> cove.Client:
        return cove.Client(self.url, token=self.tokens[who])

    def token(self, actor: Principal, name: str, scopes: list[str] | None) -> str:
        created = keys.create_key(db=self.db, actor=actor, data=ApiKeyCreate(name=name, scopes=scopes))
        self.tokens[name] = created.key
        return created.key


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", marks=pytest.mark.runtime),
        pytest.param("postgres", marks=[pytest.mark.runtime, pytest.mark.postgres]),
    ],
)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cove]:
    home = tmp_path_factory.mktemp("api") / "cove"
    if request.param == "sqlite":
        url = copy_sqlite_template(request.getfixturevalue("sqlite_template"), home / "cove.db")
    else:
        url = new_postgres_database(
            request.getfixturevalue("postgres"), template=request.getfixturevalue("postgres_template")
        )
    settings = make_settings(home, database_url=url, max_body_bytes=LIMIT)
    db = open_studio(settings)
    models.add_model(
        db=db,
        actor=ADMIN,
        data=ModelCreate(name="stub", source=str(write_stub_model(home.parent / "stub"))),
        cache_dir=settings.models_dir,
    )
    here = Cove(url=settings.gateway_url, db=db, settings=settings, image=add_fake_image(db, "never_ready_runtime.py"))
    mia, bob = member(db, "mia", "team"), member(db, "bob", "other")
    here.tokens["admin"] = here.token(ADMIN, "admin-all", ["*"])
    here.tokens["mia"] = here.token(mia, "mia-all", ["*"])
    here.tokens["bob"] = here.token(bob, "bob-all", ["*"])
    here.token(mia, "mia-read-models", ["models:read"])
    here.token(mia, "mia-gateway", None)
    here.token(mia, "mia-expired", ["*"])
    with db.session() as session:
        session.exec(
            update(ApiKey).where(col(ApiKey.name) == "mia-expired").values(expires_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVE_MAX_BODY_BYTES", str(LIMIT))
        server = CoveServer(settings, home.parent / "server.log").start()
    try:
        yield here
    finally:
        server.stop()
        db.dispose()


def error_of(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The error a response carries, once its status and shape are Cove's."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == kind, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["next"], str)
    return error


def deployment(name: str, api: Cove, **fields: Any) -> dict[str, Any]:
    return {"name": name, "model": "stub", "image": api.image, "resources": SMALL, **fields}


# ------------------------------------------------------------------------------------------------ deployments


def test_a_deployment_is_made_read_scaled_autoscaled_and_deleted(api: Cove) -> None:
    with api.http() as http:
        made = http.post("/deployments", json=deployment("life", api))
        assert made.status_code == 201, made.text
        assert made.headers["Location"] == f"{PREFIX}/deployments/life"
        assert made.headers["ETag"] == '"1"'
        assert made.json()["owner"] == "admin"
        assert made.json()["model"] == "stub"

        read = http.get("/deployments/life")
        assert read.status_code == 200
        assert read.headers["ETag"] == '"1"'

        scaled = http.patch("/deployments/life", json={"replicas": 2}, headers={"If-Match": '"1"'})
        assert scaled.status_code == 200, scaled.text
        assert scaled.json()["replicas"] == 2
        assert scaled.headers["ETag"] == '"2"'

        stale = error_of(
            http.patch("/deployments/life", json={"replicas": 3}, headers={"If-Match": '"1"'}), 409, "Stale"
        )
        assert stale["generation"] == 2
        assert http.get("/deployments/life").json()["replicas"] == 2

    with api.client() as client:
        with pytest.raises(cove.Stale) as raised:
            client.deployments.scale("life", 1, if_match=1)
        assert raised.value.generation == 2
        auto = client.deployments.autoscale("life", {"min_replicas": 1, "max_replicas": 3}, if_match=2)
        assert auto.autoscale is not None
        assert auto.autoscale.max_replicas == 3
        assert auto.generation == 3
        assert [d.name for d in client.deployments.list(model="stub") if d.name == "life"] == ["life"]
        assert not [d for d in client.deployments.list(model="no-such-model")]
        assert client.deployments.delete("life").name == "life"
    with api.http() as http:
        listed = http.get("/deployments", params={"status": "Deleting"}).json()
        gone = http.get("/deployments/life")
        assert gone.status_code == 404 or "life" in [d["name"] for d in listed["items"]]


def test_a_member_sees_and_changes_only_what_is_theirs(api: Cove) -> None:
    with api.client("mia") as mia:
        mine = mia.deployments.create("mias", "stub", image=api.image, resources=SMALL)
        assert mine.owner == "mia"
        assert [u.name for u in mia.users.list()] == ["mia"]
    with api.http("bob") as bob:
        assert "mias" not in [d["name"] for d in bob.get("/deployments").json()["items"]]
        assert bob.get("/deployments/mias").status_code in (403, 404)
        refused = bob.patch("/deployments/mias", json={"replicas": 0})
        assert refused.status_code in (403, 404)
        error_of(bob.get("/users/mia"), 403, "Forbidden")
        assert bob.get("/events", params={"kind": "deployment", "name": "mias"}).status_code in (403, 404)
        error_of(bob.post("/users", json={"name": "eve"}), 403, "Forbidden")
    with api.http() as admin:
        assert "mias" in [d["name"] for d in admin.get("/deployments", params={"owner": "mia"}).json()["items"]]
        assert admin.delete("/deployments/mias").status_code == 202


# ------------------------------------------------------------------------------------------------ errors, auth


def test_bad_input_is_refused_naming_each_field(api: Cove) -> None:
    with api.http() as http:
        body = deployment("bad", api, replicas="many", colour="blue", resources={"cpu": "lots"})
        error = error_of(http.post("/deployments", json=body), 422, "InvalidSpec")
        paths = {f["path"] for f in error["fields"]}
        assert {"replicas", "colour", "resources.cpu"} <= paths, paths
        limit = error_of(http.get("/deployments", params={"limit": "x"}), 422, "InvalidSpec")
        assert [f["path"] for f in limit["fields"]] == ["query.limit"]
        error_of(http.patch("/users/mia", json={"role": "overlord"}), 422, "InvalidSpec")
        error_of(http.get("/no/such/path"), 404, "NotFound")
    with api.client() as client, pytest.raises(cove.InvalidSpec) as raised:
        client.images.add("odd", "1", colour="blue")
    assert [f["path"] for f in raised.value.fields] == ["colour"]


def test_tokens_are_checked(api: Cove) -> None:
    with api.http(None) as anonymous:
        error_of(anonymous.get("/models"), 401, "Unauthorized")
    with api.http(None, Authorization="Bearer cove-sk-not-a-key") as unknown:
        error_of(unknown.get("/models"), 401, "Unauthorized")
    with api.http("mia-expired") as expired:
        assert "expired" in error_of(expired.get("/models"), 401, "Unauthorized")["message"]
    with api.http("mia-gateway") as gateway_only:
        assert "gateway only" in error_of(gateway_only.get("/models"), 403, "Forbidden")["message"]
    with api.http("mia-read-models") as narrow:
        assert narrow.get("/models").status_code == 200
        for method, path in (("POST", "/images"), ("GET", "/pools"), ("GET", "/usage"), ("GET", "/events")):
            refused = error_of(narrow.request(method, path, json={}), 403, "Forbidden")
            noun = path.strip("/")
            assert f"'{noun}:{'write' if method == 'POST' else 'read'}'" in refused["message"], refused
    with api.client("mia-read-models") as client, pytest.raises(cove.Forbidden, match="users:read"):
        list(client.users.list())


def test_a_page_past_the_end_is_empty_and_a_large_body_is_refused(api: Cove) -> None:
    with api.http() as http:
        page = http.get("/images", params={"offset": 10_000})
        assert page.status_code == 200
        assert page.json()["items"] == []
        assert page.json()["total"] >= 4
        assert page.json()["next_offset"] is None
        first = http.get("/images", params={"limit": 1}).json()
        assert len(first["items"]) == 1
        assert first["next_offset"] == 1
        huge = {"name": "huge", "version": "1", "description": "x" * (LIMIT + 1)}
        error_of(http.post("/images", json=huge), 413, "TooLarge")
        assert http.get("/images/huge").status_code == 404


# ------------------------------------------------------------------------------------------------ the catalog


def test_models_keys_and_whoami(api: Cove, tmp_path: Path) -> None:
    with api.client() as admin:
        added = admin.models.add("shared-model", str(write_stub_model(tmp_path / "m")), description="tiny")
        assert added.owner == "admin"
        assert added.versions[0].version == 1
    with api.http() as http:  # with ?progress=true the answer is NDJSON: progress lines, then the model or the error
        streamed = http.post("/models", params={"progress": "true"}, json={"name": "x", "source": "hf:org/absent"})
        assert streamed.headers["content-type"] == "application/x-ndjson"
        [*_, last] = [json.loads(line) for line in streamed.text.splitlines()]
        assert last["error"]["type"] == "SourceUnavailable"
        assert "org/absent" in last["error"]["message"]
    with api.client("mia") as client:
        with pytest.raises(cove.Forbidden, match="folder on the server"):
            client.models.add("mias-model", str(tmp_path / "m"))
        assert [m.name for m in client.models.list(q="TINY")] == ["shared-model"]
        token = client.keys.create("mia-ci", scopes=["models:read"])
        assert client.whoami()["name"] == "mia"
        assert "mia-ci" in [k.name for k in client.keys.list()]
    with cove.Client(api.url, token=token.key) as ci:
        assert ci.whoami()["scopes"] == ["models:read"]
        assert ci.models.get("shared-model").description == "tiny"
        with pytest.raises(cove.Forbidden, match="models:write"):
            ci.models.delete("shared-model")
    with api.client("mia") as client:
        client.keys.revoke("mia-ci")
    with api.http(None, Authorization=f"Bearer {token.key}") as revoked:
        error_of(revoked.get("/models"), 401, "Unauthorized")
    with api.http() as http:
        assert http.delete("/models/shared-model").status_code == 204
        error_of(http.get("/models/shared-model"), 404, "NotFound")


def test_limits_are_set_by_whom_they_concern_over_http(api: Cove) -> None:
    with api.client("mia") as mia:
        limited = mia.limits.set("key", "mia-gateway", rpm=30, tpm=5000)
        assert (limited.rpm, limited.tpm, limited.concurrency, limited.set_by) == (30, 5000, None, "mia")
        assert mia.limits.set("key", "mia-gateway", tpm=None).tpm is None  # null removes, absent keeps
        with pytest.raises(cove.Forbidden, match="only an admin may limit a group"):
            mia.limits.set("group", "team", rpm=1)
    with api.client("bob") as bob, pytest.raises(cove.Forbidden, match="'mia-gateway' is not yours"):
        bob.limits.set("key", "mia-gateway", rpm=1)
    with api.http() as http:
        error_of(http.put("/limits/planet/earth", json={"rpm": 1}), 422, "InvalidSpec")
        error_of(http.put("/limits/user/mia", json={"rpm": 0}), 422, "InvalidSpec")
        assert http.put("/limits/group/team", json={"concurrency": 8}).status_code == 200
        assert [(x["scope"], x["subject"]) for x in http.get("/limits").json()["items"]] == [
            ("group", "team"),
            ("key", "mia-gateway"),
        ]
    with api.client("bob") as bob:
        assert list(bob.limits.list()) == []  # neither his key nor his group
    with api.client() as admin:
        assert admin.limits.delete("group", "team").concurrency == 8
        assert admin.limits.delete("key", "mia-gateway").rpm == 30


def test_images_are_listed_read_added_and_rebuilt(api: Cove) -> None:
    with api.http() as http:
        made = http.post("/images", json={"name": "tool", "version": "2", "ref": "example.com/tool"})
        assert made.status_code == 201, made.text
        assert made.headers["Location"] == f"{PREFIX}/images/tool?version=2"
        error_of(
            http.post("/images", json={"name": "tool", "version": "2", "ref": "example.com/tool"}), 409, "Conflict"
        )
        error_of(http.post("/images/tool/versions/2/rebuild"), 422, "InvalidSpec")  # no Dockerfile
    with api.client("mia") as client:
        client.images.add("tool", "3", ref="example.com/tool", dockerfile="FROM busybox\n")
        assert client.images.get("tool").version == "3"  # the newest
        assert client.images.get("tool", "2").build_status == ""
        assert client.images.get("tool", "3").reference == "example.com/tool:3"
        # The server's controller tries the build at once; with no builder here it fails, and may then be rebuilt.
        wait_until(lambda: client.images.get("tool", "3").build_status == "Failed", what="the build to fail")
        again = client.images.rebuild("tool", "3")
        assert again.build_status == "Pending"
        assert {i.version for i in client.images.list(name="tool")} == {"2", "3"}
        assert {i.name for i in client.images.list(builtin=True)} >= {"vllm", "transformers"}
        with pytest.raises(cove.NotFound, match="no version '9'"):
            client.images.get("tool", "9")
        with pytest.raises(cove.Forbidden, match="admin"):
            client.images.add("mine", "1", ref="example.com/mine", local_command=["serve", "--port", "{port}"])
        events = list(client.events.of("image", "tool:3"))
        assert [e.reason for e in events][-2:] == ["Queued", "Registered"]  # newest first
        assert "Failed" in [e.reason for e in events]


def test_pools_show_who_holds_them_and_what_is_free(api: Cove) -> None:
    with api.client() as client:
        client.deployments.create("holder", "stub", image=api.image, resources=SMALL, replicas=2)
        try:
            local = client.pools.get("local")
            assert [(h.owner, h.replicas) for h in local.held if h.owner == "holder"] == [("holder", 2)]
            assert "CPU cores" in local.free.summary
            assert "local" in [u.pool.name for u in client.pools.list(cluster="default")]
            assert list(client.pools.list(cluster="elsewhere")) == []
        finally:
            client.deployments.delete("holder")
        with pytest.raises(cove.NotFound):
            client.pools.get("nowhere")


def test_clusters_are_registered_and_removed_by_admins(api: Cove) -> None:
    with api.client("mia") as mia, pytest.raises(cove.Forbidden, match="admin"):
        mia.clusters.add("far", KUBECONFIG)
    with api.http() as http:
        made = http.post("/clusters", json={"name": "far", "kubeconfig": KUBECONFIG})
        assert made.status_code == 201, made.text
        assert made.json()["server"] == "https://127.0.0.1:1"
        assert "kubeconfig" not in made.json()
        assert made.headers["Location"] == f"{PREFIX}/clusters/far"
        unsafe = KUBECONFIG.replace("token: not-a-real-token", "tokenFile: /etc/passwd")
        error_of(http.post("/clusters", json={"name": "near", "kubeconfig": unsafe}), 422, "InvalidSpec")
    with api.client() as client:
        assert [c.name for c in client.clusters.list()] == ["far"]
        client.clusters.remove("far")
        assert list(client.clusters.list()) == []
        with pytest.raises(cove.NotFound):
            client.clusters.remove("far")


# ------------------------------------------------------------------------------------------------ people


def test_users_and_groups(api: Cove) -> None:
    with api.http() as http:
        made = http.post("/users", json={"name": "una", "groups": ["lab"], "password": "long-enough"})
        assert made.status_code == 201, made.text
        assert made.headers["Location"] == f"{PREFIX}/users/una"
        assert made.json()["has_password"] is True
        tag = http.get("/users/una").headers["ETag"]
        assert tag == made.headers["ETag"]
        changed = http.patch("/users/una", json={"groups": ["lab", "team"]}, headers={"If-Match": tag})
        assert changed.status_code == 200
        assert changed.json()["groups"] == ["lab", "team"]
        assert changed.headers["ETag"] != tag
        stale = error_of(http.patch("/users/una", json={"disabled": True}, headers={"If-Match": tag}), 409, "Conflict")
        assert changed.headers["ETag"] in stale["message"]
        assert http.get("/users/una").json()["disabled"] is False
        error_of(http.put("/users/una/password", json={"password": "short"}), 422, "InvalidSpec")
        assert http.put("/users/una/password", json={"password": "longer-still"}).status_code == 204
    with api.client() as client:
        groups = {g.name: g.members for g in client.groups.list()}
        assert groups["team"] == ["mia", "una"]
        assert groups["lab"] == ["una"]
        assert [u.name for u in client.users.list(group="lab")] == ["una"]
        client.users.update("una", if_match=client.users.etag("una"), role="admin")
        assert client.users.get("una").role == "admin"
        client.users.remove("una")
        with pytest.raises(cove.NotFound):
            client.users.get("una")
        trail = list(client.events.audit(actor="admin"))
        assert {"Created", "Changed", "PasswordSet", "Removed"} <= {e.reason for e in trail if e.name == "una"}
    with api.client("mia") as mia:
        assert {g.name: g.members for g in mia.groups.list()} == {"team": ["mia"]}
        mia.users.set_password("mia", "mias-own-password")
        with pytest.raises(cove.Forbidden):
            mia.users.set_password("bob", "not-for-mia")
        assert {e.actor for e in mia.events.audit()} == {"mia"}


def test_notebooks_are_each_users_own(api: Cove) -> None:
    notebooks.claim_notebook(db=api.db, user="mia", pool="local", profile="cpu", resources=Resources(**SMALL))
    try:
        with api.client("mia") as mia, api.client("bob") as bob, api.client() as admin:
            assert [(n.name, n.pool) for n in mia.notebooks.list()] == [("mia", "local")]
            assert list(bob.notebooks.list()) == []
            assert [n.name for n in admin.notebooks.list(user="mia")] == ["mia"]
    finally:
        notebooks.release_notebook(db=api.db, user="mia")


def test_usage_is_summed_and_filtered(api: Cove) -> None:
    mias_key = keys.create_key(db=api.db, actor=Principal(name="mia"), data=ApiKeyCreate(name="mia-chat"))
    identity = keys.find_key(db=api.db, key_hash=keys.hash_key(mias_key.key))
    assert identity is not None
    now = utcnow()
    records = [
        {
            "api_key_id": identity.id,
            "deployment": "metered",
            "endpoint": "chat.completions",
            "status_code": status,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "latency_ms": 20.0,
            "created_at": now - timedelta(minutes=minutes),
        }
        for status, minutes in ((200, 1), (200, 1), (500, 2), (200, 60 * 24 * 3))
    ]
    usage.record_usage(db=api.db, records=records)
    with api.client("mia") as mia:
        recent = list(mia.usage.summary(since=now - timedelta(hours=1), deployment="metered"))
        assert sum(r.requests for r in recent) == 3
        assert {r.key for r in recent} == {"mia-chat"}
        older = list(mia.usage.summary(since=now - timedelta(days=7), until=now - timedelta(days=1)))
        assert [(r.deployment, r.requests) for r in older] == [("metered", 1)]
    with api.client("bob") as bob:
        assert list(bob.usage.summary(deployment="metered")) == []
    with api.http() as http:
        by_key = http.get("/usage", params={"key": "nobody's", "deployment": "metered"}).json()
        assert by_key["items"] == []
        assert by_key["total"] == 0
        error_of(http.get("/usage/traffic/metered"), 404, "NotFound")  # no such deployment


# ------------------------------------------------------------------------------------------------ the document


def served(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(path, method) of every route, routers included (FastAPI keeps an included router as one entry holding its
    own routes and the prefix it was included with)."""
    found = set()
    for route in routes:
        if hasattr(route, "original_router"):
            found |= served(route.original_router.routes, prefix + route.include_context.prefix)
        elif getattr(route, "include_in_schema", False):
            found |= {(prefix + route.path, m) for m in route.methods if m != "HEAD"}
    return found


def test_the_openapi_document_is_valid_and_lists_every_route(settings: Settings, db: Database) -> None:
    from openapi_spec_validator import validate

    app = build_api(settings=settings, db=db)
    document = app.openapi()
    validate(document)
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert served(app.routes) == documented
    assert {"/images", "/pools", "/clusters", "/users", "/groups", "/notebooks", "/usage", "/events"} <= {
        p.removeprefix(PREFIX) for p, _ in documented
    }


@pytest.mark.runtime
@pytest.mark.parametrize("api", ["sqlite"], indirect=True)  # the CLI reaches a Cove the same way whatever its database
def test_the_cli_drives_a_remote_cove(api: Cove, tmp_path: Path) -> None:
    """With COVE_API_URL and COVE_TOKEN the commands go to that Cove as the token's owner, not to this machine's
    (here: an empty COVE_HOME, which they never open)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COVE_")},
        "COVE_HOME": str(tmp_path / "laptop"),
        "COVE_API_URL": api.url,
        "COVE_TOKEN": api.tokens["mia"],
    }

    def cove_says(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "studio.cli", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert [u["name"] for u in json.loads(cove_says("user", "list", "--json"))] == ["mia"]
    assert "local" in [p["name"] for p in json.loads(cove_says("pool", "list", "--json"))]
    cove_says("user", "passwd", "mia", "--password", "mia-remote-pass")
    assert "PasswordSet" in cove_says("audit", "--limit", "1")
    refused = subprocess.run(
        [sys.executable, "-m", "studio.cli", "user", "add", "zed"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert "only an admin may add users" in refused.stderr
    assert not (tmp_path / "laptop" / "cove.db").exists()
