"""Three worker processes in one group share one API key's limit (the stand-in's 5 requests/s,
over 3 partitions): 3,000 contacts and 50 triggers with no violation, all delivered, and at least
80 % of the limit used; then a replica leaves and another joins mid-run, still no violation.

The workers run with a 1 s request timeout, so a share changes hands 2 s after it is given up
(the limiter's window plus the timeout) and the rotating remainder moves every 6 s: often enough
to even out within a run of about 20 s. The contacts are spread evenly over the partitions (a
share follows partitions, not work). The figures are printed (`pytest -s`; the README's). About
80 s, in `make test`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.standin import identify, outcomes_for, produce_calls, state, track
from tests.workerproc import READY, WorkerProcess, free_port, until_ready, worker_env
from worker.runtime.placement import home_partition

API_KEY = "test-key-shared-rate"
LIMIT = 5
PARTITIONS = 3
CONTACTS = 3000
TRIGGERS = 50


class Group:
    """Worker processes of one consumer group, delivering to the stand-in."""

    def __init__(self, kafka_bootstrap: str, fake_api: str, log_dir: Path) -> None:
        self.env = worker_env(
            kafka_bootstrap,
            uuid.uuid4().hex[:10],
            AUTOPILOT_API_KEY=API_KEY,
            AUTOPILOT_BASE_URL=fake_api,
            AUTOPILOT_TRIGGER_ID="0001",
            AUTOPILOT_RATE_LIMIT=str(LIMIT),
            AUTOPILOT_REQUEST_TIMEOUT_S="1",
            AUTOPILOT_GIVE_BACK_AFTER_S="2",
            TOPIC_PARTITIONS=str(PARTITIONS),
        )
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []

    async def start(self, count: int) -> list[WorkerProcess]:
        """`count` more workers, started together; once each is ready."""
        started = []
        for _ in range(count):
            log = self.log_dir / f"worker-{len(self.workers)}" / "worker.log"
            log.parent.mkdir()
            env = {**self.env, "WORKER_WEB_PORT": str(free_port())}
            started.append(WorkerProcess(env, log).start())
            self.workers.append(started[-1])
        await asyncio.gather(*(asyncio.to_thread(w.wait_for_log, READY) for w in started))
        return started

    @property
    def running(self) -> list[WorkerProcess]:
        return [worker for worker in self.workers if worker.running]

    async def settled(self, within_s: float = 90) -> None:
        """Once every running worker is ready (partitions assigned, no rebalance going on)."""
        deadline = time.monotonic() + within_s
        for worker in self.running:
            await until_ready(worker, within_s=max(deadline - time.monotonic(), 0.0))


@pytest.fixture(scope="module")
async def group(
    kafka_bootstrap: str, fake_api: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Group]:
    """Three workers in one group, each with a partition of every topic."""
    workers = Group(kafka_bootstrap, fake_api, tmp_path_factory.mktemp("group"))
    try:
        await workers.start(3)
        await workers.settled()
        yield workers
    finally:
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers.workers))


def spread(tag: str) -> list[str]:
    """CONTACTS emails, as many on each partition of the requests topic (keyed by email), in
    turn: a share follows partitions, so the run measures the sharing, not the hash's luck."""
    by_partition: list[list[str]] = [[] for _ in range(PARTITIONS)]
    candidates = (f"c{i}-{tag}@example.com" for i in itertools.count())
    while sum(map(len, by_partition)) < CONTACTS:
        email = next(candidates)
        mine = by_partition[home_partition(email.encode(), PARTITIONS)]
        if len(mine) < CONTACTS // PARTITIONS:
            mine.append(email)
    return [email for turn in zip(*by_partition, strict=True) for email in turn]


def calls(tag: str) -> tuple[list[bytes], set[str]]:
    """CONTACTS identifies, then a trigger for each of the first TRIGGERS contacts."""
    emails = spread(tag)
    batch = [identify(email, f"{tag}-i{i}", plan="pro") for i, email in enumerate(emails)]
    batch += [track(email, f"{tag}-t{i}") for i, email in enumerate(emails[:TRIGGERS])]
    ids = {f"{tag}-i{i}" for i in range(CONTACTS)} | {f"{tag}-t{i}" for i in range(TRIGGERS)}
    return batch, ids


def run_figures(before: dict[str, Any], after: dict[str, Any], since: float) -> dict[str, float]:
    """The run's requests at the stand-in (from its log, wall-clock `since`): how many, over how
    long, the share of the limit they used, and the violations."""
    log = [entry for entry in after["requests"]["log"] if entry["at"] >= since]
    times = sorted(entry["at"] for entry in log)
    busy_s = times[-1] - times[0] + 1.0  # from the first request to the end of the last's window
    return {
        "requests": len(log),
        "busy_s": round(busy_s, 1),
        "requests_per_s": round(len(log) / busy_s, 2),
        "share_of_limit": round(len(log) / busy_s / LIMIT, 3),
        "contacts_per_s": round(CONTACTS / busy_s, 1),
        "http_429": sum(1 for entry in log if entry["status"] == 429),
        "violations": after["http_429"]["rate_limited"] - before["http_429"]["rate_limited"],
    }


async def requests_seen(fake_api: str, since: float, count: int) -> None:
    """Once the stand-in has seen `count` requests since `since` (wall clock)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = (await state(fake_api))["requests"]["log"]
        if sum(1 for entry in log if entry["at"] >= since) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {count} requests within 60 s")


async def deliver_all(group: Group, ids: set[str]) -> None:
    """Once every call of `ids` has its outcome: delivered."""
    outcomes = await outcomes_for(group.running[0], ids, wait_s=150)
    assert len(outcomes) == len(ids)
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}


async def test_three_workers_share_the_key_within_its_limit_and_use_most_of_it(
    group: Group, fake_api: str
) -> None:
    await asyncio.sleep(2.5)  # the shares of the last rebalance take effect (a hand-over delay)
    tag = uuid.uuid4().hex[:6]
    batch, ids = calls(tag)
    before, since = await state(fake_api), time.time()
    await produce_calls(group.running[0], batch)
    await deliver_all(group, ids)

    after = await state(fake_api)
    figures = run_figures(before, after, since)
    print(f"\nshared rate, 3 workers: {figures}")
    assert figures["violations"] == 0
    assert figures["http_429"] == 0
    assert max(after["max_rate"].values()) <= LIMIT
    assert figures["share_of_limit"] >= 0.8, figures
    assert sum(1 for journey in after["journeys"] if tag in journey["email"]) == TRIGGERS


async def test_a_replica_leaving_and_another_joining_mid_run_keep_within_the_limit(
    group: Group, fake_api: str
) -> None:
    batch, ids = calls(uuid.uuid4().hex[:6])
    before, since = await state(fake_api), time.time()
    await produce_calls(group.running[0], batch)
    await requests_seen(fake_api, since, 20)

    leaving = group.running[0]
    status, (joined,) = await asyncio.gather(
        asyncio.to_thread(leaving.stop),  # a warm shutdown: scaled in
        group.start(1),  # and out again, meanwhile
    )
    assert status == 0
    await group.settled()  # the newcomer too: it owns a partition
    await deliver_all(group, ids)

    after = await state(fake_api)
    figures = run_figures(before, after, since)
    print(f"\nshared rate, one worker left and one joined: {figures}")
    assert figures["violations"] == 0
    assert figures["http_429"] == 0
    assert max(after["max_rate"].values()) <= LIMIT
    assert joined.running
