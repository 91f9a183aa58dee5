"""The destination, built by `build_destination`: Segment calls -> (by user) -> API requests.

Stage `intake` validates calls from the input topic, tells the source what it learned (an email
tied to a userId) and re-keys every valid call by userId (else anonymousId) onto an internal
topic. Stage `map` reads that topic, where the tables it needs live on the same partitions:
the email learned per userId, and the Engage audience memberships last sent per contact. A call
already on the partition its userId (else anonymousId) hashes to, as the worker's Segment API
keys it, is mapped by the intake at once (`worker.runtime.placement`).

Every call is mapped for each backend the worker serves (Autopilot, Ortto, or both during a
migration), each backend's requests going to its own requests topic and its audience
memberships kept under its own keys (`memberships_prefix`), so each sends on its own change.
With one backend a call's failure is routed as it always was. With several:

- when no backend has a request for the call, the call fails once: dead-lettered if any
  backend refused it (the messages, when they differ, each prefixed with the API's name), else
  skipped (the reasons, when they differ, as `<backend>:<reason>` joined by commas);
- when some have requests and another refused or skipped the call, the requests are sent and
  that backend's failure is routed by a stage of its own, `destination/map-<backend>`
  (`own_stages`): its dead letter, once replayed, maps the call for that backend alone, so the
  other backend's requests are not sent twice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import faust
import orjson

from worker.backends.seam import Backend, CallRequests, memberships_prefix
from worker.destination.mapping import accept_call, learned_identity, parse_call
from worker.errors import Fate, SkipMessage, WorkerError
from worker.identity import ToldIdentities, identity_record
from worker.models.parsed_call import ParsedCall
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import FailedAfter, Stage, without_tracebacks
from worker.runtime.batches import run_stage
from worker.runtime.metrics import metrics
from worker.runtime.placement import Placement
from worker.runtime.stages import Runtime
from worker.runtime.tables import ChangelogTable
from worker.topics import TopicNames

__all__ = ["TOLD_IDENTITIES_CAPACITY", "Destination", "build_destination"]

#: Ties of an email to a userId told to the source lately; each costs about 200 bytes.
TOLD_IDENTITIES_CAPACITY = 100_000


#: the audience memberships of a contact with none recorded
_NO_MEMBERSHIPS: Mapping[str, bool] = MappingProxyType({})


class _Memberships(Mapping[str, bool]):
    """One contact's row of the audiences table, as one backend's mapping reads it: the keys
    under its prefix, without the prefix."""

    def __init__(self, row: Mapping[str, bool] | None, prefix: str = "") -> None:
        row = row or {}
        self._row = (
            {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
            if prefix
            else row
        )

    def __getitem__(self, key: str) -> bool:
        return self._row[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)


def _user_key(call: ParsedCall) -> bytes:
    """The key of a call's rows and of its copy on the by-user topic: its userId, else its
    anonymousId."""
    return (call.user_id or call.anonymous_id or "").encode()


@dataclass
class Destination:
    """The destination's two handlers over its tables (userId -> email; contact -> Engage
    audience memberships last sent) and what it told the source."""

    backends: Sequence[Backend]
    topics: TopicNames
    placement: Placement
    email_by_user: ChangelogTable[str]
    audiences: ChangelogTable[dict[str, bool]]
    told_identities: ToldIdentities
    #: the source's table (lowercased email -> userId) when the source runs in this process:
    #: a tie whose email's partition this process holds is written there at once (`_tell`)
    source_ties: ChangelogTable[str] | None = None
    #: with several backends: the stage routing one backend's failure beside another's
    #: requests, by backend name (`destination/map-<name>`)
    own_stages: dict[str, Stage] = field(default_factory=dict)
    #: each backend's requests topic and audience key prefix, by name (worked out once)
    _requests_topic: dict[str, str] = field(init=False, repr=False)
    _prefix: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._requests_topic = {
            b.name: self.topics.for_backend(b.name).requests for b in self.backends
        }
        self._prefix = {b.name: memberships_prefix(b) for b in self.backends}

    def intake(self, message: InboundMessage) -> list[OutboundRecord] | FailedAfter:
        call = parse_call(message.value)
        user_key = _user_key(call)
        identity = learned_identity(call)
        told = self.told_identities
        news = identity if identity is not None and told.is_news(*identity) else None
        told_record = None if news is None else self._tell(*news)
        result: list[OutboundRecord] | FailedAfter
        if self.placement.at_home(message, user_key, self.topics.destination_by_user):
            result = self._requests(message, call, identity, user_key, told_record)
        else:
            hop = OutboundRecord(
                topic=self.topics.destination_by_user,
                key=user_key,
                value=message.value,
                headers=message.forwarded_headers(),
            )
            result = [hop] if told_record is None else [hop, told_record]
        if news is not None:  # its record is in the result: it goes to the producer with it
            told.told(*news)
        return result

    def _tell(self, email: str, user_id: str) -> OutboundRecord | None:
        """The record that tells the source `email` (lowercased) is `user_id`'s.

        When the source's table has the email's partition active in this process: the row
        written at once, and its changelog record (None when the row says so already). Else an
        identity record, for the source's map stage wherever that partition is active.

        Either is sent with the batch and acknowledged before the call's offset is committed.
        A rebalance waits for the batches in hand (`Consumer.wait_empty`), so the row's record
        is in the changelog before another process can take the partition and rebuild it.
        """
        key = email.encode()
        table = self.source_ties
        if table is not None and self.placement.holds(key, table.changelog_topic):
            return None if table.get(key) == user_id else table.set(key, user_id)
        return identity_record(self.topics.source_by_email, email, user_id)

    def map_by_user(self, message: InboundMessage) -> list[OutboundRecord] | FailedAfter:
        call = parse_call(message.value)
        return self._requests(message, call, learned_identity(call), _user_key(call))

    def map_for(self, backend: Backend) -> Callable[[InboundMessage], Handled]:
        """The handler of `backend`'s own stage: a replayed call mapped for it alone."""

        def handler(message: InboundMessage) -> Handled:
            call = parse_call(message.value)
            return self._requests(
                message, call, learned_identity(call), _user_key(call), only=backend
            )

        return handler

    def _requests(
        self,
        message: InboundMessage,
        parsed: ParsedCall,
        identity: tuple[str, str] | None,
        user_key: bytes,
        told_to_source: OutboundRecord | None = None,
        *,
        only: Backend | None = None,
    ) -> Handled:
        """The call's request descriptors for each backend (`only` one), then the changelog
        records of what it changed and the identity `told_to_source`; those last two are sent
        even when the call is then skipped or dead-lettered (what was learned is kept all the
        same); then the failures of backends beside others' requests, routed by their own
        stages. `user_key` is the call's userId, else its anonymousId, as bytes."""
        email_by_user, audiences = self.email_by_user, self.audiences
        kept = []
        learned = None  # the email learned for the call's userId (this call's, if it names one)
        if parsed.user_id:
            learned = email_by_user.get(user_key)  # a userId's key is `user_key`
            if identity is not None and learned != identity[0]:
                learned = identity[0]
                kept.append(email_by_user.set(user_key, learned))  # only on change
        if told_to_source is not None:
            kept.append(told_to_source)
        row = audiences.get(user_key)
        results: list[tuple[Backend, CallRequests]] = []
        failures: list[tuple[Backend, WorkerError]] = []
        for backend in self.backends if only is None else (only,):
            try:
                call = accept_call(parsed, backend.integration_names, backend.source_integrations)
                result = backend.requests_for(
                    call,
                    learned_email=learned,
                    audience_state=_NO_MEMBERSHIPS
                    if row is None
                    else _Memberships(row, self._prefix[backend.name]),
                )
            except WorkerError as error:
                failures.append((backend, without_tracebacks(error)))  # held in this frame
            else:
                results.append((backend, result))
        if not results:
            failure = _one_failure(failures)
            if not kept:
                raise failure
            return FailedAfter(kept, failure)
        if any(result.audience_updates for _, result in results):
            updates = {
                self._prefix[backend.name] + key: member
                for backend, result in results
                for key, member in result.audience_updates.items()
            }
            kept.append(audiences.set(user_key, {**(row or {}), **updates}))
        headers = message.producer_headers()
        records = [
            OutboundRecord(
                self._requests_topic[backend.name],
                descriptor["contact"].encode(),
                orjson.dumps(descriptor),
                # a list each: the producer's batch builder may keep it
                list(headers) if headers else [],
            )
            for backend, result in results
            for descriptor in result.descriptors
        ]
        records.extend(kept)
        for backend, refused in failures:  # beside another backend's requests
            records.extend(
                self.own_stages[backend.name].route_failure(
                    message, refused, count_in_breaker=False
                )
            )
        return records


