"""The raw Autopilot email event: the input contract of the source (topic `autopilot.email-events`).

Autopilot never published this format, so it is ours. Unknown fields are accepted and ignored,
so producers may send more than we read. `type` is normalised to `EmailEventType`; the display
names ("Email Opened") and the Segment email-spec names ("Email Link Clicked", "Unsubscribed")
are accepted too, case-insensitively (`TYPE_ALIASES`).

`EmailEvent` is the contract: its schema is published and its errors are the messages dead
letters carry. `CommonEmailEvent` is the shape nearly every producer sends, as msgspec structs
decoded in C (no Python validator, no model instance): every event it accepts, `EmailEvent`
accepts with the same values, once the source has checked in Python what msgspec cannot (the
bytes are ones pydantic's parser takes too, `type` is a known spelling, `occurred_at` a real
date-time, `contact.email` an address, a click has a URL). The source maps through it when it
can, through `EmailEvent` otherwise (`worker.source.mapping`; `tests/unit/
test_source_fast_path.py` holds the two together).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final, Self

import msgspec
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
    "COMMON_EMAIL_EVENTS",
    "EMAIL_ADDRESS",
    "EVENT_NAMES",
    "TYPE_ALIASES",
    "CommonContact",
    "CommonEmail",
    "CommonEmailEvent",
    "CommonJourney",
    "CommonLink",
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

EMAIL_ADDRESS: Final = re.compile(r"[^@\s]+@[^@\s]+")
"""What `contact.email` must match in full."""


def _check_email(value: str) -> str:
    """Reject what cannot be an address: it becomes the anonymousId and the Kafka key."""
    if not EMAIL_ADDRESS.fullmatch(value):
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


# The common shape: a strict subset of `EmailEvent`, decoded by msgspec without Python code.

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class CommonContact(msgspec.Struct, gc=False):
    email: str
    contact_id: _NonEmpty
    user_id: str | None = None


class CommonJourney(msgspec.Struct, gc=False):
    id: str | None = None
    name: str | None = None


class CommonEmail(msgspec.Struct, gc=False):
    id: _NonEmpty
    subject: str | None = None
    name: str | None = None
    transactional: bool | None = None


class CommonLink(msgspec.Struct, gc=False):
    id: str | None = None
    url: str | None = None


class CommonEmailEvent(msgspec.Struct, gc=False):
    """An email event of the common shape. Unknown fields are skipped, and msgspec's types are
    strict (no number as a string, no 0/1 as a boolean), as `EmailEvent`'s are from JSON;
    `type`, `occurred_at` and `contact.email` are only strings here: the source checks the rest."""

    id: _NonEmpty
    type: str
    occurred_at: str
    contact: CommonContact
    email: CommonEmail
    journey: CommonJourney | None = None
    link: CommonLink | None = None
    ip: str | None = None
    user_agent: str | None = None
    test: bool = False


COMMON_EMAIL_EVENTS: Final[msgspec.json.Decoder[CommonEmailEvent]] = msgspec.json.Decoder(
    CommonEmailEvent
)
"""`COMMON_EMAIL_EVENTS.decode(raw)`: the common shape, straight from the bytes."""
