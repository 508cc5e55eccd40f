"""Cove's value types: what a replica asks for, how it scales, what a pool is, and the words for kinds and states.

Pure (pydantic and the standard library only): the tables (``studio.models``), the services, the pure builders
(``pools``, ``runtimes``, ``pods``, the Kubernetes manifests, notebook profiles) and the faces all speak these, so
the builders never import the database. Values are immutable; change one by making another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CLUSTER = "default"  # the control plane's own backend (COVE_BACKEND); other clusters are registered


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
    """A deployment's state, as the controller last saw it."""

    PENDING = "Pending"  # accepted, nothing started yet
    STARTING = "Starting"  # processes/pods exist, none ready
    READY = "Ready"  # at least one replica answers
    FAILED = "Failed"  # cannot start: see message
    STOPPED = "Stopped"  # scaled to zero
    DELETING = "Deleting"


class BuildStatus(enum.StrEnum):
    """An image built in the cluster from its Dockerfile."""

    NONE = ""  # built elsewhere: nothing to build
    PENDING = "Pending"  # registered, no build started
    BUILDING = "Building"
    READY = "Ready"  # pushed to the registry
    FAILED = "Failed"  # see the message; `cove image rebuild` tries again


class JobStatus(enum.StrEnum):
    """A fine-tune job's state."""

    QUEUED = "Queued"  # accepted; waiting for the controller, or for room in its pool (a Kueue queue)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"  # trained, evaluated and registered as a model version
    FAILED = "Failed"  # see the message; `cove finetune resume` goes on from the last checkpoint
    CANCELLED = "Cancelled"  # stopped by its owner; resumable like a failed one

    @property
    def finished(self) -> bool:
        return self in JobStatus.finished_states()

    @staticmethod
    def finished_states() -> tuple[JobStatus, ...]:
        return (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class SourceKind(enum.StrEnum):
    """Where a model version's files came from."""

    HF = "hf"  # a Hugging Face Hub repo, resolved into the model cache
    LOCAL = "local"  # a folder on this machine
    FINETUNE = "finetune"  # a fine-tune's output


class Role(enum.StrEnum):
    """What a person may do beyond their own objects."""

    ADMIN = "admin"  # pools, images with local commands, clusters, users, and everyone's objects
    MEMBER = "member"  # their own objects and their groups'; reads the shared catalog


class Principal(BaseModel):
    """Who acts: every service call that reads or changes someone's objects is given one (``studio.access``)."""

    model_config = ConfigDict(frozen=True)
    name: str
    role: Role = Role.MEMBER
    groups: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class Resources(BaseModel):
    """What one replica (or one notebook server) asks of its pool."""

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

    @property
    def gpu_devices(self) -> int:
        """How many GPU devices a replica sees: its whole GPUs, or the one GPU its memory slice lives on."""
        return self.gpus or (1 if self.gpu_memory_mib else 0)


class Autoscale(BaseModel):
    """Replicas between ``min_replicas`` and ``max_replicas``, enough that each carries ``target_inflight``. With
    ``min_replicas`` 0 the deployment sleeps (0 replicas, its claim on the pool given back) once no request reached
    it for ``idle_s``, and the gateway wakes it when one does."""

    model_config = ConfigDict(frozen=True)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1, le=64)
    target_inflight: float = Field(default=4.0, gt=0)  # requests in flight per replica
    idle_s: float = Field(default=300.0, gt=0)  # without a request this long, a minimum-0 deployment sleeps

    @model_validator(mode="after")
    def _ordered(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class PoolBase(BaseModel):
    """A pool: named capacity with a purpose, a device description, a sharing mode, quotas, who may use it, where
    its workloads land (placement) and the cluster they run on. Admission (``studio.pools``) and notebook profiles
    read it; the table, its configured form (``PoolSpec``) and its public form add to it."""

    name: str
    purpose: Purpose = Purpose.ANY
    sharing: Sharing = Sharing.NONE
    gpu_model: str = ""
    gpu_count: int = Field(default=0, ge=0)
    gpu_memory_mib: int = Field(default=0, ge=0)  # per GPU
    slice_mib: int = Field(default=128, ge=1)  # smallest HAMi memory slice
    cpu_cores: float = Field(default=0, ge=0)
    memory_mib: int = Field(default=0, ge=0)
    quota_gpus: float | None = Field(default=None, ge=0)
    quota_cpu: float | None = Field(default=None, ge=0)
    quota_memory_mib: int | None = Field(default=None, ge=0)
    groups: list[str] = Field(default_factory=list)  # empty: everyone
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    cluster: str = DEFAULT_CLUSTER  # the cluster its workloads run on


# What a backend finds of a pool by itself (the machine; labelled nodes): the rest is configured.
CAPACITY_FIELDS = ("cpu_cores", "memory_mib", "gpu_model", "gpu_count", "gpu_memory_mib")


@dataclass(frozen=True)
class Route:
    """A deployment the gateway may send requests to: its ready replicas' endpoints, the model name its runtime
    expects in requests, which runtime that is (the request fields it knows), and the model version's folder (its
    tokenizer counts what the runtime does not)."""

    name: str
    upstream_model: str
    endpoints: tuple[str, ...]
    created: int = 0  # epoch seconds, for /v1/models
    runtime: RuntimeKind = RuntimeKind.CUSTOM  # unknown: requests are forwarded as they are
    model_path: str = ""  # "": no tokenizer to count with
    model_version: int = 0  # the version its replicas serve (usage and metrics are kept per version)
    deployment: str = ""  # the deployment whose replicas these are, when not ``name`` (a canary's)
    canary: Route | None = None  # the staging version's replicas, answering ``canary_share`` % of requests
    canary_share: int = 0
    embeds: bool = False  # an embedding model: it answers /v1/embeddings, and no chat or completions
    max_tokens_cap: int | None = None  # the deployment's caps (None: the studio's defaults)
    n_cap: int | None = None
