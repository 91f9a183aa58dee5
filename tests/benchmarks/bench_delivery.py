"""Delivery throughput at the default rate limit (5 requests/s) against the stand-in Autopilot API.

Prints delivered contacts/s (merged bulk upserts), triggers/s (one request per event, the rate
without batching) and the 429s the worker provoked (goal 0). The stand-in runs in-process on
loopback; a warm-up fills the first rate-limit window so both phases run at steady state.
Run: `.venv/bin/python tests/benchmarks/bench_delivery.py` (about 20 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from worker.backends.autopilot import AutopilotBackend
from worker.delivery.service import Deliverer
from worker.models.autopilot_request import RequestDescriptor, RequestKind
from worker.settings import Settings
from worker.tools.fake_autopilot import start_fake_autopilot

KEY = "bench-key"
CONTACTS = 6000
TRIGGERS = 40
BATCH = 1000


def upsert(email: str) -> RequestDescriptor:
    return RequestDescriptor(
        path="/v1/contact",
        body={"contact": {"Email": email, "FirstName": "Bench", "custom": {"integer--n": 1}}},
        kind=RequestKind.UPSERT_CONTACT,
        message_id=f"m-{email}",
        contact=email,
    )


def trigger(email: str) -> RequestDescriptor:
    return RequestDescriptor(
        path=f"/v1/trigger/0001/contact/{email.replace('@', '%40')}",
        body={"property": {"plan": "pro"}},
        kind=RequestKind.TRIGGER_JOURNEY,
        message_id=f"t-{email}",
        contact=email,
    )


async def timed(deliverer: Deliverer, batches: Sequence[Sequence[RequestDescriptor]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        results = await deliverer.deliver(batch)
        assert {r.outcome for r in results} == {"delivered"}
    return time.perf_counter() - started


async def run() -> dict[str, Any]:
    """The figures, as a dict (`main` prints them; `make bench` tabulates them)."""
    runner, base_url = await start_fake_autopilot(api_keys=[KEY])
    settings = Settings(autopilot_api_key=SecretStr(KEY), autopilot_base_url=base_url)
    try:
        async with Deliverer(AutopilotBackend.from_settings(settings)) as deliverer:
            await timed(deliverer, [[upsert(f"warm{n}@bench.io") for n in range(500)]])
            emails = [f"c{n}@bench.io" for n in range(CONTACTS)]
            contacts = [
                [upsert(e) for e in emails[i : i + BATCH]] for i in range(0, CONTACTS, BATCH)
            ]
            contacts_s = await timed(deliverer, contacts)
            triggers_s = await timed(deliverer, [[trigger(e) for e in emails[:TRIGGERS]]])
            waited_s = deliverer.limiter.waited_s
        async with httpx.AsyncClient(base_url=base_url) as client:
            state = (await client.get("/_state")).json()
    finally:
        await runner.cleanup()

    return {
        "rate_limit": state["rate_limit"],
        "contacts": CONTACTS,
        "contacts_s": round(contacts_s, 2),
        "contacts_per_s": round(CONTACTS / contacts_s, 1),
        "bulk_requests": state["requests"]["by_route"]["POST /v1/contacts"]["200"] - 5,
        "triggers": TRIGGERS,
        "triggers_s": round(triggers_s, 2),
        "triggers_per_s": round(TRIGGERS / triggers_s, 2),
        "http_429": sum(state["http_429"].values()),
        "max_requests_in_1s": max(state["max_rate"].values()),
        "rate_limiter_wait_s": round(waited_s, 1),
    }


def main() -> None:
    r = asyncio.run(run())
    print(f"rate limit                {r['rate_limit']:g} requests/s per key")
    print(
        f"delivered contacts/s  {r['contacts_per_s']:8.1f}   ({r['contacts']} contacts, "
        f"{r['bulk_requests']} bulk requests, {r['contacts_s']:.2f} s)"
    )
    print(
        f"delivered triggers/s  {r['triggers_per_s']:8.2f}"
        f"   ({r['triggers']}, {r['triggers_s']:.2f} s)"
    )
    print(f"bulk speed-up         {r['contacts_per_s'] / r['triggers_per_s']:8.1f}x")
    print(f"429s provoked         {r['http_429']:8d}")
    print(f"max requests in 1 s   {r['max_requests_in_1s']:8d}")
    print(f"rate-limiter wait     {r['rate_limiter_wait_s']:8.1f} s (summed over concurrent calls)")


if __name__ == "__main__":
    main()
