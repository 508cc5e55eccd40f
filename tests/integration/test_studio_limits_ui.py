"""Limits, caps and prices on the studio's API keys and Deployments pages, run headless with AppTest against a real
database (as the admin, as the studio runs with login off): what a user sees, and that the rows the gateway reads
land; and who may change them (a member, through the facade, as the pages call it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Button

from studio.db import Database, utcnow
from studio.errors import Forbidden
from studio.limits import LimitScope, Rule
from studio.logs import LogReader
from studio.models import InstanceSpan
from studio.prices import month_start
from studio.services import deployments, limits, prices
from studio.settings import Settings
from studio.ui import facade
from tests.integration.conftest import deploy, page, settle, table, texts
from tests.people import ADMIN, member


def button(at: AppTest, label: str) -> Button:
    return next(b for b in at.button if b.label == label)


def test_a_key_is_created_with_rate_limits_listed_and_unlimited(ui: AppTest, db: Database) -> None:
    at = page(ui, "keys")
    assert "None of your keys is limited" in texts(at.caption)
    at.text_input(key="key-name").input("app")
    at.number_input(key="key-rpm").set_value(5)
    at.number_input(key="key-tpm").set_value(500)
    button(at, "Create key").click().run()
    assert not at.error, texts(at.error)
    assert "Key **app** created" in texts(at.success)
    assert limits.rules(db=db) == [Rule(LimitScope.KEY, "app", rpm=5, tpm=500)]  # what the gateway reads
    (rows,) = [t for t in (table(at, i) for i in range(len(at.dataframe))) if t and "requests/min" in t[0]]
    assert [(x["key"], x["requests/min"], x["tokens/min"], x["at once"]) for x in rows] == [("app", "5", "500", "-")]

    settle(at.button(key="unlimit").click().run())
    assert limits.rules(db=db) == []
    assert "Limits of app removed" in texts(at.success)
    assert "None of your keys is limited" in texts(at.caption)


def test_a_deployments_limits_caps_and_price_are_shown_and_changed(
    ui: AppTest, db: Database, settings: Settings, stub_model: str
) -> None:
    deploy(db, "chat", stub_model)
    at = page(ui, "deployments")
    shown = texts(at.markdown)
    assert f"max_tokens ≤ {settings.limits_max_tokens}, n ≤ {settings.limits_max_n} (the studio's defaults)" in shown
    assert "No rate limit on this deployment." in texts(at.caption)
    assert "Free: no price set." in texts(at.caption)

    at.number_input(key="dep-rpm-chat").set_value(60)
    at.number_input(key="dep-tpm-chat").set_value(9000)
    at.number_input(key="dep-max-tokens-chat").set_value(1000)
    at.number_input(key="dep-n-chat").set_value(2)
    settle(button(at, "Save limits").click().run())
    assert not at.error, texts(at.error)
    assert limits.rules(db=db) == [Rule(LimitScope.DEPLOYMENT, "chat", rpm=60, tpm=9000)]
    dep = deployments.get_deployment(db=db, actor=ADMIN, name="chat")
    assert (dep.max_tokens_cap, dep.n_cap) == (1000, 2)
    shown = texts(at.markdown)
    assert "max_tokens ≤ 1000, n ≤ 2" in shown
    assert "**Rate limit**: 60 requests/min, 9000 tokens/min, - at once" in shown

    at.text_input(key="price-in-chat").input("0.15")
    at.text_input(key="price-out-chat").input("0.60")
    at.text_input(key="price-hourly-chat").input("2.40")
    settle(button(at, "Save price").click().run())
    assert not at.error, texts(at.error)
    (price,) = prices.list_prices(db=db)
    assert (price.input_per_m, price.output_per_m, price.hourly) == (150_000, 600_000, 2_400_000)
    assert "0.150000 USD per million input tokens, 0.600000 USD per million output tokens" in texts(at.markdown)

    at.text_input(key="price-in-chat").input("0.1234567")  # finer than a micro-unit: refused, nothing written
    button(at, "Save price").click().run()
    assert "finer than a millionth" in texts(at.error)
    assert prices.list_prices(db=db)[0].input_per_m == 150_000

    at.number_input(key="dep-rpm-chat").set_value(0)  # all zero: the limit removed, caps back to the defaults
    at.number_input(key="dep-tpm-chat").set_value(0)
    at.number_input(key="dep-max-tokens-chat").set_value(0)
    at.number_input(key="dep-n-chat").set_value(0)
    settle(button(at, "Save limits").click().run())
    assert limits.rules(db=db) == []
    assert "(the studio's defaults)" in texts(at.markdown)


def test_whoever_may_change_a_deployment_limits_it_and_only_an_admin_prices_it(
    settings: Settings, db: Database, stub_model: str
) -> None:
    ana = member(db, "ana", "lab")
    bo = member(db, "bo")
    deploy(db, "theirs", stub_model, group="lab", actor=ana)
    shared = facade.Shared(settings, db, LogReader(settings=settings, db=db))
    as_ana, as_bo = facade.Studio(shared, ana), facade.Studio(shared, bo)

    as_ana.set_limit(LimitScope.DEPLOYMENT, "theirs", rpm=10)
    as_ana.set_caps("theirs", max_tokens_cap=256, n_cap=None)
    assert limits.rules(db=db) == [Rule(LimitScope.DEPLOYMENT, "theirs", rpm=10)]
    with pytest.raises(Forbidden, match="deployment 'theirs' is not yours"):
        as_bo.set_limit(LimitScope.DEPLOYMENT, "theirs", rpm=1000)
    with pytest.raises(Forbidden, match="only an admin may set prices"):
        as_ana.set_price("theirs", input_per_m="0", output_per_m="0", hourly="1")


def test_the_statement_shows_instance_hours_at_their_hourly_price(ui: AppTest, db: Database) -> None:
    start = (month_start(utcnow()) - timedelta(days=20)).replace(day=10)
    with db.session() as session:
        session.add(
            InstanceSpan(
                deployment="solo", owner="admin", gpu="H100", replicas=2, hourly=2_500_000, started_at=start,
                ended_at=start + timedelta(hours=1.5),
            )
        )  # fmt: skip
        session.commit()
    at = page(ui, "keys")
    at.text_input(key="statement-month").input(f"{start:%Y-%m}").run()
    assert {m.label: m.value for m in at.metric}["Total"] == "7.50 USD"  # 2 replicas × 1.5 h × 2.50
    (rows,) = [t for t in (table(at, i) for i in range(len(at.dataframe))) if t and "instance hours" in t[0]]
    assert [(x["deployment (dedicated)"], x["GPU"], x["instance hours"], x["cost"]) for x in rows] == [
        ("solo", "H100", 3.0, "7.50 USD")
    ]


def test_an_admin_adds_changes_and_removes_hourly_prices_per_gpu_type(
    ui: AppTest, db: Database, settings: Settings, stub_model: str
) -> None:
    deploy(db, "chat", stub_model)
    at = page(ui, "deployments")

    def price_on(gpu: str, amount: str) -> None:
        at.text_input(key="price-gpu-type-chat").input(gpu)
        at.text_input(key="price-gpu-hourly-chat").input(amount)
        settle(button(at, "Save GPU price").click().run())

    price_on("H100", "2.50")
    assert not at.error, texts(at.error)
    assert "Hourly price of chat on H100 saved" in texts(at.success)
    price_on(" L4 ", "0.40")  # the type as pools name it: spaces dropped
    assert prices.list_prices(db=db)[0].hourly_gpu == {"H100": 2_500_000, "L4": 400_000}  # what the controller reads
    assert "2.500000 USD on H100, 0.400000 USD on L4" in texts(at.markdown)

    price_on("H100", "3")  # changed
    assert prices.list_prices(db=db)[0].hourly_gpu == {"H100": 3_000_000, "L4": 400_000}
    settle(at.button(key="price-gpu-remove-chat-L4").click().run())
    assert prices.list_prices(db=db)[0].hourly_gpu == {"H100": 3_000_000}
    assert "0.400000 USD on L4" not in texts(at.markdown)
    price_on("H100", "0")  # 0 removes, as with `cove price set --hourly-gpu H100=0`
    assert prices.list_prices(db=db)[0].hourly_gpu == {}
    assert "Per replica-hour by GPU type" not in texts(at.markdown)

    for gpu, amount, refusal in (("A100", "-1", "not an amount of money"), ("A100", "0.0000001", "finer than"),
                                 ("  ", "1", "needs the type")):  # fmt: skip
        price_on(gpu, amount)
        assert refusal in texts(at.error)
    assert prices.list_prices(db=db)[0].hourly_gpu == {}  # nothing written
    shared = facade.Shared(settings, db, LogReader(settings=settings, db=db))
    with pytest.raises(Forbidden, match="only an admin may set prices"):
        facade.Studio(shared, member(db, "ana")).set_gpu_price("chat", gpu="H100", hourly="1")
