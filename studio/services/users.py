"""Users: who may log in, as what role, in which groups; passwords hashed with argon2 (argon2-cffi).

The first admin, ``admin``, exists from the first migration on; ``cove up`` gives them a password the first time
(``first_admin_password``). Removing a user moves what they own to the admin who removes them (nothing is left
without an owner) and revokes their API keys (a key is a person's, so it does not change hands).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import argon2
import sqlalchemy as sa
from sqlmodel import Session, col, select, update

from studio import access
from studio.db import Database, utcnow
from studio.errors import Conflict, Forbidden, InvalidSpec, NotFound, Unauthorized
from studio.models import ApiKey, Deployment, Model, User, UserCreate, UserPublic
from studio.names import check_name
from studio.services.events import NewEvent, add_events
from studio.values import Principal, Role

FIRST_ADMIN = "admin"
_HASHER = argon2.PasswordHasher()


def _public(row: User) -> UserPublic:
    return UserPublic(**row.model_dump(exclude={"password_hash"}), has_password=row.password_hash is not None)


def principal_of(row: User) -> Principal:
    return Principal(name=row.name, role=row.role, groups=frozenset(row.groups))


def _find(session: Session, name: str) -> User:
    row = session.exec(select(User).where(User.name == name)).first()
    if row is None:
        raise NotFound(f"no user named {name!r}", hint="see `cove user list`")
    return row


def _groups(groups: Iterable[str]) -> list[str]:
    try:
        return sorted({check_name(g) for g in groups})
    except ValueError as exc:
        raise InvalidSpec(f"bad group name: {exc}") from exc


def _audit(session: Session, actor: Principal, name: str, reason: str, message: str) -> None:
    add_events(session, kind="user", name=name, actor=actor.name, events=[NewEvent(reason, message)])


def create_user(*, db: Database, actor: Principal, data: UserCreate) -> UserPublic:
    access.check_admin(actor, doing="add users")
    with db.session() as session:
        row = User(
            name=data.name,
            role=data.role,
            groups=_groups(data.groups),
            disabled=data.disabled,
            password_hash=_HASHER.hash(data.password) if data.password else None,
        )
        session.add(row)
        _audit(session, actor, data.name, "Created", f"{data.name} added as {data.role.value}")
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"a user named {data.name!r} exists", hint="pick another name") from exc
        return _public(row)


def list_users(*, db: Database, actor: Principal) -> list[UserPublic]:
    """Admins see everyone; a member sees themself."""
    with db.session() as session:
        query = select(User).order_by(col(User.name))
        if not actor.is_admin:
            query = query.where(User.name == actor.name)
        return [_public(row) for row in session.exec(query)]


def get_user(*, db: Database, name: str) -> UserPublic:
    with db.session() as session:
        return _public(_find(session, name))


def update_user(
    *,
    db: Database,
    actor: Principal,
    name: str,
    role: Role | None = None,
    groups: Iterable[str] | None = None,
    disabled: bool | None = None,
) -> UserPublic:
    """Change a user's role, groups or whether they may log in. Groups taken away keep what runs running; new
    deployments on the pools of those groups are refused."""
    access.check_admin(actor, doing="change users")
    with db.session() as session:
        row = _find(session, name)
        if name == actor.name and (role is Role.MEMBER or disabled):
            raise Conflict("you cannot demote or disable yourself", hint="ask another admin")
        changes = []
        if role is not None and role is not row.role:
            row.role = role
            changes.append(f"role {role.value}")
        if groups is not None:
            row.groups = _groups(groups)
            changes.append(f"groups {', '.join(row.groups) or '(none)'}")
        if disabled is not None and disabled != row.disabled:
            row.disabled = disabled
            changes.append("disabled" if disabled else "enabled")
        if changes:
            session.add(row)
            _audit(session, actor, name, "Changed", "; ".join(changes))
            session.commit()
        return _public(row)


def set_password(*, db: Database, actor: Principal, name: str, password: str) -> None:
    """A user sets their own password; an admin sets anyone's."""
    if name != actor.name:
        access.check_admin(actor, doing="set another user's password")
    if len(password) < 8:
        raise InvalidSpec("a password has at least 8 characters")
    with db.session() as session:
        row = _find(session, name)
        row.password_hash = _HASHER.hash(password)
        session.add(row)
        _audit(session, actor, name, "PasswordSet", f"password of {name} set")
        session.commit()


