"""Ortto's activity webhook -> the source's neutral email event. Pure: no Kafka, no clock.

The source's second input format (topic `ortto.activities`, fed by `POST /ortto/webhook`; the
body is drawn in `worker.models.ortto_activity`). Its parser yields the same `NeutralEmailEvent`
as the Autopilot format's, so the same writer, the same rules and the same learned identities
make its track (`worker.source.track`). What it reads, and how:

- The activity decides first, from `activity.field_id` alone: Ortto's test delivery
  (`act::test_webhook`) is skipped as `test_delivery`; an activity `OrttoConfig.events` does not
  name (tags, forms, SMS, push, ...) is skipped as `activity_not_mapped` (`UnmappedActivity`),
  whatever else it lacks. Neither is ever dead-lettered.
- `event`: the Segment event name of the field id: Ortto's email activities
  (`EMAIL_ACTIVITIES`), with ORTTO_ACTIVITY_EVENTS adding or overriding entries.
  `properties.event` is the canonical type: a built-in activity keeps its own whatever it is
  named (`email_opened`, ...); an added one takes that of the name when the name is one of the
  Autopilot format's spellings ("Email Marked as Spam": `email_marked_as_spam`), else the name
  in snake case ("Flight Booked": `flight_booked`).
- `messageId`: `ortto-<id>` (the delivery's top-level id, the same on every redelivery).
- `userId`: `contact.external_id`, else the userId learned for the email; else the email goes
  as `anonymousId`. `context.traits`: `email`, `contact_id`, `firstName`, `lastName` when given.
- `timestamp` and `originalTimestamp`: `activity.created`, else the top-level `time`; ISO-8601
  with `Z` or an offset and any number of fraction digits (Ortto sends nanoseconds), written in
  UTC with milliseconds (truncated). A `created` that is present must be readable: it is not
  passed over for `time`.
- `properties`: the seed's properties from the `attr` keys ORTTO_ATTRIBUTE_PROPERTIES names (a
  text property takes a non-empty string or a number's text, `transactional` a boolean; a value
  of another type fills nothing, and `attributes` still holds it; when several keys name one
  property, the first present, in the setting's order, fills it); then `activity_id`,
  `field_id`, `webhook_id`, and `attributes`, the activity's `attr` as received.
- `integrations`: `{"AutopilotHQ": false, "Ortto": false}`, so neither destination sends these
  back; `context.integration.name` is Ortto.
- An empty string counts as absent in every field read but `id`, `activity.field_id` and
  `contact.email`, which are required and must not be empty.

Errors (400, dead-lettered with the original bytes), every one found at once, joined by "; ":
not JSON, not an object, no `id`, no `activity.field_id`, no `contact.email` (or one that is not
an address), an unreadable time (or none at all), and a field read of the wrong type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

import msgspec
import orjson

from worker import __version__
from worker.errors import DecodeError, SkipMessage, ValidationError
from worker.models.autopilot_event import EMAIL_ADDRESS, TYPE_ALIASES
from worker.models.ortto_activity import EMAIL_ACTIVITIES, TEST_WEBHOOK_FIELD_ID
from worker.models.segment_track import INTEGRATION_NAME, ORTTO_INTEGRATION_NAME
from worker.settings import Settings
from worker.source.track import (
    MILLIS,
    NeutralEmailEvent,
    SourceOutput,
    TrackProperties,
    message_id,
    received_text,
    write_track,
)

__all__ = [
    "MESSAGE_ID_PREFIX",
    "NOT_MAPPED",
    "OrttoConfig",
    "UnmappedActivity",
    "canonical_type",
    "map_ortto",
    "parse_ortto_activity",
    "utc_timestamp",
]

MESSAGE_ID_PREFIX: Final = "ortto-"
NOT_MAPPED: Final = "activity_not_mapped"
"""The skip reason of an activity no event is named for."""

_INTEGRATIONS: Final = msgspec.Raw(
    orjson.dumps({INTEGRATION_NAME: False, ORTTO_INTEGRATION_NAME: False})
)
_ECHO_MAX: Final = 100
_JSON_TYPES: Final[Mapping[type, str]] = MappingProxyType(
    {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    | {bool: "a boolean"}
)
_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_TIME_FORM: Final = "must be an ISO-8601 date-time with a UTC offset"
_NOT_SNAKE: Final = re.compile(r"[^a-z0-9]+")


class UnmappedActivity(SkipMessage):
    """An activity no event is named for (skip `activity_not_mapped`); says which, so the
    source can tell an operator what arrives unmapped."""

    def __init__(self, field_id: str, attr_keys: tuple[str, ...]) -> None:
        super().__init__(NOT_MAPPED)
        self.field_id = field_id
        self.attr_keys = attr_keys


@dataclass(frozen=True, slots=True)
class OrttoConfig:
    """What the settings say of Ortto's activities: `events` (field id -> (canonical type,
    event name)) and `properties` ((attr key, property name) pairs, in the setting's order)."""

    events: Mapping[str, tuple[str, str]] = field(default_factory=lambda: EMAIL_ACTIVITIES)
    properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls,
        activity_events: Mapping[str, str] | None = None,
        attribute_properties: Mapping[str, str] | None = None,
    ) -> OrttoConfig:
        """The built-in email activities with `activity_events` (ORTTO_ACTIVITY_EVENTS) added
        or overriding, and `attribute_properties` (ORTTO_ATTRIBUTE_PROPERTIES)."""
        events = dict(EMAIL_ACTIVITIES)
        for field_id, name in (activity_events or {}).items():
            built_in = EMAIL_ACTIVITIES.get(field_id)
            events[field_id] = (built_in[0] if built_in else canonical_type(name), name)
        return cls(MappingProxyType(events), tuple((attribute_properties or {}).items()))

    @classmethod
    def from_settings(cls, settings: Settings) -> OrttoConfig:
        return cls.build(settings.ortto_activity_events, settings.ortto_attribute_properties)


