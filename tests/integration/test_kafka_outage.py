"""Kafka lost while the worker runs: a few log lines a minute, `/readyz` says why, it recovers.

aiokafka logs a line per failed connection attempt (about 100 a second with the broker down);
the worker lets one Kafka client warning or error through every 10 s, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.kafkautil import LocalBroker
from tests.workerproc import running_worker, until_ready

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0


async def test_a_broker_outage_is_a_few_lines_a_minute_and_readyz_names_it(
    local_kafka: LocalBroker, tmp_path: Path
) -> None:
    with running_worker(local_kafka.bootstrap, tmp_path) as worker:
        lines_before = len(worker.log_text().splitlines())
        local_kafka.stop()
        stopped_at = time.monotonic()
        try:
            await asyncio.sleep(OUTAGE_S - 10)
            async with httpx.AsyncClient(base_url=worker.web_url, timeout=10) as client:
                during = (await client.get("/readyz")).json()
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
            lines = worker.log_text().splitlines()[lines_before:]
        finally:
            local_kafka.start()
        assert during["status"] == "not ready"
        assert "broker" in during["failing"]
        assert "Kafka unreachable" in during["checks"]["broker"]["detail"]
        held = [line for line in lines if "Kafka client warnings and errors" in line]
        assert held, "the clients' lines were neither logged nor counted"
        per_minute = len(lines) * 60 / OUTAGE_S
        print(f"\nbroker down {OUTAGE_S:g} s: {len(lines)} worker log lines ({per_minute:g}/min)")
        assert per_minute <= 20, "\n".join(lines[:40])
        await until_ready(worker, within_s=60)  # again, a minute after the broker came back
        assert worker.running
