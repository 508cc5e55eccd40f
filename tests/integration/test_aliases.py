"""Aliases, promotion through the gate, rollback, deployments that follow an alias, and canaries, through the
services with the real controller (an instant backend) and the real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.controller import Controller
from studio.db import Database
from studio.errors import Forbidden, GateRefused, InvalidSpec, NotFound
from studio.gate import GateConfig, Results
from studio.models import DeploymentCreate, ModelCreate
from studio.services import aliases, canary, deployments, events, models
from studio.settings import Settings
from studio.values import Resources
from tests.fakes.backends import InstantBackend
from tests.integration.conftest import write_stub_model
from tests.people import ADMIN, member

GATE = GateConfig(minimums={"exact_match": 0.8}, max_drop=0.02)


@pytest.fixture
def three(db: Database, tmp_path: Path) -> str:
    """Model 'qa' with versions 1, 2 and 3 (each its own folder), the admin's, shared with group qa-team."""
    for i in range(3):
        models.add_model(
            actor=ADMIN,
            db=db,
            data=ModelCreate(
                name="qa", source=str(write_stub_model(tmp_path / f"qa{i}")), new_version=i > 0, group="qa-team"
            ),
            cache_dir=tmp_path / "cache",
        )
    return "qa"


def _follow(db: Database, name: str, model: str, alias: str = "production") -> None:
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(name=name, model=model, follows=alias, resources=Resources(cpu=0.5, memory_mib=256)),
    )


def test_staging_moves_freely_and_production_without_a_gate_promotes_freely(db: Database, three: str) -> None:
    aliases.set_alias(db=db, actor=ADMIN, model=three, alias="staging", version=2)
    aliases.set_alias(db=db, actor=ADMIN, model=three, alias="staging", version=3)
    done = aliases.promote(db=db, actor=ADMIN, model=three, version=2)
    assert (done.version, done.previous, done.checks) == (2, None, [])
    assert models.get_model(db=db, name=three).aliases == {"staging": 3, "production": 2}
    assert [(m.alias, m.version) for m in aliases.history(db=db, model=three)] == [
        ("production", 2),
        ("staging", 3),
        ("staging", 2),
    ]
    with pytest.raises(InvalidSpec, match="not an alias"):
        aliases.set_alias(db=db, actor=ADMIN, model=three, alias="canary", version=1)


def test_a_refused_promotion_names_each_failing_check_and_moves_nothing(db: Database, three: str) -> None:
    aliases.set_gate(db=db, actor=ADMIN, model=three, gate=GATE)
    aliases.promote(db=db, actor=ADMIN, model=three, version=1, results={1: Results({"exact_match": 0.9})})
    with pytest.raises(GateRefused) as refused:
        aliases.promote(
            db=db,
            actor=ADMIN,
            model=three,
            version=2,
            results={1: Results({"exact_match": 0.9}), 2: Results({"exact_match": 0.75}, source="eval run 7")},
        )
    assert "min:exact_match: 0.75 < 0.8" in refused.value.message
    assert "drop:exact_match: 0.75, -0.15 vs production's 0.9 (allowed -0.02)" in refused.value.message
    assert [f["path"] for f in refused.value.fields] == ["min:exact_match", "drop:exact_match"]
    assert models.get_model(db=db, name=three).aliases == {"production": 1}
    passed = aliases.promote(
        db=db,
        actor=ADMIN,
        model=three,
        version=3,
        results={1: Results({"exact_match": 0.9}), 3: Results({"exact_match": 0.89})},
    )
    assert [c["passed"] for c in passed.checks] == [True, True]


def test_an_admin_overrides_with_a_reason_in_the_audit_trail_and_a_member_cannot(db: Database, three: str) -> None:
    aliases.set_gate(db=db, actor=ADMIN, model=three, gate=GATE)
    with pytest.raises(InvalidSpec, match="needs a reason"):
        aliases.promote(db=db, actor=ADMIN, model=three, version=2, override_reason="  ")
    done = aliases.promote(db=db, actor=ADMIN, model=three, version=2, override_reason="hotfix for the outage")
    assert done.overridden
    (audit,) = [e for e in events.audit_trail(db=db, actor=ADMIN) if e.reason == "GateOverridden"]
    assert audit.actor == "admin"
    assert "hotfix for the outage" in audit.message
    assert "min:exact_match: not measured" in audit.message
    assert aliases.history(db=db, model=three)[0].override_reason == "hotfix for the outage"


