"""The request descriptor: one destination API call, described but not sent.

The destination writes these to its backend's requests topic (`autopilot.requests`,
`ortto.requests`); that backend's delivery reads them, adds the base URL and the API key (which
never appear here) and performs them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RequestDescriptor", "RequestKind"]


class RequestKind(StrEnum):
    """The action a descriptor performs: Autopilot's two, then Ortto's two."""

    UPSERT_CONTACT = "upsert_contact"
    TRIGGER_JOURNEY = "trigger_journey"
    MERGE_PERSON = "merge_person"
    CREATE_ACTIVITY = "create_activity"


class RequestDescriptor(BaseModel):
    """`{"method", "path", "json", "kind", "message_id", "contact"}` as on the topic."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    method: Literal["POST", "GET"] = "POST"
    path: str = Field(description="Path below the API base URL, e.g. /v1/contact.")
    body: dict[str, Any] = Field(alias="json", description="The JSON body of the request.")
    kind: RequestKind
    message_id: str = Field(description="The Segment messageId this request came from.")
    contact: str = Field(
        description="Who the request is about; also the Kafka key. Autopilot: the lowercased "
        "email. Ortto: the first ORTTO_MERGE_BY field the person has (the userId, else the "
        "lowercased email)."
    )
