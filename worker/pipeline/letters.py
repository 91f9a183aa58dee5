"""A dead letter read back from the dead-letter topic: where it is, what its headers say, and
which letters a selection (`Filters`) takes.

`python -m worker dlq` and the console (`worker.console`) read letters as these; nothing here
touches Kafka (`worker.runtime.dead_letter_topic` reads them).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.pipeline.dead_letters import DeadLetterHeaders
from worker.pipeline.records import header
from worker.pipeline.replay import ReplayTarget, replay_count

__all__ = [
    "MESSAGE_CHARS",
    "DeadLetter",
    "Filters",
    "LetterRef",
    "Origin",
    "aware",
    "int_or_none",
    "render_bytes",
]

#: `DeadLetter.line` shortens the error message to this many characters.
MESSAGE_CHARS = 100

Origin = tuple[str, str, str]
"""An input message, as (topic, partition, offset) from a dead letter's headers."""


@dataclass(frozen=True, slots=True, order=True)
class LetterRef:
    """Where a dead letter is on the dead-letter topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}@{self.offset}"

    @classmethod
    def parse(cls, text: str) -> LetterRef:
        for sep in ("@", ":"):
            partition, found, offset = text.partition(sep)
            if found:
                try:
                    ref = cls(int(partition), int(offset))
                except ValueError:
                    break
                if ref.partition >= 0 and ref.offset >= 0:
                    return ref
                break
        raise ValueError(f"not PARTITION@OFFSET: {text!r}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, with its error headers read out."""

    ref: LetterRef
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def _text(self, name: str) -> str | None:
        raw = header(self.headers, name)
        return raw.decode(errors="replace") if raw is not None else None

    @property
    def topic(self) -> str | None:
        """The input topic the failed message was read from."""
        return self._text(DeadLetterHeaders.TOPIC)

    @property
    def pipeline(self) -> str | None:
        return self._text(DeadLetterHeaders.PIPELINE)

    @property
    def stage(self) -> str | None:
        return self._text(DeadLetterHeaders.STAGE)

    @property
    def error_class(self) -> str | None:
        return self._text(DeadLetterHeaders.CLASS_NAME)

    @property
    def status(self) -> str | None:
        return self._text(DeadLetterHeaders.STATUS)

    @property
    def message(self) -> str:
        return self._text(DeadLetterHeaders.MESSAGE) or ""

    @property
    def replay_count(self) -> int:
        return replay_count(self.headers)

    @property
    def failed_at(self) -> datetime:
        """The failure-time header; the record's timestamp when it is absent or garbled."""
        text = self._text(DeadLetterHeaders.FAILED_AT)
        if text:
            try:
                return aware(datetime.fromisoformat(text))
            except ValueError:
                pass
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def origin(self) -> Origin | None:
        """(topic, partition, offset) of the input message; None when the headers do not say."""
        topic = self._text(DeadLetterHeaders.TOPIC)
        partition = self._text(DeadLetterHeaders.PARTITION)
        offset = self._text(DeadLetterHeaders.OFFSET)
        if topic is None or partition is None or offset is None:
            return None
        return topic, partition, offset

    @property
    def target(self) -> ReplayTarget | None:
        return ReplayTarget.of_dead_letter(self.headers)

    def summary(self) -> dict[str, Any]:
        """The fields `list --json` prints."""
        return {
            "partition": self.ref.partition,
            "offset": self.ref.offset,
            "failed_at": self.failed_at.isoformat(timespec="milliseconds"),
            "first_failure_time": self._text(DeadLetterHeaders.FIRST_FAILURE),
            "pipeline": self.pipeline,
            "stage": self.stage,
            "topic": self.topic,
            "topic_partition": int_or_none(self._text(DeadLetterHeaders.PARTITION)),
            "topic_offset": int_or_none(self._text(DeadLetterHeaders.OFFSET)),
            "error_class": self.error_class,
            "status": int_or_none(self.status),
            "message": self.message,
            "replay_count": self.replay_count,
            "key": render_bytes(self.key)[1] if self.key is not None else None,
            "value_bytes": len(self.value),
        }

    def line(self) -> str:
        """The one line `list` prints."""
        stage = f"{self.pipeline or '?'}/{self.stage or '?'}"
        message = " ".join(self.message.split())
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 3] + "..."
        return "  ".join(
            [
                f"{self.ref!s:>9}",
                self.failed_at.isoformat(timespec="seconds"),
                f"{stage:22}",
                f"{self.error_class or '?':18}",
                f"{self.status or '?':>3}",
                f"replays={self.replay_count}",
                self.topic or "?",
                message,
            ]
        )


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command selects; an empty filter selects every one."""

    topics: tuple[str, ...] = ()
    error_classes: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.topics and letter.topic not in self.topics:
            return False
        if self.error_classes and letter.error_class not in self.error_classes:
            return False
        if self.pipelines:
            stage = f"{letter.pipeline}/{letter.stage}"
            if letter.pipeline not in self.pipelines and stage not in self.pipelines:
                return False
        failed_at = letter.failed_at
        if self.since is not None and failed_at < self.since:
            return False
        return self.until is None or failed_at < self.until


def aware(moment: datetime) -> datetime:
    """`moment` with UTC as its zone when it has none."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def render_bytes(data: bytes) -> tuple[str, str]:
    """(encoding, text): the bytes as text when they are UTF-8, else as base64."""
    try:
        return "utf-8", data.decode()
    except UnicodeDecodeError:
        return "base64", base64.b64encode(data).decode()
