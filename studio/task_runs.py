"""What the controller's runners of one-off tasks share (evaluations, benchmark runs): a gateway key made for the
run's owner and revoked at its end, the task that runs ``python -m MODULE PLAN``, the plan written where the task
reads it, and the files it leaves read back.

A run acts exactly as its owner may: its key is made as them (``services.keys.create_key``), limited to the
deployments the run asks and expiring after ``KEY_LIFETIME``, so a run whose end was missed stops working on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pydantic
from sqlmodel import select

from studio.backends.base import Backend, TaskSpec
from studio.db import Database, utcnow
from studio.errors import CoveError
from studio.jobs import paths_for
from studio.models import ApiKeyCreate, User
from studio.services import keys
from studio.settings import Settings
from studio.values import Principal, Resources

log = logging.getLogger(__name__)

KEY_LIFETIME = timedelta(days=1)
ENV = (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("PYTHONUNBUFFERED", "1"))
Read = TypeVar("Read", bound=pydantic.BaseModel)


def principal_of(db: Database, name: str) -> Principal:
    """The owner, as the run acts: their key is made as them."""
    with db.session() as session:
        user = session.exec(select(User).where(User.name == name)).one()
        return Principal(name=user.name, role=user.role, groups=frozenset(user.groups))


def owner_key(db: Database, *, owner: str, name: str, deployments: Iterable[str]) -> str:
    """A key named ``name`` made as ``owner``, reaching only ``deployments``, expiring after ``KEY_LIFETIME``."""
    made = keys.create_key(
        db=db,
        actor=principal_of(db, owner),
        data=ApiKeyCreate(name=name, deployments=sorted(set(deployments)), expires_at=utcnow() + KEY_LIFETIME),
    )
    return made.key


def revoke_owner_key(db: Database, *, owner: str, name: str) -> None:
    """The key named ``name`` stops working; one already gone is nothing to revoke."""
    if not name:
        return
    try:
        keys.revoke_key(db=db, actor=principal_of(db, owner), name=name)
    except CoveError as exc:
        log.info("key %s: %s", name, exc)


def task_spec(
    settings: Settings, backend: Backend, *, name: str, module: str, folder: Path, plan_file: str, python: str
) -> TaskSpec:
    """``python -m MODULE FOLDER/PLAN_FILE`` as a task in ``folder`` (as the task sees it), with one CPU."""
    seen = paths_for(settings, backend).of(folder)
    return TaskSpec(
        name=name,
        command=("python" if backend.runs_images else python, "-m", module, f"{seen}/{plan_file}"),
        workdir=seen,
        image=settings.trainer_image,
        env=ENV,
        resources=Resources(cpu=1, memory_mib=1024),
    )


def write_plan(folder: Path, plan_file: str, plan: pydantic.BaseModel, *, stale: Sequence[str]) -> None:
    """The plan written whole (readable by the owner only: it may hold a key), the files of a previous launch
    (``stale``) removed first so they are not read as this one's."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    tmp = folder / f".{plan_file}.tmp"
    tmp.write_text(plan.model_dump_json(indent=2))
    tmp.chmod(0o600)
    tmp.replace(folder / plan_file)


def read(path: Path, model: type[Read]) -> Read | None:
    """A file the task wrote, or None when it is missing or not (yet) whole."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, pydantic.ValidationError):
        return None
