"""The Models page's aliases: the gate's answer as scores are entered, Promote held back while it refuses, an
admin's override with a reason, staging, and Rollback; the Deployments page shows the alias followed and the
canary's share. Run headless with AppTest against a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.db import Database
from studio.gate import GateConfig
from studio.models import DeploymentCreate, ModelCreate
from studio.services import aliases, canary, deployments, events, models
from studio.values import Resources
from tests.integration.conftest import page, settle, table, texts, write_stub_model
from tests.people import ADMIN


@pytest.fixture
def qa(db: Database, tmp_path: Path) -> str:
    """Model 'qa' with two versions, production at v1, gated on exact_match ≥ 0.8."""
    for i in range(2):
        models.add_model(
            actor=ADMIN,
            db=db,
            data=ModelCreate(name="qa", source=str(write_stub_model(tmp_path / f"v{i}")), new_version=i > 0),
            cache_dir=tmp_path / "cache",
        )
    aliases.promote(db=db, actor=ADMIN, model="qa", version=1)
    aliases.set_gate(db=db, actor=ADMIN, model="qa", gate=GateConfig(minimums={"exact_match": 0.8}))
    return "qa"


def test_promote_shows_the_gate_and_an_admin_overrides_then_rolls_back(ui: AppTest, db: Database, qa: str) -> None:
    at = page(ui, "models")
    assert table(at)[0]["aliases"] == "production v1"
    assert "Gate: exact_match ≥ 0.8" in texts(at.caption)
    assert at.selectbox(key="promote-version").value == 2
    assert at.button(key="promote").disabled  # unmeasured: the gate refuses
    assert "min:exact_match: not measured (needs ≥ 0.8)" in texts(at.caption)

    at.number_input(key="score-exact_match").set_value(0.7).run()
    assert [r["numbers"] for r in table(at, 1)] == ["0.7 < 0.8 — entered in the studio"]
    assert at.button(key="promote").disabled

    at.text_input(key="override-reason").input("the demo needs it today").run()
    at.button(key="override").click().run()
    settle(at)
    assert models.get_model(db=db, name=qa).aliases["production"] == 2
    (audit,) = [e for e in events.audit_trail(db=db, actor=ADMIN) if e.reason == "GateOverridden"]
    assert "the demo needs it today" in audit.message

    at.button(key="rollback").click().run()
    settle(at)
    assert models.get_model(db=db, name=qa).aliases["production"] == 1
    assert table(at)[0]["aliases"] == "production v1"


def test_a_passing_version_is_promoted_and_staging_set(ui: AppTest, db: Database, qa: str) -> None:
    at = page(ui, "models")
    at.button(key="set-staging").click().run()
    settle(at)
    assert models.get_model(db=db, name=qa).aliases == {"production": 1, "staging": 2}
    at.number_input(key="score-exact_match").set_value(0.9).run()
    assert not at.button(key="promote").disabled
    at.button(key="promote").click().run()
    settle(at)
    assert not at.error, texts(at.error)
    assert models.get_model(db=db, name=qa).aliases == {"production": 2, "staging": 2}


def test_the_deployments_page_shows_the_alias_followed_and_the_canary(ui: AppTest, db: Database, qa: str) -> None:
    aliases.set_alias(db=db, actor=ADMIN, model=qa, alias="staging", version=2)
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(name="svc", model=qa, follows="production", resources=Resources(cpu=0.5, memory_mib=256)),
    )
    canary.set_canary(db=db, actor=ADMIN, name="svc", share=10)
    at = page(ui, "deployments")
    rows = {r["name"]: r for r in table(at)}
    assert (rows["svc"]["follows"], rows["svc"]["canary"]) == ("production", "10% to staging")
    assert (rows["svc-canary"]["follows"], rows["svc-canary"]["model"]) == ("staging", "qa v2")
