"""Cove's one settings object.

Every knob is an environment variable with the ``COVE_`` prefix (``COVE_HOME``, ``COVE_PORT``, …). The object is
built once, at the entrypoint (``cove …``), and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"  # a Kubernetes storage quantity


class Settings(BaseSettings):
    """Where Cove keeps its state, which ports it listens on, and how its loops are paced."""

    # validate_by_name: a field read from several variables (its validation_alias) is still set by name in code
    model_config = SettingsConfigDict(env_prefix="COVE_", extra="ignore", frozen=True, validate_by_name=True)

    home: Path = Field(default=Path("~/.cove"), description="State directory: database, models, logs, runs.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL. Empty: SQLite at HOME/cove.db. PostgreSQL: postgresql+psycopg://…",
    )
    database_password: str = Field(
        default="", description="PostgreSQL password put into DATABASE_URL (escaped: any character). Empty: the URL's."
    )
    database_sslmode: Literal["", "disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="", description="libpq sslmode put into a PostgreSQL DATABASE_URL, over its own. Empty: the URL's."
    )
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port of the gateway (/v1, /healthz, /metrics).")
    ui_port: int = Field(default=8501, ge=1, le=65535, description="Port of the studio UI (Streamlit).")
    playground_port: int = Field(default=7860, ge=1, le=65535, description="Port of the playground (Gradio).")
    hub_port: int = Field(default=8000, ge=1, le=65535, description="Port of the notebook hub (its proxy).")
    hub_api_port: int = Field(default=8081, ge=1, le=65535, description="The hub's internal API port (loopback).")
    hub_proxy_api_port: int = Field(default=8001, ge=1, le=65535, description="The proxy's REST API port (loopback).")
    hub_idle_timeout_s: int = Field(
        default=3600, ge=10, description="A notebook server idle this long is stopped and its capacity freed."
    )
    hub_max_age_s: int = Field(
        default=0, ge=0, description="Stop any notebook server older than this, busy or not (0: no limit)."
    )
    hub_cull_every_s: int = Field(default=60, ge=1, description="How often idle and old servers are looked for.")
    hub_activity_interval_s: int = Field(
        default=60, ge=1, description="How often servers report activity (lower than the idle timeout)."
    )
    hub_public_url: str = Field(
        default="", description="How browsers and the studio reach the hub (http://hub.example.com). Empty: HOST:PORT."
    )
    secret_key: str = Field(
        default="", description="Seals secrets kept in the database (clusters' kubeconfigs). Empty: HOME/secret_key."
    )
    hub_api_token: str = Field(
        default="", description="The studio's token for the hub's API. Empty: made once, kept in HOME/hub/api_token."
    )
    hub_extra_config: Path | None = Field(
        default=None, description="A JupyterHub config file loaded last (overrides any trait the hub sets)."
    )
    hub_spawner: Literal["local", "kubernetes"] = Field(
        default="local", description="Where notebook servers run: processes here, or pods (KubeSpawner)."
    )
    hub_connect_host: str = Field(
        default="", description="How notebook pods reach the hub's API (its Service name). Empty: the hub's address."
    )
    kube_namespace: str = Field(default="cove", description="Kubernetes namespace of model servers and notebook pods.")
    notebook_image: str = Field(
        default="cove/notebook:0.1.0", description="Container image of notebook servers (Kubernetes)."
    )
    notebook_home_size: str = Field(
        default="10Gi", pattern=QUANTITY, description="Size of each notebook server's home volume (Kubernetes)."
    )
    notebook_storage_class: str = Field(
        default="", description="StorageClass of notebook home volumes. Empty: the cluster's default."
    )
    models_pvc: str = Field(
        default="cove-models", description="PersistentVolumeClaim holding the model cache, mounted read-only."
    )
    datasets_pvc: str = Field(
        default="cove-datasets", description="PersistentVolumeClaim holding the datasets, mounted read-only."
    )
    public_url: str = Field(
        default="",
        description="How clients and the UIs reach the gateway (https://cove.example.com). Empty: from HOST and PORT.",
    )
    auth: bool = Field(default=True, description="Require an API key (Authorization: Bearer) on /v1.")
    user: str = Field(
        default="", description="Who the `cove` CLI acts as (like `cove --as USER`). Empty: the first admin."
    )
    login: bool = Field(
        default=True,
        description="The studio, the playground and the hub ask who you are. Off: every visitor is the first admin "
        "(allowed only while every face listens on loopback).",
    )
    session_hours: float = Field(default=12, gt=0, description="How long a login lasts.")
    auth_url: str = Field(
        default="",
        description="How browsers reach the server's /auth, where people log in (its public URL). Empty: PUBLIC_URL, "
        "else HOST:PORT.",
    )
    internal_url: str = Field(
        default="",
        description="How jobs (fine-tunes) reach the server's API from where they run (in a cluster: its Service, "
        "http://cove-server.cove:8080). Empty: HOST:PORT.",
    )
    ui_public_url: str = Field(default="", description="How browsers reach the studio UI. Empty: HOST:UI_PORT.")
    playground_public_url: str = Field(
        default="", description="How browsers reach the playground. Empty: HOST:PLAYGROUND_PORT."
    )
    session_domain: str = Field(
        default="", description="The session cookie's domain (.example.com when the faces have hosts of their own)."
    )
    oidc_issuer: str = Field(
        default="", description="The OpenID Connect provider people log in with (its issuer URL). Empty: passwords."
    )
    oidc_client_id: str = Field(default="", description="Cove's client id at the provider.")
    oidc_client_secret: str = Field(default="", description="Cove's client secret at the provider.")
    oidc_scopes: str = Field(default="openid profile email", description="Scopes asked of the provider.")
    oidc_username_claim: str = Field(
        default="preferred_username", description="The claim that names a person (made a Cove user name)."
    )
    oidc_groups_claim: str = Field(default="groups", description="The claim listing a person's groups.")
    oidc_admin_group: str = Field(
        default="cove-admins", description="Members of this provider group are Cove admins; others are members."
    )
    demo: bool = Field(default=True, description="`cove up` builds, registers and deploys the demo model.")
    backend: Literal["local", "kubernetes"] = Field(
        default="local", description="Where model servers run: processes here, or Deployments on a cluster."
    )
    kubeconfig: str = Field(
        default="", description="Kubeconfig of the cluster (Kubernetes). Empty: the in-cluster service account."
    )
    kube_context: str = Field(default="", description="Context in the kubeconfig. Empty: its current context.")
    autoscaler: Literal["controller", "hpa"] = Field(
        default="controller",
        description="Who scales autoscaled deployments: the controller, from the gateway's load; or, on Kubernetes, "
        "a HorizontalPodAutoscaler per deployment on cove_gateway_requests_in_flight (needs a metrics adapter).",
    )
    registry: str = Field(
        default="", description="Where images built from a Dockerfile are pushed (registry.example.com/team)."
    )
    registry_secret: str = Field(
        default="", description="docker-config Secret in BUILD_NAMESPACE that may push to REGISTRY. Empty: none."
    )
    build_namespace: str = Field(
        default="cove-builds", description="Namespace of image build Jobs (Kaniko runs as root: not restricted)."
    )
    builder_image: str = Field(
        default="gcr.io/kaniko-project/executor:v1.23.2",
        description="The Kaniko executor that builds images (with no credentials: it runs the Dockerfile).",
    )
    pusher_image: str = Field(
        default="gcr.io/go-containerregistry/crane:v0.22.1"
        "@sha256:1f968817b95790bed063f71175aa6b8ff879fa17064020415f3e18bb6e6a36e1",
        description="The crane image that pushes a built image with REGISTRY_SECRET, apart from the build.",
    )
    trainer_image: str = Field(
        default="cove/fine-tune:0.1.0",
        description="Image of fine-tune Jobs (Kubernetes): Cove with CUDA torch, peft and trl (images/fine-tune).",
    )
    kueue_queue: str = Field(
        default="",
        description="Kueue LocalQueue in KUBE_NAMESPACE that fine-tune Jobs are submitted to, so they wait for quota "
        "instead of being refused. Empty: no queue (a job that does not fit its pool is refused).",
    )
    pools: list[dict[str, Any]] = Field(
        default=[],
        description='Pools made or updated at start, JSON: [{"name": "a100", "purpose": "serve", "gpuCount": 8, …}].',
    )

    controller_interval_s: float = Field(default=0.5, gt=0, description="Pause between reconcile passes.")
    leader_election: Literal["auto", "off", "postgres", "file", "kubernetes"] = Field(
        default="auto",
        description="How one of several servers is chosen to run the controller (the others serve the API and the "
        "gateway): a Kubernetes Lease, a PostgreSQL advisory lock, or a file lock beside the SQLite database. auto: "
        "the Lease in a cluster with COVE_BACKEND=kubernetes, else the lock of the database in use.",
    )
    leader_lease_s: float = Field(
        default=10, gt=0, description="A leader not heard from for this long is replaced (the Kubernetes Lease)."
    )
    leader_retry_s: float = Field(
        default=2, gt=0, description="How often followers try to take the lead, and the leader checks it still has it."
    )
    release: str = Field(
        default="cove",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Name of this installation: labels the Kubernetes objects it makes, so two installations in one "
        "namespace never clean up each other's, and names its leader Lease.",
    )
    capacity_refresh_s: float = Field(
        default=30, gt=0, description="How often each cluster's capacity (its labelled nodes) is read into pools."
    )
    gate_watch_s: float = Field(
        default=30, gt=0, description="How often due re-evaluations of production are started and finished ones judged."
    )
    gate_webhook_url: str = Field(
        default="", description="Where production failing its gate is POSTed, for models that name no webhook."
    )
    runtime_host: str = Field(default="127.0.0.1", description="Address local model servers bind to.")
    runtime_start_timeout_s: float = Field(
        default=600, gt=0, description="A replica not ready after this long is restarted."
    )
    runtime_stop_grace_s: float = Field(
        default=10, ge=0, description="SIGTERM → SIGKILL grace when stopping a replica."
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive failed starts before a deployment is marked Failed."
    )

    upstream_connect_timeout_s: float = Field(default=5, gt=0, description="Gateway → model server connect.")
    upstream_keepalive_s: float = Field(
        default=4.0,
        gt=0,
        description="Gateway → model server: how long an idle connection is kept for the next request. Below the 5 s "
        "after which uvicorn (vLLM, SGLang, transformers serve) closes one, so the gateway lets go of it first.",
    )
    upstream_read_timeout_s: float = Field(
        default=300, gt=0, description="Gateway → model server: longest wait for the next byte."
    )
    upstream_deadline_s: float = Field(
        default=600,
        gt=0,
        description="Gateway → model server: longest a whole request may take; past it the client gets 504 (a stream "
        "already begun ends with an error event).",
    )
    runtime_probe_timeout_s: float = Field(
        default=2, gt=0, description="A local replica's health check that takes longer than this has failed."
    )
    routes_refresh_s: float = Field(default=1.0, gt=0, description="How often the gateway re-reads endpoints.")
    usage_flush_s: float = Field(default=1.0, gt=0, description="How often metered usage is written.")
    usage_spool_sync_s: float = Field(
        default=0.1,
        gt=0,
        description="How often the gateway fsyncs its usage spool (COVE_HOME/spool): a power cut loses at most this "
        "much metered usage; a killed process loses none.",
    )
    usage_checkpoint_s: float = Field(
        default=1.0,
        gt=0,
        description="How often the gateway spools what each open stream has sent: a stream open when the process "
        "dies is billed the completion tokens of its last checkpoint.",
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a connection to the database may take before it counts as down."
    )
    auth_failures_per_minute: int = Field(
        default=60,
        ge=1,
        description="Unknown API keys one client address may send a minute; past it, unknown keys from it get 429 "
        "(keys that work are never refused for it).",
    )
    keys_recheck_s: float = Field(
        default=0.25,
        gt=0,
        description="An unknown API key makes the gateway read keys created since its last read at most this often; "
        "between reads, unknown keys are refused from memory.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest a client may take to send a request's body (then 408)."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest a client may take to send a request's line and headers, from connecting or from the "
        "first byte of its next request (then 408 and the connection is closed).",
    )
    max_connections: int = Field(
        default=10_000, ge=1, description="Connections and requests one gateway process serves at once (then 503)."
    )
    redis_url: str = Field(
        default="",
        description="Redis (or Valkey) holding the rate-limit counters every gateway replica shares "
        "(redis://host:6379/0). Empty: counted in this process (one gateway).",
    )
    redis_password: str = Field(
        default="", description="Password put into REDIS_URL (any character). Empty: the URL's own, if any."
    )
    redis_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="How long a request waits for the rate-limit store (to connect, or to answer) before it counts as "
        "down; then for a second every request is admitted or refused at once, by LIMITS_ON_STORE_FAILURE.",
    )
    limits_on_store_failure: Literal["open", "closed"] = Field(
        default="open",
        description="When the rate-limit store does not answer: admit requests unchecked (open) or refuse those a "
        "limit applies to with 503 (closed). Logged, and shown in /healthz.",
    )
    limits_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="The most max_tokens a request may ask of a deployment that sets no cap of its own (more is "
        "refused with 400), and what a request that names none reserves against token limits.",
    )
    limits_max_n: int = Field(
        default=16, ge=1, description="The most answers (n) a request may ask of a deployment that sets no cap."
    )
    limits_lease_s: float = Field(
        default=3600.0, gt=0, description="A concurrency slot held by a gateway that died is freed after this long."
    )
    wake_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long the gateway holds a request for a deployment waking from zero replicas before it answers "
        "503 with Retry-After (streams end with an error event).",
    )
    currency: str = Field(
        default="USD", min_length=1, max_length=8, description="The currency prices, costs and money budgets are in."
    )
    budgets_refresh_s: float = Field(
        default=10.0,
        gt=0,
        description="How often each gateway re-reads this month's spend per user and group from the usage table "
        "(budgets); between reads it adds what it serves itself.",
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="Largest request body accepted.")
    max_upload_bytes: int = Field(
        default=20 * 1024**3, gt=0, description="Largest dataset file uploaded through the API (streamed to disk)."
    )
    dataset_quota_gib: float = Field(
        default=200, gt=0, description="Dataset files one owner may keep in the dataset store, in GiB."
    )
    otlp_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices("COVE_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OpenTelemetry collector the gateway sends its traces to, over OTLP/HTTP (http://collector:4318; "
        "/v1/traces is appended). Empty: no traces. Also read from OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    otel_service_name: str = Field(
        default="cove",
        min_length=1,
        validation_alias=AliasChoices("COVE_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="The service.name of Cove's traces. Also read from OTEL_SERVICE_NAME.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of requests traced (by trace id); a request whose caller sent a sampled W3C traceparent "
        "is always traced.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def db_url(self) -> str:
        """DATABASE_URL with DATABASE_PASSWORD and DATABASE_SSLMODE put in (PostgreSQL only)."""
        if not self.database_url:
            return f"sqlite:///{self.home / 'cove.db'}"
        if not (self.database_password or self.database_sslmode):
            return self.database_url
        from sqlalchemy.engine import make_url  # here: settings are read by processes that never open a database

        url = make_url(self.database_url)
        if url.get_backend_name() != "postgresql":
            return self.database_url
        if self.database_password:
            url = url.set(password=self.database_password)
        if self.database_sslmode:
            url = url.update_query_dict({"sslmode": self.database_sslmode})
        return url.render_as_string(hide_password=False)

    @property
    def redis_dsn(self) -> str:
        """REDIS_URL with REDIS_PASSWORD put in (escaped); empty when no store is set."""
        if not (self.redis_url and self.redis_password):
            return self.redis_url
        from urllib.parse import quote, urlsplit, urlunsplit

        parts = urlsplit(self.redis_url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f":{quote(self.redis_password, safe='')}@{host}"))

    @property
    def models_dir(self) -> Path:
        """A Hugging Face cache (``HF_HUB_CACHE``): repo ids resolve here exactly as they do for the Hub."""
        return self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def runs_dir(self) -> Path:
        """Bookkeeping of running local processes, so a restarted controller adopts them."""
        return self.home / "runs"

    @property
    def finetunes_dir(self) -> Path:
        """Each fine-tune's folder (its plan, checkpoints, adapter, merged model, result): beside the model cache,
        on the models claim on Kubernetes, where training pods write them."""
        return self.models_dir / "finetunes"

    @property
    def tasks_dir(self) -> Path:
        """Bookkeeping and logs of local run-to-completion processes (fine-tunes), so a restarted controller adopts
        them."""
        return self.home / "tasks"

    @property
    def report_url(self) -> str:
        """Where jobs report progress to the API: INTERNAL_URL, or the address the server listens on."""
        return self.internal_url.rstrip("/") or self.listen_url

    @property
    def gateway_url(self) -> str:
        """Where clients reach the gateway: PUBLIC_URL, or the address it listens on."""
        return self.public_url.rstrip("/") or self.listen_url

    @property
    def listen_url(self) -> str:
        """The gateway's own address, from HOST and PORT."""
        return self.local_url(self.port)

    @property
    def hub_dir(self) -> Path:
        """The hub's own state: its database, cookie secret, proxy pid file, the API token the studio uses."""
        return self.home / "hub"

    @property
    def hub_url(self) -> str:
        return self.hub_public_url.rstrip("/") or self.local_url(self.hub_port)

    @property
    def ui_url(self) -> str:
        return self.ui_public_url.rstrip("/") or self.local_url(self.ui_port)

    @property
    def playground_url(self) -> str:
        return self.playground_public_url.rstrip("/") or self.local_url(self.playground_port)

    @property
    def login_base(self) -> str:
        """Where browsers find ``/auth`` (the server)."""
        return self.auth_url.rstrip("/") or self.gateway_url

    def local_url(self, port: int) -> str:
        """``http://HOST:port``, with a wildcard HOST as loopback and IPv6 in brackets."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.models_dir, self.datasets_dir, self.logs_dir, self.runs_dir, self.tasks_dir):
            path.mkdir(parents=True, exist_ok=True)
