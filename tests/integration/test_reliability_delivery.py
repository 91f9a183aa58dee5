"""Delivery against a failing API: every request is delivered in the end, none dead-lettered.

The stand-in Autopilot API answers 30% of requests with a 5xx (500, 502 and 503 in turn), 10%
with a 429 and lets 5% hang (its `timeout_rate`: it answers after 30 s, long after the worker's
AUTOPILOT_REQUEST_TIMEOUT_S of 1 s). Every one of those is retryable, and the retry budget (4 h)
is far away, so every request descriptor must end `delivered` on the deliveries topic, nothing
may reach the dead letters, every contact must exist and every trigger must have entered its
journey. Identifies are upserted in bulks; each contact's track is a trigger that needs its
contact (404 otherwise), so order per contact is checked on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.integration import standin
from tests.reliability.inputs import SEGMENT_CALLS, TRIGGER_ID, Fate, Input
from tests.reliability.report import report
from tests.reliability.stream import produce_inputs, topic_names
from tests.reliability.supervisor import Supervisor, crash_lines
from tests.reliability.topics import read_topic
from tests.workerproc import worker_env
from worker.tools.fake_autopilot import FakeAutopilot

pytestmark = pytest.mark.integration

API_KEY = "reliability-delivery-key-51c9"
TIMEOUT_S = 1.0
"""AUTOPILOT_REQUEST_TIMEOUT_S of the worker under test."""
FAULTS = {"error_rate": 0.3, "rate_limited_rate": 0.1, "timeout_rate": 0.05}
ERROR_STATUSES = (500, 502, 503)


class SlowRequests:
    """Counts the API requests that took longer than the worker's timeout: the hung ones."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.slow = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.started[id(request)] = time.monotonic()
        try:
            return await handler(request)
        finally:
            if time.monotonic() - self.started.pop(id(request)) > TIMEOUT_S:
                self.slow += 1

    @property
    def count(self) -> int:
        """Finished slow requests, and unfinished ones already past the timeout."""
        now = time.monotonic()
        return self.slow + sum(1 for at in self.started.values() if now - at > TIMEOUT_S)


@pytest.fixture
def slow_requests() -> SlowRequests:
    return SlowRequests()


