"""Rate limits as desired state: set, listed and deleted here; the gateway reads them with its routes.

An admin limits users and groups; a key's owner limits that key, and whoever may change a deployment (its owner, its
group's members, an admin) limits that deployment. Setting a limit that
exists changes only the fields given. The gateway enforces a change within its refresh interval (1 s by default).
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from studio import access
from studio.db import Database, utcnow
from studio.errors import InvalidSpec, NotFound
from studio.limits import LimitScope, Rule
from studio.models import ApiKey, Deployment, Limit, LimitPublic, LimitSet, User
from studio.values import Principal

FIELDS = ("rpm", "tpm", "concurrency")


def _check_may_set(session: Session, actor: Principal, scope: LimitScope, subject: str) -> None:
    if scope is LimitScope.KEY:
        key = session.exec(select(ApiKey).where(ApiKey.name == subject)).first()
        if key is None:
            raise NotFound(f"no API key named {subject!r}", hint="see `cove key list`")
        access.check_owner(actor, kind="API key", name=subject, owner=key.owner, group=None)
        return
    if scope is LimitScope.DEPLOYMENT:
        found = session.exec(select(Deployment).where(Deployment.name == subject)).first()
        if found is None:
            raise NotFound(f"no deployment named {subject!r}", hint="see `cove deploy list`")
        access.check_owner(actor, kind="deployment", name=subject, owner=found.owner, group=found.group)
        return
    access.check_admin(actor, doing=f"limit a {scope.value}")
    if scope is LimitScope.USER and session.exec(select(User.id).where(User.name == subject)).first() is None:
        raise NotFound(f"no user named {subject!r}", hint="see `cove user list`")


def set_limit(*, db: Database, actor: Principal, data: LimitSet) -> LimitPublic:
    """Create the limit on ``data.scope``/``data.subject``, or change the fields given of the one there."""
    given = data.model_dump(include=set(FIELDS), exclude_unset=True)
    with db.session() as session:
        _check_may_set(session, actor, data.scope, data.subject)
        row = session.exec(select(Limit).where(Limit.scope == data.scope, Limit.subject == data.subject)).first()
        if row is None:
            if not any(v is not None for v in given.values()):
                raise InvalidSpec(
                    f"a limit on {data.scope.value} {data.subject!r} needs requests, tokens or concurrency",
                    hint="give --rpm, --tpm or --concurrency",
                )
            row = Limit(scope=data.scope, subject=data.subject, set_by=actor.name, **given)
        else:
            for name, value in given.items():
                setattr(row, name, value)
            row.set_by, row.updated_at = actor.name, utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return LimitPublic.model_validate(row)


def list_limits(*, db: Database, actor: Principal) -> list[LimitPublic]:
    """An admin sees every limit; a member those on their keys, on themselves, on their groups, and on deployments."""
    with db.session() as session:
        rows = list(session.exec(select(Limit).order_by(col(Limit.scope), col(Limit.subject))))
        if actor.is_admin:
            return [LimitPublic.model_validate(r) for r in rows]
        mine = set(session.exec(select(ApiKey.name).where(ApiKey.owner == actor.name)))
    visible = {
        LimitScope.KEY: mine,
        LimitScope.USER: {actor.name},
        LimitScope.GROUP: set(actor.groups),
    }
    return [
        LimitPublic.model_validate(r)
        for r in rows
        if r.scope is LimitScope.DEPLOYMENT or r.subject in visible.get(r.scope, set())
    ]


def delete_limit(*, db: Database, actor: Principal, scope: LimitScope, subject: str) -> LimitPublic:
    with db.session() as session:
        row = session.exec(select(Limit).where(Limit.scope == scope, Limit.subject == subject)).first()
        if row is None:
            raise NotFound(f"no limit on {scope.value} {subject!r}", hint="see `cove limit list`")
        _check_may_set(session, actor, scope, subject)
        gone = LimitPublic.model_validate(row)
        session.delete(row)
        session.commit()
        return gone


def rules(*, db: Database) -> list[Rule]:
    """Every limit, as the gateway enforces them."""
    with db.session() as session:
        return [Rule(r.scope, r.subject, r.rpm, r.tpm, r.concurrency) for r in session.exec(select(Limit)).all()]
