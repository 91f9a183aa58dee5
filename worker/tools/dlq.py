"""`python -m worker dlq list|show|replay`: read, inspect and replay dead letters.

Every command reads the dead-letter topic (`TOPIC_DEAD_LETTERS`) with a throwaway consumer: no
consumer group, nothing committed, from the beginning up to the end offsets taken when it
starts. A dead letter is named `PARTITION@OFFSET` on that topic (`PARTITION:OFFSET` works too).
It connects as the worker does (the `KAFKA_*` security settings, `kafka_client_config`), waiting
for Kafka up to `KAFKA_STARTUP_TIMEOUT_S`; a Kafka that does not answer by then, or refuses the
credentials or the certificates, is one line and exit status 70.

    list    [filters] [--json]              one line per dead letter, in the order they failed
    show    PARTITION@OFFSET [--full] [--json]   one dead letter: every header, the key, the value
    replay  [filters] [PARTITION@OFFSET...] [--dry-run] [--max-replays N]

`list` prints a table, oldest failure first: when it failed, the input it failed on as the logs
name it (`topic[partition]@offset`, the topic a producer wrote), the stage, the error, the
input's message id and contact (read from its value: what the logs' `message_id` says, and the
email, else the userId, else the anonymousId), the replays, the letter's own
`PARTITION@OFFSET` (what `show` and `replay` take) and the reason. To sort, it keeps one row
per matching letter (never the values). `show` cuts a value (and any header) longer than
`SHOW_CHARS` characters unless `--full`; `--json` is always whole.

Filters (each repeatable; a letter must match every kind given, any value of a kind):
`--topic` (the input topic, header `__autopilot.errors.topic`), `--error-class`,
`--pipeline` (`source` or `source/intake`), `--message-id` (the input's message id, as
`list` shows it), `--contact` (an email, userId, anonymousId or Autopilot contact id the input
names, or its Kafka key; emails in any case), `--since`/`--until` (ISO times, compared with
`__autopilot.errors.failure.time`; `--since` inclusive, `--until` exclusive). `list --since`
reads only the dead letters written from a minute before `--since` on (by record timestamp).

`replay` writes only to the worker-private retry topic `<WORKER_APP_ID>.retry`, never to a
topic that other consumer groups read; `worker.pipeline.replay` says how headers are rewritten
and how
the worker runs a replayed message. It skips, and counts, letters whose
`__autopilot.errors.replay.count` has reached `--max-replays` (the loop stopper), letters
superseded by a later letter of the same input message with a higher replay count (that later
one is the one to replay; `--include-superseded` replays both), and letters that do not say
which stage failed them. It reads the topic twice, up to the same end offsets: first to learn
each input message's latest replay count (and how many letters will go), then to replay the
selected letters a thousand at a time; it holds counts per input message, never all the letters.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum, auto
from functools import cached_property
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from worker.errors import FatalError
from worker.pipeline.dead_letters import DeadLetterHeaders
from worker.pipeline.logs import message_id_in
from worker.pipeline.records import OutboundRecord, header
from worker.pipeline.replay import ReplayTarget, replay_count, replay_headers
from worker.runtime.kafka_connection import kafka_client_config
from worker.runtime.topic_admin import wait_for_kafka
from worker.settings import Settings, get_settings, mask, secret_values
from worker.topics import TopicNames

__all__ = [
    "DeadLetter",
    "DlqError",
    "Filters",
    "LetterRef",
    "Origin",
    "Progress",
    "ReplayCensus",
    "ReplayPlan",
    "ReplayTally",
    "Skip",
    "classify",
    "contacts_of",
    "main",
    "parsed_input",
    "plan_replay",
    "run_dlq",
]

#: Exit status when Kafka does not answer within KAFKA_STARTUP_TIMEOUT_S or refuses the
#: connection (credentials, certificates): the worker's own (EX_SOFTWARE).
EXIT_REFUSED = 70
#: How long a read may go without any progress before the command gives up.
IDLE_TIMEOUT_S = 30.0
#: `list --since` starts reading at dead letters written this long before `since`.
SINCE_MARGIN = timedelta(minutes=1)
MESSAGE_CHARS = 100
#: `show` cuts a value or header longer than this many characters unless `--full`.
SHOW_CHARS = 4000
#: Inputs larger than this are not parsed for their message id and contact (1 MiB: Kafka's
#: default largest record; a letter's value is parsed once, when a filter or a row needs it).
MAX_SCAN_BYTES = 1024 * 1024
#: `replay` produces the letters it selected this many at a time, each lot acknowledged by the
#: broker before it reads the next: what it holds does not grow with the dead-letter topic.
REPLAY_CHUNK = 1000

Origin = tuple[str, str, str]
"""An input message, as (topic, partition, offset) from a dead letter's headers."""


