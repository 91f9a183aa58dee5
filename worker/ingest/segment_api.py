"""Segment HTTP Tracking API requests -> records for the Segment calls topic (pure).

What a request becomes, as Segment's own API does it:

- Routes: `identify`, `track`, `page`, `screen`, `group`, `alias` take one message (a JSON
  object) and set its `type` from the route; `batch` takes `{"batch": [message, ...]}` whose
  items keep their own `type`. Nothing else is validated here: a message the destination cannot
  use is dead-lettered by its intake with the reason, like any message on the topic.
- Paths (`PATHS`): each route at `/v1/<route>` (the HTTP Tracking API, the server libraries)
  and at `/v1/<first letter>` (Analytics.js posts each call to `<apiHost>/<first letter of the
  type>`, its apiHost being `api.segment.io/v1`); batch at `/v1/b` and `/b` too (Analytics.js
  in batching mode and the mobile libraries post to `<apiHost>/b`, whichever apiHost is set).
  A path means the same whatever its name: same checks, same records.
- The body is read as JSON whatever its `Content-Type` (Analytics.js sends `text/plain`, which
  spares the browser a CORS preflight when no `Authorization` header goes with it).
- Limits: 32 KB per message (its JSON as sent, `writeKey` left out) and 500 KB per request
  (`worker.ingest.body`); past them the whole request is refused with a 400.
- A batch's top-level `context` and `integrations` are merged into each item, key by key, the
  item's own keys winning; a top-level `sentAt` stands for items that have none.
- Every message gets `messageId` `api-<uuid4>` when it has none, `receivedAt` (when the request
  arrived), and its timestamp corrected for the client's clock: with the client's `timestamp`
  kept as `originalTimestamp`, `timestamp = receivedAt - (sentAt - originalTimestamp)`. Without
  a `sentAt` the client's timestamp is kept; without a timestamp it is `receivedAt`; a value
  that is not an ISO 8601 date-time is left as it came.
- `writeKey` is removed from every message: it never reaches the topic.
- The record key is the `userId`, else the `anonymousId` (UTF-8), else none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from worker.ingest.problems import BadRequest, TooLarge
from worker.pipeline.records import OutboundRecord

__all__ = [
    "BATCH_ROUTE",
    "MAX_MESSAGE_BYTES",
    "PATHS",
    "ROUTES",
    "SINGLE_ROUTES",
    "body_write_key",
    "correct_timestamp",
    "enrich",
    "format_time",
    "message_key",
    "new_message_id",
    "parse_time",
    "request_messages",
    "segment_records",
]

MAX_MESSAGE_BYTES: Final = 32 * 1024
"""Segment's limit for one message."""

SINGLE_ROUTES: Final = ("identify", "track", "page", "screen", "group", "alias")
BATCH_ROUTE: Final = "batch"
ROUTES: Final = (*SINGLE_ROUTES, BATCH_ROUTE)

PATHS: Final[Mapping[str, str]] = {
    **{f"/v1/{route}": route for route in ROUTES},
    **{f"/v1/{route[0]}": route for route in ROUTES},
    "/b": BATCH_ROUTE,
}
"""Every path the Segment API answers on, and the route it stands for (see the module doc)."""

Message = dict[str, Any]


def new_message_id() -> str:
    """The id of a message that came without one (random: two equal calls are two events)."""
    return f"api-{uuid.uuid4()}"


def body_write_key(payload: object) -> object:
    """The `writeKey` of a request body, if it has one (for requests without a Basic header)."""
    return payload.get("writeKey") if isinstance(payload, dict) else None


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 date-time (`Z` or an offset; naive reads as UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, `Z`: `2026-01-01T12:00:00.000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def correct_timestamp(
    timestamp: object, sent_at: object, received_at: datetime
) -> tuple[object, object | None]:
    """(timestamp, originalTimestamp) as Segment computes them; see the module doc."""
    if timestamp is None:
        return format_time(received_at), None
    original = parse_time(timestamp)
    sent = parse_time(sent_at)
    if original is None or sent is None:
        return timestamp, timestamp
    return format_time(received_at - (sent - original)), timestamp


def _as_object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_size(message: Mapping[str, Any], position: str) -> None:
    size = len(orjson.dumps(message))
    if size > MAX_MESSAGE_BYTES:
        raise TooLarge(
            "message_too_large",
            f"{position} is {size} bytes, more than the {MAX_MESSAGE_BYTES} bytes allowed",
        )


def request_messages(route: str, payload: object) -> tuple[list[Message], Mapping[str, Any]]:
    """The messages of a request (without `writeKey`, sizes checked) and the batch's shared part.

    The shared part is `{}` for single calls, else the batch's `context`, `integrations` and
    `sentAt`.
    """
    if route not in ROUTES:
        raise BadRequest("unknown_route", f"no such endpoint: /v1/{route}")
    if not isinstance(payload, dict):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    if route != BATCH_ROUTE:
        message = {k: v for k, v in payload.items() if k != "writeKey"}
        _check_size(message, "the message")
        message["type"] = route
        return [message], {}
    items = payload.get("batch")
    if not isinstance(items, list):
        raise BadRequest("invalid_batch", "`batch` must be an array of messages")
    messages: list[Message] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest("invalid_batch", f"batch[{index}] is not a JSON object")
        message = {k: v for k, v in item.items() if k != "writeKey"}
        _check_size(message, f"batch[{index}]")
        messages.append(message)
    shared = {k: payload[k] for k in ("context", "integrations", "sentAt") if k in payload}
    return messages, shared


def enrich(
    message: Message,
    shared: Mapping[str, Any],
    *,
    received_at: datetime,
    new_id: Callable[[], str] = new_message_id,
) -> Message:
    """`message` as stored: batch merge, messageId, receivedAt, sentAt, corrected timestamp."""
    out = dict(message)
    for name in ("context", "integrations"):
        merged = {**_as_object(shared.get(name)), **_as_object(out.get(name))}
        if merged or name in out:
            out[name] = merged
    if out.get("sentAt") is None and shared.get("sentAt") is not None:
        out["sentAt"] = shared["sentAt"]
    if out.get("messageId") in (None, ""):
        out["messageId"] = new_id()
    out["receivedAt"] = format_time(received_at)
    timestamp, original = correct_timestamp(out.get("timestamp"), out.get("sentAt"), received_at)
    out["timestamp"] = timestamp
    if original is not None:
        out["originalTimestamp"] = original
    return out


def _id_text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float):
        return str(value)
    return None


def message_key(message: Mapping[str, Any]) -> bytes | None:
    """The record key: `userId`, else `anonymousId`, as UTF-8; numbers as their text."""
    text = _id_text(message.get("userId")) or _id_text(message.get("anonymousId"))
    return text.encode() if text is not None else None


def segment_records(
    route: str,
    payload: object,
    *,
    topic: str,
    received_at: datetime,
    new_id: Callable[[], str] = new_message_id,
) -> list[OutboundRecord]:
    """Every record a request writes, in request order; raises `BadRequest` for the request."""
    messages, shared = request_messages(route, payload)
    records = []
    for message in messages:
        stored = enrich(message, shared, received_at=received_at, new_id=new_id)
        records.append(OutboundRecord(topic, message_key(stored), orjson.dumps(stored), []))
    return records
