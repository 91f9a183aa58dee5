"""`python -m worker tail`: records written after it started, one line each; dead letters by
their reason; a topic that does not exist is one line."""

from __future__ import annotations

import asyncio
import io

import pytest

from tests.kafkautil import create_topics, produce
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.settings import Settings
from worker.tools.tail import tail

pytestmark = pytest.mark.integration


async def test_tail_prints_what_is_written_after_it_started(
    kafka_bootstrap: str, unique: str
) -> None:
    tracks, letters = f"tracks-{unique}", f"letters-{unique}"
    await create_topics(kafka_bootstrap, [tracks, letters], partitions=2)
    await produce(kafka_bootstrap, tracks, [(b"old", b'{"before": true}', [])])
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_dead_letters=letters)
    out, started = io.StringIO(), asyncio.Event()
    reading = asyncio.create_task(
        tail(settings, [tracks, letters], out, max_records=2, started=started)
    )
    await asyncio.wait_for(started.wait(), 30)
    await produce(kafka_bootstrap, tracks, [(b"u-1", b'{"event": "Email Opened"}', [])])
    dead = [
        (H.TOPIC, b"segment.calls"),
        (H.PARTITION, b"2"),
        (H.OFFSET, b"7"),
        (H.PIPELINE, b"destination"),
        (H.STAGE, b"map"),
        (H.CLASS_NAME, b"ValidationError"),
        (H.STATUS, b"400"),
        (H.MESSAGE, b"Email is required for track calls"),
    ]
    await produce(kafka_bootstrap, letters, [(b"u-2", b'{"type": "track"}', dead)])
    await asyncio.wait_for(reading, 30)
    lines = sorted(out.getvalue().splitlines())
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{letters}[")
    assert lines[0].endswith(
        "dead letter of segment.calls[2]@7 in destination/map: ValidationError 400: "
        "Email is required for track calls"
    )
    assert lines[1].startswith(f"{tracks}[")
    assert lines[1].endswith(' key=u-1 {"event": "Email Opened"}')
    assert "before" not in out.getvalue()


async def test_tail_from_the_beginning_and_a_missing_topic(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = f"tail-{unique}"
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    await produce(kafka_bootstrap, topic, [(None, b"x" * 400, [])])
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    out = io.StringIO()
    await asyncio.wait_for(
        tail(settings, [topic], out, from_beginning=True, max_records=1, width=50), 30
    )
    assert out.getvalue() == f"{topic}[0]@0 key=(none) {'x' * 47}... (400 bytes)\n"
    with pytest.raises(LookupError, match=f"no topic {topic}-missing"):
        await tail(settings, [f"{topic}-missing"], out)
