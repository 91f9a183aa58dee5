"""The Segment `track` message the source writes to `segment.tracks`.

Field names are snake_case in Python and camelCase on the wire (`userId`, `messageId`, ...).
`to_dict` / `to_json` are the one way to serialise it: aliases on, absent fields omitted (never
null). Timestamps are held in UTC and written as ISO-8601 with milliseconds and a `Z`
(`2026-11-20T10:15:00.000Z`), the format Segment's own libraries use; finer precision is dropped.

The source writes one track layout whatever its input: the Autopilot email event
(`context.integration.name` AutopilotHQ) or Ortto's activity webhook (Ortto). Fields only one
input has are optional and absent from the other's tracks: Ortto's contacts carry `firstName`
and `lastName`, Ortto's activities `activity_id`, `field_id`, `webhook_id` and `attributes`.
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
    "ORTTO_INTEGRATION_NAME",
    "SEED_PROPERTIES",
    "EmailProperties",
    "Integration",
    "TrackContext",
    "TrackMessage",
    "Traits",
    "UtcTimestamp",
    "format_utc",
]

INTEGRATION_NAME: Final = "AutopilotHQ"
ORTTO_INTEGRATION_NAME: Final = "Ortto"


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
    contact_id: str | None = Field(None, description="The contact's id in Autopilot or Ortto.")
    first_name: str | None = Field(None, alias="firstName")
    last_name: str | None = Field(None, alias="lastName")


class Integration(_Output):
    """Which integration produced the message (`context.integration`)."""

    name: Literal["AutopilotHQ", "Ortto"] = INTEGRATION_NAME
    version: str


class TrackContext(_Output):
    traits: Traits
    integration: Integration
    ip: str | None = None
    user_agent: str | None = Field(None, alias="userAgent")


class EmailProperties(_Output):
    """The email-spec properties; one whose source is absent stays None and is omitted."""

    event: str = Field(description="The canonical type, e.g. email_opened.")
    campaign_id: str | None = None
    campaign_name: str | None = None
    email_id: str | None = Field(None, description="Always set from an Autopilot email event.")
    email_subject: str | None = None
    email_name: str | None = None
    transactional: bool | None = None
    link_id: str | None = None
    link_url: str | None = None
    activity_id: str | None = Field(None, description="Ortto: the activity's id.")
    field_id: str | None = Field(None, description="Ortto: the activity's field id, e.g. act::o.")
    webhook_id: str | None = Field(None, description="Ortto: the webhook that sent it.")
    attributes: dict[str, Any] | None = Field(
        None, description="Ortto: the activity's `attr`, as received."
    )


SEED_PROPERTIES: Final = (
    "campaign_id",
    "campaign_name",
    "email_id",
    "email_subject",
    "email_name",
    "transactional",
    "link_id",
    "link_url",
)
"""The email-spec properties an input fills from its own fields (`transactional` a boolean,
the others strings); Ortto's come from the attr keys ORTTO_ATTRIBUTE_PROPERTIES names."""


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
        description="AutopilotHQ (and for Ortto's activities, Ortto) off, so no destination of "
        "ours sends these back where they came from.",
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
