"""Declarative specs: YAML documents, one per object, that ``cove apply`` makes so.

    apiVersion: cove/v1
    kind: Model | Deployment | Image | Pool | Key
    metadata: {name: …, group: …}
    spec: {…}

Pure: the documents as pydantic models (an unknown field is refused by its path), parsing a multi-document text
into typed documents with every invalid field reported (``file: document 2 (Deployment demo-chat): spec.replicas:
…``), the JSON Schema of a document, which fields may change after creation, and the field-level diff of the
document an object is now against the one a user wants. Resolving names against the catalog and acting on the
diff is ``studio.services.specs``.
"""

from __future__ import annotations

import enum
import posixpath
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from studio.errors import InvalidSpec
from studio.names import ImageRef, Name
from studio.names import Version as Tag
from studio.values import CAPACITY_FIELDS, Autoscale, Purpose, Resources, RuntimeKind, Sharing

API_VERSION = "cove/v1"


class Kind(enum.StrEnum):
    IMAGE = "Image"
    MODEL = "Model"
    KEY = "Key"
    DEPLOYMENT = "Deployment"
    POOL = "Pool"


# Applied in this order (what a document refers to exists before it), deleted in the reverse.
ORDER = (Kind.POOL, Kind.IMAGE, Kind.MODEL, Kind.KEY, Kind.DEPLOYMENT)

STRICT = ConfigDict(extra="forbid")
# The ModelHub's words (camelCase), as its model specs write them; the field names are accepted too.
CAMEL = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

_MEMORY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|[KMGT]B)?\s*$", re.IGNORECASE)
_MIB_PER = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def memory_mib(value: float | str) -> int:
    """Memory as MiB: a number is GiB (as the ModelHub writes it); a string may say its unit (``512Mi``, ``16Gi``,
    ``16GB``, ``1T``). Raises ValueError for anything else."""
    if isinstance(value, int | float):
        return int(value * 1024)
    found = _MEMORY.match(value)
    if not found:
        raise ValueError(f"{value!r} is not an amount of memory: write e.g. 16Gi, 512Mi or 16 (GiB)")
    number, unit = float(found.group(1)), (found.group(2) or "G")[0].lower()
    return int(number * _MIB_PER[unit])


def version_constraint(text: str) -> SpecifierSet:
    """``>=0.7.1``, ``>=0.6,<0.8``: raises ValueError saying how to write one."""
    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise ValueError(f"{text!r} is not a version constraint: write e.g. '>=0.7.1' or '>=0.6,<0.8'") from exc


def satisfies(version: str, constraint: str | None) -> bool:
    """Whether an image's version (its tag: ``v0.33.0``, ``0.1.0``) meets ``constraint``; a tag that is not a
    version (``26.07-py3``) meets only no constraint."""
    if not constraint:
        return True
    try:
        return version_constraint(constraint).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def newest(versions: list[str]) -> str | None:
    """The highest of some image tags, by version order (tags that are not versions rank lowest)."""

    def rank(tag: str) -> tuple[int, Version | None]:
        try:
            return (1, Version(tag))
        except InvalidVersion:
            return (0, None)

    ranked = sorted(versions, key=lambda t: (rank(t)[0], rank(t)[1] or Version("0")))
    return ranked[-1] if ranked else None


# ------------------------------------------------------------------------------------------------ documents


class ResourceRequirements(BaseModel):
    """What a model needs of one replica on a runtime, in the ModelHub's words."""

    model_config = CAMEL
    gpu_type: str = Field(default="", alias="gpuType")  # e.g. "H100": informative
    gpu_count: int = Field(default=0, ge=0, le=64, alias="gpuCount")
    per_gpu_memory_gb: float = Field(default=0, ge=0, alias="perGPUMemoryGB")
    cpu: float | None = Field(default=None, gt=0, le=1024)
    memory: float | str | None = None  # GiB as a number, or with a unit: "16Gi", "512Mi"

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            memory_mib(value)
        return value

    def resources(self) -> Resources:
        """As a replica's request: whole GPUs (a memory slice when one GPU's share is given without a count)."""
        asked: dict[str, Any] = {"gpus": self.gpu_count}
        if not self.gpu_count and self.per_gpu_memory_gb:
            asked = {"gpu_memory_mib": int(self.per_gpu_memory_gb * 1024)}
        if self.cpu is not None:
            asked["cpu"] = self.cpu
        if self.memory is not None:
            asked["memory_mib"] = memory_mib(self.memory)
        return Resources(**asked)


