"""Monthly budgets per user and group: set, listed with this month's spend, deleted; and the spend the gateways
refresh to enforce them.

An admin sets budgets. Spend is what the current calendar month (UTC) holds, as the month's statement counts it:
billed tokens and their stored cost, for a user's keys and for a group's members' keys; and the cost of the
instance time billed to the user or group (``services.uptime``: dedicated deployments shared with the group, or the
user's own shared with none), its open spans counted up to now. Instance time adds money, never tokens.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, func, select

from studio import access
from studio.db import Database, utcnow
from studio.errors import InvalidSpec, NotFound
from studio.models import ApiKey, Budget, BudgetPublic, UsageRecord, User
from studio.prices import Budget as BudgetRule
from studio.prices import BudgetScope, BudgetUnit, Spend, month_start, standing
from studio.services import uptime
from studio.services.usage import CANCELLED
from studio.values import Principal

SpendBook = dict[tuple[BudgetScope, str], Spend]


def set_budget(
    *,
    db: Database,
    actor: Principal,
    scope: BudgetScope,
    subject: str,
    unit: BudgetUnit,
    amount: int,
    warn_at: int = 80,
    currency: str = "USD",
) -> BudgetPublic:
    """Create or replace ``scope`` ``subject``'s budget: ``amount`` tokens or micros a month, warning at ``warn_at``
    percent. The gateways enforce it from their next refresh."""
    access.check_admin(actor, doing="set budgets")
    if amount < 1 or not 1 <= warn_at <= 100:
        raise InvalidSpec("a budget needs an amount of at least 1 and a warning at 1-100 %", hint="e.g. --warn-at 80%")
    with db.session() as session:
        if scope is BudgetScope.USER and session.exec(select(User.id).where(User.name == subject)).first() is None:
            raise NotFound(f"no user named {subject!r}", hint="see `cove user list`")
        row = session.exec(select(Budget).where(Budget.scope == scope, Budget.subject == subject)).first()
        if row is None:
            row = Budget(scope=scope, subject=subject, unit=unit, amount=amount, warn_at=warn_at, set_by=actor.name)
        else:
            row.unit, row.amount, row.warn_at = unit, amount, warn_at
            row.set_by, row.updated_at = actor.name, utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
    return _with_spend(db, [row], currency)[0]


def list_budgets(*, db: Database, actor: Principal, currency: str = "USD") -> list[BudgetPublic]:
    """With this month's spend. An admin sees every budget; a member their own and their groups'."""
    with db.session() as session:
        rows = list(session.exec(select(Budget).order_by(col(Budget.scope), col(Budget.subject))))
    if not actor.is_admin:
        rows = [
            r
            for r in rows
            if (r.scope is BudgetScope.USER and r.subject == actor.name)
            or (r.scope is BudgetScope.GROUP and r.subject in actor.groups)
        ]
    return _with_spend(db, rows, currency)


def delete_budget(*, db: Database, actor: Principal, scope: BudgetScope, subject: str) -> None:
    access.check_admin(actor, doing="delete budgets")
    with db.session() as session:
        row = session.exec(select(Budget).where(Budget.scope == scope, Budget.subject == subject)).first()
        if row is None:
            raise NotFound(f"no budget on {scope.value} {subject!r}", hint="see `cove budget list`")
        session.delete(row)
        session.commit()


def _with_spend(db: Database, rows: list[Budget], currency: str) -> list[BudgetPublic]:
    spend = month_spend(db=db)
    shown = []
    for row in rows:
        position = standing(rule_of(row), spend.get((row.scope, row.subject), Spend()))
        update = {"spent": position.spent, "standing": position.standing.value, "currency": currency}
        shown.append(BudgetPublic.model_validate(row, update=update))
    return shown


def rule_of(row: Budget) -> BudgetRule:
    return BudgetRule(row.scope, row.subject, row.unit, row.amount, row.warn_at)


def rules(*, db: Database) -> dict[tuple[BudgetScope, str], BudgetRule]:
    """Every budget, as the gateway enforces them."""
    with db.session() as session:
        return {(r.scope, r.subject): rule_of(r) for r in session.exec(select(Budget))}


def month_spend(*, db: Database, now: datetime | None = None) -> SpendBook:
    """This month's billed tokens and cost per user and per group (a group's: its members' now), and the cost of the
    instance time each is billed for up to ``now``: a budget's spend is its subject's statement total so far."""
    now = now or utcnow()
    start = month_start(now)
    status = col(UsageRecord.status_code)
    query = (
        sa.select(
            col(ApiKey.owner),
            func.sum(col(UsageRecord.prompt_tokens) + col(UsageRecord.completion_tokens)),
            func.sum(col(UsageRecord.cost_micros)),
        )
        .select_from(UsageRecord)
        .join(ApiKey, col(UsageRecord.api_key_id) == ApiKey.id)
        .where(col(UsageRecord.created_at) >= start, sa.or_(status < 400, status == CANCELLED))
        .group_by(col(ApiKey.owner))
    )
    book: SpendBook = defaultdict(Spend)
    with db.session() as session:
        groups = {name: list(gs or []) for name, gs in session.execute(sa.select(col(User.name), col(User.groups)))}
        for owner, tokens, cost in session.execute(query):
            spent = Spend(int(tokens or 0), int(cost or 0))
            book[(BudgetScope.USER, owner)] += spent
            for group in groups.get(owner, []):
                book[(BudgetScope.GROUP, group)] += spent
    for run in uptime.runs(db=db, since=start, until=None, now=now):
        # the payer alone, as on statements: a group's deployment is not its members' cost, nor a user's their groups'
        book[(BudgetScope(run.payer_scope), run.payer)] += Spend(0, run.cost)
    return dict(book)
