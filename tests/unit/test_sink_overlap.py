"""A sink with `overlap` parses the next batch while one is written, writes in order, and
never lets a batch be acked past one that was given back.

The writer here is a real `SinkWriter` over an in-memory list (the sink's contract is what is
under test); the acks go through the runtime's own `InOrderAcks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from mode.utils.queues import FlowControlEvent

from tests.unit.doubles import RecordingSender
from worker.errors import ValidationError
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.batches import InOrderAcks
from worker.runtime.sink import BatchingSink, ItemOutcome


class GatedWriter:
    """Writes each batch once its gate opens; keeps what it wrote and when."""

    def __init__(self) -> None:
        self.written: list[list[bytes]] = []
        self.log: list[str] = []
        self.gates: list[asyncio.Event] = []

    async def write(self, items: Sequence[bytes]) -> list[ItemOutcome]:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.log.append(f"start {len(self.gates)}")
        await gate.wait()
        self.written.append(list(items))
        self.log.append(f"end {len(self.gates)}")
        return [ItemOutcome() for _ in items]


def parse(message: InboundMessage) -> bytes:
    if message.value.startswith(b"bad"):
        raise ValidationError("bad input")
    return message.value


def messages(values: Sequence[bytes], first_offset: int) -> list[InboundMessage]:
    return [
        InboundMessage("tracks", 0, first_offset + i, 1_700_000_000_000, None, value)
        for i, value in enumerate(values)
    ]


def _placeholder(message: InboundMessage) -> list[OutboundRecord]:
    return []


def sink_with(writer: GatedWriter, flow: FlowControlEvent) -> tuple[BatchingSink[bytes], Stage]:
    breaker = Breaker(window=10, min_messages=1, max_ratio=0.9)
    stage = Stage("warehouse", "load", _placeholder, RecordingSender(), "dlq", breaker)
    sink = BatchingSink(
        stage=stage, parse=parse, writer=writer, flow_control=flow, grace_s=0.05, overlap=True
    )
    return sink, stage


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


async def test_the_next_batch_is_parsed_while_one_is_written_and_writes_keep_their_order() -> None:
    writer = GatedWriter()
    flow = FlowControlEvent()
    flow.resume()
    sink, stage = sink_with(writer, flow)

    first = asyncio.ensure_future(await sink.handle(messages([b"a", b"bad 1"], 0)))
    await _until(lambda: len(writer.gates) == 1)
    # the second batch is taken and parsed while the first is still being written
    second = asyncio.ensure_future(await sink.handle(messages([b"b", b"c"], 2)))
    await asyncio.sleep(0.02)
    assert writer.log == ["start 1"]  # one write at a time
    assert not first.done()
    assert not second.done()

    writer.gates[0].set()
    await first
    await _until(lambda: len(writer.gates) == 2)
    writer.gates[1].set()
    await second
    assert writer.written == [[b"a"], [b"b", b"c"]]
    assert writer.log == ["start 1", "end 1", "start 2", "end 2"]
    assert stage.stats.consumed == 4
    sent = stage.sender.sent  # type: ignore[attr-defined]
    assert [r.value for r in sent] == [b"bad 1"]  # the invalid message's dead letter
    await sink.drain()


class _Timer:
    def __init__(self) -> None:
        self.done_with = 0

    def done(self, events: int) -> None:
        self.done_with += events


def _events(count: int) -> list[Any]:
    return [SimpleNamespace(acked=False, refcount=1) for _ in range(count)]


async def test_a_batch_written_after_one_given_back_is_given_back_and_none_is_acked() -> None:
    writer = GatedWriter()
    flow = FlowControlEvent()
    flow.resume()
    sink, stage = sink_with(writer, flow)
    acked: list[Any] = []
    given_back: list[Any] = []
    acks = InOrderAcks("warehouse", acked.extend, give_back=given_back.extend)
    timer: Any = _Timer()

    first_events, second_events = _events(2), _events(2)
    acks.add(first_events, await sink.handle(messages([b"a", b"b"], 0)), timer)
    await _until(lambda: len(writer.gates) == 1)
    acks.add(second_events, await sink.handle(messages([b"c", b"d"], 2)), timer)

    flow.suspend()  # a rebalance begins; the first write does not end within the grace
    await _until(lambda: len(given_back) == 4)
    assert given_back == first_events + second_events
    assert acked == []
    assert writer.written == []
    assert stage.stats.consumed == 0  # counted when read again
    assert timer.done_with == 0

    # after the rebalance a new batch is written and acked as usual
    flow.resume()
    third_events = _events(1)
    acks.add(third_events, await sink.handle(messages([b"e"], 4)), timer)
    await _until(lambda: len(writer.gates) == 2)
    writer.gates[1].set()
    await _until(lambda: acked == third_events)
    assert writer.written == [[b"e"]]
    assert timer.done_with == 1
    await sink.drain()