class Recommendation(BaseModel):
    """How a model is best deployed on one runtime: the image versions that serve it (``versionRequired``), what
    a replica needs, and the runtime's arguments. A deployment takes it with ``recommended: RUNTIME``."""

    model_config = CAMEL
    runtime: RuntimeKind
    version_required: str | None = Field(default=None, alias="versionRequired")
    resource_requirements: ResourceRequirements = Field(
        default_factory=ResourceRequirements, alias="resourceRequirements"
    )
    custom_runtime_args: list[str] = Field(default_factory=list, alias="customRuntimeArgs")

    @field_validator("version_required")
    @classmethod
    def _constraint(cls, value: str | None) -> str | None:
        if value is not None:
            version_constraint(value)
        return value


class Metadata(BaseModel):
    model_config = STRICT
    name: Name
    group: str | None = None  # shared with this group (its members may change it as its owner may)


class ModelSpec(BaseModel):
    """A model in the catalog. ``source``: ``hf:org/name[@revision]``, ``org/name`` or a folder on the server
    (needed to create it; fixed afterwards). ``deployments``: recommended ways to deploy it, one per runtime."""

    model_config = STRICT
    source: str | None = Field(default=None, min_length=1)
    description: str | None = None
    deployments: list[Recommendation] | None = None

    @field_validator("deployments")
    @classmethod
    def _one_per_runtime(cls, value: list[Recommendation] | None) -> list[Recommendation] | None:
        runtimes = [r.runtime for r in value or []]
        twice = sorted({r.value for r in runtimes if runtimes.count(r) > 1})
        if twice:
            raise ValueError(f"more than one recommendation for {', '.join(twice)}: give one per runtime")
        return value


class DeploymentSpec(BaseModel):
    """A deployment: ``model`` (``name`` or ``name:version``) on ``image`` (``name`` or ``name:version``) in
    ``pool``, with ``replicas`` or ``autoscale`` bounds. ``recommended: RUNTIME`` takes the model's
    recommendation for that runtime (its image, resources and arguments) where the spec does not say.
    ``max_tokens_cap`` and ``n_cap``: the most a request may ask of it (as ``cove deploy caps``); left out, the caps
    stay as they are (a new deployment: the studio's defaults)."""

    model_config = STRICT
    model: str = Field(min_length=1)
    image: str | None = None
    pool: str | None = None
    replicas: int | None = Field(default=None, ge=0, le=64)
    autoscale: Autoscale | None = None
    resources: Resources | None = None
    runtime_args: list[str] | None = None
    recommended: RuntimeKind | None = None
    max_tokens_cap: int | None = Field(default=None, ge=1, le=10_000_000)
    n_cap: int | None = Field(default=None, ge=1, le=128)

    @field_validator("model", "image")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None:
            name, _, version = value.partition(":")
            if not name or (":" in value and not version):
                raise ValueError(f"{value!r} is not NAME or NAME:VERSION")
        return value

    @model_validator(mode="after")
    def _count_or_bounds(self) -> DeploymentSpec:
        if self.replicas is not None and self.autoscale is not None:
            raise ValueError("give replicas or autoscale, not both: autoscaling sets the replica count itself")
        return self


class ImageSpec(BaseModel):
    """A runtime image ``metadata.name``:``version`` (see ``cove image add``); fixed once registered."""

    model_config = STRICT
    version: Tag
    runtime: RuntimeKind = RuntimeKind.CUSTOM
    ref: ImageRef | None = None
    local_command: list[str] | None = None
    health_path: str | None = None
    dockerfile: str | None = None
    description: str | None = None


class KeySpec(BaseModel):
    """An API key (the secret is shown once, when it is made): the deployments it may call (none: all its owner
    may use), its API scopes (a personal access token), and when it expires. Fixed once made."""

    model_config = STRICT
    deployments: list[str] | None = None
    scopes: list[str] | None = None
    expires_at: datetime | None = None


