"""The studio's token for the hub's API: from the settings (a shared Secret on Kubernetes) or made once and kept."""

from __future__ import annotations

import stat
from pathlib import Path

from studio.hub_client import service_token
from tests.conftest import make_settings


def test_a_token_is_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = service_token(settings)
    kept = settings.hub_dir / "api_token"
    assert len(first) == 64
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert service_token(settings) == first


def test_a_token_from_the_settings_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hub_api_token="shared-secret")
    assert service_token(settings) == "shared-secret"
    assert not (settings.hub_dir / "api_token").exists()
