"""The Segment `track` message the source writes to `segment.tracks`.

Field names are snake_case in Python and camelCase on the wire (`userId`, `messageId`, ...).
`to_dict` / `to_json` are the one way to serialise it: aliases on, absent fields omitted (never
null). Timestamps are held in UTC and written as ISO-8601 with milliseconds and a `Z`
(`2026-11-20T10:15:00.000Z`), the format Segment's own libraries use; finer precision is dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

__all__ = [
    "INTEGRATION_NAME",
    "EmailProperties",
    "Integration",
    "TrackContext",
    "TrackMessage",
    "Traits",
    "UtcTimestamp",
    "format_utc",
]

INTEGRATION_NAME: Final = "AutopilotHQ"


def format_utc(value: datetime) -> str:
    """An aware datetime as Segment writes times: UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


UtcTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(lambda value: value.astimezone(UTC)),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]
"""An aware datetime, converted to UTC, written as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""


class _Output(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )


class Traits(_Output):
    email: str
    contact_id: str


class Integration(_Output):
    """Which integration produced the message (`context.integration`)."""

    name: Literal["AutopilotHQ"] = INTEGRATION_NAME
    version: str


class TrackContext(_Output):
    traits: Traits
    integration: Integration
    ip: str | None = None
    user_agent: str | None = Field(None, alias="userAgent")


class EmailProperties(_Output):
    """The email-spec properties; one whose source is absent stays None and is omitted."""

    event: str = Field(description="The canonical Autopilot type, e.g. email_opened.")
    campaign_id: str | None = None
    campaign_name: str | None = None
    email_id: str
    email_subject: str | None = None
    email_name: str | None = None
    transactional: bool | None = None
    link_id: str | None = None
    link_url: str | None = None


class TrackMessage(_Output):
    """A Segment track call. Exactly one of `user_id` and `anonymous_id` is set."""

    type: Literal["track"] = "track"
    event: str
    user_id: str | None = Field(None, alias="userId")
    anonymous_id: str | None = Field(None, alias="anonymousId")
    message_id: str = Field(alias="messageId", min_length=1, max_length=100)
    timestamp: UtcTimestamp
    original_timestamp: UtcTimestamp = Field(alias="originalTimestamp")
    sent_at: UtcTimestamp = Field(alias="sentAt")
    received_at: UtcTimestamp = Field(alias="receivedAt")
    context: TrackContext
    integrations: dict[str, bool] = Field(
        default_factory=lambda: {INTEGRATION_NAME: False},
        description="AutopilotHQ off, so our own destination never sends these back to Autopilot.",
    )
    properties: EmailProperties

    @model_validator(mode="after")
    def _one_identity(self) -> Self:
        if (self.user_id is None) == (self.anonymous_id is None):
            raise ValueError("exactly one of userId and anonymousId must be set")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-ready data, camelCase, absent fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> bytes:
        """The message as the bytes written to Kafka; same content as `to_dict`."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()
