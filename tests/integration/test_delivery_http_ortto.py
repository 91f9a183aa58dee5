"""Delivery to Ortto over real HTTP against the stand-in Ortto API, in-process on loopback (no
Kafka); and the stand-in's own limits, which the worker must never trip."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from worker.backends.ortto import OrttoBackend, OrttoConfig
from worker.delivery.backoff import Backoff
from worker.delivery.service import Deliverer
from worker.destination.mapping import map_destination
from worker.models.autopilot_request import RequestDescriptor
from worker.settings import Settings
from worker.tools.fake_ortto import start_fake_ortto

KEY = "ortto-test-key-3b81e0"
RATE = 10

MakeDeliverer = Callable[..., Deliverer]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, url = await start_fake_ortto(api_keys=[KEY], rate_limit=RATE, seed=1)
    yield url
    await runner.cleanup()


@pytest.fixture
async def make_deliverer(base_url: str) -> AsyncIterator[MakeDeliverer]:
    made: list[Deliverer] = []

    def make(budget_s: float = 30.0, **settings: Any) -> Deliverer:
        defaults = {"ortto_request_timeout_s": 2.0, "ortto_auth_probe_interval_s": 0.2}
        config = Settings(
            ortto_api_key=SecretStr(KEY), ortto_base_url=base_url, **{**defaults, **settings}
        )
        backoff = Backoff(base_s=0.05, cap_s=0.2, budget_s=budget_s)
        made.append(Deliverer(OrttoBackend.from_settings(config), backoff=backoff))
        return made[-1]

    yield make
    for deliverer in made:
        await deliverer.aclose()


async def admin(base_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=base_url) as client:
        if body is None:
            response = await client.get(path)
        else:
            response = await client.post(path, json=body)
    response.raise_for_status()
    return response.json()


def descriptors(*calls: dict[str, Any], config: OrttoConfig | None = None) -> list[Any]:
    backend = OrttoBackend(config or OrttoConfig())
    return [
        RequestDescriptor.model_validate(descriptor)
        for call in calls
        for descriptor in map_destination(orjson.dumps(call), backend=backend).descriptors
    ]


def identify(user: str, **traits: Any) -> dict[str, Any]:
    email = {"email": f"{user}@example.com"}
    return {"type": "identify", "userId": user, "messageId": f"i-{user}-{sorted(traits)}",
            "traits": {**email, **traits}}  # fmt: skip


def track(user: str, event: str = "Signed Up", **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "messageId": f"t-{user}-{event}", "event": event,
            "properties": properties}  # fmt: skip


def assert_within_limits(state: dict[str, Any]) -> None:
    assert state["http_429"] == {"rate_limited": 0, "injected": 0, "banned": 0}
    assert max(state["max_rate"].values(), default=0) <= RATE
    assert state["max_items"]["people"] <= 100
    assert state["max_items"]["activities"] <= 100
    assert state["max_payload_bytes"] <= 2_000_000


async def test_people_and_activities_are_sent_in_bulk_and_each_persons_order_is_kept(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    users = [f"u{n}" for n in range(150)]
    calls = [identify(u, plan="free", seats=1) for u in users]
    calls += [track(u, total=n) for n, u in enumerate(users)]
    calls += [identify(u, plan="pro") for u in users[:20]]
    results = await make_deliverer().deliver(descriptors(*calls))

    assert {r.outcome for r in results} == {"delivered"}
    assert {r.backend for r in results} == {"ortto"}
    assert all(r.contact_id for r in results)
    state = await admin(base_url, "/_state")
    assert_within_limits(state)
    people = {p["fields"]["str::ei"]: p for p in state["people"].values()}
    assert len(people) == 150
    assert people["u0"]["fields"]["str:cm:plan"] == "pro"
    assert people["u0"]["fields"]["int:cm:seats"] == 1  # merged, not replaced
    assert people["u99"]["fields"]["str:cm:plan"] == "free"
    assert len(state["activities"]) == 150
    by_route = state["requests"]["by_route"]
    # 150 people in 2 merges, then 150 activities in 2, then the 20 later merges in 1
    assert sum(by_route["POST /v1/person/merge"].values()) == 3
    assert sum(by_route["POST /v1/activities/create"].values()) == 2
    # u0's second merge came after its activity: the log shows merge, activity, merge
    routes = [e["route"] for e in state["requests"]["log"]]
    assert routes[-1] == "POST /v1/person/merge"


async def test_one_refused_person_is_the_only_dead_letter(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    await admin(base_url, "/_definitions", {"strict": True, "fields": ["str:cm:plan"]})
    calls = [identify(f"ok{n}", plan="pro") for n in range(30)]
    calls.insert(10, identify("bad", unknown_field="x"))
    results = await make_deliverer().deliver(descriptors(*calls))

    outcomes = {r.message_id: r for r in results}
    bad = outcomes.pop(calls[10]["messageId"])
    assert (bad.outcome, bad.status, bad.error_class) == ("dead_lettered", 400, "DeliveryRejected")
    assert "str:cm:unknown-field: no such custom field" in (bad.error or "")
    assert bad.response_body
    assert "no such custom field" in bad.response_body
    assert {r.outcome for r in outcomes.values()} == {"delivered"}
    state = await admin(base_url, "/_state")
    assert sum(state["requests"]["by_route"]["POST /v1/person/merge"].values()) == 1


async def test_a_bulk_refused_whole_is_retried_item_by_item(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    good = descriptors(identify("a"), identify("b"))
    odd = RequestDescriptor.model_validate(
        {
            **good[1].model_dump(by_alias=True),
            "message_id": "odd",
            "json": {**good[1].body, "merge_strategy": 9},
        }
    )
    results = await make_deliverer().deliver([good[0], odd])
    # not one bulk (other envelopes): each sent alone, the refused one dead-lettered with 400
    assert [(r.outcome, r.status) for r in results] == [("delivered", 200), ("dead_lettered", 400)]
    assert "merge_strategy" in (results[1].response_body or "")


async def test_429_with_ortto_s_nested_hint_is_honoured(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    await admin(base_url, "/_faults", {"rate_limited_rate": 1.0})
    delivery = asyncio.create_task(deliverer.deliver(descriptors(identify("r1"), track("r1"))))
    await asyncio.sleep(0.3)
    await admin(base_url, "/_faults", {"rate_limited_rate": 0.0})
    results = await delivery

    assert {r.outcome for r in results} == {"delivered"}
    retried = [r for r in results if r.attempts > 1]
    assert retried
    # the stand-in's hint is 1 s, nested in "error": never retried sooner
    assert all((r.last_attempt_at - r.first_attempt_at).total_seconds() >= 1.0 for r in retried)
    state = await admin(base_url, "/_state")
    assert state["http_429"]["rate_limited"] == 0


async def test_a_refused_key_pauses_probes_ortto_and_resumes(
    base_url: str, make_deliverer: MakeDeliverer, caplog: pytest.LogCaptureFixture
) -> None:
    deliverer = make_deliverer()
    await admin(base_url, "/_faults", {"force_status": 403})
    with caplog.at_level(logging.INFO, logger="worker.delivery"):
        delivery = asyncio.create_task(deliverer.deliver(descriptors(identify("p1"), track("p1"))))
        for _ in range(250):
            if deliverer.paused:
                break
            await asyncio.sleep(0.02)
        assert deliverer.paused
        await asyncio.sleep(0.8)
        assert not delivery.done()
        log = (await admin(base_url, "/_state"))["requests"]["log"]
        assert {e["route"] for e in log[1:]} == {"POST /v1/person/get"}
        await admin(base_url, "/_faults", {"force_status": None})
        results = await delivery

    assert [r.outcome for r in results] == ["delivered", "delivered"]
    assert "Ortto refused the API key" in caplog.text
    assert "Ortto accepts the API key again" in caplog.text
    assert KEY not in caplog.text


async def test_the_stand_in_keeps_ortto_s_documented_limits(base_url: str) -> None:
    person = {"fields": {"str::email": "x@example.com"}}
    envelope = {"merge_by": ["str::email"], "merge_strategy": 2, "find_strategy": 0}
    activity = {"activity_id": "act:cm:a", "fields": {"str::email": "x@example.com"}}
    headers = {"X-Api-Key": KEY}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        merge = "/v1/person/merge"
        too_many = await client.post(merge, json={"people": [person] * 101, **envelope})
        assert too_many.status_code == 400
        huge = {"fields": {"str::email": "x@example.com", "txt:cm:t": "x" * 3999}}
        too_big = await client.post(merge, json={"people": [huge] * 100 * 6, **envelope})
        assert too_big.status_code in (400, 413)
        big = await client.post(merge, json={"people": [huge] * 100, **envelope})
        assert big.status_code == 200
        wide = {**activity, "attributes": {f"int:cm:a{n}": n for n in range(16)}}
        answer = await client.post(
            "/v1/activities/create", json={"activities": [activity, wide], **envelope}
        )
        assert answer.status_code == 200
        first, second = answer.json()["activities"]
        assert first["status"] == "ingested"
        assert second == {"status": "error", "error": "16 attributes, over 15 an activity"}
        empty_phone = {"fields": {"str::email": "y@example.com", "phn::phone": {"n": ""}}}
        answer = await client.post(merge, json={"people": [empty_phone], **envelope})
        assert answer.json()["people"][0]["status"] == "error"
    async with httpx.AsyncClient(base_url=base_url) as client:
        refused = await client.post("/v1/person/merge", json={"people": [person], **envelope})
        assert refused.status_code == 401
    state = await admin(base_url, "/_state")
    assert state["max_items"]["people"] == 100


async def test_the_stand_in_rate_limits_with_ortto_s_body_and_bans_bad_callers(
    base_url: str,
) -> None:
    envelope = {"merge_by": ["str::email"]}
    async with httpx.AsyncClient(base_url=base_url, headers={"X-Api-Key": KEY}) as client:
        answers = [
            await client.post("/v1/person/merge", json={"people": [], **envelope})
            for _ in range(RATE + 1)
        ]
        assert [a.status_code for a in answers] == [400] * RATE + [429]
        assert answers[-1].json() == {
            "error": {"code": "rate-limit", "message": "rate limit", "try-in-seconds": 1}
        }
        await asyncio.sleep(1.1)
        more = [
            await client.post("/v1/person/merge", json={"people": [], **envelope}) for _ in range(6)
        ]
    # 15 bad requests within 15 s: the caller's IP is banned for 15 s
    assert [a.status_code for a in more] == [400] * 5 + [429]
    assert more[-1].json()["error"]["code"] == "banned"
    state = await admin(base_url, "/_state")
    assert state["bans"] == 1
    assert state["http_429"]["banned"] == 1
