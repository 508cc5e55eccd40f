"""CoveAuthenticator against a real database, without a hub: what a login is (a posted password, else Cove's session
cookie; with login off, the first admin) and what a refresh finds. The hub around it is tested in test_hub.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub import database
from hub.auth import CoveAuthenticator
from studio import sessions
from studio.db import Database
from studio.services import users
from studio.settings import Settings
from tests.people import ADMIN, member


class Request:
    """What the authenticator reads of a request: its cookies (as tornado's ``get_cookie`` gives them)."""

    def __init__(self, **cookies: str) -> None:
        self.cookies = cookies

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        return self.cookies.get(name, default)


@pytest.fixture
def hub_db(settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """The hub opens the test's database (one engine, disposed by the ``db`` fixture)."""
    monkeypatch.setitem(database._open, settings.db_url, db)
    member(db, "ana", "nlp", password="correct horse")
    users.set_password(db=db, actor=ADMIN, name="admin", password="the admin's own")
    return db


def login(settings: Settings, request: Request | None, data: dict[str, str] | None = None) -> Any:
    return asyncio.run(CoveAuthenticator(cove_settings=settings).authenticate(request, data))


def refresh(settings: Settings, name: str) -> Any:
    return asyncio.run(CoveAuthenticator(cove_settings=settings).refresh_user(_User(name)))


class _User:
    def __init__(self, name: str) -> None:
        self.name = name


ANA = {"name": "ana", "admin": False, "groups": ["nlp"]}
THE_ADMIN = {"name": "admin", "admin": True, "groups": []}


def test_it_is_a_single_sign_on_that_manages_groups(settings: Settings) -> None:
    made = CoveAuthenticator(cove_settings=settings.model_copy(update={"login": True}))
    assert (made.auto_login, made.manage_groups, made.allow_all, made.refresh_pre_spawn) == (True, True, True, True)
    assert made.auth_refresh_age == 60


def test_with_login_on_a_session_cookie_logs_its_user_in(settings: Settings, hub_db: Database) -> None:
    on = settings.model_copy(update={"login": True})
    assert login(on, Request(cove_session=sessions.issue(on, "ana"))) == ANA
    assert login(on, Request(cove_session=sessions.issue(on, "admin"))) == THE_ADMIN
    assert login(on, Request()) is None
    assert login(on, Request(cove_session="not a session")) is None


def test_a_posted_password_is_checked_and_never_passed_over_for_a_cookie(settings: Settings, hub_db: Database) -> None:
    on = settings.model_copy(update={"login": True})
    as_ana = Request(cove_session=sessions.issue(on, "ana"))
    assert login(on, as_ana, {"username": "admin", "password": "admin"}) is None
    assert login(on, Request(), {"username": "admin", "password": ""}) is None
    assert login(on, Request(), {"username": "nobody", "password": "admin"}) is None
    assert login(on, as_ana, {"username": "admin", "password": "the admin's own"}) == THE_ADMIN
    assert login(on, None, {"username": "ana", "password": "correct horse"}) == ANA  # the REST API: no cookie


def test_with_login_off_every_visitor_is_the_first_admin(settings: Settings, hub_db: Database) -> None:
    off = settings.model_copy(update={"login": False})
    assert login(off, Request()) == THE_ADMIN
    assert login(off, Request(cove_session=sessions.issue(off, "ana"))) == THE_ADMIN
    assert login(off, Request(), {"username": "ana", "password": "wrong"}) == THE_ADMIN
    assert refresh(off, "anyone") is True


def test_a_refresh_follows_cove_and_ends_for_the_removed_and_the_disabled(settings: Settings, hub_db: Database) -> None:
    on = settings.model_copy(update={"login": True})
    assert refresh(on, "ana") == ANA
    users.update_user(db=hub_db, actor=ADMIN, name="ana", groups=["nlp", "vision"])
    assert refresh(on, "ana") == {"name": "ana", "admin": False, "groups": ["nlp", "vision"]}
    users.update_user(db=hub_db, actor=ADMIN, name="ana", disabled=True)
    assert refresh(on, "ana") is False
    users.update_user(db=hub_db, actor=ADMIN, name="ana", disabled=False)
    users.remove_user(db=hub_db, actor=ADMIN, name="ana")
    assert refresh(on, "ana") is False
    assert refresh(on, "mallory") is False
