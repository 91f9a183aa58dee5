"""Feeding a worker its inputs, waiting for it to finish, and accounting for what it did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from tests.reliability.inputs import Fate, Input
from tests.reliability.ledger import Ledger
from tests.reliability.topics import read_topic, topic_sizes, wait_caught_up
from worker.settings import Settings
from worker.topics import TopicNames

__all__ = [
    "collect",
    "consumed_topics",
    "output_topics",
    "produce_inputs",
    "settle",
    "topic_names",
    "wait_for_outputs",
]

#: Room for the largest fuzzed value (the broker's default limit is 1,048,588 bytes).
MAX_REQUEST_BYTES = 1_048_576


def topic_names(env: dict[str, str]) -> TopicNames:
    """The worker's topic map for the environment a `WorkerProcess` runs with."""
    return TopicNames.from_settings(
        Settings.model_validate({key.lower(): value for key, value in env.items()})
    )


def consumed_topics(env: dict[str, str]) -> list[str]:
    """The topics the worker's consumer group reads from producers and from itself."""
    names = topic_names(env)
    return [
        names.email_events,
        names.segment_calls,
        names.source_by_email,
        names.destination_by_user,
    ]


def output_topics(env: dict[str, str]) -> list[str]:
    names = topic_names(env)
    return [names.segment_tracks, names.autopilot_requests, names.dead_letters]


async def produce_inputs(
    bootstrap: str,
    env: dict[str, str],
    inputs: Sequence[Input],
    *,
    chunk: int = 2_000,
    per_second: float | None = None,
) -> float:
    """Send every input to its topic (acks=all), `chunk` at a time, at most `per_second` when
    given (so that a fault can land mid-stream however fast the worker is); the seconds it took."""
    started = time.monotonic()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        client_id="reliability-producer",
        max_request_size=MAX_REQUEST_BYTES,
        linger_ms=5,
    )
    await producer.start()
    try:
        for first in range(0, len(inputs), chunk):
            futures = [
                await producer.send(
                    env[item.topic], key=item.key, value=item.value, headers=item.headers
                )
                for item in inputs[first : first + chunk]
            ]
            await asyncio.gather(*futures)
            if per_second:
                ahead = (first + chunk) / per_second - (time.monotonic() - started)
                await asyncio.sleep(max(0.0, ahead))
    finally:
        await producer.stop()
    return time.monotonic() - started


async def wait_for_outputs(
    bootstrap: str,
    env: dict[str, str],
    target: int,
    timeout: float,  # noqa: ASYNC109  (a deadline, asserted on)
) -> int:
    """Wait until the output and dead-letter topics hold `target` records; the count seen."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            seen = sum((await topic_sizes(bootstrap, output_topics(env))).values())
        except Exception:  # a restarting broker: try again
            seen = 0
        if seen >= target:
            return seen
        await asyncio.sleep(0.25)
    raise AssertionError(f"only {seen} of {target} output records after {timeout}s")


async def settle(
    bootstrap: str,
    env: dict[str, str],
    timeout: float,  # noqa: ASYNC109  (a deadline, asserted on)
    *,
    check: bool = True,
    stall_s: float = 60.0,
) -> tuple[float, dict[str, int]]:
    """Wait until the worker committed every record it reads: the seconds it took, and the lag
    left (asserted to be none unless `check` is false, for a caller that reports first). Gives
    up early when the lag has not moved for `stall_s`."""
    started = time.monotonic()
    group, topics = env["WORKER_APP_ID"], consumed_topics(env)
    lag = await wait_caught_up(bootstrap, group, topics, timeout, stall_s=stall_s)
    assert not check or not any(lag.values()), f"not caught up in {timeout}s: lag {lag}"
    return time.monotonic() - started, lag


async def collect(bootstrap: str, env: dict[str, str], inputs: Sequence[Input]) -> Ledger:
    """The ledger of `inputs` against everything on the output and dead-letter topics."""
    names = topic_names(env)
    ledger = Ledger(inputs)
    ledger.add_outputs(await read_topic(bootstrap, names.segment_tracks), Fate.TRACK)
    ledger.add_outputs(await read_topic(bootstrap, names.autopilot_requests), Fate.REQUEST)
    ledger.add_dead_letters(await read_topic(bootstrap, names.dead_letters))
    if ledger.lost:
        for topic in (names.source_by_email, names.destination_by_user):
            ledger.locate(topic, await read_topic(bootstrap, topic))
    return ledger
