"""``/auth``: logging in with a password or through a real OpenID Connect provider (oidc-provider-mock, running in
this test), the session cookie every face reads, and what happens when things go wrong."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from oidc_provider_mock import run_server_in_thread
from starlette.testclient import TestClient

from studio import sessions
from studio.db import Database
from studio.errors import InvalidSpec
from studio.login import Login, user_name
from studio.server import refuse_exposed
from studio.services import users
from studio.settings import Settings
from tests.conftest import free_port, make_settings
from tests.integration.conftest import wait_until
from tests.people import ADMIN, member


@pytest.fixture
def provider() -> Iterator[str]:
    """A real OpenID Connect provider on a free port: its issuer URL."""
    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


def client(settings: Settings, db: Database) -> TestClient:
    return TestClient(Login(settings=settings, db=db).app, base_url=settings.gateway_url, follow_redirects=False)


def log_in(web: TestClient, name: str, password: str, next_url: str = "") -> httpx.Response:
    return web.post("/auth/login", data={"name": name, "password": password, "next": next_url})


def test_a_password_logs_in_once_for_every_face_and_a_wrong_one_is_refused(settings: Settings, db: Database) -> None:
    member(db, "ana", "nlp", password="correct horse")
    web = client(settings, db)

    form = web.get("/auth/login", params={"next": settings.playground_url + "/"})
    assert form.status_code == 200
    assert 'name="password"' in form.text
    assert f'value="{settings.playground_url}/"' in form.text  # where the login goes back to

    refused = log_in(web, "admin", "not the password")
    assert refused.status_code == 401
    assert "wrong user name or password" in refused.text
    assert sessions.COOKIE not in web.cookies

    done = log_in(web, "ana", "correct horse", settings.playground_url + "/")
    assert (done.status_code, done.headers["location"]) == (303, settings.playground_url + "/")
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert web.get("/auth/whoami").json() == {"name": "ana", "role": "member", "groups": ["nlp"]}
    # what every face does with the cookie: the same person, whichever port asked
    assert sessions.principal(settings, db, {sessions.COOKIE: web.cookies[sessions.COOKIE]}) == users.principal(
        db=db, name="ana"
    )
    again = web.get("/auth/login", params={"next": settings.ui_url})
    assert (again.status_code, again.headers["location"]) == (303, settings.ui_url)  # logged in already

    web.get("/auth/logout")
    assert web.get("/auth/whoami").status_code == 401


def test_a_session_ends_when_its_user_is_disabled_or_removed_and_a_forged_one_is_worthless(
    settings: Settings, db: Database
) -> None:
    member(db, "ana", password="correct horse")
    member(db, "bo", password="battery staple")
    web = client(settings, db)
    log_in(web, "ana", "correct horse")
    assert web.get("/auth/whoami").status_code == 200
    users.update_user(db=db, actor=ADMIN, name="ana", disabled=True)
    assert web.get("/auth/whoami").status_code == 401  # at once, not when the cookie expires

    other = client(settings, db)
    log_in(other, "bo", "battery staple")
    token = other.cookies[sessions.COOKIE]
    users.remove_user(db=db, actor=ADMIN, name="bo")
    assert sessions.principal(settings, db, {sessions.COOKIE: token}) is None

    forged = sessions.issue(make_settings(settings.home.parent / "elsewhere", secret_key="another key"), "admin")
    assert sessions.principal(settings, db, {sessions.COOKIE: forged}) is None
    assert sessions.principal(settings, db, {sessions.COOKIE: token[:-2] + "xx"}) is None


def test_a_session_lasts_its_lifetime_and_no_longer(tmp_path: object, db: Database, settings: Settings) -> None:
    short = settings.model_copy(update={"session_hours": 1 / 3600})  # one second
    member(db, "ana", password="correct horse")
    web = client(short, db)
    log_in(web, "ana", "correct horse")
    assert web.get("/auth/whoami").status_code == 200
    wait_until(lambda: web.get("/auth/whoami").status_code == 401, timeout=10, what="the session to expire")


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/hub/home", True),
        ("{ui}", True),
        ("{playground}/?x=1", True),
        ("https://evil.example.com/", False),
        ("//evil.example.com/", False),
        ("javascript:alert(1)", False),
    ],
)
def test_after_login_people_go_back_only_to_cove(settings: Settings, db: Database, target: str, kept: bool) -> None:
    member(db, "ana", password="correct horse")
    wanted = target.format(ui=settings.ui_url, playground=settings.playground_url)
    done = log_in(client(settings, db), "ana", "correct horse", wanted)
    assert done.headers["location"] == (wanted if kept else settings.ui_url)


def test_a_team_provider_logs_people_in_with_their_groups_and_admins_by_group(
    settings: Settings, db: Database, provider: str
) -> None:
    client_of_cove = {"oidc_client_id": "cove", "oidc_client_secret": "s3cret"}
    oidc = settings.model_copy(update={"oidc_issuer": provider, **client_of_cove})
    httpx.put(f"{provider}/users/ana-sub", json={"preferred_username": "Ana.Lopez", "groups": ["NLP", "cove-admins"]})
    web = client(oidc, db)
    assert "Log in with localhost" in web.get("/auth/login").text

    to_provider = web.get("/auth/oidc", params={"next": oidc.playground_url + "/"})
    assert to_provider.status_code == 302
    authorize = to_provider.headers["location"]
    assert authorize.startswith(provider + "/oauth2/authorize")
    # the person picks who they are at the provider, which sends the browser back with a code
    back = httpx.post(authorize, data={"sub": "ana-sub"}, follow_redirects=False)
    callback = back.headers["location"]
    assert callback.startswith(oidc.gateway_url + "/auth/callback")
    assert "code" in parse_qs(urlsplit(callback).query)
    done = web.get(urlsplit(callback).path + "?" + urlsplit(callback).query)

    assert (done.status_code, done.headers["location"]) == (303, oidc.playground_url + "/")
    assert web.get("/auth/whoami").json() == {"name": "ana-lopez", "role": "admin", "groups": ["cove-admins", "nlp"]}
    assert users.get_user(db=db, name="ana-lopez").has_password is False  # the provider vouches; no password here


def test_a_provider_that_does_not_answer_gets_a_page_saying_so(settings: Settings, db: Database) -> None:
    down = settings.model_copy(update={"oidc_issuer": f"http://127.0.0.1:{free_port()}", "oidc_client_id": "cove"})
    page = client(down, db).get("/auth/oidc")
    assert page.status_code == 502
    assert "The login provider is unavailable" in page.text
    assert f"The login provider at <code>{down.oidc_issuer}</code> did not answer" in page.text
    assert "Traceback" not in page.text


def test_provider_names_become_cove_user_names() -> None:
    assert user_name("Ana.Lopez@example.com") == "ana-lopez"
    assert user_name("BO_99") == "bo-99"
    assert user_name("@@@") == "user"


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({"host": "0.0.0.0", "login": False}, "COVE_LOGIN is off and COVE_HOST is 0.0.0.0"),
        ({"host": "10.1.2.3", "login": True, "auth": False}, "COVE_AUTH is off and COVE_HOST is 10.1.2.3"),
        ({"host": "0.0.0.0", "login": True}, None),  # login on: fine anywhere
        ({"host": "127.0.0.1", "login": False}, None),  # off, but only this machine can reach it
        ({"host": "::1", "login": False, "auth": False}, None),
    ],
)
def test_faces_beyond_loopback_without_login_are_refused_at_start(
    settings: Settings, overrides: dict[str, object], refused: str | None
) -> None:
    chosen = settings.model_copy(update=overrides)
    if refused is None:
        refuse_exposed(chosen)
        return
    with pytest.raises(InvalidSpec, match=refused) as caught:
        refuse_exposed(chosen)
    assert "listen on 127.0.0.1 only" in caught.value.hint
