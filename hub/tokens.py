"""The API token the studio uses to talk to the hub (start/stop servers, read their state)."""

from __future__ import annotations

from studio.sealing import kept_secret
from studio.settings import Settings


def service_token(settings: Settings) -> str:
    """The studio's hub token: COVE_HUB_API_TOKEN (a Secret on Kubernetes, shared by the hub and the studio), else
    kept in COVE_HOME/hub/api_token (readable by its owner only) and made on first use."""
    return settings.hub_api_token or kept_secret(settings.hub_dir / "api_token")
