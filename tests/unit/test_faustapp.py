"""The commit rule: a partition's commit never passes an offset that was not acked."""

from __future__ import annotations

import asyncio
import types
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.transport.conductor import Conductor, ConductorCompiler
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree  # type: ignore[import-untyped]
from mode.utils.locks import Event
from mode.utils.queues import FlowControlEvent, FlowControlQueue, ThrowableQueue

from worker.runtime.app import create_app
from worker.runtime.faust_overrides import (
    FETCH_MAX_WAIT_MS,
    REWIND_AFTER_S,
    QuietMonitor,
    RawConductor,
    RawSchema,
    RereadingFlowControl,
    StrictCommitConsumer,
    skipped_offsets,
)
from worker.settings import Settings

PARTITION = TP("autopilot.email-events", 0)


def consumer_with(acked: list[int], committed: int | None) -> StrictCommitConsumer:
    """The consumer's commit bookkeeping alone; `_new_offset` needs nothing else."""
    consumer = StrictCommitConsumer.__new__(StrictCommitConsumer)
    consumer._acked = defaultdict(list, {PARTITION: list(acked)})
    consumer._acked_index = defaultdict(set, {PARTITION: set(acked)})
    consumer._committed_offset = defaultdict(lambda: None, {PARTITION: committed})
    consumer._gap = defaultdict(IntervalTree)
    consumer._held_since = {}
    consumer._start_unknown = set()
    consumer._read_again_from = {}
    consumer._sought_during_hand_off = set()
    return consumer


@pytest.mark.parametrize(
    ("acked", "committed", "expected"),
    [
        ([40, 41, 42], 40, 43),
        ([41, 42], 40, None),  # faust 0.15.3 commits 43: offset 40 would be lost
        ([1, 2], 0, None),  # faust skips its check when the committed offset is 0
        ([40, 41, 41, 42, 42, 43], 40, 44),  # a message acked twice: faust creeps to 42
        ([37, 38, 40, 41], 40, 42),  # acks left below the committed offset
        ([40, 41, 43, 44], 40, 42),  # a gap further on: commit up to it
        ([5, 6, 8], None, 7),  # never committed: the run begins at the lowest ack
        ([], 40, None),
    ],
)
def test_the_commit_covers_only_consecutive_acks_from_the_committed_offset(
    acked: list[int], committed: int | None, expected: int | None
) -> None:
    assert consumer_with(acked, committed)._new_offset(PARTITION) == expected


def acking_consumer(committed: int | None) -> StrictCommitConsumer:
    """The consumer's ack bookkeeping, on a partition acked up to `committed`."""
    consumer = consumer_with([], committed)
    consumer._unacked_messages = set()
    consumer._n_acked = 0
    consumer._waiting_for_ack = None
    consumer.app = types.SimpleNamespace(  # type: ignore[assignment]
        topics=types.SimpleNamespace(acks_enabled_for=lambda topic: "changelog" not in topic)
    )
    return consumer


def test_acking_many_messages_at_once_is_fausts_ack_of_each() -> None:
    """Below the committed offset, acked twice, a duplicate offset, a topic faust does not
    ack (a changelog): `ack_many` leaves the same state as faust's `ack`, one by one."""
    changelog = TP("worker-source-changelog", 0)

    def messages() -> list[ConsumerMessage]:
        made = [
            ConsumerMessage(tp.topic, tp.partition, offset, 1.0, 0, [], b"k", b"v", None)
            for tp, offset in [
                (PARTITION, 39),
                (PARTITION, 40),
                (PARTITION, 41),
                (PARTITION, 41),
                (changelog, 5),
                (PARTITION, 42),
            ]
        ]
        made[2].acked = True  # acked already
        return made

    def state(consumer: StrictCommitConsumer, acked: list[ConsumerMessage]) -> object:
        return (
            dict(consumer._acked),
            dict(consumer._acked_index),
            consumer._n_acked,
            sorted(m.offset for m in consumer._unacked_messages),
            [m.acked for m in acked],
        )

    one_by_one, at_once = acking_consumer(40), acking_consumer(40)
    each, many = messages(), messages()
    for consumer, batch in ((one_by_one, each), (at_once, many)):
        for message in batch:
            consumer._unacked_messages.add(message)
    woken = asyncio.new_event_loop()
    try:
        at_once._waiting_for_ack = woken.create_future()
        for message in each:
            StrictCommitConsumer.ack(one_by_one, message)
        at_once.ack_many(many)
        assert at_once._waiting_for_ack.done()
    finally:
        woken.close()

    assert state(at_once, many) == state(one_by_one, each)
    assert at_once._acked[PARTITION] == [40, 41, 42]


