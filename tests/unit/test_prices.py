"""Money, prices, costs and budgets as pure functions, and the gateway's budget book with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from studio.gateway.budgeting import BudgetBook, BudgetExceeded
from studio.prices import (
    Budget,
    BudgetScope,
    BudgetUnit,
    MoneyError,
    Price,
    Spend,
    Standing,
    month_start,
    parse_money,
    parse_month,
    plain,
    positions,
    show_money,
    standing,
)

NOV = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_money_is_read_exactly_and_refused_when_it_is_no_amount() -> None:
    assert parse_money("0.15") == 150_000
    assert parse_money("$2000.25") == 2_000_250_000
    assert parse_money(Decimal("0.000001")) == 1
    assert parse_money("10") == 10_000_000
    for bad in ("-1", "abc", "0.0000001", "NaN", "inf"):
        with pytest.raises(MoneyError):
            parse_money(bad)
    assert plain(10_000_000) == "10"
    assert plain(150_000) == "0.15"
    assert show_money(16_505, "EUR") == "0.02 EUR"
    assert show_money(1_234_567) == "1.23 USD"
    assert show_money(4_505_000) == "4.51 USD"  # bills round half-up


def test_a_request_costs_its_tokens_at_the_price_rounded_once_to_a_micro() -> None:
    price = Price(input_per_m=parse_money("1500"), output_per_m=parse_money("2000.25"))
    # 7 × 1500 / 1e6 + 3 × 2000.25 / 1e6 = 0.01650075 → 16 500.75 micros → 16 501
    assert price.cost(7, 3) == 16_501
    assert Price(input_per_m=1, output_per_m=0).cost(500_000, 0) == 0  # 0.5 micro: half-even rounds to 0
    assert Price(input_per_m=3, output_per_m=0).cost(500_000, 0) == 2  # 1.5 → 2
    assert Price().cost(10**9, 10**9) == 0
    assert Price(hourly=parse_money("2.40")).instance_cost(1800) == 1_200_000


def test_a_budget_warns_past_its_threshold_and_stops_at_its_amount() -> None:
    budget = Budget(BudgetScope.USER, "ana", BudgetUnit.TOKENS, 100, warn_at=80)
    assert standing(budget, Spend(tokens=79)).standing is Standing.OK
    assert standing(budget, Spend(tokens=80)).standing is Standing.WARN
    at = standing(budget, Spend(tokens=100))
    assert (at.standing, at.remaining) == (Standing.STOP, 0)
    money = Budget(BudgetScope.GROUP, "lab", BudgetUnit.MONEY, parse_money("5"), warn_at=50)
    assert standing(money, Spend(tokens=10**9, cost=parse_money("2.49"))).standing is Standing.OK


def test_the_tightest_of_a_users_and_groups_budgets_comes_first() -> None:
    budgets = {
        (BudgetScope.USER, "ana"): Budget(BudgetScope.USER, "ana", BudgetUnit.TOKENS, 1000),
        (BudgetScope.GROUP, "lab"): Budget(BudgetScope.GROUP, "lab", BudgetUnit.TOKENS, 100),
        (BudgetScope.GROUP, "ops"): Budget(BudgetScope.GROUP, "ops", BudgetUnit.TOKENS, 10),
    }
    spend = {(BudgetScope.USER, "ana"): Spend(tokens=90), (BudgetScope.GROUP, "lab"): Spend(tokens=90)}
    found = positions(budgets, spend, user="ana", groups={"lab"})
    assert [(p.budget.subject, p.standing) for p in found] == [("lab", Standing.WARN), ("ana", Standing.OK)]


def test_months_are_calendar_months_in_utc() -> None:
    assert month_start(NOV) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_month("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(MoneyError):
        parse_month("November")


def test_the_gateways_book_warns_once_then_refuses_with_402_naming_the_budget() -> None:
    book = BudgetBook(currency="USD")
    book.replace({(BudgetScope.USER, "ana"): Budget(BudgetScope.USER, "ana", BudgetUnit.MONEY, 100_000, 80)})
    book.read({(BudgetScope.USER, "ana"): Spend(cost=70_000)}, NOV)
    headers, warned = book.check("ana", frozenset(), NOV)
    assert dict(headers)[b"x-cove-budget-remaining"] == b"0.03 USD"
    assert warned is None
    book.add("ana", frozenset({"lab"}), tokens=10, cost=15_000)  # served here since the read: 85 % spent
    headers, warned = book.check("ana", frozenset(), NOV)
    assert dict(headers)[b"x-cove-budget-warning"] == b"80%"
    assert warned is not None
    assert warned.spent == 85_000
    assert book.check("ana", frozenset(), NOV)[1] is None  # warned once
    book.add("ana", frozenset(), tokens=10, cost=15_000)
    with pytest.raises(BudgetExceeded) as refused:
        book.check("ana", frozenset(), NOV)
    assert refused.value.status == 402
    error = orjson.loads(refused.value.body)["error"]
    assert error["code"] == "budget_exceeded"
    assert "the monthly budget of user 'ana' is spent: 0.10 USD of 0.10 USD" in error["message"]
    # a new month starts from nothing
    assert book.check("ana", frozenset(), datetime(2026, 12, 1, tzinfo=UTC))[0][0] == (
        b"x-cove-budget-remaining",
        b"0.10 USD",
    )


def test_a_read_of_the_usage_table_replaces_what_was_counted_here_before_it() -> None:
    book = BudgetBook()
    book.replace({(BudgetScope.GROUP, "lab"): Budget(BudgetScope.GROUP, "lab", BudgetUnit.TOKENS, 100)})
    book.add("ana", frozenset({"lab"}), tokens=40, cost=0)
    book.begin_read()  # the 40 were flushed: the read counts them
    book.add("bo", frozenset({"lab"}), tokens=5, cost=0)  # served while the read ran
    assert book.spend((BudgetScope.GROUP, "lab")) == Spend(tokens=45)  # the 40 still count until the read is in
    book.read({(BudgetScope.GROUP, "lab"): Spend(tokens=40 + 30)}, NOV)  # 30 served by another replica
    assert book.spend((BudgetScope.GROUP, "lab")) == Spend(tokens=75)
    assert dict(book.check("cy", frozenset({"lab"}), NOV)[0])[b"x-cove-budget-remaining"] == b"25 tokens"


def test_a_read_that_fails_leaves_what_was_counted_here_counted() -> None:
    book = BudgetBook()
    book.replace({(BudgetScope.USER, "ana"): Budget(BudgetScope.USER, "ana", BudgetUnit.TOKENS, 100)})
    book.add("ana", frozenset(), tokens=40, cost=0)
    book.begin_read()
    book.abandon_read()  # the batch was not written, or the table not read
    book.add("ana", frozenset(), tokens=5, cost=0)
    assert book.spend((BudgetScope.USER, "ana")) == Spend(tokens=45)
    book.begin_read()
    book.read({(BudgetScope.USER, "ana"): Spend(tokens=45)}, NOV)
    assert book.spend((BudgetScope.USER, "ana")) == Spend(tokens=45)


def test_the_integer_cost_agrees_with_decimal_half_even_rounding() -> None:
    from decimal import ROUND_HALF_EVEN

    for input_per_m, output_per_m in ((1, 3), (150_000, 600_000), (2_000_250_000, 7), (999_999, 1_000_001)):
        price = Price(input_per_m, output_per_m)
        for prompt, completion in ((0, 0), (1, 1), (7, 3), (500_000, 0), (1_500_000, 2_500_000), (123_457, 98_765)):
            exact = Decimal(prompt * input_per_m + completion * output_per_m) / 1_000_000
            assert price.cost(prompt, completion) == int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))
