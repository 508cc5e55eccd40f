"""A deployment's caps on max_tokens and n: set with `cove deploy caps` (through the API in process), enforced by a
real gateway in front of a real runtime process: more is refused with OpenAI's 400 naming the parameter and the cap,
and a request naming no max_tokens reserves the cap against token limits."""

from __future__ import annotations

import httpx
import openai
import pytest

from studio.controller import Controller
from studio.db import Database
from studio.limits import LimitScope
from studio.models import ApiKeyCreate, LimitSet
from studio.services import deployments, keys, limits
from studio.settings import Settings
from tests.integration.conftest import GatewayServer, add_fake_image, deploy, status_of, wait_until
from tests.integration.test_cli import run
from tests.people import ADMIN

HI = [{"role": "user", "content": "hi"}]


def test_caps_are_set_shown_and_reset_from_the_cli(db: Database, settings: Settings, stub_model: str) -> None:
    deploy(db, "chat", stub_model)
    set_ = run(settings, "deploy", "caps", "chat", "--max-tokens", "500", "--n", "2")
    assert set_.exit_code == 0, set_.output
    assert set_.output.strip() == "deployment chat: max_tokens ≤ 500, n ≤ 2"
    kept = run(settings, "deploy", "caps", "chat", "--n", "3")  # a cap not given keeps its value
    assert kept.output.strip() == "deployment chat: max_tokens ≤ 500, n ≤ 3"
    dep = deployments.get_deployment(db=db, actor=ADMIN, name="chat")
    assert (dep.max_tokens_cap, dep.n_cap) == (500, 3)
    assert "caps per request  max_tokens ≤ 500, n ≤ 3" in run(settings, "deploy", "get", "chat").output
    reset = run(settings, "deploy", "caps", "chat", "--default")
    assert reset.output.strip() == "deployment chat: max_tokens ≤ default, n ≤ default"
    assert "give --max-tokens, --n or --default" in run(settings, "deploy", "caps", "chat").output
    too_big = run(settings, "deploy", "caps", "chat", "--n", "1000")
    assert too_big.exit_code != 0


@pytest.mark.runtime
def test_the_gateway_refuses_more_than_the_caps_and_reserves_the_cap(
    db: Database, settings: Settings, stub_model: str, controller: Controller, gateway: GatewayServer
) -> None:
    deploy(db, "chat", stub_model, add_fake_image(db, "scripted_runtime.py"))
    deploy(db, "free", stub_model, add_fake_image(db, "scripted_runtime.py"))
    deployments.set_caps(db=db, actor=ADMIN, name="chat", max_tokens_cap=500, n_cap=2)
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key
    limits.set_limit(db=db, actor=ADMIN, data=LimitSet(scope=LimitScope.KEY, subject="app", tpm=10_000))
    wait_until(lambda: status_of(db, "chat", "Ready") and status_of(db, "free", "Ready"), timeout=30, what="ready")
    url, headers = gateway.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}

    # the first request the limits count names no max_tokens: it reserves its prompt's estimate (1) and the cap
    first = wait_until(
        lambda: (
            (r := httpx.post(url, json={"model": "chat", "messages": HI}, headers=headers)).status_code == 200
            and "x-ratelimit-remaining-tokens" in r.headers
            and r
        ),
        timeout=15,
        what="the caps and limits to be read",
    )
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 10_000 - 1 - 500

    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as over:
            client.chat.completions.create(model="chat", messages=HI, max_tokens=501)  # type: ignore[arg-type]
        assert over.value.status_code == 400
        assert over.value.param == "max_tokens"
        assert "'max_tokens' is 501, more than this deployment's cap of 500" in over.value.message
        with pytest.raises(openai.BadRequestError) as many:
            client.chat.completions.create(model="chat", messages=HI, n=3)  # type: ignore[arg-type]
        assert many.value.param == "n"
        assert "cap of 2" in many.value.message
        served = client.chat.completions.create(model="chat", messages=HI, max_tokens=500)  # type: ignore[arg-type]
        assert served.choices[0].message.content
        # a deployment without caps of its own has the studio's (COVE_LIMITS_MAX_TOKENS)
        with pytest.raises(openai.BadRequestError) as default:
            client.chat.completions.create(
                model="free",
                messages=HI,  # type: ignore[arg-type]
                max_completion_tokens=settings.limits_max_tokens + 1,
            )
        assert default.value.param == "max_completion_tokens"
        assert f"cap of {settings.limits_max_tokens}" in default.value.message
