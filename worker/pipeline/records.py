"""Framework-free views of a consumed message and of a record to produce.

The per-message loop works on these, not on faust events, so it can be tested without Kafka.
They are named tuples: one or two are built per message, and a frozen dataclass costs about
three times as much to build.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["ORIGIN_PREFIX", "Headers", "InboundMessage", "OutboundRecord", "header"]

Headers = Sequence[tuple[str, bytes]]

#: Headers that carry the original input's provenance across our internal repartition topics,
#: so a dead letter from a later stage still names the message a producer wrote.
ORIGIN_PREFIX = "__autopilot.origin."


class InboundMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = ()

    def origin(self) -> tuple[str, int, int, int]:
        """(topic, partition, offset, timestamp ms) of the message a producer first wrote."""
        topic = header(self.headers, ORIGIN_PREFIX + "topic")
        if topic is None:
            return self.topic, self.partition, self.offset, self.timestamp_ms
        return (
            topic.decode(),
            int(header(self.headers, ORIGIN_PREFIX + "partition") or b"-1"),
            int(header(self.headers, ORIGIN_PREFIX + "offset") or b"-1"),
            int(header(self.headers, ORIGIN_PREFIX + "timestamp") or b"-1"),
        )

    def origin_key(self) -> bytes | None:
        """The key the producer wrote: re-keying for an internal topic keeps it in a header."""
        if header(self.headers, ORIGIN_PREFIX + "topic") is None:
            return self.key
        return header(self.headers, ORIGIN_PREFIX + "key")

    def producer_headers(self) -> list[tuple[str, bytes]]:
        """The headers as the original producer wrote them (our provenance headers removed)."""
        headers = self.headers
        if not headers:  # most messages have none
            return []
        return [(k, v) for k, v in headers if not k.startswith(ORIGIN_PREFIX)]

    def forwarded_headers(self) -> list[tuple[str, bytes]]:
        """Headers for a copy of this message on an internal topic: the producer's plus origin."""
        if header(self.headers, ORIGIN_PREFIX + "topic") is not None:
            return list(self.headers)
        forwarded = [
            *self.headers,
            (ORIGIN_PREFIX + "topic", self.topic.encode()),
            (ORIGIN_PREFIX + "partition", str(self.partition).encode()),
            (ORIGIN_PREFIX + "offset", str(self.offset).encode()),
            (ORIGIN_PREFIX + "timestamp", str(self.timestamp_ms).encode()),
        ]
        if self.key is not None:  # absent: the producer wrote no key
            forwarded.append((ORIGIN_PREFIX + "key", self.key))
        return forwarded


class OutboundRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    #: a list: aiokafka's compiled batch builder takes no other sequence
    headers: list[tuple[str, bytes]]


def header(headers: Headers, name: str) -> bytes | None:
    """The last value of a header, or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found