Handled = list[OutboundRecord] | FailedAfter


def _one_failure(failures: Sequence[tuple[Backend, WorkerError]]) -> WorkerError:
    """The one failure of a call no backend has a request for: a dead letter if any backend
    refused it, else a skip; naming the backends when they differ."""
    if len(failures) == 1:
        return failures[0][1]
    refusals = [(b, e) for b, e in failures if e.fate is not Fate.SKIP]
    if not refusals:
        if len({e.message for _, e in failures}) == 1:
            return failures[0][1]
        return SkipMessage(",".join(f"{b.name}:{e.message}" for b, e in failures))
    first = refusals[0][1]
    if len(refusals) == len(failures) and len({e.message for _, e in refusals}) == 1:
        return first
    named = copy.copy(first)
    named.message = "; ".join(f"{b.display_name}: {e.message}" for b, e in refusals)
    named.args = (named.message,)
    return named


def build_destination(
    runtime: Runtime,
    backends: Sequence[Backend],
    source_ties: ChangelogTable[str] | None = None,
) -> Destination:
    """The destination's tables, stages and agents on `runtime`'s app, mapping for each of
    `backends`; writing ties into `source_ties`, the source's table, where this process holds
    their partition (the source runs here)."""
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
        help="userId/anonymousId -> {Engage audience key: membership last sent}; each API's "
        "own keys (Autopilot's as they are, Ortto's prefixed ortto:)",
    )
    destination = Destination(
        backends=tuple(backends),
        topics=topics,
        placement=runtime.placement,
        email_by_user=ChangelogTable.of(email_by_user),
        audiences=ChangelogTable.of(audiences),
        told_identities=ToldIdentities(capacity=TOLD_IDENTITIES_CAPACITY),
        source_ties=source_ties,
    )
    intake = runtime.build_stage(
        "destination", "intake", destination.intake, forward_topic=topics.destination_by_user
    )
    map_stage = runtime.build_stage("destination", "map", destination.map_by_user)
    if len(backends) > 1:
        for backend in backends:
            own = runtime.build_stage(
                "destination", f"map-{backend.name}", destination.map_for(backend)
            )
            metrics.track(own)  # no agent of its own runs it: its counts are exported here
            destination.own_stages[backend.name] = own

    @app.agent(runtime.raw_topic(topics.segment_calls), name="destination-intake")
    async def destination_intake(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, intake)

    @app.agent(runtime.raw_topic(topics.destination_by_user), name="destination-map")
    async def destination_map(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, map_stage)

    return destination
