"""The session's real broker works end to end; a broker we run keeps its data across restarts."""

from __future__ import annotations

import pytest

from tests.kafkautil import (
    LocalBroker,
    committed_offsets,
    consume_all,
    create_topics,
    end_offsets,
    produce,
)

pytestmark = pytest.mark.integration


async def test_records_and_headers_round_trip(kafka_bootstrap: str, unique: str) -> None:
    topic = f"test-roundtrip-{unique}"
    await create_topics(kafka_bootstrap, [topic], partitions=3)
    sent = [
        (b"user-1", b'{"n": 1}', [("source", b"autopilot"), ("attempt", b"1")]),
        (None, b'{"n": 2}', [("source", b"segment")]),
        (b"user-1", b'{"n": 3}', [("empty", b""), ("binary", bytes(range(4)))]),
    ]

    metadata = await produce(kafka_bootstrap, topic, sent)
    received = await consume_all(kafka_bootstrap, topic, expected=3, timeout=30)

    assert len(metadata) == 3
    by_value = {record.value: record for record in received}
    assert sorted(by_value) == sorted(value for _, value, _ in sent)
    for key, value, headers in sent:
        record = by_value[value]
        assert record.key == key
        assert list(record.headers) == headers
    # Same key, same partition, in send order.
    keyed = [r for r in received if r.key == b"user-1"]
    assert len({r.partition for r in keyed}) == 1
    assert [r.value for r in sorted(keyed, key=lambda r: r.offset)] == [b'{"n": 1}', b'{"n": 3}']
    assert sum((await end_offsets(kafka_bootstrap, topic)).values()) == 3
    assert await committed_offsets(kafka_bootstrap, f"nobody-{unique}", topic) == {}


async def test_record_survives_broker_restart(local_kafka: LocalBroker, unique: str) -> None:
    topic = f"test-restart-{unique}"
    await create_topics(local_kafka.bootstrap, [topic], partitions=1)
    await produce(local_kafka.bootstrap, topic, [(b"k", b"before restart", [("h", b"v")])])

    # Called from the test's own thread on purpose: the broker is tied to the thread that
    # started it (die_with_parent), so never from asyncio.to_thread's pool.
    local_kafka.restart()

    assert local_kafka.is_running()
    received = await consume_all(local_kafka.bootstrap, topic, expected=1, timeout=60)
    assert [(r.key, r.value, list(r.headers)) for r in received] == [
        (b"k", b"before restart", [("h", b"v")])
    ]
    # The broker still takes writes after the restart.
    await produce(local_kafka.bootstrap, topic, [(None, b"after restart", [])])
    assert await end_offsets(local_kafka.bootstrap, topic) == {0: 2}
