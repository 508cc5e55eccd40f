"""Cove's tables and their families.

Each noun has a table (``Deployment``) and, where callers need them, a ``…Create`` (what a user may ask for,
validated), an ``…Update`` and a ``…Public`` (what is shown; detached from any session). Desired state is what users
write; observed state (status, endpoints, message) is written only by the controller.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from sqlmodel import Column, SQLModel
from sqlmodel import Field as SQLField

from studio.db import UTCDateTime, utcnow
from studio.names import ImageRef, Name, Version

DEFAULT_CLUSTER = "default"  # the control plane's own backend (COVE_BACKEND); other clusters are registered

_FROM = re.compile(r"^\s*FROM\s+\S", re.IGNORECASE | re.MULTILINE)


def _json(default: Any = None, nullable: bool = False) -> Any:
    return SQLField(default_factory=default, sa_column=Column(sa.JSON, nullable=nullable))


def _ts(**kwargs: Any) -> Any:
    return SQLField(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


class RuntimeKind(enum.StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    TRITON = "triton"
    TRANSFORMERS = "transformers"
    CUSTOM = "custom"


class Sharing(enum.StrEnum):
    NONE = "none"  # CPU only
    WHOLE = "whole"  # whole GPUs
    HAMI = "hami"  # HAMi memory/core slices (nvidia.com/gpumem, nvidia.com/gpucores)
    MIG = "mig"  # MIG profiles


class Purpose(enum.StrEnum):
    DEV = "dev"
    TRAIN = "train"
    SERVE = "serve"
    ANY = "any"


class Status(enum.StrEnum):
    PENDING = "Pending"  # accepted, nothing started yet
    STARTING = "Starting"  # processes/pods exist, none ready
    READY = "Ready"  # at least one replica answers
    FAILED = "Failed"  # cannot start: see message
    STOPPED = "Stopped"  # scaled to zero
    DELETING = "Deleting"


# ---------------------------------------------------------------------------------------------------- models


class Model(SQLModel, table=True):
    __tablename__ = "models"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(unique=True, index=True)
    description: str = ""
    created_at: datetime = _ts()


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("model_id", "version"),)
    id: int | None = SQLField(default=None, primary_key=True)
    model_id: int = SQLField(foreign_key="models.id", ondelete="CASCADE", index=True)
    version: int
    source_kind: str  # hf | local | finetune
    source: str  # repo id, or the folder given
    revision: str | None = None  # commit hash for hf sources
    path: str  # the folder the runtime loads
    size_bytes: int = 0
    architecture: str = ""  # from config.json "architectures"
    model_type: str = ""
    created_at: datetime = _ts()


class ModelCreate(BaseModel):
    """Register a model from ``hf:org/name[@revision]``, ``org/name``, or a local folder."""

    name: Name
    source: str = Field(min_length=1)
    description: str = ""
    new_version: bool = False  # append a version to an existing model instead of refusing


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    version: int
    source_kind: str
    source: str
    revision: str | None
    path: str
    size_bytes: int
    architecture: str
    model_type: str
    created_at: datetime


class ModelPublic(BaseModel):
    name: str
    description: str
    created_at: datetime
    versions: list[ModelVersionPublic]

    @property
    def latest(self) -> ModelVersionPublic:
        return self.versions[-1]


# ---------------------------------------------------------------------------------------------------- images


class Image(SQLModel, table=True):
    __tablename__ = "images"
    __table_args__ = (sa.UniqueConstraint("name", "version"),)
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(index=True)
    version: str  # the container tag
    runtime: str  # RuntimeKind
    ref: str  # container image reference without tag
    local_command: list[str] | None = _json(nullable=True)
    health_path: str = "/health"
    dockerfile: str | None = None
    build_status: str = ""  # BuildStatus for images with a Dockerfile; "" for images built elsewhere
    build_message: str = ""
    build_attempt: int = 0
    builtin: bool = False
    description: str = ""
    created_at: datetime = _ts()


class BuildStatus(enum.StrEnum):
    """An image built in the cluster from its Dockerfile."""

    PENDING = "Pending"  # registered, no build started
    BUILDING = "Building"
    READY = "Ready"  # pushed to the registry
    FAILED = "Failed"  # see the message; `cove image rebuild` tries again


class ImageCreate(BaseModel):
    """A custom runtime image. ``local_command`` makes it runnable on the local backend; it may use the
    placeholders ``{model}`` (the model's folder), ``{model_id}`` (its Hub id, ``repo@revision``), ``{host}``,
    ``{port}`` and ``{name}`` (the deployment's name, which requests carry as their model). ``dockerfile`` is
    kept for building on Kubernetes: such an image is built in the cluster and pushed to ``ref`` (by default
    ``COVE_REGISTRY/name``) before deployments on Kubernetes start."""

    name: Name
    version: Version
    runtime: RuntimeKind = RuntimeKind.CUSTOM
    ref: ImageRef | None = None  # None: built from ``dockerfile`` and pushed to COVE_REGISTRY/<name>
    local_command: list[str] | None = None
    health_path: str = "/health"
    dockerfile: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _command_has_port(self) -> ImageCreate:
        if self.local_command is not None:
            if not self.local_command:
                raise ValueError("local_command is empty: give the program and its arguments")
            if not any("{port}" in part for part in self.local_command):
                raise ValueError("local_command must bind the port Cove assigns: use the {port} placeholder")
        if not self.health_path.startswith("/"):
            raise ValueError("health_path is a URL path such as '/health'")
        if self.dockerfile is not None and not _FROM.search(self.dockerfile):
            raise ValueError("dockerfile has no FROM instruction: it must start from a base image")
        if self.ref is None and self.dockerfile is None:
            raise ValueError("ref is required: the image reference without tag, e.g. 'ghcr.io/team/server'")
        return self


class ImagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    version: str
    runtime: str
    ref: str
    local_command: list[str] | None
    health_path: str
    dockerfile: str | None
    build_status: str = ""
    build_message: str = ""
    builtin: bool
    description: str

    @property
    def reference(self) -> str:
        return f"{self.ref}:{self.version}"


# ---------------------------------------------------------------------------------------------------- clusters


class Cluster(SQLModel, table=True):
    """A Kubernetes cluster registered by its kubeconfig; deployments on its pools run there."""

    __tablename__ = "clusters"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(unique=True, index=True)
    kubeconfig: str  # the kubeconfig's YAML, credentials included: never shown
    context: str = ""  # "": the kubeconfig's current context
    namespace: str = "cove"
    server: str = ""  # the API server's URL, from the kubeconfig
    message: str = ""  # the last problem reaching it ("": it answered)
    checked_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = _ts()


class ClusterCreate(BaseModel):
    """Register a cluster: a kubeconfig (its text), optionally one of its contexts, and the namespace Cove uses."""

    name: Name
    kubeconfig: str = Field(min_length=1)
    context: str = ""
    namespace: str = Field(default="cove", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

    @model_validator(mode="after")
    def _not_default(self) -> ClusterCreate:
        if self.name == DEFAULT_CLUSTER:
            raise ValueError(f"{DEFAULT_CLUSTER!r} names the control plane's own backend: pick another name")
        return self


class ClusterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    context: str
    namespace: str
    server: str
    message: str
    checked_at: datetime | None
    created_at: datetime

    @property
    def state(self) -> str:
        """Whether it answered the controller's last capacity read, in words."""
        return "not checked yet" if self.checked_at is None else (self.message or "answering")


# ---------------------------------------------------------------------------------------------------- pools


class Pool(SQLModel, table=True):
    __tablename__ = "pools"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(unique=True, index=True)
    purpose: str = Purpose.ANY.value
    sharing: str = Sharing.NONE.value
    gpu_model: str = ""
    gpu_count: int = 0
    gpu_memory_mib: int = 0  # per GPU
    slice_mib: int = 128  # smallest HAMi memory slice
    cpu_cores: float = 0
    memory_mib: int = 0
    quota_gpus: float | None = None
    quota_cpu: float | None = None
    quota_memory_mib: int | None = None
    groups: list[str] = _json(list)  # empty: everyone
    node_selector: dict[str, str] = _json(dict)
    tolerations: list[dict[str, Any]] = _json(list)
    detected: bool = False  # made from what a backend found (the machine; labelled nodes), not configured
    cluster: str = SQLField(default=DEFAULT_CLUSTER, index=True)  # the cluster its workloads run on
    created_at: datetime = _ts()


class PoolPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    purpose: str
    sharing: str
    gpu_model: str
    gpu_count: int
    gpu_memory_mib: int
    slice_mib: int
    cpu_cores: float
    memory_mib: int
    quota_gpus: float | None
    quota_cpu: float | None
    quota_memory_mib: int | None
    groups: list[str]
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    detected: bool
    cluster: str = DEFAULT_CLUSTER


class PoolSpec(BaseModel):
    """A pool as configured (``COVE_POOLS``; the Helm chart's ``pools``): camelCase keys, as in Helm values, or the
    column names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    purpose: Purpose = Purpose.ANY
    sharing: Sharing = Sharing.NONE
    gpu_model: str = ""
    gpu_count: int = Field(default=0, ge=0)
    gpu_memory_mib: int = Field(default=0, ge=0)
    slice_mib: int = Field(default=128, ge=1)
    cpu_cores: float = Field(default=0, ge=0)
    memory_mib: int = Field(default=0, ge=0)
    quota_gpus: float | None = Field(default=None, ge=0)
    quota_cpu: float | None = Field(default=None, ge=0)
    quota_memory_mib: int | None = Field(default=None, ge=0)
    groups: list[str] = []
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    cluster: str = DEFAULT_CLUSTER


# ---------------------------------------------------------------------------------------------------- deployments


class Deployment(SQLModel, table=True):
    __tablename__ = "deployments"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(unique=True, index=True)
    model_version_id: int = SQLField(foreign_key="model_versions.id", ondelete="RESTRICT", index=True)
    image_id: int = SQLField(foreign_key="images.id", ondelete="RESTRICT", index=True)
    pool_id: int = SQLField(foreign_key="pools.id", ondelete="RESTRICT", index=True)
    runtime_args: list[str] = _json(list)
    cpu: float = 1.0
    memory_mib: int = 2048
    gpus: int = 0
    gpu_memory_mib: int = 0
    gpu_cores: int = 0
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_inflight: float | None = None
    generation: int = 1  # bumped on every change of desired state
    deleting: bool = False
    # observed (controller only)
    status: str = Status.PENDING.value
    ready_replicas: int = 0
    endpoints: list[str] = _json(list)
    upstream_model: str = ""
    message: str = ""
    observed_generation: int = 0
    status_at: datetime = _ts()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Resources(BaseModel):
    """What one replica asks of its pool."""

    model_config = ConfigDict(frozen=True)
    cpu: float = Field(default=1.0, gt=0, le=1024)
    memory_mib: int = Field(default=2048, ge=64)
    gpus: int = Field(default=0, ge=0, le=64)
    gpu_memory_mib: int = Field(default=0, ge=0)  # a HAMi slice on one GPU; 0: none
    gpu_cores: int = Field(default=0, ge=0, le=100)  # HAMi percent of one GPU's cores; 0: unlimited

    @model_validator(mode="after")
    def _whole_or_slice(self) -> Resources:
        if self.gpus and self.gpu_memory_mib:
            raise ValueError("ask for whole GPUs (gpus) or a GPU memory slice (gpu_memory_mib), not both")
        if self.gpu_cores and not self.gpu_memory_mib:
            raise ValueError("gpu_cores applies to a GPU memory slice: give gpu_memory_mib too")
        return self


class Notebook(SQLModel, table=True):
    """A notebook server the hub started: what it holds of a pool, so deployments and notebooks share admission."""

    __tablename__ = "notebooks"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(unique=True, index=True)  # "user" or "user/server"
    user: str = SQLField(index=True)
    profile: str  # the profile's slug
    pool_id: int = SQLField(foreign_key="pools.id", ondelete="RESTRICT", index=True)
    cpu: float = 1.0
    memory_mib: int = 2048
    gpus: int = 0
    gpu_memory_mib: int = 0
    gpu_cores: int = 0
    started_at: datetime = _ts()


class NotebookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    user: str
    profile: str
    pool: str
    resources: Resources
    started_at: datetime


class Autoscale(BaseModel):
    model_config = ConfigDict(frozen=True)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1, le=64)
    target_inflight: float = Field(default=4.0, gt=0)  # requests in flight per replica

    @model_validator(mode="after")
    def _ordered(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class DeploymentCreate(BaseModel):
    """One-click deploy: a model version on an image in a pool, with replicas or autoscale bounds."""

    name: Name
    model: str = Field(min_length=1)
    model_version: int | None = Field(default=None, ge=1)  # None: the newest
    image: str | None = None  # None: the pool's default runtime
    image_version: str | None = None  # None: the newest registered
    pool: str = "local"
    cluster: str | None = None  # None: the pool's; given, it must be the pool's
    runtime_args: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    replicas: int = Field(default=1, ge=0, le=64)
    autoscale: Autoscale | None = None


class DeploymentPublic(BaseModel):
    name: str
    model: str
    model_version: int
    image: str
    image_version: str
    runtime: str
    pool: str
    cluster: str = DEFAULT_CLUSTER
    runtime_args: list[str]
    resources: Resources
    replicas: int
    autoscale: Autoscale | None
    status: str
    ready_replicas: int
    endpoints: list[str]
    message: str
    created_at: datetime
    status_at: datetime


# ---------------------------------------------------------------------------------------------------- events


class Event(SQLModel, table=True):
    """What happened to an object, in words; kept after the object is deleted."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_object", "kind", "name", "created_at"),)
    id: int | None = SQLField(default=None, primary_key=True)
    kind: str  # "deployment", …
    name: str
    type: str = "Normal"  # Normal | Warning
    reason: str
    message: str
    created_at: datetime = _ts()


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    kind: str
    name: str
    type: str
    reason: str
    message: str
    created_at: datetime


