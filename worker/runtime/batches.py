"""The thin faust shell around a `Stage`: events in, batches handed off, acked in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.events import Event
from faust.types.tuples import Message, ack_lock
from mode.utils.queues import FlowControlEvent

from worker.errors import BatchGivenBack
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.metrics import BatchTimer, metrics
from worker.runtime.placement import kafka_partitioner

__all__ = [
    "EXIT_FATAL",
    "MAX_IN_FLIGHT",
    "EventIntake",
    "FaustSender",
    "InOrderAcks",
    "hold_while_paused",
    "run_batches",
    "run_stage",
    "stop_worker",
    "to_inbound",
    "unless_flow_stops",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Exit status of a worker stopped by a `FatalError` (EX_SOFTWARE).
EXIT_FATAL = 70

#: Messages taken per batch, and how long to wait for a batch to fill: under a backlog batches
#: fill at once; at a steady trickle the wait is added to every message's latency (20 ms gave a
#: p50 of 20 ms at 1,000 events/s, 5 ms gives about 10 ms).
BATCH_SIZE = 500
BATCH_WITHIN_S = 0.005

#: Batches a stage may have handed to the producer before Kafka acknowledged all they produced.
#: Two let a stage map the next batch while the last one's acks are outstanding (aiokafka has
#: one produce request in flight per broker: the next batch goes in the next request); a third
#: rides out a slow ack. More would only hold more events unacked, and their commits back.
MAX_IN_FLIGHT = 3


class FaustSender:
    """Produces raw records through the app's producer.

    Records are appended to one aiokafka batch per partition and each batch is sent whole:
    `send` per record costs a future, a metadata lookup and a partitioner call each (faust's
    `Topic.send` several hundred microseconds more), for records that are already bytes.
    Partitions are chosen as the producer's partitioner would (`worker.runtime.placement`), and a
    partition's records keep their order, across calls too.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(self, records: Sequence[OutboundRecord]) -> Awaitable[object]:
        """Append `records` to the producer's batches; the result completes once Kafka
        acknowledged every one (acks=all), or fails with the first failure."""
        producer: AIOKafkaProducer = self._app.producer._ensure_producer()  # type: ignore[attr-defined]
        partitions: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], BatchBuilder] = {}
        pending: list[Awaitable[object]] = []
        for record in records:
            topic = record.topic
            every = partitions.get(topic)
            if every is None:
                every = partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = kafka_partitioner(record.key, every, every)
            batch = batches.get((topic, partition))
            if batch is not None and _append(batch, record):
                continue
            if batch is not None:  # full: send it and start another
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[topic, partition] = producer.create_batch()
            if not _append(batch, record):  # too big for an empty batch: it goes alone
                pending.append(
                    await producer.send(
                        topic, record.value, record.key, partition, None, record.headers
                    )
                )
        for (topic, partition), batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        return asyncio.gather(*pending)

    async def send_each(self, records: Sequence[OutboundRecord]) -> list[tuple[int, int]]:
        """Produce `records` one request each and return, once Kafka acknowledged them all,
        where each one landed: (partition, offset). For the few records whose place is
        followed (the console's replays), not for a stage's output."""
        producer: AIOKafkaProducer = self._app.producer._ensure_producer()  # type: ignore[attr-defined]
        futures = [
            await producer.send(record.topic, record.value, record.key, headers=record.headers)
            for record in records
        ]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*futures)]


def _append(batch: BatchBuilder, record: OutboundRecord) -> bool:
    """Whether `record` fitted in `batch`."""
    return (
        batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
        is not None
    )


_new_tuple = tuple.__new__


def to_inbound(message: Any) -> InboundMessage:
    """A faust message as a framework-free one."""
    headers = message.headers
    if headers:
        if isinstance(headers, dict):
            headers = headers.items()
        headers = [(k, v if v is not None else b"") for k, v in headers]
    else:
        headers = ()
    value = message.value
    # the tuple made directly: a named tuple's own `__new__` is a Python-level call per message
    return _new_tuple(
        InboundMessage,
        (
            message.topic,
            message.partition,
            message.offset,
            int(message.timestamp * 1000),
            message.key,
            value if value is not None else b"",
            headers,
        ),
    )


