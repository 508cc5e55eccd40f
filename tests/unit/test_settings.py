"""Cove's one settings object: defaults, the COVE_ environment prefix, and the paths and URLs derived from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from studio.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No COVE_ variable from the caller's shell leaks in; HOME is a private folder."""
    for key in list(os.environ):
        if key.startswith("COVE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


def test_defaults(tmp_path: Path) -> None:
    got = Settings()

    assert got.model_dump() == {
        "home": tmp_path / "user" / ".cove",
        "database_url": "",
        "database_password": "",
        "database_sslmode": "",
        "host": "127.0.0.1",
        "port": 8080,
        "ui_port": 8501,
        "playground_port": 7860,
        "hub_port": 8000,
        "hub_api_port": 8081,
        "hub_proxy_api_port": 8001,
        "hub_idle_timeout_s": 3600,
        "hub_max_age_s": 0,
        "hub_cull_every_s": 60,
        "hub_activity_interval_s": 60,
        "hub_public_url": "",
        "secret_key": "",
        "hub_api_token": "",
        "hub_extra_config": None,
        "hub_spawner": "local",
        "hub_connect_host": "",
        "kube_namespace": "cove",
        "notebook_image": "cove/notebook:0.1.0",
        "notebook_home_size": "10Gi",
        "notebook_storage_class": "",
        "models_pvc": "cove-models",
        "datasets_pvc": "cove-datasets",
        "public_url": "",
        "auth": True,
        "user": "",
        "login": True,
        "session_hours": 12,
        "session_domain": "",
        "auth_url": "",
        "internal_url": "",
        "ui_public_url": "",
        "playground_public_url": "",
        "oidc_issuer": "",
        "oidc_client_id": "",
        "oidc_client_secret": "",
        "oidc_scopes": "openid profile email",
        "oidc_username_claim": "preferred_username",
        "oidc_groups_claim": "groups",
        "oidc_admin_group": "cove-admins",
        "demo": True,
        "backend": "local",
        "kubeconfig": "",
        "kube_context": "",
        "autoscaler": "controller",
        "registry": "",
        "registry_secret": "",
        "build_namespace": "cove-builds",
        "builder_image": "gcr.io/kaniko-project/executor:v1.23.2",
        "pusher_image": "gcr.io/go-containerregistry/crane:v0.22.1"
        "@sha256:1f968817b95790bed063f71175aa6b8ff879fa17064020415f3e18bb6e6a36e1",
        "trainer_image": "cove/fine-tune:0.1.0",
        "kueue_queue": "",
        "pools": [],
        "controller_interval_s": 0.5,
        "capacity_refresh_s": 30.0,
        "gate_watch_s": 30.0,
        "gate_webhook_url": "",
        "runtime_host": "127.0.0.1",
        "runtime_start_timeout_s": 600,
        "runtime_stop_grace_s": 10,
        "failure_threshold": 3,
        "upstream_connect_timeout_s": 5,
        "upstream_keepalive_s": 4.0,
        "upstream_read_timeout_s": 300,
        "routes_refresh_s": 1.0,
        "usage_flush_s": 1.0,
        "usage_spool_sync_s": 0.1,
        "usage_checkpoint_s": 1.0,
        "db_connect_timeout_s": 5.0,
        "auth_failures_per_minute": 60,
        "keys_recheck_s": 0.25,
        "body_timeout_s": 30.0,
        "header_timeout_s": 10.0,
        "max_connections": 10_000,
        "redis_url": "",
        "redis_password": "",
        "redis_timeout_s": 1.0,
        "limits_on_store_failure": "open",
        "limits_max_tokens": 4096,
        "limits_max_n": 16,
        "wake_timeout_s": 120.0,
        "limits_lease_s": 3600.0,
        "currency": "USD",
        "budgets_refresh_s": 10.0,
        "max_body_bytes": 8 * 1024 * 1024,
        "max_upload_bytes": 20 * 1024**3,
        "dataset_quota_gib": 200.0,
        "leader_election": "auto",
        "leader_lease_s": 10.0,
        "leader_retry_s": 2.0,
        "release": "cove",
        "upstream_deadline_s": 600.0,
        "runtime_probe_timeout_s": 2.0,
        "otlp_endpoint": "",
        "otel_service_name": "cove",
        "trace_sample_ratio": 1.0,
        "log_level": "info",
    }


def test_the_folders_live_under_home(tmp_path: Path) -> None:
    home = tmp_path / "user" / ".cove"
    got = Settings()

    assert (got.models_dir, got.datasets_dir, got.logs_dir, got.runs_dir) == (
        home / "models",
        home / "datasets",
        home / "logs",
        home / "runs",
    )
    assert got.db_url == f"sqlite:///{home}/cove.db"


def test_environment_variables_with_the_cove_prefix_set_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COVE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("COVE_PORT", "9090")
    monkeypatch.setenv("COVE_AUTH", "false")
    monkeypatch.setenv("COVE_FAILURE_THRESHOLD", "5")
    monkeypatch.setenv("COVE_UPSTREAM_READ_TIMEOUT_S", "30")
    monkeypatch.setenv("COVE_POOLS", '[{"name": "a100", "gpuCount": 8}]')
    monkeypatch.setenv("PORT", "1")  # without the prefix: ignored

    got = Settings()

    assert (got.home, got.port, got.auth, got.failure_threshold, got.upstream_read_timeout_s) == (
        tmp_path / "state",
        9090,
        False,
        5,
        30.0,
    )
    assert got.pools == [{"name": "a100", "gpuCount": 8}]


def test_traces_honour_the_standard_opentelemetry_variables_and_cove_s_own_win(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTLP_ENDPOINT", "http://bare:4318")  # neither prefix: ignored
    assert (Settings().otlp_endpoint, Settings().otel_service_name) == ("", "cove")

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cove-eu")
    assert (Settings().otlp_endpoint, Settings().otel_service_name) == ("http://collector:4318", "cove-eu")

    monkeypatch.setenv("COVE_OTLP_ENDPOINT", "http://cove-collector:4318")
    assert Settings().otlp_endpoint == "http://cove-collector:4318"
    assert Settings(otlp_endpoint="http://in-code:4318").otlp_endpoint == "http://in-code:4318"


def test_a_database_url_from_the_environment_replaces_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVE_DATABASE_URL", "postgresql+psycopg://cove:secret@db/cove")

    assert Settings().db_url == "postgresql+psycopg://cove:secret@db/cove"


def test_a_separate_password_and_sslmode_go_into_a_postgresql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart gives the URL without its password (kept in a Secret) and the sslmode apart: any character of the
    password survives, and the sslmode replaces the URL's own."""
    from sqlalchemy.engine import make_url

    monkeypatch.setenv("COVE_DATABASE_URL", "postgresql+psycopg://cove@db:5432/cove?sslmode=disable")
    monkeypatch.setenv("COVE_DATABASE_PASSWORD", "p@ss/w:rd%?#")
    monkeypatch.setenv("COVE_DATABASE_SSLMODE", "verify-full")
    url = make_url(Settings().db_url)
    assert (url.username, url.password, url.host, url.database) == ("cove", "p@ss/w:rd%?#", "db", "cove")
    assert dict(url.query) == {"sslmode": "verify-full"}
    monkeypatch.setenv("COVE_DATABASE_SSLMODE", "sometimes")
    with pytest.raises(ValidationError):
        Settings()


def test_a_sqlite_url_ignores_the_postgresql_password_and_sslmode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVE_DATABASE_URL", "sqlite:////tmp/cove.db")
    monkeypatch.setenv("COVE_DATABASE_PASSWORD", "x")
    monkeypatch.setenv("COVE_DATABASE_SSLMODE", "require")
    assert Settings().db_url == "sqlite:////tmp/cove.db"


def test_home_is_expanded_and_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)

    assert Settings(home=Path("~/cove-state")).home == tmp_path / "user" / "cove-state"
    assert Settings(home=Path("rel/state")).home == tmp_path / "rel" / "state"
    monkeypatch.setenv("COVE_HOME", "~/from-env")
    assert Settings().home == tmp_path / "user" / "from-env"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("cove.internal", "http://cove.internal:8080"),
    ],
)
def test_gateway_url_reaches_the_gateway_even_when_it_listens_on_every_address(host: str, url: str) -> None:
    assert Settings(host=host).gateway_url == url


