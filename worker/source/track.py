"""The neutral email event, and the one writer of its Segment track. Pure: no Kafka, no clock.

The source reads two input formats, each with a parser of its own: the Autopilot email event
(`worker.source.mapping`) and Ortto's activity webhook (`worker.source.ortto`). Both yield a
`NeutralEmailEvent`, which `write_track` turns into the track, with what the event cannot
supply: the userId learned for its email and the time it was received. So both formats share
every rule that is not about reading them:

- `userId` is the one the event names, else the one learned for the email; with neither, the
  email (as given) is the `anonymousId`. An empty userId counts as absent.
- The Kafka key is the userId, else the lowercased email, so one contact's events keep order.
- `timestamp` and `originalTimestamp` are the event's time; `sentAt` and `receivedAt` are both
  `received_at`, so Segment's skew correction, receivedAt - (sentAt - originalTimestamp), gives
  back exactly `timestamp`. Every time is `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
- `messageId` is `<prefix><id>`, or `<prefix>sha256-<hex digest of id>` when that would pass
  Segment's 100 characters: the same event always gets the same messageId.
- An absent value is an absent field, never null.

The track is encoded with msgspec from structs laid out as `TrackMessage` is, so the bytes are
`TrackMessage.to_json()`'s (keys in the model's order, absent fields omitted).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import orjson

from worker.models.segment_track import TrackMessage, format_utc

__all__ = [
    "MESSAGE_ID_MAX",
    "MILLIS",
    "NeutralEmailEvent",
    "SourceOutput",
    "TrackProperties",
    "integration_text",
    "message_id",
    "received_text",
    "write_track",
]

MESSAGE_ID_MAX: Final = 100
"""Segment's longest messageId."""

MILLIS: Final = tuple(f".{ms:03d}Z" for ms in range(1000))
"""`.mmmZ` for each millisecond: the tail of every timestamp written."""


class TrackProperties(msgspec.Struct, gc=False, omit_defaults=True):
    """`properties` as written, in `EmailProperties`' order; None fields are omitted."""

    event: str
    campaign_id: str | None = None
    campaign_name: str | None = None
    email_id: str | None = None
    email_subject: str | None = None
    email_name: str | None = None
    transactional: bool | None = None
    link_id: str | None = None
    link_url: str | None = None
    activity_id: str | None = None
    field_id: str | None = None
    webhook_id: str | None = None
    attributes: dict[str, Any] | None = None


class NeutralEmailEvent(msgspec.Struct, frozen=True, gc=False):
    """One email event, whatever format it came in: what a parser hands to `write_track`.

    `timestamp` is already as written (`YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC); `integration` names the
    input (`context.integration.name`) and `integrations` is the track's `integrations` object,
    pre-encoded. `user_id` is the userId the event itself names (it wins over the learned one).
    """

    message_id: str
    event: str
    timestamp: str
    email: str
    contact_id: str | None
    user_id: str | None
    properties: TrackProperties
    integration: str
    integrations: msgspec.Raw
    first_name: str | None = None
    last_name: str | None = None
    ip: str | None = None
    user_agent: str | None = None


class SourceOutput(msgspec.Struct, frozen=True, gc=False):
    """One track message and the Kafka key it is written under.

    `value` is the message as it is written: camelCase, absent fields omitted, keys in
    `TrackMessage`'s order.
    """

    key: str
    value: bytes

    def to_json(self) -> bytes:
        """The bytes written to Kafka."""
        return self.value

    @property
    def track(self) -> dict[str, Any]:
        """The same message as a dict; for tests and tools, not hot paths."""
        track: dict[str, Any] = orjson.loads(self.value)
        return track

    @property
    def message(self) -> TrackMessage:
        """The same message as a validated `TrackMessage`; for tests and tools, not hot paths."""
        return TrackMessage.model_validate(self.track)


# The track as written: msgspec structs laid out as `TrackMessage` is.


class _Traits(
    msgspec.Struct,
    gc=False,
    omit_defaults=True,
    rename={"first_name": "firstName", "last_name": "lastName"},
):
    email: str
    contact_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class _Context(msgspec.Struct, gc=False, omit_defaults=True, rename={"user_agent": "userAgent"}):
    traits: _Traits
    integration: msgspec.Raw
    ip: str | None = None
    user_agent: str | None = None


class _Track(msgspec.Struct, gc=False, rename="camel"):
    type: str
    event: str
    user_id: str | msgspec.UnsetType
    anonymous_id: str | msgspec.UnsetType
    message_id: str
    timestamp: str
    original_timestamp: str
    sent_at: str
    received_at: str
    context: _Context
    integrations: msgspec.Raw
    properties: TrackProperties


_encode_track: Final = msgspec.json.Encoder().encode
_integration_by_source: dict[tuple[str, str], msgspec.Raw] = {}

_ONE_SECOND: Final = timedelta(seconds=1)
_LAST_SECOND: Final = datetime.max.replace(microsecond=0, tzinfo=UTC)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_second: tuple[datetime, datetime, str] = (_EPOCH, _EPOCH, "")
"""The last second `received_text` wrote: its start, its end and its `YYYY-MM-DDTHH:MM:SS`."""


def write_track(
    event: NeutralEmailEvent,
    learned_user_id: str | None,
    received: str,
    integration_version: str,
) -> SourceOutput:
    """The track of `event`: the one place a track is put together (see the module doc).

    `received` is `received_text`'s; `integration_version` goes into `context.integration`."""
    address = event.email
    user_id: str | msgspec.UnsetType | None = event.user_id or learned_user_id
    anonymous_id: str | msgspec.UnsetType
    if user_id:
        key, anonymous_id = user_id, msgspec.UNSET
    else:
        key, user_id, anonymous_id = address.lower(), msgspec.UNSET, address
    timestamp = event.timestamp
    return SourceOutput(
        key,
        _encode_track(
            _Track(
                "track",
                event.event,
                user_id,
                anonymous_id,
                event.message_id,
                timestamp,
                timestamp,
                received,
                received,
                _Context(
                    _Traits(address, event.contact_id, event.first_name, event.last_name),
                    _integration(event.integration, integration_version),
                    event.ip,
                    event.user_agent,
                ),
                event.integrations,
                event.properties,
            )
        ),
    )


def message_id(prefix: str, event_id: str) -> str:
    """`<prefix><event_id>`, or `<prefix>sha256-<hex digest>` past Segment's 100 characters."""
    if len(prefix) + len(event_id) <= MESSAGE_ID_MAX:
        return prefix + event_id
    return f"{prefix}sha256-{hashlib.sha256(event_id.encode()).hexdigest()}"


def integration_text(name: str, version: str) -> bytes:
    """`context.integration` of a track from `name` at `version`, encoded."""
    return orjson.dumps({"name": name, "version": version})


def _integration(name: str, version: str) -> msgspec.Raw:
    """`integration_text`, pre-encoded once per input and version (a few versions kept)."""
    integration = _integration_by_source.get((name, version))
    if integration is None:
        integration = msgspec.Raw(integration_text(name, version))
        if len(_integration_by_source) < 16:
            _integration_by_source[name, version] = integration
    return integration


def received_text(moment: datetime) -> str:
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
        text = start.isoformat()[:19]
        _second = (start, start + _ONE_SECOND, text)
    return text + MILLIS[moment.microsecond // 1000]
