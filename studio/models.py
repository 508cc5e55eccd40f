"""Cove's tables and their families.

Each noun has one ``…Base`` (the fields users describe it by), shared by its table (``Deployment``), its ``…Create``
(what a user may ask for, validated) and its ``…Public`` (what is shown; detached from any session); each adds only
what is its own. Value types (``Resources``, ``Autoscale``, the enums) live in ``studio.values``; a value column is
kept as JSON (``ValueJSON``) and an enum column as its value (``EnumText``), and both read back typed. Desired
state is what users write; observed state (``Observed``) is written only by the controller.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from sqlmodel import Field, SQLModel
from sqlmodel.main import SQLModelConfig

from studio.benchmark import BenchResult, BenchSpec
from studio.db import EnumText, UTCDateTime, ValueJSON, utcnow
from studio.finetuning import TrainSettings
from studio.gate import GateConfig
from studio.kvlog import KvFigures
from studio.limits import LimitScope
from studio.names import ImageRef, Name, Version
from studio.prices import BudgetScope, BudgetUnit
from studio.scoring import Example, ScorerSpec
from studio.specs import Recommendation
from studio.tokens import LengthStats, Segment
from studio.values import (
    DEFAULT_CLUSTER,
    Autoscale,
    BuildStatus,
    JobStatus,
    PoolBase,
    Purpose,
    Resources,
    Role,
    RuntimeKind,
    Sharing,
    SourceKind,
    Status,
)

_FROM = re.compile(r"^\s*FROM\s+\S", re.IGNORECASE | re.MULTILINE)
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS-1123 label


# What a user may ask for (``…Create``): an unknown field is refused by name, never silently dropped.
CREATE = SQLModelConfig(extra="forbid")


def _json(default: Any = None) -> Any:
    """A JSON column (lists, mappings); a None default makes it nullable."""
    if default is None:
        return Field(default=None, sa_type=sa.JSON)
    return Field(default_factory=default, sa_type=sa.JSON)


def _enum(default: Any) -> Any:
    return Field(default=default, sa_type=EnumText(type(default)))


def _ts(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


# ---------------------------------------------------------------------------------------------------- users


class UserBase(SQLModel):
    """A person. Embedded, they log in with a password; with an OpenID Connect provider, their role and groups
    come from its claims at each login."""

    name: Name = Field(unique=True, index=True)
    role: Role = _enum(Role.MEMBER)
    groups: list[str] = _json(list)
    disabled: bool = False  # a disabled user cannot log in, and their sessions and keys stop working


class User(UserBase, table=True):
    __tablename__ = "users"
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str | None = None  # argon2; None: no password login (a provider's user, or not set yet)
    created_at: datetime = _ts()
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class UserCreate(UserBase):
    model_config = CREATE

    password: str | None = Field(default=None, min_length=8)


class UserPublic(UserBase):
    created_at: datetime
    last_login_at: datetime | None
    has_password: bool = False


class Shared(SQLModel):
    """Shared with a group: its members may see and change the object as its owner may (``studio.access``)."""

    group: str | None = Field(default=None, index=True)


class Owned(Shared):
    """Whose an object is: a user's name (``studio.access``). Set by the service from the acting principal."""

    owner: str = Field(foreign_key="users.name", ondelete="RESTRICT", index=True)


# ---------------------------------------------------------------------------------------------------- models


class ModelBase(Shared):
    name: Name = Field(unique=True, index=True)
    description: str = ""


class GateFailing(BaseModel):
    """Production failed its gate when it was evaluated again (``studio.gate.watch``): the version, the
    evaluation, the failing checks (``studio.gate.Check`` as mappings) and since when."""

    version: int
    evaluation: int
    checks: list[dict[str, Any]]
    since: datetime


class Model(ModelBase, Owned, table=True):
    __tablename__ = "models"
    id: int | None = Field(default=None, primary_key=True)
    # How to deploy it, per runtime (``studio.specs.Recommendation``), kept in the ModelHub's camelCase form.
    recommendations: list[dict[str, Any]] = _json(list)
    # What a version must show to become production (``studio.gate.GateConfig``); empty: promotes freely.
    gate: GateConfig = Field(default_factory=GateConfig, sa_type=ValueJSON(GateConfig))
    # Set by the controller while the production version fails its re-evaluation; None: passing, or not watched.
    gate_failing: GateFailing | None = Field(default=None, sa_type=ValueJSON(GateFailing))
    created_at: datetime = _ts()


class ModelCreate(ModelBase):
    """Register a model from ``hf:org/name[@revision]``, ``org/name``, or a local folder."""

    model_config = CREATE

    source: str = Field(min_length=1)
    new_version: bool = False  # append a version to an existing model instead of refusing
    recommendations: list[Recommendation] = []  # a new model's; a new version keeps the model's


