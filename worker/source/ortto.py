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

Two ways through, one answer. `_common_activity` takes the shape Ortto sends (every field read
of its type, no empty strings, a time in UTC with `Z`, a flat `attr`): msgspec decodes it
straight from the bytes into strict structs, skipping in C the contact fields the worker does not
read, and Python checks what msgspec cannot (that orjson would take the same bytes, the field
id, the address, the time, empty strings). Anything else goes to `_worded_activity` (orjson,
then every check in Python), which alone words errors and reads the rest (offsets, empty
strings, ...). `tests/unit/test_source_ortto.py` holds the two to the same neutral event on
every golden input and on thousands of mutations of them. One difference is kept on purpose: a
number past a double's range (`1e400`) in a field the worker does not read is skipped unread by
msgspec, where orjson refuses the whole body; such an activity is mapped, not dead-lettered
(Ortto never writes one: Go's JSON cannot).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, NoReturn

import msgspec
import orjson

from worker import __version__
from worker.errors import DecodeError, SkipMessage, ValidationError
from worker.models.autopilot_event import EMAIL_ADDRESS, TYPE_ALIASES
from worker.models.ortto_activity import EMAIL_ACTIVITIES, TEST_WEBHOOK_FIELD_ID
from worker.models.segment_track import INTEGRATION_NAME, ORTTO_INTEGRATION_NAME, SEED_PROPERTIES
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
_is_address: Final = EMAIL_ADDRESS.fullmatch
_INT_MIN: Final = -(2**63)
_INT_END: Final = 2**64
"""orjson reads a JSON integer outside [-2**63, 2**64) as a float, msgspec as an int."""
_SHALLOW_SIZE: Final = 2048
"""Fewer bytes cannot nest past orjson's depth limit (1024), which msgspec's skipping passes."""
_MAX_OPENINGS: Final = 1000
_OPEN_BRACKET: Final = ord("[")
_OPEN_BRACE: Final = ord("{")
_BACKSLASH: Final = ord("\\")
_NO_SEEDS: Final = (None,) * len(SEED_PROPERTIES)
_NOT_SNAKE: Final = re.compile(r"[^a-z0-9]+")


# The shape Ortto sends, as msgspec structs: unknown fields skipped, types strict.


class _CommonActivity(msgspec.Struct, gc=False):
    field_id: str
    id: str | None = None
    created: str | None = None
    attr: dict[str, Any] | None = None


class _CommonContact(msgspec.Struct, gc=False):
    email: str
    contact_id: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class _CommonDelivery(msgspec.Struct, gc=False):
    id: str
    activity: _CommonActivity
    contact: _CommonContact
    time: str | None = None
    webhook_id: str | None = None


_decode_common: Final = msgspec.json.Decoder(_CommonDelivery).decode


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
    #: `properties` as (attr key, index among SEED_PROPERTIES, whether it is `transactional`)
    plan: tuple[tuple[str, int, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = tuple(
            (key, SEED_PROPERTIES.index(name), name == "transactional")
            for key, name in self.properties
        )
        object.__setattr__(self, "plan", plan)

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
    event = _common_activity(raw, config)
    if event is not None:
        return event
    return _worded_activity(raw, config)


def _common_activity(raw: bytes, config: OrttoConfig) -> NeutralEmailEvent | None:
    """The event of `raw` when it has the shape Ortto sends, else None (see the module doc)."""
    try:
        delivery = _decode_common(raw)
    except (ValueError, RecursionError):  # msgspec's errors, nesting past the stack
        return None
    plain = raw.isascii()
    if not plain:  # msgspec skips unread strings without checking their UTF-8
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    if len(raw) > _SHALLOW_SIZE and raw.count(_OPEN_BRACKET) + raw.count(_OPEN_BRACE) > (
        _MAX_OPENINGS
    ):
        return None
    activity, contact = delivery.activity, delivery.contact
    field_id, event_id, email = activity.field_id, delivery.id, contact.email
    kind = config.events.get(field_id)
    if kind is None or field_id == TEST_WEBHOOK_FIELD_ID:
        if field_id:  # decided by the field id alone, as `_worded_activity` decides
            _skip(field_id, activity.attr)
        return None
    if not event_id:
        return None
    if plain and _BACKSLASH not in raw:  # then the only white space it can hold is " "
        if " " in email or email.count("@") != 1 or email[0] == "@" or email[-1] == "@":
            return None
    elif _is_address(email) is None:
        return None
    created = activity.created
    timestamp = _zulu_timestamp(delivery.time if created is None else created)
    if timestamp is None:
        return None
    webhook_id, activity_id = delivery.webhook_id, activity.id
    contact_id, external_id = contact.contact_id, contact.external_id
    first_name, last_name = contact.first_name, contact.last_name
    if (
        webhook_id == ""
        or activity_id == ""
        or contact_id == ""
        or external_id == ""
        or first_name == ""
        or last_name == ""
    ):
        return None
    attr = activity.attr
    seeds: Sequence[str | bool | None] = _NO_SEEDS
    if attr:
        for value in attr.values():
            if type(value) is int:
                if not _INT_MIN <= value < _INT_END:
                    return None
            elif type(value) is dict or type(value) is list:
                return None  # left to orjson's reading
        if config.plan:
            seeds = _seed_properties(attr, config.plan)
    properties = _properties(
        kind[0], seeds, activity_id=activity_id, field_id=field_id, webhook_id=webhook_id, attr=attr
    )
    return NeutralEmailEvent(
        message_id(MESSAGE_ID_PREFIX, event_id),
        kind[1],
        timestamp,
        email,
        contact_id,
        external_id,
        properties,
        ORTTO_INTEGRATION_NAME,
        _INTEGRATIONS,
        first_name,
        last_name,
    )


def _zulu_timestamp(text: str | None) -> str | None:
    """`text` as written when it is `YYYY-MM-DDTHH:MM:SS[.f...]Z` (what Ortto sends), else None
    (`utc_timestamp` then decides)."""
    if text is None:
        return None
    size = len(text)
    if size < 20 or text[-1] != "Z" or text[4:20:3] != ("--T::Z" if size == 20 else "--T::."):
        return None
    fraction = text[20:-1]
    if size > 20 and not (fraction.isdigit() and fraction.isascii()):
        return None
    try:
        datetime.fromisoformat(text[:19])  # the digits, their ranges and the calendar
    except ValueError:
        return None
    return text[:19] + (MILLIS[int(fraction[:3].ljust(3, "0"))] if fraction else ".000Z")


def _worded_activity(raw: bytes, config: OrttoConfig) -> NeutralEmailEvent:
    """Every input `_common_activity` does not take: its event, its skip, or its errors."""
    body = _decode(raw)
    errors: list[str] = []
    activity = _object(body, "activity", "activity", errors, required=True)
    field_id = None
    if activity is not None:
        field_id = _text(activity, "field_id", "activity.field_id", errors, required=True)
    else:
        activity = {}
    if field_id is not None and (
        field_id == TEST_WEBHOOK_FIELD_ID or field_id not in config.events
    ):
        _skip(field_id, activity.get("attr"))
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
    seeds = _seed_properties(attr, config.plan) if attr else _NO_SEEDS
    properties = _properties(
        canonical,
        seeds,
        activity_id=activity_id,
        field_id=field_id,
        webhook_id=webhook_id,
        attr=attr,
    )
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


def _skip(field_id: str, attr: object) -> NoReturn:
    """Ortto's test delivery, or an activity no event is named for."""
    if field_id == TEST_WEBHOOK_FIELD_ID:
        raise SkipMessage("test_delivery")
    raise UnmappedActivity(field_id, tuple(attr) if isinstance(attr, dict) else ())


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


def _properties(
    canonical: str,
    seeds: Sequence[str | bool | None],
    *,
    activity_id: str | None,
    field_id: str,
    webhook_id: str | None,
    attr: dict[str, Any] | None,
) -> TrackProperties:
    """`properties`: `seeds` are `_seed_properties`' (`transactional` the only boolean)."""
    # one seed per SEED_PROPERTIES, in TrackProperties' order: what mypy cannot count
    return TrackProperties(
        canonical,
        *seeds,  # type: ignore[arg-type]
        activity_id,  # type: ignore[call-arg]
        field_id,
        webhook_id,
        attr,
    )


def _seed_properties(
    attr: dict[str, Any], plan: tuple[tuple[str, int, bool], ...]
) -> list[str | bool | None]:
    """The seed's properties, in `SEED_PROPERTIES`' order, that the configured attr keys fill
    (see the module doc); None where none does."""
    seeds: list[str | bool | None] = [None] * len(SEED_PROPERTIES)
    for key, index, boolean in plan:
        value = attr.get(key)
        if value is None or seeds[index] is not None:
            continue  # absent, or an earlier key filled it
        kind = type(value)
        if boolean:
            if kind is bool:
                seeds[index] = value
        elif kind is str:
            if value:
                seeds[index] = value
        elif kind is int or kind is float:
            seeds[index] = json.dumps(value)
    return seeds


def _echo(value: object) -> str:
    """A value as it may appear in an error message: never longer than about 100 characters."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _ECHO_MAX else text[:_ECHO_MAX] + "..."
