"""`cove limit set|list|delete` and `cove key create --rpm/--tpm`, run with click's runner against a real database
(through the API in process): who may limit what, and what the gateway will read."""

from __future__ import annotations

import json

from studio.db import Database
from studio.limits import LimitScope, Rule
from studio.services import limits
from studio.settings import Settings
from tests.integration.conftest import deploy
from tests.integration.test_cli import run
from tests.people import member


def test_limits_are_set_listed_and_deleted_by_whom_they_concern(
    db: Database, settings: Settings, stub_model: str
) -> None:
    member(db, "ana", "lab")
    member(db, "bo")
    deploy(db, "chat", stub_model)

    made = run(settings, "--as", "ana", "key", "create", "ana-app", "--rpm", "5", "--tpm", "500")
    assert made.exit_code == 0, made.output
    assert run(settings, "--as", "bo", "key", "create", "bo-app", "--concurrency", "2").exit_code == 0
    assert run(settings, "limit", "set", "--deployment", "chat", "--rpm", "60", "--tpm", "9000").exit_code == 0
    assert run(settings, "limit", "set", "--group", "lab", "--concurrency", "4").exit_code == 0

    changed = run(settings, "--as", "ana", "limit", "set", "--key", "ana-app", "--rpm", "0", "--concurrency", "1")
    assert changed.output.strip() == "key ana-app: - requests/min, 500 tokens/min, 1 at once"  # rpm removed, tpm kept

    not_hers = run(settings, "--as", "ana", "limit", "set", "--key", "bo-app", "--rpm", "1")
    assert not_hers.exit_code == 1
    assert "API key 'bo-app' is not yours" in not_hers.output
    not_admin = run(settings, "--as", "ana", "limit", "set", "--user", "ana", "--rpm", "1000")
    assert not_admin.exit_code == 1
    assert "only an admin may limit a user" in not_admin.output
    two = run(settings, "limit", "set", "--user", "ana", "--group", "lab", "--rpm", "1")
    assert "name exactly one of --key, --user, --group or --deployment" in two.output
    nothing = run(settings, "limit", "set", "--user", "ana")
    assert "give --rpm, --tpm or --concurrency" in nothing.output
    unknown = run(settings, "limit", "set", "--deployment", "nope", "--rpm", "1")
    assert "no deployment named 'nope'" in unknown.output

    hers = json.loads(run(settings, "--as", "ana", "limit", "list", "--json").output)
    assert [(x["scope"], x["subject"]) for x in hers] == [("deployment", "chat"), ("group", "lab"), ("key", "ana-app")]
    everything = run(settings, "limit", "list").output
    assert "bo-app" in everything
    assert "SCOPE" in everything

    assert run(settings, "--as", "bo", "limit", "delete", "--key", "bo-app").exit_code == 0
    assert sorted(limits.rules(db=db), key=lambda r: r.counter) == [  # what the gateway reads at its next refresh
        Rule(LimitScope.DEPLOYMENT, "chat", rpm=60, tpm=9000),
        Rule(LimitScope.GROUP, "lab", concurrency=4),
        Rule(LimitScope.KEY, "ana-app", tpm=500, concurrency=1),
    ]
