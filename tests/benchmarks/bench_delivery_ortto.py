"""Delivery to Ortto at the default rate limit (ORTTO_RATE_LIMIT, 10 requests/s) against the
stand-in Ortto API.

Prints merged people/s and created activities/s (Ortto takes 100 items a request: the goal is
at least 90 % of 100 x the rate, 900/s at 10 requests/s) and the 429s the worker provoked (goal
0). The descriptors are what the destination maps from identify and track calls; they are
delivered in batches of the delivery agent's size (`MAX_BATCH`). The stand-in runs in-process
on loopback; a warm-up fills the first rate-limit window so both phases run at steady state.
Run: `.venv/bin/python tests/benchmarks/bench_delivery_ortto.py` (about 30 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from worker.backends.ortto import OrttoBackend
from worker.delivery.agents import MAX_BATCH
from worker.delivery.service import Deliverer
from worker.destination.mapping import map_destination
from worker.models.autopilot_request import RequestDescriptor
from worker.settings import Settings
from worker.tools.fake_ortto import start_fake_ortto

KEY = "bench-ortto-key"
PEOPLE = 10_000
ACTIVITIES = 10_000
GOAL_RATIO = 0.9


def _descriptors(calls: Sequence[dict[str, Any]]) -> list[RequestDescriptor]:
    backend = OrttoBackend()
    return [
        RequestDescriptor.model_validate(descriptor)
        for call in calls
        for descriptor in map_destination(orjson.dumps(call), backend=backend).descriptors
    ]


def people(prefix: str, n: int) -> list[RequestDescriptor]:
    return _descriptors(
        [
            {
                "type": "identify",
                "userId": f"{prefix}{i}",
                "messageId": f"{prefix}-i{i}",
                "traits": {
                    "email": f"{prefix}{i}@bench.io",
                    "firstName": "Bench",
                    "lastName": "Person",
                    "phone": "+33 1 23 45 67 89",
                    "address": {"city": "Lyon", "country": "France"},
                    "plan": "pro",
                    "seats": 3,
                    "trial": False,
                },
            }
            for i in range(n)
        ]
    )


def activities(prefix: str, n: int) -> list[RequestDescriptor]:
    return _descriptors(
        [
            {
                "type": "track",
                "userId": f"{prefix}{i}",
                "messageId": f"{prefix}-t{i}",
                "event": "Order Completed",
                "properties": {"order_id": f"o-{i}", "total": 120, "currency": "EUR"},
                "context": {"ip": "203.0.113.9", "traits": {"email": f"{prefix}{i}@bench.io"}},
            }
            for i in range(n)
        ]
    )


async def timed(deliverer: Deliverer, items: Sequence[RequestDescriptor]) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), MAX_BATCH):
        results = await deliverer.deliver(items[start : start + MAX_BATCH])
        assert {r.outcome for r in results} == {"delivered"}, {r.error for r in results}
    return time.perf_counter() - started


async def run() -> dict[str, Any]:
    """The figures, as a dict (`main` prints them; `make bench` tabulates them)."""
    runner, base_url = await start_fake_ortto(api_keys=[KEY])
    settings = Settings(ortto_api_key=SecretStr(KEY), ortto_base_url=base_url)
    rate = settings.ortto_rate_limit
    warm, merges, creates = people("w", 1000), people("p", PEOPLE), activities("p", ACTIVITIES)
    try:
        async with Deliverer(OrttoBackend.from_settings(settings)) as deliverer:
            await timed(deliverer, warm)
            people_s = await timed(deliverer, merges)
            activities_s = await timed(deliverer, creates)
            waited_s = deliverer.limiter.waited_s
        async with httpx.AsyncClient(base_url=base_url) as client:
            state = (await client.get("/_state")).json()
    finally:
        await runner.cleanup()

    by_route = state["requests"]["by_route"]
    goal = GOAL_RATIO * 100 * rate
    return {
        "rate_limit": rate,
        "batch": MAX_BATCH,
        "people": PEOPLE,
        "people_s": round(people_s, 2),
        "people_per_s": round(PEOPLE / people_s, 1),
        "merge_requests": sum(by_route["POST /v1/person/merge"].values()),
        "activities": ACTIVITIES,
        "activities_s": round(activities_s, 2),
        "activities_per_s": round(ACTIVITIES / activities_s, 1),
        "activity_requests": sum(by_route["POST /v1/activities/create"].values()),
        "goal_per_s": goal,
        "people_ratio": round(PEOPLE / people_s / (100 * rate), 3),
        "activities_ratio": round(ACTIVITIES / activities_s / (100 * rate), 3),
        "http_429": sum(state["http_429"].values()),
        "max_requests_in_1s": max(state["max_rate"].values()),
        "max_items": state["max_items"],
        "max_payload_bytes": state["max_payload_bytes"],
        "rate_limiter_wait_s": round(waited_s, 1),
    }


def main() -> None:
    r = asyncio.run(run())
    print(
        f"rate limit            {r['rate_limit']:g} requests/s per key; goal {r['goal_per_s']:g}/s"
    )
    print(
        f"merged people/s     {r['people_per_s']:8.1f}   ({r['people']} people, "
        f"{r['merge_requests']} merges incl. warm-up, {r['people_s']:.2f} s; "
        f"{r['people_ratio']:.3f} of 100 x rate)"
    )
    print(
        f"created activities/s {r['activities_per_s']:7.1f}   ({r['activities']} activities, "
        f"{r['activity_requests']} requests, {r['activities_s']:.2f} s; "
        f"{r['activities_ratio']:.3f} of 100 x rate)"
    )
    print(f"429s provoked       {r['http_429']:8d}")
    print(f"max requests in 1 s {r['max_requests_in_1s']:8d}")
    print(f"largest payload     {r['max_payload_bytes']:8d} bytes; items {r['max_items']}")


if __name__ == "__main__":
    main()
