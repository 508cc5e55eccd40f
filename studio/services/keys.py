"""API keys: a user's, shown once at creation, listed by prefix, revoked; the gateway checks hashes.

A key reaches the deployments its owner may use (their own, their groups'; an admin's, all), narrowed to the
deployments named at creation, until it expires or is revoked. A disabled or removed owner's keys stop working.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio import access
from studio.db import Database, utcnow
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.models import ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, Deployment, User
from studio.services import owned
from studio.services.events import NewEvent, add_events
from studio.values import Principal, Role

KEY_PREFIX = "cove-"
KIND = "key"


@dataclass(frozen=True)
class KeyIdentity:
    """What the gateway knows of a key: whose it is, what it may call, until when."""

    id: int
    name: str
    key_hash: str = ""
    owner: str = ""
    scope: frozenset[str] | None = None  # the deployments named at creation; None: any its owner may use
    reach: frozenset[str] | None = None  # the deployments it may call now; None: every one (an admin's, unscoped)
    expires_at: datetime | None = None
    scopes: frozenset[str] | None = None  # what it may do through the API; None: nothing (a gateway key)
    groups: frozenset[str] = frozenset()  # its owner's groups, whose rate limits it counts against

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def refusal(self, deployment: str) -> str | None:
        """Why this key may not call ``deployment``, or None when it may."""
        if self.reach is None or deployment in self.reach:
            return None
        if self.scope is not None and deployment not in self.scope:
            limited = ", ".join(sorted(self.scope))
            return f"API key {self.name!r} is limited to the deployments {limited}: it may not call {deployment!r}"
        return f"API key {self.name!r} belongs to {self.owner!r}, who may not use deployment {deployment!r}"


def hash_key(secret: str) -> str:
    """Keys are 256 random bits, so a plain SHA-256 is enough (no slow hash needed against guessing)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(*, db: Database, actor: Principal, data: ApiKeyCreate) -> ApiKeyCreated:
    """A new key of ``actor``'s; the deployments it is limited to must be theirs to use."""
    if data.expires_at is not None and data.expires_at.tzinfo is None:
        raise InvalidSpec("the key's expiry has no time zone", hint="give it in UTC, e.g. 2027-01-31T00:00:00Z")
    if data.expires_at is not None and data.expires_at <= utcnow():
        raise InvalidSpec(f"the key would expire at {data.expires_at:%Y-%m-%d %H:%M} UTC, which has passed")
    if data.deployments is not None and not data.deployments:
        raise InvalidSpec("a key limited to deployments names at least one", hint="or leave it unlimited")
    scopes = access.check_scopes_known(data.scopes) if data.scopes is not None else None
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        for name in data.deployments or []:
            row = session.exec(select(Deployment).where(Deployment.name == name)).first()
            if row is None:
                raise NotFound(f"no deployment named {name!r}", hint="see `cove deploy list`")
            owned.check(actor, row, kind="deployment")
        key = ApiKey(
            name=data.name,
            owner=actor.name,
            deployments=sorted(set(data.deployments)) if data.deployments else None,
            scopes=scopes,
            expires_at=data.expires_at,
            prefix=secret[:12],
            key_hash=hash_key(secret),
        )
        session.add(key)
        scope = f"limited to {', '.join(key.deployments)}" if key.deployments else "any deployment its owner may use"
        until = f", expires {data.expires_at:%Y-%m-%d %H:%M} UTC" if data.expires_at else ""
        if scopes is not None:
            until += f", API scopes {' '.join(scopes) or '(none)'}"
        add_events(session, kind=KIND, name=data.name, actor=actor.name, events=[NewEvent("Created", scope + until)])
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"an API key named {data.name!r} exists", hint="pick another name") from exc
        return ApiKeyCreated(**ApiKeyPublic.model_validate(key).model_dump(), key=secret)


def list_keys(*, db: Database, actor: Principal) -> list[ApiKeyPublic]:
    """An admin sees every key; a member their own."""
    with db.session() as session:
        query = select(ApiKey)
        if not actor.is_admin:
            query = query.where(ApiKey.owner == actor.name)
        return [ApiKeyPublic.model_validate(k) for k in session.exec(query.order_by(col(ApiKey.name)))]


def revoke_key(*, db: Database, actor: Principal, name: str) -> ApiKeyPublic:
    """Revoked keys stop working at the gateway within its refresh interval (1 s by default), streams included."""
    with db.session() as session:
        row = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
        if row is None:
            raise NotFound(f"no API key named {name!r}", hint="see `cove key list`")
        access.check_owner(actor, kind="API key", name=name, owner=row.owner, group=None)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(row)
            revoked = [NewEvent("Revoked", "by " + actor.name)]
            add_events(session, kind=KIND, name=name, actor=actor.name, events=revoked)
            session.commit()
        return ApiKeyPublic.model_validate(row)


# ------------------------------------------------------------------------------------------------ gateway side


def _identities(session: Session, *where: sa.ColumnElement[bool]) -> dict[str, KeyIdentity]:
    """Hash → identity of the keys not revoked whose owner is enabled (and matching ``where``), each with the
    deployments it may call now. Three queries, whatever the number of keys."""
    rows = session.exec(
        select(ApiKey, User)
        .join(User, col(ApiKey.owner) == User.name)
        .where(col(ApiKey.revoked_at).is_(None), col(User.disabled).is_(False), *where)
    ).all()
    if not rows:
        return {}
    deployments = session.exec(select(Deployment.name, Deployment.owner, Deployment.group)).all()
    usable: dict[str, frozenset[str]] = {}  # per member who owns keys: the deployments they may use
    found = {}
    for key, user in rows:
        scope = frozenset(key.deployments) if key.deployments is not None else None
        if user.role is Role.ADMIN:
            reach = scope
        else:
            if user.name not in usable:
                who = Principal(name=user.name, role=user.role, groups=frozenset(user.groups))
                usable[user.name] = frozenset(n for n, o, g in deployments if access.may_change(who, owner=o, group=g))
            reach = usable[user.name] if scope is None else usable[user.name] & scope
        scopes = frozenset(key.scopes) if key.scopes is not None else None
        found[key.key_hash] = KeyIdentity(
            key.id or 0, key.name, key.key_hash, key.owner, scope, reach, key.expires_at, scopes, frozenset(user.groups)
        )
    return found


def find_key(*, db: Database, key_hash: str) -> KeyIdentity | None:
    with db.session() as session:
        return _identities(session, col(ApiKey.key_hash) == key_hash).get(key_hash)


def keys_since(*, db: Database, after_id: int) -> dict[str, KeyIdentity]:
    """Hash → identity of the working keys made after key ``after_id`` (the gateway's cheap check for new keys)."""
    with db.session() as session:
        return _identities(session, col(ApiKey.id) > after_id)


def active_keys(*, db: Database) -> dict[str, KeyIdentity]:
    """Hash → identity of every key that works now (expired ones included: the gateway says they expired)."""
    with db.session() as session:
        return _identities(session)


def scope_names(names: Iterable[str]) -> list[str] | None:
    """A scope as the CLI and the UI take it: names, or None for none given."""
    cleaned = sorted({n.strip() for n in names if n.strip()})
    return cleaned or None
