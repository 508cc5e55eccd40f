"""``client.aliases``: a model's aliases, its promotion gate, promotion, rollback, and a deployment's canary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from studio.gate import GateConfig
from studio.models import AliasMovePublic, DeploymentPublic, ModelPublic, Promotion, VersionResults

if TYPE_CHECKING:
    from cove.client import Client

_HISTORY = TypeAdapter(list[AliasMovePublic])


class Aliases:
    def __init__(self, client: Client) -> None:
        self.client = client

    def move(self, model: str, alias: str, version: int) -> Promotion:
        """Point ``staging`` at ``version`` (``production``: a promotion with no results, through the gate)."""
        done: Promotion = self.client.call(
            Promotion, "PUT", f"/models/{model}/aliases/{alias}", body={"version": version}
        )
        return done

    def promote(
        self,
        model: str,
        version: int,
        *,
        to: str = "production",
        override_reason: str | None = None,
        results: Mapping[int, VersionResults | Mapping[str, Any]] | None = None,
    ) -> Promotion:
        """Move ``to`` onto ``version`` if the model's gate passes ``results`` (by version number). A refusal
        raises ``studio.errors.GateRefused`` naming each failing check; an admin may pass ``override_reason``."""
        body = {
            "version": version,
            "to": to,
            "override_reason": override_reason,
            "results": {
                str(v): VersionResults.model_validate(r).model_dump(mode="json") for v, r in (results or {}).items()
            },
        }
        done: Promotion = self.client.call(Promotion, "POST", f"/models/{model}/promote", body=body)
        return done

    def rollback(self, model: str) -> Promotion:
        """Move production back to the version it pointed at before."""
        done: Promotion = self.client.call(Promotion, "POST", f"/models/{model}/rollback")
        return done

    def history(self, model: str) -> list[AliasMovePublic]:
        return _HISTORY.validate_python(self.client.request("GET", f"/models/{model}/aliases").json())

    def set_gate(self, model: str, gate: GateConfig | Mapping[str, Any]) -> ModelPublic:
        body = GateConfig.model_validate(gate).model_dump(mode="json")
        found: ModelPublic = self.client.call(ModelPublic, "PUT", f"/models/{model}/gate", body=body)
        return found

    def canary(self, deployment: str, share: int) -> DeploymentPublic:
        """Send ``share`` percent of ``deployment``'s requests to its model's staging version; 0 turns it off."""
        found: DeploymentPublic = self.client.call(
            DeploymentPublic, "PUT", f"/deployments/{deployment}/canary", body={"share": share}
        )
        return found
