"""Whether a consumed record already sits where re-keying it would put it.

Each pipeline's intake re-keys its inputs onto an internal topic so that a record and the table
rows it needs share a partition. A record its producer keyed the same way (the worker's own
ingest does: email events by lowercased email, Segment calls by userId else anonymousId) is
already on that partition: faust assigns partition p of every topic with the same partition
count to the same worker, so the rows for its key are local and the hop can be skipped.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from typing import Final

from worker.pipeline.records import InboundMessage

try:
    import autopilot_native
except ImportError:  # `make install` builds it (native/); without it the Python hash serves
    autopilot_native = None  # type: ignore[assignment]

__all__ = [
    "Placement",
    "home_partition",
    "kafka_partitioner",
    "python_home_partition",
    "python_murmur2",
]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def python_murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java's `Utils.murmur2`), as an unsigned 32-bit int, as aiokafka's: the
    reference for the compiled one (native/src/lib.rs), and the fallback when it is not built.

    The same arithmetic as aiokafka's pure-Python one, on whole little-endian words unpacked
    at once: about twice as fast.
    """
    length = len(data)
    h = 0x9747B28C ^ length
    end = length & ~3
    for (word,) in struct.iter_unpack("<I", data[:end]):
        k = (word * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[end + 2] << 16
        if extra >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


@lru_cache(maxsize=65_536)
def _python_hash(key: bytes) -> int:
    return python_murmur2(key) & 0x7FFFFFFF


def python_home_partition(key: bytes, partitions: int) -> int:
    """`home_partition` without native/, as the compiled one answers (ValueError included). Its
    hash is cached, as a key is placed several times per input and a hit beats python_murmur2."""
    if partitions <= 0:
        raise ValueError(f"partitions must be positive, not {partitions}")
    return _python_hash(key) % partitions


home_partition: Final[Callable[[bytes, int], int]] = (
    python_home_partition if autopilot_native is None else autopilot_native.home_partition
)
"""The partition of `partitions` that Kafka's default partitioner (murmur2, as in Java clients)
gives `key`. Compiled when native/ is built, and then not cached: a call costs less than an
lru_cache hit."""


def kafka_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """Kafka's default partitioner, as aiokafka's, for the worker's producer: the same choice,
    through `home_partition` (compiled when built; the worker checks, looks up and writes one
    contact's key several times per input)."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[home_partition(key, len(all_partitions))]


class Placement:
    """Answers "is this record at home for `key`?" from the cluster's partition counts, and
    "does this process hold `key`'s partition?" from its assignment.

    Each pair of topics' answer is worked out once (each input asks) and kept until `forget`,
    which the runtime calls at every rebalance: a topic's partition count changes only with a
    rebalance (the group rejoins on the new metadata), so an answer kept within one assignment
    is the one that assignment was made on. A pair whose counts are not known yet is asked
    again each time. So are the partitions held (`held_of`, none unless given).
    """

    def __init__(
        self,
        partitions_of: Callable[[str], int | None],
        held_of: Callable[[str], Collection[int]] = lambda topic: (),
    ) -> None:
        self._partitions_of = partitions_of
        self._held_of = held_of
        #: (message topic, internal topic) -> the internal topic's partition count, when both
        #: topics have that count, else None
        self._shared: dict[tuple[str, str], int | None] = {}
        #: topic -> (its partition count, the partitions of it this process is assigned)
        self._held: dict[str, tuple[int, frozenset[int]]] = {}

    def at_home(self, message: InboundMessage, key: bytes, internal_topic: str) -> bool:
        """True when `message` is on the partition its copy keyed `key` would land on in
        `internal_topic`, and both topics have the same partition count (so are co-assigned)."""
        pair = (message.topic, internal_topic)
        shared = self._shared
        partitions = shared[pair] if pair in shared else self._shared_count(*pair)
        return partitions is not None and home_partition(key, partitions) == message.partition

    def holds(self, key: bytes, topic: str) -> bool:
        """True when this process is assigned the partition of `topic` that `key` lands on: the
        table rows of that partition are here, recovered (faust resumes the streams only once
        its tables are), until the next rebalance. False while the count is not known."""
        held = self._held.get(topic)
        if held is None:
            partitions = self._partitions_of(topic)
            if partitions is None:
                return False  # not known yet: asked again next time
            held = self._held[topic] = (partitions, frozenset(self._held_of(topic)))
        partitions, mine = held
        return bool(mine) and home_partition(key, partitions) in mine

    def forget(self) -> None:
        """Ask the partition counts and the assignment again (the group rebalanced)."""
        self._shared.clear()
        self._held.clear()

    def _shared_count(self, topic: str, internal_topic: str) -> int | None:
        partitions = self._partitions_of(internal_topic)
        if partitions is None:
            return None
        mine = self._partitions_of(topic)
        if mine is None:
            return None  # not known yet: asked again next time
        shared = partitions if mine == partitions else None
        self._shared[topic, internal_topic] = shared
        return shared
