"""The `openai` SDK's documented calls against the real gateway (`cove server`) in front of the demo model on
`transformers serve`: every endpoint, and every parameter the runtime ignores either done at the gateway (``n``) or
refused by name (``logprobs``, ``response_format``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from studio.db import Database
from studio.settings import Settings
from tests.integration.conftest import register_demo, sdk_against_server

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(settings: Settings, db: Database, demo_folder: Path, tmp_path: Path) -> Iterator[openai.OpenAI]:
    """The SDK, with a key, against `cove server` with the demo model deployed as ``demo`` and Ready."""
    register_demo(db, settings, demo_folder)
    with sdk_against_server(settings, db, tmp_path / "server.log", deployment="demo", model="demo-chat") as sdk:
        yield sdk


@pytest.mark.runtime
@pytest.mark.torch
def test_the_sdks_documented_calls_against_the_demo_model(client: openai.OpenAI) -> None:
    assert client.models.retrieve("demo").id == "demo"  # ready a moment ago: found before the next refresh
    assert [m.id for m in client.models.list()] == ["demo"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")

    reply = client.chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0

    two = client.chat.completions.create(model="demo", messages=HI, max_tokens=4, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert all(c.message.content for c in two.choices)
    seen: set[int] = set()
    for chunk in client.chat.completions.create(model="demo", messages=HI, max_tokens=4, n=2, stream=True):
        seen |= {c.index for c in chunk.choices}
    assert seen == {0, 1}

    with pytest.raises(openai.BadRequestError, match=r"'logprobs' is not supported .* \(transformers\)"):
        client.chat.completions.create(model="demo", messages=HI, max_tokens=4, logprobs=True, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match=r"'response_format' is not supported .* \(transformers\)"):
        client.chat.completions.create(model="demo", messages=HI, max_tokens=4, response_format={"type": "json_object"})

    response = client.responses.create(model="demo", input="hi", max_output_tokens=4)  # the runtime's own
    assert response.model == "demo"
    assert response.output_text
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    events = list(client.responses.create(model="demo", input="hi", max_output_tokens=4, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta")

    with pytest.raises(openai.BadRequestError, match="serves none"):
        client.embeddings.create(model="demo", input="hi")
