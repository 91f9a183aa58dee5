"""The faust shell's loop: batches handed off while earlier ones' acks wait, acked in order."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable
from typing import Any

import pytest
from faust.events import Event
from faust.types.tuples import TP, ConsumerMessage, Message
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from worker.errors import BatchGivenBack, ConfigurationError
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage
from worker.pipeline.stage import Stage
from worker.runtime import batches as streaming
from worker.runtime.batches import MAX_IN_FLIGHT, EventIntake, run_batches, unless_flow_stops

TOPIC = "in"


class Consumer:
    """What the loop touches of faust's consumer: the messages it tracks, `ack` and
    `ack_many`, and the partitions it fetches (paused while the pipeline is)."""

    def __init__(self) -> None:
        self.unacked: set[Message] = set()
        self.acked: list[int] = []
        self.assigned: set[TP] = {TP(TOPIC, 0), TP(TOPIC, 1), TP("other", 0)}
        self.paused: set[TP] = set()

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def pause_partitions(self, tps: set[TP]) -> None:
        self.paused |= tps

    def resume_partitions(self, tps: set[TP]) -> None:
        self.paused -= tps

    def ack(self, message: Message) -> bool:
        message.acked = True
        self.unacked.discard(message)
        self.acked.append(message.offset)
        return True

    def ack_many(self, messages: list[Message]) -> None:
        for message in messages:
            self.ack(message)


class Stopped(Exception):
    """Raised by the stand-in for `stop_worker`, which exits the process."""


@pytest.fixture(autouse=True)
def stops(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """What stopped the worker (each test's loop is left in the middle of batches)."""
    stopped: list[BaseException] = []

    def stop_worker(pipeline: str, exc: BaseException) -> None:
        stopped.append(exc)
        raise Stopped(pipeline)

    monkeypatch.setattr(streaming, "stop_worker", stop_worker)
    return stopped


class AgentStream:
    """An agent's stream as faust builds it (its channel's queue, under the app's flow control),
    on a stand-in consumer; `handle` hands each batch off with a future the test completes."""

    def __init__(self) -> None:
        self.consumer = Consumer()
        self.flow_control = FlowControlEvent()
        self.app = types.SimpleNamespace(
            consumer=self.consumer,
            flow_control=self.flow_control,
            topics=types.SimpleNamespace(acking_topics={TOPIC}),
            consumer_generation_id=1,
        )
        self.queue: ThrowableQueue[Message | Event] = ThrowableQueue(
            maxsize=1000, flow_control=self.flow_control, clear_on_resume=True
        )
        self.flow_control.resume()  # as the app does once partitions are assigned
        self.stream: Any = types.SimpleNamespace(
            app=self.app, channel=types.SimpleNamespace(queue=self.queue, topics=(TOPIC,))
        )
        self.messages: list[Message] = []
        self.batches: list[list[int]] = []
        self.sends: list[asyncio.Future[object]] = []
        self.offset = 0

    def put(self, count: int, *, generation_id: int = 1, channels: int = 1) -> None:
        for _ in range(count):
            message = ConsumerMessage(TOPIC, 0, self.offset, 1.0, 0, [], b"k", b"v", None)
            message.generation_id = generation_id
            message.incref(channels)  # as the conductor does, once per channel
            self.messages.append(message)
            if channels == 1:
                self.queue.put_nowait(message)  # as the raw hand-off queues it
            else:  # faust's own handler, for a partition several channels read: an event each
                self.queue.put_nowait(Event(self.app, b"k", b"v", [], message))  # type: ignore[arg-type]
            self.offset += 1

    async def handle(self, batch: list[InboundMessage]) -> Awaitable[object]:
        self.batches.append([message.offset for message in batch])
        sent: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.sends.append(sent)
        return sent

    def run(self, *, batch_size: int = 2, stage: Stage | None = None) -> asyncio.Task[None]:
        return asyncio.ensure_future(
            run_batches(
                self.stream,
                stage or pipeline(),
                self.handle,
                batch_size=batch_size,
                within_s=0.001,
            )
        )


def pipeline() -> Stage:
    breaker = Breaker(window=10, min_messages=10, max_ratio=0.5)
    return Stage("p", "s", lambda message: [], Sink(), "dlq", breaker)


class Sink:
    async def send(self, records: Any) -> Any:
        raise AssertionError("the tests' stages hand off through AgentStream.handle")


async def settle() -> None:
    """Let the loop run until it waits on something only the test can give."""
    for _ in range(5):
        await asyncio.sleep(0.005)


@pytest.fixture
def stage() -> AgentStream:
    return AgentStream()


def sent(stage: AgentStream, index: int, error: BaseException | None = None) -> None:
    if error is None:
        stage.sends[index].set_result(None)
    else:
        stage.sends[index].set_exception(error)


async def test_the_next_batches_are_handed_off_while_the_first_one_s_acks_wait(
    stage: AgentStream,
) -> None:
    stage.put(2 * (MAX_IN_FLIGHT + 2))
    task = stage.run()
    await settle()
    assert len(stage.batches) == MAX_IN_FLIGHT  # no more until one is acked
    assert stage.consumer.acked == []

    sent(stage, 0)
    await settle()

    assert stage.consumer.acked == [0, 1]
    assert len(stage.batches) == MAX_IN_FLIGHT + 1
    task.cancel()


async def test_a_message_another_channel_also_reads_is_acked_once_both_are_done(
    stage: AgentStream,
) -> None:
    stage.put(2, channels=2)
    task = stage.run()
    await settle()
    assert stage.batches == [[0, 1]]

    sent(stage, 0)
    await settle()

    assert stage.consumer.acked == []  # this stage is done with them; the other is not
    assert [message.refcount for message in stage.messages] == [1, 1]
    for message in stage.messages:
        message.ack(stage.consumer)  # type: ignore[arg-type]  # the other channel's stream
    assert stage.consumer.acked == [0, 1]
    task.cancel()


async def test_a_batch_acked_by_kafka_first_waits_for_the_batches_before_it(
    stage: AgentStream,
) -> None:
    stage.put(6)
    task = stage.run()
    await settle()
    assert stage.batches == [[0, 1], [2, 3], [4, 5]]

    sent(stage, 2)
    sent(stage, 1)
    await settle()
    assert stage.consumer.acked == []

    sent(stage, 0)
    await settle()
    assert stage.consumer.acked == [0, 1, 2, 3, 4, 5]
    assert stage.consumer.unacked == set()
    task.cancel()


async def test_acks_come_from_the_sends_completing_with_no_event_arriving(
    stage: AgentStream,
) -> None:
    """A rebalance stops the flow of events and waits for every tracked one to be acked: the
    acks must not wait for a next batch."""
    stage.put(1)
    task = stage.run()
    await settle()
    assert len(stage.consumer.unacked) == 1  # tracked when taken: a rebalance waits for it
    stage.flow_control.suspend()

    sent(stage, 0)
    await settle()

    assert stage.consumer.acked == [0]
    assert stage.consumer.unacked == set()
    task.cancel()


@pytest.mark.parametrize("failing", [0, 1])
async def test_a_failed_send_stops_the_worker_and_acks_neither_it_nor_what_follows(
    stage: AgentStream, stops: list[BaseException], failing: int
) -> None:
    stage.put(6)
    task = stage.run()
    await settle()
    error = RuntimeError("KafkaTimeoutError")

    sent(stage, 2)
    sent(stage, failing, error)  # at once: batch 2's callback runs first and finds it done
    await settle()

    assert stops[0] is error  # the process exits there
    assert stage.consumer.acked == []
    task.cancel()


async def test_a_failure_in_the_hand_off_stops_the_worker_before_any_ack(
    stage: AgentStream, stops: list[BaseException]
) -> None:
    async def handle(batch: list[InboundMessage]) -> Awaitable[object]:
        raise ConfigurationError("the settings cannot work")

    stage.put(2)
    task = asyncio.ensure_future(run_batches(stage.stream, pipeline(), handle, within_s=0.001))
    await settle()

    assert [type(exc) for exc in stops] == [ConfigurationError]
    assert stage.consumer.acked == []
    assert isinstance(task.exception(), Stopped)


async def test_a_cancellation_stops_the_worker_only_with_a_batch_in_hand(
    stage: AgentStream, stops: list[BaseException]
) -> None:
    idle = stage.run()
    await settle()
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle
    assert stops == []

    stage.put(2 * (MAX_IN_FLIGHT + 1))
    busy = stage.run()
    await settle()  # the last batch waits for room
    busy.cancel()
    await settle()
    assert [type(exc) for exc in stops] == [asyncio.CancelledError]
    assert stage.consumer.acked == []


async def test_the_loop_ends_when_faust_stops_the_actor(
    stage: AgentStream, stops: list[BaseException]
) -> None:
    """At a clean shutdown faust throws StopAsyncIteration into each agent's channel."""
    stage.put(2)
    task = stage.run()
    await settle()
    stage.queue._throw(StopAsyncIteration())
    sent(stage, 0)

    await asyncio.wait_for(task, 1)

    assert stops == []
    assert stage.consumer.acked == [0, 1]  # what was in flight is still acked


async def test_events_of_an_earlier_generation_or_taken_while_flow_is_stopped_are_dropped(
    stage: AgentStream,
) -> None:
    intake = EventIntake(stage.stream)
    stage.put(2, generation_id=0)
    stage.put(1)
    events: list[Any] = []
    await intake.fill(events, 10, 0.001)
    assert [message.offset for message in events] == [2]
    assert {m.offset for m in stage.consumer.unacked} == {2}

    stage.put(1)
    stage.flow_control.suspend()
    dropped: list[Any] = []
    await intake.fill(dropped, 10, 0.001)
    assert dropped == []
    assert {m.offset for m in stage.consumer.unacked} == {2}
    assert stage.consumer.acked == []


async def test_a_batch_takes_what_is_there_then_waits_a_little_for_more(stage: AgentStream) -> None:
    intake = EventIntake(stage.stream)
    stage.put(3)
    full: list[Any] = []
    await intake.fill(full, 2, 10.0)  # full at once: no wait
    assert [message.offset for message in full] == [0, 1]

    async def later() -> None:
        await asyncio.sleep(0.01)
        stage.put(1)

    trickle: list[Any] = []
    arrival = asyncio.ensure_future(later())
    await intake.fill(trickle, 10, 0.2)
    await arrival
    assert [message.offset for message in trickle] == [2, 3]


class SlowWork:
    """A batch's delivery that finishes when the test says, and knows if it was cancelled."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()
        self.cancelled = False

    async def run(self) -> str:
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "delivered"


async def test_work_that_ends_while_flow_runs_is_not_disturbed(stage: AgentStream) -> None:
    work = SlowWork()
    result = asyncio.ensure_future(unless_flow_stops(stage.flow_control, work.run(), grace_s=0.05))
    await settle()
    work.finish.set()
    assert await result == "delivered"


async def test_work_that_ends_within_the_grace_after_flow_stops_keeps_its_result(
    stage: AgentStream,
) -> None:
    work = SlowWork()
    result = asyncio.ensure_future(unless_flow_stops(stage.flow_control, work.run(), grace_s=5))
    await settle()
    stage.flow_control.suspend()
    await settle()
    work.finish.set()
    assert await asyncio.wait_for(result, 1) == "delivered"
    assert not work.cancelled


async def test_work_still_running_a_grace_after_flow_stops_is_cancelled_and_given_back(
    stage: AgentStream,
) -> None:
    work = SlowWork()
    result = asyncio.ensure_future(unless_flow_stops(stage.flow_control, work.run(), grace_s=0.05))
    await settle()
    assert not result.done()
    stage.flow_control.suspend()
    with pytest.raises(BatchGivenBack):
        await asyncio.wait_for(result, 1)
    assert work.cancelled


async def test_a_batch_given_back_is_neither_acked_nor_waited_for_and_the_loop_goes_on(
    stage: AgentStream, stops: list[BaseException]
) -> None:
    async def handle(batch: list[InboundMessage]) -> Awaitable[object]:
        if batch[0].offset == 0:
            raise BatchGivenBack("flow stopped")
        return await stage.handle(batch)

    stage.put(2)
    task = asyncio.ensure_future(
        run_batches(stage.stream, pipeline(), handle, batch_size=2, within_s=0.001)
    )
    await settle()
    assert stage.consumer.unacked == set()  # a rebalance or a shutdown no longer waits for them
    assert stage.consumer.acked == []  # nor are they committed: they are read again

    stage.put(2)  # after the rebalance
    await settle()
    sent(stage, 0)
    await settle()
    assert stage.batches == [[2, 3]]
    assert stage.consumer.acked == [2, 3]
    assert stops == []
    task.cancel()


async def test_a_paused_pipeline_takes_nothing_and_stops_fetching_its_input_until_resumed(
    stage: AgentStream, stops: list[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "PAUSE_CHECK_S", 0.01)
    p = pipeline()
    stage.put(2)
    task = stage.run(stage=p)
    await settle()
    assert stage.batches == [[0, 1]]
    sent(stage, 0)
    for _ in range(10):  # its own code failed: the breaker trips (one line, no exit)
        p.breaker.record(unexpected=True)
    stage.put(2)
    stage.consumer.assigned.add(TP(TOPIC, 2))  # a rebalance while paused: paused too
    await settle()
    assert stage.batches == [[0, 1]]  # nothing more taken
    assert stage.consumer.paused == {TP(TOPIC, 0), TP(TOPIC, 1), TP(TOPIC, 2)}  # not "other"
    assert stops == []
    assert p.breaker.resume()
    await settle()
    assert stage.batches == [[0, 1], [2, 3]]
    assert stage.consumer.paused == set()
    task.cancel()