def test_gateway_url_brackets_an_ipv6_address() -> None:
    assert Settings(host="::1").gateway_url == "http://[::1]:8080"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COVE_PORT", "0"),
        ("COVE_PORT", "70000"),
        ("COVE_FAILURE_THRESHOLD", "0"),
        ("COVE_CONTROLLER_INTERVAL_S", "0"),
        ("COVE_BACKEND", "docker"),
        ("COVE_LOG_LEVEL", "verbose"),
        ("COVE_HUB_SPAWNER", "docker"),
        ("COVE_NOTEBOOK_HOME_SIZE", "10 gigs"),
        ("COVE_POOLS", '{"name": "a100"}'),
    ],
)
def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as raised:
        Settings()

    assert [e["loc"] for e in raised.value.errors()] == [(variable.removeprefix("COVE_").lower(),)]


def test_settings_cannot_be_changed_once_built() -> None:
    got = Settings()

    with pytest.raises(ValidationError):
        got.port = 1  # type: ignore[misc]


def test_public_url_is_what_clients_see_while_the_gateway_listens_locally() -> None:
    got = Settings(host="0.0.0.0", port=9000, public_url="https://cove.example.com/")

    assert (got.gateway_url, got.listen_url) == ("https://cove.example.com", "http://127.0.0.1:9000")


def test_ui_urls_follow_host_and_their_ports() -> None:
    got = Settings(host="::", ui_port=9501, playground_port=9860)

    assert (got.ui_url, got.playground_url) == ("http://[::1]:9501", "http://[::1]:9860")


def test_a_redis_password_goes_into_the_url_escaped() -> None:
    assert Settings(redis_url="redis://cache:6379/0").redis_dsn == "redis://cache:6379/0"
    got = Settings(redis_url="redis://:old@cache:6379/0", redis_password="p@ss/word").redis_dsn
    assert got == "redis://:p%40ss%2Fword@cache:6379/0"
    assert Settings().redis_dsn == ""
