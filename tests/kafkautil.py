"""Small async helpers for tests that talk to a real Kafka broker.

Each helper opens its own client and closes it before returning, so a test never leaks
connections into the next one. Topic and group names should carry the ``unique`` fixture's
suffix: the broker is shared by the whole session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

__all__ = [
    "Headers",
    "LocalBroker",
    "Record",
    "committed_offsets",
    "consume_all",
    "create_topics",
    "end_offsets",
    "produce",
    "wait_until_read",
]

Headers = list[tuple[str, bytes]]
Record = tuple[bytes | None, bytes, Headers]
"""(key, value, headers) as handed to :func:`produce`."""

TOPIC_ALREADY_EXISTS = 36


class LocalBroker(Protocol):
    """What tests may do with a broker this session started itself (see localkafka.LocalKafka)."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...

    def start(self) -> None: ...

    def stop(self, grace: float = ...) -> None: ...

    def restart(self) -> None: ...

    def is_running(self) -> bool: ...


async def create_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int = 3,
    *,
    wait_s: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Create ``names`` (replication factor 1) and wait until every partition has a leader.

    A topic that already exists is fine; any other error raises ``RuntimeError``. ``security``
    as for :func:`produce`.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="tests-admin", **(security or {})
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
            timeout_ms=int(wait_s * 1000),
        )
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 else ""
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {topic!r} failed: error {code} {message}")
        deadline = time.monotonic() + wait_s
        while True:
            described = await admin.describe_topics(list(names))
            if _all_led(described, names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {list(names)} have no leaders after {wait_s}s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def _all_led(described: list[dict[str, Any]], names: Sequence[str]) -> bool:
    ready: set[str] = set()
    for topic in described:
        parts = topic.get("partitions")
        if topic.get("error_code") == 0 and parts and all(p["leader"] >= 0 for p in parts):
            ready.add(topic["topic"])
    return all(name in ready for name in names)


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    *,
    partition: int | None = None,
    security: Mapping[str, Any] | None = None,
) -> list[RecordMetadata]:
    """Send ``records`` in order with acks=all and return once every one is acknowledged.

    ``security``: more client arguments (``security_protocol``, ``ssl_context``, ``sasl_*``) for
    a secured listener at ``bootstrap``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", client_id="tests-producer", **(security or {})
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, value=value, key=key, headers=list(headers), partition=partition
            )
            for key, value, headers in records
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    # A collection deadline (return what arrived), not a cancellation: asyncio.timeout won't do.
    timeout: float = 30.0,  # noqa: ASYNC109
    *,
    security: Mapping[str, Any] | None = None,
) -> list[ConsumerRecord]:
    """Read ``topic`` from the earliest offset without a group (nothing is committed).

    Returns as soon as ``expected`` records have arrived, or whatever arrived when ``timeout``
    seconds have passed (the caller asserts on the count). Records are in arrival order, which
    is offset order within a partition. ``security`` as for :func:`produce`.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id="tests-consumer",
        **(security or {}),
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def committed_offsets(
    bootstrap: str, group: str, topic: str, *, wait_s: float = 30.0
) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic``, by partition (uncommitted ones absent).

    Retries while the group coordinator is not available yet: a fresh broker creates
    ``__consumer_offsets`` on the first coordinator lookup and answers "not available" until then.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    await admin.start()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                break
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


async def wait_until_read(bootstrap: str, group: str, topic: str, *, timeout_s: float = 60) -> None:
    """Wait until ``group`` has committed every partition of ``topic`` up to its end."""
    ends = await end_offsets(bootstrap, topic)
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(bootstrap, group, topic)
        if all(committed.get(p, 0) >= end for p, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} not read to its end by {group}: {committed} < {ends}")
        await asyncio.sleep(0.5)


async def end_offsets(
    bootstrap: str, topic: str, *, security: Mapping[str, Any] | None = None
) -> dict[int, int]:
    """The log-end offset of every partition of ``topic`` (the offset the next record gets);
    ``security`` as for :func:`produce`."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="tests-admin", **(security or {})
    )
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [
        p["partition"] for t in described if t.get("topic") == topic for p in t["partitions"]
    ]
    if not partitions:
        raise RuntimeError(f"topic {topic!r} does not exist")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="tests-offsets", **(security or {})
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}