class ModelVersionBase(SQLModel):
    version: int
    source_kind: SourceKind = _enum(SourceKind.LOCAL)
    source: str  # repo id, or the folder given
    revision: str | None = None  # commit hash for hf sources
    path: str  # the folder the runtime loads
    size_bytes: int = 0
    architecture: str = ""  # from config.json "architectures"
    model_type: str = ""
    # Where Cove made it from (``studio.finetuning.Lineage`` as JSON); None: imported, not made here.
    lineage: dict[str, Any] | None = _json()
    created_at: datetime = _ts()


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("model_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", ondelete="CASCADE", index=True)
    # An adapter version is served on this version of its base (vLLM's LoRA); None: a full model folder.
    adapter_of_id: int | None = Field(default=None, foreign_key="model_versions.id", ondelete="RESTRICT")


class ModelVersionPublic(ModelVersionBase):
    adapter_of: str | None = None  # "model@version" of the base an adapter version is served on


class ModelPublic(ModelBase, Owned):
    created_at: datetime
    versions: list[ModelVersionPublic]
    recommendations: list[Recommendation] = []  # how to deploy it, per runtime (`recommended:` in a spec)
    aliases: dict[str, int] = {}  # alias (production, staging) → the version it points at
    gate: GateConfig = GateConfig()
    gate_failing: GateFailing | None = None  # the production version failed its scheduled re-evaluation

    @property
    def latest(self) -> ModelVersionPublic:
        return self.versions[-1]


