"""Autopilot email event -> Segment track message. Pure: no Kafka, no clock, no I/O.

The Autopilot format's parser: it reads the event into the source's `NeutralEmailEvent`, whose
track `worker.source.track.write_track` writes with what the event cannot supply (the userId
learned for the contact's email, the time the event was received). Choices a reader can rely on:

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
letters carry; but building its models costs several times the mapping itself. So `map_source`
first decodes the bytes with msgspec into `CommonEmailEvent` structs (the shape nearly every
producer sends), checks in Python what msgspec cannot (that pydantic's parser would take the
same bytes, the `type` spelling, `occurred_at` a real date-time, the address, a click's URL) and
the one track writer encodes the track with msgspec. The common shape is a strict subset of the
contract and maps to the very same track; anything else, valid or not, goes through
`EmailEvent`, which alone words errors.

Ahead of both, when it is built, goes `NATIVE`: the common shape compiled (`native/src/lib.rs`,
Rust), a strict subset of the common shape again, which declines (returns None) whatever it is
not sure of: an escape anywhere, a non-ASCII address, an offset other than UTC, a test delivery.
It answers `email_event_contact` too (test deliveries included) from the same parse and checks.
The rules and tables stay here and are handed to it. `tests/unit/test_source_fast_path.py` holds
the three ways to the one track (and the two to the one contact) on every golden case and on
mutations, and msgspec's JSON to orjson's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

import msgspec
import orjson
import pydantic
from pydantic_core import ErrorDetails

from worker import __version__
from worker.errors import DecodeError, InvalidInput, SkipMessage, UnsupportedType, ValidationError
from worker.models.autopilot_event import (
    COMMON_EMAIL_EVENTS,
    EMAIL_ADDRESS,
    EVENT_NAMES,
    TYPE_ALIASES,
    CommonContact,
    CommonEmail,
    CommonEmailEvent,
    CommonJourney,
    CommonLink,
    EmailEvent,
    EmailEventType,
)
from worker.models.segment_track import INTEGRATION_NAME, format_utc
from worker.source.track import (
    MESSAGE_ID_MAX,
    MILLIS,
    NeutralEmailEvent,
    SourceOutput,
    TrackProperties,
    integration_text,
    message_id,
    received_text,
    write_track,
)

try:
    import autopilot_native
except ImportError:  # `make install` builds it (native/); without it the Python path maps all
    autopilot_native = None  # type: ignore[assignment]

__all__ = [
    "SourceOutput",
    "autopilot_neutral_event",
    "email_event_contact",
    "email_event_to_track",
    "map_source",
    "parse_email_event",
]

_MESSAGE_ID_PREFIX = "autopilot-"
_PLAIN_ID_MAX = MESSAGE_ID_MAX - len(_MESSAGE_ID_PREFIX)
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

_TYPE_TEXTS: Final[dict[str, tuple[str, str]]] = {
    spelling: (kind.value, EVENT_NAMES[kind])
    for spelling, kind in (
        *TYPE_ALIASES.items(),
        *((name, kind) for kind, name in EVENT_NAMES.items()),
        ("Email Link Clicked", EmailEventType.EMAIL_CLICKED),
        ("Unsubscribed", EmailEventType.EMAIL_UNSUBSCRIBED),
    )
}
"""`type` as producers usually spell it -> (canonical type, Segment event name); any other
spelling is stripped and casefolded first, as `EmailEvent` does. Read-only."""

_is_address: Final = EMAIL_ADDRESS.fullmatch
# Bytes looked for as ints: `int in bytes` is a plain memchr, `bytes in bytes` first fails the
# int path (raising and clearing a TypeError).
_OPEN_BRACKET: Final = ord("[")
_BACKSLASH: Final = ord("\\")

_OFFSET_DATETIME: Final = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]"
)
"""`YYYY-MM-DDTHH:MM:SS[.f{1,6}]` then `+HH:MM` or `-HH:MM`, each part in its range; whether
the day exists in its month is left to `datetime.fromisoformat`, which then reads these strings
as pydantic does."""

_MAX_DEPTH: Final = 200
"""Pydantic's JSON parser refuses arrays and objects nested deeper (msgspec's goes further)."""
_SHALLOW_SIZE: Final = 2 * _MAX_DEPTH
"""Fewer bytes cannot nest deeper: each level takes 2 ("[]")..."""
_SHALLOW_SIZE_WITHOUT_ARRAYS: Final = 5 * _MAX_DEPTH
"""...or 5 without arrays ('{"":}')."""
_PARSER_SAFE_SIZE: Final = 4096
"""Pydantic's parser refuses numbers of over 4300 digits, which take more bytes than this."""

