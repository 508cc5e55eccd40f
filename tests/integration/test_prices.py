"""Prices, bills and budgets with real parts: the API and CLI over a real database, and a real gateway in front of
the scripted runtime (every answer: 7 prompt and 3 completion tokens), metering costs that statements must match to
the cent."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from sqlmodel import select

from studio.controller import Controller
from studio.db import Database, open_database, utcnow
from studio.models import ApiKey, ApiKeyCreate, EventPublic, InstanceSpan
from studio.prices import BudgetScope, BudgetUnit, Price, month_start, parse_money
from studio.services import budgets, events, keys, prices, usage
from studio.settings import Settings
from studio.values import Principal
from tests.conftest import free_port
from tests.integration.conftest import GatewayServer, add_fake_image, deploy, status_of, wait_until
from tests.integration.test_cli import run
from tests.people import ADMIN, member

HI = [{"role": "user", "content": "hi"}]


def record(db: Database, key_id: int | None, deployment: str, cost: int, status: int = 200) -> None:
    usage.record_usage(
        db=db,
        records=[
            {
                "api_key_id": key_id,
                "deployment": deployment,
                "endpoint": "chat.completions",
                "stream": False,
                "status_code": status,
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "estimated": False,
                "latency_ms": 1.0,
                "ttft_ms": None,
                "created_at": utcnow(),
                "model_version": None,
                "cost_micros": cost,
            }
        ],
    )


def _id_of(db: Database, name: str) -> int:
    with db.session() as session:
        found = session.exec(select(ApiKey.id).where(ApiKey.name == name)).first()
        assert found is not None
        return found


def test_prices_budgets_and_bills_through_the_cli(db: Database, settings: Settings, stub_model: str) -> None:
    ana = member(db, "ana", "lab")
    member(db, "bo", "lab")
    deploy(db, "chat", stub_model)
    keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="anas"))
    keys.create_key(actor=Principal(name="bo", groups=frozenset({"lab"})), db=db, data=ApiKeyCreate(name="bos"))

    priced = run(settings, "price", "set", "chat", "--input-per-m", "0.15", "--output-per-m", "0.60", "--hourly", "2.4")
    assert priced.exit_code == 0, priced.output
    assert "0.150000 USD per million input tokens" in priced.output
    assert prices.price_book(db=db) == {"chat": Price(150_000, 600_000, 2_400_000)}
    kept = run(settings, "price", "set", "chat", "--output-per-m", "0.80")
    assert kept.exit_code == 0
    assert prices.price_book(db=db)["chat"] == Price(150_000, 800_000, 2_400_000)  # the others kept
    not_admin = run(settings, "--as", "ana", "price", "set", "chat", "--input-per-m", "0")
    assert "only an admin may set prices" in not_admin.output
    assert "is not an amount of money" in run(settings, "price", "set", "chat", "--input-per-m", "-1").output
    listed = json.loads(run(settings, "--as", "ana", "price", "list", "--json").output)  # members read prices
    assert [(p["deployment"], p["output_per_m"], p["currency"]) for p in listed] == [("chat", 800_000, "USD")]

    set_budget = run(settings, "budget", "set", "--group", "lab", "--money", "5", "--warn-at", "75%")
    assert set_budget.exit_code == 0, set_budget.output
    assert "group lab: 5.00 USD a month, warning at 75%; 0.00 USD spent this month" in set_budget.output
    assert "give --tokens or --money" in run(settings, "budget", "set", "--user", "ana").output
    assert run(settings, "budget", "set", "--user", "ana", "--tokens", "1000").exit_code == 0

    ana_id, bo_id = _id_of(db, "anas"), _id_of(db, "bos")
    for cost in (1_000_000, 2_005_000):  # served at two prices: each row keeps its own
        record(db, ana_id, "chat", cost)
    record(db, bo_id, "chat", 1_500_000)
    record(db, bo_id, "chat", 9_999_999, status=500)  # an error is not billed

    mine = json.loads(run(settings, "--as", "ana", "budget", "list", "--json").output)
    assert {(b["scope"], b["subject"], b["spent"], b["standing"]) for b in mine} == {
        ("user", "ana", 20, "ok"),
        ("group", "lab", 4_505_000, "warn"),  # 90 % of 5 USD
    }
    by_user = run(settings, "usage", "--by", "user", "--csv")
    assert by_user.exit_code == 0, by_user.output
    rows = list(csv.DictReader(io.StringIO(by_user.output)))
    assert [(r["user"], r["requests"], r["cost"]) for r in rows] == [("ana", "2", "3.005"), ("bo", "1", "1.5")]
    by_group = json.loads(run(settings, "--as", "bo", "usage", "--by", "group", "--json").output)
    assert [(g["name"], g["cost_micros"], g["prompt_tokens"]) for g in by_group] == [("lab", 4_505_000, 21)]
    theirs = json.loads(run(settings, "--as", "bo", "usage", "--by", "key", "--json").output)
    assert [k["name"] for k in theirs] == ["bos"]  # a member sees only their own keys

    statement = run(settings, "--as", "ana", "statement", "--group", "lab", "--month", f"{utcnow():%Y-%m}")
    assert statement.exit_code == 0, statement.output
    assert re.search(r"chat\s+3\s+21\s+9\s+4\.51", statement.output)
    assert "total: 3 requests, 21 prompt and 9 completion tokens, 4.51 USD" in statement.output  # 4.505, half-up
    refused = run(settings, "--as", "ana", "statement", "--user", "bo")
    assert "the statement of user 'bo' is not yours" in refused.output
    last_month = (utcnow().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    empty = json.loads(run(settings, "statement", "--user", "ana", "--month", last_month, "--json").output)
    assert (empty["cost_micros"], empty["lines"]) == (0, [])


def test_bills_and_the_months_spend_sum_the_same_rows_on_each_database(database_url: str) -> None:
    db = open_database(database_url)
    try:
        ana = member(db, "ana", "lab", "ops")
        keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="anas"))
        for cost in (3_000_000_000_001, 2):  # past 32 bits: kept as big integers
            record(db, _id_of(db, "anas"), "chat", cost)
        record(db, _id_of(db, "anas"), "chat", 5, status=499)  # cancelled mid-answer: billed
        bill = prices.statement(db=db, actor=ana, scope="group", subject="ops", month=f"{utcnow():%Y-%m}")
        assert (bill.requests, bill.prompt_tokens, bill.cost_micros) == (3, 21, 3_000_000_000_008)
        spend = budgets.month_spend(db=db)
        assert spend[(BudgetScope.GROUP, "lab")] == spend[(BudgetScope.USER, "ana")]
        assert spend[(BudgetScope.USER, "ana")].cost == 3_000_000_000_008
        assert [x.cost_micros for x in prices.usage_by(db=db, actor=ana, by="key")] == [3_000_000_000_008]
    finally:
        db.dispose()


# ------------------------------------------------------------------------------------------------ the gateway


@pytest.fixture
def chat(db: Database, stub_model: str, controller: Controller) -> str:
    deploy(db, "chat", stub_model, add_fake_image(db, "scripted_runtime.py"), group="lab")
    wait_until(lambda: status_of(db, "chat", "Ready"), timeout=30, what="chat to be ready")
    return "chat"


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"budgets_refresh_s": 0.2})


@pytest.fixture
def gateway(fast: Settings, db: Database) -> Iterator[GatewayServer]:
    with GatewayServer(fast, db) as server:
        yield server


def metric(url: str, name: str, labels: str) -> Decimal:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return Decimal(line.split()[-1])
    return Decimal(0)


@pytest.mark.runtime
def test_costs_are_metered_at_the_price_in_force_and_statements_match_the_rows_to_the_cent(
    db: Database, chat: str, gateway: GatewayServer
) -> None:
    ana = member(db, "ana", "lab")
    bo = member(db, "bo", "lab")
    ana_key = keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="anas")).key
    bo_key = keys.create_key(actor=bo, db=db, data=ApiKeyCreate(name="bos")).key
    first = Price(parse_money("1500"), parse_money("2000.25"))  # 16 500.75 micros a request → 16 501
    second = Price(parse_money("3000"), parse_money("1000"))  # 24 000 micros a request
    for_ana = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ana_key, max_retries=0)
    for_bo = openai.OpenAI(base_url=gateway.url + "/v1", api_key=bo_key, max_retries=0)

    prices.set_price(
        db=db, actor=ADMIN, deployment=chat, input_per_m=first.input_per_m, output_per_m=first.output_per_m
    )
    wait_until(lambda: gateway.app.up.prices.get(chat) == first, what="the gateway to read the price")
    for client, n in ((for_ana, 3), (for_bo, 2)):
        for _ in range(n):
            client.chat.completions.create(model=chat, messages=HI)
    prices.set_price(
        db=db, actor=ADMIN, deployment=chat, input_per_m=second.input_per_m, output_per_m=second.output_per_m
    )
    wait_until(lambda: gateway.app.up.prices.get(chat) == second, what="the gateway to read the new price")
    for _ in range(2):
        stream = for_ana.chat.completions.create(model=chat, messages=HI, stream=True)
        assert list(stream)
    wait_until(lambda: len(usage.usage_records(db=db)) == 7, what="the usage to be written")

    rows = usage.usage_records(db=db)
    assert sorted(r.cost_micros for r in rows) == [16_501] * 5 + [24_000] * 2  # the old rows kept the old price
    for row in rows:
        assert (row.prompt_tokens, row.completion_tokens) == (7, 3)
    month = f"{utcnow():%Y-%m}"
    ana_bill = prices.statement(db=db, actor=ana, scope="user", subject="ana", month=month)
    assert (ana_bill.requests, ana_bill.cost_micros) == (5, 3 * 16_501 + 2 * 24_000)
    exact = (3 * (7 * Decimal("1500") + 3 * Decimal("2000.25")) + 2 * (7 * Decimal(3000) + 3 * Decimal(1000))) / 10**6
    assert round(Decimal(ana_bill.cost_micros) / 10**6, 2) == round(exact, 2) == Decimal("0.10")
    lab_bill = prices.statement(db=db, actor=bo, scope="group", subject="lab", month=month)
    assert lab_bill.cost_micros == sum(r.cost_micros for r in rows) == sum(x.cost_micros for x in lab_bill.lines)
    by_deployment = prices.usage_by(db=db, actor=ADMIN, by="deployment")
    assert [(x.name, x.requests, x.cost_micros) for x in by_deployment] == [(chat, 7, lab_bill.cost_micros)]
    counted = metric(gateway.url, "cove_gateway_cost_total", f'currency="USD",deployment="{chat}"')
    assert abs(counted - Decimal(lab_bill.cost_micros) / 10**6) < Decimal("0.000001")  # a float sum in Prometheus


@pytest.mark.runtime
def test_a_budget_warns_then_stops_and_holds_across_two_gateways(
    db: Database, fast: Settings, chat: str, gateway: GatewayServer
) -> None:
    ana = member(db, "ana", "lab")
    ana_key = keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="anas")).key
    budgets.set_budget(
        db=db, actor=ADMIN, scope=BudgetScope.USER, subject="ana", unit=BudgetUnit.TOKENS, amount=50, warn_at=60
    )
    wait_until(lambda: bool(gateway.app.budgets), what="the gateway to read the budget")
    url = gateway.url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {ana_key}"}
    answers = []
    for _ in range(8):
        answer = httpx.post(url, json={"model": chat, "messages": HI}, headers=headers)
        answers.append(answer)
        if answer.status_code != 200:
            break
    served = [a for a in answers if a.status_code == 200]
    assert len(served) == 5  # 10 tokens each: the sixth finds the 50 spent
    assert [a.headers["x-cove-budget-remaining"] for a in served] == [f"{n} tokens" for n in (50, 40, 30, 20, 10)]
    assert ["x-cove-budget-warning" in a.headers for a in served] == [False, False, False, True, True]  # 60 %: 30 spent
    refused = answers[-1]
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "the monthly budget of user 'ana' is spent: 50 tokens of 50 tokens" in refused.json()["error"]["message"]
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=ana_key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=chat, messages=HI)
        assert caught.value.status_code == 402
    warnings = [e for e in _events(db) if e.reason == "BudgetWarning"]
    assert len(warnings) == 1
    assert "passed 60%" in warnings[0].message

    # another gateway, which served nothing itself, refuses too once it has read the month's spend
    with GatewayServer(fast.model_copy(update={"port": free_port()}), db) as other:
        wait_until(
            lambda: (
                httpx.post(
                    other.url + "/v1/chat/completions", json={"model": chat, "messages": HI}, headers=headers
                ).status_code
                == 402
            ),
            what="the second gateway to refuse the spent budget",
        )
    budgets.set_budget(db=db, actor=ADMIN, scope=BudgetScope.USER, subject="ana", unit=BudgetUnit.TOKENS, amount=500)
    wait_until(
        lambda: httpx.post(url, json={"model": chat, "messages": HI}, headers=headers).status_code == 200,
        what="a raised budget to admit again",
    )


def _events(db: Database) -> list[EventPublic]:
    return events.list_events(db=db, kind="budget", name="user/ana")


@pytest.mark.runtime
def test_a_groups_dedicated_instances_spend_its_money_budget_at_the_gateway(
    db: Database, chat: str, gateway: GatewayServer
) -> None:
    ana = member(db, "ana", "lab")
    ana_key = keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="anas")).key
    budgets.set_budget(
        db=db, actor=ADMIN, scope=BudgetScope.GROUP, subject="lab", unit=BudgetUnit.MONEY, amount=parse_money("10")
    )
    start = month_start(utcnow())

    def ran(seconds: int) -> None:  # the group's dedicated deployment: 9 USD a second, so its cost cannot drift
        with db.session() as session:
            session.add(
                InstanceSpan(
                    deployment="dedicated", owner="ana", group="lab", gpu="H100", replicas=1,
                    hourly=parse_money("32400"), started_at=start, ended_at=start + timedelta(seconds=seconds),
                )
            )  # fmt: skip
            session.commit()

    ran(1)  # 9.00 of 10 USD: past the warning; chat is free, so only instance time spends
    url, headers = gateway.url + "/v1/chat/completions", {"Authorization": f"Bearer {ana_key}"}

    def ask() -> httpx.Response:
        return httpx.post(url, json={"model": chat, "messages": HI}, headers=headers)

    wait_until(
        lambda: ask().headers.get("x-cove-budget-remaining") == "1.00 USD",
        what="the gateway to read the group's instance cost",
    )
    warned = ask()
    assert warned.status_code == 200
    assert (warned.headers["x-cove-budget"], warned.headers["x-cove-budget-warning"]) == ("group:lab", "80%")

    ran(1)  # 18.00: spent
    wait_until(lambda: ask().status_code == 402, what="the gateway to refuse the spent budget")
    refused = ask()
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "the monthly budget of group 'lab' is spent: 18.00 USD of 10.00 USD" in refused.json()["error"]["message"]
