"""The faust app class, and the parts of faust the worker replaces.

What a reader can rely on: offsets are committed only as a run of acked offsets that begins
exactly at the committed offset (`StrictCommitConsumer`); records faust drops while a rebalance
or its recovery clears the stream buffers are read again (`RereadingFlowControl`, the fetch
loop); the worker's raw-bytes topics skip faust's codecs (`RawSchema`) and its per-message
hand-off (`RawConductor`); the consumer thread fetches faust's messages, not aiokafka's records
made into them (`worker.runtime.lean_records`); no per-event statistics (`QuietMonitor`); no
start-up wait for late tables (`PromptTableManager`). Why each exists, with the bugs the
reliability suite found in faust 0.15.3, is in docs/ARCHITECTURE.md ("What the worker replaces
of faust").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableSet,
    Sequence,
)
from collections.abc import Set as AbstractSet
from contextlib import suppress
from typing import Any, Protocol

import faust
from aiokafka.errors import ConsumerStoppedError, IllegalStateError, KafkaError
from faust.sensors import Monitor
from faust.tables import TableManager
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from worker.runtime import lean_records

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "REWIND_AFTER_S",
    "FetchedRecords",
    "PromptTableManager",
    "QuietMonitor",
    "RawConductor",
    "RereadingFlowControl",
    "StrictCommitConsumer",
    "WorkerApp",
    "skipped_offsets",
]

log = logging.getLogger(__name__)

#: How long a partition's commit may be held back by a missing offset before it is read again.
REWIND_AFTER_S = 15.0

#: How long to wait before asking again for the earliest offsets of never-committed partitions.
_EARLIEST_RETRY_S = 1.0

#: Messages handed to the streams between two yields to the event loop (as faust does).
_YIELD_EVERY = 100

#: How long the broker may hold a fetch for records to come. aiokafka keeps one fetch in flight
#: per broker and asks again for a partition only once its records are taken: a fetch of caught
#: up partitions (the internal topics) held for faust's 1.5 s kept the input partitions from
#: being asked for meanwhile, and the worker waited on fetches for half its run. Idle, this is
#: a fetch per broker every 0.1 s (docs/ARCHITECTURE.md, "The fetch loop").
FETCH_MAX_WAIT_MS = 100


class _Offset(Protocol):
    @property
    def offset(self) -> int: ...


def skipped_offsets(
    before: Mapping[TP, int],
    records: Mapping[TP, Sequence[_Offset]],
    after: Mapping[TP, int],
) -> dict[TP, list[tuple[int, int]]]:
    """The offsets (half-open ranges) one fetch stepped over without returning a record.

    `before` and `after` are the client's positions around the fetch (a partition without a
    position yet has none before). A position moved back by a seek skips nothing.
    """
    skipped: dict[TP, list[tuple[int, int]]] = {}
    for tp in set(records) | set(after):
        start, end = before.get(tp), after.get(tp)
        ranges: list[tuple[int, int]] = []
        position = start
        for record in records.get(tp, ()):
            if position is not None and record.offset > position:
                ranges.append((position, record.offset))
            position = record.offset + 1 if position is None else max(position, record.offset + 1)
        if position is not None and end is not None and end > position:
            ranges.append((position, end))
        if ranges:
            skipped[tp] = ranges
    return skipped


class FetchedRecords(dict[TP, list[Any]]):
    """One fetch's records by partition, with the offsets the client stepped over."""

    skipped: dict[TP, list[tuple[int, int]]]


def _positions(consumer: Any, tps: Iterable[TP]) -> tuple[object, dict[TP, int]]:
    """The client's assignment and its positions for `tps` (read in the consumer's thread)."""
    subscription = consumer._subscription.subscription
    assignment = None if subscription is None else subscription.assignment
    if assignment is None:
        return None, {}
    positions = {}
    for tp in tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            positions[tp] = state.position
    return assignment, positions


