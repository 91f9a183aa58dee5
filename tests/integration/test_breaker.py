"""A bad deploy must not pour the stream into dead letters: the breaker stops the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.kafkautil import committed_offsets, consume_all, end_offsets, produce
from tests.workerproc import WorkerProcess, worker_env
from worker.streaming import EXIT_FATAL


async def test_breaker_stops_the_worker_without_committing(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    env = worker_env(
        kafka_bootstrap,
        unique,
        DLQ_BREAKER_WINDOW="50",
        DLQ_BREAKER_MIN_MESSAGES="20",
        DLQ_BREAKER_MAX_RATIO="0.5",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_for_log("[^Worker]: Ready")
        await produce(kafka_bootstrap, env["TOPIC_EMAIL_EVENTS"], [(None, b"not json", [])] * 60)
        for _ in range(120):
            if not worker.running:
                break
            await asyncio.sleep(0.5)
        assert worker.proc is not None
        assert worker.proc.returncode == EXIT_FATAL
        assert "DeadLetterRateExceeded" in worker.log_text()
        assert "stopping so a bad deploy cannot pour" in worker.log_text()
        letters = await consume_all(kafka_bootstrap, env["TOPIC_DEAD_LETTERS"], 60, timeout=3)
        assert len(letters) < 60
        ends = await end_offsets(kafka_bootstrap, env["TOPIC_EMAIL_EVENTS"])
        committed = await committed_offsets(
            kafka_bootstrap, env["WORKER_APP_ID"], env["TOPIC_EMAIL_EVENTS"], wait_s=5
        )
        assert sum(committed.values()) < sum(ends.values())
    finally:
        worker.stop()