def canonical_type(event_name: str) -> str:
    """`properties.event` for an activity an operator named: the Autopilot format's canonical
    type when the name is one of its spellings, else the name in snake case."""
    kind = TYPE_ALIASES.get(event_name.strip().casefold())
    if kind is not None:
        return kind.value
    return _NOT_SNAKE.sub("_", event_name.lower()).strip("_") or event_name


def map_ortto(
    raw: bytes,
    *,
    config: OrttoConfig,
    received_at: datetime,
    learned_user_id: str | None = None,
    integration_version: str = __version__,
) -> SourceOutput:
    """Parse and map one activity: what `map ortto` and the golden tests run."""
    event = parse_ortto_activity(raw, config)
    return write_track(event, learned_user_id, received_text(received_at), integration_version)


def parse_ortto_activity(raw: bytes, config: OrttoConfig) -> NeutralEmailEvent:
    """The neutral email event of one activity; `SkipMessage` for a test delivery or an
    activity no event is named for; else one `InvalidInput` saying everything that is wrong."""
    body = _decode(raw)
    errors: list[str] = []
    activity = _object(body, "activity", "activity", errors, required=True)
    field_id = None
    if activity is not None:
        field_id = _text(activity, "field_id", "activity.field_id", errors, required=True)
    else:
        activity = {}
    if field_id is not None:
        if field_id == TEST_WEBHOOK_FIELD_ID:
            raise SkipMessage("test_delivery")
        if field_id not in config.events:
            attr = activity.get("attr")
            raise UnmappedActivity(field_id, tuple(attr) if isinstance(attr, dict) else ())
    event_id = _text(body, "id", "id", errors, required=True)
    webhook_id = _text(body, "webhook_id", "webhook_id", errors)
    activity_id = _text(activity, "id", "activity.id", errors)
    attr = _object(activity, "attr", "activity.attr", errors)
    if activity.get("created") is not None:
        timestamp = _timestamp(activity, "created", "activity.created", errors)
    elif body.get("time") is not None:
        timestamp = _timestamp(body, "time", "time", errors)
    else:
        errors.append("time: field required (activity.created or time)")
        timestamp = None
    contact = _object(body, "contact", "contact", errors, required=True)
    email = None
    if contact is not None:
        email = _text(contact, "email", "contact.email", errors, required=True)
        if email is not None and not EMAIL_ADDRESS.fullmatch(email):
            errors.append(f"contact.email: must be an email address (got {_echo(email)})")
    else:
        contact = {}
    contact_id = _text(contact, "contact_id", "contact.contact_id", errors)
    external_id = _text(contact, "external_id", "contact.external_id", errors)
    first_name = _text(contact, "first_name", "contact.first_name", errors)
    last_name = _text(contact, "last_name", "contact.last_name", errors)
    if errors or field_id is None or event_id is None or email is None or timestamp is None:
        raise ValidationError("; ".join(errors))
    canonical, event_name = config.events[field_id]
    properties = TrackProperties(
        canonical,
        activity_id=activity_id,
        field_id=field_id,
        webhook_id=webhook_id,
        attributes=attr,
    )
    if attr:
        _fill_seed_properties(properties, attr, config.properties)
    return NeutralEmailEvent(
        message_id(MESSAGE_ID_PREFIX, event_id),
        event_name,
        timestamp,
        email,
        contact_id,
        external_id,
        properties,
        ORTTO_INTEGRATION_NAME,
        _INTEGRATIONS,
        first_name=first_name,
        last_name=last_name,
    )


