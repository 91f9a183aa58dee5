"""Reading the dead-letter topic: every letter up to given end offsets, or the letters at given
references. Each read has a throwaway consumer of its own: no consumer group, nothing committed.
Every client connects as the worker does (the `KAFKA_*` security settings,
`kafka_client_config`); waiting for Kafka is the caller's (`dlq` waits once at start,
`wait_for_kafka`).

`python -m worker dlq` reads with these, and so does the console (`worker.console`): its
replay button reads the selected letters with `read_refs`, as `dlq replay PARTITION@OFFSET`
does, and its search of the whole topic with `read_all`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from worker.pipeline.letters import DeadLetter, LetterRef
from worker.runtime.kafka_connection import kafka_client_config
from worker.settings import Settings

__all__ = [
    "IDLE_TIMEOUT_S",
    "DeadLetterTopicError",
    "end_offsets",
    "letter_of",
    "partitions_of",
    "read_all",
    "read_refs",
]

#: How long a read may go without any progress before it gives up.
IDLE_TIMEOUT_S = 30.0


class DeadLetterTopicError(Exception):
    """A reason a read cannot do what was asked (the `dlq` command prints it, exit status 1)."""


def letter_of(record: Any) -> DeadLetter:
    return DeadLetter(
        ref=LetterRef(record.partition, record.offset),
        timestamp_ms=int(record.timestamp or 0),
        key=record.key,
        value=record.value if record.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in record.headers or ()],
    )


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_client_config(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"{settings.worker_app_id}-dlq",
    )


async def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`; DeadLetterTopicError when the topic does not exist."""
    admin = _admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(
        part["partition"]
        for entry in described
        if entry.get("topic") == topic and entry.get("error_code") == 0
        for part in entry.get("partitions", ())
    )
    if not found:
        raise DeadLetterTopicError(
            f"topic {topic!r} does not exist (run `python -m worker topics`)"
        )
    return [TopicPartition(topic, partition) for partition in found]


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **kafka_client_config(settings),
        client_id=f"{settings.worker_app_id}-dlq",
    )


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The dead-letter topic's end offsets now: where reads that must see the same letters stop."""
    tps = await partitions_of(settings, settings.topic_dead_letters)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return ends


async def read_all(
    settings: Settings,
    *,
    written_since: datetime | None = None,
    upto: Mapping[TopicPartition, int] | None = None,
) -> AsyncIterator[DeadLetter]:
    """Every dead letter, partition by partition interleaved, up to the end offsets `upto` (those
    at start when None); with `written_since`, only those written then or later (by their record
    timestamps)."""
    tps = (
        list(upto)
        if upto is not None
        else await partitions_of(settings, settings.topic_dead_letters)
    )
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = dict(upto) if upto is not None else await consumer.end_offsets(tps)
        if written_since is None:
            await consumer.seek_to_beginning(*tps)
        else:
            millis = int(written_since.timestamp() * 1000)
            starts = await consumer.offsets_for_times(dict.fromkeys(tps, millis))
            for tp in tps:
                start = starts.get(tp)
                consumer.seek(tp, ends[tp] if start is None else start.offset)
        remaining = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
        last_progress = time.monotonic()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield letter_of(record)
            if batches:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > IDLE_TIMEOUT_S:
                raise DeadLetterTopicError(
                    f"no progress reading {settings.topic_dead_letters} for {IDLE_TIMEOUT_S:.0f} s"
                )
            remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()


async def read_refs(settings: Settings, refs: Sequence[LetterRef]) -> list[DeadLetter]:
    """The dead letters at `refs`, in the order given; DeadLetterTopicError if one is not there."""
    tps = {tp.partition: tp for tp in await partitions_of(settings, settings.topic_dead_letters)}
    missing = sorted({ref.partition for ref in refs} - set(tps))
    if missing:
        raise DeadLetterTopicError(f"{settings.topic_dead_letters} has no partition {missing[0]}")
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign(list(tps.values()))
        letters = []
        for ref in refs:
            tp = tps[ref.partition]
            end = (await consumer.end_offsets([tp]))[tp]
            if ref.offset >= end:
                raise DeadLetterTopicError(
                    f"no dead letter at {ref} (partition {ref.partition} ends at {end})"
                )
            consumer.seek(tp, ref.offset)
            letters.append(await _fetch_one(consumer, tp, ref, end))
        return letters
    finally:
        await consumer.stop()


async def _fetch_one(
    consumer: AIOKafkaConsumer, tp: TopicPartition, ref: LetterRef, end: int
) -> DeadLetter:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        batches = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        for record in batches.get(tp, []):
            if record.offset == ref.offset:
                return letter_of(record)
            raise DeadLetterTopicError(f"no dead letter at {ref} (removed by retention?)")
        if await consumer.position(tp) >= end:
            break
    raise DeadLetterTopicError(f"no dead letter at {ref}")
