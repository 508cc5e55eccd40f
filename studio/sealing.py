"""Secrets kept in the database (registered clusters' kubeconfigs) are sealed: encrypted and authenticated with
Fernet (AES-128-CBC + HMAC-SHA256) under the studio's key, so a copy of the database alone gives no cluster away.

The key is ``COVE_SECRET_KEY`` (a Secret on Kubernetes, shared by the server and the studio UI), else made once and
kept in ``COVE_HOME/secret_key``, readable by its owner only. Any text works as a key: it is hashed to Fernet's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from studio.errors import CoveError, InvalidSpec
from studio.settings import Settings

MIN_SECRET_CHARS = 32  # half of what kept_secret makes; shorter is a damaged file, or one a person wrote by hand


def kept_secret(path: Path) -> str:
    """A random secret (64 hex digits) made on first use and kept at ``path``, readable by its owner only.

    The file is written whole or not at all: into a temporary file beside it, synced, then linked into place, so a
    full disk or a crash never leaves an empty or partial secret, and of two processes making it at once one wins
    and both use its secret. A failed write raises CoveError and leaves nothing at ``path``. An existing file
    holding fewer than ``MIN_SECRET_CHARS`` characters (an empty key would seal everything under a value anyone can
    guess) is refused, never used."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process kept one first: theirs is the secret
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise CoveError(
            f"cannot keep a secret at {path}: {exc.strerror or exc}",
            hint="free space on that disk (or make it writable) and start again; nothing was kept",
        ) from exc
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    kept = path.read_text().strip()
    if len(kept) < MIN_SECRET_CHARS:
        raise CoveError(
            f"the secret at {path} is {'empty' if not kept else 'too short'}, so it is not used",
            hint="a write failed part way (a full disk?): restore the file from a backup, or remove it to make a new "
            "one (what was sealed under the old one must then be registered again)",
        )
    return kept


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