@pytest.fixture
async def faulty_api(slow_requests: SlowRequests) -> AsyncIterator[str]:
    """`worker.tools.fake_autopilot.start_fake_autopilot`, with `slow_requests` counting."""
    fake = FakeAutopilot([API_KEY], 5.0, seed=8)
    fake.app.middlewares.insert(0, slow_requests.middleware)
    runner = web.AppRunner(fake.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def _cycle_error_status(base_url: str) -> None:
    """Change the injected 5xx every few seconds, so each kind is met."""
    n = 0
    while True:
        await standin.set_faults(base_url, error_status=ERROR_STATUSES[n % len(ERROR_STATUSES)])
        n += 1
        await asyncio.sleep(3)


def _calls(contacts: int, tracks: int, tag: str) -> list[tuple[bytes, bytes, str]]:
    """(key, value, messageId): an identify per contact, then a track for the first `tracks`."""
    calls = []
    for i in range(contacts):
        message_id = f"{tag}-identify-{i}"
        body = {
            "type": "identify",
            "userId": f"u-{i}",
            "messageId": message_id,
            "traits": {"email": f"faults{i}@example.com", "plan": "pro", "seats": i},
        }
        calls.append((f"u-{i}".encode(), orjson.dumps(body), message_id))
    for i in range(tracks):
        message_id = f"{tag}-track-{i}"
        body = {
            "type": "track",
            "event": "Signed Up",
            "userId": f"u-{i}",
            "messageId": message_id,
            "properties": {"email": f"faults{i}@example.com", "plan": "pro"},
        }
        calls.append((f"u-{i}".encode(), orjson.dumps(body), message_id))
    return calls


async def _outcomes(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_topic(bootstrap, topic)]


async def _deliver_through_faults(
    bootstrap: str,
    unique: str,
    tmp_path: Path,
    fake_api: str,
    slow: SlowRequests,
    *,
    contacts: int,
    tracks: int,
) -> None:
    started = time.monotonic()
    env = worker_env(
        bootstrap,
        unique,
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID=TRIGGER_ID,
        AUTOPILOT_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
        AUTOPILOT_BULK_LINGER_MS="300",
    )
    names = topic_names(env)
    calls = _calls(contacts, tracks, unique)
    wanted = {message_id for _, _, message_id in calls}
    inputs = [Input(m, SEGMENT_CALLS, k, v, Fate.REQUEST, m, "call") for k, v, m in calls]
    await standin.set_faults(fake_api, **FAULTS)
    cycling = asyncio.create_task(_cycle_error_status(fake_api))
    delivered: dict[str, int] = {}
    outcomes: list[dict[str, Any]] = []
    try:
        async with Supervisor(env, tmp_path / "worker.log") as worker:
            await worker.wait_ready()
            await produce_inputs(bootstrap, env, inputs)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and set(delivered) != wanted:
                await asyncio.sleep(2)
                outcomes = await _outcomes(bootstrap, names.autopilot_deliveries)
                delivered = dict(
                    Counter(o["message_id"] for o in outcomes if o["outcome"] == "delivered")
                )
            seconds = time.monotonic() - started
            log = worker.log_text()
    finally:
        cycling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cycling
    state = await standin.state(fake_api)
    letters = await read_topic(bootstrap, names.dead_letters)
    statuses: Counter[str] = Counter()
    for route in state["requests"]["by_route"].values():
        statuses.update(route)
    journeys = [j for j in state["journeys"] if j["email"].startswith("faults")]
    attempts = [o["attempts"] for o in outcomes]
    report(
        f"delivery through faults, {contacts} identifies + {tracks} tracks",
        seconds=round(seconds, 1),
        faults=FAULTS,
        descriptors=len(wanted),
        outcomes=len(outcomes),
        delivered=len(delivered),
        duplicate_outcomes=sum(delivered.values()) - len(delivered),
        dead_lettered=sum(1 for o in outcomes if o["outcome"] != "delivered"),
        dead_letters=len(letters),
        api_requests=sum(statuses.values()),
        api_statuses=dict(statuses),
        timed_out=slow.count,
        injected_429=state["http_429"]["injected"],
        limit_429=state["http_429"]["rate_limited"],
        max_requests_in_a_second=state["max_rate"],
        max_attempts=max(attempts, default=0),
        attempts_total=sum(attempts),
        contacts_stored=sum(1 for email in state["contacts"] if email.startswith("faults")),
        journeys=len(journeys),
        **worker.figures(),
    )
    missing = wanted - set(delivered)
    assert not missing, f"{len(missing)} requests never delivered, e.g. {sorted(missing)[:5]}"
    assert [o for o in outcomes if o["outcome"] != "delivered"] == []
    assert letters == [], f"{len(letters)} dead letters, e.g. {letters[0].headers}"
    assert sum(1 for email in state["contacts"] if email.startswith("faults")) == contacts
    assert len({j["email"] for j in journeys}) == tracks
    assert max(attempts) > 1
    assert state["http_429"]["injected"] > 0
    assert slow.count > 0
    assert worker.exits == []
    assert crash_lines(log) == []


@pytest.mark.reliability
async def test_delivery_through_5xx_429_and_timeouts(
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
    faulty_api: str,
    slow_requests: SlowRequests,
) -> None:
    await _deliver_through_faults(
        kafka_bootstrap, unique, tmp_path, faulty_api, slow_requests, contacts=200, tracks=40
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_delivery_through_5xx_429_and_timeouts_at_volume(
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
    faulty_api: str,
    slow_requests: SlowRequests,
) -> None:
    await _deliver_through_faults(
        kafka_bootstrap, unique, tmp_path, faulty_api, slow_requests, contacts=2_000, tracks=300
    )
