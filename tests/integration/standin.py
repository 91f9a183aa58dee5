"""Talking to the stand-in APIs (Autopilot's, Ortto's) and to a delivering worker's topics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from tests.kafkautil import Record, consume_all, produce
from tests.workerproc import WorkerProcess

__all__ = ["identify", "outcomes_for", "produce_calls", "set_faults", "state", "track"]


async def state(base_url: str) -> dict[str, Any]:
    """The stand-in's counters and what it holds (`GET /_state`)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.get("/_state")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def set_faults(base_url: str, **faults: Any) -> None:
    """The stand-in's faults from now on (`worker.tools.fake_autopilot.Faults`, which Ortto's
    stand-in takes too)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        (await client.post("/_faults", json=faults)).raise_for_status()


def identify(email: str, message_id: str, **traits: Any) -> bytes:
    body = {"type": "identify", "userId": f"u-{email}", "messageId": message_id}
    return orjson.dumps({**body, "traits": {"email": email, **traits}})


def track(email: str, message_id: str, event: str = "Signed Up") -> bytes:
    body = {"type": "track", "event": event, "userId": f"u-{email}", "messageId": message_id}
    return orjson.dumps({**body, "properties": {"email": email, "plan": "pro"}})


async def produce_calls(worker: WorkerProcess, calls: list[bytes]) -> None:
    """Segment calls keyed by userId, as a producer must key them for per-user order."""
    env = worker.env
    records: list[Record] = [(orjson.loads(c)["userId"].encode(), c, []) for c in calls]
    await produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_SEGMENT_CALLS"], records)


async def outcomes_for(
    worker: WorkerProcess,
    message_ids: set[str],
    wait_s: float = 90,
    *,
    topic: str = "TOPIC_AUTOPILOT_DELIVERIES",
) -> dict[str, dict[str, Any]]:
    """Final outcomes on a deliveries topic (the setting naming it: Autopilot's by default) for
    `message_ids` (waits until all are there)."""
    env = worker.env
    found: dict[str, dict[str, Any]] = {}
    deadline = asyncio.get_running_loop().time() + wait_s
    while asyncio.get_running_loop().time() < deadline:
        records = await consume_all(env["KAFKA_BOOTSTRAP_SERVERS"], env[topic], 10**9, timeout=2)
        found = {
            o["message_id"]: o
            for o in (orjson.loads(r.value) for r in records)
            if o["message_id"] in message_ids
        }
        if len(found) == len(message_ids):
            break
    return found
