"""The raw Autopilot email event: the input contract of the source (topic `autopilot.email-events`).

Autopilot never published this format, so it is ours. Unknown fields are accepted and ignored,
so producers may send more than we read. `type` is normalised to `EmailEventType`; the display
names ("Email Opened") and the Segment email-spec names ("Email Link Clicked", "Unsubscribed")
are accepted too, case-insensitively (`TYPE_ALIASES`).

`EmailEvent` is the contract: its schema is published and its errors are the messages dead
letters carry. `CommonEmailEvent` is the shape nearly every producer sends, written so that
pydantic-core checks it in Rust alone (no Python validator, no model instance): every event it
accepts, `EmailEvent` accepts with the same values, once the source has checked in Python what
needs a table or the calendar (`type` is a known spelling, `occurred_at` a real date, a click
has a URL). The source maps through it when it can, through `EmailEvent` otherwise
(`worker.source.mapping`; `tests/unit/test_source_fast_path.py` holds the two together).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final, NotRequired, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic wants it, not typing's, before 3.12

__all__ = [
    "COMMON_EMAIL_EVENTS",
    "EVENT_NAMES",
    "TYPE_ALIASES",
    "CommonEmailEvent",
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


# The common shape: a strict subset of `EmailEvent`, checked without Python code.

_PRINTABLE_NOT_AT = r"[\x21-\x3f\x41-\x7e]+"
_CommonEmailAddress = Annotated[
    str, StringConstraints(pattern=rf"^{_PRINTABLE_NOT_AT}@{_PRINTABLE_NOT_AT}$")
]
"""Printable ASCII, no space, one `@` inside: each such string matches `[^@\\s]+@[^@\\s]+`."""

_CommonDateTime = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
        r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
        r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
    ),
]
"""`YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, each part in its range; whether the day
exists in its month is left to `datetime.fromisoformat`, which then reads these strings as
pydantic does."""


class _CommonContact(TypedDict):
    """Fields in the order of the track's `context.traits`, which is this dict less `user_id`."""

    email: _CommonEmailAddress
    contact_id: Id
    user_id: NotRequired[str | None]


# Journey, email and link come out under the names of the track's properties, in their order.


class _CommonJourney(TypedDict, total=False):
    campaign_id: Annotated[str | None, Field(validation_alias="id")]
    campaign_name: Annotated[str | None, Field(validation_alias="name")]


class _CommonEmail(TypedDict):
    email_id: Annotated[str, Field(min_length=1, validation_alias="id")]
    email_subject: NotRequired[Annotated[str | None, Field(validation_alias="subject")]]
    email_name: NotRequired[Annotated[str | None, Field(validation_alias="name")]]
    transactional: NotRequired[StrictBool | None]


class _CommonLink(TypedDict, total=False):
    link_id: Annotated[str | None, Field(validation_alias="id")]
    link_url: Annotated[str | None, Field(validation_alias="url")]


class CommonEmailEvent(TypedDict):
    """An email event of the common shape, as plain dicts; unknown fields are dropped, and the
    parts the track copies come out as the track names them (`journey.id` as `campaign_id`...)."""

    id: Id
    type: str
    occurred_at: _CommonDateTime
    contact: _CommonContact
    journey: NotRequired[_CommonJourney | None]
    email: _CommonEmail
    link: NotRequired[_CommonLink | None]
    ip: NotRequired[str | None]
    user_agent: NotRequired[str | None]
    test: NotRequired[StrictBool]


COMMON_EMAIL_EVENTS: Final[TypeAdapter[CommonEmailEvent]] = TypeAdapter(CommonEmailEvent)
"""`COMMON_EMAIL_EVENTS.validate_json(raw)`: the common shape, straight from the bytes."""
