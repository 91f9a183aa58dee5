"""Ingest through a real worker and a real broker, fed by the official Segment client.

One worker for the module, with write keys, a webhook token and a trigger id set. The Segment
client (`segment-analytics-python`, pointed at the worker with `host`) sends identify and
track calls; they must arrive on the Segment calls topic as sent (plus receivedAt, no
writeKey) and then as Autopilot request descriptors. The 503 path is shown with a real
"Kafka cannot take them": the calls topic's max.message.bytes is lowered below any batch, so the
broker refuses every produce until it is set back (`test_ingest_unavailable` shows the other
kind, a produce that times out).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from segment.analytics import Client  # type: ignore[import-untyped]
from segment.analytics.request import APIError  # type: ignore[import-untyped]

from tests.kafkautil import consume_all, end_offsets
from tests.workerproc import WorkerProcess, running_worker
from worker.pipeline.dead_letters import DeadLetterHeaders as H

pytestmark = pytest.mark.integration

WRITE_KEY = "wk-integration-5f1c"
TOKEN = "tok-integration-9b2e"
TRIGGER = "0001"
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def ingest_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker serving the ingest endpoints, on topics of its own."""
    with running_worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("ingest"),
        SEGMENT_WRITE_KEYS=f"wk-other,{WRITE_KEY}",
        AUTOPILOT_WEBHOOK_TOKEN=TOKEN,
        AUTOPILOT_TRIGGER_ID=TRIGGER,
        INGEST_KAFKA_TIMEOUT_S=str(TIMEOUT_S),
    ) as process:
        yield process
    log = process.log_text()
    assert WRITE_KEY not in log, "the write key reached the worker's log"
    assert TOKEN not in log, "the webhook token reached the worker's log"


def _client(worker: WorkerProcess, **options: Any) -> Any:
    """The official client in sync mode: each call is one POST /v1/batch, errors raised."""
    return Client(
        WRITE_KEY, host=worker.web_url, sync_mode=True, max_retries=0, timeout=30, **options
    )


