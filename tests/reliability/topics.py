"""Reading whole topics and watching a consumer group, for the reliability suite.

`tests.kafkautil.consume_all` waits for an expected count; the suite instead needs "everything
on the topic now" (hundreds of thousands of records), so `read_topic` reads each partition up to
the end offset it finds when it starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

__all__ = ["group_lag", "list_topics", "read_topic", "topic_sizes", "wait_caught_up"]

#: Large enough that a 1 MB record never stalls a fetch.
FETCH_BYTES = 8 * 1024 * 1024


async def _partitions(bootstrap: str, *topics: str) -> list[TopicPartition]:
    """Every partition of `topics`; raises `RuntimeError` when one does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="reliability-admin")
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    tps = [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t.get("topic") in topics and t.get("error_code") == 0
        for p in t["partitions"]
    ]
    missing = set(topics) - {tp.topic for tp in tps}
    if missing:
        raise RuntimeError(f"topics {sorted(missing)} do not exist")
    return sorted(tps)


async def list_topics(bootstrap: str) -> list[str]:
    """Every topic on the broker, internal ones (`__consumer_offsets`) included."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="reliability-admin")
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def read_topic(
    bootstrap: str,
    topic: str,
    # A collection deadline, not a cancellation: asyncio.timeout would lose what was read.
    timeout: float = 300.0,  # noqa: ASYNC109
) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning to the end offsets found at the start.

    Raises `TimeoutError` when the end is not reached within `timeout` seconds.
    """
    tps = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="reliability-reader",
        fetch_max_bytes=FETCH_BYTES,
        max_partition_fetch_bytes=FETCH_BYTES,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: {sorted(map(str, pending))} not at the end")
            batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=10_000)
            for tp, batch in batches.items():
                records.extend(r for r in batch if r.offset < ends[tp])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return records


async def topic_sizes(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """The sum of the end offsets of each topic (records ever written, for progress)."""
    tps = await _partitions(bootstrap, *topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="reliability-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    sizes = dict.fromkeys(topics, 0)
    for tp, end in ends.items():
        sizes[tp.topic] += end
    return sizes


async def group_lag(bootstrap: str, group: str, topics: Sequence[str]) -> dict[str, int]:
    """Per topic: records not yet covered by `group`'s committed offsets (all when none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="reliability-admin")
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    tps = await _partitions(bootstrap, *topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="reliability-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    lag = dict.fromkeys(topics, 0)
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[tp.topic] += max(0, end - done)
    return lag


async def wait_caught_up(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    # A deadline for the wait, reported by the caller: not a cancellation.
    timeout: float,  # noqa: ASYNC109
    *,
    stable_s: float = 3.0,
    stall_s: float = 60.0,
) -> dict[str, int]:
    """Wait until `group` has committed every record of `topics` and stayed so `stable_s`.

    Returns the last lag seen (all zeros when caught up; the caller asserts), early when the
    lag has not moved for `stall_s`. Errors of a broker that is restarting are retried.
    """
    deadline = time.monotonic() + timeout
    lag: dict[str, int] = dict.fromkeys(topics, -1)
    zero_since: float | None = None
    unchanged_since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            new_lag = await group_lag(bootstrap, group, topics)
        except (KafkaError, OSError, RuntimeError):
            zero_since = None
            await asyncio.sleep(1.0)
            continue
        if new_lag != lag:
            unchanged_since = time.monotonic()
        lag = new_lag
        if any(lag.values()):
            zero_since = None
            if time.monotonic() - unchanged_since > stall_s:
                return lag
        elif zero_since is None:
            zero_since = time.monotonic()
        elif time.monotonic() - zero_since >= stable_s:
            return lag
        await asyncio.sleep(0.5)
    return lag
