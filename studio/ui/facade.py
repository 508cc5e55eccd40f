"""What the studio pages may do, in one object: the services, bound to one database and one settings object.

Pages never open a session or import a service; they call ``current()`` and the methods below, which return the
services' ``…Public`` shapes and raise Cove's errors (``feedback.guarded`` turns those into ``st.error``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import streamlit as st

from studio import access, datastore, machine, sessions
from studio.backends.base import WorkloadSpec
from studio.bench_results import Difference
from studio.bootstrap import open_studio
from studio.chats import ColumnMap, detect
from studio.db import Database, utcnow
from studio.errors import InvalidSpec, NotFound, Unauthorized
from studio.gate import Results, Verdict
from studio.hub_client import HubClient, Server
from studio.limits import LimitScope
from studio.logs import LogReader
from studio.memplan import Shape
from studio.models import (
    AliasMovePublic,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    BenchmarkRunPublic,
    BudgetPublic,
    ClusterCreate,
    ClusterPublic,
    DatasetAdded,
    DatasetCreate,
    DatasetLengths,
    DatasetPreview,
    DatasetPublic,
    DeploymentCreate,
    DeploymentPublic,
    EvaluationPublic,
    EventPublic,
    FineTuneCreate,
    FineTunePreview,
    FineTunePublic,
    ImageCreate,
    ImagePublic,
    LimitPublic,
    LimitSet,
    ModelCreate,
    ModelPublic,
    ModelVersionPublic,
    NotebookPublic,
    PricePublic,
    Promotion,
    Statement,
    Traffic,
    UsageSummary,
)
from studio.pools import Admission
from studio.prices import MoneyError, parse_money
from studio.profiles import Profile, profiles_for
from studio.runtimes import local_availability
from studio.sealing import studio_key
from studio.services import (
    aliases,
    benchmarks,
    budgets,
    clusters,
    datasets,
    deployments,
    evaluations,
    events,
    finetunes,
    images,
    keys,
    limits,
    models,
    notebooks,
    plans,
    pools,
    prices,
    usage,
    users,
)
from studio.services.pools import PoolUsage
from studio.settings import Settings
from studio.ui.square import Offer, context_length, key_hint, offers, snippet
from studio.values import Autoscale, Principal, Resources


@dataclass(frozen=True)
class ModelFiles:
    """What a model version's folder says about itself."""

    config: dict[str, Any]
    card: str  # README.md, or ''


@dataclass(frozen=True)
class Sniffed:
    """What an uploaded file's first row says before it is registered: its columns, and the format detected from
    them (None: no format fits, the user maps the columns)."""

    filename: str
    columns: list[str]
    detected: ColumnMap | None


@dataclass(frozen=True)
class Shared:
    """What every session of the UI process shares: the settings, the database, the log reader."""

    settings: Settings
    db: Database
    logs: LogReader


