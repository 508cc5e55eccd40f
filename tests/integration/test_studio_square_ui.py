"""The model square page and the statement on the API keys & usage page, run headless with AppTest against a real
database (as the admin, as the studio runs with login off), and the square as a member sees it (through the
facade, as the page calls it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.db import Database, utcnow
from studio.limits import LimitScope
from studio.logs import LogReader
from studio.models import ApiKeyCreate, LimitSet, ModelCreate
from studio.prices import BudgetScope, BudgetUnit
from studio.services import budgets, keys, limits, models, prices, usage
from studio.settings import Settings
from studio.ui import facade
from studio.ui.square import NO_KEY
from tests.integration.conftest import deploy, page, table, texts, write_stub_model
from tests.people import ADMIN, member


@pytest.fixture
def long_model(db: Database, tmp_path: Path) -> str:
    """A stub model whose config states its context: 2048 tokens."""
    folder = write_stub_model(tmp_path / "long")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    models.add_model(
        actor=ADMIN, db=db, data=ModelCreate(name="long", source=str(folder)), cache_dir=tmp_path / "cache"
    )
    return "long"


def test_the_square_lists_prices_limits_context_and_a_snippet_with_the_members_key(
    ui: AppTest, db: Database, long_model: str, settings: Settings
) -> None:
    deploy(db, "chat", long_model)
    prices.set_price(db=db, actor=ADMIN, deployment="chat", input_per_m=150_000, output_per_m=600_000)
    limits.set_limit(db=db, actor=ADMIN, data=LimitSet(scope=LimitScope.DEPLOYMENT, subject="chat", rpm=60))

    at = page(ui, "square")
    (row,) = table(at)
    assert (row["model"], row["input"], row["output"], row["dedicated"]) == (
        "chat",
        "0.15 USD / 1M tokens",
        "0.6 USD / 1M tokens",
        "free",
    )
    assert row["context (tokens)"] == 2048
    assert row["your limits"] == "60 requests/min (deployment)"
    code = at.code[0].value
    assert f'base_url="{settings.gateway_url}/v1"' in code
    assert 'model="chat"' in code
    assert NO_KEY in code  # no key yet: told to make one
    assert at.get("link_button")[0].proto.url == settings.playground_url

    keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="my-app"))
    at.run()
    assert "# COVE_API_KEY: your key my-app (" in at.code[0].value


def test_a_member_sees_only_what_they_may_call_and_the_limits_that_apply_to_them(
    settings: Settings, db: Database, long_model: str
) -> None:
    ana = member(db, "ana", "lab")
    member(db, "bo")
    deploy(db, "shared", long_model, group="lab")
    deploy(db, "private", long_model)
    limits.set_limit(db=db, actor=ADMIN, data=LimitSet(scope=LimitScope.USER, subject="ana", tpm=10_000))
    limits.set_limit(db=db, actor=ADMIN, data=LimitSet(scope=LimitScope.GROUP, subject="lab", concurrency=4))
    limits.set_limit(db=db, actor=ADMIN, data=LimitSet(scope=LimitScope.USER, subject="bo", rpm=1))
    studio = facade.Studio(facade.Shared(settings, db, LogReader(settings=settings, db=db)), ana)

    (offer,) = studio.square()
    assert offer.name == "shared"
    assert offer.limits == "10000 tokens/min (you); 4 at once (group lab)"
    assert offer.input_per_m == "free"


def test_the_statement_of_a_month_and_the_budgets_on_the_usage_page(ui: AppTest, db: Database) -> None:
    made = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app"))
    found = keys.find_key(db=db, key_hash=keys.hash_key(made.key))
    assert found is not None
    row = {
        "api_key_id": found.id,
        "deployment": "chat",
        "endpoint": "chat.completions",
        "stream": False,
        "status_code": 200,
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "latency_ms": 1.0,
        "created_at": utcnow(),
        "cost_micros": 1_502_500,
    }
    usage.record_usage(db=db, records=[row, row])
    budgets.set_budget(
        db=db,
        actor=ADMIN,
        scope=BudgetScope.USER,
        subject="admin",
        unit=BudgetUnit.MONEY,
        amount=4_000_000,
        warn_at=70,
    )

    at = page(ui, "keys")
    assert not at.error, texts(at.error)
    assert {m.label: m.value for m in at.metric}["Total"] == "3.01 USD"  # 3.005, half-up
    lines = [t for t in (table(at, i) for i in range(len(at.dataframe))) if t and "cost" in t[0]]
    assert [(x["deployment"], x["requests"], x["cost"]) for x in lines[0]] == [("chat", 2, "3.01 USD")]
    budget_rows = [t for t in (table(at, i) for i in range(len(at.dataframe))) if t and "budget of" in t[0]]
    assert budget_rows[0][0]["spent"] == "3.01 USD"
    assert budget_rows[0][0]["standing"] == "warn"  # 3.005 of 4 USD: 75 %, past 70 %

    at.text_input(key="statement-month").input("2001-01").run()
    assert "Nothing billed to user admin in 2001-01." in texts(at.caption)
