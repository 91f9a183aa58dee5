"""The broker restarts mid-stream: nothing is lost.

Half of a mixed stream is produced, and once the worker is well into it the broker is stopped
and started again on the same ports and data; then the other half is produced. The stop is
either clean (SIGTERM: a controlled shutdown) or hard (SIGKILL, no time to shut down: a crash;
the broker then recovers its logs at start-up).

The worker runs under a supervisor that restarts it whenever it exits, as production runs it:
the worker exits (status 70) when a write to Kafka fails, so that the batch in hand stays
uncommitted, and is meant to be restarted. Whether it rode the restart out or
exited is reported, not asserted; what is asserted is the ledger: every input on an output topic
or in the dead letters.

Needs a broker this session started itself (`local_kafka`); skipped with the reason otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.kafkautil import LocalBroker
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

#: As in test_reliability_kill: should the worker exit, the member it leaves behind is given up
#: after 10 s instead of faust's 60 s.
FAST_REJOIN = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}


async def _restart_broker_mid_stream(
    broker: LocalBroker, unique: str, tmp_path: Path, *, count: int, hard: bool, wait_s: float
) -> None:
    started = time.monotonic()
    bootstrap = broker.bootstrap
    inputs = mixed_inputs(count)
    first, second = inputs[: count // 2], inputs[count // 2 :]
    expected_first = sum(1 for i in first if i.fate is not Fate.SKIP)
    env = worker_env(bootstrap, unique, AUTOPILOT_TRIGGER_ID=TRIGGER_ID, **FAST_REJOIN)
    async with Supervisor(env, tmp_path / "worker.log") as worker:
        await worker.wait_ready()
        await produce_inputs(bootstrap, env, first)
        await wait_for_outputs(bootstrap, env, expected_first // 3, wait_s)
        before = sum((await topic_sizes(bootstrap, output_topics(env))).values())
        restart_started = time.monotonic()
        # From the test's (main) thread on purpose: the broker is tied to the thread that
        # started it (die_with_parent). This blocks the event loop, and the supervisor with it,
        # until the broker answers again, as a supervisor would see it.
        if hard:
            broker.stop(grace=0.0)  # SIGTERM then SIGKILL at once
            broker.start()
        else:
            broker.restart()
        broker_restart_s = time.monotonic() - restart_started
        # the worker may have finished the first half before the stop: only the second half
        # proves that it works again
        await produce_inputs(bootstrap, env, second)
        await wait_for_outputs(bootstrap, env, before + 1, wait_s)
        resume_s = time.monotonic() - restart_started
        _, lag = await settle(bootstrap, env, wait_s, check=False)
        log = worker.log_text()
        running = worker.running
    ledger = await collect(bootstrap, env, inputs)
    crashes = crash_lines(log)
    report(
        f"broker {'killed -9' if hard else 'stopped'} and restarted, {count:,} messages",
        seconds=round(time.monotonic() - started, 1),
        outputs_before_restart=before,
        broker_restart_seconds=round(broker_restart_s, 1),
        seconds_to_resume=round(resume_s, 1),
        lag_left=lag,
        crash_lines=len(crashes),
        first_crash_line=crashes[0][:300] if crashes else None,
        **worker.figures(),
        **ledger.figures(),
    )
    ledger.assert_complete()
    assert not any(lag.values()), f"every input is out, but the worker's commits are stuck: {lag}"
    assert running, "the worker was not running at the end"


@pytest.mark.reliability
async def test_broker_restart_during_4000_messages(
    local_kafka: LocalBroker, unique: str, tmp_path: Path
) -> None:
    await _restart_broker_mid_stream(
        local_kafka, unique, tmp_path, count=4_000, hard=False, wait_s=120
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
async def test_broker_restart_during_20000_messages(
    local_kafka: LocalBroker, unique: str, tmp_path: Path, hard: bool
) -> None:
    await _restart_broker_mid_stream(
        local_kafka, unique, tmp_path, count=20_000, hard=hard, wait_s=600
    )
