"""During an Autopilot outage a rebalance or a shutdown does not wait for the delivery batch in
hand: after `AUTOPILOT_GIVE_BACK_AFTER_S` it is given back unacked, and delivered once the API
answers again, by whichever worker owns its partition then.

Each test has its own workers (same consumer group, so a second one rebalances the first) and the
module's stand-in, which answers every request 503 until the test heals it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.standin import identify, outcomes_for, produce_calls, set_faults, state
from tests.workerproc import READY, WorkerProcess, free_port, until_ready, worker_env

API_KEY = "test-key-give-back"
GIVE_BACK_AFTER_S = 2.0


StartWorker = Callable[[], Awaitable[WorkerProcess]]


@pytest.fixture
def start_worker(kafka_bootstrap: str, fake_api: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Starts a worker of the test's consumer group, delivering to the stand-in, once ready;
    every one is stopped at the end."""
    started: list[WorkerProcess] = []
    env = worker_env(
        kafka_bootstrap,
        uuid.uuid4().hex[:10],
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID="0001",
        AUTOPILOT_BULK_LINGER_MS="100",
        AUTOPILOT_GIVE_BACK_AFTER_S=str(GIVE_BACK_AFTER_S),
    )

    async def start() -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}" / "worker.log"
        log.parent.mkdir()
        process = WorkerProcess({**env, "WORKER_WEB_PORT": str(free_port())}, log).start()
        started.append(process)
        await asyncio.to_thread(process.wait_for_log, READY)  # the stand-in runs on this loop
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


async def refused(fake_api: str) -> int:
    """How many requests the stand-in has answered 503 so far."""
    routes = (await state(fake_api))["requests"]["by_route"].values()
    return sum(statuses.get("503", 0) for statuses in routes)


async def batch_in_the_outage(
    start_worker: StartWorker, fake_api: str, name: str, count: int
) -> tuple[WorkerProcess, set[str]]:
    """A worker whose delivery batch of `count` identify calls is meeting the outage (the
    stand-in refused two of its requests); their messageIds."""
    worker = await start_worker()
    tag = uuid.uuid4().hex[:6]
    before = await refused(fake_api)
    calls = [identify(f"{name}{i}-{tag}@example.com", f"{tag}-{i}") for i in range(count)]
    await produce_calls(worker, calls)
    deadline = time.monotonic() + 60
    while await refused(fake_api) < before + 2:
        assert time.monotonic() < deadline, "the worker never tried to deliver"
        await asyncio.sleep(0.2)
    return worker, {f"{tag}-{i}" for i in range(count)}


@pytest.fixture(autouse=True)
async def outage(fake_api: str) -> None:
    await set_faults(fake_api, force_status=503)


async def test_a_warm_shutdown_gives_the_batch_back_and_the_next_worker_delivers_it(
    start_worker: StartWorker, fake_api: str
) -> None:
    first, ids = await batch_in_the_outage(start_worker, fake_api, "down", 5)

    began = time.monotonic()
    status = await asyncio.to_thread(first.stop, 60)
    took = time.monotonic() - began

    assert status == 0, first.log_text()[-3000:]  # warm: not killed after the timeout
    assert took < GIVE_BACK_AFTER_S + 20, took
    assert "delivery gave back" in first.log_text()
    assert await outcomes_for(first, ids, wait_s=3) == {}  # nothing of it was written

    await set_faults(fake_api, force_status=None)
    second = await start_worker()
    outcomes = await outcomes_for(second, ids)
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    assert set(outcomes) == ids


async def test_a_rebalance_does_not_wait_for_the_outage_and_nothing_is_lost(
    start_worker: StartWorker, fake_api: str
) -> None:
    first, ids = await batch_in_the_outage(start_worker, fake_api, "moved", 12)

    second = await start_worker()  # joins the group: the first worker's partitions are revoked
    await until_ready(second, within_s=GIVE_BACK_AFTER_S + 30)
    assert "delivery gave back" in first.log_text()
    assert first.running

    await set_faults(fake_api, force_status=None)
    outcomes = await outcomes_for(second, ids)
    assert set(outcomes) == ids
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
