"""Ortto through a real broker and the stand-in Ortto API on loopback, beside Autopilot's (a
migration: one worker with both keys). One worker and one stand-in of each serve the module;
each test uses people of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.standin import outcomes_for, produce_calls, set_faults, state
from tests.kafkautil import consume_all
from tests.workerproc import WorkerProcess, running_worker
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.tools.fake_ortto import start_fake_ortto

API_KEY = "autopilot-key-0c4e7a"
ORTTO_KEY = "ortto-key-91d2f6"
TRIGGER = "0001"
ORTTO = "TOPIC_ORTTO_DELIVERIES"


@pytest.fixture(scope="module")
async def fake_ortto() -> AsyncIterator[str]:
    runner, base_url = await start_fake_ortto(api_keys=[ORTTO_KEY], rate_limit=10.0)
    try:
        yield base_url
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def both_worker(
    kafka_bootstrap: str,
    fake_api: str,
    fake_ortto: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A worker delivering to both stand-ins."""
    with running_worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("worker"),
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID=TRIGGER,
        AUTOPILOT_BULK_LINGER_MS="300",
        ORTTO_API_KEY=ORTTO_KEY,
        ORTTO_BASE_URL=fake_ortto,
        ORTTO_AUTH_PROBE_INTERVAL_S="0.5",
        ORTTO_BULK_LINGER_MS="300",
        ORTTO_ACTIVITIES='{"Order Completed": "act:cm:purchase"}',
    ) as process:
        yield process


def identify(user: str, message_id: str, **traits: Any) -> bytes:
    body = {"type": "identify", "userId": user, "messageId": message_id}
    return orjson.dumps({**body, "traits": traits})


def track(user: str, message_id: str, event: str, **properties: Any) -> bytes:
    body = {"type": "track", "userId": user, "messageId": message_id, "event": event}
    return orjson.dumps({**body, "properties": properties, "context": {"ip": "203.0.113.9"}})


