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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from mode.utils.queues import FlowControlEvent

from worker.errors import WorkerError
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.batches import unless_flow_stops

__all__ = ["BatchingSink", "ItemOutcome", "SinkWriter"]

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

    async def handle(self, messages: list[InboundMessage]) -> Awaitable[object]:
        """Write `messages`; hand every outcome record and dead letter to the producer, and
        return what completes once Kafka acknowledged them all."""
        stage = self.stage
        valid: list[tuple[InboundMessage, T]] = []
        invalid: list[tuple[InboundMessage, WorkerError]] = []
        for message in messages:
            try:
                valid.append((message, self.parse(message)))
            except WorkerError as error:
                invalid.append((message, error))
        outcomes = await unless_flow_stops(
            self.flow_control,
            self.writer.write([item for _, item in valid]),
            grace_s=self.grace_s,
        )
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
