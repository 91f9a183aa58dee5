"""Autopilot Source agents: raw email events -> (by email) -> Segment track messages.

Stage `intake` validates raw events from the input topic and re-keys them by lowercased email
onto an internal topic; stage `map` reads that topic, where the destination's intake also
writes what it learns (email -> userId), so the lookup table and the events it serves share a
partition. An event already on the partition its email hashes to (its producer keyed it by
lowercased email, as the worker's webhook does) is mapped by the intake at once
(`worker.placement`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust
import orjson

from worker import __version__
from worker.app import app, placement, raw_topic, topic_names
from worker.records import InboundMessage, OutboundRecord, header
from worker.source.mapping import NATIVE, email_event_contact, map_source
from worker.streaming import run_pipeline
from worker.tables import ChangelogTable
from worker.wiring import KIND_HEADER, build_pipeline

__all__ = ["KIND_EMAIL_EVENT", "KIND_IDENTITY", "identity_record"]

KIND_EMAIL_EVENT = b"email-event"
KIND_IDENTITY = b"identity"

log = logging.getLogger(__name__)

if NATIVE is None:
    log.warning(
        "the compiled source mapper (native/, built by `make install`) is not installed: every "
        "email event is mapped by the Python path: the same tracks, about half as fast"
    )

_user_by_email = app.Table(
    "source_user_by_email",
    # the types pick the changelog's serialisers: raw bytes keys (the partitioner hashes the
    # same bytes as our topics' keys), JSON values; a faust.Schema would not reach recovery
    key_type=bytes,
    value_type=str,
    use_partitioner=True,
    help="lowercased email -> Segment userId, learned from identify and track calls",
)
user_by_email: ChangelogTable[str] = ChangelogTable.of(_user_by_email)


def identity_record(email: str, user_id: str) -> OutboundRecord:
    """What the destination's intake writes when a Segment call ties an email to a userId."""
    return OutboundRecord(
        topic=topic_names.source_by_email,
        key=email.lower().encode(),
        value=orjson.dumps({"user_id": user_id}),
        headers=[(KIND_HEADER, KIND_IDENTITY)],
    )


def intake(message: InboundMessage) -> list[OutboundRecord]:
    key = email_event_contact(message.value).lower().encode()
    if placement.at_home(message, key, topic_names.source_by_email):
        return _track(message, key)
    return [
        OutboundRecord(
            topic=topic_names.source_by_email,
            key=key,
            value=message.value,
            headers=[*message.forwarded_headers(), (KIND_HEADER, KIND_EMAIL_EVENT)],
        )
    ]


def map_by_email(message: InboundMessage) -> list[OutboundRecord]:
    key = message.key or b""
    if header(message.headers, KIND_HEADER) == KIND_IDENTITY:
        user_id = orjson.loads(message.value)["user_id"]
        if user_by_email.get(key) != user_id:  # a changelog write only when it changes
            return [user_by_email.set(key, user_id)]
        return []
    return _track(message, key)


def _track(message: InboundMessage, email_key: bytes) -> list[OutboundRecord]:
    output = map_source(
        message.value,
        received_at=datetime.now(UTC),
        learned_user_id=user_by_email.get(email_key),
        integration_version=__version__,
    )
    return [
        OutboundRecord(
            topic=topic_names.segment_tracks,
            key=output.key.encode(),
            value=output.to_json(),
            headers=[(k, v) for k, v in message.producer_headers() if k != KIND_HEADER],
        )
    ]


_intake = build_pipeline("source", "intake", intake, forward_topic=topic_names.source_by_email)
_map = build_pipeline("source", "map", map_by_email)


@app.agent(raw_topic(topic_names.email_events), name="source-intake")
async def source_intake(stream: faust.StreamT[bytes]) -> None:
    await run_pipeline(stream, _intake)


@app.agent(raw_topic(topic_names.source_by_email), name="source-map")
async def source_map(stream: faust.StreamT[bytes]) -> None:
    await run_pipeline(stream, _map)
