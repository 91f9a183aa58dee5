"""Fuzzed bad input on both input topics: the worker never crashes, every input is a dead letter.

Random bytes, truncated JSON, wrong types, huge values, deep nesting, invalid UTF-8 and JSON that
is no object (`tests.reliability.inputs.fuzz_inputs`), with random keys and now and then a
binary header. The worker must keep running with no agent crashed or restarted, and each input
must be on the dead-letter topic exactly once: its key, value and headers, the topic it was
written to, and a reason (class, message, status).

Two failures found on the way are kept as tests, each the smallest reproduction: a bad input
near the broker's size limit (its dead letter is larger than the input), and a dead letter of a
map stage (it must carry the producer's key, not the re-keyed one).
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from aiokafka import ConsumerRecord

from tests.kafkautil import consume_all, produce
from tests.reliability.inputs import EMAIL_EVENTS, SEGMENT_CALLS, TRIGGER_ID, fuzz_inputs
from tests.reliability.report import report
from tests.reliability.stream import collect, produce_inputs, settle
from tests.reliability.supervisor import Supervisor, crash_lines
from tests.workerproc import worker_env
from worker.pipeline.dead_letters import DeadLetterHeaders as H

pytestmark = pytest.mark.integration

#: Every input of this test is bad. With the default breaker (stop when more than 80% of the
#: last 1,000 messages were dead-lettered, once 200 were seen) the worker would stop by design
#: after 200 of them; a ratio of 1 can never be exceeded, so this turns the breaker off.
#: test_breaker.py covers the breaker itself.
BREAKER_OFF = {"DLQ_BREAKER_MAX_RATIO": "1"}

#: faust's lines when a consumer group rebalances; in a lone worker after "Ready" they would
#: mean the worker fell out of its group (a blocked event loop) and its agents were restarted.
REBALANCE_LINES = ("Restarting on rebalance", "(Re-)joining group")


async def _fuzz(bootstrap: str, unique: str, tmp_path: Path, *, per_topic: int) -> None:
    started = time.monotonic()
    inputs = [
        item
        for pair in zip(
            fuzz_inputs(per_topic, EMAIL_EVENTS),
            fuzz_inputs(per_topic, SEGMENT_CALLS),
            strict=True,
        )
        for item in pair
    ]
    env = worker_env(bootstrap, unique, AUTOPILOT_TRIGGER_ID=TRIGGER_ID, **BREAKER_OFF)
    async with Supervisor(env, tmp_path / "worker.log") as worker:
        await worker.wait_ready()
        produce_s = await produce_inputs(bootstrap, env, inputs, chunk=500)
        settle_s, _ = await settle(bootstrap, env, 600)
        log = worker.log_text()
        running = worker.running
    ledger = await collect(bootstrap, env, inputs)
    after_ready = log.partition("[^Worker]: Ready")[2]
    rebalances = [
        line for line in after_ready.splitlines() if any(s in line for s in REBALANCE_LINES)
    ]
    report(
        f"fuzz, {per_topic:,} bad inputs per input topic",
        seconds=round(time.monotonic() - started, 1),
        produce_seconds=round(produce_s, 1),
        settle_seconds=round(settle_s, 1),
        megabytes=round(sum(len(i.value) for i in inputs) / 1e6, 1),
        dead_letters_by_topic=dict(ledger.dead_letters_by_topic),
        unexpected_error_lines=log.count("unexpected error in"),
        **worker.figures(),
        **ledger.figures(),
    )
    ledger.assert_complete()
    assert ledger.duplicates == 0
    assert ledger.dead_letters_by_topic == {
        env[EMAIL_EVENTS]: per_topic,
        env[SEGMENT_CALLS]: per_topic,
    }
    assert running, "the worker stopped"
    assert worker.starts == 1
    assert worker.exits == []
    assert crash_lines(log) == []
    assert rebalances == []


@pytest.mark.reliability
async def test_1000_fuzzed_inputs_per_topic(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    await _fuzz(kafka_bootstrap, unique, tmp_path, per_topic=1_000)


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_10000_fuzzed_inputs_per_topic(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    await _fuzz(kafka_bootstrap, unique, tmp_path, per_topic=10_000)


@pytest.mark.reliability
async def test_a_bad_input_near_the_broker_limit_is_dead_lettered(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique)
    bad = b'{"id": "' + b"x" * 1_000_000 + b'"}'  # no type: a ValidationError, 1,000,010 bytes
    letters: list[ConsumerRecord] = []
    async with Supervisor(env, tmp_path / "worker.log") as worker:
        await worker.wait_ready()
        await produce(kafka_bootstrap, env[EMAIL_EVENTS], [(b"k", bad, [])])
        deadline = time.monotonic() + 60
        # until it is dead-lettered or the worker stopped (its restart would read the same batch)
        while not letters and not worker.exits and time.monotonic() < deadline:
            letters = await consume_all(kafka_bootstrap, env["TOPIC_DEAD_LETTERS"], 1, timeout=1)
        log = worker.log_text()
    assert worker.exits == [], f"the worker stopped: {crash_lines(log)[:2]}"
    assert [r.value for r in letters] == [bad]


@pytest.mark.reliability
async def test_a_map_stage_dead_letter_keeps_the_producers_key(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique)
    # valid for intake, then a 400 in the map stage: no email given, none learned for the user
    call = orjson.dumps({"type": "identify", "userId": "nobody", "messageId": "m", "traits": {}})
    async with Supervisor(env, tmp_path / "worker.log") as worker:
        await worker.wait_ready()
        await produce(kafka_bootstrap, env[SEGMENT_CALLS], [(b"producer-key", call, [])])
        letters = await consume_all(kafka_bootstrap, env["TOPIC_DEAD_LETTERS"], 1, timeout=30)
    assert [dict(r.headers)[H.STAGE] for r in letters] == [b"map"]
    assert [(r.key, r.value) for r in letters] == [(b"producer-key", call)]
