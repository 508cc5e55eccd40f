"""Memory plans of catalog versions: the version's config.json, read from its folder, through ``studio.memplan``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio import memplan
from studio.db import Database
from studio.errors import InvalidSpec, SourceUnavailable
from studio.models import ModelVersion
from studio.services.models import find_version


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


def plan_version(
    *, db: Database, model: str, version: int | None, hardware: memplan.Hardware, parameters: int | None = None
) -> memplan.Plan:
    """The memory plan of ``model`` at ``version`` (newest when None) on ``hardware``. An adapter version is
    planned as its base (a LoRA adapter's weights are a rounding error beside them). NotFound for an unknown
    model or version; InvalidSpec when its config cannot be planned."""
    with db.session() as session:
        row = find_version(session, model=model, version=version)
        base = session.get(ModelVersion, row.adapter_of_id) if row.adapter_of_id else None
        folder = Path((base or row).path)
    return memplan.plan(memplan.shape_of(config_of(folder), parameters=parameters), hardware)
