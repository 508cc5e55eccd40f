"""The API token the studio uses to talk to the hub (start/stop servers, read their state)."""

from __future__ import annotations

import secrets

from studio.settings import Settings


def service_token(settings: Settings) -> str:
    """The studio's hub token: COVE_HUB_API_TOKEN (a Secret on Kubernetes, shared by the hub and the studio), else
    kept in COVE_HOME/hub/api_token (readable by its owner only) and made on first use."""
    if settings.hub_api_token:
        return settings.hub_api_token
    path = settings.hub_dir / "api_token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(token)
    return token
