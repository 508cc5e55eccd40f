"""People and what is theirs, through the services every face uses: owners, groups, roles, keys, the audit trail,
logins. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from studio.db import Database, open_database, utcnow
from studio.errors import Conflict, Forbidden, InvalidSpec, Unauthorized
from studio.models import (
    ApiKeyCreate,
    ClusterCreate,
    DeploymentCreate,
    ImageCreate,
    ModelCreate,
    PoolSpec,
    UserCreate,
)
from studio.services import clusters, deployments, events, images, keys, models, pools, users
from studio.values import PoolBase, Principal, Resources, Role
from tests.integration.conftest import write_stub_model
from tests.people import ADMIN, member

SMALL = Resources(cpu=0.5, memory_mib=256)


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """A studio with a CPU pool open to all, one for the group 'gpu-team', and a model in the shared catalog."""
    database = open_database(database_url)
    images.ensure_builtin_images(db=database)
    pools.sync_detected_pools(
        db=database, cluster="default", detected=[PoolBase(name="local", cpu_cores=4, memory_mib=8192)]
    )
    pools.sync_configured_pools(
        db=database, specs=[PoolSpec(name="team", cpu_cores=4, memory_mib=8192, groups=["gpu-team"])]
    )
    source = str(write_stub_model(tmp_path / "stub"))
    models.add_model(db=database, actor=ADMIN, data=ModelCreate(name="m", source=source), cache_dir=tmp_path)
    yield database
    database.dispose()


def deploy(db: Database, actor: Principal, name: str, pool: str = "local", group: str | None = None) -> None:
    data = DeploymentCreate(name=name, model="m", resources=SMALL, pool=pool, group=group)
    deployments.create_deployment(db=db, actor=actor, data=data)


def test_members_see_and_change_only_their_own_and_are_told_whose_it_is(db: Database) -> None:
    ana, bo = member(db, "ana"), member(db, "bo")
    deploy(db, ana, "ana-chat")
    deploy(db, bo, "bo-chat")
    ana_key = keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="ana-app"))

    assert [d.name for d in deployments.list_deployments(db=db, actor=ana)] == ["ana-chat"]
    assert [(d.name, d.owner) for d in deployments.list_deployments(db=db, actor=ADMIN)] == [
        ("ana-chat", "ana"),
        ("bo-chat", "bo"),
    ]
    assert deployments.count_by_status(db=db, actor=bo) == {"Pending": 1}
    assert [k.name for k in keys.list_keys(db=db, actor=bo)] == []
    assert [(k.name, k.owner) for k in keys.list_keys(db=db, actor=ADMIN)] == [("ana-app", "ana")]

    for attempt in (
        lambda: deployments.get_deployment(db=db, actor=bo, name="ana-chat"),
        lambda: deployments.scale_deployment(db=db, actor=bo, name="ana-chat", replicas=2),
        lambda: deployments.delete_deployment(db=db, actor=bo, name="ana-chat"),
    ):
        with pytest.raises(Forbidden, match=r"^deployment 'ana-chat' is not yours: owned by ana"):
            attempt()
    with pytest.raises(Forbidden, match=r"^API key 'ana-app' is not yours: owned by ana"):
        keys.revoke_key(db=db, actor=bo, name="ana-app")
    assert keys.find_key(db=db, key_hash=keys.hash_key(ana_key.key)) is not None  # still works

    deployments.scale_deployment(db=db, actor=ADMIN, name="ana-chat", replicas=2)  # an admin may
    assert deployments.get_deployment(db=db, actor=ana, name="ana-chat").replicas == 2


def test_a_deployment_shared_with_a_group_is_its_members_to_see_and_change(db: Database) -> None:
    ana, cy, bo = member(db, "ana", "nlp"), member(db, "cy", "nlp"), member(db, "bo")
    deploy(db, ana, "shared", group="nlp")

    assert [d.name for d in deployments.list_deployments(db=db, actor=cy)] == ["shared"]
    assert deployments.scale_deployment(db=db, actor=cy, name="shared", replicas=2).replicas == 2
    assert deployments.list_deployments(db=db, actor=bo) == []
    with pytest.raises(Forbidden, match="you are not in group 'nlp'"):
        deploy(db, bo, "sneaky", group="nlp")


def test_a_pools_groups_decide_who_deploys_there_and_taking_a_group_away_keeps_what_runs(db: Database) -> None:
    ana = member(db, "ana")
    with pytest.raises(Forbidden, match=r"pool 'team' is for the groups gpu-team; 'ana' is in none of them"):
        deploy(db, ana, "first", pool="team")

    users.update_user(db=db, actor=ADMIN, name="ana", groups=["gpu-team"])
    ana = users.principal(db=db, name="ana")
    deploy(db, ana, "first", pool="team")

    users.update_user(db=db, actor=ADMIN, name="ana", groups=[])
    ana = users.principal(db=db, name="ana")
    assert deployments.get_deployment(db=db, actor=ana, name="first").replicas == 1  # still hers, still wanted
    assert [d.name for d in deployments.desired_state(db=db)] == ["first"]
    with pytest.raises(Forbidden, match="pool 'team' is for the groups gpu-team"):
        deploy(db, ana, "second", pool="team")


def test_removing_a_user_moves_what_they_own_to_the_admin_and_revokes_their_keys(db: Database, tmp_path: Path) -> None:
    ana = member(db, "ana")
    deploy(db, ana, "ana-chat")
    secret = keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="ana-app")).key

    users.remove_user(db=db, actor=ADMIN, name="ana")

    assert deployments.get_deployment(db=db, actor=ADMIN, name="ana-chat").owner == "admin"
    (key,) = keys.list_keys(db=db, actor=ADMIN)
    assert (key.owner, key.revoked_at is not None) == ("admin", True)
    assert keys.find_key(db=db, key_hash=keys.hash_key(secret)) is None
    (removed,) = events.audit_trail(db=db, actor=ADMIN, limit=1)
    assert (removed.actor, removed.kind, removed.name, removed.reason) == ("admin", "user", "ana", "Removed")
    assert removed.message == "ana removed: 0 models and 1 deployments moved to admin, 1 API keys revoked"
    with pytest.raises(Unauthorized, match="no user named 'ana'"):
        users.principal(db=db, name="ana")
    with pytest.raises(Conflict, match="you cannot remove yourself"):
        users.remove_user(db=db, actor=ADMIN, name="admin")


def test_passwords_log_in_and_wrong_ones_say_nothing_about_which_part_was_wrong(db: Database) -> None:
    member(db, "ana", "nlp", password="correct horse")
    assert users.authenticate(db=db, name="ana", password="correct horse") == users.principal(db=db, name="ana")
    assert users.get_user(db=db, name="ana").last_login_at is not None

    for name, password in (("ana", "wrong password"), ("nobody", "correct horse"), ("admin", "anything at all")):
        with pytest.raises(Unauthorized) as refused:
            users.authenticate(db=db, name=name, password=password)
        assert refused.value.message == "wrong user name or password"

    users.update_user(db=db, actor=ADMIN, name="ana", disabled=True)
    with pytest.raises(Unauthorized, match="user 'ana' is disabled"):
        users.authenticate(db=db, name="ana", password="correct horse")
    with pytest.raises(Unauthorized, match="user 'ana' is disabled"):
        users.principal(db=db, name="ana")


def test_the_first_admins_password_is_made_once(db: Database) -> None:
    password = users.first_admin_password(db=db)
    assert password is not None
    assert len(password) >= 16
    assert users.first_admin_password(db=db) is None  # never again, never shown again
    assert users.authenticate(db=db, name="admin", password=password).role is Role.ADMIN


def test_only_admins_manage_users_clusters_and_images_that_run_local_commands(db: Database) -> None:
    ana = member(db, "ana")
    with pytest.raises(Forbidden, match="only an admin may add users"):
        users.create_user(db=db, actor=ana, data=UserCreate(name="eve"))
    with pytest.raises(Forbidden, match="only an admin may register clusters"):
        clusters.add_cluster(
            db=db, actor=ana, data=ClusterCreate(name="east", kubeconfig="apiVersion: v1"), key="unused"
        )
    with pytest.raises(Forbidden, match=r"only an admin may register an image with a local command"):
        images.add_image(
            db=db,
            actor=ana,
            data=ImageCreate(
                name="mine",
                version="1",
                ref="example.com/mine",
                local_command=["python", "-m", "serve", "--port", "{port}"],
            ),
        )
    with pytest.raises(Forbidden, match="only an admin may register a model from a folder on the server"):
        models.add_model(db=db, actor=ana, data=ModelCreate(name="hers", source="/etc"), cache_dir=Path("/tmp"))
    with pytest.raises(Forbidden, match="model 'm' is not yours: owned by admin"):
        models.delete_model(db=db, actor=ana, name="m")
    assert [u.name for u in users.list_users(db=db, actor=ana)] == ["ana"]  # a member sees themself


def test_a_key_is_scoped_only_to_deployments_its_owner_may_use_and_cannot_be_born_expired(db: Database) -> None:
    ana, bo = member(db, "ana"), member(db, "bo")
    deploy(db, ana, "ana-chat")
    deploy(db, bo, "bo-chat")

    scoped = keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="one", deployments=["ana-chat"]))
    identity = keys.find_key(db=db, key_hash=keys.hash_key(scoped.key))
    assert identity is not None
    assert (identity.owner, identity.scope, identity.reach) == ("ana", {"ana-chat"}, {"ana-chat"})
    assert (
        identity.refusal("bo-chat") == "API key 'one' is limited to the deployments ana-chat: it may not call 'bo-chat'"
    )

    with pytest.raises(Forbidden, match="deployment 'bo-chat' is not yours: owned by bo"):
        keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="two", deployments=["bo-chat"]))
    with pytest.raises(InvalidSpec, match="has no time zone"):
        keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="naive", expires_at=datetime(2099, 1, 1)))
    with pytest.raises(InvalidSpec, match="which has passed"):
        keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="old", expires_at=utcnow() - timedelta(hours=1)))

    unscoped = keys.create_key(db=db, actor=ana, data=ApiKeyCreate(name="all"))
    identity = keys.find_key(db=db, key_hash=keys.hash_key(unscoped.key))
    assert identity is not None
    assert identity.reach == {"ana-chat"}  # what she may use, and no more
    assert identity.refusal("bo-chat") == "API key 'all' belongs to 'ana', who may not use deployment 'bo-chat'"


def test_the_audit_trail_shows_an_admin_everything_and_a_member_their_own(db: Database) -> None:
    ana, bo = member(db, "ana"), member(db, "bo")
    deploy(db, ana, "ana-chat")
    keys.create_key(db=db, actor=bo, data=ApiKeyCreate(name="bo-app"))
    keys.revoke_key(db=db, actor=bo, name="bo-app")
    deployments.delete_deployment(db=db, actor=ADMIN, name="ana-chat")

    seen = [(e.actor, e.kind, e.name, e.reason) for e in events.audit_trail(db=db, actor=ADMIN)]
    assert seen[:4] == [
        ("admin", "deployment", "ana-chat", "Deleting"),
        ("bo", "key", "bo-app", "Revoked"),
        ("bo", "key", "bo-app", "Created"),
        ("ana", "deployment", "ana-chat", "Created"),
    ]
    assert [(e.name, e.reason) for e in events.audit_trail(db=db, actor=bo)] == [
        ("bo-app", "Revoked"),
        ("bo-app", "Created"),
    ]
    assert [e.reason for e in events.audit_trail(db=db, actor=ADMIN, user="ana")] == ["Created"]
