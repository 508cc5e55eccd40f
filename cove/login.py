"""Where ``cove login`` keeps a Cove's URL and token: ``credentials.json`` in the user's config directory
(``~/.config/cove`` on Linux; COVE_CONFIG_DIR moves it), readable by its owner only (mode 0600)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

from studio.errors import InvalidSpec


@dataclass(frozen=True)
class Login:
    """A saved login: the Cove's URL, the token (never a password), whose it is and its name (to revoke it)."""

    url: str
    token: str
    user: str = ""
    token_name: str = ""


def config_dir() -> Path:
    return Path(os.environ.get("COVE_CONFIG_DIR") or click.get_app_dir("cove"))


def credentials_file() -> Path:
    return config_dir() / "credentials.json"


def load() -> Login | None:
    path = credentials_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidSpec(f"{path} is unreadable: {exc}", hint="log in again with `cove login URL`") from exc
    try:
        return Login(
            url=str(data["url"]),
            token=str(data["token"]),
            user=str(data.get("user", "")),
            token_name=str(data.get("token_name", "")),
        )
    except (KeyError, TypeError) as exc:
        raise InvalidSpec(f"{path} holds no login", hint="log in again with `cove login URL`") from exc


def save(login: Login) -> Path:
    """Write the login, created with mode 0600 before any secret is in it (never readable by others)."""
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": login.url, "token": login.token, "user": login.user, "token_name": login.token_name}, out)
    os.replace(temporary, path)
    return path


def forget() -> bool:
    try:
        credentials_file().unlink()
    except FileNotFoundError:
        return False
    return True
