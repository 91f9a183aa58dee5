"""Autopilot Source, built by `build_source`: raw email events -> (by email) -> Segment tracks.

Stage `intake` validates raw events from the input topic and re-keys them by lowercased email
onto an internal topic; stage `map` reads that topic, where the destination's intake also
writes what it learns (email -> userId, `worker.identity`), so the lookup table and the events
it serves share a partition. An event already on the partition its email hashes to (its
producer keyed it by lowercased email, as the worker's webhook does) is mapped by the intake at
once (`worker.runtime.placement`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import faust

from worker import __version__
from worker.identity import KIND_EMAIL_EVENT, KIND_HEADER, KIND_IDENTITY, identity_user_id
from worker.pipeline.records import InboundMessage, OutboundRecord, header
from worker.runtime.batches import run_stage
from worker.runtime.placement import Placement
from worker.runtime.stages import Runtime
from worker.runtime.tables import ChangelogTable
from worker.source.mapping import NATIVE, email_event_contact, map_source
from worker.topics import TopicNames

__all__ = ["Source", "build_source"]

log = logging.getLogger(__name__)

TABLE = "source_user_by_email"


@dataclass
class Source:
    """The source's two handlers over its table (lowercased email -> userId)."""

    topics: TopicNames
    placement: Placement
    user_by_email: ChangelogTable[str]

    def intake(self, message: InboundMessage) -> list[OutboundRecord]:
        key = email_event_contact(message.value).lower().encode()
        if self.placement.at_home(message, key, self.topics.source_by_email):
            return self._track(message, key)
        return [
            OutboundRecord(
                topic=self.topics.source_by_email,
                key=key,
                value=message.value,
                headers=[*message.forwarded_headers(), (KIND_HEADER, KIND_EMAIL_EVENT)],
            )
        ]

    def map_by_email(self, message: InboundMessage) -> list[OutboundRecord]:
        key = message.key or b""
        if header(message.headers, KIND_HEADER) == KIND_IDENTITY:
            user_id = identity_user_id(message.value)
            if self.user_by_email.get(key) != user_id:  # a changelog write only when it changes
                return [self.user_by_email.set(key, user_id)]
            return []
        return self._track(message, key)

    def _track(self, message: InboundMessage, email_key: bytes) -> list[OutboundRecord]:
        output = map_source(
            message.value,
            received_at=datetime.now(UTC),
            learned_user_id=self.user_by_email.get(email_key),
            integration_version=__version__,
        )
        return [
            OutboundRecord(
                topic=self.topics.segment_tracks,
                key=output.key.encode(),
                value=output.to_json(),
                headers=[(k, v) for k, v in message.producer_headers() if k != KIND_HEADER],
            )
        ]


def build_source(runtime: Runtime) -> Source:
    """The source's table, stages and agents on `runtime`'s app."""
    if NATIVE is None:
        log.warning(
            "the compiled source mapper (native/, built by `make install`) is not installed: "
            "every email event is mapped by the Python path: the same tracks, about half as fast"
        )
    app, topics = runtime.app, runtime.topics
    table = app.Table(
        TABLE,
        # the types pick the changelog's serialisers: raw bytes keys (the partitioner hashes the
        # same bytes as our topics' keys), JSON values; a faust.Schema would not reach recovery
        key_type=bytes,
        value_type=str,
        use_partitioner=True,
        help="lowercased email -> Segment userId, learned from identify and track calls",
    )
    source = Source(topics, runtime.placement, ChangelogTable.of(table))
    intake = runtime.build_stage(
        "source", "intake", source.intake, forward_topic=topics.source_by_email
    )
    map_stage = runtime.build_stage("source", "map", source.map_by_email)

    @app.agent(runtime.raw_topic(topics.email_events), name="source-intake")
    async def source_intake(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, intake)

    @app.agent(runtime.raw_topic(topics.source_by_email), name="source-map")
    async def source_map(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, map_stage)

    return source