def _auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def _read_to_end(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record on `topic` now (each topic here is new: offsets start at 0)."""
    expected = sum((await end_offsets(bootstrap, topic)).values())
    records = await consume_all(bootstrap, topic, expected, timeout=30)
    assert len(records) == expected
    return records


async def _calls(worker: WorkerProcess) -> list[dict[str, Any]]:
    """Every message on the worker's Segment calls topic (each with its record key)."""
    env = worker.env
    records = await _read_to_end(env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_SEGMENT_CALLS"])
    return [orjson.loads(r.value) | {"__key": r.key} for r in records]


async def test_segment_client_calls_reach_the_topic_and_autopilot_requests(
    ingest_worker: WorkerProcess,
) -> None:
    client = _client(ingest_worker)
    user, email = f"u-{uuid.uuid4().hex[:6]}", "Ada.Lovelace@Example.com"
    await asyncio.to_thread(
        client.identify, user, {"email": email, "firstName": "Ada"}, message_id="m-identify"
    )
    await asyncio.to_thread(
        client.track, user, "Plan Upgraded", {"plan": "pro"}, message_id="m-track"
    )

    by_id = {m["messageId"]: m for m in await _calls(ingest_worker)}
    assert set(by_id) >= {"m-identify", "m-track"}
    identify, track = by_id["m-identify"], by_id["m-track"]
    assert identify["type"] == "identify"
    assert identify["traits"] == {"email": email, "firstName": "Ada"}
    assert track["type"] == "track"
    assert track["event"] == "Plan Upgraded"
    assert track["properties"] == {"plan": "pro"}
    for message in (identify, track):
        assert message["__key"] == user.encode()
        assert message["userId"] == user
        assert message["context"]["library"]["name"] == "analytics-python"
        assert "writeKey" not in message
        assert message["receivedAt"].endswith("Z")
        assert message["sentAt"]
        assert message["originalTimestamp"]
        assert message["timestamp"].endswith("Z")

    env = ingest_worker.env
    requests = await consume_all(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_AUTOPILOT_REQUESTS"], 2, timeout=60
    )
    descriptors = {d["message_id"]: d for d in (orjson.loads(r.value) for r in requests)}
    assert descriptors["m-identify"]["kind"] == "upsert_contact"
    assert descriptors["m-identify"]["path"] == "/v1/contact"
    assert descriptors["m-identify"]["json"]["contact"]["Email"] == email
    assert descriptors["m-track"]["kind"] == "trigger_journey"
    assert descriptors["m-track"]["path"].startswith(f"/v1/trigger/{TRIGGER}/contact/")
    assert descriptors["m-track"]["contact"] == email.lower()


async def test_gzip_from_the_client_and_by_hand(ingest_worker: WorkerProcess) -> None:
    client = _client(ingest_worker, gzip=True)
    await asyncio.to_thread(client.track, "u-gzip", "Zipped", {"n": 1}, message_id="m-gzip-1")
    body = gzip.compress(
        orjson.dumps(
            {
                "batch": [
                    {"type": "track", "userId": "u-gzip", "event": "Z", "messageId": "m-gzip-2"}
                ]
            }
        )
    )
    async with httpx.AsyncClient(base_url=ingest_worker.web_url) as http:
        response = await http.post(
            "/v1/batch", content=body, headers={**_auth(), "Content-Encoding": "gzip"}
        )
    assert (response.status_code, response.json()) == (200, {"success": True})
    ids = {m["messageId"] for m in await _calls(ingest_worker)}
    assert {"m-gzip-1", "m-gzip-2"} <= ids


async def test_limits_auth_and_bad_json(ingest_worker: WorkerProcess) -> None:
    big_message = {"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 33_000}}
    big_batch = {
        "batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 30_000}}]
        * 20
    }
    async with httpx.AsyncClient(base_url=ingest_worker.web_url, timeout=30) as http:
        too_big = await http.post("/v1/track", content=orjson.dumps(big_message), headers=_auth())
        assert too_big.status_code == 400
        assert too_big.json()["code"] == "message_too_large"
        batch = await http.post("/v1/batch", content=orjson.dumps(big_batch), headers=_auth())
        assert batch.status_code == 400
        assert batch.json()["code"] == "request_too_large"
        bomb = gzip.compress(orjson.dumps({"batch": [], "pad": " " * 600_000}))
        zipped = await http.post(
            "/v1/batch", content=bomb, headers={**_auth(), "Content-Encoding": "gzip"}
        )
        assert (zipped.status_code, zipped.json()["code"]) == (400, "request_too_large")
        bad = await http.post("/v1/identify", content=b"{oops", headers=_auth())
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_json")
        for headers, body in [
            ({}, {"userId": "u"}),
            (_auth("wk-wrong"), {"userId": "u"}),
            ({}, {"userId": "u", "writeKey": "wk-wrong"}),
        ]:
            refused = await http.post("/v1/identify", content=orjson.dumps(body), headers=headers)
            assert refused.status_code == 401
            assert WRITE_KEY not in refused.text
        by_body = await http.post(
            "/v1/identify",
            content=orjson.dumps({"userId": "u-body", "writeKey": WRITE_KEY, "messageId": "m-b"}),
        )
        assert by_body.status_code == 200

        # a browser's CORS preflight, then its answers: any origin, as Segment's API allows
        preflight = await http.options(
            "/v1/track",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        assert by_body.headers["Access-Control-Allow-Origin"] == "*"
        assert bad.headers["Access-Control-Allow-Origin"] == "*"

    with pytest.raises(APIError) as caught:
        await asyncio.to_thread(
            Client("wk-wrong", host=ingest_worker.web_url, sync_mode=True).track, "u", "E"
        )
    assert caught.value.status == 401
    stored = await _calls(ingest_worker)
    assert "m-b" in {m["messageId"] for m in stored}
    assert all(m["userId"] != "u" for m in stored)  # nothing refused was stored


async def test_sdk_paths_take_text_plain_bodies_with_the_write_key_inside(
    ingest_worker: WorkerProcess,
) -> None:
    """What Segment's browser and mobile SDKs post (the browser itself: test_ingest_browser)."""
    text_plain = {"Content-Type": "text/plain"}
    calls = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}
    async with httpx.AsyncClient(base_url=ingest_worker.web_url, timeout=30) as http:
        for letter, route in calls.items():
            body = {"writeKey": WRITE_KEY, "userId": "u-sdk", "messageId": f"m-sdk-{letter}"}
            response = await http.post(
                f"/v1/{letter}", content=orjson.dumps(body), headers=text_plain
            )
            assert (response.status_code, response.json()) == (200, {"success": True}), route
        for path in ("/v1/b", "/b"):
            batch = {
                "writeKey": WRITE_KEY,
                "batch": [{"type": "track", "userId": "u-sdk", "messageId": f"m-sdk{path}"}],
            }
            response = await http.post(path, content=orjson.dumps(batch), headers=text_plain)
            assert (response.status_code, response.json()) == (200, {"success": True}), path
    by_id = {m["messageId"]: m for m in await _calls(ingest_worker)}
    for letter, route in calls.items():
        assert by_id[f"m-sdk-{letter}"]["type"] == route
    assert by_id["m-sdk/v1/b"]["type"] == by_id["m-sdk/b"]["type"] == "track"
    assert all("writeKey" not in m for m in by_id.values())


async def test_every_error_of_the_web_server_is_json(ingest_worker: WorkerProcess) -> None:
    """The router's 404 and 405, on the ingest's paths and on the rest of the server."""
    async with httpx.AsyncClient(base_url=ingest_worker.web_url, timeout=30) as http:
        for method, path, status in [
            ("GET", "/v1/track", 405),
            ("GET", "/v1/t", 405),
            ("PUT", "/b", 405),
            ("GET", "/autopilot/events", 405),
            ("POST", "/healthz", 405),
            ("POST", "/v1/m", 404),
            ("POST", "/v1/nothing", 404),
            ("GET", "/nothing/here", 404),
        ]:
            response = await http.request(method, path, content=b"{}")
            assert response.status_code == status, (method, path, response.text)
            assert response.headers["Content-Type"].startswith("application/json"), path
            answer = response.json()
            assert answer["success"] is False
            assert answer["code"] == {404: "not_found", 405: "method_not_allowed"}[status]
            assert path in answer["message"]
            if path.startswith("/v1/") or path == "/b":
                assert response.headers["Access-Control-Allow-Origin"] == "*", path


async def test_autopilot_webhook(ingest_worker: WorkerProcess) -> None:
    event_id = f"evt_{uuid.uuid4().hex[:8]}"
    event = {
        "id": event_id,
        "type": "email_opened",
        "occurred_at": "2026-11-20T10:15:00+02:00",
        "contact": {"contact_id": "person_1", "email": "Hook@Example.com"},
        "email": {"id": "email_1", "subject": "Welcome"},
    }
    async with httpx.AsyncClient(base_url=ingest_worker.web_url, timeout=30) as http:
        wrong = await http.post("/autopilot/events", json=event, headers={"X-Autopilot-Token": "x"})
        assert wrong.status_code == 401
        missing = await http.post("/autopilot/events", json=event)
        assert missing.status_code == 401
        ok = await http.post("/autopilot/events", json=event, headers={"X-Autopilot-Token": TOKEN})
        assert (ok.status_code, ok.json()) == (200, {"success": True})
        ok_query = await http.post(
            "/autopilot/events", params={"token": TOKEN}, json=[{"id": "evt_bad"}]
        )
        assert ok_query.status_code == 200
        bad_json = await http.post(
            "/autopilot/events", content=b"[{", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert bad_json.status_code == 400

    env = ingest_worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    raw = await consume_all(bootstrap, env["TOPIC_EMAIL_EVENTS"], 2, timeout=30)
    by_key = {r.key: orjson.loads(r.value) for r in raw}  # two partitions: no order between
    assert by_key == {b"hook@example.com": event, None: {"id": "evt_bad"}}
    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 1, timeout=60)
    assert [orjson.loads(r.value)["messageId"] for r in tracks] == [f"autopilot-{event_id}"]
    # the event the webhook took without judging it is dead-lettered by the source's intake
    for _ in range(60):
        letters = await _read_to_end(bootstrap, env["TOPIC_DEAD_LETTERS"])
        source = [r.value for r in letters if dict(r.headers).get(H.PIPELINE) == b"source"]
        if source:
            break
        await asyncio.sleep(0.5)
    assert source == [b'{"id":"evt_bad"}']


async def _set_max_message_bytes(bootstrap: str, topic: str, value: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": value})]
        )
        for _ in range(100):  # the broker applies topic configs asynchronously
            [described] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": ""})]
            )
            entries = described.resources[0][4]
            if any(entry[0] == "max.message.bytes" and entry[1] == value for entry in entries):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"max.message.bytes of {topic} did not become {value}")
    finally:
        await admin.close()


@asynccontextmanager
async def _kafka_refusing(worker: WorkerProcess) -> AsyncIterator[None]:
    """While inside, the broker refuses every batch produced onto the calls topic (too large)."""
    bootstrap, topic = worker.env["KAFKA_BOOTSTRAP_SERVERS"], worker.env["TOPIC_SEGMENT_CALLS"]
    await _set_max_message_bytes(bootstrap, topic, "64")
    try:
        yield
    finally:
        await _set_max_message_bytes(bootstrap, topic, "1048588")


async def test_503_while_kafka_refuses_then_200_again(ingest_worker: WorkerProcess) -> None:
    body = orjson.dumps({"userId": "u-503", "event": "E", "messageId": "m-503"})
    async with httpx.AsyncClient(base_url=ingest_worker.web_url, timeout=30) as http:
        async with _kafka_refusing(ingest_worker):
            refused = await http.post("/v1/track", content=body, headers=_auth())
            with pytest.raises(APIError) as caught:
                await asyncio.to_thread(_client(ingest_worker).track, "u-503", "E")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "kafka_unavailable"
        assert caught.value.status == 503

        again = await http.post(
            "/v1/track",
            content=orjson.dumps({"userId": "u-ok", "event": "E", "messageId": "m-after"}),
            headers=_auth(),
        )
        assert again.status_code == 200
    stored = {m["messageId"] for m in await _calls(ingest_worker)}
    assert "m-after" in stored
    assert "m-503" not in stored  # refused by the broker: never stored, never answered 200
