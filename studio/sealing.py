"""Secrets kept in the database (registered clusters' kubeconfigs) are sealed: encrypted and authenticated with
Fernet (AES-128-CBC + HMAC-SHA256) under the studio's key, so a copy of the database alone gives no cluster away.

The key is ``COVE_SECRET_KEY`` (a Secret on Kubernetes, shared by the server and the studio UI), else made once and
kept in ``COVE_HOME/secret_key``, readable by its owner only. Any text works as a key: it is hashed to Fernet's.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from studio.errors import InvalidSpec
from studio.settings import Settings


def kept_secret(path: Path) -> str:
    """A random secret (64 hex digits) made on first use and kept at ``path``, readable by its owner only."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


def studio_key(settings: Settings) -> str:
    return settings.secret_key or kept_secret(settings.home / "secret_key")


def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def seal(text: str, key: str) -> str:
    return _fernet(key).encrypt(text.encode()).decode()


def unseal(token: str, key: str, *, what: str) -> str:
    """The sealed text; InvalidSpec naming ``what`` when it was sealed under another key (or altered)."""
    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise InvalidSpec(
            f"{what} cannot be read with this studio's key (COVE_SECRET_KEY)",
            hint="restore the key it was sealed with, or register it again",
        ) from exc
