"""Accepted Segment messages/s on `POST /v1/batch` (100 messages a request), end to end.

The real worker (`python -m worker run`) and a real broker run on this machine; the load comes
from this process (aiohttp, CONCURRENCY requests in flight), so all three share the CPUs. A
message counts as accepted when its request was answered 200, which the worker does only after
Kafka acknowledged every message (acks=all); the figure is checked against the topic's end
offsets. The worker's destination agents consume the same topic meanwhile, as in production.

The broker is KAFKA_BOOTSTRAP_SERVERS when set, else a throw-away local one
(deploy/local-kafka). Run: `.venv/bin/python tests/benchmarks/bench_ingest.py` (about 40 s).
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(REPO))

WRITE_KEY = "wk-bench"
PER_REQUEST = 100
CONCURRENCY = 8
WARMUP_S = 3.0
MEASURE_S = 15.0
BODIES = 64


def _bodies() -> list[bytes]:
    """Distinct /v1/batch bodies shaped like the Python client's (a 300-byte track each)."""
    now = "2026-01-01T12:00:00.000+00:00"
    bodies = []
    for b in range(BODIES):
        batch = [
            {
                "type": "track",
                "userId": f"user-{b}-{i % 20}",
                "event": "Plan Upgraded",
                "properties": {"plan": "pro", "seats": i, "coupon": None},
                "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
                "integrations": {},
                "timestamp": now,
                "messageId": str(uuid.uuid4()),
            }
            for i in range(PER_REQUEST)
        ]
        bodies.append(orjson.dumps({"batch": batch, "sentAt": now}))
    return bodies


async def _load(base_url: str, bodies: list[bytes], seconds: float) -> tuple[int, list[float]]:
    """Post for `seconds`; (messages accepted, latency of each accepted request in s)."""
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    accepted = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as http:

        async def client(n: int) -> None:
            nonlocal accepted
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.post("/v1/batch", data=bodies[n % len(bodies)]) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status}: {await response.text()}")
                latencies.append(time.perf_counter() - started)
                accepted += PER_REQUEST
                n += CONCURRENCY

        await asyncio.gather(*(client(n) for n in range(CONCURRENCY)))
    return accepted, latencies


def measure(bootstrap: str) -> dict[str, Any]:
    """The figures on the broker at `bootstrap`, as a dict (`main` prints them)."""
    from tests.benchmarks.broker import client_security  # noqa: PLC0415
    from tests.kafkautil import end_offsets  # noqa: PLC0415
    from tests.workerproc import WorkerProcess, worker_env  # noqa: PLC0415

    bodies = _bodies()
    with tempfile.TemporaryDirectory() as tmp:
        env = worker_env(bootstrap, uuid.uuid4().hex[:10], SEGMENT_WRITE_KEYS=WRITE_KEY)
        worker = WorkerProcess(env, Path(tmp) / "worker.log").start()
        try:
            worker.wait_for_log("[^Worker]: Ready")
            base_url = f"http://127.0.0.1:{env['WORKER_WEB_PORT']}"
            warm, _ = asyncio.run(_load(base_url, bodies, WARMUP_S))
            accepted, latencies = asyncio.run(_load(base_url, bodies, MEASURE_S))
            ends = end_offsets(bootstrap, env["TOPIC_SEGMENT_CALLS"], security=client_security())
            stored = sum(asyncio.run(ends).values())
        finally:
            worker.stop()
    if stored < warm + accepted:
        raise RuntimeError(f"only {stored} messages on the topic, {warm + accepted} answered 200")
    latencies.sort()
    return {
        "cpus": os.cpu_count(),
        "messages_per_s": round(accepted / MEASURE_S),
        "accepted": accepted,
        "seconds": MEASURE_S,
        "per_request": PER_REQUEST,
        "concurrency": CONCURRENCY,
        "requests_per_s": round(len(latencies) / MEASURE_S, 1),
        "request_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "request_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "on_topic": stored,
    }


def main() -> None:
    from tests.benchmarks.broker import bench_broker  # noqa: PLC0415

    with bench_broker() as broker:
        try:
            r = measure(broker.bootstrap)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
    print(f"cpus                      {r['cpus']}")
    print(
        f"accepted messages/s   {r['messages_per_s']:10.0f}   ({r['accepted']} in "
        f"{r['seconds']:g} s, {r['per_request']} per /v1/batch request, {r['concurrency']} "
        "requests in flight)"
    )
    print(f"requests/s            {r['requests_per_s']:10.1f}")
    print(
        f"request latency ms        p50 {r['request_p50_ms']:.1f}   p99 {r['request_p99_ms']:.1f}"
    )
    print(f"on the topic              {r['on_topic']} (all answered 200, warm-up included)")


if __name__ == "__main__":
    main()
