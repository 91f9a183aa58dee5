"""Readiness as a pure function of its inputs, the broker probe, and the three endpoints."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from worker.runtime.health import (
    CHECKS,
    BrokerProbe,
    CheckResult,
    Operations,
    ReadinessInputs,
    evaluate,
    parse_checks,
    readiness_response,
)
from worker.runtime.stages import Runtime
from worker.settings import Settings

READY = ReadinessInputs(
    assigned_partitions=21,
    rebalancing=False,
    recovery_completed=True,
    broker=CheckResult(True, "metadata answered (1 broker(s))"),
    delivery_enabled=True,
    delivery_paused=False,
)


def failing(inputs: ReadinessInputs, checks: tuple[str, ...] = CHECKS) -> list[str]:
    return [name for name, result in evaluate(inputs, checks).items() if not result.ok]


def test_ready_when_every_check_passes() -> None:
    results = evaluate(READY)
    assert list(results) == list(CHECKS)
    assert all(r.ok for r in results.values())
    assert readiness_response(results)[0] == 200


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"assigned_partitions": None}, ["assignment"]),
        ({"assigned_partitions": 0}, ["assignment"]),
        ({"rebalancing": True}, ["recovery"]),
        ({"recovery_completed": False}, ["recovery"]),
        ({"broker": CheckResult(False, "no metadata from Kafka within 3s")}, ["broker"]),
        ({"delivery_paused": True}, ["delivery"]),
        ({"delivery_paused": True, "rebalancing": True}, ["recovery", "delivery"]),
    ],
)
def test_each_rule_fails_its_own_check(change: dict[str, object], failed: list[str]) -> None:
    inputs = replace(READY, **change)  # type: ignore[arg-type]
    assert failing(inputs) == failed
    status, body = readiness_response(evaluate(inputs))
    data = orjson.loads(body)
    assert status == 503
    assert data["status"] == "not ready"
    assert data["failing"] == failed
    for name in failed:
        assert data["checks"][name]["ok"] is False
        assert data["checks"][name]["detail"]


def test_delivery_not_enabled_is_no_reason_to_be_unready() -> None:
    inputs = replace(READY, delivery_enabled=False, delivery_paused=False)
    assert evaluate(inputs, ("delivery",))["delivery"].ok


def test_a_subset_of_checks_judges_only_those() -> None:
    paused = replace(READY, delivery_paused=True, rebalancing=True)
    assert failing(paused, ("broker",)) == []
    assert readiness_response(evaluate(paused, ("broker",)))[0] == 200
    assert failing(paused, ("broker", "delivery")) == ["delivery"]


def test_parse_checks() -> None:
    assert parse_checks([]) == CHECKS
    assert parse_checks(["broker"]) == ("broker",)
    assert parse_checks(["delivery,broker", " assignment "]) == ("assignment", "broker", "delivery")
    assert parse_checks(["broker", "broker"]) == ("broker",)
    with pytest.raises(ValueError, match="unknown check"):
        parse_checks(["broker,consumer"])
    with pytest.raises(ValueError, match="unknown"):
        evaluate(READY, ("nonsense",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_broker_probe_reports_the_last_answer_and_goes_stale() -> None:
    clock = Clock()
    answers: list[BaseException | str] = ["metadata answered (1 broker(s))"]

    async def check() -> str:
        answer = answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    probe = BrokerProbe(check, timeout_s=0.05, stale_s=20, clock=clock)
    assert not probe.status().ok  # nothing asked yet
    assert "not checked" in probe.status().detail

    assert (await probe.check_once()).ok
    assert probe.status().ok
    clock.now += 19
    assert probe.status().ok
    clock.now += 2
    assert not probe.status().ok  # the probe itself stopped answering
    assert "old" in probe.status().detail

    answers[0] = ConnectionRefusedError("connection refused")
    assert not (await probe.check_once()).ok
    assert "ConnectionRefusedError" in probe.status().detail

    answers[0] = "metadata answered (3 broker(s))"
    assert (await probe.check_once()).ok


async def test_broker_probe_times_out_a_hanging_check() -> None:
    async def hang() -> str:
        await asyncio.sleep(10)
        return "never"

    probe = BrokerProbe(hang, timeout_s=0.05)
    result = await probe.check_once()
    assert not result.ok
    assert "within 0.05s" in result.detail


async def test_endpoints_answer_even_when_the_worker_is_not_running() -> None:
    operations = Operations(Runtime.create(Settings()))
    operations.add_metrics_sources()
    application = web.Application()
    operations.mount(application.router)
    async with TestClient(TestServer(application)) as client:
        alive = await client.get("/healthz")
        assert alive.status == 200
        assert await alive.json() == {"status": "alive"}

        # no consumer, no recovery, no broker check in a unit test: not ready, and says why
        ready = await client.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert set(body["failing"]) >= {"assignment", "recovery", "broker"}
        assert body["checks"]["assignment"]["detail"] == "the consumer is not running"

        bad = await client.get("/readyz?check=bogus")
        assert bad.status == 400
        assert "bogus" in (await bad.json())["error"]

        scraped = await client.get("/metrics")
        assert scraped.status == 200
        assert scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await scraped.text()
        assert 'autopilot_worker_ready{check="assignment"} 0.0' in text
        # the lag source cannot read a consumer that never started: left out, counted
        assert 'autopilot_worker_scrape_errors_total{source="consumer_lag"}' in text


def test_the_delivery_detail_names_the_api_refusing_its_key() -> None:
    one = replace(READY, delivery_paused=True, paused_apis=("Ortto",))
    assert evaluate(one, ("delivery",))["delivery"] == CheckResult(
        False, "delivery is paused: Ortto refuses its API key"
    )
    two = replace(READY, delivery_paused=True, paused_apis=("Autopilot", "Ortto"))
    assert evaluate(two, ("delivery",))["delivery"].detail == (
        "delivery is paused: Autopilot and Ortto refuse their API key"
    )


@dataclass
class _Delivery:
    name: str
    display_name: str
    enabled: bool
    paused: bool
    rate_limit_waited_s: float = 0.0
    pipeline: str = "delivery"
    rate_limit: float = 5.0
    paused_since: float | None = None
    requests_sent: int = 0


def test_readiness_and_metrics_read_each_backends_delivery() -> None:
    deliveries = [
        _Delivery("autopilot", "Autopilot", enabled=True, paused=False, rate_limit_waited_s=1.5),
        _Delivery("ortto", "Ortto", enabled=True, paused=True, rate_limit_waited_s=0.5),
        _Delivery("other", "Other", enabled=False, paused=True),  # no key: not running
    ]
    operations = Operations(Runtime.create(Settings()), deliveries)
    inputs = operations.inputs()
    assert (inputs.delivery_enabled, inputs.delivery_paused, inputs.paused_apis) == (
        True,
        True,
        ("Ortto",),
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in operations.delivery_metrics()
        for sample in family.samples
    }
    assert samples == {
        ("autopilot_worker_rate_limiter_wait_seconds_total", (("backend", "autopilot"),)): 1.5,
        ("autopilot_worker_rate_limiter_wait_seconds_total", (("backend", "ortto"),)): 0.5,
        ("autopilot_worker_delivery_paused", (("backend", "autopilot"),)): 0.0,
        ("autopilot_worker_delivery_paused", (("backend", "ortto"),)): 1.0,
    }