def utc_timestamp(text: str) -> str | None:
    """`text` as the track writes times (`YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC, milliseconds
    truncated) when it is `YYYY-MM-DDTHH:MM:SS[.f...]` then `Z` or `+HH:MM`/`-HH:MM` and a real
    date-time; else None."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    microsecond = int((fraction or "")[:6].ljust(6, "0"))
    try:
        moment = datetime(
            int(text[:4]), int(text[5:7]), int(text[8:10]), int(hour), int(minute), int(second)
        )
    except ValueError:  # no such day, hour, minute or second
        return None
    millis = MILLIS[microsecond // 1000]
    if sign is None:
        return f"{text[:10]}T{text[11:19]}{millis}"
    if int(offset_hours) > 23 or int(offset_minutes) > 59:
        return None
    offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
    try:
        wall = moment - offset if sign == "+" else moment + offset
    except OverflowError:  # before year 1 or after 9999 in UTC
        return None
    return wall.isoformat() + millis


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode()
        except UnicodeDecodeError as bad:
            raise DecodeError(f"invalid UTF-8 at byte {bad.start}") from None
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DecodeError(f"not a JSON object: got {_JSON_TYPES.get(type(body), 'null')}")
    return body


def _object(
    parent: dict[str, Any], name: str, path: str, errors: list[str], *, required: bool = False
) -> dict[str, Any] | None:
    """`parent[name]` when it is an object; None when it is absent or null (an error if
    `required`) or of another type (an error)."""
    value = parent.get(name)
    if isinstance(value, dict):
        return value
    if value is None:
        if required:
            errors.append(f"{path}: field required")
    else:
        errors.append(f"{path}: must be an object (got {_echo(value)})")
    return None


def _text(
    parent: dict[str, Any], name: str, path: str, errors: list[str], *, required: bool = False
) -> str | None:
    """`parent[name]` when it is a non-empty string; None when it is absent or empty (an error
    if `required`) or of another type (an error)."""
    value = parent.get(name)
    if isinstance(value, str):
        if value:
            return value
        if required:
            errors.append(f"{path}: must not be empty")
        return None
    if value is None:
        if required:
            errors.append(f"{path}: field required")
    else:
        errors.append(f"{path}: must be a string (got {_echo(value)})")
    return None


def _timestamp(parent: dict[str, Any], name: str, path: str, errors: list[str]) -> str | None:
    value = parent[name]
    timestamp = utc_timestamp(value) if isinstance(value, str) else None
    if timestamp is None:
        errors.append(f"{path}: {_TIME_FORM} (got {_echo(value)})")
    return timestamp


def _fill_seed_properties(
    properties: TrackProperties, attr: dict[str, Any], names: tuple[tuple[str, str], ...]
) -> None:
    """Set the seed's properties the configured attr keys fill (see the module doc)."""
    for key, name in names:
        if getattr(properties, name) is not None:
            continue  # an earlier key filled it
        value = attr.get(key)
        if name == "transactional":
            if isinstance(value, bool):
                properties.transactional = value
        elif isinstance(value, str):
            if value:
                setattr(properties, name, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            setattr(properties, name, json.dumps(value))


def _echo(value: object) -> str:
    """A value as it may appear in an error message: never longer than about 100 characters."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _ECHO_MAX else text[:_ECHO_MAX] + "..."
