"""A dead letter read back from the dead-letter topic: where it is, what its headers say, which
input it failed on (its message id and contact, read from its value), and which letters a
selection (`Filters`) takes.

`python -m worker dlq` and the console (`worker.console`) read letters as these; nothing here
touches Kafka (`worker.runtime.dead_letter_topic` reads them).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import orjson

from worker.pipeline.dead_letters import DeadLetterHeaders
from worker.pipeline.logs import message_id_in
from worker.pipeline.records import header
from worker.pipeline.replay import ReplayTarget, replay_count

__all__ = [
    "LIST_COLUMNS",
    "MAX_SCAN_BYTES",
    "MESSAGE_CHARS",
    "DeadLetter",
    "Filters",
    "LetterRef",
    "Origin",
    "aware",
    "contacts_of",
    "int_or_none",
    "parsed_input",
    "render_bytes",
]

#: `DeadLetter.row` shortens the error message to this many characters.
MESSAGE_CHARS = 100
#: Inputs larger than this are not parsed for their message id and contact (1 MiB: Kafka's
#: default largest record; a letter's value is parsed once, when a filter or a row needs it).
MAX_SCAN_BYTES = 1024 * 1024

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


def parsed_input(value: bytes) -> object:
    """The input a dead letter holds, parsed as JSON; None when it is not JSON or over
    `MAX_SCAN_BYTES`."""
    if len(value) > MAX_SCAN_BYTES:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def contacts_of(data: object) -> tuple[str, ...]:
    """Who a parsed input is about, most telling first: the emails, userIds, anonymousIds and
    Autopilot contact ids a Segment call, an email event or a request descriptor names; none
    for anything but a JSON object."""
    if not isinstance(data, dict):
        return ()

    def at(*path: str) -> object:
        node: object = data
        for name in path:
            node = node.get(name) if isinstance(node, dict) else None
        return node

    candidates = (
        at("traits", "email"),
        at("context", "traits", "email"),
        at("properties", "email"),
        at("contact", "email"),
        at("contact"),  # a request descriptor's (a string; an email event's is an object)
        at("userId"),
        at("contact", "user_id"),
        at("anonymousId"),
        at("contact", "contact_id"),
    )
    found: list[str] = []
    for candidate in candidates:
        if isinstance(candidate, str) and candidate and candidate not in found:
            found.append(candidate[:200])
    return tuple(found)


@dataclass(frozen=True)
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

    @property
    def input(self) -> str:
        """The input it failed on as the logs name it: `topic[partition]@offset`."""
        topic = self._text(DeadLetterHeaders.TOPIC) or "?"
        partition = self._text(DeadLetterHeaders.PARTITION) or "?"
        offset = self._text(DeadLetterHeaders.OFFSET) or "?"
        return f"{topic}[{partition}]@{offset}"

    @cached_property
    def _parsed(self) -> object:
        return parsed_input(self.value)

    @cached_property
    def message_id(self) -> str | None:
        """The input's message id, as the logs give it (`message_id`)."""
        return message_id_in(self._parsed)

    @cached_property
    def contacts(self) -> tuple[str, ...]:
        """Who the input is about (`contacts_of`), most telling first."""
        return contacts_of(self._parsed)

    @property
    def contact(self) -> str | None:
        """The most telling of `contacts`: an email, else a userId, else an anonymousId."""
        return self.contacts[0] if self.contacts else None

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
            "input": self.input,
            "message_id": self.message_id,
            "contact": self.contact,
            "error_class": self.error_class,
            "status": int_or_none(self.status),
            "message": self.message,
            "replay_count": self.replay_count,
            "key": render_bytes(self.key)[1] if self.key is not None else None,
            "value_bytes": len(self.value),
        }

    def row(self) -> tuple[str, ...]:
        """The cells of the line `list` prints (`LIST_COLUMNS`)."""
        message = " ".join(self.message.split())
        return (
            self.failed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            self.input,
            f"{self.pipeline or '?'}/{self.stage or '?'}",
            f"{self.error_class or '?'} {self.status or '?'}",
            _cut(self.message_id or "-", 40),
            _cut(self.contact or "-", 32),
            str(self.replay_count),
            str(self.ref),
            _cut(message, MESSAGE_CHARS),
        )

    def line(self) -> str:
        """The one line `list` prints (without its table's alignment)."""
        return "  ".join(self.row())


#: The header of `list`'s table.
LIST_COLUMNS = (
    "FAILED AT (UTC)",
    "INPUT",
    "STAGE",
    "ERROR",
    "MESSAGE ID",
    "CONTACT",
    "REPLAYS",
    "LETTER",
    "REASON",
)


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command selects; an empty filter selects every one."""

    topics: tuple[str, ...] = ()
    error_classes: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    contacts: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.topics and letter.topic not in self.topics:
            return False
        if self.error_classes and letter.error_class not in self.error_classes:
            return False
        if self.message_ids and letter.message_id not in self.message_ids:
            return False
        if self.contacts and not self._names_a_contact(letter):
            return False
        if self.pipelines:
            stage = f"{letter.pipeline}/{letter.stage}"
            if letter.pipeline not in self.pipelines and stage not in self.pipelines:
                return False
        failed_at = letter.failed_at
        if self.since is not None and failed_at < self.since:
            return False
        return self.until is None or failed_at < self.until

    def _names_a_contact(self, letter: DeadLetter) -> bool:
        wanted = {contact.casefold() for contact in self.contacts}
        named = [*letter.contacts, *([letter.key.decode(errors="replace")] if letter.key else [])]
        return any(name.casefold() in wanted for name in named)


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


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
