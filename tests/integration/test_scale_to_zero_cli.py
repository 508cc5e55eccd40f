"""`cove deploy autoscale NAME --min 0 --idle-s N`, and how the CLI shows a deployment that sleeps."""

from __future__ import annotations

import json
from pathlib import Path

from studio.bootstrap import open_studio
from studio.models import Observed
from studio.services import deployments
from studio.settings import Settings
from studio.values import Status
from tests.integration.conftest import write_stub_model
from tests.integration.test_cli import run


def test_autoscale_to_zero_with_an_idle_window_and_a_sleeping_deployment_shown_so(
    settings: Settings, tmp_path: Path
) -> None:
    assert run(settings, "model", "add", "tiny", str(write_stub_model(tmp_path / "tiny"))).exit_code == 0
    assert run(settings, "deploy", "create", "nap", "--model", "tiny:1", "--cpu", "0.5").exit_code == 0
    scaled = run(settings, "deploy", "autoscale", "nap", "--min", "0", "--max", "2", "--idle-s", "30")
    assert scaled.exit_code == 0, scaled.output
    assert scaled.output == "deployment nap: autoscaling 0–2 at 4 in flight per replica, sleeping after 30 s idle\n"
    (dep,) = json.loads(run(settings, "deploy", "list", "--json").output)
    assert dep["autoscale"] == {"min_replicas": 0, "max_replicas": 2, "target_inflight": 4.0, "idle_s": 30.0}
    assert "autoscale 0–2 at 4 in flight each, sleeps after 30 s idle" in run(settings, "deploy", "get", "nap").output

    db = open_studio(settings)  # what the controller does once it has been idle 30 s, and the gateway after a wake
    try:
        deployments.autoscale_to(db=db, name="nap", replicas=0, reason="no request for 30 s: sleeping")
        current = deployments.desired_state(db=db)[0]
        deployments.record_observed(
            db=db, name="nap", generation=current.generation, observed=Observed(status=Status.STOPPED), events=[]
        )
        deployments.record_cold_start(db=db, name="nap", seconds=7.25)
    finally:
        db.dispose()
    described = run(settings, "deploy", "get", "nap").output
    assert described.startswith("nap: Sleeping, 0/0 ready\n")
    assert "last cold start 7.2 s (held request to first token)" in described
    assert run(settings, "deploy", "list").output.splitlines()[1].split()[:4] == ["nap", "admin", "Sleeping", "0/0"]