class DlqError(Exception):
    """A reason the command cannot do what was asked; printed, exit status 1."""


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
                return _aware(datetime.fromisoformat(text))
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
            "topic_partition": _int_or_none(self._text(DeadLetterHeaders.PARTITION)),
            "topic_offset": _int_or_none(self._text(DeadLetterHeaders.OFFSET)),
            "input": self.input,
            "message_id": self.message_id,
            "contact": self.contact,
            "error_class": self.error_class,
            "status": _int_or_none(self.status),
            "message": self.message,
            "replay_count": self.replay_count,
            "key": _render(self.key)[1] if self.key is not None else None,
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


def table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """`list`'s lines: the header, then the rows, each column as wide as its widest cell."""
    everything = [LIST_COLUMNS, *rows]
    widths = [max(len(row[n]) for row in everything) for n in range(len(LIST_COLUMNS) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in everything
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


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


@dataclass(frozen=True, slots=True)
class PlannedReplay:
    letter: DeadLetter
    target: ReplayTarget
    record: OutboundRecord

    @property
    def replay_number(self) -> int:
        return self.letter.replay_count + 1


class Skip(Enum):
    """Why `replay` leaves a selected letter alone."""

    AT_MAX_REPLAYS = auto()
    SUPERSEDED = auto()
    WITHOUT_TARGET = auto()


def classify(
    letter: DeadLetter,
    *,
    max_replays: int,
    latest_replay: Mapping[Origin, int] | None = None,
) -> ReplayTarget | Skip:
    """The stage a selected letter is replayed through, or why it is skipped.

    `latest_replay` maps an input message (topic, partition, offset) to the highest replay
    count any letter of it carries; a letter below that count is superseded. None: no letter is.
    """
    target = letter.target
    if target is None:
        return Skip.WITHOUT_TARGET
    if letter.replay_count >= max_replays:
        return Skip.AT_MAX_REPLAYS
    origin = letter.origin
    if (
        latest_replay is not None
        and origin is not None
        and latest_replay.get(origin, 0) > letter.replay_count
    ):
        return Skip.SUPERSEDED
    return target


@dataclass
class ReplayPlan:
    """What `replay` writes for some selected letters, and what it skips and why."""

    replays: list[PlannedReplay] = field(default_factory=list)
    at_max_replays: list[DeadLetter] = field(default_factory=list)
    superseded: list[DeadLetter] = field(default_factory=list)
    without_target: list[DeadLetter] = field(default_factory=list)


def plan_replay(
    letters: Iterable[DeadLetter],
    *,
    retry_topic: str,
    max_replays: int,
    latest_replay: Mapping[Origin, int] | None = None,
) -> ReplayPlan:
    """Sort the selected letters into replays and skips, each as `classify` says."""
    plan = ReplayPlan()
    for letter in letters:
        match classify(letter, max_replays=max_replays, latest_replay=latest_replay):
            case ReplayTarget() as target:
                record = OutboundRecord(
                    topic=retry_topic,
                    key=letter.key,
                    value=letter.value,
                    headers=replay_headers(letter.headers, target, key=letter.key),
                )
                plan.replays.append(PlannedReplay(letter, target, record))
            case Skip.AT_MAX_REPLAYS:
                plan.at_max_replays.append(letter)
            case Skip.SUPERSEDED:
                plan.superseded.append(letter)
            case Skip.WITHOUT_TARGET:
                plan.without_target.append(letter)
    return plan


@dataclass
class ReplayTally:
    """How many letters a `replay` run replayed and skipped, chunk by chunk."""

    replays: int = 0
    at_max_replays: int = 0
    superseded: int = 0
    without_target: int = 0

    def add(self, plan: ReplayPlan) -> None:
        self.replays += len(plan.replays)
        self.at_max_replays += len(plan.at_max_replays)
        self.superseded += len(plan.superseded)
        self.without_target += len(plan.without_target)

    def skipped_text(self, max_replays: int) -> str:
        return (
            f"skipped {self.at_max_replays} at --max-replays {max_replays}, "
            f"{self.superseded} superseded by a later replay, "
            f"{self.without_target} without a stage to replay through"
        )


@dataclass
class ReplayCensus:
    """The first of `replay`'s two reads: what the superseded check and the progress bar need.

    Fed every dead letter (`add`), it keeps per input message its highest replay count
    (`latest`, for `classify`) and how many selected letters with each count are due, never a
    letter: it grows with the number of input messages that failed, not with the size of their
    letters. `replays` is then how many letters the second read, up to the same end offsets,
    replays: those due at their input message's latest count. Not `superseding`
    (`--include-superseded`, or letters named by reference), `latest` stays empty and nothing
    is superseded.
    """

    max_replays: int
    superseding: bool = True
    latest: dict[Origin, int] = field(default_factory=dict, init=False)
    _due: Counter[tuple[Origin | None, int]] = field(
        default_factory=Counter, init=False, repr=False
    )

    def add(self, letter: DeadLetter, *, selected: bool) -> None:
        origin, count = letter.origin, letter.replay_count
        if self.superseding and origin is not None:
            self.latest[origin] = max(self.latest.get(origin, 0), count)
        if selected and isinstance(classify(letter, max_replays=self.max_replays), ReplayTarget):
            self._due[origin, count] += 1

    @property
    def replays(self) -> int:
        latest = self.latest
        return sum(
            due
            for (origin, count), due in self._due.items()
            if origin is None or count >= latest.get(origin, 0)
        )


class Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a line per tenth otherwise."""

    def __init__(self, total: int, stream: TextIO, label: str, width: int = 30) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._label = label
        self._width = width
        self._tty = stream.isatty()
        self._last_tenth = -1
        self._drawn = ""

    def render(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = round(fraction * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        return f"{self._label} [{bar}] {self.done}/{self.total} {fraction:4.0%}"

    def advance(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total)
        if self._tty:
            self._draw()
            return
        tenth = self.done * 10 // self.total if self.total else 10
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self._stream.write(self.render() + "\n")
            self._stream.flush()

    def start(self) -> None:
        if self._tty:
            self._draw()
        else:
            self.advance(0)

    def note(self, line: str) -> None:
        """Write `line` (ending in a newline) above the bar; on a terminal, redraw the bar."""
        if not self._drawn:
            self._stream.write(line)
            return
        self._stream.write("\r" + " " * len(self._drawn) + "\r" + line)
        self._drawn = ""
        self._draw()

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = ""

    def _draw(self) -> None:
        redraw = "\r" if self._drawn else ""
        self._drawn = self.render()
        self._stream.write(redraw + self._drawn)
        self._stream.flush()


# --- reading the dead-letter topic ----------------------------------------------------------


def _to_letter(record: Any) -> DeadLetter:
    return DeadLetter(
        ref=LetterRef(record.partition, record.offset),
        timestamp_ms=int(record.timestamp or 0),
        key=record.key,
        value=record.value if record.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in record.headers or ()],
    )


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_client_config(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"{settings.worker_app_id}-dlq",
    )


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`; DlqError when the topic does not exist."""
    admin = _admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(
        part["partition"]
        for entry in described
        if entry.get("topic") == topic and entry.get("error_code") == 0
        for part in entry.get("partitions", ())
    )
    if not found:
        raise DlqError(f"topic {topic!r} does not exist (run `python -m worker topics`)")
    return [TopicPartition(topic, partition) for partition in found]


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **kafka_client_config(settings), client_id=f"{settings.worker_app_id}-dlq"
    )


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The dead-letter topic's end offsets now: where reads that must see the same letters stop."""
    tps = await _partitions(settings, settings.topic_dead_letters)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return ends


async def read_all(
    settings: Settings,
    *,
    written_since: datetime | None = None,
    upto: Mapping[TopicPartition, int] | None = None,
) -> AsyncIterator[DeadLetter]:
    """Every dead letter, partition by partition interleaved, up to the end offsets `upto` (those
    at start when None); with `written_since`, only those written then or later (by their record
    timestamps)."""
    tps = (
        list(upto) if upto is not None else await _partitions(settings, settings.topic_dead_letters)
    )
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = dict(upto) if upto is not None else await consumer.end_offsets(tps)
        if written_since is None:
            await consumer.seek_to_beginning(*tps)
        else:
            millis = int(written_since.timestamp() * 1000)
            starts = await consumer.offsets_for_times(dict.fromkeys(tps, millis))
            for tp in tps:
                start = starts.get(tp)
                consumer.seek(tp, ends[tp] if start is None else start.offset)
        remaining = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
        last_progress = time.monotonic()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield _to_letter(record)
            if batches:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > IDLE_TIMEOUT_S:
                raise DlqError(
                    f"no progress reading {settings.topic_dead_letters} for {IDLE_TIMEOUT_S:.0f} s"
                )
            remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()


async def read_refs(settings: Settings, refs: Sequence[LetterRef]) -> list[DeadLetter]:
    """The dead letters at `refs`, in the order given; DlqError if one is not there."""
    tps = {tp.partition: tp for tp in await _partitions(settings, settings.topic_dead_letters)}
    missing = sorted({ref.partition for ref in refs} - set(tps))
    if missing:
        raise DlqError(f"{settings.topic_dead_letters} has no partition {missing[0]}")
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign(list(tps.values()))
        letters = []
        for ref in refs:
            tp = tps[ref.partition]
            end = (await consumer.end_offsets([tp]))[tp]
            if ref.offset >= end:
                raise DlqError(f"no dead letter at {ref} (partition {ref.partition} ends at {end})")
            consumer.seek(tp, ref.offset)
            letters.append(await _fetch_one(consumer, tp, ref, end))
        return letters
    finally:
        await consumer.stop()


async def _fetch_one(
    consumer: AIOKafkaConsumer, tp: TopicPartition, ref: LetterRef, end: int
) -> DeadLetter:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        batches = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        for record in batches.get(tp, []):
            if record.offset == ref.offset:
                return _to_letter(record)
            raise DlqError(f"no dead letter at {ref} (removed by retention?)")
        if await consumer.position(tp) >= end:
            break
    raise DlqError(f"no dead letter at {ref}")


# --- commands -------------------------------------------------------------------------------


async def _list(ns: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    filters = _filters(ns)
    seen = 0
    # One row per match, values left behind, sorted once all are read: the topic holds them in
    # write order per partition only.
    rows: list[tuple[datetime, LetterRef, dict[str, Any] | tuple[str, ...]]] = []
    # A dead letter is written after it failed, so none that failed since `since` was written
    # before it; a minute's margin covers a broker stamping records by its own, earlier clock.
    written_since = None if filters.since is None else filters.since - SINCE_MARGIN
    async for letter in read_all(settings, written_since=written_since):
        seen += 1
        if filters.matches(letter):
            rows.append(
                (letter.failed_at, letter.ref, letter.summary() if ns.json else letter.row())
            )
    rows.sort(key=lambda row: (row[0], row[1]))
    matched = len(rows)
    if ns.json:
        out.writelines(_json_line(row) for _, _, row in rows if isinstance(row, dict))
    elif rows:
        cells = [row for _, _, row in rows if isinstance(row, tuple)]
        out.writelines(line.rstrip() + "\n" for line in table(cells))
    read = "" if written_since is None else f" written since {written_since.isoformat()}"
    err.write(f"{matched} of {seen} dead letters{read} on {settings.topic_dead_letters} matched\n")
    return 0


async def _show(ns: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    (letter,) = await read_refs(settings, [ns.ref])
    if ns.json:
        out.write(_json_line(_full(letter, settings.topic_dead_letters)))
        return 0
    limit = None if ns.full else SHOW_CHARS
    written = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
    out.write(
        f"dead letter {letter.ref} on {settings.topic_dead_letters}, "
        f"written {written.isoformat(timespec='milliseconds')}\n"
        f"input {letter.input}, message id {letter.message_id or '-'}, "
        f"contact {letter.contact or '-'}\n"
    )
    if letter.key is None:
        out.write("key: (none)\n")
    else:
        encoding, text = _render(letter.key)
        out.write(f"key ({encoding}): {_clip(text, limit)}\n")
    out.write("headers:\n")
    for name, value in letter.headers:
        encoding, text = _render(value)
        prefix = "" if encoding == "utf-8" else f"({encoding}) "
        out.write(f"  {name}: {prefix}{_clip(text, limit)}\n")
    encoding, text = _render(letter.value)
    out.write(f"value ({encoding}, {len(letter.value)} bytes):\n{_clip(text, limit)}\n")
    return 0


def _clip(text: str, limit: int | None) -> str:
    """`text`, cut after `limit` characters with a note saying how to see the rest."""
    if limit is None or len(text) <= limit:
        return text
    return (
        f"{text[:limit]}\n... ({len(text) - limit} more characters not shown; "
        "--full shows them, --json prints the letter whole)"
    )


async def _replay(ns: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    names = TopicNames.from_settings(settings)
    _refuse_shared_retry_topic(names)
    filters = _filters(ns)
    if ns.refs:
        letters = [x for x in await read_refs(settings, ns.refs) if filters.matches(x)]
        census = ReplayCensus(ns.max_replays, superseding=False)
        for letter in letters:
            census.add(letter, selected=True)
        selected = _each(letters)
    else:
        # Both reads stop at the same offsets: letters written meanwhile, the replays' own new
        # dead letters among them, wait for the next run.
        ends = await end_offsets(settings)
        census = ReplayCensus(ns.max_replays, superseding=not ns.include_superseded)
        if census.superseding or not ns.dry_run:  # the superseded check or the bar needs it
            async for letter in read_all(settings, upto=ends):
                census.add(letter, selected=filters.matches(letter))
        selected = (x async for x in read_all(settings, upto=ends) if filters.matches(x))

    verb = "would replay" if ns.dry_run else "replaying"
    sender = None if ns.dry_run else _RetrySender(settings, names.retry, census.replays, err)
    note = err.write if sender is None else sender.progress.note
    tally = ReplayTally()
    try:
        async for chunk in _chunks(selected, REPLAY_CHUNK):
            plan = plan_replay(
                chunk,
                retry_topic=names.retry,
                max_replays=ns.max_replays,
                latest_replay=census.latest,
            )
            tally.add(plan)
            for item in plan.replays:
                out.write(
                    f"{verb} {item.letter.ref} -> {item.target} (replay {item.replay_number}, "
                    f"{item.letter.error_class or '?'}, {len(item.letter.value)} bytes)\n"
                )
            for letter in plan.at_max_replays:
                note(f"skipping {letter.ref}: replayed {letter.replay_count} times already\n")
            if sender is not None:
                await sender.send([item.record for item in plan.replays])
    finally:
        if sender is not None:
            await sender.close()
    skipped = tally.skipped_text(ns.max_replays)
    if ns.dry_run:
        out.write(f"dry run: {tally.replays} to replay onto {names.retry}; {skipped}\n")
    else:
        out.write(f"replayed {tally.replays} onto {names.retry}; {skipped}\n")
    return 0


def _refuse_shared_retry_topic(names: TopicNames) -> None:
    shared = {
        names.email_events,
        names.ortto_activities,
        names.segment_calls,
        names.segment_tracks,
        names.autopilot_requests,
        names.autopilot_deliveries,
        names.ortto_requests,
        names.ortto_deliveries,
        names.dead_letters,
    }
    if names.retry in shared:
        raise DlqError(f"the retry topic {names.retry!r} is also a shared topic: refusing")


class _RetrySender:
    """Produces replays onto the retry topic lot by lot, each acknowledged before `send` returns,
    with a progress bar to `err` counting up to `total`. It starts a producer only for the first
    record: a run with nothing to replay neither needs the retry topic nor draws a bar."""

    def __init__(self, settings: Settings, retry_topic: str, total: int, err: TextIO) -> None:
        self.progress = Progress(total, err, "replaying")
        self._settings = settings
        self._retry_topic = retry_topic
        self._producer: AIOKafkaProducer | None = None

    async def send(self, records: Sequence[OutboundRecord]) -> None:
        if not records:
            return
        producer = self._producer or await self._start()
        pending = []
        for record in records:
            future = await producer.send(
                record.topic, value=record.value, key=record.key, headers=record.headers
            )
            future.add_done_callback(lambda _: self.progress.advance())
            pending.append(future)
        await asyncio.gather(*pending)

    async def close(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            finally:
                self.progress.finish()

    async def _start(self) -> AIOKafkaProducer:
        try:
            await _partitions(self._settings, self._retry_topic)
        except DlqError:
            raise DlqError(
                f"the retry topic {self._retry_topic!r} does not exist "
                "(run `python -m worker topics`)"
            ) from None
        producer = AIOKafkaProducer(
            **kafka_client_config(self._settings),
            acks="all",
            enable_idempotence=True,
            client_id=f"{self._settings.worker_app_id}-dlq",
        )
        await producer.start()
        self._producer = producer
        self.progress.start()
        return producer


# --- helpers --------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso_time(text: str) -> datetime:
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None


def _ref(text: str) -> LetterRef:
    try:
        return LetterRef.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _render(data: bytes) -> tuple[str, str]:
    """(encoding, text): the bytes as text when they are UTF-8, else as base64."""
    try:
        return "utf-8", data.decode()
    except UnicodeDecodeError:
        return "base64", base64.b64encode(data).decode()


def _full(letter: DeadLetter, topic: str) -> dict[str, Any]:
    def rendered(data: bytes | None) -> dict[str, str] | None:
        if data is None:
            return None
        encoding, text = _render(data)
        return {"encoding": encoding, "data": text}

    return {
        "topic": topic,
        "partition": letter.ref.partition,
        "offset": letter.ref.offset,
        "timestamp_ms": letter.timestamp_ms,
        "key": rendered(letter.key),
        "headers": [{"name": name, **(rendered(value) or {})} for name, value in letter.headers],
        "value": rendered(letter.value),
    }


async def _each(letters: Iterable[DeadLetter]) -> AsyncIterator[DeadLetter]:
    for letter in letters:
        yield letter


async def _chunks(letters: AsyncIterable[DeadLetter], size: int) -> AsyncIterator[list[DeadLetter]]:
    chunk: list[DeadLetter] = []
    async for letter in letters:
        chunk.append(letter)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_line(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() + "\n"


def _filters(ns: argparse.Namespace) -> Filters:
    return Filters(
        topics=tuple(ns.topic or ()),
        error_classes=tuple(ns.error_class or ()),
        pipelines=tuple(ns.pipeline or ()),
        message_ids=tuple(ns.message_id or ()),
        contacts=tuple(ns.contact or ()),
        since=ns.since,
        until=ns.until,
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (repeat a flag to accept any of its values)")
    group.add_argument("--topic", action="append", help="input topic the message came from")
    group.add_argument("--error-class", action="append", help="e.g. DecodeError")
    group.add_argument("--pipeline", action="append", help="`source` or `source/intake`")
    group.add_argument(
        "--message-id", action="append", help="the input's message id, as `list` shows it"
    )
    group.add_argument(
        "--contact",
        action="append",
        help="an email (any case), userId, anonymousId or contact id the input names",
    )
    group.add_argument("--since", type=_iso_time, help="failed at or after this ISO time")
    group.add_argument("--until", type=_iso_time, help="failed before this ISO time")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker dlq",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="one line per dead letter")
    _add_filters(listing)
    listing.add_argument("--json", action="store_true", help="JSON lines")
    show = sub.add_parser("show", help="one dead letter with all its headers")
    show.add_argument("ref", type=_ref, metavar="PARTITION@OFFSET")
    show.add_argument("--json", action="store_true", help="one JSON object, never cut")
    show.add_argument(
        "--full", action="store_true", help=f"values over {SHOW_CHARS} characters too, whole"
    )
    replay = sub.add_parser("replay", help="replay dead letters through the retry topic")
    replay.add_argument("refs", nargs="*", type=_ref, metavar="PARTITION@OFFSET")
    _add_filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="print, produce nothing")
    replay.add_argument(
        "--max-replays",
        type=_positive,
        default=3,
        help="skip letters replayed this many times already (default 3)",
    )
    replay.add_argument(
        "--include-superseded",
        action="store_true",
        help="also replay letters whose message failed again after a later replay",
    )
    return parser


async def run_dlq(
    argv: Sequence[str],
    settings: Settings | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The `dlq` command in the running event loop; returns the exit status."""
    ns = build_parser().parse_args(list(argv))
    settings = settings or get_settings()
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        # as the worker does at start: wait for Kafka (KAFKA_STARTUP_TIMEOUT_S), and say at once
        # in one line when it refuses the credentials or the certificates (exit 70)
        await wait_for_kafka(settings)
    except FatalError as exc:
        err.write(f"dlq: {mask(str(exc), secret_values(settings))}\n")
        return EXIT_REFUSED
    try:
        if ns.command == "list":
            return await _list(ns, settings, out, err)
        if ns.command == "show":
            return await _show(ns, settings, out)
        return await _replay(ns, settings, out, err)
    except DlqError as exc:
        err.write(f"dlq: {exc}\n")
        return 1
    except KafkaError as exc:
        line = f"dlq: Kafka at {settings.kafka_bootstrap_servers}: {exc!r}"
        err.write(mask(line, secret_values(settings)) + "\n")
        return 1


def main(argv: Sequence[str]) -> int:
    """`python -m worker dlq ...`."""
    try:
        return asyncio.run(run_dlq(argv))
    except KeyboardInterrupt:
        return 130
