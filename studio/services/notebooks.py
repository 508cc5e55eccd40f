"""Notebook servers' claims on pools: taken when the hub starts a server, released when it stops.

The hub's spawner calls these, so a notebook and a deployment are admitted by the same pure function against the
same pool, under the same lock: neither can take capacity the other holds.
"""

from __future__ import annotations

from sqlmodel import col, select

from studio.db import Database
from studio.errors import QuotaExceeded
from studio.models import Notebook, NotebookPublic, Pool
from studio.pools import Claim, admit
from studio.services.pools import NOTEBOOK_OWNER, claims_in, find_pool, lock_pool
from studio.values import Principal, Resources


def notebook_name(user: str, server: str = "") -> str:
    return f"{user}/{server}" if server else user


def claim_notebook(
    *, db: Database, user: str, server: str = "", pool: str, profile: str, resources: Resources, retry_hint: str = ""
) -> NotebookPublic:
    """Admit and record a notebook server's resources (replacing an earlier claim of the same server).

    Raises QuotaExceeded, saying what is free and who holds the rest (``retry_hint`` is added to the hint: e.g.
    when idle servers are reclaimed), and NotFound for an unknown pool.
    """
    name = notebook_name(user, server)
    with db.session() as session:
        row = find_pool(session, name=pool)
        lock_pool(session, row)
        old = session.exec(select(Notebook).where(Notebook.name == name)).first()
        if old is not None:
            session.delete(old)
            session.flush()
        verdict = admit(row, claims_in(session, pool_id=row.id or 0), Claim(NOTEBOOK_OWNER + name, resources))
        if not verdict.fits:
            hint = f"free in pool {pool!r}: {verdict.free.describe()}" + (f"; {retry_hint}" if retry_hint else "")
            raise QuotaExceeded(f"no room for this notebook: {verdict.reason}", hint=hint)
        assert row.id is not None
        notebook = Notebook(name=name, user=user, profile=profile, pool_id=row.id, resources=resources)
        session.add(notebook)
        session.commit()
        return _public(notebook, row)


def release_notebook(*, db: Database, user: str, server: str = "") -> None:
    """Forget a stopped server's claim (nothing happens if there is none)."""
    with db.session() as session:
        row = session.exec(select(Notebook).where(Notebook.name == notebook_name(user, server))).first()
        if row is not None:
            session.delete(row)
            session.commit()


def list_notebooks(*, db: Database, actor: Principal) -> list[NotebookPublic]:
    """Admins see every notebook server; a member their own."""
    with db.session() as session:
        query = select(Notebook, Pool).join(Pool, col(Notebook.pool_id) == Pool.id)
        if not actor.is_admin:
            query = query.where(Notebook.user == actor.name)
        rows = session.exec(query.order_by(col(Notebook.name))).all()
        return [_public(n, p) for n, p in rows]


def _public(n: Notebook, pool: Pool) -> NotebookPublic:
    return NotebookPublic.model_validate(n, update={"pool": pool.name})
