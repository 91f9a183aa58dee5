"""`worker.runtime.placement`: which records already sit on the partition their re-keyed copy
needs."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from worker.pipeline.records import InboundMessage
from worker.runtime import placement as placement_module
from worker.runtime.placement import (
    Placement,
    home_partition,
    kafka_partitioner,
    python_home_partition,
    python_murmur2,
)

try:
    import autopilot_native
except ImportError:
    autopilot_native = None  # type: ignore[assignment]

PARTITIONS = 3

# Kafka's own vectors (`UtilsTest.testMurmur2`), as Java's signed ints.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def native_murmur2(key: bytes) -> int:
    """The compiled hash (home_partition's), looked up when called: without native/ the test
    that it is built fails, and these with it."""
    hashed: int = autopilot_native.murmur2(key)
    return hashed


def message(topic: str, partition: int) -> InboundMessage:
    return InboundMessage(
        topic=topic, partition=partition, offset=0, timestamp_ms=0, key=None, value=b"{}"
    )


def random_keys() -> list[bytes]:
    """Edge keys, then random ones of every length 0..64 (so of every remainder mod 4)."""
    rng = random.Random(7)
    keys = [b"", b"\x00" * 5, b"\xff" * 7, b"thomas@tankengine.com", "zoë@exämple.org".encode()]
    keys += [rng.randbytes(n % 65) for n in range(20_000)]
    return keys


def test_the_native_module_is_built_and_used() -> None:
    assert autopilot_native is not None, "the native module is built by `make install`"
    assert placement_module.home_partition is autopilot_native.home_partition


def test_without_the_native_module_the_python_functions_serve() -> None:
    check = (
        "import sys; sys.modules['autopilot_native'] = None\n"  # so that importing it fails
        "from worker.runtime import placement as p\n"
        "assert p.home_partition is p.python_home_partition\n"
        "assert p.kafka_partitioner(b'foobar', range(50), []) == 16\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


@pytest.mark.parametrize("hash_", [python_murmur2, native_murmur2], ids=["python", "native"])
def test_murmur2_answers_kafkas_own_vectors(hash_: Callable[[bytes], int]) -> None:
    for key, java_int in KAFKA_VECTORS.items():
        assert hash_(key) == java_int & 0xFFFFFFFF, key


@pytest.mark.parametrize("hash_", [python_murmur2, native_murmur2], ids=["python", "native"])
def test_murmur2_hashes_as_aiokafkas_on_every_length_and_byte(
    hash_: Callable[[bytes], int],
) -> None:
    for key in random_keys():
        assert hash_(key) == aiokafka_murmur2(key), key


@pytest.mark.parametrize("place", [python_home_partition, home_partition], ids=["python", "native"])
def test_the_home_partition_is_aiokafkas_for_any_partition_count(
    place: Callable[[bytes, int], int],
) -> None:
    for partitions in (1, 2, 3, 6, 12, 100, 2**31 - 1):
        every = list(range(partitions)) if partitions <= 100 else None
        for key in random_keys()[:2_000]:
            expected = (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
            assert place(key, partitions) == expected, (key, partitions)
            if every is not None:
                assert DefaultPartitioner()(key, every, every) == expected


@pytest.mark.parametrize("place", [python_home_partition, home_partition], ids=["python", "native"])
@pytest.mark.parametrize("partitions", [0, -1])
def test_a_partition_count_must_be_positive(
    place: Callable[[bytes, int], int], partitions: int
) -> None:
    with pytest.raises(ValueError, match="partitions must be positive"):
        place(b"thomas@tankengine.com", partitions)


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


def test_partition_counts_are_asked_once_an_assignment_and_again_after_a_rebalance() -> None:
    counts = {"in": PARTITIONS, "internal": PARTITIONS}
    asked: list[str] = []

    def partitions_of(topic: str) -> int | None:
        asked.append(topic)
        return counts.get(topic)

    placement = Placement(partitions_of)
    key = b"thomas@tankengine.com"
    home = message("in", home_partition(key, PARTITIONS))
    assert placement.at_home(home, key, "internal")
    assert placement.at_home(home, key, "internal")
    assert sorted(asked) == ["in", "internal"]  # once, not once a record

    counts["internal"] = 6  # takes effect with the rebalance it causes
    assert placement.at_home(home, key, "internal")
    placement.forget()
    assert not placement.at_home(home, key, "internal")


def test_counts_not_known_yet_are_asked_again_each_time() -> None:
    counts: dict[str, int] = {}
    placement = Placement(counts.get)
    key = b"thomas@tankengine.com"
    home = message("in", home_partition(key, PARTITIONS))
    assert not placement.at_home(home, key, "internal")
    counts.update({"in": PARTITIONS, "internal": PARTITIONS})
    assert placement.at_home(home, key, "internal")


def test_a_key_is_held_when_this_process_is_assigned_its_partition() -> None:
    key = b"thomas@tankengine.com"
    home = home_partition(key, PARTITIONS)
    held = {"internal": {home}}
    placement = Placement({"internal": PARTITIONS}.get, held_of=lambda topic: held.get(topic, ()))

    assert placement.holds(key, "internal")
    assert not placement.holds(key, "other")  # nothing of it assigned here
    held["internal"] = {(home + 1) % PARTITIONS}  # takes effect with the rebalance it comes in
    assert placement.holds(key, "internal")
    placement.forget()
    assert not placement.holds(key, "internal")


def test_nothing_is_held_without_an_assignment_or_a_partition_count() -> None:
    key = b"thomas@tankengine.com"
    every = set(range(PARTITIONS))
    assert not Placement({"internal": PARTITIONS}.get).holds(key, "internal")
    counts: dict[str, int] = {}
    placement = Placement(counts.get, held_of=lambda topic: every)
    assert not placement.holds(key, "internal")  # not known yet: asked again next time
    counts["internal"] = PARTITIONS
    assert placement.holds(key, "internal")