_INTEGRATIONS: Final = orjson.dumps({INTEGRATION_NAME: False})
_INTEGRATIONS_RAW: Final = msgspec.Raw(_INTEGRATIONS)
_integration_by_version: dict[str, bytes] = {}
_NO_JOURNEY: Final = CommonJourney()
_NO_LINK: Final = CommonLink()

_Common = tuple[CommonEmailEvent, str, str, str]
"""A valid event in the common shape, with its canonical type, its Segment event name and its
`timestamp` as the track writes it: what both ways in hand to `autopilot_neutral_event`."""


def parse_email_event(raw: bytes) -> EmailEvent:
    """Validate raw bytes against the input contract, or raise one `InvalidInput` saying why."""
    try:
        return EmailEvent.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise _invalid_input(exc, raw) from exc


def email_event_contact(raw: bytes) -> str:
    """The contact's email of a valid event (intake's key), or `parse_email_event`'s error.

    `NATIVE` answers what it is sure of (test deliveries included) from its own parse; for the
    rest, and every error, the Python path decides."""
    if NATIVE is not None:
        email = NATIVE.contact_email(raw)
        if email is not None:
            return email
    return _python_contact(raw)


def _python_contact(raw: bytes) -> str:
    """`email_event_contact` by the Python path alone: what `NATIVE`'s answers are held to."""
    common = _common_event(raw)
    if common is None:
        return parse_email_event(raw).contact.email
    return common[0].contact.email


