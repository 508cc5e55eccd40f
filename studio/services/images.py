"""Runtime images: the built-in ones (vLLM, SGLang, Triton, transformers) and custom ones users register."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio import __version__
from studio.db import Database
from studio.errors import Conflict, NotFound
from studio.models import Image, ImageCreate, ImagePublic, RuntimeKind

BUILTIN_IMAGES = (
    ImageCreate(
        name="vllm",
        version="v0.33.0",
        runtime=RuntimeKind.VLLM,
        ref="docker.io/vllm/vllm-openai",
        description="vLLM OpenAI-compatible server; the GPU runtime for most models",
    ),
    ImageCreate(
        name="sglang",
        version="v0.5.23",
        runtime=RuntimeKind.SGLANG,
        ref="docker.io/lmsysorg/sglang",
        description="SGLang server; GPU runtime with RadixAttention prefix caching",
    ),
    ImageCreate(
        name="triton",
        version="26.07-py3",
        runtime=RuntimeKind.TRITON,
        ref="nvcr.io/nvidia/tritonserver",
        health_path="/v2/health/ready",
        description="NVIDIA Triton Inference Server; Kubernetes only",
    ),
    ImageCreate(
        name="transformers",
        version=__version__,
        runtime=RuntimeKind.TRANSFORMERS,
        ref="ghcr.io/cove-ai/cove",
        description="`transformers serve` with continuous batching; the CPU runtime, runs locally",
    ),
)


def ensure_builtin_images(*, db: Database) -> None:
    """Insert the built-in images this Cove knows that the database lacks (older versions stay)."""
    with db.session() as session:
        have = {(i.name, i.version) for i in session.exec(select(Image).where(Image.builtin)).all()}
        for image in BUILTIN_IMAGES:
            if (image.name, image.version) not in have:
                session.add(Image(**image.model_dump(), builtin=True))
        try:
            session.commit()
        except sa.exc.IntegrityError:
            session.rollback()  # another process seeded them at the same moment


def add_image(*, db: Database, data: ImageCreate) -> ImagePublic:
    with db.session() as session:
        row = Image(**data.model_dump())
        session.add(row)
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"image {data.name}:{data.version} exists", hint="register another version") from exc
        return ImagePublic.model_validate(row)


def list_images(*, db: Database) -> list[ImagePublic]:
    with db.session() as session:
        rows = session.exec(select(Image).order_by(col(Image.name), col(Image.id).desc())).all()
        return [ImagePublic.model_validate(r) for r in rows]


def find_image(session: Session, *, name: str, version: str | None) -> Image:
    """The image row (newest registered when ``version`` is None), inside the caller's transaction."""
    query = select(Image).where(Image.name == name)
    query = query.where(Image.version == version) if version else query.order_by(col(Image.id).desc())
    image = session.exec(query).first()
    if image is None:
        known = sorted(set(session.exec(select(Image.name)).all()))
        what = f"{name}:{version}" if version else name
        raise NotFound(f"no image {what!r}", hint=f"known images: {', '.join(known)}; see `cove image list`")
    return image
