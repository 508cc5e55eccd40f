"""Prices, costs and budgets, as pure functions over integer money.

Money is kept in micro-units of the studio's currency (``COVE_CURRENCY``, USD by default): 1 USD = 1 000 000 micros.
Amounts are read from text with ``Decimal`` (``parse_money``) and never pass through a float, so "0.15" is exactly
150 000 micros and sums of costs are exact. A price is per million tokens (input and output apart), so a token costs
``price / 1e6`` micros: a request's cost is rounded half-even to a whole micro once, when it is metered, and stored on
its usage row (``UsageRecord.cost_micros``). Bills are sums of those rows, so a price changed later never rewrites a
bill, and a statement's total is exactly the sum of its lines. The rounding loses at most half a micro per request:
a million requests are off by at most 50 cents in the worst case, and by far less on average (half-even).

A budget is a monthly allowance of tokens or money for a user or a group, with a warning threshold (a percentage)
and a hard stop at 100 %. ``standing`` says where spend stands against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum

MICROS = 1_000_000  # micro-units per unit of currency
PER_TOKENS = 1_000_000  # prices are per million tokens


class MoneyError(ValueError):
    """Text that is no amount of money (negative, not a number, or finer than a micro-unit)."""


def parse_money(text: str | Decimal | int) -> int:
    """``"0.15"`` → 150_000 micros. Refuses negatives, non-numbers and amounts finer than a micro-unit."""
    try:
        value = Decimal(str(text).strip().lstrip("$"))
    except InvalidOperation as exc:
        raise MoneyError(f"{text!r} is not an amount of money (e.g. 0.15)") from exc
    if not value.is_finite() or value < 0:
        raise MoneyError(f"{text!r} is not an amount of money: give a number of at least 0")
    micros = value * MICROS
    if micros != micros.to_integral_value():
        raise MoneyError(f"{text!r} is finer than a millionth of the currency")
    return int(micros)


def money(micros: int) -> Decimal:
    """Micros as a Decimal amount of currency, exact (150_000 → Decimal('0.150000'))."""
    return Decimal(micros).scaleb(-6)


def plain(micros: int) -> str:
    """Micros as the shortest exact decimal text: 150_000 → "0.15", 10_000_000 → "10" (never an exponent)."""
    return f"{money(micros).normalize():f}"


def show_money(micros: int, currency: str = "USD", *, places: int = 2) -> str:
    """``1_234_567`` → ``"1.23 USD"``; ``places`` digits, rounded half-up as bills are (4.505 → 4.51)."""
    shown = money(micros).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{shown} {currency}"


@dataclass(frozen=True)
class Price:
    """What a deployment's use costs: per million input (prompt) and output (completion) tokens, and per replica-hour
    of a dedicated deployment; in micros."""

    input_per_m: int = 0
    output_per_m: int = 0
    hourly: int = 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """A request's cost in micros, rounded half-even once. Integer arithmetic: the gateway calls this for every
        request it meters."""
        whole, rest = divmod(prompt_tokens * self.input_per_m + completion_tokens * self.output_per_m, PER_TOKENS)
        if rest * 2 > PER_TOKENS or (rest * 2 == PER_TOKENS and whole % 2 == 1):
            whole += 1
        return whole

    def instance_cost(self, replica_seconds: float) -> int:
        """The cost of ``replica_seconds`` of dedicated replicas, in micros."""
        exact = Decimal(self.hourly) * Decimal(str(replica_seconds)) / 3600
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


FREE = Price()


# ------------------------------------------------------------------------------------------------ budgets


class BudgetScope(StrEnum):
    USER = "user"
    GROUP = "group"


class BudgetUnit(StrEnum):
    TOKENS = "tokens"
    MONEY = "money"  # micros


class Standing(StrEnum):
    OK = "ok"
    WARN = "warn"  # at or past the warning threshold
    STOP = "stop"  # spent: requests are refused until the month ends or the budget is raised


@dataclass(frozen=True)
class Budget:
    """A monthly allowance: ``amount`` tokens or micros for ``scope`` ``subject``; warns at ``warn_at`` percent."""

    scope: BudgetScope
    subject: str
    unit: BudgetUnit
    amount: int
    warn_at: int = 80

    def describe(self) -> str:
        return f"the monthly budget of {self.scope.value} {self.subject!r}"

    def show(self, value: int, currency: str = "USD") -> str:
        return f"{value} tokens" if self.unit is BudgetUnit.TOKENS else show_money(value, currency)


@dataclass(frozen=True)
class Spend:
    """What a user or group used this month: tokens (billed ones) and cost in micros."""

    tokens: int = 0
    cost: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, self.cost + other.cost)

    def of(self, unit: BudgetUnit) -> int:
        return self.tokens if unit is BudgetUnit.TOKENS else self.cost


@dataclass(frozen=True)
class Position:
    budget: Budget
    spent: int
    standing: Standing

    @property
    def remaining(self) -> int:
        return max(0, self.budget.amount - self.spent)


def standing(budget: Budget, spend: Spend) -> Position:
    """Where ``spend`` stands against ``budget``: stop at or past its amount, warn at or past ``warn_at`` percent."""
    spent = spend.of(budget.unit)
    if spent >= budget.amount:
        return Position(budget, spent, Standing.STOP)
    if spent * 100 >= budget.amount * budget.warn_at:
        return Position(budget, spent, Standing.WARN)
    return Position(budget, spent, Standing.OK)


def positions(
    budgets: Mapping[tuple[BudgetScope, str], Budget],
    spend: Mapping[tuple[BudgetScope, str], Spend],
    *,
    user: str,
    groups: Iterable[str],
) -> list[Position]:
    """The standings of the budgets a user's request counts against (the user's, then each group's), the tightest
    (stopped, then warned, then least remaining as a share) first."""
    wanted = [(BudgetScope.USER, user)] + [(BudgetScope.GROUP, g) for g in sorted(groups)]
    found = [standing(b, spend.get(k, Spend())) for k in wanted if (b := budgets.get(k)) is not None]
    order = {Standing.STOP: 0, Standing.WARN: 1, Standing.OK: 2}
    return sorted(found, key=lambda p: (order[p.standing], p.remaining / max(1, p.budget.amount)))


def month_start(when: datetime) -> datetime:
    """The first instant of ``when``'s month (budgets and statements run per calendar month, UTC)."""
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def parse_month(text: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → (its first instant, the next month's), in UTC."""
    try:
        start = datetime.strptime(text.strip(), "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise MoneyError(f"{text!r} is not a month: give YYYY-MM") from exc
    return start, next_month(start)