def test_a_member_who_may_change_the_model_moves_staging_but_cannot_override(db: Database, three: str) -> None:
    ann, bob = member(db, "ann", "qa-team"), member(db, "bob")
    with pytest.raises(Forbidden, match="not yours"):
        aliases.set_alias(db=db, actor=bob, model=three, alias="staging", version=2)
    aliases.set_alias(db=db, actor=ann, model=three, alias="staging", version=2)
    aliases.set_gate(db=db, actor=ADMIN, model=three, gate=GATE)
    with pytest.raises(Forbidden, match="only an admin may override the promotion gate"):
        aliases.promote(db=db, actor=ann, model=three, version=2, override_reason="trust me")
    passing = {2: Results({"exact_match": 0.95})}
    assert aliases.promote(db=db, actor=ann, model=three, version=2, results=passing).version == 2
    assert models.get_model(db=db, name=three).aliases == {"staging": 2, "production": 2}


def test_rollback_goes_to_the_previous_production_version(db: Database, three: str) -> None:
    with pytest.raises(NotFound, match="no earlier production version"):
        aliases.rollback(db=db, actor=ADMIN, model=three)
    for v in (1, 2, 3):
        aliases.promote(db=db, actor=ADMIN, model=three, version=v)
    assert aliases.rollback(db=db, actor=ADMIN, model=three).version == 2
    assert aliases.rollback(db=db, actor=ADMIN, model=three).version == 1  # and back through the history
    assert models.get_model(db=db, name=three).aliases["production"] == 1
    with pytest.raises(NotFound):
        aliases.rollback(db=db, actor=ADMIN, model=three)


def test_a_deployment_following_production_is_rolled_when_production_moves(
    db: Database, settings: Settings, three: str
) -> None:
    backend = InstantBackend()
    ctl = Controller(db=db, backend=backend, settings=settings)
    with pytest.raises(NotFound, match="no production version yet"):
        _follow(db, "svc", three)
    aliases.promote(db=db, actor=ADMIN, model=three, version=1)
    _follow(db, "svc", three)
    ctl.reconcile()
    first = backend.specs["svc"]
    moved = aliases.promote(db=db, actor=ADMIN, model=three, version=3)
    assert moved.deployments == ["svc"]
    ctl.reconcile()
    dep = deployments.get_deployment(actor=ADMIN, db=db, name="svc")
    assert (dep.model_version, dep.follows, dep.status) == (3, "production", "Ready")
    assert backend.specs["svc"].fingerprint != first.fingerprint  # the backend replaces the replicas
    aliases.rollback(db=db, actor=ADMIN, model=three)
    assert deployments.get_deployment(actor=ADMIN, db=db, name="svc").model_version == 1
    rolled = [e.message for e in events.list_events(db=db, kind="deployment", name="svc") if e.reason == "Rolling"]
    assert rolled == [
        "following qa@production: rolling onto version 1",
        "following qa@production: rolling onto version 3",
    ]


def test_a_canary_runs_staging_beside_production_and_goes_with_it(db: Database, settings: Settings, three: str) -> None:
    backend = InstantBackend()
    ctl = Controller(db=db, backend=backend, settings=settings)
    aliases.promote(db=db, actor=ADMIN, model=three, version=1)
    _follow(db, "svc", three)
    with pytest.raises(NotFound, match="no staging version"):
        canary.set_canary(db=db, actor=ADMIN, name="svc", share=20)
    aliases.set_alias(db=db, actor=ADMIN, model=three, alias="staging", version=2)
    assert canary.set_canary(db=db, actor=ADMIN, name="svc", share=20).canary_share == 20
    ctl.reconcile()
    (route,) = deployments.ready_routes(db=db)
    assert (route.name, route.model_version, route.canary_share) == ("svc", 1, 20)
    assert route.canary is not None
    assert (route.canary.deployment, route.canary.model_version) == ("svc-canary", 2)
    assert deployments.find_route(db=db, name="svc-canary") == (False, None)  # reached only through svc
    aliases.set_alias(db=db, actor=ADMIN, model=three, alias="staging", version=3)  # the canary follows staging
    ctl.reconcile()
    assert deployments.get_deployment(actor=ADMIN, db=db, name="svc-canary").model_version == 3
    canary.set_canary(db=db, actor=ADMIN, name="svc", share=0)
    ctl.reconcile()
    assert "svc-canary" not in backend.specs
    assert deployments.ready_routes(db=db)[0].canary is None
    canary.set_canary(db=db, actor=ADMIN, name="svc", share=10)
    deployments.delete_deployment(db=db, actor=ADMIN, name="svc")
    ctl.reconcile()
    assert backend.specs == {}


def test_only_a_deployment_following_production_gets_a_canary(db: Database, three: str) -> None:
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(name="pinned", model=three, resources=Resources(cpu=0.5, memory_mib=256)),
    )
    with pytest.raises(InvalidSpec, match="does not follow"):
        canary.set_canary(db=db, actor=ADMIN, name="pinned", share=10)
    with pytest.raises(InvalidSpec, match="0 to 99"):
        canary.set_canary(db=db, actor=ADMIN, name="pinned", share=100)