class _FetchThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread; each fetch also reports the offsets it stepped over, takes only
    the partitions active when it was asked, and gives back the changelog records it took for a
    consumer generation that has ended."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        """faust's aiokafka consumer, fetching faust messages (`lean_records`), whose fetches
        wait at most `FETCH_MAX_WAIT_MS` for records to come (faust asks 1.5 s)."""
        consumer = super()._create_worker_consumer(transport)
        if lean_records.install():
            lean_records.mark(consumer)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer

    async def getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 (faust's signature)
    ) -> FetchedRecords:
        """faust's `getmany`, with a copy of the active partitions and the generation asking.

        faust hands the consumer thread its live set of active partitions. A fetch still
        waiting there when a rebalance resumes other partitions (the changelogs its recovery
        reads) took their records too, for a caller the rebalance had cancelled: aiokafka's
        positions moved past records nobody handed off, and recovery waited for them for ever.
        """
        consumer = self._ensure_consumer()
        asked = None if active_partitions is None else set(active_partitions)
        records: FetchedRecords = await self.call_thread(
            self._fetch_records,
            consumer,
            asked,
            timeout=timeout,
            max_records=consumer._max_poll_records,
            generation=self.consumer.app.consumer_generation_id,
        )
        return records

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 (faust's signature)
        max_records: int | None = None,
        generation: int | None = None,
    ) -> FetchedRecords:
        tps = set(active_partitions or ())
        assignment, before = _positions(consumer, tps)
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        if generation is not None and generation != self.consumer.app.consumer_generation_id:
            records = self._give_back_changelogs(consumer, records)
        assignment_after, after = _positions(consumer, tps)
        fetched = FetchedRecords(records)
        same_assignment = assignment is not None and assignment is assignment_after
        fetched.skipped = skipped_offsets(before, records, after) if same_assignment else {}
        return fetched

    def _give_back_changelogs(
        self, consumer: Any, records: Mapping[TP, list[Any]]
    ) -> dict[TP, list[Any]]:
        """`records` without those of changelog partitions, each of which is sought back to its
        first record taken: the generation that asked has ended, so whoever asked for them is
        gone (a rebalance cancels its fetch), and a table's recovery reads a changelog only
        once. Stream partitions are left as they are: the seek to the committed offsets that
        ends a rebalance reads them again."""
        changelogs = self.consumer.app.tables.changelog_topics
        kept: dict[TP, list[Any]] = {}
        for tp, taken in records.items():
            if tp.topic in changelogs and taken:
                with suppress(IllegalStateError):  # revoked meanwhile: its new owner reads it
                    consumer.seek(tp, taken[0].offset)
            else:
                kept[tp] = taken
        return kept


class StrictCommitConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer with a commit rule that cannot skip an unacked offset."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: partition -> when its commit was first held back by a missing offset (monotonic)
        self._held_since: dict[TP, float] = {}
        #: partition -> offset sought back to, until the records from there are handed off
        self._read_again_from: dict[TP, int] = {}
        #: partitions sought back while the batch in hand was being handed off
        self._sought_during_hand_off: set[TP] = set()
        #: partitions never committed whose earliest offset is being looked up
        self._start_unknown: set[TP] = set()
        self._learn_starts: asyncio.Future[None] | None = None

    def _to_message(self, tp: TP, record: Any) -> Any:
        """faust's message of a fetched record; the consumer thread fetches them made already
        (`lean_records`): then it only takes the consumer generation, as faust's does."""
        if type(record) is ConsumerMessage:
            record.generation_id = self.app.consumer_generation_id
            return record
        return super()._to_message(tp, record)

    def _new_consumer_thread(self) -> _FetchThread:
        return _FetchThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 (faust's signature)
    ) -> Any:
        """A fetch, whose stepped-over offsets the commit may pass (see the module doc)."""
        records = await super()._getmany(active_partitions, timeout)
        for tp, ranges in getattr(records, "skipped", {}).items():
            if self.app.topics.acks_enabled_for(tp.topic):
                for start, end in ranges:
                    self.add_skipped(tp, start, end)
        return records

    def add_skipped(self, tp: TP, start: int, end: int) -> None:
        """Offsets `start` up to `end` hold no record to deliver: a commit may pass them."""
        committed = self._committed_offset[tp]
        if committed is not None:
            start = max(start, committed)
        if start < end:
            self._acked.setdefault(tp, [])  # faust commits only the partitions listed here
            gaps = self._gap[tp]
            gaps.addi(start, end)
            gaps.merge_overlaps()

    def ack_many(self, messages: Iterable[Any]) -> None:
        """faust's `ack` for each of `messages` (each at its last reference), under one hold of
        faust's ack lock, and the waiters for acks woken once: a batch's acks at the cost of
        a loop, not of a call each."""
        acks_enabled_for = self.app.topics.acks_enabled_for
        committed_offset, acked_index, acked = (
            self._committed_offset,
            self._acked_index,
            self._acked,
        )
        unacked = self._unacked_messages
        acking: dict[str, bool] = {}
        counted = 0
        notified = False
        with ack_lock:
            for message in messages:
                if message.acked:
                    continue
                message.acked = True
                topic = message.topic
                enabled = acking.get(topic)
                if enabled is None:
                    enabled = acking[topic] = acks_enabled_for(topic)
                if not enabled:
                    continue
                notified = True
                tp, offset = message.tp, message.offset
                committed = committed_offset[tp]
                if committed is None or offset >= committed:
                    index = acked_index[tp]
                    if offset not in index:
                        unacked.discard(message)
                        index.add(offset)
                        acked[tp].append(offset)
                        counted += 1
            self._n_acked += counted
            if notified:
                notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if tp in self._start_unknown:
            return None
        if acked:
            committed = self._committed_offset[tp]
            floor = -1 if committed is None else committed
            fresh = sorted({offset for offset in acked if offset >= floor})
            acked[:] = fresh
            self._acked_index[tp] = set(fresh)
            if committed is not None and not _run_can_begin(fresh, committed, self._gap[tp]):
                if fresh:
                    self._held_since.setdefault(tp, time.monotonic())
                return None
        self._held_since.pop(tp, None)
        if not acked:
            return self._past_skipped(tp)
        offset: int | None = super()._new_offset(tp)
        return offset

    def _past_skipped(self, tp: TP) -> int | None:
        """The end of the skipped offsets that begin at the committed one (faust passes skipped
        offsets only on the way to an ack, so a partition that ends in a transaction marker
        would otherwise never be committed to its end)."""
        committed, gaps = self._committed_offset[tp], self._gap[tp]
        if committed is None or not gaps.at(committed):
            return None
        end: int = max(interval.end for interval in gaps.at(committed))
        gaps.chop(0, end)
        return end

    def read_again(self, first_dropped: Mapping[TP, int]) -> None:
        """Read again, from the first dropped offset, the assigned partitions whose handed-off
        records a stream buffer dropped unprocessed."""
        assigned = self.assignment()
        for tp, offset in first_dropped.items():
            if tp not in assigned or not self.app.topics.acks_enabled_for(tp.topic):
                continue
            try:
                self._seek_back(tp, offset)
            except IllegalStateError:  # revoked meanwhile: its new owner reads it
                continue
            log.info("%s[%d]: reading again from %d, dropped from a stream buffer", *tp, offset)

    def _seek_back(self, tp: TP, offset: int) -> None:
        """Read `tp` again from `offset`. The batch being handed off may go on past it and count
        its records as read: those fetched again from `offset` on must not be taken for
        duplicates and skipped, or the records to read again would be skipped with them."""
        self._thread.seek(tp, offset)
        self._read_offset[tp] = offset
        self._read_again_from[tp] = offset
        self._sought_during_hand_off.add(tp)

    def held_too_long(self, now: float) -> list[tuple[TP, int]]:
        """Partitions held back for `REWIND_AFTER_S`, with the offset to read them from again."""
        held = []
        for tp, since in self._held_since.items():
            committed = self._committed_offset[tp]
            if committed is not None and now - since >= REWIND_AFTER_S:
                held.append((tp, committed))
        return held

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        """Commit as faust does, then read again any partition held back too long."""
        did_commit: bool = await super().commit(*args, **kwargs)
        assigned = self.assignment()
        for tp, offset in self.held_too_long(time.monotonic()):
            del self._held_since[tp]
            if tp in assigned:
                log.warning(
                    "%s[%d]: offset %d was never acknowledged while later ones were, for %.0f s; "
                    "reading the partition again from %d",
                    tp.topic,
                    tp.partition,
                    offset,
                    REWIND_AFTER_S,
                    offset,
                )
                self._seek_back(tp, offset)
        return did_commit

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's fetch loop (see the module doc), one `wait_first` per fetched batch."""
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (self._stopped.is_set() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if not self.should_stop:
                    await self.wait_first(self._fetch_and_hand_off(1.0), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception:
            log.exception("fetching messages failed")
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _fetch_and_hand_off(self, timeout: float) -> None:  # noqa: ASYNC109
        """faust's `getmany` and hand-off: one fetch, then its messages to the streams."""
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:  # stopped for a rebalance: read from the committed offsets
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 (faust's: the next fetch tries again)
                log.warning("exception performing seek when flow not active %r", exc)
            return
        await self._hand_off(self._deliverable(records, active_partitions))

    def _deliverable(
        self, records: Mapping[TP, list[Any]], active_partitions: AbstractSet[TP] | None
    ) -> Iterator[tuple[TP, Any]]:
        """One fetch's records as faust messages, in faust's round-robin order, while flow is
        active in the fetch's consumer generation. faust also asks each record's partition end
        offset for its monitor, across threads: here it is asked once per partition."""
        app = self.app
        generation_id = app.consumer_generation_id
        buffered = self._buffered_partitions
        track_end_offset = app.monitor.track_tp_end_offset
        for tp in records:
            track_end_offset(tp, self.highwater(tp))
        to_message = self._to_message
        for tp, record in self.scheduler.iterate(records):
            if not self.flow_active or app.consumer_generation_id != generation_id:
                return
            if active_partitions is None or tp in active_partitions or tp in buffered:
                yield tp, to_message(tp, record)

    async def _hand_off(self, batch: Iterable[tuple[TP, Any]]) -> None:
        """Each message of a fetched batch to the streams, as faust does, message by message;
        the rest of a partition sought back meanwhile is left: it is fetched again from there."""
        read_offset = self._read_offset
        sought = self._sought_during_hand_off
        sought.clear()
        since_yield = 0
        for tp, message in batch:
            since_yield += 1
            if since_yield > _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            if sought and tp in sought:
                continue  # fetched before the seek back: it comes again (see `_seek_back`)
            offset = message.offset
            last_read = read_offset[tp]
            if last_read is not None and offset < last_read:
                floor = self._read_again_from.get(tp)
                if floor is None or offset < floor:
                    continue  # read already (faust drops these too)
                del self._read_again_from[tp]  # read again (see `_seek_back`)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            waiting = self.callback(message)
            if waiting is not None:  # the conductor's handlers queue a message at once if they can
                try:
                    await waiting
                except asyncio.CancelledError:
                    if _being_cancelled():
                        raise
                    self._dropped_while_waiting(tp, offset)
                    continue
            read_offset[tp] = offset

    def _dropped_while_waiting(self, tp: TP, offset: int) -> None:
        """A message that waited for room in a stream buffer was dropped with it: faust clears
        the buffers as a rebalance begins, and cancels what waits to put into them. That is not
        this task being cancelled; it went up through faust's fetch loop as if it were, and
        faust then stopped the worker ("Restarting on rebalance", a crash with no supervisor to
        restart it), which stalled the group until the broker expelled the member. The message
        is read again from its offset, as those dropped from the buffers are."""
        log.info(
            "%s[%d]: %d was dropped waiting for a stream buffer", tp.topic, tp.partition, offset
        )
        self.read_again({tp: offset})

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, remembering a committed 0 as 0, not as "none".

        A partition of a consumed topic with no committed offset is read from its earliest offset
        (the worker's `auto_offset_reset`), and that is where its first commit must begin.
        """
        committed: Mapping[TP, int | None] = await self.seek_to_committed()
        never_committed = []
        for client_tp, offset in committed.items():
            tp = ensure_TP(client_tp)
            known = offset is not None and offset >= 0
            self._read_offset[tp] = offset if known else None
            if known:
                self._committed_offset[tp] = offset
            elif self.app.topics.acks_enabled_for(tp.topic):
                never_committed.append(tp)
        if never_committed:
            self._start_unknown.update(never_committed)
            self._learn_starts = asyncio.ensure_future(self._learn_start_offsets(never_committed))

    async def _learn_start_offsets(self, tps: list[TP]) -> None:
        """Where partitions never committed are read from: their earliest offsets (the worker's
        `auto_offset_reset`). Their commits wait for it, in the background, however long the
        broker takes to answer."""
        while True:
            try:
                earliest = await self.earliest_offsets(*tps)
                break
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                if self.should_stop:
                    return
                log.warning("the earliest offsets could not be read (%r); trying again", exc)
                await asyncio.sleep(_EARLIEST_RETRY_S)
        for tp in tps:
            if self._committed_offset[tp] is None and earliest.get(tp) is not None:
                self._committed_offset[tp] = earliest[tp]
            self._start_unknown.discard(tp)


def _being_cancelled() -> bool:
    """Whether the running task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _run_can_begin(acked: list[int], committed: int, gaps: object) -> bool:
    """Whether the committed offset itself is done: acked, or a record faust never delivers."""
    if not acked:
        return False
    return acked[0] == committed or bool(gaps.at(committed))  # type: ignore[attr-defined]


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class QuietMonitor(Monitor):
    """faust's monitor without its per-message and per-event bookkeeping."""

    on_message_in = on_message_out = staticmethod(_ignore)
    on_stream_event_in = on_stream_event_out = staticmethod(_ignore)
    on_send_initiated = on_send_completed = staticmethod(_ignore)
    on_table_get = on_table_set = staticmethod(_ignore)


class PromptTableManager(TableManager):
    """faust's table manager without its one-second wait at start-up (see the module doc)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class RawSchema(faust.Schema):  # type: ignore[type-arg]
    """Keys and values as Kafka holds them: faust's codec registry would hand back the same bytes
    after several lookups and calls per message. Decoding, and its failures, are the agents'."""

    def loads_key(self, app: Any, message: Any, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **_: Any) -> Any:
        return message.value


class RereadingFlowControl(FlowControlEvent):
    """Flow control whose `clear` (on every resume of flow) seeks each assigned partition back
    to the first offset it dropped from a stream buffer."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app

    def clear(self) -> None:
        dropped: dict[TP, int] = {}
        for queue in self._queues:
            for item in getattr(queue, "_queue", ()):
                # a faust event, or a message itself (what the raw hand-off queues)
                message = getattr(item, "message", item)
                if hasattr(message, "tp") and hasattr(message, "offset"):
                    tp, offset = message.tp, message.offset
                    dropped[tp] = min(offset, dropped.get(tp, offset))
        super().clear()
        if not dropped or self._app.should_stop:
            return
        consumer = self._app.consumer
        if isinstance(consumer, StrictCommitConsumer):
            consumer.read_again(dropped)


#: A partition's hand-off: None once the message is queued, else what to await first.
_Handler = Callable[[Any], Awaitable[None] | None]


class RawConductor(Conductor):
    """faust's conductor, with a lean hand-off for a partition only one raw-bytes channel reads
    (see the module doc); any other partition keeps faust's handler."""

    # returns None where faust's returns an awaitable: only the worker's fetch loop calls it
    def _compile_message_handler(self) -> _Handler:  # type: ignore[override]
        """faust's `on_message`, which takes the lock guarding the partition -> handler map
        for every message: here only while someone holds it or waits for it (a rebalance
        updating the map), which is when faust's would wait; otherwise the map is read as is.

        Not a coroutine: it returns what the partition's handler returns, None when a raw
        handler queued the message at once (the fetch loop awaits only what is not None)."""
        handler_for = self._tp_to_callback.__getitem__
        lock = self._tp_to_callback_lock

        async def after_the_lock(message: Any) -> None:
            async with lock:
                handler = handler_for(message.tp)
            waiting = handler(message)
            if waiting is not None:
                await waiting

        def on_message(message: Any) -> Awaitable[None] | None:
            if lock.locked() or getattr(lock, "_waiters", None):
                return after_the_lock(message)
            return handler_for(message.tp)(message)

        return on_message

    def _build_handler(self, tp: TP, channels: MutableSet[Any]) -> _Handler:  # type: ignore[override]
        if len(channels) == 1:
            (channel,) = channels
            if isinstance(channel.schema, RawSchema):
                return _raw_handler(self.app, tp, channel)
        handler: Callable[[Any], Awaitable[None]] = super()._build_handler(tp, channels)
        return handler


def _raw_handler(app: Any, tp: TP, channel: Any) -> _Handler:
    """What faust's handler does for one raw-bytes channel: no decoding, nothing to fail.

    The message itself is queued, not a faust event around it (the stages read only the
    message: `batches.EventIntake`). It is queued at once, with no coroutine, while flow is
    active and the queue has room (the handler returns None); otherwise the handler returns
    what to await: the flow resuming, or room in the queue."""
    queue = channel.queue
    flow_active = app.flow_control.is_active
    flow_control = app.flow_control
    consumer = app.consumer
    on_topic_buffer_full = app.sensors.on_topic_buffer_full

    def on_pressure_high() -> None:
        on_topic_buffer_full(tp)
        consumer.on_buffer_full(tp)

    def on_pressure_drop() -> None:
        consumer.on_buffer_drop(tp)

    async def when_possible(message: Any) -> None:
        if not flow_active():
            await flow_control.acquire()
        message.refcount += 1
        if queue.full():
            on_topic_buffer_full(tp)
            await queue.put(message)
        else:
            queue.put_nowait_enhanced(
                message, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop
            )

    def on_message(message: Any) -> Awaitable[None] | None:
        if not flow_active() or queue.full():
            return when_possible(message)
        # `message.incref()` without faust's re-entrant ack lock: the consumer hands messages
        # over, and the stages ack them, on this one event loop thread
        message.refcount += 1
        queue.put_nowait_enhanced(
            message, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop
        )
        return None

    return on_message


class _Transport(aiokafka_driver.Transport):
    Consumer = StrictCommitConsumer
    Conductor = RawConductor


class WorkerApp(faust.App):
    """The faust app, on a transport whose consumer commits strictly (see the module doc)."""

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """faust's flow control, whose clearing of the stream buffers has what it drops read
        again (see the module doc)."""
        return RereadingFlowControl(self, loop=self.loop)
