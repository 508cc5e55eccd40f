"""``client.prices``: what a deployment costs, per million input and output tokens and per replica-hour. Amounts
are given as decimal strings (or ``Decimal``), never floats: "0.15" is exactly 0.15."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from studio.models import PricePublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/prices"
Amount = str | Decimal | int


class Prices:
    def __init__(self, client: Client) -> None:
        self.client = client

    def set(
        self,
        deployment: str,
        *,
        input_per_m: Amount | None = None,
        output_per_m: Amount | None = None,
        hourly: Amount | None = None,
        hourly_gpu: Mapping[str, Amount] | None = None,
    ) -> PricePublic:
        """Price ``deployment`` (an admin); amounts not given keep theirs. ``hourly`` is per replica-hour on any GPU
        type, ``hourly_gpu`` per replica-hour on the types it names (0 removes one)."""
        given = {"input_per_m": input_per_m, "output_per_m": output_per_m, "hourly": hourly}
        body: dict[str, object] = {k: str(v) for k, v in given.items() if v is not None}
        if hourly_gpu:
            body["hourly_gpu"] = {gpu: str(v) for gpu, v in hourly_gpu.items()}
        price: PricePublic = self.client.call(PricePublic, "PUT", f"{PATH}/{deployment}", body=body)
        return price

    def list(self) -> list[PricePublic]:
        found: list[PricePublic] = self.client.call(list[PricePublic], "GET", PATH)
        return found

    def delete(self, deployment: str) -> None:
        self.client.call(None, "DELETE", f"{PATH}/{deployment}")
