"""The gateway's side of budgets: each request's owner and groups checked against their monthly budgets in memory,
refused with 402 in OpenAI's shape once one is spent, warned in a header past its threshold.

How it holds across replicas: every ``budgets_refresh_s`` each gateway re-reads this month's spend per user and
group from the usage table (which every replica writes to) and the instance time billed to them (counted up to the
read: ``services.budgets.month_spend``), and between reads adds what it meters itself. So a
replica sees its own spend at once and the others' within ``usage_flush_s + budgets_refresh_s`` (11 s by default):
a budget can be overrun by what the other replicas serve in that time, plus the requests already admitted when it
ran out (each is served whole). Spend is not counted in the rate limits' store because a month of money does not fit
its one-minute windows, and the usage table is already the bill: enforcement and statements cannot disagree for
longer than one refresh.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

from studio.gateway.protocol import error_body
from studio.prices import Budget, BudgetScope, BudgetUnit, Position, Spend, Standing, month_start, positions

Key = tuple[BudgetScope, str]


class BudgetExceeded(Exception):
    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers


class BudgetBook:
    """Budgets and this month's spend as one gateway knows them."""

    def __init__(self, *, currency: str = "USD") -> None:
        self.currency = currency
        self.budgets: dict[Key, Budget] = {}
        self._read: dict[Key, Spend] = {}  # from the usage table at the last refresh
        self._local: dict[Key, Spend] = defaultdict(Spend)  # metered here since that read began
        # metered here before the read under way began: written to the table by it, counted here until it is read
        self._pending: dict[Key, Spend] = {}
        self._month: datetime | None = None
        self.warned: set[tuple[Key, str]] = set()  # (budget, month) warned of already by this gateway

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def replace(self, budgets: Mapping[Key, Budget]) -> None:
        self.budgets = dict(budgets)

    def begin_read(self) -> None:
        """Called as a read of the usage table starts (its batch taken to be written first): what is metered from now
        on is added to that read. What was counted before stays counted until the read arrives (``read``), or goes
        back to this gateway's count if the read fails (``abandon_read``): never a moment when it counts nowhere."""
        for key, spent in self._local.items():
            self._pending[key] = self._pending.get(key, Spend()) + spent
        self._local = defaultdict(Spend)

    def abandon_read(self) -> None:
        """The batch or the read failed: what it would have brought is counted here again."""
        for key, spent in self._pending.items():
            self._local[key] += spent
        self._pending = {}

    def read(self, spend: Mapping[Key, Spend], now: datetime) -> None:
        self._read, self._month, self._pending = dict(spend), month_start(now), {}

    def spend(self, key: Key) -> Spend:
        return self._read.get(key, Spend()) + self._pending.get(key, Spend()) + self._local.get(key, Spend())

    def add(self, user: str, groups: frozenset[str], tokens: int, cost: int) -> None:
        """Count a metered request's billed tokens and cost for its owner and their groups."""
        if not self.budgets:
            return
        spent = Spend(tokens, cost)
        self._local[(BudgetScope.USER, user)] += spent
        for group in groups:
            self._local[(BudgetScope.GROUP, group)] += spent

    def check(
        self, user: str, groups: frozenset[str], now: datetime
    ) -> tuple[list[tuple[bytes, bytes]], Position | None]:
        """The budget headers for a request (the tightest budget's), and the budget newly past its warning (to
        record once); raises BudgetExceeded (402) when one of the owner's or groups' budgets is spent."""
        if not self.budgets:
            return [], None
        if self._month is not None and month_start(now) != self._month:  # a new month: last month's spend is gone
            self._read, self._local, self._pending, self._month = {}, defaultdict(Spend), {}, month_start(now)
        book = {key: self.spend(key) for key in self._keys(user, groups)}
        found = positions(self.budgets, book, user=user, groups=groups)
        if not found:
            return [], None
        tightest = found[0]
        headers = [
            (b"x-cove-budget-remaining", self._amount(tightest.budget, tightest.remaining).encode()),
            (b"x-cove-budget", f"{tightest.budget.scope.value}:{tightest.budget.subject}".encode()),
        ]
        if tightest.standing is Standing.STOP:
            budget = tightest.budget
            message = (
                f"{budget.describe()} is spent: {budget.show(tightest.spent, self.currency)} of "
                f"{budget.show(budget.amount, self.currency)} this month; requests are refused until the month ends "
                "or an admin raises it (`cove budget set`)"
            )
            body = error_body(message, type="insufficient_quota", code="budget_exceeded")
            raise BudgetExceeded(402, body, headers)
        newly = None
        for position in found:
            if position.standing is Standing.WARN:
                headers.append((b"x-cove-budget-warning", f"{position.budget.warn_at}%".encode()))
                mark = ((position.budget.scope, position.budget.subject), f"{now:%Y-%m}")
                if mark not in self.warned:
                    self.warned.add(mark)
                    newly = position
                break
        return headers, newly

    def _keys(self, user: str, groups: frozenset[str]) -> list[Key]:
        return [(BudgetScope.USER, user)] + [(BudgetScope.GROUP, g) for g in groups]

    def _amount(self, budget: Budget, value: int) -> str:
        if budget.unit is BudgetUnit.TOKENS:
            return f"{value} tokens"
        return budget.show(value, self.currency)
