"""The console's dead-letter feed on a real broker: a burst of letters is read a pause at a time,
what the ring would not keep is skipped, and the ring ends with the latest letters."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import orjson
import pytest

from tests.kafkautil import create_topics, produce
from tests.workerproc import worker_env
from worker.console import failures
from worker.console.failures import RING_SIZE, FailureFeed
from worker.errors import DecodeError
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.records import InboundMessage
from worker.settings import Settings

BURST = 5_000


def _letters(
    first: int, count: int, topic: str
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    letters = []
    for n in range(first, first + count):
        value = orjson.dumps({"id": f"evt_{n}", "contact": {"email": f"p{n}@example.com"}})
        message = InboundMessage("email-events", 0, n, 1_700_000_000_000, b"k", value)
        record = dead_letter(
            message, DecodeError(f"bad {n}"), topic=topic, pipeline="source", stage="intake"
        )
        letters.append((record.key, record.value, list(record.headers)))
    return letters


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_burst_is_skipped_to_the_latest_letters_the_ring_keeps(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a pause longer than the burst takes to write, however busy the machine: one pause, one skip
    monkeypatch.setattr(failures, "FOLLOW_PAUSE_S", 3.0)
    env = worker_env(kafka_bootstrap, uuid.uuid4().hex[:10])
    settings = Settings.model_validate({key.lower(): value for key, value in env.items()})
    topic = settings.topic_dead_letters
    await create_topics(kafka_bootstrap, [topic], 1)
    await produce(kafka_bootstrap, topic, _letters(0, 10, topic))
    feed = FailureFeed(settings, lambda text: text)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.loaded.wait(), 30)
        assert [f.ref.offset for f in feed.ring.latest()][:3] == [9, 8, 7]
        await produce(kafka_bootstrap, topic, _letters(10, BURST, topic))
        end = 10 + BURST
        await _until(lambda: feed.read_up_to({0: end}), 60)
        latest = feed.ring.latest()
        assert [f.ref.offset for f in latest] == list(range(end - 1, end - 1 - RING_SIZE, -1))
        assert latest[0].message == f"bad {end - 1}"
        assert feed.error is None
        # read a pause at a time, skipping what the ring would not keep: most was never read
        assert feed.records_read < end // 2, feed.records_read
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
