"""A produce Kafka never acknowledges ends in a 503 within INGEST_KAFKA_TIMEOUT_S, not a 200.

The webhook's target topic is deleted under a running worker; with topic auto-creation off
(as on the session's local broker) the producer cannot find a leader for it and waits, and the
request's deadline answers for it. The Segment API, whose topic is untouched, keeps working.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.kafkautil import consume_all, create_topics
from tests.workerproc import WorkerProcess, running_worker

pytestmark = pytest.mark.integration

WRITE_KEY = "wk-unavailable-77d0"
TOKEN = "tok-unavailable-31aa"
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def short_deadline_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with running_worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("ingest-unavailable"),
        SEGMENT_WRITE_KEYS=WRITE_KEY,
        AUTOPILOT_WEBHOOK_TOKEN=TOKEN,
        INGEST_KAFKA_TIMEOUT_S=str(TIMEOUT_S),
    ) as process:
        yield process


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    for _ in range(100):
        if topic not in await _topics(bootstrap):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} was not deleted")


async def test_a_produce_that_times_out_is_503(short_deadline_worker: WorkerProcess) -> None:
    env = short_deadline_worker.env
    bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_EMAIL_EVENTS"]
    await _delete_topic(bootstrap, topic)
    try:
        await _post_while_the_topic_is_missing(short_deadline_worker)
    finally:
        # The refused record is still in the producer, retried until the topic is back; until
        # then it would also hold up the worker's warm shutdown (faust flushes the producer).
        await create_topics(bootstrap, [topic], int(env["TOPIC_PARTITIONS"]))
    # At-least-once: what was answered 503 may still be stored; the client's retry would store
    # it again (with the same messageId when the client set one).
    late = await consume_all(bootstrap, topic, 1, timeout=60)
    assert [r.value for r in late] == [b'{"id":"evt_1"}']


async def _post_while_the_topic_is_missing(worker: WorkerProcess) -> None:
    env = worker.env
    bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_EMAIL_EVENTS"]
    base_url = f"http://127.0.0.1:{env['WORKER_WEB_PORT']}"
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        started = loop.time()
        answer = await http.post(
            "/autopilot/events", json={"id": "evt_1"}, headers={"X-Autopilot-Token": TOKEN}
        )
        took = loop.time() - started
        if topic in await _topics(bootstrap):
            pytest.skip("this broker auto-creates topics: the produce did not have to wait")
        assert answer.status_code == 503, answer.text
        assert answer.json() == {
            "success": False,
            "code": "kafka_timeout",
            "message": f"the messages were not stored within {TIMEOUT_S:g}s; retry",
        }
        assert TIMEOUT_S <= took < TIMEOUT_S + 3

        auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        segment = await http.post(
            "/v1/identify", json={"userId": "u-1"}, headers={"Authorization": f"Basic {auth}"}
        )
        assert segment.status_code == 200
    assert worker.running
    assert "Kafka did not acknowledge 1 record(s)" in worker.log_text()
