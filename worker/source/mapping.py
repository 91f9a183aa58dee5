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

Two ways in, one way out. The contract is `EmailEvent`, and its errors are the messages dead
letters carry; but building its models and then a `TrackMessage` costs several times the
mapping itself. So `map_source` first validates the bytes against `CommonEmailEvent` (the shape
nearly every producer sends, checked by pydantic-core in Rust, into plain dicts), checks in
Python what that leaves (`type` spelling, `occurred_at` a real date, a click's URL) and builds
the track as a plain dict (`SourceOutput.track`), which `to_json` hands to orjson. The common
shape is a strict subset of the contract and maps to the very same track; anything else, valid
or not, goes through `EmailEvent`, which alone words errors. `tests/unit/
test_source_fast_path.py` holds the two ways to that on every golden case and on mutations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

import orjson
import pydantic
from pydantic_core import ErrorDetails

from worker import __version__
from worker.errors import DecodeError, InvalidInput, SkipMessage, UnsupportedType, ValidationError
from worker.models.autopilot_event import (
    COMMON_EMAIL_EVENTS,
    EVENT_NAMES,
    TYPE_ALIASES,
    CommonEmailEvent,
    EmailEvent,
    EmailEventType,
)
from worker.models.segment_track import INTEGRATION_NAME, TrackMessage, format_utc

__all__ = [
    "SourceOutput",
    "email_event_contact",
    "email_event_to_track",
    "map_source",
    "parse_email_event",
]

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

_TYPE_TEXTS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        spelling: (kind.value, EVENT_NAMES[kind])
        for spelling, kind in (
            *TYPE_ALIASES.items(),
            *((name, kind) for kind, name in EVENT_NAMES.items()),
            ("Email Link Clicked", EmailEventType.EMAIL_CLICKED),
            ("Unsubscribed", EmailEventType.EMAIL_UNSUBSCRIBED),
        )
    }
)
"""`type` as producers usually spell it -> (canonical type, Segment event name); any other
spelling is stripped and casefolded first, as `EmailEvent` does."""

_MILLIS: Final = tuple(f".{ms:03d}Z" for ms in range(1000))
"""`.mmmZ` for each millisecond: the tail of every timestamp written."""

_ONE_SECOND: Final = timedelta(seconds=1)
_LAST_SECOND: Final = datetime.max.replace(microsecond=0, tzinfo=UTC)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_second: tuple[datetime, datetime, str] = (_EPOCH, _EPOCH, "")
"""The last second `_received_text` wrote: its start, its end and its `YYYY-MM-DDTHH:MM:SS`."""

_INTEGRATIONS: Final = {INTEGRATION_NAME: False}
_integration_by_version: dict[str, dict[str, str]] = {}


@dataclass(slots=True)
class SourceOutput:
    """One track message and the Kafka key it is written under.

    `track` is the message as it is written (`to_json`): camelCase, absent fields omitted, keys
    in `TrackMessage`'s order. Treat both as read-only: the track's constant parts are shared
    between messages (the class is not frozen only because frozen ones are slower to make).
    """

    key: str
    track: dict[str, Any]

    def to_json(self) -> bytes:
        """The bytes written to Kafka."""
        return orjson.dumps(self.track)

    @property
    def message(self) -> TrackMessage:
        """The same message as a validated `TrackMessage`; for tests and tools, not hot paths."""
        return TrackMessage.model_validate(self.track)


def parse_email_event(raw: bytes) -> EmailEvent:
    """Validate raw bytes against the input contract, or raise one `InvalidInput` saying why."""
    try:
        return EmailEvent.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise _invalid_input(exc, raw) from exc


def email_event_contact(raw: bytes) -> str:
    """The contact's email of a valid event (intake's key), or `parse_email_event`'s error."""
    common = _common_event(raw)
    if common is None:
        return parse_email_event(raw).contact.email
    return common[0]["contact"]["email"]


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
    properties = {
        "event": event.type.value,
        "campaign_id": journey.id if journey else None,
        "campaign_name": journey.name if journey else None,
        "email_id": email.id,
        "email_subject": email.subject,
        "email_name": email.name,
        "transactional": email.transactional,
        "link_id": link.id if link else None,
        "link_url": link.url if link else None,
    }
    return _assemble(
        EVENT_NAMES[event.type],
        event.id,
        format_utc(event.occurred_at),
        {"email": contact.email, "contact_id": contact.contact_id},
        contact.email,
        contact.user_id or learned_user_id or None,
        event.ip,
        event.user_agent,
        {name: value for name, value in properties.items() if value is not None},
        received_at,
        integration_version,
    )


def map_source(
    raw: bytes,
    *,
    received_at: datetime,
    learned_user_id: str | None = None,
    integration_version: str = __version__,
) -> SourceOutput:
    """Parse and map one raw event: what the agent, `map source` and the golden tests run."""
    common = _common_event(raw)
    if common is None:
        return email_event_to_track(
            parse_email_event(raw),
            learned_user_id=learned_user_id,
            received_at=received_at,
            integration_version=integration_version,
        )
    event, canonical, event_name, timestamp = common
    if event.get("test"):
        raise SkipMessage("test_delivery")
    contact = event["contact"]
    user_id = contact.pop("user_id", None) or learned_user_id or None
    # journey, email and link come out of validation named and ordered as the properties
    properties: dict[str, Any] = {"event": canonical}
    journey = event.get("journey")
    if journey:
        properties.update(journey)
    properties.update(event["email"])
    link = event.get("link")
    if link:
        properties.update(link)
    if None in properties.values():
        properties = {name: value for name, value in properties.items() if value is not None}
    return _assemble(
        event_name,
        event["id"],
        timestamp,
        contact,
        contact["email"],
        user_id,
        event.get("ip"),
        event.get("user_agent"),
        properties,
        received_at,
        integration_version,
    )


