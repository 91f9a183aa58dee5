"""The raw Autopilot email event: the input contract of the source (topic `autopilot.email-events`).

Autopilot never published this format, so it is ours. Unknown fields are accepted and ignored,
so producers may send more than we read. `type` is normalised to `EmailEventType`; the display
names ("Email Opened") and the Segment email-spec names ("Email Link Clicked", "Unsubscribed")
are accepted too, case-insensitively (`TYPE_ALIASES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

__all__ = [
    "EVENT_NAMES",
    "TYPE_ALIASES",
    "Contact",
    "Email",
    "EmailEvent",
    "EmailEventType",
    "Journey",
    "Link",
]


class EmailEventType(StrEnum):
    """The canonical Autopilot email event types; also `properties.event` of the track."""

    EMAIL_BOUNCED = "email_bounced"
    EMAIL_DELIVERED = "email_delivered"
    EMAIL_CLICKED = "email_clicked"
    EMAIL_MARKED_AS_SPAM = "email_marked_as_spam"
    EMAIL_OPENED = "email_opened"
    EMAIL_UNSUBSCRIBED = "email_unsubscribed"
    EMAIL_REPLIED = "email_replied"


EVENT_NAMES: Mapping[EmailEventType, str] = MappingProxyType(
    {
        EmailEventType.EMAIL_BOUNCED: "Email Bounced",
        EmailEventType.EMAIL_DELIVERED: "Email Delivered",
        EmailEventType.EMAIL_CLICKED: "Email Clicked",
        EmailEventType.EMAIL_MARKED_AS_SPAM: "Email Marked as Spam",
        EmailEventType.EMAIL_OPENED: "Email Opened",
        EmailEventType.EMAIL_UNSUBSCRIBED: "Email Unsubscribed",
        EmailEventType.EMAIL_REPLIED: "Email Replied",
    }
)
"""The Segment event name (display form) of each type."""

TYPE_ALIASES: Mapping[str, EmailEventType] = MappingProxyType(
    {t.value: t for t in EmailEventType}
    | {name.casefold(): t for t, name in EVENT_NAMES.items()}
    | {
        "email link clicked": EmailEventType.EMAIL_CLICKED,
        "unsubscribed": EmailEventType.EMAIL_UNSUBSCRIBED,
    }
)
"""Every accepted spelling of `type`, casefolded, to its canonical type."""

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _check_email(value: str) -> str:
    """Reject what cannot be an address: it becomes the anonymousId and the Kafka key."""
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address")
    return value


Id = Annotated[str, Field(min_length=1)]
EmailAddress = Annotated[str, AfterValidator(_check_email)]


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Contact(_Input):
    contact_id: Id
    email: EmailAddress
    user_id: str | None = Field(None, description="The Segment userId, if Autopilot knows it.")


class Journey(_Input):
    id: str | None = None
    name: str | None = None


class Email(_Input):
    id: Id
    subject: str | None = None
    name: str | None = None
    transactional: StrictBool | None = None


class Link(_Input):
    id: str | None = None
    url: str | None = Field(None, description="Required when type is email_clicked.")


class EmailEvent(_Input):
    """One Autopilot email event, as a producer writes it to the input topic."""

    id: Id = Field(description="Unique per event; the track's messageId derives from it.")
    type: EmailEventType = Field(
        description="A canonical type, or (case-insensitively) its display name, "
        "'Email Link Clicked' or 'Unsubscribed'."
    )
    occurred_at: AwareDatetime = Field(description="ISO-8601 with a UTC offset.")
    contact: Contact
    journey: Journey | None = None
    email: Email
    link: Link | None = None
    ip: str | None = None
    user_agent: str | None = None
    test: StrictBool = Field(False, description="A test delivery: acknowledged, nothing emitted.")

    @field_validator("type", mode="before")
    @classmethod
    def _normalise_type(cls, value: object) -> object:
        """Map every accepted spelling to the canonical value; unknown strings fail as enum."""
        if not isinstance(value, str):
            raise ValueError("must be a string")  # noqa: TRY004 - pydantic reports ValueError only
        if not value.strip():
            raise ValueError("must not be empty")
        return TYPE_ALIASES.get(value.strip().casefold(), value)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _require_text(cls, value: object) -> object:
        """A number would parse as a Unix time; the contract asks for ISO-8601 with an offset."""
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 date-time with a UTC offset")  # noqa: TRY004
        return value

    @model_validator(mode="after")
    def _click_has_url(self) -> Self:
        """A click without the link it was on cannot be reported as Email Clicked."""
        if self.type is EmailEventType.EMAIL_CLICKED and (self.link is None or not self.link.url):
            raise ValueError("link.url: field required when type is email_clicked")
        return self
