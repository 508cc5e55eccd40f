"""Instance time billed by the hour: the real controller (its backend the instant fake, its wall clock injected so
hours pass at once) records each deployment's replicas into a real database; statements, `cove usage --by` and
`cove statement` price them at the hourly price of the pool's GPU type in force while they ran, to the cent."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import select

from studio.backends.base import ReplicaStatus, WorkloadSpec, WorkloadStatus
from studio.controller import Controller
from studio.db import Database, current_revision, make_engine, migrate, utcnow
from studio.models import ApiKey, ApiKeyCreate, InstanceSpan, Pool
from studio.prices import Budget, BudgetScope, BudgetUnit, Spend, Standing, month_start, parse_money, standing
from studio.services import budgets, deployments, keys, prices, usage
from studio.settings import Settings
from tests.fakes.backends import InstantBackend
from tests.integration.conftest import deploy
from tests.integration.test_cli import run
from tests.integration.test_db import migrate_down
from tests.people import ADMIN, member


def test_instance_hours_are_billed_at_the_hourly_price_of_the_gpu_type_to_the_cent(
    db: Database, settings: Settings, stub_model: str
) -> None:
    ana = member(db, "ana", "lab")
    with db.session() as session:
        pool = session.exec(select(Pool).where(Pool.name == "local")).one()
        pool.gpu_model = "H100"
        session.add(pool)
        session.commit()
    deploy(db, "solo", stub_model, replicas=2)  # the admin's, shared with no group: billed to the admin
    deploy(db, "shared", stub_model, group="lab", actor=ana)  # shared with lab: billed to the group
    prices.set_price(
        db=db, actor=ADMIN, deployment="solo", hourly=parse_money("1.20"), hourly_gpu={"H100": parse_money("2.50")}
    )
    prices.set_price(db=db, actor=ADMIN, deployment="shared", hourly=parse_money("0.90"))  # on any GPU type
    start = (month_start(utcnow()) - timedelta(days=20)).replace(day=10)  # a whole past month's middle
    now = [start]
    backend = InstantBackend()

    def at(hours: float) -> Controller:
        now[0] = start + timedelta(hours=hours)
        return Controller(db=db, backend=backend, settings=settings, wall=lambda: now[0])

    controller = at(0)
    controller.reconcile()  # solo: 2 replicas, shared: 1
    now[0] = start + timedelta(hours=1)
    deployments.scale_deployment(db=db, actor=ADMIN, name="solo", replicas=3)
    controller.reconcile()  # solo: 3 from 1 h
    now[0] = start + timedelta(hours=1.5)
    prices.set_price(db=db, actor=ADMIN, deployment="solo", hourly_gpu={"H100": parse_money("3")})
    restarted = at(1.5)  # a new controller (the server restarted) carries on the open spans
    restarted.reconcile()  # solo's price changed: 3 replicas at 3.00 from 1.5 h
    restarted.reconcile()
    now[0] = start + timedelta(hours=2)
    deployments.delete_deployment(db=db, actor=ADMIN, name="solo")
    restarted.reconcile()  # asked to stop at 2 h: billed no longer
    now[0] = start + timedelta(hours=3)
    deployments.delete_deployment(db=db, actor=ana, name="shared")
    restarted.reconcile()

    with db.session() as session:
        spans = session.exec(select(InstanceSpan).order_by(InstanceSpan.id)).all()  # type: ignore[arg-type]
        assert [(s.deployment, s.replicas, s.hourly) for s in spans] == [
            ("shared", 1, 900_000),
            ("solo", 2, 2_500_000),
            ("solo", 3, 2_500_000),
            ("solo", 3, 3_000_000),
        ]
        assert all(s.ended_at is not None for s in spans)

    month = f"{start:%Y-%m}"
    mine = prices.statement(db=db, actor=ADMIN, scope="user", subject="admin", month=month)
    # 2 replicas × 1 h + 3 × 0.5 h at 2.50, then 3 × 0.5 h at 3.00
    assert [(x.deployment, x.gpu, x.replica_hours, x.cost_micros) for x in mine.instances] == [
        ("solo", "H100", 3.5, 8_750_000),
        ("solo", "H100", 1.5, 4_500_000),
    ]
    assert mine.cost_micros == 13_250_000
    lab = prices.statement(db=db, actor=ana, scope="group", subject="lab", month=month)
    assert [(x.deployment, x.replica_hours, x.cost_micros) for x in lab.instances] == [("shared", 3.0, 2_700_000)]
    assert lab.cost_micros == 2_700_000

    since, until = f"{start:%Y-%m-%d}", f"{start + timedelta(days=1):%Y-%m-%d}"
    by_deployment = json.loads(
        run(settings, "usage", "--by", "deployment", "--since", since, "--until", until, "--json").output
    )
    assert [(x["name"], Decimal(x["cost_micros"]) / 10**6, x["instance_seconds"]) for x in by_deployment] == [
        ("shared", Decimal("2.7"), 3 * 3600),
        ("solo", Decimal("13.25"), 5 * 3600),
    ]
    hers = json.loads(run(settings, "--as", "ana", "usage", "--by", "group", "--since", since, "--json").output)
    assert [(x["name"], x["cost_micros"]) for x in hers] == [("lab", 2_700_000)]
    shown = run(settings, "statement", "--user", "admin", "--month", month)
    assert shown.exit_code == 0, shown.output
    assert "INSTANCE HOURS" in shown.output
    assert "13.25 USD" in shown.output


def test_price_set_takes_hourly_prices_per_gpu_type(db: Database, settings: Settings, stub_model: str) -> None:
    deploy(db, "chat", stub_model)
    done = run(settings, "price", "set", "chat", "--hourly", "1", "--hourly-gpu", "H100=2.5", "--hourly-gpu", "L4=0.4")
    assert done.exit_code == 0, done.output
    assert "2.500000 USD on H100" in done.output
    run(settings, "price", "set", "chat", "--hourly-gpu", "L4=0")  # 0 removes a type's price
    assert prices.list_prices(db=db)[0].hourly_gpu == {"H100": 2_500_000}
    assert "H100=2.5" in run(settings, "price", "list").output
    bad = run(settings, "price", "set", "chat", "--hourly-gpu", "H100")
    assert bad.exit_code == 2
    assert "give TYPE=AMOUNT" in bad.output


def test_migration_0019_downgrades_and_upgrades_keeping_prices(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prices (deployment, input_per_m, output_per_m, hourly, hourly_gpu, set_by, updated_at)"
                " VALUES ('chat', 1, 2, 3, '{\"H100\": 4}', 'admin', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO instance_spans (deployment, owner, gpu, replicas, hourly, started_at)"
                " VALUES ('chat', 'admin', 'H100', 1, 4, '2026-01-01 00:00:00')"
            )
        )
    migrate_down(engine, "0018")
    assert current_revision(engine) == "0018"
    tables = sa.inspect(engine).get_table_names()
    assert "instance_spans" not in tables
    assert "hourly_gpu" not in {c["name"] for c in sa.inspect(engine).get_columns("prices")}
    assert "max_tokens_cap" not in {c["name"] for c in sa.inspect(engine).get_columns("deployments")}
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT hourly FROM prices WHERE deployment = 'chat'")).scalar_one() == 3
        assert conn.execute(sa.text("SELECT count(*) FROM instance_spans")).scalar_one() == 0
    engine.dispose()


class NodelessBackend(InstantBackend):
    """A cluster with no node free: every replica waits, pending, and holds no GPU."""

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        self.specs[spec.name] = spec
        waiting = tuple(ReplicaStatus(i, "pending", message="waiting for a node") for i in range(spec.replicas))
        return WorkloadStatus(spec.name, waiting)


def test_a_replica_waiting_for_a_node_is_not_billed(db: Database, settings: Settings, stub_model: str) -> None:
    deploy(db, "queued", stub_model, replicas=2)
    Controller(db=db, backend=NodelessBackend(), settings=settings).reconcile()
    with db.session() as session:
        assert session.exec(select(InstanceSpan)).all() == []
    Controller(db=db, backend=InstantBackend(), settings=settings).reconcile()  # scheduled: billed from now
    with db.session() as session:
        assert [(s.deployment, s.replicas, s.ended_at) for s in session.exec(select(InstanceSpan))] == [
            ("queued", 2, None)
        ]


def _used(db: Database, key: str, cost: int, at: datetime) -> None:
    """One billed request of 10 tokens on ``key`` at ``at``, as the gateway writes it."""
    with db.session() as session:
        key_id = session.exec(select(ApiKey.id).where(ApiKey.name == key)).one()
    usage.record_usage(
        db=db,
        records=[
            {"api_key_id": key_id, "deployment": "shared", "endpoint": "chat.completions", "stream": False,
             "status_code": 200, "prompt_tokens": 7, "completion_tokens": 3, "estimated": False, "latency_ms": 1.0,
             "ttft_ms": None, "created_at": at, "model_version": None, "cost_micros": cost}
        ],
    )  # fmt: skip


def test_a_money_budget_counts_the_instance_time_its_subject_is_billed_for_to_the_cent(db: Database) -> None:
    ana = member(db, "ana", "lab")
    bo = member(db, "bo", "lab")
    for who, name in ((ana, "anas"), (bo, "bos")):
        keys.create_key(actor=who, db=db, data=ApiKeyCreate(name=name))
    day = (month_start(utcnow()) - timedelta(days=20)).replace(day=10)  # last month: the spend as of its 20th
    now = day.replace(day=20)
    _used(db, "anas", 1_234_567, day)
    _used(db, "bos", 5, day)
    spans = [  # (deployment, owner, group, replicas, hourly micros, from, seconds)
        ("shared", "ana", "lab", 2, 2_500_000, day, 5400),  # the group's: 7.50
        ("solo", "ana", None, 1, 1_200_000, day, 1200),  # ana's own, shared with no group: 0.40
        ("shared", "ana", "lab", 3, 333_333, day + timedelta(hours=2), 1000),  # 277 777.5 → 277 778 (half-even)
    ]
    with db.session() as session:
        for deployment, owner, group, replicas, hourly, start, seconds in spans:
            session.add(
                InstanceSpan(
                    deployment=deployment, owner=owner, group=group, gpu="H100", replicas=replicas, hourly=hourly,
                    started_at=start, ended_at=start + timedelta(seconds=seconds),
                )
            )  # fmt: skip
        session.commit()

    spend = budgets.month_spend(db=db, now=now)
    # the payer's alone, as statements bill it: the group's deployment is not its members' spend
    assert spend[(BudgetScope.USER, "ana")] == Spend(10, 1_234_567 + 400_000)
    assert spend[(BudgetScope.USER, "bo")] == Spend(10, 5)
    assert spend[(BudgetScope.GROUP, "lab")] == Spend(20, 1_234_567 + 5 + 7_500_000 + 277_778)  # tokens: requests only
    month = f"{day:%Y-%m}"
    for scope, subject in ((BudgetScope.USER, "ana"), (BudgetScope.GROUP, "lab")):
        bill = prices.statement(db=db, actor=ADMIN, scope=scope.value, subject=subject, month=month)
        assert spend[(scope, subject)].cost == bill.cost_micros  # a budget spends what the statement bills
    lab = Budget(BudgetScope.GROUP, "lab", BudgetUnit.MONEY, parse_money("10"), warn_at=80)
    assert standing(lab, spend[(BudgetScope.GROUP, "lab")]).standing is Standing.WARN  # 9.01 of 10
    lab_tokens = Budget(BudgetScope.GROUP, "lab", BudgetUnit.TOKENS, 100)
    assert standing(lab_tokens, spend[(BudgetScope.GROUP, "lab")]).spent == 20  # instance time costs no tokens

    with db.session() as session:  # still running: counted up to now
        session.add(
            InstanceSpan(
                deployment="shared", owner="ana", group="lab", gpu="H100", replicas=1, hourly=1_000_000,
                started_at=now - timedelta(hours=1.5),
            )
        )  # fmt: skip
        session.commit()
    later = budgets.month_spend(db=db, now=now)
    assert later[(BudgetScope.GROUP, "lab")].cost == 9_012_350 + 1_500_000
    assert standing(lab, later[(BudgetScope.GROUP, "lab")]).standing is Standing.STOP
