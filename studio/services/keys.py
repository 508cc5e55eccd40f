"""API keys: created (the secret shown once), listed by prefix, revoked; the gateway checks hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select

from studio.db import Database, utcnow
from studio.errors import Conflict, NotFound
from studio.models import ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyPublic

KEY_PREFIX = "cove-"


@dataclass(frozen=True)
class KeyIdentity:
    id: int
    name: str


def hash_key(secret: str) -> str:
    """Keys are 256 random bits, so a plain SHA-256 is enough (no slow hash needed against guessing)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(*, db: Database, data: ApiKeyCreate) -> ApiKeyCreated:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=data.name, prefix=secret[:12], key_hash=hash_key(secret))
    with db.session() as session:
        session.add(row)
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"an API key named {data.name!r} exists", hint="pick another name") from exc
        return ApiKeyCreated(**ApiKeyPublic.model_validate(row).model_dump(), key=secret)


def list_keys(*, db: Database) -> list[ApiKeyPublic]:
    with db.session() as session:
        return [ApiKeyPublic.model_validate(k) for k in session.exec(select(ApiKey).order_by(col(ApiKey.name)))]


def revoke_key(*, db: Database, name: str) -> ApiKeyPublic:
    """Revoked keys stop working at the gateway within its refresh interval (1 s by default)."""
    with db.session() as session:
        row = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
        if row is None:
            raise NotFound(f"no API key named {name!r}", hint="see `cove key list`")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(row)
            session.commit()
        return ApiKeyPublic.model_validate(row)


def find_key(*, db: Database, key_hash: str) -> KeyIdentity | None:
    with db.session() as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash, col(ApiKey.revoked_at).is_(None))).first()
        return KeyIdentity(row.id or 0, row.name) if row else None


def active_keys(*, db: Database) -> dict[str, KeyIdentity]:
    """Hash → identity of every key not revoked."""
    with db.session() as session:
        rows = session.exec(select(ApiKey.key_hash, ApiKey.id, ApiKey.name).where(col(ApiKey.revoked_at).is_(None)))
        return {h: KeyIdentity(i or 0, n) for h, i, n in rows}
