"""Autopilot Source, built by `build_source`: email events -> (by email) -> Segment tracks.

One source, two input formats: raw Autopilot email events (`autopilot.email-events`,
`worker.source.mapping`) and Ortto's activity webhooks (`ortto.activities`,
`worker.source.ortto`). Stage `intake` reads both topics, picks the parser by the topic a
message was written to, validates it and re-keys it by lowercased email onto an internal topic
(a header says which format it is); stage `map` reads that topic, where the destination's
intake also writes what it learns (email -> userId, `worker.identity`) unless it writes it into
the table itself (same process, partition held here), so the lookup table and the events it
serves share a partition, whichever format they came in. An event already on the
partition its email hashes to (its producer keyed it by lowercased email, as the worker's
webhooks do) is mapped by the intake at once (`worker.runtime.placement`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import faust

from worker import __version__
from worker.identity import (
    KIND_EMAIL_EVENT,
    KIND_HEADER,
    KIND_IDENTITY,
    KIND_ORTTO_ACTIVITY,
    identity_user_id,
)
from worker.pipeline.records import InboundMessage, OutboundRecord, header
from worker.runtime.batches import run_stage
from worker.runtime.placement import Placement
from worker.runtime.stages import Runtime
from worker.runtime.tables import ChangelogTable
from worker.source.mapping import NATIVE, email_event_contact, map_source
from worker.source.ortto import OrttoConfig, UnmappedActivity, parse_ortto_activity
from worker.source.track import NeutralEmailEvent, SourceOutput, received_text, write_track
from worker.topics import TopicNames

__all__ = ["Source", "build_source"]

log = logging.getLogger(__name__)

TABLE = "source_user_by_email"


#: How many distinct unmapped Ortto field ids a process names in its log (each once).
UNMAPPED_LOGGED = 200


@dataclass
class Source:
    """The source's two handlers over its table (lowercased email -> userId)."""

    topics: TopicNames
    placement: Placement
    user_by_email: ChangelogTable[str]
    ortto: OrttoConfig = field(default_factory=OrttoConfig)
    unmapped_seen: set[str] = field(default_factory=set)

    def intake(self, message: InboundMessage) -> list[OutboundRecord]:
        if self._from_ortto(message):
            event = self._ortto_event(message.value)
            key = event.email.lower().encode()
            if self.placement.at_home(message, key, self.topics.source_by_email):
                return self._output(message, self._write(event, key))
            return self._forward(message, key, KIND_ORTTO_ACTIVITY)
        key = email_event_contact(message.value).lower().encode()
        if self.placement.at_home(message, key, self.topics.source_by_email):
            return self._output(message, self._map_autopilot(message.value, key))
        return self._forward(message, key, KIND_EMAIL_EVENT)

    def map_by_email(self, message: InboundMessage) -> list[OutboundRecord]:
        key = message.key or b""
        kind = header(message.headers, KIND_HEADER)
        if kind == KIND_IDENTITY:
            user_id = identity_user_id(message.value)
            if self.user_by_email.get(key) != user_id:  # a changelog write only when it changes
                return [self.user_by_email.set(key, user_id)]
            return []
        if kind == KIND_ORTTO_ACTIVITY or (kind is None and self._from_ortto(message)):
            return self._output(message, self._write(self._ortto_event(message.value), key))
        return self._output(message, self._map_autopilot(message.value, key))

    def _from_ortto(self, message: InboundMessage) -> bool:
        """Whether `message` is in Ortto's format: by the topic it was written to (a replay
        comes from the retry topic, and names the topic its original was written to)."""
        topic = message.topic
        if topic == self.topics.email_events:
            return False
        return topic == self.topics.ortto_activities or (
            message.origin()[0] == self.topics.ortto_activities
        )

    def _ortto_event(self, raw: bytes) -> NeutralEmailEvent:
        try:
            return parse_ortto_activity(raw, self.ortto)
        except UnmappedActivity as unmapped:
            self._note_unmapped(unmapped)
            raise

    def _note_unmapped(self, unmapped: UnmappedActivity) -> None:
        """Name each field id that arrives unmapped once: what ORTTO_ACTIVITY_EVENTS could add."""
        seen = self.unmapped_seen
        if unmapped.field_id in seen or len(seen) >= UNMAPPED_LOGGED:
            return
        seen.add(unmapped.field_id)
        log.info(
            "Ortto activity %s is skipped (activity_not_mapped): ORTTO_ACTIVITY_EVENTS names no "
            "event for it; its attr keys: %s (each field id is named once)",
            unmapped.field_id,
            ", ".join(unmapped.attr_keys) or "none",
        )

    def _map_autopilot(self, raw: bytes, email_key: bytes) -> SourceOutput:
        return map_source(
            raw,
            received_at=datetime.now(UTC),
            learned_user_id=self.user_by_email.get(email_key),
            integration_version=__version__,
        )

    def _write(self, event: NeutralEmailEvent, email_key: bytes) -> SourceOutput:
        return write_track(
            event,
            self.user_by_email.get(email_key),
            received_text(datetime.now(UTC)),
            __version__,
        )

    def _forward(self, message: InboundMessage, key: bytes, kind: bytes) -> list[OutboundRecord]:
        return [
            OutboundRecord(
                topic=self.topics.source_by_email,
                key=key,
                value=message.value,
                headers=[*message.forwarded_headers(), (KIND_HEADER, kind)],
            )
        ]

    def _output(self, message: InboundMessage, output: SourceOutput) -> list[OutboundRecord]:
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
    source = Source(
        topics,
        runtime.placement,
        ChangelogTable.of(table),
        OrttoConfig.from_settings(runtime.settings),
    )
    intake = runtime.build_stage(
        "source", "intake", source.intake, forward_topic=topics.source_by_email
    )
    map_stage = runtime.build_stage("source", "map", source.map_by_email)

    inputs = runtime.raw_topic(topics.email_events, topics.ortto_activities)

    @app.agent(inputs, name="source-intake")
    async def source_intake(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, intake)

    @app.agent(runtime.raw_topic(topics.source_by_email), name="source-map")
    async def source_map(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, map_stage)

    return source