async def test_people_and_activities_reach_ortto_in_bulk_and_in_order(
    both_worker: WorkerProcess, fake_ortto: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    users = [f"b{n}-{tag}" for n in range(120)]
    calls = [identify(u, f"{tag}-i{n}", plan="free", seats=1) for n, u in enumerate(users)]
    calls += [track(u, f"{tag}-t{n}", "Order Completed", total=n) for n, u in enumerate(users)]
    calls += [identify(u, f"{tag}-j{n}", plan="pro") for n, u in enumerate(users[:30])]
    before = await state(fake_ortto)
    await produce_calls(both_worker, calls)
    ids = {orjson.loads(c)["messageId"] for c in calls}
    outcomes = await outcomes_for(both_worker, ids, topic=ORTTO)

    assert len(outcomes) == 270
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    assert {o["backend"] for o in outcomes.values()} == {"ortto"}
    assert all(o["contact_id"] for o in outcomes.values())
    after = await state(fake_ortto)
    people = {p["fields"].get("str::ei"): p["fields"] for p in after["people"].values()}
    assert people[users[0]]["str:cm:plan"] == "pro"  # the later merge came after the activity
    assert people[users[0]]["int:cm:seats"] == 1
    assert people[users[99]]["str:cm:plan"] == "free"
    mine = [a for a in after["activities"] if a["attributes"].get("int:cm:total") is not None]
    assert len([a for a in mine if a["activity_id"] == "act:cm:purchase"]) >= 120
    assert mine[-1]["location"] == {"source_ip": "203.0.113.9"}

    def requests(s: dict[str, Any], route: str) -> int:
        return sum(s["requests"]["by_route"].get(route, {}).values())

    sent = sum(
        requests(after, r) - requests(before, r)
        for r in ("POST /v1/person/merge", "POST /v1/activities/create")
    )
    assert 4 <= sent <= 20  # 270 calls, up to 100 items a request, in a few batches
    assert after["http_429"] == {"rate_limited": 0, "injected": 0, "banned": 0}
    assert max(after["max_rate"].values()) <= 10
    assert after["max_items"]["people"] <= 100


async def test_every_call_reaches_both_apis_during_a_migration(
    both_worker: WorkerProcess, fake_api: str, fake_ortto: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    email = f"both-{tag}@example.com"
    calls = [
        identify(f"u-{tag}", f"{tag}-1", email=email, firstName="Bo"),
        track(f"u-{tag}", f"{tag}-2", "Signed Up", plan="pro", email=email),
    ]
    await produce_calls(both_worker, calls)
    ids = {f"{tag}-1", f"{tag}-2"}
    autopilot = await outcomes_for(both_worker, ids)
    ortto = await outcomes_for(both_worker, ids, topic=ORTTO)

    assert {(o["backend"], o["kind"], o["outcome"]) for o in autopilot.values()} == {
        ("autopilot", "upsert_contact", "delivered"),
        ("autopilot", "trigger_journey", "delivered"),
    }
    assert {(o["backend"], o["kind"], o["outcome"]) for o in ortto.values()} == {
        ("ortto", "merge_person", "delivered"),
        ("ortto", "create_activity", "delivered"),
    }
    assert email in (await state(fake_api))["contacts"]
    people = (await state(fake_ortto))["people"].values()
    assert any(p["fields"].get("str::email") == email for p in people)


async def test_a_call_one_api_refuses_still_reaches_the_other(
    both_worker: WorkerProcess,
) -> None:
    env = both_worker.env
    tag = uuid.uuid4().hex[:6]
    call = track(f"only-ortto-{tag}", f"{tag}-t", "Signed Up")  # no email: Autopilot refuses
    await produce_calls(both_worker, [call])
    ortto = await outcomes_for(both_worker, {f"{tag}-t"}, topic=ORTTO)
    assert ortto[f"{tag}-t"]["outcome"] == "delivered"

    letters = await consume_all(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_DEAD_LETTERS"], 10**9, timeout=5
    )
    (letter,) = [r for r in letters if r.value == call]
    headers = dict(letter.headers)
    assert headers[H.PIPELINE] == b"destination"
    assert headers[H.STAGE] == b"map-autopilot"
    assert headers[H.MESSAGE] == b"Email is required for track calls"


async def test_a_refused_person_is_the_only_ortto_dead_letter(
    both_worker: WorkerProcess, fake_ortto: str
) -> None:
    env = both_worker.env
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=fake_ortto) as client:
        known = ["str:cm:plan", "int:cm:seats", "int:cm:total"]
        body = {"strict": True, "fields": known, "activities": ["act:cm:purchase"]}
        (await client.post("/_definitions", json=body)).raise_for_status()
    try:
        calls = [identify(f"s{n}-{tag}", f"{tag}-{n}", plan="pro") for n in range(12)]
        calls.append(identify(f"bad-{tag}", f"{tag}-bad", nickname="no such field"))
        await produce_calls(both_worker, calls)
        ids = {orjson.loads(c)["messageId"] for c in calls}
        outcomes = await outcomes_for(both_worker, ids, topic=ORTTO)
    finally:
        async with httpx.AsyncClient(base_url=fake_ortto) as client:
            (await client.post("/_definitions", json={"strict": False})).raise_for_status()

    bad = outcomes.pop(f"{tag}-bad")
    assert (bad["outcome"], bad["status"], bad["error_class"]) == (
        "dead_lettered",
        400,
        "DeliveryRejected",
    )
    assert {o["outcome"] for o in outcomes.values()} == {"delivered"}
    letters = await consume_all(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_DEAD_LETTERS"], 10**9, timeout=5
    )
    mine = [r for r in letters if dict(r.headers).get(H.PIPELINE) == b"delivery-ortto"]
    (letter,) = [r for r in mine if orjson.loads(r.value)["message_id"] == f"{tag}-bad"]
    headers = dict(letter.headers)
    assert headers[H.STATUS] == b"400"
    assert headers[H.TOPIC].decode() == env["TOPIC_ORTTO_REQUESTS"]
    assert b"no such custom field" in headers[H.RESPONSE_BODY]
    assert ORTTO_KEY.encode() not in b"".join(v for _, v in letter.headers)


async def test_a_refused_ortto_key_pauses_ortto_alone_then_nothing_is_lost(
    both_worker: WorkerProcess, fake_ortto: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    await set_faults(fake_ortto, force_status=401)
    try:
        calls = [identify(f"k{n}-{tag}", f"{tag}-{n}", email=f"k{n}-{tag}@x.io") for n in range(4)]
        await produce_calls(both_worker, calls)
        ids = {f"{tag}-{n}" for n in range(4)}
        autopilot = await outcomes_for(both_worker, ids)  # Autopilot delivers meanwhile
        assert {o["outcome"] for o in autopilot.values()} == {"delivered"}
        assert await outcomes_for(both_worker, ids, wait_s=4, topic=ORTTO) == {}
        assert "Ortto refused the API key" in both_worker.log_text()
        async with httpx.AsyncClient(base_url=both_worker.web_url) as client:
            ready = (await client.get("/readyz")).json()
        assert "Ortto refuses its API key" in ready["checks"]["delivery"]["detail"]
    finally:
        await set_faults(fake_ortto, force_status=None)
    ortto = await outcomes_for(both_worker, ids, topic=ORTTO)
    assert {o["outcome"] for o in ortto.values()} == {"delivered"}
    assert len(ortto) == 4
    assert "Ortto accepts the API key again" in both_worker.log_text()
    assert ORTTO_KEY not in both_worker.log_text()
