"""Runtime images: the built-in ones (vLLM, SGLang, Triton, transformers) and custom ones users register.

A custom image registered with a Dockerfile is built by the controller on the control plane's cluster and pushed
to its reference (``COVE_REGISTRY/<name>`` unless given); its ``build_status`` goes Pending → Building → Ready or
Failed, each step an event of kind ``image`` named ``name:version``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio import __version__, access
from studio.db import Database
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.models import Image, ImageCreate, ImagePublic
from studio.names import check_image_ref, outside_registry
from studio.services.events import NewEvent, add_events
from studio.values import BuildStatus, Principal, RuntimeKind

KIND = "image"

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
                session.add(Image(**dict(image), builtin=True))
        try:
            session.commit()
        except sa.exc.IntegrityError:
            session.rollback()  # another process seeded them at the same moment


@dataclass(frozen=True)
class Build:
    """An image the controller should build (or is building)."""

    name: str
    version: str
    dockerfile: str
    destination: str  # reference with tag
    attempt: int = 1  # each rebuild is a new build

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


def _destination_ref(data: ImageCreate, registry: str) -> str:
    if data.ref is not None:
        return data.ref
    if not registry:
        raise InvalidSpec(
            f"image {data.name} has a Dockerfile but no reference to push it to",
            hint="give its reference (registry/path), or set COVE_REGISTRY (the Helm chart's builds.registry)",
        )
    try:
        return check_image_ref(f"{registry.rstrip('/')}/{data.name}")
    except ValueError as exc:
        raise InvalidSpec(f"COVE_REGISTRY {registry!r} is not a registry path: {exc}") from exc


def add_image(*, db: Database, actor: Principal, data: ImageCreate, registry: str = "") -> ImagePublic:
    """Register an image; one with a Dockerfile is queued for building (pushed to ``ref``, else ``registry``).
    A local command runs as Cove's own OS user, so only admins may give one."""
    if data.local_command:
        access.check_admin(actor, doing="register an image with a local command (it runs as Cove's OS user)")
    ref = _destination_ref(data, registry)
    if data.dockerfile is not None and (outside := outside_registry(ref, registry)):
        raise InvalidSpec(outside, hint=f"leave the reference out (it is then {registry.rstrip('/')}/{data.name})")
    with db.session() as session:
        row = Image(**dict(data) | {"ref": ref})
        if data.dockerfile is not None:
            row.build_status, row.build_attempt = BuildStatus.PENDING, 1
            row.build_message = "waiting for the controller to start the build"
        session.add(row)
        try:
            session.flush()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"image {data.name}:{data.version} exists", hint="register another version") from exc
        events = [NewEvent("Registered", f"{ref}:{row.version}, runtime {row.runtime.value}")]
        if data.dockerfile is not None:
            events.append(NewEvent("Queued", f"to be built and pushed to {ref}:{row.version}"))
        add_events(session, kind=KIND, name=f"{row.name}:{row.version}", actor=actor.name, events=events)
        session.commit()
        return ImagePublic.model_validate(row)


def builds_wanted(*, db: Database) -> list[Build]:
    """Images with a Dockerfile whose build has not finished, oldest first."""
    active = (BuildStatus.PENDING, BuildStatus.BUILDING)
    with db.session() as session:
        rows = session.exec(select(Image).where(col(Image.build_status).in_(active)).order_by(col(Image.id))).all()
        return [Build(r.name, r.version, r.dockerfile or "", f"{r.ref}:{r.version}", r.build_attempt) for r in rows]


def record_build(*, db: Database, name: str, version: str, status: BuildStatus, message: str) -> None:
    """The controller's view of a build; a change of status is an event (a Warning when it failed)."""
    with db.session() as session:
        row = _exact(session, name, version)
        if (row.build_status, row.build_message) == (status, message):
            return
        if row.build_status != status:
            first = message.splitlines()[0] if message else status.value.lower()
            kind = "Warning" if status == BuildStatus.FAILED else "Normal"
            add_events(session, kind=KIND, name=f"{name}:{version}", events=[NewEvent(status.value, first, kind)])
        row.build_status, row.build_message = status, message
        session.add(row)
        session.commit()


def rebuild_image(*, db: Database, actor: Principal, name: str, version: str) -> ImagePublic:
    """Build a Dockerfile image again (after a failure, or when its base image moved)."""
    with db.session() as session:
        row = _exact(session, name, version)
        if row.dockerfile is None:
            raise InvalidSpec(f"image {name}:{version} has no Dockerfile: it is built elsewhere")
        if row.build_status in (BuildStatus.PENDING, BuildStatus.BUILDING):
            raise Conflict(f"image {name}:{version} is being built", hint="wait for this build to finish")
        row.build_status, row.build_message = BuildStatus.PENDING, "waiting for the controller to start it"
        row.build_attempt += 1
        session.add(row)
        queued = [NewEvent("Queued", "rebuild asked for")]
        add_events(session, kind=KIND, name=f"{name}:{version}", actor=actor.name, events=queued)
        session.commit()
        return ImagePublic.model_validate(row)


def _exact(session: Session, name: str, version: str) -> Image:
    row = session.exec(select(Image).where(Image.name == name, Image.version == version)).first()
    if row is None:
        raise NotFound(f"no image {name}:{version}", hint="see `cove image list`")
    return row


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