def test_a_run_may_begin_at_a_record_faust_never_delivers() -> None:
    consumer = consumer_with([41, 42], 40)
    consumer._gap[PARTITION].addi(40, 41)  # e.g. a transaction marker at offset 40

    assert consumer._new_offset(PARTITION) == 43


def test_a_held_back_run_is_committed_once_the_missing_offset_is_acked() -> None:
    consumer = consumer_with([41, 42], 40)
    assert consumer._new_offset(PARTITION) is None

    consumer._acked[PARTITION].append(40)

    assert consumer._new_offset(PARTITION) == 43
    assert consumer._acked[PARTITION] == []


def test_a_partition_held_back_too_long_is_read_again_from_the_committed_offset() -> None:
    consumer = consumer_with([491, 492], 489)
    assert consumer._new_offset(PARTITION) is None
    since = consumer._held_since[PARTITION]

    assert consumer.held_too_long(since + REWIND_AFTER_S - 1) == []
    assert consumer.held_too_long(since + REWIND_AFTER_S) == [(PARTITION, 489)]


def test_progress_clears_the_hold() -> None:
    consumer = consumer_with([41, 42], 40)
    consumer._new_offset(PARTITION)
    consumer._acked[PARTITION].append(40)

    assert consumer._new_offset(PARTITION) == 43
    assert consumer.held_too_long(float("inf")) == []


def test_a_partition_with_nothing_acked_is_not_held() -> None:
    consumer = consumer_with([], 40)
    consumer._new_offset(PARTITION)

    assert consumer.held_too_long(float("inf")) == []


def records(*offsets: int) -> list[types.SimpleNamespace]:
    return [types.SimpleNamespace(offset=offset) for offset in offsets]


@pytest.mark.parametrize(
    ("before", "offsets", "after", "expected"),
    [
        (10, [10, 11, 12], 13, []),  # nothing stepped over
        (10, [12, 13], 14, [(10, 12)]),  # a marker before the first record
        (10, [10, 11, 14, 15], 16, [(12, 14)]),  # markers between two records
        (10, [10, 11], 14, [(12, 14)]),  # markers after the last record
        (10, [], 12, [(10, 12)]),  # a fetch that returned only markers
        (550, [383, 384, 385], 386, []),  # sought back during the fetch: nothing is known
        (None, [5, 6], 7, []),  # no position before the fetch
        (None, [0, 1, 2, 4, 5, 6], 8, [(3, 4), (7, 8)]),  # two transactions, read from the start
    ],
)
def test_only_offsets_the_client_stepped_over_are_skipped(
    before: int | None, offsets: list[int], after: int, expected: list[tuple[int, int]]
) -> None:
    fetched = {PARTITION: records(*offsets)} if offsets else {}
    positions = {} if before is None else {PARTITION: before}

    skipped = skipped_offsets(positions, fetched, {PARTITION: after})

    assert skipped.get(PARTITION, []) == expected


def test_a_commit_passes_stepped_over_offsets_but_not_from_below_the_committed_one() -> None:
    consumer = consumer_with([42, 43], 40)
    consumer.add_skipped(PARTITION, 35, 42)  # markers at 40 and 41; below 40 is committed

    assert consumer._new_offset(PARTITION) == 44
    consumer.add_skipped(PARTITION, 30, 40)
    assert not consumer._gap[PARTITION]


def test_a_partition_never_committed_commits_from_its_earliest_offset_once_known() -> None:
    consumer = consumer_with([6, 7], None)
    consumer._start_unknown.add(PARTITION)
    assert consumer._new_offset(PARTITION) is None  # looking up where reading began

    consumer._start_unknown.clear()
    consumer._committed_offset[PARTITION] = 5  # the earliest offset: 5 was never acked
    assert consumer._new_offset(PARTITION) is None

    consumer._acked[PARTITION].append(5)
    assert consumer._new_offset(PARTITION) == 8