# ---------------------------------------------------------------------------------------------------- keys, usage


class ApiKey(SQLModel, table=True):
    """An API key for the gateway. Only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(unique=True, index=True)
    prefix: str  # the first characters, to recognise a key in lists and logs
    key_hash: str = SQLField(unique=True, index=True)
    created_at: datetime = _ts()
    revoked_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime, nullable=True)
    last_used_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime, nullable=True)


class ApiKeyCreate(BaseModel):
    name: Name


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str  # the secret; shown this once


class UsageRecord(SQLModel, table=True):
    """One gateway request: who asked which deployment for how many tokens, and how long it took."""

    __tablename__ = "usage_records"
    __table_args__ = (
        sa.Index("ix_usage_key_time", "api_key_id", "created_at"),
        sa.Index("ix_usage_deployment_time", "deployment", "created_at"),
    )
    id: int | None = SQLField(default=None, primary_key=True)
    api_key_id: int | None = SQLField(default=None, foreign_key="api_keys.id", ondelete="SET NULL")
    deployment: str
    endpoint: str  # chat.completions | completions
    stream: bool = False
    status_code: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # counted by the gateway because the runtime reported no usage
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    created_at: datetime = _ts(index=True)


class UsageSummary(BaseModel):
    key: str | None
    deployment: str
    day: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class Traffic(BaseModel):
    """One minute of one deployment's gateway traffic."""

    minute: str  # "YYYY-MM-DD HH:MM", UTC
    requests: int
    errors: int  # answered with status >= 400
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float  # mean
    ttft_ms: float | None  # mean over streamed requests
