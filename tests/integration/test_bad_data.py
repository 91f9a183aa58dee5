"""Bad data never stops the stream: concentrated bursts are dead-lettered and the worker runs on.

The mixes a real Segment source and a bad producer send, with the breaker at its defaults (a
window of 1,000, tripping above 80 %): 3,000 anonymous tracks under a catch-all trigger among
300 identifies, and 500 garbage email events among valid ones. Each ends with the worker
running and ready, every bad message on the dead-letter topic with its reason, every good one
delivered or written, every input offset committed (nothing lost), the other pipeline unaffected.
"""

from __future__ import annotations

import uuid

import httpx
import orjson

from tests.integration.standin import identify, outcomes_for, state
from tests.kafkautil import Record, consume_all, produce, wait_until_read
from tests.workerproc import WorkerProcess
from worker.pipeline.dead_letters import DeadLetterHeaders as H

API_KEY = "bad-data-key-51c2"
TRIGGER = "0001"  # catch-all: every track needs an email


def _anonymous_track(tag: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": f"anon-{tag}-{n}",
            "messageId": f"{tag}-anon-{n}",
            "properties": {"sku": n},
        }
    )


def _email_event(tag: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"evt-{tag}-{n}",
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00Z",
            "contact": {"contact_id": f"person-{tag}-{n}", "email": f"open{n}-{tag}@example.com"},
            "email": {"id": "email_1", "subject": "Welcome"},
        }
    )


def _garbage(n: int) -> bytes:
    kinds = [b"{not json", b"[1, 2, 3]", b"\xff\xfe\x00", b'{"id": 7}', b"null", b""]
    return kinds[n % len(kinds)] + str(n).encode() * (n % 3)


async def _ready(worker: WorkerProcess) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=worker.web_url, timeout=10) as client:
        response = await client.get("/readyz")
    body: dict[str, object] = response.json()
    assert response.status_code == 200, body
    return body


async def test_3000_anonymous_tracks_under_a_catch_all_trigger_among_300_identifies(
    delivery_worker: WorkerProcess, fake_api: str
) -> None:
    env = delivery_worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:6]
    records: list[Record] = []
    identifies: set[str] = set()
    for n in range(3_000):
        records.append((f"anon-{tag}-{n}".encode(), _anonymous_track(tag, n), []))
        if n % 10 == 0:
            email = f"known{n}-{tag}@example.com"
            call = identify(email, f"{tag}-id-{n}", plan="pro")
            identifies.add(f"{tag}-id-{n}")
            records.append((f"u-{email}".encode(), call, []))
    # the source pipeline at the same time: it must not notice
    events: list[Record] = [
        (f"open{n}-{tag}@example.com".encode(), _email_event(tag, n), []) for n in range(100)
    ]
    await produce(bootstrap, env["TOPIC_SEGMENT_CALLS"], records)
    await produce(bootstrap, env["TOPIC_EMAIL_EVENTS"], events)

    outcomes = await outcomes_for(delivery_worker, identifies, wait_s=120)
    assert len(outcomes) == 300
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    contacts = (await state(fake_api))["contacts"]
    assert all(f"known{n}-{tag}@example.com" in contacts for n in range(0, 3_000, 10))

    letters = [
        r
        for r in await consume_all(bootstrap, env["TOPIC_DEAD_LETTERS"], 10**9, timeout=5)
        if f'"{tag}-anon-'.encode() in r.value
    ]
    assert len(letters) == 3_000
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[H.CLASS_NAME] == b"ValidationError"
        assert headers[H.MESSAGE] == b"Email is required for track calls"
        assert headers[H.STATUS] == b"400"
    assert {r.value for r in letters} == {v for _, v, _ in records if b"-anon-" in v}

    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 10**9, timeout=5)
    ids = {orjson.loads(t.value)["messageId"] for t in tracks}
    assert {f"autopilot-evt-{tag}-{n}" for n in range(100)} <= ids

    # nothing lost: every input offset committed; the worker runs on and is ready
    await wait_until_read(bootstrap, env["WORKER_APP_ID"], env["TOPIC_SEGMENT_CALLS"])
    await wait_until_read(bootstrap, env["WORKER_APP_ID"], env["TOPIC_EMAIL_EVENTS"])
    assert delivery_worker.running
    await _ready(delivery_worker)
    assert "paused" not in delivery_worker.log_text()


async def test_500_garbage_records_among_valid_events_while_calls_flow(
    delivery_worker: WorkerProcess,
) -> None:
    env = delivery_worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:6]
    marker = f"garbage-{tag}".encode()
    garbage: list[Record] = [(None, _garbage(n), [("x-batch", marker)]) for n in range(500)]
    valid: list[Record] = [
        (f"open{n}-{tag}@example.com".encode(), _email_event(tag, n), []) for n in range(50)
    ]
    mixed: list[Record] = garbage[:250] + valid[:25] + garbage[250:] + valid[25:]
    calls = {f"{tag}-g-{n}": identify(f"g{n}-{tag}@example.com", f"{tag}-g-{n}") for n in range(50)}
    await produce(bootstrap, env["TOPIC_EMAIL_EVENTS"], mixed)
    await produce(
        bootstrap,
        env["TOPIC_SEGMENT_CALLS"],
        [(orjson.loads(c)["userId"].encode(), c, []) for c in calls.values()],
    )

    outcomes = await outcomes_for(delivery_worker, set(calls), wait_s=120)
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    assert len(outcomes) == 50

    records = await consume_all(bootstrap, env["TOPIC_DEAD_LETTERS"], 10**9, timeout=5)
    letters = [r for r in records if dict(r.headers).get("x-batch") == marker]
    assert len(letters) == 500
    assert sorted(r.value for r in letters) == sorted(v for _, v, _ in garbage)
    classes = {dict(r.headers)[H.CLASS_NAME] for r in letters}
    assert classes <= {b"DecodeError", b"ValidationError"}, classes
    assert all(dict(r.headers)[H.MESSAGE] for r in letters)  # a reason each
    assert all(dict(r.headers)[H.STATUS] == b"400" for r in letters)

    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 10**9, timeout=5)
    ids = {orjson.loads(t.value)["messageId"] for t in tracks}
    assert {f"autopilot-evt-{tag}-{n}" for n in range(50)} <= ids

    await wait_until_read(bootstrap, env["WORKER_APP_ID"], env["TOPIC_EMAIL_EVENTS"])
    assert delivery_worker.running
    body = await _ready(delivery_worker)
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["pipelines"] == {"ok": True, "detail": "no pipeline is paused"}


async def test_the_resume_endpoint_answers_loopback_without_a_token(
    delivery_worker: WorkerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=delivery_worker.web_url, timeout=10) as client:
        running = await client.post("/admin/pipelines/source/resume")
        unknown = await client.post("/admin/pipelines/nope/resume")
    assert running.status_code == 200
    assert running.json() == {"pipeline": "source", "resumed": False, "paused": False}
    assert unknown.status_code == 404