async def test_the_earliest_offset_is_asked_again_until_the_broker_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.runtime.faust_overrides._EARLIEST_RETRY_S", 0)
    consumer = consumer_with([6, 7], None)
    consumer._start_unknown.add(PARTITION)
    consumer._stopped, consumer._crashed = Event(), Event()  # a service not stopping
    answers: list[Exception | dict[TP, int]] = [KafkaTimeoutError(), {PARTITION: 5}]

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    consumer.earliest_offsets = earliest_offsets  # type: ignore[method-assign]
    await consumer._learn_start_offsets([PARTITION])

    assert answers == []
    assert consumer._committed_offset[PARTITION] == 5
    assert consumer._new_offset(PARTITION) is None  # 5 was never acked


def test_a_partition_that_ends_in_skipped_offsets_is_committed_to_its_end() -> None:
    consumer = consumer_with([], 15)
    consumer.add_skipped(PARTITION, 15, 16)  # the last transaction's marker

    assert consumer._new_offset(PARTITION) == 16
    assert not consumer._gap[PARTITION]


async def test_a_jump_in_the_handed_off_offsets_is_not_taken_for_skipped_records() -> None:
    """The loss found by kill -9: 385..549 were handed off, then dropped by faust's recovery
    clearing the stream buffers; the next record handed off was 550. Nothing may be passed."""
    consumer = consumer_with([383, 384], 383)
    consumer._read_offset = defaultdict(lambda: None, {PARTITION: 384})
    consumer._commit_every = None
    handed: list[int] = []

    async def callback(message: types.SimpleNamespace) -> None:
        handed.append(message.offset)
        consumer._acked[PARTITION].append(message.offset)

    def batch() -> Iterator[tuple[TP, types.SimpleNamespace]]:
        for record in records(550, 551):
            yield PARTITION, record

    consumer.callback = callback  # type: ignore[assignment]
    await consumer._hand_off(batch())

    assert handed == [550, 551]
    assert consumer._new_offset(PARTITION) == 385
    consumer._committed_offset[PARTITION] = 385
    assert consumer._new_offset(PARTITION) is None  # held at 385 until it is read again


def test_what_a_cleared_stream_buffer_dropped_is_read_again_from_its_first_offset() -> None:
    """faust's recovery clears the stream buffers when it resumes flow; a batch handed off just
    before is dropped unprocessed. Each partition still assigned is read again from its first
    dropped offset; one revoked meanwhile, or whose topic is not acked (a changelog), is not."""
    revoked, changelog = TP("autopilot.email-events", 1), TP("worker-source-changelog", 0)
    sought: list[tuple[TP, int]] = []
    consumer = consumer_with([383, 384], 383)
    consumer._read_offset = defaultdict(lambda: None, {PARTITION: 549})
    consumer._thread = types.SimpleNamespace(  # type: ignore[assignment]
        seek=lambda tp, offset: sought.append((tp, offset))
    )
    consumer.assignment = lambda: {PARTITION, changelog}  # type: ignore[method-assign]
    consumer.app = types.SimpleNamespace(  # type: ignore[assignment]
        topics=types.SimpleNamespace(acks_enabled_for=lambda topic: "changelog" not in topic)
    )
    app = types.SimpleNamespace(consumer=consumer, should_stop=False)
    flow_control = RereadingFlowControl(app)  # type: ignore[arg-type]
    buffer: FlowControlQueue[object] = FlowControlQueue(
        flow_control=flow_control, clear_on_resume=True
    )
    for tp, offset, queued in [
        (PARTITION, 386, "event"),
        (PARTITION, 385, "message"),  # as the raw hand-off queues it
        (revoked, 7, "event"),
        (changelog, 3, "event"),
    ]:
        message = types.SimpleNamespace(tp=tp, offset=offset)
        buffer.put_nowait(
            message if queued == "message" else types.SimpleNamespace(message=message)
        )

    flow_control.resume()

    assert buffer.empty()
    assert sought == [(PARTITION, 385)]
    assert consumer._read_offset[PARTITION] == 385
    assert consumer._new_offset(PARTITION) == 385  # and 385 on must be acked to go further


