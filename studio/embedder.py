"""The CPU runtime's embedding server: OpenAI's ``/v1/embeddings`` for a model without a generation head.

`transformers serve` answers chat and completions only, so when a deployment's model is an encoder (``embeds``, see
``studio.runtimes.is_embedding_architecture``) the transformers runtime starts this instead::

    python -m studio.embedder MODEL --host H --port P [--served-model-name NAME] [--device cpu|cuda]

It loads the model with ``AutoModel`` and its tokenizer (offline, from the model cache or a folder) before it opens
its port, then answers:

- ``POST /v1/embeddings``: ``input`` as a string, a list of strings, a list of token ids or a list of such lists;
  each input's vector is the mean of its last hidden states over its tokens, L2-normalised (the sentence-transformers
  recipe for mean-pooling models); ``encoding_format`` ``float`` or ``base64`` (little-endian float32, as OpenAI);
  ``dimensions`` only as the model's own width (400 otherwise: the vectors of a model not trained for shortening
  are not shortened); ``usage.prompt_tokens`` counts the tokens the model read. An input longer than the model's
  context is refused with 400, not silently cut.
- ``GET /v1/models`` (the one model it serves) and ``GET /health``, like the other runtimes.

The request checks are pure functions (``parse_request``, ``encode``) so they are tested without a model.
"""

from __future__ import annotations

import argparse
import base64
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from studio.errors import CoveError, InvalidSpec, NotFound

ENCODINGS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked request: the inputs as texts or as token ids (one kind per request), and how to encode vectors."""

    texts: tuple[str, ...] = ()
    tokens: tuple[tuple[int, ...], ...] = ()
    encoding_format: str = "float"


def _is_ids(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def parse_request(body: Any, *, served: str, width: int) -> EmbeddingRequest:
    """``body`` checked against OpenAI's embeddings request for a model named ``served`` whose vectors have
    ``width`` numbers. Raises NotFound for another model's name, InvalidSpec (naming the field) for the rest."""
    if not isinstance(body, dict):
        raise InvalidSpec("the request body must be a JSON object")
    if body.get("model") != served:
        raise NotFound(f"model {body.get('model')!r} is not served here", hint=f"this server serves {served!r}")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ENCODINGS:
        raise InvalidSpec(f"'encoding_format' must be one of {', '.join(ENCODINGS)}, not {fmt!r}")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != width:
        raise InvalidSpec(
            f"'dimensions' is not supported by {served}: its vectors have {width} numbers and are not shortened",
            hint="leave 'dimensions' out, or give the model's own width",
        )
    given = body.get("input")
    if isinstance(given, str) and given:
        return EmbeddingRequest(texts=(given,), encoding_format=fmt)
    if isinstance(given, list) and given:
        if all(isinstance(x, str) and x for x in given):
            return EmbeddingRequest(texts=tuple(given), encoding_format=fmt)
        if _is_ids(given):
            return EmbeddingRequest(tokens=(tuple(given),), encoding_format=fmt)
        if all(_is_ids(x) for x in given):
            return EmbeddingRequest(tokens=tuple(tuple(x) for x in given), encoding_format=fmt)
    raise InvalidSpec(
        "'input' must be a non-empty string, a list of non-empty strings, a list of token ids or a list of such lists"
    )


def encode(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    """One vector as OpenAI sends it: a list of floats, or base64 of its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return [float(x) for x in vector]


def answer(
    vectors: Sequence[Sequence[float]], *, model: str, prompt_tokens: int, encoding_format: str
) -> dict[str, Any]:
    """OpenAI's embeddings response."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v, encoding_format)} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


class Encoder:
    """A model and its tokenizer, mean-pooling and normalising; one batch at a time (torch runs it on every core)."""

    def __init__(self, ref: str, *, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        name, _, revision = ref.partition("@") if not ref.startswith("/") else (ref, "", "")
        self.torch, self.device = torch, device
        self.tokenizer = AutoTokenizer.from_pretrained(name, revision=revision or None)
        self.model = AutoModel.from_pretrained(name, revision=revision or None).to(device).eval()
        self.width = int(self.model.config.hidden_size)
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or self.tokenizer.model_max_length)
        self.lock = threading.Lock()

    def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        """The normalised mean-pooled vector of each input, and how many tokens they had in all."""
        torch = self.torch
        if request.texts:
            batch = self.tokenizer(list(request.texts), padding=True, return_tensors="pt")
        else:
            batch = self.tokenizer.pad({"input_ids": [list(t) for t in request.tokens]}, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if ids.shape[1] > self.context:
            raise InvalidSpec(
                f"an input has {ids.shape[1]} tokens; this model reads at most {self.context}",
                hint="split the text into shorter pieces",
            )
        if request.tokens and int(ids.max()) >= self.model.config.vocab_size:
            raise InvalidSpec(
                f"'input' has a token id beyond this model's vocabulary of {self.model.config.vocab_size}"
            )
        with self.lock, torch.inference_mode():
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            weights = mask.to(self.device).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
            vectors = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return vectors.cpu().tolist(), int(mask.sum())


def build_app(encoder: Encoder, *, served: str) -> FastAPI:
    app = FastAPI(title="Cove embedder", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    @app.exception_handler(CoveError)
    def refused(_request: Request, error: CoveError) -> JSONResponse:
        status, kind = (404, "not_found_error") if isinstance(error, NotFound) else (400, "invalid_request_error")
        text = f"{error.message}; {error.hint}" if error.hint else error.message
        return JSONResponse({"error": {"message": text, "type": kind, "param": None, "code": None}}, status)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": created, "owned_by": "cove"}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise InvalidSpec("the request body is not JSON") from exc
        parsed = parse_request(body, served=served, width=encoder.width)
        vectors, tokens = await run_in_threadpool(encoder.embed, parsed)
        return answer(vectors, model=served, prompt_tokens=tokens, encoding_format=parsed.encoding_format)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studio.embedder", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Hub id (repo or repo@revision, from the model cache) or a folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default="", help="the name requests carry (default: MODEL)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import uvicorn

    encoder = Encoder(args.model, device=args.device)
    uvicorn.run(build_app(encoder, served=args.served_model_name or args.model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