class PoolSpec(BaseModel):
    """A pool's configured fields (as ``COVE_POOLS`` and the Helm chart's ``pools`` write them: camelCase keys, or
    the field names). A field left out is left as it is (a new pool: its default). ``cluster`` is fixed once the
    pool exists; a pool whose capacity a backend detects keeps the capacity found (``cpuCores``, ``memoryMib``,
    ``gpuModel``, ``gpuCount``, ``gpuMemoryMib``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, extra="forbid")
    purpose: Purpose | None = None
    sharing: Sharing | None = None
    gpu_model: str | None = None
    gpu_count: int | None = Field(default=None, ge=0)
    gpu_memory_mib: int | None = Field(default=None, ge=0)  # per GPU
    slice_mib: int | None = Field(default=None, ge=1)
    cpu_cores: float | None = Field(default=None, ge=0)
    memory_mib: int | None = Field(default=None, ge=0)
    quota_gpus: float | None = Field(default=None, ge=0)
    quota_cpu: float | None = Field(default=None, ge=0)
    quota_memory_mib: int | None = Field(default=None, ge=0)
    groups: list[str] | None = None  # empty: everyone
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    cluster: str | None = Field(default=None, min_length=1)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    api_version: Literal["cove/v1"] = Field(alias="apiVersion")
    metadata: Metadata


class ModelDocument(_Document):
    kind: Literal[Kind.MODEL]
    spec: ModelSpec = Field(default_factory=ModelSpec)


class DeploymentDocument(_Document):
    kind: Literal[Kind.DEPLOYMENT]
    spec: DeploymentSpec


class ImageDocument(_Document):
    kind: Literal[Kind.IMAGE]
    spec: ImageSpec


class KeyDocument(_Document):
    kind: Literal[Kind.KEY]
    spec: KeySpec = Field(default_factory=KeySpec)

    @model_validator(mode="after")
    def _no_group(self) -> KeyDocument:
        if self.metadata.group is not None:
            raise ValueError("metadata.group: a key is its owner's alone and has no group")
        return self


class PoolDocument(_Document):
    kind: Literal[Kind.POOL]
    spec: PoolSpec = Field(default_factory=PoolSpec)

    @model_validator(mode="after")
    def _no_group(self) -> PoolDocument:
        if self.metadata.group is not None:
            raise ValueError("metadata.group: a pool has no group; spec.groups says who may use it")
        return self


Document = Annotated[
    ModelDocument | DeploymentDocument | ImageDocument | KeyDocument | PoolDocument, Field(discriminator="kind")
]
DOCUMENT: TypeAdapter[Any] = TypeAdapter(Document)
AnyDocument = ModelDocument | DeploymentDocument | ImageDocument | KeyDocument | PoolDocument


def identity(doc: AnyDocument) -> str:
    """What names the object: ``Kind name`` (images: ``Image name:version``)."""
    name = f"{doc.metadata.name}:{doc.spec.version}" if isinstance(doc, ImageDocument) else doc.metadata.name
    return f"{doc.kind.value} {name}"


def document(kind: Kind, name: str, spec: dict[str, Any], group: str | None = None) -> AnyDocument:
    """A document built from its parts (the form of an object Cove has); raises ValidationError."""
    metadata: dict[str, Any] = {"name": name} | ({"group": group} if group else {})
    doc: AnyDocument = DOCUMENT.validate_python(
        {"apiVersion": API_VERSION, "kind": kind.value, "metadata": metadata, "spec": spec}
    )
    return doc


def dump(doc: AnyDocument) -> dict[str, Any]:
    """The document as YAML/JSON would carry it: unstated fields left out, ``apiVersion`` first."""
    data: dict[str, Any] = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"apiVersion": data.pop("apiVersion"), "kind": data.pop("kind"), **data}


def schema() -> dict[str, Any]:
    """The JSON Schema of one document (published as docs/cove-spec.schema.json)."""
    found: dict[str, Any] = DOCUMENT.json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cove.dev/schemas/cove-spec.schema.json",
        "title": "Cove spec document (apiVersion cove/v1)",
        **found,
    }


# ------------------------------------------------------------------------------------------------ parsing


def _label(where: str, index: int, raw: Any) -> str:
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    kind = raw.get("kind") if isinstance(raw, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    named = " ".join(str(p) for p in (kind, name) if p)
    return f"{where}: document {index}" + (f" ({named})" if named else "")


def _errors(exc: ValidationError, kind: Any) -> list[tuple[str, str]]:
    found = []
    for err in exc.errors():
        loc = list(err["loc"])
        if loc and loc[0] == kind:  # the discriminated union's tag
            loc = loc[1:]
        path = ".".join(str(p) for p in loc) or "document"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            known = ", ".join(k.value for k in Kind)
            path = "kind"
            message = f"{kind!r} is not a kind: use one of {known}" if kind is not None else f"required: one of {known}"
        if path == "document" and message.startswith("metadata.group:"):
            path, message = message.split(": ", 1)
        found.append((path, message))
    return found


def parse_documents(raws: list[Any], *, where: str) -> list[AnyDocument]:
    """Typed documents from plain data (the YAML's documents, a request's body). Every invalid field of every
    document is reported at once, each with its path, in one InvalidSpec; so are two documents for one object."""
    docs: list[AnyDocument] = []
    fields: list[dict[str, str]] = []
    for index, raw in enumerate(raws, start=1):
        label = _label(where, index, raw)
        if not isinstance(raw, dict):
            fields.append({"document": label, "path": "document", "message": "a document is a mapping"})
            continue
        try:
            docs.append(DOCUMENT.validate_python(raw))
        except ValidationError as exc:
            fields += [{"document": label, "path": p, "message": m} for p, m in _errors(exc, raw.get("kind"))]
    seen: dict[str, int] = {}
    for index, doc in enumerate(docs, start=1):
        key = identity(doc)
        if key in seen:
            label = f"{where}: document {index} ({doc.kind.value} {doc.metadata.name})"
            fields.append({"document": label, "path": "metadata.name", "message": f"{key} is described twice"})
        seen[key] = index
    if fields:
        listed = "\n".join(f"{f['document']}: {f['path']}: {f['message']}" for f in fields)
        raise InvalidSpec(
            f"{len(fields)} invalid field{'s' if len(fields) != 1 else ''}; nothing was applied:\n{listed}",
            hint="fix the fields named (the schema: docs/cove-spec.schema.json)",
            fields=fields,
        )
    return docs


def parse(text: str, *, where: str = "<input>") -> list[AnyDocument]:
    """The documents of a multi-document YAML text (empty documents skipped); InvalidSpec naming each problem."""
    try:
        raws = [raw for raw in yaml.safe_load_all(text) if raw is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidSpec(f"{where}: not YAML{at}: {problem}", hint="fix the YAML") from exc
    return parse_documents(raws, where=where)


def ordered(docs: list[AnyDocument], *, reverse: bool = False) -> list[AnyDocument]:
    """In dependency order (Pool, Image, Model, Key, Deployment), stable within a kind; reversed for deleting."""
    ranked = sorted(docs, key=lambda d: ORDER.index(d.kind))
    return ranked[::-1] if reverse else ranked


# ------------------------------------------------------------------------------------------------ diff

# What may change after creation, per kind; every other stated field is fixed once the object exists.
MUTABLE: dict[Kind, frozenset[str]] = {
    Kind.MODEL: frozenset({"spec.description", "spec.deployments"}),
    Kind.DEPLOYMENT: frozenset({"spec.replicas", "spec.autoscale", "spec.max_tokens_cap", "spec.n_cap"}),
    Kind.IMAGE: frozenset(),
    Kind.KEY: frozenset(),
    Kind.POOL: frozenset(f"spec.{to_camel(f)}" for f in PoolSpec.model_fields if f != "cluster"),
}
# A pool's fields a backend detects (studio.values.CAPACITY_FIELDS), as a document names them.
DETECTED = frozenset(f"spec.{to_camel(f)}" for f in CAPACITY_FIELDS)
# Directives that say how to fill a document, not what the object is: never compared.
DIRECTIVES = frozenset({"spec.recommended"})


class Change(BaseModel):
    """One field that differs: ``path`` (``spec.replicas``), what it is (``from``) and what is wanted (``to``)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, frozen=True)
    path: str
    before: Any = Field(default=None, validation_alias=AliasChoices("from", "before"), serialization_alias="from")
    after: Any = Field(default=None, validation_alias=AliasChoices("to", "after"), serialization_alias="to")