def _assemble(  # noqa: PLR0917 - positional: one call per message, keywords cost more
    event_name: str,
    event_id: str,
    timestamp: str,
    traits: Mapping[str, object],
    email: str,
    user_id: str | None,
    ip: str | None,
    user_agent: str | None,
    properties: dict[str, Any],
    received_at: datetime,
    integration_version: str,
) -> SourceOutput:
    """The one place a track is put together, keys in `TrackMessage`'s order."""
    integration = _integration_by_version.get(integration_version)
    if integration is None:
        integration = {"name": INTEGRATION_NAME, "version": integration_version}
        if len(_integration_by_version) < 16:
            _integration_by_version[integration_version] = integration
    context: dict[str, Any] = {"traits": traits, "integration": integration}
    if ip is not None:
        context["ip"] = ip
    if user_agent is not None:
        context["userAgent"] = user_agent
    message_id = _MESSAGE_ID_PREFIX + event_id
    if len(message_id) > _MESSAGE_ID_MAX:
        message_id = f"{_MESSAGE_ID_PREFIX}sha256-{hashlib.sha256(event_id.encode()).hexdigest()}"
    received = _received_text(received_at)
    if user_id:
        return SourceOutput(
            user_id,
            {
                "type": "track",
                "event": event_name,
                "userId": user_id,
                "messageId": message_id,
                "timestamp": timestamp,
                "originalTimestamp": timestamp,
                "sentAt": received,
                "receivedAt": received,
                "context": context,
                "integrations": _INTEGRATIONS,
                "properties": properties,
            },
        )
    return SourceOutput(
        email.lower(),
        {
            "type": "track",
            "event": event_name,
            "anonymousId": email,
            "messageId": message_id,
            "timestamp": timestamp,
            "originalTimestamp": timestamp,
            "sentAt": received,
            "receivedAt": received,
            "context": context,
            "integrations": _INTEGRATIONS,
            "properties": properties,
        },
    )


def _common_event(raw: bytes) -> tuple[CommonEmailEvent, str, str, str] | None:
    """(event, canonical type, Segment event name, UTC timestamp) when `raw` is a valid event of
    the common shape, else None (the `EmailEvent` path then decides).

    `CommonEmailEvent` checks the types in Rust, on the bytes, with the parser `EmailEvent` uses;
    left to Python is what needs a table (`type`), the calendar (`occurred_at`) or the type (a
    click's URL).
    """
    try:
        event = COMMON_EMAIL_EVENTS.validate_json(raw)
    except pydantic.ValidationError:
        return None
    type_text = _TYPE_TEXTS.get(event["type"])
    if type_text is None:
        kind = TYPE_ALIASES.get(event["type"].strip().casefold())
        if kind is None:
            return None
        type_text = (kind.value, EVENT_NAMES[kind])
    canonical, event_name = type_text
    if canonical == "email_clicked":
        link = event.get("link")
        if not link or not link.get("link_url"):
            return None
    text = event["occurred_at"]
    try:
        moment = datetime.fromisoformat(text)  # the digits, the calendar, the offset's range
    except ValueError:
        return None
    if text[-1] == "Z" or text[-5:] == "00:00":
        timestamp = text[:19] + _MILLIS[moment.microsecond // 1000]
    else:  # shift the wall time by the offset, without formatting an aware datetime (slow)
        offset = moment.utcoffset()
        if offset is None:  # pragma: no cover - the pattern ends every string with an offset
            return None
        try:
            wall = datetime.fromisoformat(text[:19]) - offset
        except OverflowError:  # before year 1 or after 9999 in UTC: the model path decides
            return None
        timestamp = wall.isoformat() + _MILLIS[moment.microsecond // 1000]
    return event, canonical, event_name, timestamp


def _received_text(moment: datetime) -> str:
    """`received_at` as `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.

    Formatting a datetime costs about as much as mapping an event, and `received_at` rarely
    leaves its second from one event to the next, so the text of the last second seen is kept
    with that second's bounds.
    """
    global _second  # noqa: PLW0603 - a memo, replaced whole: a reader never sees half of it
    if moment.tzinfo is not UTC:
        if moment.utcoffset() is None:
            raise ValueError(f"received_at must be timezone-aware, got {moment!r}")
        return format_utc(moment)
    start, end, text = _second
    if not start <= moment < end:
        start = moment.replace(microsecond=0)
        if start == _LAST_SECOND:  # its end is past datetime.max
            return format_utc(moment)
        end = start + _ONE_SECOND
        text = start.isoformat()[:19]
        _second = (start, end, text)
    return text + _MILLIS[moment.microsecond // 1000]


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
