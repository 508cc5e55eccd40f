"""The playground's login gate, in front of a stand-in app (in-process, no network): who may pass, where a page
without a session is sent, what an API call without one gets."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from playground.visitors import LoginGate
from studio.values import Principal

LOGIN = "http://cove.test:8080/auth/login"


def who(cookies: Mapping[str, str]) -> Principal | None:
    return Principal(name="ana") if cookies.get("cove_session") == "ana's session" else None


def login_url(back_to: str) -> str:
    return f"{LOGIN}?next={back_to}"


async def inside(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the playground")


@pytest.fixture
def gate() -> TestClient:
    app = Starlette(routes=[Route("/{path:path}", inside, methods=["GET", "POST"])])
    gate = LoginGate(app, who=who, login_url=login_url, public_url="https://chat.example.com/")
    return TestClient(gate, base_url="http://10.0.0.7:7860")  # as a proxy in front of it would call it


def test_a_page_without_a_session_goes_to_the_login_page_and_comes_back(gate: TestClient) -> None:
    response = gate.get("/?view=compare", headers={"accept": "text/html,*/*"}, follow_redirects=False)
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == LOGIN
    assert parse_qs(target.query)["next"] == ["https://chat.example.com/?view=compare"]  # where browsers reach it


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/gradio_api/queue/join"), ("GET", "/config"), ("GET", "/gradio_api/info")]
)
def test_the_api_without_a_session_is_refused_with_where_to_log_in(gate: TestClient, method: str, path: str) -> None:
    gate.cookies.set("cove_session", "forged")
    response = gate.request(method, path)
    assert response.status_code == 401
    assert response.json() == {"error": "not logged in to Cove", "login": login_url("https://chat.example.com/")}


def test_a_session_lets_the_page_and_the_api_through(gate: TestClient) -> None:
    gate.cookies.set("cove_session", "ana's session")
    assert gate.get("/", headers={"accept": "text/html"}).text == "the playground"
    assert gate.post("/gradio_api/queue/join").text == "the playground"


def test_the_health_check_needs_no_session(gate: TestClient) -> None:
    assert gate.get("/healthz").text == "the playground"