async def test_records_read_again_are_handed_off_though_the_batch_went_on_past_them() -> None:
    """A clear dropped 388..; the batch being handed off then went on (551, 552) before the
    partition was fetched again from 388: 388 and 389 are not duplicates to skip."""
    consumer = consumer_with([], 388)
    consumer._read_offset = defaultdict(lambda: None, {PARTITION: 550})
    consumer._commit_every = None
    consumer._thread = types.SimpleNamespace(seek=lambda tp, offset: None)  # type: ignore[assignment]
    handed: list[int] = []

    async def callback(message: types.SimpleNamespace) -> None:
        handed.append(message.offset)

    def batch(*offsets: int) -> Iterator[tuple[TP, types.SimpleNamespace]]:
        for record in records(*offsets):
            yield PARTITION, record

    consumer.callback = callback  # type: ignore[assignment]
    consumer._seek_back(PARTITION, 388)
    await consumer._hand_off(batch(551, 552))
    await consumer._hand_off(batch(388, 389))
    await consumer._hand_off(batch(100))  # an older duplicate is still skipped

    assert handed == [551, 552, 388, 389]


async def test_the_rest_of_a_batch_is_left_once_its_partition_is_sought_back() -> None:
    """A buffer clear sought the partition back to 388 while 390..392 were being handed off:
    391 and 392 were fetched before the seek and come again from 388, so they are left (handing
    them off too would write each one twice); another partition's records go on."""
    other = TP("autopilot.email-events", 1)
    consumer = consumer_with([], 388)
    consumer._read_offset = defaultdict(lambda: None, {PARTITION: 389, other: 9})
    consumer._commit_every = None
    consumer._thread = types.SimpleNamespace(seek=lambda tp, offset: None)  # type: ignore[assignment]
    handed: list[tuple[int, int]] = []

    async def callback(message: types.SimpleNamespace) -> None:
        if not handed:
            consumer._seek_back(PARTITION, 388)
        handed.append((message.tp.partition, message.offset))

    def batch(tp: TP, *offsets: int) -> Iterator[tuple[TP, types.SimpleNamespace]]:
        for offset in offsets:
            yield tp, types.SimpleNamespace(tp=tp, offset=offset)

    def mixed() -> Iterator[tuple[TP, types.SimpleNamespace]]:
        yield from batch(PARTITION, 390, 391)
        yield from batch(other, 10)
        yield from batch(PARTITION, 392)

    consumer.callback = callback  # type: ignore[assignment]
    await consumer._hand_off(mixed())
    await consumer._hand_off(batch(PARTITION, 388, 389, 390, 391))  # fetched again

    assert handed == [(0, 390), (1, 10), (0, 388), (0, 389), (0, 390), (0, 391)]


class Channel:
    """An agent's channel, as the conductor sees it: a queue and a schema."""

    def __init__(self, queue: ThrowableQueue[ConsumerMessage]) -> None:
        self.queue = queue
        self.schema = RawSchema(key_type=bytes, value_type=bytes)


class RawPartition:
    """One partition read by one raw-bytes channel (an agent's input), under the app's flow
    control, with the consumer's pause and resume of the partition recorded."""

    def __init__(self, maxsize: int = 100) -> None:
        self.flow_control = FlowControlEvent(initially_suspended=False)
        self.queue: ThrowableQueue[ConsumerMessage] = ThrowableQueue(
            maxsize=maxsize, flow_control=self.flow_control, clear_on_resume=True
        )
        self.paused: list[TP] = []
        self.app = types.SimpleNamespace(
            flow_control=self.flow_control,
            consumer=types.SimpleNamespace(
                on_buffer_full=self.paused.append, on_buffer_drop=self.paused.remove
            ),
            sensors=types.SimpleNamespace(on_topic_buffer_full=lambda tp: None),
            producer=types.SimpleNamespace(buffer=types.SimpleNamespace(wait_until_ebb=None)),
        )
        self.channel = Channel(self.queue)
        self.conductor = RawConductor.__new__(RawConductor)
        self.conductor.app = self.app  # type: ignore[assignment]
        self.conductor._compiler = ConductorCompiler()

    def handler(self, *channels: Channel) -> Any:
        return self.conductor._build_handler(PARTITION, set(channels or [self.channel]))


def consumed(offset: int) -> ConsumerMessage:
    return ConsumerMessage(PARTITION.topic, 0, offset, 1.0, 0, [], b"k", b"v%d" % offset, None)


async def test_a_raw_partition_s_message_is_queued_itself_counted_for_one_channel() -> None:
    partition = RawPartition()
    message = consumed(7)

    assert partition.handler()(message) is None  # queued at once: nothing to await

    assert partition.queue.get_nowait() is message  # no faust event around it
    assert message.refcount == 1  # acked once by the agent, it is done


