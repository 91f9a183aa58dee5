"""The destination, built by `build_destination`: Segment calls -> (by user) -> API requests.

Stage `intake` validates calls from the input topic, tells the source what it learned (an email
tied to a userId) and re-keys every valid call by userId (else anonymousId) onto an internal
topic. Stage `map` reads that topic, where the tables it needs live on the same partitions:
the email learned per userId, and the Engage audience memberships last sent per contact. A call
already on the partition its userId (else anonymousId) hashes to, as the worker's Segment API
keys it, is mapped by the intake at once (`worker.runtime.placement`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import faust
import orjson

from worker.backends.seam import Backend
from worker.destination.mapping import accept_call, learned_identity, parse_call
from worker.errors import WorkerError
from worker.identity import ToldIdentities, identity_record
from worker.models.parsed_call import ParsedCall
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import FailedAfter
from worker.runtime.batches import run_stage
from worker.runtime.placement import Placement
from worker.runtime.stages import Runtime
from worker.runtime.tables import ChangelogTable
from worker.topics import TopicNames

__all__ = ["TOLD_IDENTITIES_CAPACITY", "Destination", "build_destination"]

#: Ties of an email to a userId told to the source lately; each costs about 200 bytes.
TOLD_IDENTITIES_CAPACITY = 100_000


class _Memberships(Mapping[str, bool]):
    """One contact's row of the audiences table, as the mapping reads it."""

    def __init__(self, row: Mapping[str, bool] | None) -> None:
        self._row = row or {}

    def __getitem__(self, key: str) -> bool:
        return self._row[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)


def _user_key(user_id: str | None, anonymous_id: str | None) -> bytes:
    return (user_id or anonymous_id or "").encode()


@dataclass
class Destination:
    """The destination's two handlers over its tables (userId -> email; contact -> Engage
    audience memberships last sent) and what it told the source."""

    backend: Backend
    topics: TopicNames
    placement: Placement
    email_by_user: ChangelogTable[str]
    audiences: ChangelogTable[dict[str, bool]]
    told_identities: ToldIdentities

    def intake(self, message: InboundMessage) -> list[OutboundRecord] | FailedAfter:
        call = parse_call(message.value)
        user_key = _user_key(call.user_id, call.anonymous_id)
        identity = learned_identity(call)
        told = self.told_identities
        news = identity if identity is not None and told.is_news(*identity) else None
        learned = [] if news is None else [identity_record(self.topics.source_by_email, *news)]
        result: list[OutboundRecord] | FailedAfter
        if self.placement.at_home(message, user_key, self.topics.destination_by_user):
            result = self._requests(message, call, identity, told_to_source=learned)
        else:
            hop = OutboundRecord(
                topic=self.topics.destination_by_user,
                key=user_key,
                value=message.value,
                headers=message.forwarded_headers(),
            )
            result = [hop, *learned]
        if news is not None:  # its record is in the result: it goes to the producer with it
            told.told(*news)
        return result

    def map_by_user(self, message: InboundMessage) -> list[OutboundRecord] | FailedAfter:
        call = parse_call(message.value)
        return self._requests(message, call, learned_identity(call))

    def _requests(
        self,
        message: InboundMessage,
        parsed: ParsedCall,
        identity: tuple[str, str] | None,
        *,
        told_to_source: list[OutboundRecord] | None = None,
    ) -> list[OutboundRecord] | FailedAfter:
        """The call's request descriptors, then the changelog records of what it changed and
        the identity `told_to_source`; those last two are sent even when the call is then
        skipped or dead-lettered (what was learned is kept all the same)."""
        email_by_user, audiences = self.email_by_user, self.audiences
        kept = []
        if identity is not None and email_by_user.get(identity[1].encode()) != identity[0]:
            kept.append(email_by_user.set(identity[1].encode(), identity[0]))  # only on change
        kept.extend(told_to_source or ())
        try:
            call = accept_call(parsed, self.backend.integration_names)
            user_key = _user_key(call.user_id, call.anonymous_id)
            result = self.backend.requests_for(
                call,
                learned_email=email_by_user.get(call.user_id.encode()) if call.user_id else None,
                audience_state=_Memberships(audiences.get(user_key)),
            )
        except WorkerError as error:
            if not kept:
                raise
            return FailedAfter(kept, error)
        if result.audience_updates:
            row = {**(audiences.get(user_key) or {}), **result.audience_updates}
            kept.append(audiences.set(user_key, row))
        requests = [
            OutboundRecord(
                topic=self.topics.autopilot_requests,
                key=descriptor["contact"].encode(),
                value=orjson.dumps(descriptor),
                headers=message.producer_headers(),
            )
            for descriptor in result.descriptors
        ]
        return [*requests, *kept]


def build_destination(runtime: Runtime, backend: Backend) -> Destination:
    """The destination's tables, stages and agents on `runtime`'s app, mapping for `backend`."""
    app, topics = runtime.app, runtime.topics
    email_by_user = app.Table(
        "destination_email_by_user",
        # the types pick the changelog's serialisers: raw bytes keys (the partitioner hashes the
        # same bytes as our topics' keys), JSON values; a faust.Schema would not reach recovery
        key_type=bytes,
        value_type=str,
        use_partitioner=True,
        help="Segment userId -> email, learned from identify and track calls",
    )
    audiences = app.Table(
        "destination_audiences",
        key_type=bytes,
        use_partitioner=True,
        help="userId/anonymousId -> {Engage audience key: membership last sent}",
    )
    destination = Destination(
        backend=backend,
        topics=topics,
        placement=runtime.placement,
        email_by_user=ChangelogTable.of(email_by_user),
        audiences=ChangelogTable.of(audiences),
        told_identities=ToldIdentities(capacity=TOLD_IDENTITIES_CAPACITY),
    )
    intake = runtime.build_stage(
        "destination", "intake", destination.intake, forward_topic=topics.destination_by_user
    )
    map_stage = runtime.build_stage("destination", "map", destination.map_by_user)

    @app.agent(runtime.raw_topic(topics.segment_calls), name="destination-intake")
    async def destination_intake(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, intake)

    @app.agent(runtime.raw_topic(topics.destination_by_user), name="destination-map")
    async def destination_map(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, map_stage)

    return destination