def remove_user(*, db: Database, actor: Principal, name: str) -> None:
    """Remove a user: their models and deployments become the acting admin's, their keys are revoked."""
    access.check_admin(actor, doing="remove users")
    if name == actor.name:
        raise Conflict("you cannot remove yourself", hint="ask another admin")
    with db.session() as session:
        row = _find(session, name)
        live = update(ApiKey).where(col(ApiKey.owner) == name, col(ApiKey.revoked_at).is_(None))
        revoked = session.exec(live.values(revoked_at=utcnow())).rowcount
        moved = {}
        for table in (Model, Deployment, ApiKey):  # revoked keys move too: their usage stays attributed to a key
            statement = update(table).where(col(table.owner) == name).values(owner=actor.name)
            moved[table.__tablename__] = session.exec(statement).rowcount
        session.delete(row)
        _audit(
            session,
            actor,
            name,
            "Removed",
            f"{name} removed: {moved['models']} models and {moved['deployments']} deployments moved to "
            f"{actor.name}, {revoked} API keys revoked",
        )
        session.commit()


def authenticate(*, db: Database, name: str, password: str) -> Principal:
    """The principal a name and password log in as; Unauthorized, without saying which was wrong, otherwise."""
    refused = Unauthorized("wrong user name or password", hint="try again, or ask an admin to set your password")
    with db.session() as session:
        row = session.exec(select(User).where(User.name == name)).first()
        if row is None or row.password_hash is None:
            _HASHER.hash(password)  # take as long as a wrong password, so names cannot be probed by timing
            raise refused
        try:
            _HASHER.verify(row.password_hash, password)
        except argon2.exceptions.VerificationError as exc:
            raise refused from exc
        if row.disabled:
            raise Unauthorized(f"user {name!r} is disabled", hint="ask an admin")
        if _HASHER.check_needs_rehash(row.password_hash):
            row.password_hash = _HASHER.hash(password)
        row.last_login_at = utcnow()
        session.add(row)
        session.commit()
        return principal_of(row)


def principal(*, db: Database, name: str) -> Principal:
    """The principal of an existing, enabled user (a session, the CLI's ``--as``); Unauthorized otherwise."""
    with db.session() as session:
        row = session.exec(select(User).where(User.name == name)).first()
        if row is None:
            raise Unauthorized(f"no user named {name!r}", hint="see `cove user list`")
        if row.disabled:
            raise Unauthorized(f"user {name!r} is disabled", hint="ask an admin")
        return principal_of(row)


def first_admin(*, db: Database) -> Principal:
    """The oldest enabled admin: who the CLI on the control plane's machine acts as unless told otherwise."""
    with db.session() as session:
        row = session.exec(
            select(User).where(User.role == Role.ADMIN, col(User.disabled).is_(False)).order_by(col(User.id))
        ).first()
        if row is None:
            raise Forbidden("there is no enabled admin", hint="run `cove user add NAME --admin`")
        return principal_of(row)


def first_admin_password(*, db: Database) -> str | None:
    """At first start: a generated password for ``admin`` when they have none (to print once), else None."""
    with db.session() as session:
        row = session.exec(select(User).where(User.name == FIRST_ADMIN)).first()
        if row is None or row.password_hash is not None:
            return None
        password = secrets.token_urlsafe(12)
        row.password_hash = _HASHER.hash(password)
        session.add(row)
        session.commit()
        return password


def sync_provider_user(*, db: Database, name: str, groups: Iterable[str], admin: bool) -> Principal:
    """A person the team's OpenID Connect provider vouched for: made a user at their first login; their role and
    groups follow the provider's claims at every login. A user disabled in Cove stays out."""
    try:
        check_name(name)
    except ValueError as exc:
        raise InvalidSpec(f"the provider's name for you cannot be a Cove user name: {exc}") from exc
    role = Role.ADMIN if admin else Role.MEMBER
    with db.session() as session:
        row = session.exec(select(User).where(User.name == name)).first()
        if row is None:
            row = User(name=name, role=role, groups=_groups(groups))
            session.add(row)
            add_events(
                session, kind="user", name=name, actor=name, events=[NewEvent("Created", f"first login, {role.value}")]
            )
        elif row.disabled:
            raise Unauthorized(f"user {name!r} is disabled", hint="ask an admin")
        else:
            row.role, row.groups = role, _groups(groups)
        row.last_login_at = utcnow()
        session.add(row)
        session.commit()
        return principal_of(row)
