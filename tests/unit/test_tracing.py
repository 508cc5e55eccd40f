"""Traces are off without an endpoint (nothing of the SDK built), and a missing SDK turns them off with a word
rather than stopping the gateway."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from studio.gateway.tracing import OFF, Tracing, step
from studio.settings import Settings


def test_without_an_endpoint_there_is_no_tracer_and_steps_cost_nothing(tmp_path: Path) -> None:
    assert Tracing.start(Settings(home=tmp_path, otlp_endpoint="")) is None
    assert step(None, "admit limits") is OFF
    with step(None, "admit limits") as nothing:  # the one shared no-op context, used again and again
        assert nothing is None


def test_a_missing_sdk_turns_traces_off_with_an_error_naming_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)

    assert Tracing.start(Settings(home=tmp_path, otlp_endpoint="http://collector:4318")) is None
    assert "opentelemetry-exporter-otlp-proto-http" in caplog.text
    assert "serving without traces" in caplog.text


def test_the_endpoint_is_the_collector_s_base_url(tmp_path: Path) -> None:
    tracing = Tracing.start(Settings(home=tmp_path, otlp_endpoint="http://collector:4318/"))
    assert tracing is not None
    try:
        assert tracing.endpoint == "http://collector:4318/v1/traces"
    finally:
        tracing.close()