class Studio:
    """The studio's verbs, as the pages use them, acting as one principal (the session's user)."""

    def __init__(self, shared: Shared, actor: Principal) -> None:
        self.settings, self.db, self._logs = shared.settings, shared.db, shared.logs
        self.actor = actor

    # ---------------------------------------------------------------------------------------------- overview

    def pools(self) -> list[PoolUsage]:
        return pools.list_pools(db=self.db)

    def status_counts(self) -> dict[str, int]:
        return deployments.count_by_status(db=self.db, actor=self.actor)

    def audit(self, *, user: str | None = None, limit: int = 200) -> list[EventPublic]:
        return events.audit_trail(db=self.db, actor=self.actor, user=user, limit=limit)

    def recent_events(self, *, name: str | None = None, limit: int = 20) -> list[EventPublic]:
        """The newest events of the deployments this user may see (or of ``name``, if they may see it)."""
        if name is not None:
            deployments.get_deployment(db=self.db, actor=self.actor, name=name)  # Forbidden when not theirs
            return events.list_events(db=self.db, kind="deployment", name=name, limit=limit)
        if self.actor.is_admin:
            return events.list_events(db=self.db, kind="deployment", limit=limit)
        names = deployments.deployment_names(db=self.db, actor=self.actor)
        return events.list_events(db=self.db, kind="deployment", names=names, limit=limit)

    # ------------------------------------------------------------------------------------------------ models

    def models(self) -> list[ModelPublic]:
        return models.list_models(db=self.db)

    def add_model(
        self,
        *,
        name: str,
        source: str,
        description: str = "",
        new_version: bool = False,
        progress: Callable[[str], None] | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> ModelPublic:
        data = ModelCreate(name=name, source=source, description=description, new_version=new_version)
        return models.add_model(
            db=self.db,
            actor=self.actor,
            data=data,
            cache_dir=self.settings.models_dir,
            progress=progress,
            on_bytes=on_bytes,
        )

    def delete_model(self, name: str) -> None:
        models.delete_model(db=self.db, actor=self.actor, name=name)

    # ---------------------------------------------------------------------------------------------- aliases

    def judge(self, model: str, version: int, results: dict[int, Results]) -> tuple[Verdict, int | None]:
        """What the gate says of promoting ``version`` with ``results``, and the production version compared."""
        return aliases.judge(db=self.db, model=model, version=version, results=results)

    def promote(
        self, model: str, version: int, results: dict[int, Results], override_reason: str | None = None
    ) -> Promotion:
        return aliases.promote(
            db=self.db, actor=self.actor, model=model, version=version, results=results,
            override_reason=override_reason,
        )  # fmt: skip

    def set_staging(self, model: str, version: int) -> Promotion:
        return aliases.set_alias(db=self.db, actor=self.actor, model=model, alias="staging", version=version)

    def rollback(self, model: str) -> Promotion:
        return aliases.rollback(db=self.db, actor=self.actor, model=model)

    def alias_history(self, model: str) -> list[AliasMovePublic]:
        return aliases.history(db=self.db, model=model)

    @staticmethod
    def model_files(version: ModelVersionPublic) -> ModelFiles:
        """The version's config.json and model card; a folder that went missing reads as empty, not as an error."""
        folder = Path(version.path)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        try:
            card = (folder / "README.md").read_text(errors="replace")
        except OSError:
            card = ""
        return ModelFiles(config=config, card=card)

    # ---------------------------------------------------------------------------------------------- datasets

    def datasets(self) -> list[DatasetPublic]:
        return datasets.list_datasets(db=self.db, actor=self.actor)

    def sniff_upload(self, filename: str, data: bytes) -> Sniffed:
        """The columns of an uploaded file's first row and the format they fit, read from a throwaway copy in the
        store's incoming folder. InvalidSpec for a file that is not a dataset file or cannot be read."""
        path = datastore.receive([data], filename, self.settings.datasets_dir, limit=self.settings.max_upload_bytes)
        try:
            columns = datastore.columns_of(path, datastore.builder_of([path]))
        finally:
            datastore.discard(path)
        return Sniffed(filename=filename, columns=columns, detected=detect(columns))

    def add_dataset(
        self,
        data: DatasetCreate,
        *,
        upload: tuple[str, bytes] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> DatasetAdded:
        """Register ``data.source``, or ``upload`` (its file name and bytes, stored as an upload to the API is)."""
        received = None
        if upload is not None:
            filename, body = upload
            path = datastore.receive([body], filename, self.settings.datasets_dir, limit=self.settings.max_upload_bytes)
            received = datasets.Upload(path=path, filename=filename)
        return datasets.add_dataset(
            db=self.db, actor=self.actor, data=data, settings=self.settings, upload=received, progress=progress
        )

    def dataset_preview(
        self,
        name: str,
        version: int,
        *,
        split: str = "train",
        rows: int = 5,
        model: str | None = None,
        model_version: int | None = None,
        max_length: int = 1024,
    ) -> DatasetPreview:
        return datasets.preview(
            db=self.db,
            actor=self.actor,
            name=name,
            version=version,
            split=split,
            rows=rows,
            model=model,
            model_version=model_version,
            max_length=max_length,
        )

    def dataset_lengths(
        self, name: str, version: int, *, model: str, model_version: int, max_length: int, split: str = "train"
    ) -> DatasetLengths:
        return datasets.lengths(
            db=self.db,
            actor=self.actor,
            name=name,
            version=version,
            model=model,
            model_version=model_version,
            max_length=max_length,
            split=split,
        )

    def delete_dataset(self, name: str) -> None:
        datasets.delete_dataset(db=self.db, actor=self.actor, name=name, settings=self.settings)

    # --------------------------------------------------------------------------------------------- fine-tunes

    def finetune_preview(self, data: FineTuneCreate) -> FineTunePreview:
        return finetunes.preview_finetune(db=self.db, actor=self.actor, data=data)

    def start_finetune(self, data: FineTuneCreate) -> FineTunePublic:
        return finetunes.create_finetune(
            db=self.db, actor=self.actor, data=data, queued=bool(self.settings.kueue_queue)
        )

    def benchmarks(self, deployment: str | None = None) -> list[BenchmarkRunPublic]:
        """Benchmark runs (of ``deployment``), newest first."""
        return benchmarks.list_benchmarks(db=self.db, actor=self.actor, deployment=deployment)

    def compare_benchmarks(self, a: int, b: int) -> list[Difference]:
        return benchmarks.compare_benchmarks(db=self.db, actor=self.actor, a=a, b=b)

    def evaluations_of(self, model: str, version: int) -> list[EvaluationPublic]:
        """A model version's evaluations, newest first, without their examples."""
        return evaluations.list_evaluations(db=self.db, actor=self.actor, model=model, version=version)

    def evaluation(self, evaluation_id: int) -> EvaluationPublic:
        return evaluations.get_evaluation(db=self.db, actor=self.actor, evaluation_id=evaluation_id)

    def finetunes(self) -> list[FineTunePublic]:
        return finetunes.list_finetunes(db=self.db, actor=self.actor)

    def finetune(self, name: str) -> FineTunePublic:
        return finetunes.get_finetune(db=self.db, actor=self.actor, name=name)

    def cancel_finetune(self, name: str) -> FineTunePublic:
        return finetunes.cancel_finetune(db=self.db, actor=self.actor, name=name)

    def resume_finetune(self, name: str) -> FineTunePublic:
        return finetunes.resume_finetune(
            db=self.db, actor=self.actor, name=name, queued=bool(self.settings.kueue_queue)
        )

    def delete_finetune(self, name: str) -> None:
        finetunes.delete_finetune(db=self.db, actor=self.actor, name=name, folders=self.settings.finetunes_dir)

    def finetune_logs(self, name: str, *, tail: int = 200) -> list[str]:
        """The newest attempt's log: kept in the job's folder once it ended, else read where it runs."""
        job = self.finetune(name)
        saved = finetunes.saved_log(self.settings.finetunes_dir, name, job.attempt)
        task = finetunes.task_name(name, job.attempt)
        return self._logs.read_task(task=task, cluster=job.cluster, saved=saved, tail=tail)

    def finetune_events(self, name: str, *, limit: int = 50) -> list[EventPublic]:
        self.finetune(name)  # NotFound / Forbidden as for the job
        return events.list_events(db=self.db, kind=finetunes.KIND, name=name, limit=limit)

    # ------------------------------------------------------------------------------------------------ images

    def images(self) -> list[ImagePublic]:
        return images.list_images(db=self.db)

    def add_image(self, data: ImageCreate) -> ImagePublic:
        return images.add_image(db=self.db, actor=self.actor, data=data, registry=self.settings.registry)

    def rebuild_image(self, name: str, version: str) -> ImagePublic:
        return images.rebuild_image(db=self.db, actor=self.actor, name=name, version=version)

    def clusters(self) -> list[ClusterPublic]:
        return clusters.list_clusters(db=self.db)

    def add_cluster(self, data: ClusterCreate) -> ClusterPublic:
        return clusters.add_cluster(db=self.db, actor=self.actor, data=data, key=studio_key(self.settings))

    def remove_cluster(self, name: str) -> None:
        clusters.remove_cluster(db=self.db, actor=self.actor, name=name)

    def local_problem(self, image: ImagePublic, resources: Resources) -> str:
        """Why ``image`` cannot run on this machine with ``resources`` ('' if it can)."""
        spec = WorkloadSpec(
            name="check",
            runtime=image.runtime,
            model="",
            model_revision=None,
            image=image.reference,
            local_command=tuple(image.local_command) if image.local_command else None,
            resources=resources,
        )
        return local_availability(spec, gpus_on_machine=len(machine.gpus()))

    # ----------------------------------------------------------------------------------------------- deploy

    def model_shape(self, model: str, version: int) -> tuple[Shape | None, str]:
        """The memory plan's view of a catalog version, or None and why it cannot be planned."""
        return plans.shape_of(db=self.db, model=model, version=version)

    def fit(self, *, pool: str, resources: Resources, replicas: int, name: str | None = None) -> Admission:
        return deployments.preview_admission(db=self.db, pool=pool, resources=resources, replicas=replicas, name=name)

    def deploy(
        self,
        *,
        name: str,
        model: str,
        model_version: int,
        image: str,
        image_version: str,
        pool: str,
        runtime_args: str,
        resources: Resources,
        replicas: int,
        autoscale: Autoscale | None,
    ) -> DeploymentPublic:
        try:
            args = shlex.split(runtime_args)
        except ValueError as exc:
            raise InvalidSpec(f"runtime args: {exc}", hint="quote values that contain spaces") from exc
        data = DeploymentCreate(
            name=name,
            model=model,
            model_version=model_version,
            image=image,
            image_version=image_version,
            pool=pool,
            runtime_args=args,
            resources=resources,
            replicas=replicas,
            autoscale=autoscale,
        )
        return deployments.create_deployment(db=self.db, actor=self.actor, data=data)

    # ------------------------------------------------------------------------------------------ deployments

    def deployments(self) -> list[DeploymentPublic]:
        return deployments.list_deployments(db=self.db, actor=self.actor)

    def deployment_names(self) -> list[str]:
        return deployments.deployment_names(db=self.db, actor=self.actor)

    def deployment(self, name: str) -> DeploymentPublic:
        return deployments.get_deployment(db=self.db, actor=self.actor, name=name)

    def scale(self, name: str, replicas: int) -> DeploymentPublic:
        return deployments.scale_deployment(db=self.db, actor=self.actor, name=name, replicas=replicas)

    def delete(self, name: str) -> DeploymentPublic:
        return deployments.delete_deployment(db=self.db, actor=self.actor, name=name)

    def logs(self, name: str, *, tail: int = 200) -> list[str]:
        return self._logs.read(name, actor=self.actor, tail=tail)

    def traffic(self, name: str, *, window: timedelta = timedelta(hours=1)) -> list[Traffic]:
        return usage.traffic(db=self.db, deployment=name, since=utcnow() - window)

    # ---------------------------------------------------------------------------------------------- notebooks

    def notebook_servers(self) -> list[Server]:
        """Every notebook server for an admin; a member's own."""
        found = HubClient(self.settings).servers()
        return found if self.actor.is_admin else [s for s in found if s.user == self.actor.name]

    def notebook_claims(self) -> list[NotebookPublic]:
        return notebooks.list_notebooks(db=self.db, actor=self.actor)

    def notebook_profiles(self) -> list[Profile]:
        """Every profile of every pool (the hub still checks the user's groups when starting)."""
        usage = pools.list_pools(db=self.db)
        groups = {g for u in usage for g in u.pool.groups}
        return profiles_for([(u.pool, u.free) for u in usage], groups)

    def start_notebook(self, user: str, profile: str) -> None:
        self._own_notebook(user, "start")
        HubClient(self.settings).start(user, profile)

    def stop_notebook(self, user: str) -> None:
        self._own_notebook(user, "stop")
        HubClient(self.settings).stop(user)

    def _own_notebook(self, user: str, doing: str) -> None:
        """The studio calls the hub with its own token, so it checks here who may act on whose server."""
        if user != self.actor.name:
            access.check_admin(self.actor, doing=f"{doing} another person's notebook server")

    # ------------------------------------------------------------------------------------------ keys, usage

    def keys(self) -> list[ApiKeyPublic]:
        return keys.list_keys(db=self.db, actor=self.actor)

    def create_key(
        self,
        name: str,
        *,
        deployments: list[str] | None = None,
        days: int = 0,
        scopes: list[str] | None = None,
        limit: dict[str, int] | None = None,
    ) -> ApiKeyCreated:
        """A key of this user's, limited to ``deployments`` (none: all theirs), expiring after ``days`` (0: never);
        with API ``scopes``, also a personal access token for the Cove API; rate-limited by ``limit`` (rpm, tpm,
        concurrency; 0 or absent: no limit), as `cove key create --rpm/--tpm/--concurrency` does."""
        expires = utcnow() + timedelta(days=days) if days else None
        data = ApiKeyCreate(
            name=name,
            deployments=keys.scope_names(deployments or []),
            expires_at=expires,
            scopes=sorted(scopes) if scopes else None,
        )
        made = keys.create_key(db=self.db, actor=self.actor, data=data)
        given = {k: v for k, v in (limit or {}).items() if v}
        if given:
            self.set_limit(LimitScope.KEY, name, **given)
        return made

    def limits(self) -> list[LimitPublic]:
        """The limits this member may see: on their keys, themselves, their groups, and deployments."""
        return limits.list_limits(db=self.db, actor=self.actor)

    def set_limit(self, scope: LimitScope, subject: str, **values: int | None) -> LimitPublic:
        """Set ``rpm``, ``tpm``, ``concurrency`` on a key, user, group or deployment (None or 0: that one removed)."""
        data = LimitSet(scope=scope, subject=subject, **{k: v or None for k, v in values.items()})
        return limits.set_limit(db=self.db, actor=self.actor, data=data)

    def delete_limit(self, scope: LimitScope, subject: str) -> LimitPublic:
        return limits.delete_limit(db=self.db, actor=self.actor, scope=scope, subject=subject)

    def revoke_key(self, name: str) -> ApiKeyPublic:
        return keys.revoke_key(db=self.db, actor=self.actor, name=name)

    def usage(self, *, days: int = 30) -> list[UsageSummary]:
        since = utcnow() - timedelta(days=days)
        return usage.usage_summary(
            db=self.db, actor=self.actor, since=since.replace(hour=0, minute=0, second=0, microsecond=0)
        )

    # ------------------------------------------------------------------------------- prices, bills, square

    def statement(self, scope: Literal["user", "group"], subject: str, month: str) -> Statement:
        return prices.statement(
            db=self.db, actor=self.actor, scope=scope, subject=subject, month=month, currency=self.settings.currency
        )

    def price(self, deployment: str) -> PricePublic | None:
        found = prices.list_prices(db=self.db, currency=self.settings.currency)
        return next((p for p in found if p.deployment == deployment), None)

    def set_price(self, deployment: str, *, input_per_m: str, output_per_m: str, hourly: str) -> PricePublic:
        """Price ``deployment`` (an admin) from decimal text, never floats ("0.15" is exactly 150 000 micros)."""
        try:
            given = [parse_money(v or "0") for v in (input_per_m, output_per_m, hourly)]
        except MoneyError as exc:
            raise InvalidSpec(str(exc), hint="e.g. 0.15") from exc
        return prices.set_price(
            db=self.db, actor=self.actor, deployment=deployment, currency=self.settings.currency,
            input_per_m=given[0], output_per_m=given[1], hourly=given[2],
        )  # fmt: skip

    def set_gpu_price(self, deployment: str, *, gpu: str, hourly: str) -> PricePublic:
        """Price a replica-hour of ``deployment`` on GPU type ``gpu`` (an admin), from decimal text; "0" removes the
        type's price (its replicas cost the deployment's hourly price again)."""
        try:
            given = parse_money(hourly or "0")
        except MoneyError as exc:
            raise InvalidSpec(str(exc), hint="e.g. 2.50") from exc
        return prices.set_price(
            db=self.db, actor=self.actor, deployment=deployment, currency=self.settings.currency,
            hourly_gpu={gpu: given},
        )  # fmt: skip

    def set_caps(self, name: str, *, max_tokens_cap: int | None, n_cap: int | None) -> DeploymentPublic:
        """The most a request may ask of ``name`` (None or 0: the studio's default)."""
        return deployments.set_caps(
            db=self.db, actor=self.actor, name=name, max_tokens_cap=max_tokens_cap or None, n_cap=n_cap or None
        )

    def budgets(self) -> list[BudgetPublic]:
        return budgets.list_budgets(db=self.db, actor=self.actor, currency=self.settings.currency)

    def square(self) -> list[Offer]:
        """The deployments this member may call, with their prices, the limits that apply to them there and their
        context length (the model square)."""
        found = deployments.list_deployments(db=self.db, actor=self.actor)
        contexts: dict[str, int | None] = {}
        for d in found:
            try:
                model = models.get_model(db=self.db, name=d.model)
            except NotFound:  # deleted since: shown without a context length
                contexts[d.name] = None
                continue
            version = next((v for v in model.versions if v.version == d.model_version), None)
            config = self.model_files(version).config if version is not None else {}
            contexts[d.name] = context_length(d.planned_args, config)
        return offers(
            found,
            prices.list_prices(db=self.db, currency=self.settings.currency),
            limits.list_limits(db=self.db, actor=self.actor),
            contexts,
            user=self.actor.name,
            groups=self.actor.groups,
            currency=self.settings.currency,
        )

    def snippet(self, deployment: str) -> str:
        return snippet(self.settings.gateway_url, deployment, key_hint(self.keys(), deployment))

    @property
    def playground_url(self) -> str:
        return self.settings.playground_url

    @property
    def now(self) -> datetime:
        return utcnow()


@st.cache_resource(show_spinner=False)
def _open(settings_json: str) -> Shared:
    settings = Settings.model_validate_json(settings_json)
    db = open_studio(settings)
    return Shared(settings, db, LogReader(settings=settings, db=db))


WHO = "cove_who"  # st.session_state key: who this run acts as, set by the entry page's gate (``signed_in``)


def _shared() -> Shared:
    return _open(Settings().model_dump_json())


def signed_in() -> Principal | None:
    """Who this browser session is logged in as (read from the session cookie on every run, so a removed or
    disabled user is out at their next click); with login off, the first admin. Kept for this run's pages."""
    shared = _shared()
    if shared.settings.login:
        who = sessions.principal(shared.settings, shared.db, st.context.cookies)
    else:
        who = users.first_admin(db=shared.db)
    st.session_state[WHO] = who
    return who


def login_url() -> str:
    settings = _shared().settings
    return sessions.login_url(settings, settings.ui_url)


def logout_url() -> str:
    return _shared().settings.login_base + "/auth/logout"


def current() -> Studio:
    """The studio of this process's settings (COVE_* environment, opened once and shared by every session),
    acting as this session's user (the entry page's gate let them in)."""
    who = st.session_state.get(WHO)
    if who is None:
        raise Unauthorized("not logged in", hint="log in again")
    return Studio(_shared(), who)
