"""aiokafka's fetched records made faust messages at once, for the worker's own consumer.

aiokafka makes a `ConsumerRecord` of each record it fetches, and faust then a `Message` of that
(`Consumer._to_message`): two objects a message, about 1.9 µs, where one does (about 1.1 µs;
docs/FIGURES.md, "Lean state"). The worker's faust consumer is marked by its value deserializer,
`as_faust_message` (`mark`); `install` wraps aiokafka's `PartitionRecords._consumer_record` so
that a marked consumer's records are built as faust messages straight away, with the fields
faust's `_to_message` gives them, and any other consumer's (the console's, the command line's)
as before. Without that aiokafka method nothing is wrapped, and the marked consumer gets
`ConsumerRecord`s as before (the marker passes values through): the fetch loop takes either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.consumer import fetcher
from faust.types.tuples import ConsumerMessage

__all__ = ["as_faust_message", "install", "mark"]

_ConsumerRecord = Callable[[Any, Any, Any], Any]


def as_faust_message(value: bytes | None) -> bytes | None:
    """The marker: a value deserializer that leaves the value as it is."""
    return value


def mark(consumer: Any) -> None:
    """Have the not yet started aiokafka `consumer` fetch faust messages (see `install`)."""
    consumer._value_deserializer = as_faust_message


def _leaner(original: _ConsumerRecord) -> _ConsumerRecord:
    def _consumer_record(self: Any, tp: Any, record: Any) -> Any:
        if self._value_deserializer is not as_faust_message:
            return original(self, tp, record)
        key, value, timestamp = record.key, record.value, record.timestamp
        headers: Any = tuple(record.headers)  # a tuple, as aiokafka's records hand it to faust
        return ConsumerMessage(
            tp.topic,
            tp.partition,
            record.offset,
            timestamp / 1000.0 if timestamp is not None else None,  # type: ignore[arg-type]
            record.timestamp_type,
            headers,
            key,
            value,
            record.checksum,
            len(key) if key is not None else -1,
            len(value) if value is not None else -1,
            tp,
        )

    _consumer_record.__wrapped__ = original  # type: ignore[attr-defined]
    return _consumer_record


def install() -> bool:
    """Wrap aiokafka's record maker (once; again is harmless); whether it is wrapped."""
    records = fetcher.PartitionRecords
    original = getattr(records, "_consumer_record", None)
    if original is None:
        return False
    if getattr(original, "__wrapped__", None) is None:
        records._consumer_record = _leaner(original)
    return True