def email_event_to_track(
    event: EmailEvent,
    *,
    learned_user_id: str | None,
    received_at: datetime,
    integration_version: str,
) -> SourceOutput:
    """The track message for `event`; raises `SkipMessage("test_delivery")` for test events."""
    return write_track(
        autopilot_neutral_event(_from_model(event)),
        learned_user_id,
        received_text(received_at),
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
    received = received_text(received_at)
    if NATIVE is not None:
        mapped = NATIVE.map(raw, learned_user_id, received, _integration(integration_version))
        if mapped is not None:
            return SourceOutput(*mapped)
    common = _common_event(raw)
    if common is None:
        common = _from_model(parse_email_event(raw))
    return write_track(
        autopilot_neutral_event(common), learned_user_id, received, integration_version
    )


def _from_model(event: EmailEvent) -> _Common:
    """The contract's event in the common shape, so that both ways in map the one way."""
    contact, journey, email, link = event.contact, event.journey, event.email, event.link
    timestamp = format_utc(event.occurred_at)
    return (
        CommonEmailEvent(
            id=event.id,
            type=event.type.value,
            occurred_at=timestamp,
            contact=CommonContact(
                email=contact.email, contact_id=contact.contact_id, user_id=contact.user_id
            ),
            email=CommonEmail(
                id=email.id,
                subject=email.subject,
                name=email.name,
                transactional=email.transactional,
            ),
            journey=CommonJourney(id=journey.id, name=journey.name) if journey else None,
            link=CommonLink(id=link.id, url=link.url) if link else None,
            ip=event.ip,
            user_agent=event.user_agent,
            test=event.test,
        ),
        event.type.value,
        EVENT_NAMES[event.type],
        timestamp,
    )


def autopilot_neutral_event(common: _Common) -> NeutralEmailEvent:
    """A valid Autopilot event as the source's neutral email event; `SkipMessage` for a test
    delivery."""
    event, canonical, event_name, timestamp = common
    if event.test:
        raise SkipMessage("test_delivery")
    contact, email, journey, link = event.contact, event.email, event.journey, event.link
    if journey is None:
        journey = _NO_JOURNEY
    if link is None:
        link = _NO_LINK
    return NeutralEmailEvent(
        message_id(_MESSAGE_ID_PREFIX, event.id),
        event_name,
        timestamp,
        contact.email,
        contact.contact_id,
        contact.user_id,
        TrackProperties(
            canonical,
            journey.id,
            journey.name,
            email.id,
            email.subject,
            email.name,
            email.transactional,
            link.id,
            link.url,
        ),
        INTEGRATION_NAME,
        _INTEGRATIONS_RAW,
        ip=event.ip,
        user_agent=event.user_agent,
    )


def _integration(version: str) -> bytes:
    """`context.integration` for this version, pre-encoded (and kept, for a few versions)."""
    integration = _integration_by_version.get(version)
    if integration is None:
        integration = integration_text(INTEGRATION_NAME, version)
        if len(_integration_by_version) < 16:
            _integration_by_version[version] = integration
    return integration


NATIVE: Final = (
    None
    if autopilot_native is None
    else autopilot_native.EmailEventMapper(
        types=_TYPE_TEXTS,
        integrations=_INTEGRATIONS,
        message_id_prefix=_MESSAGE_ID_PREFIX,
        plain_id_max=_PLAIN_ID_MAX,
    )
)
"""The common shape compiled (`native/src/lib.rs`): it maps what it is sure of exactly as
`_common_event`, `autopilot_neutral_event` and `write_track` do, and returns None for the rest,
which they then take."""


def _common_event(raw: bytes) -> _Common | None:
    """`raw` mapped so far when it is a valid event of the common shape, else None (the
    `EmailEvent` path then decides).

    msgspec checks the types in C, on the bytes; left to Python is what msgspec's parser takes
    and pydantic's does not (invalid UTF-8 in a skipped string, nesting past pydantic's depth,
    numbers too long for it), and what needs a table (`type`), the calendar (`occurred_at`), a
    regex (the address) or the type (a click's URL).
    """
    try:
        event = COMMON_EMAIL_EVENTS.decode(raw)
    except (ValueError, RecursionError):  # msgspec's errors, bad UTF-8, nesting past the stack
        return None
    plain = raw.isascii()
    if not plain:
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    size = len(raw)
    if (
        size > _SHALLOW_SIZE
        and (size > _SHALLOW_SIZE_WITHOUT_ARRAYS or _OPEN_BRACKET in raw)
        and (size > _PARSER_SAFE_SIZE or raw.count(b"[") + raw.count(b"{") > _MAX_DEPTH)
    ):
        return None
    type_text = _TYPE_TEXTS.get(event.type)
    if type_text is None:
        kind = TYPE_ALIASES.get(event.type.strip().casefold())
        if kind is None:
            return None
        type_text = (kind.value, EVENT_NAMES[kind])
    canonical, event_name = type_text
    if canonical == "email_clicked" and (event.link is None or not event.link.url):
        return None
    address = event.contact.email
    if plain and _BACKSLASH not in raw:  # then its only possible white space is " "
        if " " in address or address.count("@") != 1 or address[0] == "@" or address[-1] == "@":
            return None
    elif _is_address(address) is None:
        return None
    text = event.occurred_at
    size = len(text)
    if (size == 27 and text[26] == "Z") or (size == 24 and text[23] == "Z"):
        timestamp = text[:23] + "Z"  # YYYY-MM-DDTHH:MM:SS.fff[fff]Z: the commonest two
    elif (size == 20 and text[19] == "Z") or (22 <= size <= 26 and text[-1] == "Z"):
        timestamp = (text[:-1] + ".000" if size == 20 else text[:-1] + "00")[:23] + "Z"
    else:
        return _offset_event(event, canonical, event_name)
    # the separators, then the digits, their ranges and the calendar
    if text[4:20:3] != ("--T::Z" if size == 20 else "--T::."):
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return None
    return event, canonical, event_name, timestamp


def _offset_event(event: CommonEmailEvent, canonical: str, event_name: str) -> _Common | None:
    timestamp = _offset_timestamp(event.occurred_at)
    return None if timestamp is None else (event, canonical, event_name, timestamp)


def _offset_timestamp(text: str) -> str | None:
    """`occurred_at` as the track writes it when it is `YYYY-MM-DDTHH:MM:SS[.f{1,6}]` then
    `+HH:MM` or `-HH:MM`, each part in its range, a real date-time; else None."""
    if not _OFFSET_DATETIME.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)  # the calendar and the offset's range
    except ValueError:
        return None
    if text[-5:] == "00:00":
        return text[:19] + MILLIS[moment.microsecond // 1000]
    # shift the wall time by the offset, without formatting an aware datetime (slow)
    offset = moment.utcoffset()
    if offset is None:  # pragma: no cover - the pattern ends every string with an offset
        return None
    try:
        wall = datetime.fromisoformat(text[:19]) - offset
    except OverflowError:  # before year 1 or after 9999 in UTC: the model path decides
        return None
    return wall.isoformat() + MILLIS[moment.microsecond // 1000]


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
