"""The worker's consumer fetches faust messages made at once, the same as faust makes them from
aiokafka's records; every other consumer still gets aiokafka's records."""

from __future__ import annotations

import types
from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types.tuples import ConsumerMessage, Message

from worker.runtime import lean_records
from worker.runtime.app import create_app
from worker.settings import Settings

TOPIC_PARTITION = TopicPartition("segment-calls", 3)


def _batch() -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (b"u-1", b'{"type":"identify"}', [("trace-id", b"abc"), ("x", b"")]),
        (None, b"{oops", []),
        (b"u-2", None, [("only", b"header")]),
    ]
    for offset, (key, value, headers) in enumerate(rows):
        builder.append(
            offset, timestamp=1_764_000_000_123 + offset, key=key, value=value, headers=headers
        )
    return bytes(builder.build())


def _fetched(deserializer: Any) -> list[Any]:
    records = PartitionRecords(
        TOPIC_PARTITION, MemoryRecords(_batch()), [], 0, None, deserializer, False, 0
    )
    return list(records)


def _fields(message: Message) -> dict[str, Any]:
    return {
        name: getattr(message, name)
        for name in Message.__slots__
        if name not in {"__weakref__", "span"}
    }


def test_a_marked_consumers_records_are_the_messages_faust_makes_of_aiokafkas() -> None:
    assert lean_records.install()
    faust_consumer: Any = types.SimpleNamespace(app=types.SimpleNamespace(consumer_generation_id=7))
    to_message = aiokafka_driver.Consumer._to_message
    made_by_faust = [to_message(faust_consumer, TOPIC_PARTITION, r) for r in _fetched(None)]
    made_at_once = _fetched(lean_records.as_faust_message)
    assert [type(m) for m in made_at_once] == [ConsumerMessage] * 3
    for message in made_at_once:
        message.generation_id = 7  # what the consumer's `_to_message` adds, as faust's does
    assert [_fields(m) for m in made_at_once] == [_fields(m) for m in made_by_faust]
    assert made_at_once[0].headers == (("trace-id", b"abc"), ("x", b""))
    assert made_at_once[2].serialized_value_size == -1


def test_every_other_consumer_still_gets_aiokafkas_records() -> None:
    assert lean_records.install()
    assert lean_records.install()  # again: still wrapped once
    wrapped: Any = PartitionRecords._consumer_record
    assert not hasattr(wrapped.__wrapped__, "__wrapped__")
    records = _fetched(None)
    assert [type(r) for r in records] == [ConsumerRecord] * 3
    assert [(r.offset, r.key, r.timestamp) for r in records] == [
        (0, b"u-1", 1_764_000_000_123),
        (1, None, 1_764_000_000_124),
        (2, b"u-2", 1_764_000_000_125),
    ]


async def test_the_workers_consumer_is_marked_and_takes_either_kind() -> None:
    app = create_app(Settings())
    consumer: Any = app.consumer
    client = consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    assert client._value_deserializer is lean_records.as_faust_message
    made_at_once = _fetched(lean_records.as_faust_message)[0]
    assert consumer._to_message(TOPIC_PARTITION, made_at_once) is made_at_once
    assert made_at_once.generation_id == app.consumer_generation_id
    record = _fetched(None)[0]
    as_faust_does = consumer._to_message(TOPIC_PARTITION, record)
    assert _fields(as_faust_does) == _fields(made_at_once)
    await client.stop()
