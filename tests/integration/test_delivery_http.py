"""Delivery over real HTTP against the stand-in Autopilot API, in-process on loopback (no Kafka)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from worker.backends.autopilot import AutopilotBackend
from worker.delivery.backoff import Backoff
from worker.delivery.service import Deliverer
from worker.models.autopilot_request import RequestDescriptor, RequestKind
from worker.models.delivery_result import DeliveryResult
from worker.settings import Settings
from worker.tools.fake_autopilot import start_fake_autopilot

KEY = "ap-test-key-5f2c9d"

MakeDeliverer = Callable[..., Deliverer]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, url = await start_fake_autopilot(api_keys=[KEY], rate_limit=5, seed=1)
    yield url
    await runner.cleanup()


@pytest.fixture
async def make_deliverer(base_url: str) -> AsyncIterator[MakeDeliverer]:
    made: list[Deliverer] = []

    def make(budget_s: float = 30.0, **settings: Any) -> Deliverer:
        defaults = {"autopilot_request_timeout_s": 2.0, "autopilot_auth_probe_interval_s": 0.2}
        config = Settings(
            autopilot_api_key=SecretStr(KEY),
            autopilot_base_url=base_url,
            **{**defaults, **settings},
        )
        backoff = Backoff(base_s=0.05, cap_s=0.2, budget_s=budget_s)
        made.append(Deliverer(AutopilotBackend.from_settings(config), backoff=backoff))
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


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail("condition not reached in time")


def upsert(email: str, **fields: Any) -> RequestDescriptor:
    return RequestDescriptor(
        path="/v1/contact",
        body={"contact": {"Email": email, **fields}},
        kind=RequestKind.UPSERT_CONTACT,
        message_id=f"m-{email}-{sorted(fields)}",
        contact=email.lower(),
    )


def trigger(email: str, trigger_id: str = "0001", **properties: Any) -> RequestDescriptor:
    return RequestDescriptor(
        path=f"/v1/trigger/{trigger_id}/contact/{email.replace('+', '%2B').replace('@', '%40')}",
        body={"property": properties},
        kind=RequestKind.TRIGGER_JOURNEY,
        message_id=f"t-{email}-{trigger_id}",
        contact=email.lower(),
    )


def routes(state: dict[str, Any]) -> list[str]:
    return [entry["route"] for entry in state["requests"]["log"]]


def assert_no_rate_violation(state: dict[str, Any]) -> None:
    assert state["http_429"]["rate_limited"] == 0
    assert max(state["max_rate"].values(), default=0) <= 5


async def test_bulk_batching_and_merging(base_url: str, make_deliverer: MakeDeliverer) -> None:
    batch = [upsert(f"u{n}@x.io", FirstName=f"U{n}") for n in range(250)]
    batch += [upsert("u0@x.io", LastName="Zero", custom={"string--plan": "pro"})]
    batch += [upsert("u0@x.io", FirstName="Uno", custom={"integer--age": 40})]

    results = await make_deliverer().deliver(batch)

    state = await admin(base_url, "/_state")
    assert state["requests"]["by_route"] == {"POST /v1/contacts": {"200": 3}}
    assert len(state["contacts"]) == 250
    zero = state["contacts"]["u0@x.io"]
    assert (zero["FirstName"], zero["LastName"]) == ("Uno", "Zero")
    assert zero["custom"] == {"string--plan": "pro", "integer--age": 40}
    assert [r.message_id for r in results] == [d.message_id for d in batch]
    assert {r.outcome for r in results} == {"delivered"}
    assert {r.status for r in results} == {200}
    assert results[0].contact_id == results[-1].contact_id == zero["contact_id"]
    assert all(r.contact_id == state["contacts"][r.contact]["contact_id"] for r in results)
    assert_no_rate_violation(state)


async def test_trigger_is_sent_after_its_upsert_and_order_is_kept(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    batch = [
        upsert("Ann+vip@x.io", FirstName="Ann"),
        trigger("Ann+vip@x.io", "0001", step=1),
        upsert("Ann+vip@x.io", FirstName="Anna"),
        trigger("Ann+vip@x.io", "0002", step=2),
        upsert("bob@x.io"),
    ]
    results = await make_deliverer().deliver(batch)

    assert [r.outcome for r in results] == ["delivered"] * 5
    state = await admin(base_url, "/_state")
    journeys = [(j["trigger_id"], j["email"], j["property"]) for j in state["journeys"]]
    assert journeys == [
        ("0001", "ann+vip@x.io", {"step": 1}),
        ("0002", "ann+vip@x.io", {"step": 2}),
    ]
    trigger_route = "POST /v1/trigger/{trigger_id}/contact/{contact}"
    assert routes(state) == [
        "POST /v1/contacts",
        trigger_route,
        "POST /v1/contact",
        trigger_route,
    ]
    assert state["contacts"]["ann+vip@x.io"]["FirstName"] == "Anna"


async def test_server_errors_are_retried_to_success(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    await admin(base_url, "/_faults", {"error_rate": 1.0, "error_status": 503})
    delivery = asyncio.create_task(make_deliverer().deliver([upsert("a@x.io"), trigger("a@x.io")]))

    async def three_failures() -> bool:
        return bool((await admin(base_url, "/_state"))["requests"]["total"] >= 3)

    await wait_until(three_failures)
    await admin(base_url, "/_faults", {"error_rate": 0.0})

    upserted, triggered = await delivery

    assert (upserted.outcome, upserted.status, triggered.outcome) == ("delivered", 200, "delivered")
    assert upserted.attempts >= 3
    assert upserted.history == ()
    state = await admin(base_url, "/_state")
    assert state["requests"]["by_route"]["POST /v1/contact"]["503"] == upserted.attempts - 1
    assert len(state["journeys"]) == 1


async def test_timeouts_are_retried(base_url: str, make_deliverer: MakeDeliverer) -> None:
    await admin(base_url, "/_faults", {"timeout_rate": 1.0})
    delivery = asyncio.create_task(
        make_deliverer(autopilot_request_timeout_s=0.2).deliver([upsert("a@x.io")])
    )

    await asyncio.sleep(0.3)
    await admin(base_url, "/_faults", {"timeout_rate": 0.0})
    [result] = await delivery

    assert (result.outcome, result.status) == ("delivered", 200)
    assert result.attempts >= 2


async def test_retry_budget_ends_in_a_dead_letter_with_history(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    await admin(base_url, "/_faults", {"error_rate": 1.0, "error_status": 502})
    [result] = await make_deliverer(budget_s=0.5).deliver([upsert("a@x.io")])

    assert (result.outcome, result.status, result.error_class) == (
        "dead_lettered",
        502,
        "RetryBudgetExhausted",
    )
    assert result.attempts == len(result.history) >= 2
    assert {a.status for a in result.history} == {502}
    assert result.first_attempt_at < result.last_attempt_at


async def test_bad_request_is_dead_lettered_with_status_and_body(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    no_email = RequestDescriptor(
        path="/v1/contact",
        body={"contact": {"FirstName": "Nobody"}},
        kind=RequestKind.UPSERT_CONTACT,
        message_id="m-bad",
        contact="nobody",
    )
    batch = [upsert("a@x.io"), no_email, upsert("b@x.io"), trigger("ghost@x.io")]
    good_a, bad, good_b, ghost = await make_deliverer().deliver(batch)

    assert (good_a.outcome, good_b.outcome) == ("delivered", "delivered")
    assert good_a.attempts == 2  # the rejected bulk, then alone
    assert (bad.outcome, bad.status, bad.error_class) == ("dead_lettered", 400, "DeliveryRejected")
    assert bad.response_body is not None
    assert (
        orjson.loads(bad.response_body)["message"] == "A contact object with an Email is required."
    )
    assert [a.status for a in bad.history] == [400, 400]
    assert (ghost.outcome, ghost.status, ghost.attempts) == ("dead_lettered", 404, 1)
    state = await admin(base_url, "/_state")
    assert sorted(state["contacts"]) == ["a@x.io", "b@x.io"]


async def test_rate_limit_is_never_exceeded_and_429_hints_are_honoured(
    base_url: str, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    emails = [f"t{n}@x.io" for n in range(10)]
    await deliverer.deliver([upsert(e) for e in emails])
    await admin(base_url, "/_faults", {"rate_limited_rate": 1.0})
    delivery = asyncio.create_task(deliverer.deliver([trigger(e) for e in emails]))
    await asyncio.sleep(0.3)
    await admin(base_url, "/_faults", {"rate_limited_rate": 0.0})

    results = await delivery

    assert {r.outcome for r in results} == {"delivered"}
    state = await admin(base_url, "/_state")
    assert_no_rate_violation(state)
    assert len(state["journeys"]) == 10
    retried = [r for r in results if r.attempts > 1]
    assert len(retried) == state["http_429"]["injected"] >= 1
    assert all((r.last_attempt_at - r.first_attempt_at).total_seconds() >= 1.0 for r in retried)


async def test_the_stand_in_enforces_its_rate_limit(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"autopilotapikey": KEY}) as client:
        responses = [await client.get("/v1/contact/nobody@x.io") for _ in range(7)]
    assert [r.status_code for r in responses] == [404] * 5 + [429] * 2
    assert responses[5].json()["try-in-seconds"] == 1
    state = await admin(base_url, "/_state")
    assert state["http_429"]["rate_limited"] == 2


async def test_refused_key_pauses_then_resumes_with_nothing_lost(
    base_url: str, make_deliverer: MakeDeliverer, caplog: pytest.LogCaptureFixture
) -> None:
    deliverer = make_deliverer()
    await admin(base_url, "/_faults", {"force_status": 401})
    batch = [upsert("a@x.io"), upsert("b@x.io"), trigger("a@x.io"), upsert("c@x.io")]
    with caplog.at_level(logging.INFO, logger="worker.delivery"):
        delivery = asyncio.create_task(deliverer.deliver(batch))

        async def paused() -> bool:
            return deliverer.paused

        await wait_until(paused)
        since = deliverer.paused_since
        assert since is not None
        assert abs(time.time() - since) < 5  # what the console shows
        await asyncio.sleep(1.0)
        assert not delivery.done()
        probes = routes(await admin(base_url, "/_state"))[1:]
        assert set(probes) == {"GET /v1/contact/{contact}"}
        assert deliverer.limiter.requests == 1 + len(probes)  # the console's rate in use
        await admin(base_url, "/_faults", {"force_status": None})
        results: list[DeliveryResult] = await delivery

    assert not deliverer.paused
    assert deliverer.paused_since is None
    assert [r.outcome for r in results] == ["delivered"] * 4
    state = await admin(base_url, "/_state")
    assert sorted(state["contacts"]) == ["a@x.io", "b@x.io", "c@x.io"]
    assert len(state["journeys"]) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "paused" in errors[0].getMessage()
    assert KEY not in caplog.text
    assert all(KEY not in r.model_dump_json() for r in results)
