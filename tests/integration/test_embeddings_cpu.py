"""An embedding model served on CPU for real: a tiny BERT (built offline) registered and deployed through `cove
server` with the local backend on the transformers image, where the runtime starts Cove's embedder instead of
`transformers serve`; the `openai` SDK calls ``/v1/embeddings`` through the gateway, and the usage is metered."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from studio.db import Database
from studio.services import models, usage
from studio.settings import Settings
from tests.integration.conftest import sdk_against_server, wait_until
from tests.people import ADMIN

WIDTH = 32
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "red",
    "blue",
    "sky",
    "sea",
    "is",
    "was",
    "and",
    "of",
    "to",
    "in",
]


def build_tiny_encoder(out: Path) -> Path:
    """A 2-layer BERT (width 32) with random weights from a fixed seed and a WordPiece tokenizer over a few words,
    saved as ``save_pretrained`` writes it: ``architectures`` is ``["BertModel"]``, an encoder without a head."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    vocab += list("abcdefghijklmnopqrstuvwxyz")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture
def client(settings: Settings, db: Database, tmp_path: Path) -> Iterator[openai.OpenAI]:
    """The SDK, with a key, against `cove server` with the tiny encoder deployed as ``embed`` and Ready."""
    folder = build_tiny_encoder(tmp_path / "tiny-encoder")
    models.register_built(
        actor=ADMIN,
        db=db,
        name="tiny-encoder",
        folder=folder,
        repo_id="cove/tiny-encoder",
        cache_dir=settings.models_dir,
    )
    with sdk_against_server(settings, db, tmp_path / "server.log", deployment="embed", model="tiny-encoder") as sdk:
        yield sdk


@pytest.mark.runtime
@pytest.mark.torch
def test_an_embedding_model_on_cpu_answers_the_sdks_embeddings_and_is_metered(
    client: openai.OpenAI, settings: Settings, db: Database
) -> None:
    one = client.embeddings.create(model="embed", input="the cat sat on the mat")  # the SDK asks for base64
    assert one.model == "embed"
    assert len(one.data) == 1
    assert len(one.data[0].embedding) == WIDTH
    assert math.isclose(math.fsum(x * x for x in one.data[0].embedding), 1.0, rel_tol=1e-4)  # normalised
    tokens = one.usage.prompt_tokens
    assert tokens == 8  # [CLS] the cat sat on the mat [SEP]

    many = client.embeddings.create(
        model="embed", input=["the dog ran fast", "the cat sat on the mat"], encoding_format="float"
    )
    assert [d.index for d in many.data] == [0, 1]
    assert many.data[1].embedding == pytest.approx(one.data[0].embedding, abs=1e-5)  # same text, same vector
    assert many.data[0].embedding != pytest.approx(many.data[1].embedding, abs=1e-3)
    ids = client.embeddings.create(model="embed", input=[[2, 5, 6, 3]], encoding_format="float")
    assert len(ids.data[0].embedding) == WIDTH
    assert ids.usage.prompt_tokens == 4

    with pytest.raises(openai.BadRequestError, match="'dimensions' is not supported"):
        client.embeddings.create(model="embed", input="the sky", dimensions=8)
    assert len(client.embeddings.create(model="embed", input="the sky", dimensions=WIDTH).data[0].embedding) == WIDTH
    with pytest.raises(openai.BadRequestError, match="serves an embedding model"):
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])

    raw = httpx.post(  # base64 on the wire is little-endian float32, as OpenAI sends it
        settings.gateway_url + "/v1/embeddings",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": "embed", "input": "the cat sat on the mat", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack(f"<{WIDTH}f", packed)) == pytest.approx(one.data[0].embedding, abs=1e-6)

    # six answered by the runtime: five embeddings and the refused 'dimensions' (metered with no tokens)
    wait_until(lambda: len(usage.usage_records(db=db, deployment="embed")) >= 6, what="the usage rows")
    rows = usage.usage_records(db=db, deployment="embed")
    assert {(r.endpoint, r.completion_tokens, r.estimated) for r in rows} == {("embeddings", 0, False)}
    assert sorted((r.status_code, r.prompt_tokens) for r in rows) == sorted(
        [(200, tokens), (200, many.usage.prompt_tokens), (200, 4), (200, 4), (200, 8), (400, 0)]
    )
