"""`python -m worker dlq list|show|replay`: read, inspect and replay dead letters.

Every command reads the dead-letter topic (`TOPIC_DEAD_LETTERS`) with a throwaway consumer: no
consumer group, nothing committed, from the beginning up to the end offsets taken when it
starts. A dead letter is named `PARTITION@OFFSET` on that topic (`PARTITION:OFFSET` works too).

    list    [filters] [--json]              one line per dead letter
    show    PARTITION@OFFSET [--json]       one dead letter: every header, the key, the value
    replay  [filters] [PARTITION@OFFSET...] [--dry-run] [--max-replays N]

Filters (each repeatable; a letter must match every kind given, any value of a kind):
`--topic` (the input topic, header `__autopilot.errors.topic`), `--error-class`,
`--pipeline` (`source` or `source/intake`), `--since`/`--until` (ISO times, compared with
`__autopilot.errors.failure.time`; `--since` inclusive, `--until` exclusive). `list --since`
reads only the dead letters written from a minute before `--since` on (by record timestamp).

`replay` writes only to the worker-private retry topic `<WORKER_APP_ID>.retry`, never to a
topic that other consumer groups read; `worker.replay` says how headers are rewritten and how
the worker runs a replayed message. It skips, and counts, letters whose
`__autopilot.errors.replay.count` has reached `--max-replays` (the loop stopper), letters
superseded by a later letter of the same input message with a higher replay count (that later
one is the one to replay; `--include-superseded` replays both), and letters that do not say
which stage failed them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from worker.dlq import DeadLetterHeaders
from worker.records import OutboundRecord, header
from worker.replay import ReplayTarget, replay_count, replay_headers
from worker.settings import Settings, get_settings
from worker.topics import TopicNames

__all__ = [
    "DeadLetter",
    "DlqError",
    "Filters",
    "LetterRef",
    "Progress",
    "ReplayPlan",
    "main",
    "plan_replay",
    "run_dlq",
]

#: How long a read may go without any progress before the command gives up.
IDLE_TIMEOUT_S = 30.0
#: `list --since` starts reading at dead letters written this long before `since`.
SINCE_MARGIN = timedelta(minutes=1)
MESSAGE_CHARS = 100


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
                return _aware(datetime.fromisoformat(text))
            except ValueError:
                pass
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def origin(self) -> tuple[str, str, str] | None:
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
            "topic_partition": _int_or_none(self._text(DeadLetterHeaders.PARTITION)),
            "topic_offset": _int_or_none(self._text(DeadLetterHeaders.OFFSET)),
            "error_class": self.error_class,
            "status": _int_or_none(self.status),
            "message": self.message,
            "replay_count": self.replay_count,
            "key": _render(self.key)[1] if self.key is not None else None,
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


@dataclass(frozen=True, slots=True)
class PlannedReplay:
    letter: DeadLetter
    target: ReplayTarget
    record: OutboundRecord

    @property
    def replay_number(self) -> int:
        return self.letter.replay_count + 1


@dataclass
class ReplayPlan:
    """What `replay` will write, and what it skips and why."""

    replays: list[PlannedReplay] = field(default_factory=list)
    at_max_replays: list[DeadLetter] = field(default_factory=list)
    superseded: list[DeadLetter] = field(default_factory=list)
    without_target: list[DeadLetter] = field(default_factory=list)

    def skipped_text(self, max_replays: int) -> str:
        return (
            f"skipped {len(self.at_max_replays)} at --max-replays {max_replays}, "
            f"{len(self.superseded)} superseded by a later replay, "
            f"{len(self.without_target)} without a stage to replay through"
        )


def plan_replay(
    letters: Iterable[DeadLetter],
    *,
    retry_topic: str,
    max_replays: int,
    latest_replay: dict[tuple[str, str, str], int] | None = None,
) -> ReplayPlan:
    """Sort the selected letters into replays and skips.

    `latest_replay` maps an input message (topic, partition, offset) to the highest replay
    count any letter of it carries; a letter below that count is superseded. None: no letter is.
    """
    plan = ReplayPlan()
    for letter in letters:
        target = letter.target
        origin = letter.origin
        if target is None:
            plan.without_target.append(letter)
        elif letter.replay_count >= max_replays:
            plan.at_max_replays.append(letter)
        elif (
            latest_replay is not None
            and origin is not None
            and latest_replay.get(origin, 0) > letter.replay_count
        ):
            plan.superseded.append(letter)
        else:
            record = OutboundRecord(
                topic=retry_topic,
                key=letter.key,
                value=letter.value,
                headers=replay_headers(letter.headers, target, key=letter.key),
            )
            plan.replays.append(PlannedReplay(letter, target, record))
    return plan


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

    def render(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = round(fraction * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        return f"{self._label} [{bar}] {self.done}/{self.total} {fraction:4.0%}"

    def advance(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total)
        if self._tty:
            self._stream.write("\r" + self.render())
            self._stream.flush()
            return
        tenth = self.done * 10 // self.total if self.total else 10
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self._stream.write(self.render() + "\n")
            self._stream.flush()

    def start(self) -> None:
        if self._tty:
            self._stream.write(self.render())
            self._stream.flush()
        else:
            self.advance(0)

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\n")
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
        bootstrap_servers=settings.kafka_bootstrap_servers,
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
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.worker_app_id}-dlq",
    )


async def read_all(
    settings: Settings, *, written_since: datetime | None = None
) -> AsyncIterator[DeadLetter]:
    """Every dead letter, partition by partition interleaved, up to the end offsets at start;
    with `written_since`, only those written then or later (by their record timestamps)."""
    tps = await _partitions(settings, settings.topic_dead_letters)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
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
    seen = matched = 0
    # A dead letter is written after it failed, so none that failed since `since` was written
    # before it; a minute's margin covers a broker stamping records by its own, earlier clock.
    written_since = None if filters.since is None else filters.since - SINCE_MARGIN
    async for letter in read_all(settings, written_since=written_since):
        seen += 1
        if not filters.matches(letter):
            continue
        matched += 1
        out.write(_json_line(letter.summary()) if ns.json else letter.line() + "\n")
    read = "" if written_since is None else f" written since {written_since.isoformat()}"
    err.write(f"{matched} of {seen} dead letters{read} on {settings.topic_dead_letters} matched\n")
    return 0


async def _show(ns: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    (letter,) = await read_refs(settings, [ns.ref])
    if ns.json:
        out.write(_json_line(_full(letter, settings.topic_dead_letters)))
        return 0
    written = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
    out.write(
        f"dead letter {letter.ref} on {settings.topic_dead_letters}, "
        f"written {written.isoformat(timespec='milliseconds')}\n"
    )
    if letter.key is None:
        out.write("key: (none)\n")
    else:
        encoding, text = _render(letter.key)
        out.write(f"key ({encoding}): {text}\n")
    out.write("headers:\n")
    for name, value in letter.headers:
        encoding, text = _render(value)
        prefix = "" if encoding == "utf-8" else f"({encoding}) "
        out.write(f"  {name}: {prefix}{text}\n")
    encoding, text = _render(letter.value)
    out.write(f"value ({encoding}, {len(letter.value)} bytes):\n{text}\n")
    return 0


async def _replay(ns: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    names = TopicNames.from_settings(settings)
    _refuse_shared_retry_topic(names)
    filters = _filters(ns)
    if ns.refs:
        letters = [x for x in await read_refs(settings, ns.refs) if filters.matches(x)]
        plan = plan_replay(letters, retry_topic=names.retry, max_replays=ns.max_replays)
    else:
        selected: list[DeadLetter] = []
        latest: dict[tuple[str, str, str], int] = {}
        async for letter in read_all(settings):
            origin = letter.origin
            if origin is not None:
                latest[origin] = max(latest.get(origin, 0), letter.replay_count)
            if filters.matches(letter):
                selected.append(letter)
        plan = plan_replay(
            selected,
            retry_topic=names.retry,
            max_replays=ns.max_replays,
            latest_replay=None if ns.include_superseded else latest,
        )

    verb = "would replay" if ns.dry_run else "replaying"
    for item in plan.replays:
        out.write(
            f"{verb} {item.letter.ref} -> {item.target} (replay {item.replay_number}, "
            f"{item.letter.error_class or '?'}, {len(item.letter.value)} bytes)\n"
        )
    for letter in plan.at_max_replays:
        err.write(f"skipping {letter.ref}: replayed {letter.replay_count} times already\n")
    skipped = plan.skipped_text(ns.max_replays)
    if ns.dry_run:
        out.write(f"dry run: {len(plan.replays)} to replay onto {names.retry}; {skipped}\n")
        return 0
    if plan.replays:
        await _produce(settings, names.retry, plan.replays, err)
    out.write(f"replayed {len(plan.replays)} onto {names.retry}; {skipped}\n")
    return 0


def _refuse_shared_retry_topic(names: TopicNames) -> None:
    shared = {
        names.email_events,
        names.segment_calls,
        names.segment_tracks,
        names.autopilot_requests,
        names.autopilot_deliveries,
        names.dead_letters,
    }
    if names.retry in shared:
        raise DlqError(f"the retry topic {names.retry!r} is also a shared topic: refusing")


async def _produce(
    settings: Settings, retry_topic: str, replays: Sequence[PlannedReplay], err: TextIO
) -> None:
    try:
        await _partitions(settings, retry_topic)
    except DlqError:
        raise DlqError(
            f"the retry topic {retry_topic!r} does not exist (run `python -m worker topics`)"
        ) from None

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        client_id=f"{settings.worker_app_id}-dlq",
    )
    progress = Progress(len(replays), err, "replaying")
    await producer.start()
    try:
        progress.start()
        pending = []
        for item in replays:
            record = item.record
            future = await producer.send(
                record.topic, value=record.value, key=record.key, headers=record.headers
            )
            future.add_done_callback(lambda _: progress.advance())
            pending.append(future)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
        progress.finish()


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


def _json_line(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() + "\n"


def _filters(ns: argparse.Namespace) -> Filters:
    return Filters(
        topics=tuple(ns.topic or ()),
        error_classes=tuple(ns.error_class or ()),
        pipelines=tuple(ns.pipeline or ()),
        since=ns.since,
        until=ns.until,
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (repeat a flag to accept any of its values)")
    group.add_argument("--topic", action="append", help="input topic the message came from")
    group.add_argument("--error-class", action="append", help="e.g. DecodeError")
    group.add_argument("--pipeline", action="append", help="`source` or `source/intake`")
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
    show.add_argument("--json", action="store_true", help="one JSON object")
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
        if ns.command == "list":
            return await _list(ns, settings, out, err)
        if ns.command == "show":
            return await _show(ns, settings, out)
        return await _replay(ns, settings, out, err)
    except DlqError as exc:
        err.write(f"dlq: {exc}\n")
        return 1
    except KafkaError as exc:
        err.write(f"dlq: Kafka at {settings.kafka_bootstrap_servers}: {exc!r}\n")
        return 1


def main(argv: Sequence[str]) -> int:
    """`python -m worker dlq ...`."""
    try:
        return asyncio.run(run_dlq(argv))
    except KeyboardInterrupt:
        return 130
