"""`cove model gate|promote|alias|aliases`, `cove rollback`, `cove deploy create --model M@production` and
`cove deploy canary`, run with click's runner against a real database (through the API in process)."""

from __future__ import annotations

import json
from pathlib import Path

from studio.db import Database
from studio.models import ModelCreate
from studio.services import events, models
from studio.settings import Settings
from tests.integration.conftest import write_stub_model
from tests.integration.test_cli import run
from tests.people import ADMIN, member


def _versions(db: Database, tmp_path: Path, n: int, group: str | None = None) -> None:
    for i in range(n):
        models.add_model(
            actor=ADMIN,
            db=db,
            data=ModelCreate(
                name="qa", source=str(write_stub_model(tmp_path / f"v{i}")), new_version=i > 0, group=group
            ),
            cache_dir=tmp_path / "cache",
        )


def test_gate_promote_refuse_override_and_rollback(db: Database, settings: Settings, tmp_path: Path) -> None:
    _versions(db, tmp_path, 3)
    said = run(settings, "model", "gate", "set", "qa", "--min", "exact_match=0.8", "--max-drop", "0.02")
    assert said.exit_code == 0, said.output
    assert "gate of qa: exact_match ≥ 0.8; at most 0.02 below production" in said.output
    first = run(settings, "model", "promote", "qa", "1", "--score", "exact_match=0.9")
    assert "pass  min:exact_match: 0.9 ≥ 0.8" in first.output
    assert "qa@production → version 1" in first.output

    refused = run(
        settings, "model", "promote", "qa", "2", "--score", "exact_match=0.85", "--production-score", "exact_match=0.9"
    )
    assert refused.exit_code == 1
    assert "drop:exact_match: 0.85, -0.05 vs production's 0.9 (allowed -0.02)" in refused.output
    assert "next: improve the version" in refused.output

    bad = run(settings, "model", "promote", "qa", "2", "--score", "exact_match")
    assert (bad.exit_code, "write it as METRIC=NUMBER" in bad.output) == (1, True)

    over = run(settings, "model", "promote", "qa", "2", "--override", "the old one leaks PII", "--json")
    assert over.exit_code == 0, over.output
    assert json.loads(over.output)["overridden"] is True
    assert any(
        e.reason == "GateOverridden" and "the old one leaks PII" in e.message
        for e in events.audit_trail(db=db, actor=ADMIN)
    )
    staged = run(settings, "model", "alias", "qa", "staging", "3")
    assert "qa@staging → version 3" in staged.output
    back = run(settings, "rollback", "qa")
    assert "qa@production → version 1 (was 2)" in back.output
    history = run(settings, "model", "aliases", "qa")
    assert "aliases: production → v1, staging → v3" in history.output
    assert "override: the old one leaks PII" in history.output
    assert "rollback" in history.output


def test_a_member_cannot_override(db: Database, settings: Settings, tmp_path: Path) -> None:
    _versions(db, tmp_path, 1, group="team")  # ann may change it, through her group
    member(db, "ann", "team")
    run(settings, "model", "gate", "set", "qa", "--min", "f1=0.5")
    said = run(settings, "--as", "ann", "model", "promote", "qa", "1", "--override", "please")
    assert said.exit_code == 1
    assert "only an admin may override the promotion gate" in said.output
    assert "qa@production" in run(settings, "--as", "ann", "model", "promote", "qa", "1", "--score", "f1=0.6").output


def test_deploy_following_production_and_a_canary(db: Database, settings: Settings, tmp_path: Path) -> None:
    _versions(db, tmp_path, 2)
    run(settings, "model", "promote", "qa", "1")
    run(settings, "model", "alias", "qa", "staging", "2")
    made = run(settings, "deploy", "create", "svc", "--model", "qa@production", "--cpu", "0.5", "--memory-mib", "256")
    assert made.exit_code == 0, made.output
    assert "qa v1 (following production)" in made.output
    on = run(settings, "deploy", "canary", "svc", "--share", "20")
    assert "svc: 20% of requests to qa@staging (svc-canary)" in on.output
    listed = run(settings, "deploy", "list", "--json")
    assert {(d["name"], d["model_version"], d["follows"]) for d in json.loads(listed.output)} == {
        ("svc", 1, "production"),
        ("svc-canary", 2, "staging"),
    }
    assert "canary off" in run(settings, "deploy", "canary", "svc", "--share", "0").output
