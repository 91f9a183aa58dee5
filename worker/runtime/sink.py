"""`BatchingSink`: consume a batch, write it somewhere outside Kafka, settle each item.

The loop delivery and the warehouse loader run, made reusable (quix-streams' `BatchingSink` is
the model): a stage's batch is parsed message by message (`parse` sees the whole message, so an
item may depend on the topic it came from; a `WorkerError` is that message's dead letter), the
valid items are written in one call of the `SinkWriter`, and each item's `ItemOutcome` says
what it produced (outcome records) and whether it failed for good (its dead letter). Only then
are the batch's records handed to the producer, so an offset is committed after its item is
settled and its records are on Kafka.

When a rebalance or a shutdown begins and the write is not done within `grace_s`, it is
cancelled and `BatchGivenBack` raised: nothing of the batch is written to Kafka or acked, and
the partition's next owner writes it again (at least once). A writer that pauses (a refused
key) simply does not return; the give-back bounds how long a rebalance waits for it.

With `overlap`, a batch is parsed while the previous one is still being written (the
database works on one while this process parses the next): `handle` returns once the write
has begun, and what it returns completes once the batch is written and its records are
acknowledged. Writes still run one at a time, in order; a batch whose predecessor was given
back is given back too (`InOrderAcks` then forgets its events unacked, as `run_batches` does
for a batch given back in hand), so nothing is acked past a batch that was not written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from mode.utils.queues import FlowControlEvent

from worker.errors import BatchGivenBack, WorkerError
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.batches import unless_flow_stops

__all__ = ["BatchingSink", "ItemOutcome", "SinkWriter"]

#: With `overlap`, how many messages are parsed between two turns of the event loop (so the
#: write in flight moves on while the next batch is parsed).
PARSE_TURN = 50

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What one written item produced (`records`, e.g. an outcome on a results topic) and, when
    it failed for good, its `error` (dead-lettered with `attempts`, a JSON history, if any)."""

    records: Sequence[OutboundRecord] = ()
    error: WorkerError | None = None
    attempts: str | None = None
    #: what the writer settled the item from, for `observe` (e.g. a delivery result)
    detail: object = None


class SinkWriter(Protocol[T_contra]):
    """What a sink asks of the system it writes to."""

    async def write(self, items: Sequence[T_contra]) -> Sequence[ItemOutcome]:
        """One final outcome per item, in order (retries happen inside)."""


@dataclass
class BatchingSink(Generic[T]):
    """Runs one stage's batches through `writer`; `parse` turns a message into an item."""

    stage: Stage
    parse: Callable[[InboundMessage], T]
    writer: SinkWriter[T]
    flow_control: FlowControlEvent
    grace_s: float
    #: called per written item with its message and outcome (metrics)
    observe: Callable[[InboundMessage, ItemOutcome], None] | None = None
    #: parse a batch while the previous one is written (see the module docstring)
    overlap: bool = False
    _writing: asyncio.Future[Sequence[ItemOutcome]] | None = field(default=None, repr=False)

    async def handle(self, messages: list[InboundMessage]) -> Awaitable[object]:
        """Write `messages`; hand every outcome record and dead letter to the producer, and
        return what completes once Kafka acknowledged them all."""
        if self.overlap:
            return await self._handle_overlapping(messages)
        valid, invalid = self._parsed(messages)
        outcomes = await unless_flow_stops(
            self.flow_control,
            self.writer.write([item for _, item in valid]),
            grace_s=self.grace_s,
        )
        return await self._settled(messages, valid, invalid, outcomes)

    async def drain(self) -> None:
        """Return once no write is in flight (with `overlap`; it ends, or is given back, within
        `grace_s` of the flow stopping)."""
        writing = self._writing
        if writing is not None:
            await asyncio.wait({writing})

    def _parsed(
        self, messages: Sequence[InboundMessage]
    ) -> tuple[list[tuple[InboundMessage, T]], list[tuple[InboundMessage, WorkerError]]]:
        valid: list[tuple[InboundMessage, T]] = []
        invalid: list[tuple[InboundMessage, WorkerError]] = []
        for message in messages:
            try:
                valid.append((message, self.parse(message)))
            except WorkerError as error:
                invalid.append((message, error))
        return valid, invalid

    async def _handle_overlapping(self, messages: list[InboundMessage]) -> Awaitable[object]:
        valid: list[tuple[InboundMessage, T]] = []
        invalid: list[tuple[InboundMessage, WorkerError]] = []
        for start in range(0, len(messages), PARSE_TURN):
            part_valid, part_invalid = self._parsed(messages[start : start + PARSE_TURN])
            valid += part_valid
            invalid += part_invalid
            await asyncio.sleep(0)  # the write in flight moves on
        previous = self._writing
        if previous is not None and previous.done() and not _written(previous):
            previous = None  # given back before this batch was taken: not its predecessor
        self._writing = writing = asyncio.ensure_future(
            self._write_after(previous, [item for _, item in valid])
        )
        return self._settle_when_written(writing, messages, valid, invalid)

    async def _write_after(
        self, previous: asyncio.Future[Sequence[ItemOutcome]] | None, items: list[T]
    ) -> Sequence[ItemOutcome]:
        if previous is not None:
            await asyncio.wait({previous})
            if not _written(previous):
                raise BatchGivenBack("the batch before it was not written")
        return await unless_flow_stops(
            self.flow_control, self.writer.write(items), grace_s=self.grace_s
        )

    async def _settle_when_written(
        self,
        writing: asyncio.Future[Sequence[ItemOutcome]],
        messages: list[InboundMessage],
        valid: list[tuple[InboundMessage, T]],
        invalid: list[tuple[InboundMessage, WorkerError]],
    ) -> object:
        outcomes = await writing
        return await (await self._settled(messages, valid, invalid, outcomes))

    async def _settled(
        self,
        messages: list[InboundMessage],
        valid: list[tuple[InboundMessage, T]],
        invalid: list[tuple[InboundMessage, WorkerError]],
        outcomes: Sequence[ItemOutcome],
    ) -> Awaitable[object]:
        """Hand the batch's outcome records and dead letters to the producer; what completes
        once Kafka acknowledged them."""
        stage = self.stage
        # counted only now: a batch given back is counted when it is read again
        stage.stats.consumed += len(messages)
        records: list[OutboundRecord] = []
        for message, refused in invalid:
            records.extend(stage.route_failure(message, refused))
        for (message, _), outcome in zip(valid, outcomes, strict=True):
            if self.observe is not None:
                self.observe(message, outcome)
            records.extend(outcome.records)
            if outcome.error is not None:
                records.extend(
                    stage.route_failure(message, outcome.error, attempts=outcome.attempts)
                )
            else:
                stage.breaker.record(unexpected=False)
                stage.stats.produced += 1
        return await stage.sender.send(records)


def _written(writing: asyncio.Future[Sequence[ItemOutcome]]) -> bool:
    """Whether a finished write ended written (not given back, cancelled or failed)."""
    return not writing.cancelled() and writing.exception() is None
