"""Autopilot email event -> Segment track message. Pure: no Kafka, no clock, no I/O.

The agent supplies what the event cannot: the userId learned for the contact's email and the
time the event was received. Choices a reader can rely on:

- `timestamp` and `originalTimestamp` are `occurred_at` in UTC: Autopilot's clock is the only
  sender clock there is. `sentAt` and `receivedAt` are both `received_at`, because the worker is
  at once the library that sends and the server that receives. Segment's skew correction,
  receivedAt - (sentAt - originalTimestamp), therefore gives back exactly `timestamp`.
- `messageId` is `autopilot-<id>`, or `autopilot-sha256-<hex digest of id>` when that would pass
  Segment's 100 characters: the same event always gets the same messageId, so a redelivery
  after a crash can be deduplicated downstream.
- The Kafka key is the userId, else the lowercased email, so one contact's events keep order.
- An empty `contact.user_id` counts as absent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

import pydantic
from pydantic_core import ErrorDetails

from worker import __version__
from worker.errors import DecodeError, InvalidInput, SkipMessage, UnsupportedType, ValidationError
from worker.models.autopilot_event import EVENT_NAMES, EmailEvent
from worker.models.segment_track import (
    EmailProperties,
    Integration,
    TrackContext,
    TrackMessage,
    Traits,
)

__all__ = ["SourceOutput", "email_event_to_track", "map_source", "parse_email_event"]

_MESSAGE_ID_PREFIX = "autopilot-"
_MESSAGE_ID_MAX = 100
_ECHO_MAX = 100

_PHRASES: Mapping[str, str] = MappingProxyType(
    {
        "missing": "field required",
        "string_type": "must be a string",
        "string_too_short": "must not be empty",
        "bool_type": "must be true or false",
        "model_type": "must be an object",
        "datetime_parsing": "must be an ISO-8601 date-time with a UTC offset",
        "datetime_from_date_parsing": "must be an ISO-8601 date-time with a UTC offset",
        "timezone_aware": "must include a UTC offset",
    }
)
"""Pydantic error types, as our error messages word them; others keep pydantic's wording."""

_JSON_TYPES: Mapping[type, str] = MappingProxyType(
    {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
)


@dataclass(frozen=True, slots=True)
class SourceOutput:
    """One track message and the Kafka key it is written under."""

    key: str
    message: TrackMessage


def parse_email_event(raw: bytes) -> EmailEvent:
    """Validate raw bytes against the input contract, or raise one `InvalidInput` saying why."""
    try:
        return EmailEvent.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise _invalid_input(exc, raw) from exc


def email_event_to_track(
    event: EmailEvent,
    *,
    learned_user_id: str | None,
    received_at: datetime,
    integration_version: str,
) -> SourceOutput:
    """The track message for `event`; raises `SkipMessage("test_delivery")` for test events."""
    if event.test:
        raise SkipMessage("test_delivery")
    contact, journey, email, link = event.contact, event.journey, event.email, event.link
    user_id = contact.user_id or learned_user_id or None
    message = TrackMessage(
        event=EVENT_NAMES[event.type],
        user_id=user_id,
        anonymous_id=None if user_id else contact.email,
        message_id=_message_id(event.id),
        timestamp=event.occurred_at,
        original_timestamp=event.occurred_at,
        sent_at=received_at,
        received_at=received_at,
        context=TrackContext(
            traits=Traits(email=contact.email, contact_id=contact.contact_id),
            integration=Integration(version=integration_version),
            ip=event.ip,
            user_agent=event.user_agent,
        ),
        properties=EmailProperties(
            event=event.type.value,
            campaign_id=journey.id if journey else None,
            campaign_name=journey.name if journey else None,
            email_id=email.id,
            email_subject=email.subject,
            email_name=email.name,
            transactional=email.transactional,
            link_id=link.id if link else None,
            link_url=link.url if link else None,
        ),
    )
    return SourceOutput(key=user_id or contact.email.lower(), message=message)


def map_source(
    raw: bytes,
    *,
    received_at: datetime,
    learned_user_id: str | None = None,
    integration_version: str = __version__,
) -> SourceOutput:
    """Parse and map one raw event: what the offline `map source` command and golden tests run."""
    return email_event_to_track(
        parse_email_event(raw),
        learned_user_id=learned_user_id,
        received_at=received_at,
        integration_version=integration_version,
    )


def _message_id(event_id: str) -> str:
    """Deterministic and at most 100 characters; hashed only when the plain form is too long."""
    plain = _MESSAGE_ID_PREFIX + event_id
    if len(plain) <= _MESSAGE_ID_MAX:
        return plain
    return f"{_MESSAGE_ID_PREFIX}sha256-{hashlib.sha256(event_id.encode()).hexdigest()}"


def _invalid_input(exc: pydantic.ValidationError, raw: bytes) -> InvalidInput:
    """One error for the whole input: the bytes, the top-level shape, the type, then the fields.

    An unknown type is reported alone: what else the event must carry depends on its type.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        try:
            raw.decode()
        except UnicodeDecodeError as bad:
            return DecodeError(f"invalid UTF-8 at byte {bad.start}")
        return DecodeError(f"invalid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    if first["type"] == "model_type" and not first["loc"]:
        kind = _JSON_TYPES.get(type(first["input"]), "null")
        return DecodeError(f"not a JSON object: got {kind}")
    for error in errors:
        if error["type"] == "enum" and error["loc"] == ("type",):
            return UnsupportedType(f"Unknown Autopilot event type {_echo(error['input'])}")
    return ValidationError("; ".join(_describe(error) for error in errors))


def _describe(error: ErrorDetails) -> str:
    """`path: what is wrong (got value)`, the value echoed shortened."""
    if error["type"] == "value_error":
        text = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        text = _PHRASES.get(error["type"], error["msg"])
    if not error["loc"]:
        return text
    path = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"{path}: {text}"
    return f"{path}: {text} (got {_echo(error['input'])})"


def _echo(value: object) -> str:
    """A value as it may appear in an error message: never longer than about 100 characters."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _ECHO_MAX else text[:_ECHO_MAX] + "..."
