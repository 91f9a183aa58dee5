"""Autopilot Destination agents: Segment calls -> (by user) -> Autopilot request descriptors.

Stage `intake` validates calls from the input topic, tells the source what it learned (an email
tied to a userId) and re-keys every valid call by userId (else anonymousId) onto an internal
topic. Stage `map` reads that topic, where the tables it needs live on the same partitions:
the email learned per userId, and the Engage audience memberships last sent per contact. A call
already on the partition its userId (else anonymousId) hashes to, as the worker's Segment API
keys it, is mapped by the intake at once (`worker.placement`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import faust
import orjson

from worker.app import app, placement, raw_topic, settings, topic_names
from worker.destination.identities import ToldIdentities
from worker.destination.mapping import (
    DestinationConfig,
    ParsedCall,
    accept_call,
    call_to_requests,
    learned_identity,
    parse_call,
)
from worker.errors import WorkerError
from worker.pipeline import FailedAfter
from worker.records import InboundMessage, OutboundRecord
from worker.source.agents import identity_record
from worker.streaming import run_pipeline
from worker.tables import ChangelogTable
from worker.wiring import build_pipeline

__all__: list[str] = []

config = DestinationConfig.from_settings(settings)

_email_by_user = app.Table(
    "destination_email_by_user",
    # the types pick the changelog's serialisers: raw bytes keys (the partitioner hashes the
    # same bytes as our topics' keys), JSON values; a faust.Schema would not reach recovery
    key_type=bytes,
    value_type=str,
    use_partitioner=True,
    help="Segment userId -> email, learned from identify and track calls",
)
_audiences = app.Table(
    "destination_audiences",
    key_type=bytes,
    use_partitioner=True,
    help="userId/anonymousId -> {Engage audience key: membership last sent}",
)
email_by_user: ChangelogTable[str] = ChangelogTable.of(_email_by_user)
audiences: ChangelogTable[dict[str, bool]] = ChangelogTable.of(_audiences)

#: Ties of an email to a userId told to the source lately; each costs about 200 bytes.
told_identities = ToldIdentities(capacity=100_000)


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


def intake(message: InboundMessage) -> list[OutboundRecord] | FailedAfter:
    call = parse_call(message.value)
    user_key = _user_key(call.user_id, call.anonymous_id)
    identity = learned_identity(call)
    news = identity if identity is not None and told_identities.is_news(*identity) else None
    learned = [] if news is None else [identity_record(*news)]
    result: list[OutboundRecord] | FailedAfter
    if placement.at_home(message, user_key, topic_names.destination_by_user):
        result = _requests(message, call, identity, told_to_source=learned)
    else:
        hop = OutboundRecord(
            topic=topic_names.destination_by_user,
            key=user_key,
            value=message.value,
            headers=message.forwarded_headers(),
        )
        result = [hop, *learned]
    if news is not None:  # its record is in the result: it goes to the producer with it
        told_identities.told(*news)
    return result


def map_by_user(message: InboundMessage) -> list[OutboundRecord] | FailedAfter:
    call = parse_call(message.value)
    return _requests(message, call, learned_identity(call))


def _requests(
    message: InboundMessage,
    parsed: ParsedCall,
    identity: tuple[str, str] | None,
    *,
    told_to_source: list[OutboundRecord] | None = None,
) -> list[OutboundRecord] | FailedAfter:
    """The call's request descriptors, then the changelog records of what it changed and the
    identity `told_to_source`; those last two are sent even when the call is then skipped or
    dead-lettered (what was learned is kept all the same)."""
    kept = []
    if identity is not None and email_by_user.get(identity[1].encode()) != identity[0]:
        kept.append(email_by_user.set(identity[1].encode(), identity[0]))  # only on change
    kept.extend(told_to_source or ())
    try:
        call = accept_call(parsed)
        user_key = _user_key(call.user_id, call.anonymous_id)
        result = call_to_requests(
            call,
            config=config,
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
            topic=topic_names.autopilot_requests,
            key=descriptor["contact"].encode(),
            value=orjson.dumps(descriptor),
            headers=message.producer_headers(),
        )
        for descriptor in result.descriptors
    ]
    return [*requests, *kept]


_intake = build_pipeline(
    "destination", "intake", intake, forward_topic=topic_names.destination_by_user
)
_map = build_pipeline("destination", "map", map_by_user)


@app.agent(raw_topic(topic_names.segment_calls), name="destination-intake")
async def destination_intake(stream: faust.StreamT[bytes]) -> None:
    await run_pipeline(stream, _intake)


@app.agent(raw_topic(topic_names.destination_by_user), name="destination-map")
async def destination_map(stream: faust.StreamT[bytes]) -> None:
    await run_pipeline(stream, _map)