class AliasMove(SQLModel, table=True):
    """One move of a model's alias (``production``, ``staging``) onto a version: the newest per alias is where it
    points now, and the moves before it are its history (a rollback walks back through them)."""

    __tablename__ = "alias_moves"
    __table_args__ = (sa.Index("ix_alias_moves_model_alias", "model_id", "alias", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", ondelete="CASCADE")
    alias: str
    version_id: int = Field(foreign_key="model_versions.id", ondelete="CASCADE")
    actor: str | None = None  # who moved it
    rollback: bool = False  # a rollback: undoes the move before it
    override_reason: str | None = None  # an admin promoted past a refusing gate, and why
    created_at: datetime = _ts()


class AliasMovePublic(SQLModel):
    alias: str
    version: int
    actor: str | None
    rollback: bool
    override_reason: str | None
    created_at: datetime


class VersionResults(BaseModel):
    """A version's results as a promotion is given them (``studio.gate.Results``): scores by metric, whether it met
    the gate's SLO (None: not measured), and where they came from."""

    model_config = ConfigDict(extra="forbid")

    scores: dict[str, float] = {}
    slo_met: bool | None = None
    source: str = ""


class PromoteRequest(BaseModel):
    """Promote ``version`` to ``to``: the gate judges ``results`` (by version number: the candidate's and the
    current production's); an admin may pass a refusing gate with ``override_reason``."""

    model_config = ConfigDict(extra="forbid")

    version: int = pydantic.Field(ge=1)
    to: str = "production"
    override_reason: str | None = None
    results: dict[int, VersionResults] = {}


class Promotion(BaseModel):
    """What a promotion did: the alias, the version it moved to and from, the gate's checks, whether an admin
    overrode a refusal, and the deployments that follow the alias (the controller rolls them)."""

    model: str
    alias: str
    version: int
    previous: int | None
    checks: list[dict[str, Any]] = []  # ``studio.gate.Check`` as a mapping
    overridden: bool = False
    deployments: list[str] = []


# ---------------------------------------------------------------------------------------------------- datasets


class DatasetBase(Shared):
    name: Name = Field(unique=True, index=True)
    description: str = ""


class Dataset(DatasetBase, Owned, table=True):
    __tablename__ = "datasets"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts()


class DatasetVersionBase(SQLModel):
    """One immutable version of a dataset: its files, content-addressed, in the dataset store."""

    version: int
    sha256: str = Field(index=True)  # of the files' contents (names and bytes), in split order
    source_kind: str  # upload | folder | hf
    source: str  # the file's name, the folder, or the Hub repo id
    revision: str | None = None  # the Hub commit it resolved to (never a branch)
    path: str  # the version's folder in the dataset store
    builder: str  # how ``datasets`` reads the files: json | csv | parquet
    files: dict[str, list[str]] = _json(dict)  # split → file paths relative to ``path``
    splits: dict[str, int] = _json(dict)  # split → rows
    rows: int = 0
    size_bytes: int = 0
    format: str  # ``studio.chats.Format``
    columns: dict[str, str] = _json(dict)  # the column map: a format part → the column it is read from
    report: dict[str, Any] = _json(dict)  # the validation summary (problems by line, duplicates, overlap)
    created_at: datetime = _ts()


class DatasetVersion(DatasetVersionBase, table=True):
    __tablename__ = "dataset_versions"
    __table_args__ = (sa.UniqueConstraint("dataset_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="datasets.id", ondelete="CASCADE", index=True)


class DatasetVersionPublic(DatasetVersionBase):
    pass


class DatasetPublic(DatasetBase, Owned):
    created_at: datetime
    versions: list[DatasetVersionPublic]

    @property
    def latest(self) -> DatasetVersionPublic:
        return self.versions[-1]


class DatasetCreate(DatasetBase):
    """Register a dataset (or, with ``new_version``, a new version of one) from a file or folder on the server or
    ``hf:org/name[@revision]``; an uploaded file comes with the same fields. ``format`` and ``columns`` correct
    what is detected."""

    model_config = CREATE

    source: str = Field(min_length=1)
    format: str | None = None  # ``studio.chats.Format``; None: detected from the columns
    columns: dict[str, str] = {}  # a format part → the column it is read from
    new_version: bool = False


class DatasetAdded(SQLModel):
    """What adding a dataset did: the version made, or ``unchanged`` (the newest version has the same content)."""

    dataset: DatasetPublic
    version: int
    unchanged: bool = False


class PreviewRow(SQLModel):
    line: int
    raw: Any  # the row as stored (a JSONL line that is not JSON: its text)
    messages: list[dict[str, str]] | None = None  # None: not fit to train on
    problem: str | None = None
    segments: list[Segment] | None = None  # with a base model: what is trained on


class DatasetPreview(SQLModel):
    dataset: str
    version: int
    split: str
    format: str
    columns: dict[str, str]
    rows: list[PreviewRow]


class DatasetLengths(SQLModel):
    """Token lengths of a version's split rendered with a base model's chat template."""

    dataset: str
    version: int
    split: str
    model: str
    model_version: int
    stats: LengthStats


# ---------------------------------------------------------------------------------------------------- fine-tunes


class FineTuneBase(Shared):
    name: Name = Field(unique=True, index=True)
    resources: Resources = Field(default_factory=Resources, sa_type=ValueJSON(Resources))  # of the training process


class FineTuneObserved(SQLModel):
    """How a job goes: written by the controller and by the job's own progress reports."""

    status: JobStatus = _enum(JobStatus.QUEUED)
    message: str = ""
    progress: dict[str, Any] = _json(dict)  # the newest ``studio.finetuning.Progress``
    history: list[dict[str, Any]] = _json(list)  # the loss curve: {step, loss, eval_loss, learning_rate}
    metrics: dict[str, Any] = _json(dict)  # ``studio.finetuning.Metrics`` once evaluated
    attempt: int = 1  # a resume is a new attempt from the last checkpoint
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class FineTune(FineTuneBase, Owned, FineTuneObserved, table=True):
    __tablename__ = "finetunes"
    id: int | None = Field(default=None, primary_key=True)
    settings: TrainSettings = Field(default_factory=TrainSettings, sa_type=ValueJSON(TrainSettings))
    base_version_id: int = Field(foreign_key="model_versions.id", ondelete="RESTRICT", index=True)
    dataset_version_id: int = Field(foreign_key="dataset_versions.id", ondelete="RESTRICT", index=True)
    pool_id: int = Field(foreign_key="pools.id", ondelete="RESTRICT", index=True)
    target_model: str  # the model the result becomes a new version of
    result_version_id: int | None = Field(default=None, foreign_key="model_versions.id", ondelete="SET NULL")
    cancelling: bool = False  # its owner asked it to stop
    report_hash: str = ""  # SHA-256 of the job's own token, which its progress reports carry
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class FineTuneCreate(FineTuneBase):
    """One-click fine-tune: a base model version, a dataset version, settings (defaults by model size), a pool."""

    model_config = CREATE

    model: str = Field(min_length=1)  # the base model
    model_version: int | None = Field(default=None, ge=1)  # None: the newest
    dataset: str = Field(min_length=1)
    dataset_version: int | None = Field(default=None, ge=1)  # None: the newest
    pool: str = "local"
    target_model: str | None = None  # None: a new version of the base model
    settings: dict[str, Any] = {}  # ``TrainSettings`` fields, laid over ``finetuning.defaults_for`` the base


class FineTunePreview(BaseModel):
    """What a job would be, before it is created: its settings with the defaults filled in, what LoRA may target in
    the base, and a rough estimate of its memory and time; whether it fits its pool now."""

    settings: TrainSettings
    parameters: int  # the base's
    targets: list[str]  # the base's linear modules LoRA may target
    rows: int  # the dataset version's training rows
    steps: int
    memory_mib: int  # estimated peak memory of the training process
    seconds: float  # estimated training time (rough: see ``finetuning.estimate``)
    fits: bool
    free: str  # what the pool has free, in words
    warnings: list[str] = []  # what would likely go wrong (too little memory asked for)


class FineTunePublic(FineTuneBase, Owned, FineTuneObserved):
    settings: TrainSettings
    model: str
    model_version: int
    dataset: str
    dataset_version: int
    pool: str
    cluster: str = DEFAULT_CLUSTER
    target_model: str
    result_version: int | None = None  # the version it registered
    cancelling: bool = False
    created_at: datetime


# ---------------------------------------------------------------------------------------------------- evaluations


class EvaluationBase(Shared):
    """An evaluation of a model version, served by ``deployment``, on a dataset version's split."""

    split: str = "eval"  # a split of the dataset version, or "held_out": the rows a fine-tune held out of train
    deployment: str = Field(min_length=1)  # the candidate's deployment, asked through the gateway
    judge: str | None = None  # with ``against``: the judge's deployment for pairwise judgement
    against: str | None = None  # the production version's deployment the candidate is compared with
    limit: int | None = Field(default=None, ge=1)  # the first N rows only


class EvaluationObserved(SQLModel):
    """How a run goes and what it found: written by the controller from the run's progress and result."""

    status: JobStatus = _enum(JobStatus.QUEUED)
    message: str = ""
    done: int = 0
    total: int = 0
    summary: dict[str, Any] = _json(dict)  # scorer → ``studio.scoring.ScorerSummary``
    errors: int = 0  # examples the candidate did not answer
    timings: dict[str, float] = _json(dict)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class Evaluation(EvaluationBase, Owned, EvaluationObserved, table=True):
    """One evaluation run. Its examples are a JSON column read only when one evaluation is shown (lists leave it
    out: ``services.evaluations``), so the database stays the one thing every part reads results from."""

    __tablename__ = "evaluations"
    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="model_versions.id", ondelete="CASCADE", index=True)
    dataset_version_id: int = Field(foreign_key="dataset_versions.id", ondelete="CASCADE", index=True)
    scorers: list[dict[str, Any]] = _json(list)  # ``studio.scoring.ScorerSpec``s
    examples: list[dict[str, Any]] = _json(list)  # ``studio.scoring.Example``s
    key_name: str = ""  # the gateway key the run asks with, revoked when it ends
    created_at: datetime = _ts()


class EvaluationCreate(EvaluationBase):
    """Evaluate a model version (served by ``deployment``) on a dataset version's split with ``scorers``."""

    model_config = CREATE

    model: str = Field(min_length=1)
    model_version: int | None = Field(default=None, ge=1)  # None: the newest
    dataset: str = Field(min_length=1)
    dataset_version: int | None = Field(default=None, ge=1)  # None: the newest
    scorers: list[ScorerSpec] = Field(min_length=1)


class EvaluationPublic(EvaluationBase, Owned, EvaluationObserved):
    id: int
    model: str
    model_version: int
    dataset: str
    dataset_version: int
    scorers: list[ScorerSpec]
    created_at: datetime
    examples: list[Example] = []  # only when one evaluation is asked for


# ---------------------------------------------------------------------------------------------------- benchmark runs


class BenchmarkRunBase(Shared):
    """A serving benchmark of a deployment, through the gateway or straight to one of its replicas."""

    deployment: str = Field(min_length=1)
    target: str = Field(default="gateway", regex="^(gateway|replica)$")  # where requests are sent
    replica: int = Field(default=0, ge=0)  # which replica (its index among the ready ones), for target replica


class BenchmarkRunObserved(SQLModel):
    """How a run goes and what it found: written by the controller from the run's progress and result."""

    status: JobStatus = _enum(JobStatus.QUEUED)
    message: str = ""
    steps_done: int = 0
    progress: str = ""  # the last line the run said
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class BenchmarkRun(BenchmarkRunBase, Owned, BenchmarkRunObserved, table=True):
    """One benchmark run, of the model version its deployment served when it was asked for."""

    __tablename__ = "benchmark_runs"
    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="model_versions.id", ondelete="CASCADE", index=True)
    spec: dict[str, Any] = _json(dict)  # ``studio.benchmark.BenchSpec``
    tokenizer: str | None = None  # the model folder whose tokenizer sizes the prompts
    result: dict[str, Any] | None = _json()  # ``studio.benchmark.BenchResult``
    max_rate: float | None = None  # the sweep's answer (its largest passing rate or concurrency), for lists
    key_name: str = ""  # the gateway key the run asks with, revoked when it ends
    created_at: datetime = _ts()


class BenchmarkRunCreate(BenchmarkRunBase):
    """Benchmark ``deployment`` with ``spec``; its workload's lengths from a dataset version's rows when
    ``dataset`` is given; prompts sized with the deployment's tokenizer unless ``tokenizer`` is false."""

    model_config = CREATE

    spec: BenchSpec
    dataset: str | None = None
    dataset_version: int | None = Field(default=None, ge=1)  # None: the newest
    tokenizer: bool = True


class BenchmarkRunPublic(BenchmarkRunBase, Owned, BenchmarkRunObserved):
    id: int
    model: str
    model_version: int
    spec: BenchSpec
    tokenizer: str | None = None
    result: BenchResult | None = None
    max_rate: float | None = None
    created_at: datetime


# ---------------------------------------------------------------------------------------------------- images


class ImageBase(SQLModel):
    """A runtime image. ``local_command`` makes it runnable on the local backend; it may use the placeholders
    ``{model}`` (the model's folder), ``{model_id}`` (its Hub id, ``repo@revision``), ``{host}``, ``{port}`` and
    ``{name}`` (the deployment's name, which requests carry as their model). ``dockerfile`` is kept for building on
    Kubernetes: such an image is built in the cluster and pushed to ``ref`` before deployments on Kubernetes start."""

    name: Name = Field(index=True)
    version: Version  # the container tag
    runtime: RuntimeKind = _enum(RuntimeKind.CUSTOM)
    local_command: list[str] | None = _json()
    health_path: str = "/health"
    dockerfile: str | None = None
    description: str = ""


class Image(ImageBase, table=True):
    __tablename__ = "images"
    __table_args__ = (sa.UniqueConstraint("name", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    ref: str  # container image reference without tag
    build_status: BuildStatus = _enum(BuildStatus.NONE)
    build_message: str = ""
    build_attempt: int = 0
    builtin: bool = False
    created_at: datetime = _ts()


class ImageCreate(ImageBase):
    """A custom image; ``ref`` None: built from ``dockerfile`` and pushed to ``COVE_REGISTRY/<name>``."""

    model_config = CREATE

    ref: ImageRef | None = None

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


class ImagePublic(ImageBase):
    ref: str
    build_status: BuildStatus = BuildStatus.NONE
    build_message: str = ""
    builtin: bool = False

    @property
    def reference(self) -> str:
        return f"{self.ref}:{self.version}"


# ---------------------------------------------------------------------------------------------------- clusters


class ClusterBase(SQLModel):
    """A Kubernetes cluster registered by its kubeconfig; deployments on its pools run there."""

    name: Name = Field(unique=True, index=True)
    context: str = ""  # "": the kubeconfig's current context
    namespace: str = pydantic.Field(default="cove", pattern=_NAMESPACE)


class Cluster(ClusterBase, table=True):
    __tablename__ = "clusters"
    id: int | None = Field(default=None, primary_key=True)
    kubeconfig: str  # the kubeconfig's YAML, credentials included, sealed: never shown
    server: str = ""  # the API server's URL, from the kubeconfig
    message: str = ""  # the last problem reaching it ("": it answered)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = _ts()


class ClusterCreate(ClusterBase):
    """Register a cluster: a kubeconfig (its text), optionally one of its contexts, and the namespace Cove uses."""

    model_config = CREATE

    kubeconfig: str = Field(min_length=1)

    @model_validator(mode="after")
    def _not_default(self) -> ClusterCreate:
        if self.name == DEFAULT_CLUSTER:
            raise ValueError(f"{DEFAULT_CLUSTER!r} names the control plane's own backend: pick another name")
        return self


class ClusterPublic(ClusterBase):
    server: str
    message: str
    checked_at: datetime | None
    created_at: datetime

    @property
    def state(self) -> str:
        """Whether it answered the controller's last capacity read, in words."""
        return "not checked yet" if self.checked_at is None else (self.message or "answering")


# ---------------------------------------------------------------------------------------------------- pools


class Pool(SQLModel, PoolBase, table=True):
    """A pool (``studio.values.PoolBase``) as a row: the fields below say only how each is stored."""

    __tablename__ = "pools"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    purpose: Purpose = _enum(Purpose.ANY)
    sharing: Sharing = _enum(Sharing.NONE)
    groups: list[str] = _json(list)
    node_selector: dict[str, str] = _json(dict)
    tolerations: list[dict[str, Any]] = _json(list)
    cluster: str = Field(default=DEFAULT_CLUSTER, index=True)
    detected: bool = False  # made from what a backend found (the machine; labelled nodes), not configured
    created_at: datetime = _ts()


class PoolSpec(PoolBase):
    """A pool as configured (``COVE_POOLS``; the Helm chart's ``pools``): camelCase keys, as in Helm values, or the
    field names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    name: str = pydantic.Field(pattern=_NAMESPACE)


class PoolPublic(PoolBase):
    model_config = ConfigDict(from_attributes=True)
    detected: bool = False


# ---------------------------------------------------------------------------------------------------- deployments


class DeploymentBase(Shared):
    name: Name = Field(unique=True, index=True)
    runtime_args: list[str] = _json(list)
    resources: Resources = Field(default_factory=Resources, sa_type=ValueJSON(Resources))  # of one replica
    replicas: int = 1
    autoscale: Autoscale | None = Field(default=None, sa_type=ValueJSON(Autoscale))  # None: a fixed count
    follows: str | None = None  # an alias of its model (production, staging): it runs whatever version that is
    # The most a request may ask of it: max_tokens (what it reserves against token limits when it names none) and n.
    # None: the studio's defaults (COVE_LIMITS_MAX_TOKENS, COVE_LIMITS_MAX_N). The gateway refuses more with 400.
    max_tokens_cap: int | None = Field(default=None, ge=1, le=10_000_000)
    n_cap: int | None = Field(default=None, ge=1, le=128)


class Observed(SQLModel):
    """What the controller last saw of a deployment; written by the controller only."""

    status: Status = _enum(Status.PENDING)
    ready_replicas: int = 0
    endpoints: list[str] = _json(list)  # of the ready replicas
    message: str = ""
    upstream_model: str = ""  # the model name the runtime expects in requests
    # The pool's GPUs each running replica holds, where the backend placed it (local): admission keeps them there.
    placed: list[list[int]] = _json(list)


class Sized(SQLModel):
    """What a deployment's memory plan added (``services.plans.size_deployment``) and what its runtime reported:
    the plan's flags its runtime args left out (run after them), the KV figures the plan predicted, and those the
    runtime logged once a replica was ready (``studio.kvlog``; written by the controller)."""

    planned_args: list[str] = _json(list)
    kv_planned: KvFigures | None = Field(default=None, sa_type=ValueJSON(KvFigures))
    kv_observed: KvFigures | None = Field(default=None, sa_type=ValueJSON(KvFigures))


class Waking(SQLModel):
    """When a deployment was last asked for and woken (scale to zero): the gateway writes ``last_request_at`` in its
    batched flush, ``wake_requested_at`` when it holds a request for a sleeping deployment, and ``cold_start_s``
    (held request to first token) after a wake; the controller writes ``wake_refused`` when the pool has no room
    to wake it (empty once it could)."""

    last_request_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    wake_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    wake_refused: str = ""
    cold_start_s: float | None = None


class Deployment(DeploymentBase, Owned, Observed, Sized, Waking, table=True):
    __tablename__ = "deployments"
    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="model_versions.id", ondelete="RESTRICT", index=True)
    image_id: int = Field(foreign_key="images.id", ondelete="RESTRICT", index=True)
    pool_id: int = Field(foreign_key="pools.id", ondelete="RESTRICT", index=True)
    generation: int = 1  # bumped on every change of desired state
    # The deployment whose canary this one is (it serves that one's share of requests, and goes with it).
    canary_of: int | None = Field(default=None, foreign_key="deployments.id", ondelete="CASCADE")
    canary_share: int = 0  # percent of its requests sent to its model's staging version (its canary deployment)
    # The autoscaler's scale-down window, kept so a restarted controller holds the count it chose: [[ISO time,
    # replicas], …], highest first (only recommendations no later one matched or beat). Written by the controller.
    scale_window: list[list[Any]] = _json(list)
    deleting: bool = False
    observed_generation: int = 0
    status_at: datetime = _ts()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class DeploymentCreate(DeploymentBase):
    """One-click deploy: a model version on an image in a pool, with replicas or autoscale bounds."""

    model_config = CREATE

    model: str = Field(min_length=1)
    model_version: int | None = Field(default=None, ge=1)  # None: the newest (or the version ``follows`` names)
    image: str | None = None  # None: the pool's default runtime
    image_version: str | None = None  # None: the newest registered
    pool: str = "local"
    cluster: str | None = None  # None: the pool's; given, it must be the pool's
    replicas: int = Field(default=1, ge=0, le=64)


class DeploymentPublic(DeploymentBase, Owned, Observed, Sized, Waking):
    generation: int = 1  # bumped on every change of desired state: the API's ETag
    model: str
    model_version: int
    image: str
    image_version: str
    runtime: RuntimeKind
    pool: str
    cluster: str = DEFAULT_CLUSTER
    created_at: datetime
    status_at: datetime
    canary_share: int = 0  # percent of its requests its canary (the staging version) answers

    @property
    def sleeping(self) -> bool:
        """Scaled to zero by its autoscaler (minimum 0): the next request wakes it."""
        return self.replicas == 0 and self.autoscale is not None and self.autoscale.min_replicas == 0

    @property
    def shown_status(self) -> str:
        """The status as the faces show it: "Sleeping" for a deployment scaled to zero that a request wakes."""
        return "Sleeping" if self.sleeping and self.status == Status.STOPPED else str(self.status)

    @property
    def sleep_words(self) -> str:
        """For a sleeping deployment, what waking it costs ('' for any other)."""
        if not self.sleeping:
            return ""
        if self.cold_start_s is None:
            return "sleeping: the next request wakes it"
        return f"sleeping: the next request wakes it; last cold start {self.cold_start_s:.1f} s"


# ---------------------------------------------------------------------------------------------------- notebooks


class NotebookBase(SQLModel):
    """A notebook server the hub started: what it holds of a pool, so deployments and notebooks share admission."""

    name: str = Field(unique=True, index=True)  # "user" or "user/server"
    user: str = Field(index=True)
    profile: str  # the profile's slug
    resources: Resources = Field(default_factory=Resources, sa_type=ValueJSON(Resources))
    started_at: datetime = _ts()


class Notebook(NotebookBase, table=True):
    __tablename__ = "notebooks"
    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pools.id", ondelete="RESTRICT", index=True)


class NotebookPublic(NotebookBase):
    pool: str


# ---------------------------------------------------------------------------------------------------- events


class EventBase(SQLModel):
    """What happened to an object, in words; kept after the object is deleted."""

    kind: str  # "deployment", "image", …
    name: str
    type: str = "Normal"  # Normal | Warning
    reason: str
    message: str
    actor: str | None = Field(default=None, index=True)  # who did it; None: Cove itself (the controller)
    created_at: datetime = _ts()


class Event(EventBase, table=True):
    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_object", "kind", "name", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)


class EventPublic(EventBase):
    pass


# ---------------------------------------------------------------------------------------------------- keys, usage


class ApiKeyBase(SQLModel):
    """A key for the gateway and, with ``scopes``, a personal access token for the API (``studio.access``)."""

    name: Name = Field(unique=True, index=True)
    deployments: list[str] | None = _json()  # the only deployments it may call; None: all its owner may use
    scopes: list[str] | None = _json()  # what it may do through the API (e.g. "deployments:write"); None: nothing
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class ApiKey(ApiKeyBase, table=True):
    """An API key for the gateway, owned by a user. Only its SHA-256 is stored; the key itself is shown once."""

    __tablename__ = "api_keys"
    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(foreign_key="users.name", ondelete="RESTRICT", index=True)
    prefix: str  # the first characters, to recognise a key in lists and logs
    key_hash: str = Field(unique=True, index=True)
    created_at: datetime = _ts()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class ApiKeyCreate(ApiKeyBase):
    model_config = CREATE

    pass


class ApiKeyPublic(ApiKeyBase):
    owner: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str  # the secret; shown this once


class LimitBase(SQLModel):
    """A rate limit on a key, a user, a group or a deployment (``studio.limits``); a field left empty limits nothing."""

    scope: LimitScope = Field(sa_type=EnumText(LimitScope))
    subject: str = Field(min_length=1, max_length=200)  # the key's, user's, group's or deployment's name
    rpm: int | None = Field(default=None, ge=1)  # requests per minute
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute (prompt and answer)
    concurrency: int | None = Field(default=None, ge=1)  # requests at once


class Limit(LimitBase, table=True):
    __tablename__ = "limits"
    __table_args__ = (sa.UniqueConstraint("scope", "subject"),)
    id: int | None = Field(default=None, primary_key=True)
    set_by: str
    updated_at: datetime = _ts()


class LimitSet(LimitBase):
    model_config = CREATE


class LimitPublic(LimitBase):
    set_by: str
    updated_at: datetime


class PriceBase(SQLModel):
    """What using a deployment costs (``studio.prices``), in micro-units of the studio's currency: per million input
    and output tokens, and per replica-hour of its dedicated instances."""

    deployment: str = Field(min_length=1, max_length=200)
    input_per_m: int = Field(default=0, ge=0, sa_type=sa.BigInteger)
    output_per_m: int = Field(default=0, ge=0, sa_type=sa.BigInteger)
    hourly: int = Field(default=0, ge=0, sa_type=sa.BigInteger)  # per replica-hour, on any GPU type
    hourly_gpu: dict[str, int] = _json(dict)  # per replica-hour on a GPU type (the pool's gpu_model): overrides hourly


class Price(PriceBase, table=True):
    __tablename__ = "prices"
    __table_args__ = (sa.UniqueConstraint("deployment"),)
    id: int | None = Field(default=None, primary_key=True)
    set_by: str
    updated_at: datetime = _ts()


class PricePublic(PriceBase):
    currency: str = "USD"
    gpu: str | None = None  # the GPU type of the deployment's pool, when it states one: what `hourly` is for
    set_by: str
    updated_at: datetime


class BudgetBase(SQLModel):
    """A monthly allowance of tokens or money (micros) for a user or a group, with a warning threshold (percent)."""

    scope: BudgetScope = Field(sa_type=EnumText(BudgetScope))
    subject: str = Field(min_length=1, max_length=200)
    unit: BudgetUnit = Field(sa_type=EnumText(BudgetUnit))
    amount: int = Field(ge=1, sa_type=sa.BigInteger)
    warn_at: int = Field(default=80, ge=1, le=100)


class Budget(BudgetBase, table=True):
    __tablename__ = "budgets"
    __table_args__ = (sa.UniqueConstraint("scope", "subject"),)
    id: int | None = Field(default=None, primary_key=True)
    set_by: str
    updated_at: datetime = _ts()


class BudgetPublic(BudgetBase):
    spent: int = 0  # this month, in the budget's unit
    standing: str = "ok"
    currency: str = "USD"
    set_by: str
    updated_at: datetime


class UsageRecord(SQLModel, table=True):
    """One gateway request: who asked which deployment for how many tokens, and how long it took."""

    __tablename__ = "usage_records"
    __table_args__ = (
        sa.Index("ix_usage_key_time", "api_key_id", "created_at"),
        sa.Index("ix_usage_deployment_time", "deployment", "created_at"),
        sa.Index("ux_usage_request_id", "request_id", unique=True),
    )
    id: int | None = Field(default=None, primary_key=True)
    # the gateway's id of the request (None on rows older than it): a replayed spool writes each request once
    request_id: str | None = None
    api_key_id: int | None = Field(default=None, foreign_key="api_keys.id", ondelete="SET NULL")
    deployment: str
    endpoint: str  # chat.completions | completions
    stream: bool = False
    status_code: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # counted by the gateway because the runtime reported no usage
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    model_version: int | None = None  # which version answered (a deployment with a canary serves two)
    cost_micros: int = Field(default=0, sa_type=sa.BigInteger)  # at the price in force when served (prices.py)
    created_at: datetime = _ts(index=True)


class InstanceSpan(SQLModel, table=True):
    """A stretch of time a deployment ran ``replicas`` replicas on ``gpu`` (its pool's GPU type, "" for none) at
    ``hourly`` micros per replica-hour; open (``ended_at`` None) while it still runs so. Written by the controller
    (``services.uptime``), read by bills. ``owner`` and ``group`` are whom it is billed to, as they were when it
    opened; the span outlives its deployment (a bill still shows it)."""

    __tablename__ = "instance_spans"
    id: int | None = Field(default=None, primary_key=True)
    deployment: str = Field(index=True)
    owner: str
    group: str | None = None
    gpu: str = ""
    replicas: int
    hourly: int = Field(default=0, sa_type=sa.BigInteger)
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


class InstanceLine(BaseModel):
    """Dedicated instance time of one deployment on one GPU type at one hourly price over a period, and its cost."""

    deployment: str
    gpu: str
    replica_seconds: float
    hourly_micros: int
    cost_micros: int
    currency: str = "USD"

    @property
    def replica_hours(self) -> float:
        return self.replica_seconds / 3600


class UsageSummary(BaseModel):
    """One key's use of one deployment on one day. ``requests`` counts every request; ``served`` those answered
    (status < 400), ``cancelled`` those the client left mid-answer (499), ``errors`` the rest (status >= 400). Tokens
    are those of served and cancelled requests (the runtime did that work); tokens metered on errors are apart."""

    key: str | None
    deployment: str
    day: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    served: int = 0
    cancelled: int = 0
    errors: int = 0
    error_tokens: int = 0  # prompt and completion tokens of requests that ended in an error: not billed
    cost_micros: int = 0  # of the billed requests, at the prices in force when each was served


class UsageLine(BaseModel):
    """Use summed by one user, group, deployment or key (``by``) over a period; cost in micros of ``currency``."""

    by: str
    name: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int  # tokens' cost plus instance_micros
    currency: str = "USD"
    instance_seconds: float = 0.0  # replica-seconds of the dedicated instances it owns (by deployment, user, group)
    instance_micros: int = 0  # their cost at the hourly prices

    @property
    def cost(self) -> Decimal:
        return Decimal(self.cost_micros).scaleb(-6)


class Statement(BaseModel):
    """A month's bill for one user or group: a line per deployment and the total, which is the lines' sum exactly."""

    scope: str  # user | group
    subject: str
    month: str  # YYYY-MM
    currency: str = "USD"
    lines: list[UsageLine] = []
    instances: list[InstanceLine] = []  # instance hours × hourly price, for the deployments it owns
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0  # the token lines' and the instance lines' costs together


class Traffic(BaseModel):
    """One minute of one deployment's gateway traffic."""

    minute: str  # "YYYY-MM-DD HH:MM", UTC
    requests: int
    errors: int  # answered with status >= 400
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float  # mean
    ttft_ms: float | None  # mean over streamed requests


# ---------------------------------------------------------------------------------------------------- API views


class Held(BaseModel):
    """What one holder (a deployment, or ``notebook USER[/SERVER]``) holds of a pool: ``replicas`` × ``resources``."""

    owner: str
    resources: Resources
    replicas: int = 1


class FreeCapacity(BaseModel):
    """What a pool has free (``studio.pools.Free``), with ``summary`` in words."""

    cpu: float
    memory_mib: int
    gpus: int  # GPUs no claim touches
    gpu_memory_mib: list[int] = []  # free memory per GPU, for slices
    gpu_total: int = 0
    summary: str = ""


class PoolUsagePublic(BaseModel):
    """A pool, what holds it, and what is free."""

    pool: PoolPublic
    held: list[Held]
    free: FreeCapacity


class GroupPublic(BaseModel):
    """A group and its members (a group exists while a user is in it)."""

    name: str
    members: list[str]
