"""Destination and delivery through a real broker and the stand-in API on loopback.

One worker and one stand-in serve the module; each test uses contacts of its own.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from tests.integration.standin import (
    identify,
    outcomes_for,
    produce_calls,
    set_faults,
    state,
    track,
)
from tests.kafkautil import consume_all, produce
from tests.workerproc import WorkerProcess
from worker.pipeline.dead_letters import DeadLetterHeaders as H

API_KEY = "test-key-7d1f0c9a"
TRIGGER = "0001"


async def test_bulk_upserts_are_batched_and_merged(
    delivery_worker: WorkerProcess, fake_api: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    emails = [f"bulk{i}-{tag}@example.com" for i in range(200)]
    calls = [identify(e, f"{tag}-a{i}", plan="free", seats=1) for i, e in enumerate(emails)]
    calls += [identify(e, f"{tag}-b{i}", plan="pro") for i, e in enumerate(emails[:50])]
    before = await state(fake_api)
    await produce_calls(delivery_worker, calls)
    ids = {orjson.loads(c)["messageId"] for c in calls}
    outcomes = await outcomes_for(delivery_worker, ids)
    assert len(outcomes) == 250
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    assert all(o["contact_id"] for o in outcomes.values())

    after = await state(fake_api)
    contacts = after["contacts"]
    for i, email in enumerate(emails):
        custom = contacts[email]["custom"]
        assert custom["string--plan"] == ("pro" if i < 50 else "free")
        assert custom["integer--seats"] == 1  # merged, not replaced
    bulk_before = sum(before["requests"]["by_route"].get("POST /v1/contacts", {}).values())
    bulk_after = sum(after["requests"]["by_route"].get("POST /v1/contacts", {}).values())
    # 250 upserts of 200 contacts, at most 100 contacts a request, merged within a batch
    assert 2 <= bulk_after - bulk_before <= 12
    assert after["http_429"]["rate_limited"] == 0
    assert max(after["max_rate"].values()) <= 5


async def test_trigger_follows_its_contacts_upsert_in_order(
    delivery_worker: WorkerProcess, fake_api: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    email = f"order-{tag}@example.com"
    calls = [
        identify(email, f"{tag}-1", plan="free"),
        track(email, f"{tag}-2"),
        identify(email, f"{tag}-3", plan="pro"),
        track(email, f"{tag}-4", event="Upgraded"),
    ]
    await produce_calls(delivery_worker, calls)
    outcomes = await outcomes_for(delivery_worker, {f"{tag}-{i}" for i in range(1, 5)})
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}, outcomes
    journeys = [j for j in (await state(fake_api))["journeys"] if email in str(j)]
    assert len(journeys) == 2  # both triggers found their contact: each came after its upsert


async def test_5xx_and_429_are_retried_to_success(
    delivery_worker: WorkerProcess, fake_api: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    await set_faults(fake_api, error_rate=0.3, error_status=503, rate_limited_rate=0.1)
    try:
        calls = [identify(f"retry{i}-{tag}@example.com", f"{tag}-{i}") for i in range(30)]
        calls += [track(f"retry{i}-{tag}@example.com", f"{tag}-t{i}") for i in range(10)]
        await produce_calls(delivery_worker, calls)
        ids = {orjson.loads(c)["messageId"] for c in calls}
        outcomes = await outcomes_for(delivery_worker, ids, wait_s=120)
    finally:
        await set_faults(fake_api, error_rate=0.0, rate_limited_rate=0.0)
    assert len(outcomes) == 40
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    assert max(o["attempts"] for o in outcomes.values()) > 1  # faults were met and retried
    after = await state(fake_api)
    assert after["http_429"]["rate_limited"] == 0  # the worker never broke the limit itself


def _rejected_descriptor(status: int, tag: str) -> dict[str, Any]:
    """A descriptor the stand-in refuses for good: 404 (no such contact) or 400 (no Email)."""
    if status == 404:
        return {
            "path": f"/v1/trigger/{TRIGGER}/contact/nobody-{tag}%40example.com",
            "json": {"property": {}},
            "kind": "trigger_journey",
        }
    return {"path": "/v1/contact", "json": {"contact": {"FirstName": "No Email"}},
            "kind": "upsert_contact"}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body_says"), [(404, b"Contact could not be found"), (400, b"Email")]
)
async def test_a_rejected_request_becomes_a_dead_letter(
    delivery_worker: WorkerProcess, fake_api: str, status: int, body_says: bytes
) -> None:
    env = delivery_worker.env
    tag = uuid.uuid4().hex[:6]
    message_id = f"{tag}-{status}"
    descriptor = {
        "method": "POST",
        **_rejected_descriptor(status, tag),
        "message_id": message_id,
        "contact": f"nobody-{tag}@example.com",
    }
    raw = orjson.dumps(descriptor)
    await produce(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_AUTOPILOT_REQUESTS"], [(b"k", raw, [])]
    )
    outcomes = await outcomes_for(delivery_worker, {message_id})
    assert outcomes[message_id]["outcome"] == "dead_lettered"
    assert outcomes[message_id]["status"] == status
    letters = await consume_all(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_DEAD_LETTERS"], 10**9, timeout=5
    )
    (letter,) = [r for r in letters if r.value == raw]
    headers = dict(letter.headers)
    assert headers[H.STATUS] == str(status).encode()
    assert headers[H.CLASS_NAME] == b"DeliveryRejected"
    assert headers[H.PIPELINE] == b"delivery"
    assert headers[H.TOPIC].decode() == env["TOPIC_AUTOPILOT_REQUESTS"]
    assert body_says in headers[H.RESPONSE_BODY]
    assert orjson.loads(headers[H.ATTEMPTS])[-1]["status"] == status
    assert API_KEY.encode() not in b"".join(v for _, v in letter.headers)


async def test_a_refused_key_pauses_delivery_then_resumes_with_nothing_lost(
    delivery_worker: WorkerProcess, fake_api: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    await set_faults(fake_api, force_status=401)
    try:
        calls = [identify(f"auth{i}-{tag}@example.com", f"{tag}-{i}") for i in range(5)]
        await produce_calls(delivery_worker, calls)
        ids = {f"{tag}-{i}" for i in range(5)}
        assert await outcomes_for(delivery_worker, ids, wait_s=8) == {}
        assert delivery_worker.running
        assert "delivery is paused" in delivery_worker.log_text()
    finally:
        await set_faults(fake_api, force_status=None)
    outcomes = await outcomes_for(delivery_worker, ids)
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    assert len(outcomes) == 5
    assert "delivery resumed" in delivery_worker.log_text()
    assert API_KEY not in delivery_worker.log_text()
