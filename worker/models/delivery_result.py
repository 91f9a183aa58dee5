"""The final outcome of one request descriptor (`autopilot.deliveries`, `ortto.deliveries`),
and its attempts.

A wire contract: delivery writes it, metrics and the schema writer read it, and
`schemas/autopilot.delivery.schema.json` is generated from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.models.autopilot_request import RequestKind

__all__ = ["AttemptRecord", "DeliveryResult"]


class AttemptRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    status: int | None = Field(description="HTTP status; null when no response came.")
    error: str | None = None


class DeliveryResult(BaseModel):
    """The final outcome of one request descriptor, as written to its backend's deliveries topic."""

    model_config = ConfigDict(frozen=True)

    backend: str = Field(
        "autopilot",
        description="The destination API that was called (autopilot, ortto); results written "
        "before there were two backends lack it and are Autopilot's.",
    )
    message_id: str
    kind: RequestKind
    contact: str
    status: int | str = Field(
        description="The last HTTP status (400 for an item the API refused inside a 2xx answer), "
        "or the error class when the last attempt got none."
    )
    outcome: Literal["delivered", "dead_lettered"]
    attempts: int
    first_attempt_at: datetime
    last_attempt_at: datetime
    latency_ms: float = Field(description="From `deliver` receiving the batch to this outcome.")
    contact_id: str | None = Field(
        None,
        description="The API's id of the contact (Autopilot) or person (Ortto), if it gave one.",
    )
    error: str | None = None
    error_class: str | None = Field(None, description="DeliveryRejected or RetryBudgetExhausted.")
    response_body: str | None = Field(None, description="The rejecting response, key masked.")
    history: tuple[AttemptRecord, ...] = Field((), description="Every attempt, for dead letters.")
