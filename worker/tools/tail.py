"""`python -m worker tail [TOPIC ...]`: print records as they arrive on the worker's topics.

For watching the worker at work without a Kafka tool: by default the output topics (Segment
tracks, request descriptors, delivery outcomes) and the dead-letter topic, each record one line:
`topic[partition]@offset key=... value`, the value's JSON as written (cut after `--width`
characters). A dead letter is shown by its reason instead: the stage, the error class and
message, and the input it came from (`python -m worker dlq show` has the rest).

It reads with no consumer group and commits nothing, from the end of each topic (only what is
written from now on) or, with `--from-beginning`, from its start; until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from worker.pipeline.dead_letters import DeadLetterHeaders
from worker.pipeline.records import header
from worker.runtime.kafka_connection import kafka_client_config
from worker.settings import Settings, get_settings
from worker.topics import TopicNames

__all__ = ["Record", "default_topics", "main", "record_line", "tail"]

#: Values are cut after this many characters unless `--width` says otherwise.
WIDTH = 300


def default_topics(settings: Settings) -> list[str]:
    """The outputs and the dead letters: what a user feeding the worker wants to see."""
    names = TopicNames.from_settings(settings)
    return [
        names.segment_tracks,
        names.autopilot_requests,
        names.autopilot_deliveries,
        names.dead_letters,
    ]


def _text(data: bytes | None, width: int) -> str:
    if data is None:
        return "(none)"
    text = data.decode(errors="replace")
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else f"{text[: width - 3]}... ({len(data)} bytes)"


class Record(Protocol):
    """What `record_line` reads of a consumed record (aiokafka's `ConsumerRecord`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def record_line(record: Record, *, dead_letters: str, width: int = WIDTH) -> str:
    """The line `tail` prints for one record."""
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    if record.topic != dead_letters:
        return f"{where} key={_text(record.key, 80)} {_text(record.value, width)}"
    headers = list(record.headers or ())

    def field(name: str) -> str:
        raw = header(headers, name)
        return raw.decode(errors="replace") if raw is not None else "?"

    origin = (
        f"{field(DeadLetterHeaders.TOPIC)}[{field(DeadLetterHeaders.PARTITION)}]"
        f"@{field(DeadLetterHeaders.OFFSET)}"
    )
    reason = _text(field(DeadLetterHeaders.MESSAGE).encode(), width)
    return (
        f"{where} dead letter of {origin} in {field(DeadLetterHeaders.PIPELINE)}/"
        f"{field(DeadLetterHeaders.STAGE)}: {field(DeadLetterHeaders.CLASS_NAME)} "
        f"{field(DeadLetterHeaders.STATUS)}: {reason}"
    )


async def _partitions(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(
        **kafka_client_config(settings),
        client_id=f"{settings.worker_app_id}-tail",
    )
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = {
        entry["topic"]: [p["partition"] for p in entry.get("partitions", ())]
        for entry in described
        if entry.get("error_code") == 0
    }
    missing = [topic for topic in topics if not found.get(topic)]
    if missing:
        raise LookupError(
            f"no topic {', '.join(missing)} (the worker creates its topics at start-up; "
            "`python -m worker topics` does it alone)"
        )
    return [TopicPartition(t, p) for t in topics for p in sorted(found[t])]


async def tail(
    settings: Settings,
    topics: Sequence[str],
    out: TextIO,
    *,
    from_beginning: bool = False,
    width: int = WIDTH,
    max_records: int | None = None,
    started: asyncio.Event | None = None,
) -> int:
    """Print each record of `topics` as it arrives, until cancelled or `max_records` were
    printed; sets `started` once reading from the positions asked for."""
    tps = await _partitions(settings, topics)
    consumer = AIOKafkaConsumer(
        **kafka_client_config(settings),
        group_id=None,
        enable_auto_commit=False,
        client_id=f"{settings.worker_app_id}-tail",
    )
    await consumer.start()
    printed = 0
    try:
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, so nothing written after `started` is missed
            await consumer.position(tp)
        if started is not None:
            started.set()
        while max_records is None or printed < max_records:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    line = record_line(
                        record, dead_letters=settings.topic_dead_letters, width=width
                    )
                    out.write(line + "\n")
                    printed += 1
            out.flush()
    finally:
        await consumer.stop()
    return 0


def _width(text: str) -> int:
    value = int(text)
    if value < 20:
        raise argparse.ArgumentTypeError("at least 20")
    return value


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker tail",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "topics", nargs="*", metavar="TOPIC", help="default: the outputs and the dead letters"
    )
    parser.add_argument(
        "--from-beginning", action="store_true", help="every record kept, not only new ones"
    )
    parser.add_argument("--width", type=_width, default=WIDTH, help="cut values after this")
    args = parser.parse_args(list(argv))
    settings = get_settings()
    topics = args.topics or default_topics(settings)
    print(
        f"tail: {', '.join(topics)} on {settings.kafka_bootstrap_servers}, "
        f"{'from the beginning' if args.from_beginning else 'new records only'}; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        return asyncio.run(
            tail(settings, topics, sys.stdout, from_beginning=args.from_beginning, width=args.width)
        )
    except KeyboardInterrupt:
        return 0
    except LookupError as error:
        print(f"tail: {error.args[0]}", file=sys.stderr)
        return 1
    except KafkaError as error:
        print(f"tail: Kafka at {settings.kafka_bootstrap_servers}: {error!r}", file=sys.stderr)
        return 1
