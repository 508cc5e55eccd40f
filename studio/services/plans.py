"""Memory plans of catalog versions: the version's config.json, read from its folder, through ``studio.memplan``;
and the plan a GPU deployment is admitted by (``size_deployment``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from studio import memplan, sizing
from studio.db import Database
from studio.errors import InvalidSpec, SourceUnavailable
from studio.kvlog import KvFigures
from studio.models import Deployment, ModelVersion
from studio.services.events import NewEvent, add_events
from studio.services.models import find_version
from studio.values import PoolBase, Resources, RuntimeKind


def config_of(folder: Path) -> dict[str, Any]:
    """The model's config.json in ``folder``. SourceUnavailable when it is gone, InvalidSpec when it is not JSON."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SourceUnavailable(
            f"{path} is missing", hint="the version's files were moved or deleted; add the model again"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InvalidSpec(f"{path} cannot be read as JSON: {exc}", hint="repair or re-add the model") from exc
    if not isinstance(config, dict):
        raise InvalidSpec(f"{path} is not a JSON object", hint="repair or re-add the model")
    return config


def _planned_folder(session: Session, version: ModelVersion) -> Path:
    """The folder whose config.json plans ``version``: its own, or its base's for a LoRA adapter (the adapter's
    weights are a rounding error beside the base's)."""
    base = session.get(ModelVersion, version.adapter_of_id) if version.adapter_of_id else None
    return Path((base or version).path)


def shape_of_version(session: Session, version: ModelVersion) -> memplan.Shape:
    """The plan's view of ``version``. SourceUnavailable or InvalidSpec when its config.json cannot be planned."""
    return memplan.shape_of(config_of(_planned_folder(session, version)))


@dataclass(frozen=True)
class Sizing:
    """What admission made of a deployment's plan: the plan's flags the user's runtime args do not set (run after
    them), the KV figures it predicts, and the events that say so."""

    flags: list[str] = field(default_factory=list)
    predicted: KvFigures | None = None
    events: list[NewEvent] = field(default_factory=list)


def size_deployment(
    session: Session,
    *,
    version: ModelVersion,
    runtime: RuntimeKind,
    pool: PoolBase,
    resources: Resources,
    args: list[str],
) -> Sizing:
    """Admit a deployment by its memory plan. A vLLM/SGLang replica on GPUs must hold one request at its context
    (its ``--max-model-len``/``--context-length``, else the model's): InvalidSpec with the plan's reason and what
    of the pool would hold one, when it cannot. When it can, the plan's flags are added where ``args`` are silent.
    A version whose config.json cannot be planned, or a pool that does not say its GPUs' memory, is admitted
    unplanned, saying why in an event. Other runtimes, and CPU replicas, pass as they are."""
    if not sizing.planned(runtime, resources):
        return Sizing()
    hardware = sizing.hardware_for(pool, resources, runtime=runtime, args=args)
    if hardware is None:
        why = f"pool {pool.name!r} does not say how much memory its GPUs have"
        return Sizing(events=[NewEvent("Unplanned", f"{why}: admitted without a memory plan", "Warning")])
    try:
        shape = shape_of_version(session, version)
    except (SourceUnavailable, InvalidSpec) as exc:
        why = f"the memory plan cannot read this version's config.json ({exc})"
        return Sizing(events=[NewEvent("Unplanned", f"{why}: admitted without a memory plan", "Warning")])
    verdict = sizing.one_request(shape, hardware)
    if not verdict.fits:
        raise InvalidSpec(
            f"the model does not fit: {verdict.reason}; it {sizing.what_fits(shape, pool, hardware)}",
            hint="ask for those GPUs, or a shorter context with --max-model-len; `cove plan` shows the figures",
        )
    added = sizing.with_flags(args, verdict.flags)[len(args) :]
    predicted = KvFigures(
        kv_cache_tokens=verdict.kv_cache_tokens,
        max_concurrency=verdict.max_concurrency,
        context=verdict.context,
    )
    said = (
        f"{verdict.weights_mib_per_gpu:,.0f} MiB of weights and {verdict.kv_cache_tokens:,} KV tokens per GPU: "
        f"{verdict.max_concurrency} requests of {verdict.context:,} tokens"
    )
    event = NewEvent("Planned", said + (f"; runtime args added: {' '.join(added)}" if added else ""))
    return Sizing(added, predicted, [event])


def shape_of(*, db: Database, model: str, version: int | None) -> tuple[memplan.Shape | None, str]:
    """``model`` at ``version`` as the plan sees it, or None and why it cannot be planned (for forms that plan as
    the user chooses). NotFound for an unknown model or version."""
    with db.session() as session:
        row = find_version(session, model=model, version=version)
        try:
            return shape_of_version(session, row), ""
        except (SourceUnavailable, InvalidSpec) as exc:
            return None, str(exc)


def plan_version(
    *, db: Database, model: str, version: int | None, hardware: memplan.Hardware, parameters: int | None = None
) -> memplan.Plan:
    """The memory plan of ``model`` at ``version`` (newest when None) on ``hardware``. An adapter version is
    planned as its base (a LoRA adapter's weights are a rounding error beside them). NotFound for an unknown
    model or version; InvalidSpec when its config cannot be planned."""
    with db.session() as session:
        folder = _planned_folder(session, find_version(session, model=model, version=version))
    return memplan.plan(memplan.shape_of(config_of(folder), parameters=parameters), hardware)


def record_kv_observed(*, db: Database, name: str, figures: KvFigures) -> None:
    """Keep what deployment ``name``'s runtime reported of its KV cache, beside the plan's prediction, with an event
    (the controller calls it once a replica is ready). Nothing when the deployment is gone."""
    with db.session() as session:
        row = session.exec(select(Deployment).where(Deployment.name == name)).first()
        if row is None or row.kv_observed == figures:
            return
        row.kv_observed = figures
        session.add(row)
        said = f"the runtime reports {figures.describe()}"
        if row.kv_planned is not None:
            said += f" (planned: {row.kv_planned.describe()})"
        add_events(session, kind="deployment", name=name, events=[NewEvent("Measured", said)])
        session.commit()
