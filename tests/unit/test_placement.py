"""`worker.placement`: which records are already on the partition their re-keyed copy needs."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from worker.placement import Placement, home_partition, kafka_partitioner, murmur2
from worker.records import InboundMessage

PARTITIONS = 3


def message(topic: str, partition: int) -> InboundMessage:
    return InboundMessage(
        topic=topic, partition=partition, offset=0, timestamp_ms=0, key=None, value=b"{}"
    )


def test_murmur2_hashes_as_aiokafkas_on_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [b"", b"\xff" * 7, b"thomas@tankengine.com", "zoë@exämple.org".encode()]
    keys += [rng.randbytes(rng.randrange(64)) for _ in range(20_000)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_the_home_partition_is_the_one_kafkas_default_partitioner_picks() -> None:
    every = list(range(PARTITIONS))
    for n in range(200):
        key = f"user{n}@example.com".encode()
        assert home_partition(key, PARTITIONS) == DefaultPartitioner()(key, every, every)


def test_the_producers_partitioner_chooses_as_kafkas_default() -> None:
    every = list(range(6))
    for n in range(200):
        key = f"u-{n}".encode()
        assert kafka_partitioner(key, every, every[:2]) == DefaultPartitioner()(key, every, every)
    assert kafka_partitioner(None, every, [4]) == 4  # no key: one of the available partitions


def test_a_record_on_its_keys_partition_is_at_home() -> None:
    placement = Placement({"in": PARTITIONS, "internal": PARTITIONS}.get)
    key = b"thomas@tankengine.com"
    home = home_partition(key, PARTITIONS)

    assert placement.at_home(message("in", home), key, "internal")
    assert not placement.at_home(message("in", (home + 1) % PARTITIONS), key, "internal")


def test_nothing_is_at_home_when_the_partition_counts_differ_or_are_unknown() -> None:
    key = b"thomas@tankengine.com"
    home = home_partition(key, PARTITIONS)

    assert not Placement({"in": 6, "internal": PARTITIONS}.get).at_home(
        message("in", home), key, "internal"
    )
    unknown: dict[str, int] = {}
    assert not Placement(unknown.get).at_home(message("in", home), key, "internal")
