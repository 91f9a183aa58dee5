"""Accounting: is every input on an output topic or in the dead letters, exactly as expected?

An input meant to become a track is found by its messageId on the tracks topic, one meant to
become a request descriptor by its `message_id` on the requests topic, one meant to be
dead-lettered by its trace header in the dead letters, whose value must be its bytes. Anything
found more than once is a duplicate (at-least-once delivery allows them; they are counted, not
failed); anything not found is lost; anything found that nobody sent is unexpected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import ConsumerRecord

from tests.reliability.inputs import TRACE_HEADER, Fate, Input
from worker.pipeline.dead_letters import DeadLetterHeaders as H

__all__ = ["Ledger", "header_of", "message_id_of"]


def header_of(record: ConsumerRecord, name: str) -> bytes | None:
    found = None
    for key, value in record.headers:
        if key == name:
            found = value
    return found


def message_id_of(record: ConsumerRecord, field_name: str) -> str | None:
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    found = value.get(field_name) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


@dataclass
class Ledger:
    """What became of `inputs`, given everything on the output and dead-letter topics."""

    inputs: Sequence[Input]
    found: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    wrong_bytes: list[str] = field(default_factory=list)
    wrong_key: list[str] = field(default_factory=list)
    wrong_headers: list[str] = field(default_factory=list)
    wrong_trace: list[str] = field(default_factory=list)
    """Outputs whose trace header (the producer's headers travel along) is not their input's."""
    without_reason: list[str] = field(default_factory=list)
    dead_letter_classes: Counter[str] = field(default_factory=Counter)
    dead_letters_by_topic: Counter[str] = field(default_factory=Counter)

    where_lost: dict[str, str] = field(default_factory=dict)
    """For each lost input, where its trace was last seen (see `locate`)."""

    def __post_init__(self) -> None:
        self._by_output = {i.message_id: i for i in self.inputs if i.message_id is not None}
        self._by_trace = {i.trace: i for i in self.inputs}

    def add_outputs(self, records: Iterable[ConsumerRecord], fate: Fate) -> None:
        """Tracks (`Fate.TRACK`, messageId) or request descriptors (`Fate.REQUEST`)."""
        field_name = "messageId" if fate is Fate.TRACK else "message_id"
        for record in records:
            message_id = message_id_of(record, field_name)
            item = self._by_output.get(message_id or "")
            if item is None or item.fate is not fate:
                self.unexpected.append(f"{fate}: {message_id or record.value[:80]!r}")
                continue
            self.found[item.trace] += 1
            if header_of(record, TRACE_HEADER) != item.trace.encode():
                self.wrong_trace.append(item.trace)

    def add_dead_letters(self, records: Iterable[ConsumerRecord]) -> None:
        for record in records:
            trace = (header_of(record, TRACE_HEADER) or b"").decode(errors="replace")
            item = self._by_trace.get(trace)
            if item is None or item.fate is not Fate.DEAD_LETTER:
                self.unexpected.append(f"dead letter: trace {trace!r} {record.value[:80]!r}")
                continue
            self.found[item.trace] += 1
            if record.value != item.value:
                self.wrong_bytes.append(item.trace)
            if list(record.headers)[: len(item.headers)] != item.headers:
                self.wrong_headers.append(item.trace)
            if record.key != item.key:
                self.wrong_key.append(item.trace)
            name, message = header_of(record, H.CLASS_NAME), header_of(record, H.MESSAGE)
            if not name or not message or not header_of(record, H.STATUS):
                self.without_reason.append(item.trace)
            self.dead_letter_classes[(name or b"?").decode()] += 1
            self.dead_letters_by_topic[(header_of(record, H.TOPIC) or b"?").decode()] += 1

    def locate(self, topic: str, records: Iterable[ConsumerRecord]) -> None:
        """Note where lost inputs appear on `topic` (an internal topic carries the producer's
        headers), so that a loss names the stage that dropped it."""
        lost = {i.trace for i in self.lost}
        for record in records:
            trace = (header_of(record, TRACE_HEADER) or b"").decode(errors="replace")
            if trace in lost:
                self.where_lost[trace] = f"{topic}[{record.partition}]@{record.offset}"

    @property
    def lost(self) -> list[Input]:
        return [i for i in self.inputs if self.found[i.trace] == 0]

    @property
    def duplicates(self) -> int:
        """Records beyond the first for the same input."""
        return sum(count - 1 for count in self.found.values() if count > 1)

    @property
    def duplicated_inputs(self) -> int:
        return sum(1 for count in self.found.values() if count > 1)

    def figures(self) -> dict[str, object]:
        fates = Counter(str(i.fate) for i in self.inputs)
        return {
            "inputs": len(self.inputs),
            "by_fate": dict(fates),
            "accounted": len(self.inputs) - len(self.lost),
            "lost": len(self.lost),
            "duplicates": self.duplicates,
            "duplicated_inputs": self.duplicated_inputs,
            "unexpected": len(self.unexpected),
            "dead_letter_classes": dict(self.dead_letter_classes),
        }

    def assert_complete(self) -> None:
        """Nothing lost, nothing unexpected; every dead letter has its input's key, value and
        headers, and a reason."""
        lost = self.lost
        sample = [
            (
                i.trace,
                i.kind,
                i.value[:120],
                f"last seen: {self.where_lost.get(i.trace, 'nowhere')}",
            )
            for i in lost[:10]
        ]
        assert not lost, f"{len(lost)} of {len(self.inputs)} inputs lost, e.g. {sample}"
        assert not self.unexpected, f"records nobody sent: {self.unexpected[:10]}"
        assert not self.wrong_trace, (
            f"outputs with another input's headers: {self.wrong_trace[:10]}"
        )
        assert not self.wrong_bytes, f"dead letters not byte for byte: {self.wrong_bytes[:10]}"
        assert not self.wrong_key, f"dead letters with another key: {self.wrong_key[:10]}"
        assert not self.wrong_headers, (
            f"dead letters without the input's headers: {self.wrong_headers[:10]}"
        )
        assert not self.without_reason, f"dead letters without a reason: {self.without_reason[:10]}"