class EventIntake:
    """An agent's messages, taken off its channel's queue in batches. The queue holds faust's
    messages themselves when the partition is read by this channel alone (the raw hand-off,
    `faust_overrides._raw_handler`), faust's events around them when other channels read it
    too (faust's own handler, e.g. the destination's and the warehouse's agents on the Segment
    calls): either is taken, and the batch holds the messages.

    faust's stream iterator (and `take_events` on top of it, which acks a batch only when the
    next one is taken) would cost several calls an event; this does what of it the worker
    relies on. An event is tracked when taken, as the iterator tracks it, so that a rebalance or
    a shutdown waits (`Consumer.wait_empty`) until it is acked; an event taken while flow is
    stopped for a rebalance, or fetched in an earlier consumer generation, is dropped unacked,
    as the iterator drops it (the seek that ends the rebalance reads it again). What is still in
    the queue when faust clears it is seen there by `faust_overrides.RereadingFlowControl`.
    """

    def __init__(self, stream: faust.StreamT[bytes]) -> None:
        self._app = stream.app
        self._queue = stream.channel.queue  # type: ignore[attr-defined]
        self._flow_active = stream.app.flow_control.is_active
        self._acking_topics = stream.app.topics.acking_topics
        self._unacked = stream.app.consumer.unacked
        self._kept: Message | Event | None = None

    async def next_unless_paused(self, breaker: Breaker) -> Message | Event | None:
        """The next event once there is one; None while `breaker` is tripped, also when it trips
        while this waits (a sibling stage tripped it). An event got as it trips is kept, untaken,
        for when the pipeline resumes (a rebalance meanwhile makes it stale: `fill` drops it)."""
        if breaker.paused:
            return None
        if self._kept is not None:
            event, self._kept = self._kept, None
            return event
        queue = self._queue
        if not queue.empty():
            return queue.get_nowait()  # type: ignore[no-any-return]
        getter = asyncio.ensure_future(queue.get())
        tripped = asyncio.ensure_future(breaker.wait_tripped())
        try:
            await asyncio.wait({getter, tripped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tripped.cancel()
            if not getter.done():
                getter.cancel()
                await asyncio.wait({getter})
        if getter.cancelled():  # the breaker tripped first (a cancellation of ours raised)
            return None
        event = getter.result()
        if breaker.paused:
            self._kept = event
            return None
        return event  # type: ignore[no-any-return]

    async def fill(
        self,
        events: list[Message],
        size: int,
        within_s: float,
        first: Message | Event | None = None,
    ) -> None:
        """Add to `events` `first` (else the next event, once there is one) and those that
        follow it within `within_s`, up to `size` in all (`events` is the caller's: it knows what
        it holds if this is cancelled)."""
        queue = self._queue
        event: Message | Event = first if first is not None else await queue.get()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            self._keep(event, events)
            if len(events) >= size:
                return
            if not queue.empty():
                event = queue.get_nowait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    event = await queue.get()
            except TimeoutError:
                return

    def give_back(self, events: list[Message]) -> None:
        """Forget `events` unacked: a rebalance or a shutdown stops waiting for them, and the
        commit stays before them, so they are read again from there."""
        for message in events:
            self._unacked.discard(message)

    def _keep(self, item: Message | Event, events: list[Message]) -> None:
        message = item if isinstance(item, Message) else item.message
        if not self._flow_active() or message.generation_id != self._app.consumer_generation_id:
            return
        if message.topic in self._acking_topics and not message.tracked:
            message.tracked = True
            self._unacked.add(message)
        events.append(message)


class _InFlight:
    __slots__ = ("acked", "events", "timer")

    def __init__(self, acked: asyncio.Future[object], events: list[Message], timer: BatchTimer):
        self.acked = acked
        self.events = events
        self.timer = timer


class InOrderAcks:
    """Acks each batch's events once Kafka acknowledged everything the batch produced and every
    earlier batch is acked; stops the worker, acking nothing more, as soon as a send fails.

    Driven by the acknowledgements themselves (done-callbacks), not by the next batch: a
    rebalance or a shutdown waits until every event taken is acked, with flow stopped.
    """

    def __init__(
        self,
        pipeline: str,
        ack_many: Callable[[list[Any]], object],
        limit: int = MAX_IN_FLIGHT,
        *,
        give_back: Callable[[list[Message]], None] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._ack_many = ack_many
        self._limit = limit
        self._give_back = give_back
        self._in_flight: deque[_InFlight] = deque()
        self._room = asyncio.Event()

    async def room(self) -> None:
        """Return once fewer than `limit` batches are in flight."""
        while len(self._in_flight) >= self._limit:
            self._room.clear()
            await self._room.wait()

    def add(self, events: list[Message], acked: Awaitable[object], timer: BatchTimer) -> None:
        """Ack `events` once `acked` completes and every batch added before them is acked."""
        future = asyncio.ensure_future(acked)
        self._in_flight.append(_InFlight(future, events, timer))
        future.add_done_callback(self._on_acked)

    def _on_acked(self, future: asyncio.Future[object]) -> None:
        if not _given_back(future):
            self._check(future)
        in_flight = self._in_flight
        while in_flight and in_flight[0].acked.done():
            batch = in_flight.popleft()
            if _given_back(batch.acked) and self._give_back is not None:
                # written later than it was handed off (`BatchingSink`'s overlap) and given
                # back: forgotten unacked, as a batch given back in hand
                self._give_back(batch.events)
                error = batch.acked.exception()
                log.warning("%s gave back %d events: %s", self._pipeline, len(batch.events), error)
                continue
            self._check(batch.acked)
            self._ack_all(batch.events)
            batch.timer.done(len(batch.events))
        self._room.set()

    def _ack_all(self, events: list[Message]) -> None:
        """`event.ack()` for each message, under one hold of faust's ack lock: the message's
        reference is dropped and, once it was the last, the consumer acks it (all such
        messages of the batch in one call)."""
        done = []
        with ack_lock:
            for message in events:
                if not message.acked:
                    message.refcount = refcount = max(message.refcount - 1, 0)
                    if not refcount:
                        done.append(message)
            if done:
                self._ack_many(done)

    def _check(self, future: asyncio.Future[object]) -> None:
        if future.cancelled():
            stop_worker(self._pipeline, asyncio.CancelledError("a send was cancelled"))
        error = future.exception()
        if error is not None:
            stop_worker(self._pipeline, error)


def _given_back(future: asyncio.Future[object]) -> bool:
    return not future.cancelled() and isinstance(future.exception(), BatchGivenBack)


async def run_batches(
    stream: faust.StreamT[bytes],
    pipeline: Stage,
    handle: Callable[[list[InboundMessage]], Awaitable[Awaitable[object]]],
    *,
    batch_size: int = BATCH_SIZE,
    within_s: float = BATCH_WITHIN_S,
    with_mapping: bool = True,
) -> None:
    """Consume `stream` in batches through `handle` until the worker stops.

    `handle` hands a batch's records to the producer and returns what completes once Kafka
    acknowledged them all; meanwhile the next batches are taken and handed off, up to
    `MAX_IN_FLIGHT`, and `InOrderAcks` acks each batch's events in order. The loop ends when
    faust stops the actor (it throws `StopAsyncIteration` into the channel when the worker stops)
    or on a cancellation with no batch in hand: any other failure, a cancellation in the middle
    of a batch too (a shutdown that timed out), stops the process at once, so no batch is acked
    ahead of its outputs and what was not acked is read again after a restart.
    """
    intake = EventIntake(stream)
    consumer: Any = stream.app.consumer  # the worker's `StrictCommitConsumer`
    acks = InOrderAcks(pipeline.name, consumer.ack_many, give_back=intake.give_back)
    metrics.track(pipeline)
    while True:
        events: list[Message] = []
        try:
            if pipeline.breaker.paused:
                await hold_while_paused(stream, pipeline.breaker)
            first = await intake.next_unless_paused(pipeline.breaker)
            if first is None:
                continue
            await intake.fill(events, batch_size, within_s, first)
            if not events:
                continue
            timer = metrics.start_batch(pipeline, with_mapping=with_mapping)
            await acks.room()
            acked = await handle([to_inbound(message) for message in events])
            timer.handed_off()
            acks.add(events, acked, timer)
        except BatchGivenBack as given_back:
            intake.give_back(events)
            log.warning("%s gave back %d events: %s", pipeline.name, len(events), given_back)
        except StopAsyncIteration:
            return  # faust stops the actor (`Actor.cancel`): what is in hand stays unacked
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and not events:
                raise  # stopped while waiting for events
            stop_worker(pipeline.name, exc)  # a batch in hand must not be acked


#: While a pipeline is paused, how often its stage pauses fetching of newly assigned partitions.
PAUSE_CHECK_S = 1.0


async def hold_while_paused(stream: faust.StreamT[bytes], breaker: Breaker) -> None:
    """Take nothing while `breaker` is tripped: the stage's input partitions stop being fetched
    (those a rebalance assigns meanwhile too), so its queue does not fill and the consumer's
    other partitions flow on; fetching resumes when the pipeline is resumed. Nothing is held
    unacked meanwhile, so rebalances and shutdowns proceed."""
    consumer = stream.app.consumer
    topics = set(getattr(stream.channel, "topics", ()))
    held: set[Any] = set()
    while breaker.paused:
        fresh = {tp for tp in consumer.assignment() if tp.topic in topics} - held
        if fresh:
            consumer.pause_partitions(fresh)
            held |= fresh
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PAUSE_CHECK_S):
                await breaker.wait_resumed()
    if held:
        consumer.resume_partitions(held & set(consumer.assignment()))


async def unless_flow_stops(
    flow_control: FlowControlEvent, work: Awaitable[T], *, grace_s: float
) -> T:
    """`work`'s result; if the flow of events stops first (a rebalance or a shutdown began: both
    wait for every event taken to be acked) and `work` is not done `grace_s` later, `work` is
    cancelled and BatchGivenBack raised, for the caller's events to be given back."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(_flow_stopped(flow_control))
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise BatchGivenBack(f"flow stopped and the batch was not done within {grace_s:g} s")
    return task.result()


async def _flow_stopped(flow_control: FlowControlEvent) -> None:
    """Return once flow is stopped: mode's FlowControlEvent sets `_suspend` then (faust stops
    the flow when partitions are revoked and at shutdown, nowhere else) and has no public way
    to wait for it."""
    await flow_control._suspend.wait()


async def run_stage(stream: faust.StreamT[bytes], pipeline: Stage) -> None:
    """Run a mapping stage: each batch through `pipeline.process`."""
    await run_batches(stream, pipeline, pipeline.process)


def stop_worker(pipeline: str, exc: BaseException) -> NoReturn:
    """Exit at once, without acking or committing anything more.

    A clean faust shutdown would commit the offsets of the batch in hand; exiting hard keeps
    them uncommitted, so the messages are processed again when the worker is restarted.
    """
    log.critical("stopping the worker: %s failed: %s: %s", pipeline, type(exc).__name__, exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_FATAL)
