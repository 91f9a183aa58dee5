"""kill -9 mid-stream, again and again: every input is accounted for, nothing is lost.

A mixed stream (valid and invalid Autopilot email events, valid and invalid Segment identify and
track calls, see `tests.reliability.inputs.mixed_inputs`) is produced while the worker runs; each
time the output topics reach the next fraction of what the stream must produce, the worker is
killed with SIGKILL (no shutdown, no commit) and started again at once, as a supervisor would.
At the end every input must be on an output topic (by messageId) or in the dead letters (by its
trace header, with its original bytes and a reason). Duplicates are allowed (at-least-once:
what a killed worker produced but had not committed is produced again) and counted. Last, the
worker's consumer group must have committed every record it read: a commit that stops moving is
reported as such (the ledger is checked first, so a stuck commit is told apart from a loss).

The worker runs with BROKER_SESSION_TIMEOUT at 10 s instead of its default 15 s: a SIGKILLed
consumer never leaves its group, so the restarted one gets its partitions only once the
coordinator gives up on the dead member's session. That wait is all the setting changes (see
the figures printed: `seconds_to_ready` and `seconds_to_resume`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.reliability.inputs import TRIGGER_ID, Fate, mixed_inputs
from tests.reliability.report import report
from tests.reliability.stream import (
    collect,
    output_topics,
    produce_inputs,
    settle,
    wait_for_outputs,
)
from tests.reliability.supervisor import Supervisor, crash_lines
from tests.reliability.topics import topic_sizes
from tests.workerproc import worker_env

pytestmark = pytest.mark.integration

#: A dead member is given up after this many seconds (faust's default: 60).
FAST_REJOIN = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}


async def _kill_mid_stream(
    bootstrap: str,
    unique: str,
    tmp_path: Path,
    *,
    count: int,
    kills: int,
    wait_s: float,
    settle_s: float,
) -> None:
    started = time.monotonic()
    inputs = mixed_inputs(count)
    expected = sum(1 for i in inputs if i.fate is not Fate.SKIP)
    env = worker_env(bootstrap, unique, AUTOPILOT_TRIGGER_ID=TRIGGER_ID, **FAST_REJOIN)
    resume_s: list[float] = []
    async with Supervisor(env, tmp_path / "worker.log") as worker:
        await worker.wait_ready()
        # paced over about ten seconds, so each kill lands while inputs are still arriving
        feeding = asyncio.create_task(
            produce_inputs(bootstrap, env, inputs, chunk=count // 40, per_second=count / 10)
        )
        for k in range(1, kills + 1):
            await wait_for_outputs(bootstrap, env, expected * k // (kills + 1), wait_s)
            await worker.kill9()
            killed_at = time.monotonic()
            before = sum((await topic_sizes(bootstrap, output_topics(env))).values())
            await worker.wait_ready()
            await wait_for_outputs(bootstrap, env, before + 1, wait_s)
            resume_s.append(round(time.monotonic() - killed_at, 1))
        produce_s = await feeding
        _, lag = await settle(bootstrap, env, settle_s, check=False, stall_s=30)
        log = worker.log_text()
        running = worker.running
    ledger = await collect(bootstrap, env, inputs)
    report(
        f"kill9 x{kills}, {count:,} messages",
        seconds=round(time.monotonic() - started, 1),
        produce_seconds=round(produce_s, 1),
        seconds_to_resume=resume_s,
        lag_left=lag,
        **worker.figures(),
        **ledger.figures(),
    )
    ledger.assert_complete()
    assert not any(lag.values()), f"every input is out, but the worker's commits are stuck: {lag}"
    assert running, "the worker was not running at the end"
    assert worker.exits == [], f"the worker exited by itself: {worker.exits}"
    assert crash_lines(log) == []


@pytest.mark.reliability
async def test_kill9_once_during_5000_messages(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    await _kill_mid_stream(
        kafka_bootstrap, unique, tmp_path, count=5_000, kills=1, wait_s=120, settle_s=45
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_kill9_three_times_during_100000_messages(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    await _kill_mid_stream(
        kafka_bootstrap, unique, tmp_path, count=100_000, kills=3, wait_s=600, settle_s=300
    )