Action = Literal["created", "updated", "unchanged", "deleted", "absent", "kept", "refused"]


class Result(BaseModel):
    """What applying (or deleting) one document did, or with a dry run would do: ``created``, ``updated`` or
    ``unchanged`` with the changes (apply); ``deleted``, ``absent``, ``kept`` (images, pools) or ``refused`` with why
    (delete)."""

    kind: Kind
    name: str
    action: Action
    changes: list[Change] = []
    message: str = ""
    secret: str | None = None  # a key made by this apply: its secret, shown this once


def immutable(kind: Kind, path: str) -> bool:
    return not any(path == m or path.startswith(m + ".") for m in MUTABLE[kind])


def _same_reference(want: str, have: str | None) -> bool:
    """``name`` matches any version of it; ``name:version`` only that one."""
    return have is not None and (want == have or (":" not in want and have.partition(":")[0] == want))


def _split_source(text: str) -> tuple[str, str, str | None]:
    text = text.strip()
    if text.startswith(("/", ".", "~")):
        return "folder", posixpath.normpath(text), None
    repo, _, revision = text.removeprefix("hf:").partition("@")
    return "hf", repo, revision or None


def _same_source(want: str, have: str | None) -> bool:
    """A Hub source without a revision matches any revision of that repo; folders match by normalized path."""
    if have is None:
        return False
    w, h = _split_source(want), _split_source(have)
    return w[:2] == h[:2] and (w[2] is None or w[2] == h[2])