async def test_the_raw_hand_off_waits_while_flow_is_stopped() -> None:
    partition = RawPartition()
    partition.flow_control.suspend()
    handing = asyncio.ensure_future(partition.handler()(consumed(7)))
    await asyncio.sleep(0.01)
    assert not handing.done()

    partition.flow_control.resume()
    await handing

    assert partition.queue.get_nowait().offset == 7


async def test_a_raw_queue_under_pressure_pauses_the_partition_and_a_full_one_is_waited_on() -> (
    None
):
    partition = RawPartition(maxsize=4)  # high pressure from 3 queued (faust's ratio)
    handler = partition.handler()
    for offset in range(4):
        assert handler(consumed(offset)) is None
    assert partition.paused == [PARTITION]

    handing = asyncio.ensure_future(handler(consumed(4)))
    await asyncio.sleep(0.01)
    assert not handing.done()  # the queue is full
    for _ in range(4):
        partition.queue.get_nowait()
    await handing
    assert partition.queue.get_nowait().offset == 4
    assert partition.paused == []  # the queue drained: the partition is fetched again


def test_a_partition_read_by_two_channels_keeps_fausts_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    partition = RawPartition()

    def fausts(self: Conductor, tp: TP, channels: object) -> str:
        return "faust's handler"

    monkeypatch.setattr(Conductor, "_build_handler", fausts)

    assert "_raw_handler" in partition.handler().__qualname__
    assert partition.handler(partition.channel, Channel(partition.queue)) == "faust's handler"


async def test_the_conductor_reads_the_handler_map_as_is_unless_a_rebalance_is_updating_it() -> (
    None
):
    handled: list[tuple[str, int]] = []

    def handler(name: str) -> Any:
        async def handle(message: ConsumerMessage) -> None:
            handled.append((name, message.offset))

        return handle

    conductor = RawConductor.__new__(RawConductor)
    conductor._tp_to_callback = {PARTITION: handler("before")}
    conductor._tp_to_callback_lock = asyncio.Lock()
    on_message = conductor._compile_message_handler()

    first = on_message(consumed(1))
    assert first is not None  # the handler's coroutine
    await first
    async with conductor._tp_to_callback_lock:  # a rebalance updating the map
        after_the_lock = on_message(consumed(2))
        assert after_the_lock is not None
        waiting = asyncio.ensure_future(after_the_lock)
        await asyncio.sleep(0.01)
        assert handled == [("before", 1)]
        conductor._tp_to_callback[PARTITION] = handler("after")
    await waiting

    assert handled == [("before", 1), ("after", 2)]


def test_the_quiet_monitor_keeps_no_per_event_statistics() -> None:
    monitor = QuietMonitor()
    message = types.SimpleNamespace(time_in=None)

    monitor.on_message_in(PARTITION, 5, message)
    monitor.on_stream_event_in(PARTITION, 5, object(), object())

    assert monitor.messages_received_total == 0
    assert monitor.events_total == 0
    assert message.time_in is None


def test_a_crashed_members_partitions_wait_the_workers_session_timeout_not_fausts() -> None:
    assert Settings.model_fields["broker_session_timeout"].default == 15.0  # faust's: 60
    settings = Settings(broker_session_timeout=12.5)
    assert create_app(settings).conf.broker_session_timeout == 12.5


def test_faust_s_table_and_router_views_are_off() -> None:
    """They would show the tables' emails and userIds to anyone reaching the web port."""
    conf = create_app(Settings()).conf
    assert conf.web_tables_enabled is False
    assert conf.web_router_enabled is False


def hand_off_consumer(sought: list[tuple[TP, int]]) -> StrictCommitConsumer:
    """The consumer's hand-off on PARTITION, nothing read yet; seeks recorded in `sought`."""
    consumer = consumer_with([], None)
    consumer._read_offset = defaultdict(lambda: None)
    consumer._commit_every = None
    consumer._thread = types.SimpleNamespace(  # type: ignore[assignment]
        seek=lambda tp, offset: sought.append((tp, offset))
    )
    consumer.assignment = lambda: {PARTITION}  # type: ignore[method-assign]
    consumer.app = types.SimpleNamespace(  # type: ignore[assignment]
        topics=types.SimpleNamespace(acks_enabled_for=lambda topic: True)
    )
    return consumer


