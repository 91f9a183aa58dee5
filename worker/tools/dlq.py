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
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from worker.errors import FatalError
from worker.pipeline.letters import (
    LIST_COLUMNS,
    DeadLetter,
    Filters,
    LetterRef,
    aware,
    render_bytes,
)
from worker.pipeline.records import OutboundRecord
from worker.pipeline.replay_plan import (
    DEFAULT_MAX_REPLAYS,
    ReplayCensus,
    ReplayTally,
    plan_replay,
)
from worker.runtime.dead_letter_topic import (
    DeadLetterTopicError,
    end_offsets,
    partitions_of,
    read_all,
    read_refs,
)
from worker.runtime.kafka_connection import kafka_client_config
from worker.runtime.topic_admin import wait_for_kafka
from worker.settings import Settings, get_settings, mask, secret_values
from worker.topics import TopicNames

__all__ = [
    "DlqError",
    "Progress",
    "build_parser",
    "main",
    "run_dlq",
    "table",
]

#: Exit status when Kafka does not answer within KAFKA_STARTUP_TIMEOUT_S or refuses the
#: connection (credentials, certificates): the worker's own (EX_SOFTWARE).
EXIT_REFUSED = 70
#: `list --since` starts reading at dead letters written this long before `since`.
SINCE_MARGIN = timedelta(minutes=1)
#: `show` cuts a value or header longer than this many characters unless `--full`.
SHOW_CHARS = 4000
#: `replay` produces the letters it selected this many at a time, each lot acknowledged by the
#: broker before it reads the next: what it holds does not grow with the dead-letter topic.
REPLAY_CHUNK = 1000


class DlqError(Exception):
    """A reason the command cannot do what was asked; printed, exit status 1 (as is a reader's
    `DeadLetterTopicError`)."""


def table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """`list`'s lines: the header, then the rows, each column as wide as its widest cell."""
    everything = [LIST_COLUMNS, *rows]
    widths = [max(len(row[n]) for row in everything) for n in range(len(LIST_COLUMNS) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in everything
    ]


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
        encoding, text = render_bytes(letter.key)
        out.write(f"key ({encoding}): {_clip(text, limit)}\n")
    out.write("headers:\n")
    for name, value in letter.headers:
        encoding, text = render_bytes(value)
        prefix = "" if encoding == "utf-8" else f"({encoding}) "
        out.write(f"  {name}: {prefix}{_clip(text, limit)}\n")
    encoding, text = render_bytes(letter.value)
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
            await partitions_of(self._settings, self._retry_topic)
        except DeadLetterTopicError:
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


def _iso_time(text: str) -> datetime:
    try:
        return aware(datetime.fromisoformat(text))
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


def _full(letter: DeadLetter, topic: str) -> dict[str, Any]:
    def rendered(data: bytes | None) -> dict[str, str] | None:
        if data is None:
            return None
        encoding, text = render_bytes(data)
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
        default=DEFAULT_MAX_REPLAYS,
        help=f"skip letters replayed this many times already (default {DEFAULT_MAX_REPLAYS})",
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
    except (DlqError, DeadLetterTopicError) as exc:
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
