"""The thin faust shell around `worker.pipeline`: events in, batches processed, sends awaited."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from worker.observability import metrics
from worker.pipeline import Pipeline
from worker.placement import kafka_partitioner
from worker.records import InboundMessage, OutboundRecord

__all__ = ["EXIT_FATAL", "FaustSender", "run_batches", "run_pipeline", "stop_worker", "to_inbound"]

log = logging.getLogger(__name__)

#: Exit status of a worker stopped by a `FatalError` (EX_SOFTWARE).
EXIT_FATAL = 70

#: Messages taken per batch, and how long to wait for a batch to fill: under a backlog batches
#: fill at once; at a steady trickle the wait is added to every message's latency (20 ms gave a
#: p50 of 20 ms at 1,000 events/s, 5 ms gives about 10 ms).
BATCH_SIZE = 500
BATCH_WITHIN_S = 0.005


class FaustSender:
    """Produces raw records through the app's producer and waits for every acknowledgement.

    Records are appended to one aiokafka batch per partition and each batch is sent whole:
    `send` per record costs a future, a metadata lookup and a partitioner call each (faust's
    `Topic.send` several hundred microseconds more), for records that are already bytes.
    Partitions are chosen as the producer's partitioner would (`worker.placement`), and a
    partition's records keep their order.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send_all(self, records: Sequence[OutboundRecord]) -> None:
        if not records:
            return
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
        await asyncio.gather(*pending)


def _append(batch: BatchBuilder, record: OutboundRecord) -> bool:
    """Whether `record` fitted in `batch`."""
    return (
        batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
        is not None
    )


def to_inbound(event: Any) -> InboundMessage:
    """A faust event as a framework-free message."""
    message = event.message
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return InboundMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000),
        key=message.key,
        value=message.value if message.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in headers],
    )


async def run_batches(
    stream: faust.StreamT[bytes],
    pipeline: Pipeline,
    handle: Callable[[list[InboundMessage]], Awaitable[None]],
    *,
    batch_size: int = BATCH_SIZE,
    within_s: float = BATCH_WITHIN_S,
    with_mapping: bool = True,
) -> None:
    """Consume `stream` in batches through `handle` until the worker stops.

    faust acks a batch of `take_events` when the next one is taken, and also when the loop is
    left in any way, a cancellation included. So whatever escapes `handle`, a cancellation in the
    middle of a batch too (a shutdown that timed out), stops the process at once: the batch is
    never acked ahead of its outputs and is read again after a restart.
    """
    # take_events is on faust.Stream, which every agent gets, but not on the StreamT protocol.
    batches = stream.take_events(batch_size, within=within_s)  # type: ignore[attr-defined]
    metrics.track(pipeline)
    async for events in batches:
        try:
            batch = [to_inbound(event) for event in events]
            timer = metrics.start_batch(pipeline, with_mapping=with_mapping)
            await handle(batch)
            timer.done(len(batch))
        except BaseException as exc:  # noqa: BLE001  (the batch must not be acked: stop)
            stop_worker(pipeline.name, exc)


async def run_pipeline(stream: faust.StreamT[bytes], pipeline: Pipeline) -> None:
    """Run a mapping stage: each batch through `pipeline.process`."""
    await run_batches(stream, pipeline, pipeline.process)


def stop_worker(pipeline: str, exc: BaseException) -> None:
    """Exit at once, without acking or committing anything more.

    A clean faust shutdown would commit the offsets of the batch in hand; exiting hard keeps
    them uncommitted, so the messages are processed again when the worker is restarted.
    """
    log.critical("stopping the worker: %s failed: %s: %s", pipeline, type(exc).__name__, exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_FATAL)