async def test_a_message_waiting_for_a_full_buffer_that_a_rebalance_clears_is_read_again() -> None:
    """faust clears the stream buffers as a rebalance begins and cancels what waits to put into
    them. The fetch loop took that for its own cancellation, and faust stopped the worker in
    the middle of the rebalance: a second replica joining under load stalled both a minute."""
    partition = RawPartition(maxsize=4)
    handler = partition.handler()
    for offset in range(4):
        assert handler(consumed(offset)) is None
    sought: list[tuple[TP, int]] = []
    consumer = hand_off_consumer(sought)
    consumer.callback = handler

    def batch() -> Iterator[tuple[TP, ConsumerMessage]]:
        for offset in (4, 5):
            yield PARTITION, consumed(offset)

    handing = asyncio.ensure_future(consumer._hand_off(batch()))
    await asyncio.sleep(0.01)
    assert not handing.done()  # 4 waits for room
    partition.queue.clear()  # what faust's flow control does to every buffer on a rebalance

    await handing  # no CancelledError

    assert sought == [(PARTITION, 4)]  # read again from the dropped message
    assert consumer._read_offset[PARTITION] == 4  # sought back to it: 5 is not counted as read
    assert partition.queue.empty()


async def test_the_hand_off_itself_cancelled_while_waiting_still_stops() -> None:
    partition = RawPartition(maxsize=1)
    handler = partition.handler()
    assert handler(consumed(0)) is None
    consumer = hand_off_consumer([])
    consumer.callback = handler

    handing = asyncio.ensure_future(consumer._hand_off(iter([(PARTITION, consumed(1))])))
    await asyncio.sleep(0.01)
    handing.cancel()

    with pytest.raises(asyncio.CancelledError):
        await handing


def fetch_thread(generation: int) -> Any:
    """The consumer thread's fetch with faust's part replaced by `records` (set by the test)."""
    from worker.runtime.faust_overrides import _FetchThread  # noqa: PLC0415

    thread = _FetchThread.__new__(_FetchThread)
    thread.consumer = types.SimpleNamespace(  # type: ignore[assignment]
        app=types.SimpleNamespace(
            consumer_generation_id=generation,
            tables=types.SimpleNamespace(changelog_topics={"worker-table-changelog"}),
        )
    )
    return thread


CHANGELOG = TP("worker-table-changelog", 1)


async def test_changelog_records_taken_for_an_ended_generation_are_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch waiting in the consumer thread across a rebalance took the changelog records the
    new generation's recovery reads, for a caller the rebalance cancelled: recovery waited for
    them for ever. Taken for an ended generation, they are sought back and not returned."""
    taken = {CHANGELOG: records(0, 1, 2), PARTITION: records(40, 41)}

    async def fausts(self: Any, consumer: Any, *args: Any, **kwargs: Any) -> Any:
        return taken

    monkeypatch.setattr(
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._fetch_records", fausts
    )
    sought: list[tuple[TP, int]] = []
    client = types.SimpleNamespace(
        _subscription=types.SimpleNamespace(subscription=None),
        seek=lambda tp, offset: sought.append((tp, offset)),
    )
    thread = fetch_thread(generation=3)

    fetched = await thread._fetch_records(client, {CHANGELOG, PARTITION}, 1.0, None, 2)
    assert list(fetched) == [PARTITION]  # a stream partition is read again by the rebalance
    assert sought == [(CHANGELOG, 0)]

    fetched = await thread._fetch_records(client, {CHANGELOG, PARTITION}, 1.0, None, 3)
    assert set(fetched) == {CHANGELOG, PARTITION}  # the generation that asked: kept
    assert sought == [(CHANGELOG, 0)]


async def test_a_fetch_asks_for_the_partitions_active_when_it_was_asked() -> None:
    thread = fetch_thread(generation=5)
    thread._consumer = types.SimpleNamespace(_max_poll_records=None)
    asked: list[Any] = []

    async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append((args, kwargs))
        return {}

    thread.call_thread = call_thread
    active = {PARTITION}
    await thread.getmany(active, 1.0)
    active.add(CHANGELOG)  # faust's live set, changed by a rebalance

    (_, partitions), kwargs = asked[0]
    assert partitions == {PARTITION}
    assert kwargs["generation"] == 5


async def test_the_workers_fetches_wait_at_most_a_tenth_of_a_second_for_records() -> None:
    """aiokafka keeps one fetch in flight per broker: faust's 1.5 s wait on caught-up partitions
    kept the input partitions from being fetched (the benchmark's worker waited half its run)."""
    app = create_app(Settings())
    consumer: Any = app.consumer
    client = consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    try:
        assert client._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
    finally:
        await client.stop()