EQUIVALENT = {"spec.model": _same_reference, "spec.image": _same_reference, "spec.source": _same_source}


def _stated(doc: AnyDocument) -> dict[str, Any]:
    """The fields a document states, by path (``metadata.group``, ``spec.replicas``), as JSON values."""
    data = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    found = {f"metadata.{k}": v for k, v in data["metadata"].items() if k != "name"}
    found |= {f"spec.{k}": v for k, v in data["spec"].items()}
    if isinstance(doc, DeploymentDocument) and doc.spec.replicas is not None:
        found["spec.autoscale"] = None  # a fixed count turns autoscaling off
    return {k: v for k, v in found.items() if k not in DIRECTIVES}


def _leaves(path: str, before: Any, after: Any) -> list[Change]:
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in sorted(set(before) | set(after)):
            changes += _leaves(f"{path}.{key}", before.get(key), after.get(key))
        return changes
    return [] if before == after else [Change(path=path, before=before, after=after)]


def diff(current: AnyDocument | None, desired: AnyDocument) -> list[Change]:
    """What applying ``desired`` would change of ``current`` (None: it does not exist, so every stated field is
    new). Only the fields ``desired`` states are compared; a stated mapping (``resources``) is compared whole,
    leaf by leaf; ``model``/``image`` without a version and a Hub source without a revision match any."""
    wanted = _stated(desired)
    if current is None:
        return [c for path, value in wanted.items() for c in _leaves(path, None, value)]
    have = _stated(current) | {"spec.autoscale": current.model_dump(mode="json").get("spec", {}).get("autoscale")}
    changes: list[Change] = []
    for path, value in wanted.items():
        same = EQUIVALENT.get(path)
        if same is not None and isinstance(value, str):
            if not same(value, have.get(path)):
                changes.append(Change(path=path, before=have.get(path), after=value))
            continue
        changes += _leaves(path, have.get(path), value)
    return changes


def refused(kind: Kind, changes: list[Change]) -> list[Change]:
    """The changes that touch fields fixed at creation."""
    return [c for c in changes if immutable(kind, c.path)]


if __name__ == "__main__":  # python -m studio.specs > docs/cove-spec.schema.json
    import json
    import sys

    sys.stdout.write(json.dumps(schema(), indent=2, sort_keys=True) + "\n")
