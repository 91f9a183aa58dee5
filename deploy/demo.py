"""`make demo`: a local broker, the stand-in Autopilot API and the worker, fed a realistic mix.

It sends identify and track calls (some with Engage audiences, some repeated, some invalid)
through the worker's Segment HTTP API, every Autopilot email event type (and some invalid ones)
through the Autopilot webhook, waits until the pipeline is quiet, then prints a summary: records
per topic, dead letters by reason, and contacts and journey entries at the stand-in. Everything
runs on free ports in a temporary directory and is stopped at the end.

`python deploy/demo.py --secured` (`make demo DEMO_ARGS=--secured`) runs the broker in its
secured mode and the worker, and the demo's own Kafka clients, over its SASL_SSL listener with
SCRAM-SHA-512 and the broker's CA: the settings of "Connecting to a secured Kafka" in the
README. The demo's clients connect as the worker does (`kafka_client_config`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.runtime.kafka_connection import kafka_client_config
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "demo-api-key"
WRITE_KEY = "demo-write-key"
WEBHOOK_TOKEN = "demo-webhook-token"  # noqa: S105  (a throwaway token for the demo)
EVENT_TYPES = [
    "email_bounced",
    "email_delivered",
    "email_clicked",
    "email_marked_as_spam",
    "email_opened",
    "email_unsubscribed",
    "email_replied",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _load_localkafka() -> ModuleType:
    path = ROOT / "deploy" / "local-kafka" / "localkafka.py"
    spec = importlib.util.spec_from_file_location("localkafka", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


def segment_calls() -> list[dict[str, Any]]:
    """Identify and track calls as a product would send them, with a few mistakes."""
    calls: list[dict[str, Any]] = []
    for n in range(1, 21):
        user = f"user-{n}"
        email = f"person{n}@example.com"
        traits = {"email": email, "firstName": f"Person{n}", "plan": "pro" if n % 3 else "free"}
        calls.append({"type": "identify", "userId": user, "traits": traits})
        calls.append({"type": "track", "userId": user, "event": "Signed Up",
                      "properties": {"plan": traits["plan"]}})  # fmt: skip
        if n % 4 == 0:
            audience = {"computation_class": "audience", "computation_key": "power_users"}
            for _ in range(2):  # the second sync repeats the first: no API call
                calls.append({"type": "identify", "userId": user,
                              "traits": {"email": email, "power_users": True},
                              "context": {"personas": audience}})  # fmt: skip
    calls.append({"type": "page", "userId": "user-1", "name": "Pricing"})
    calls.append({"type": "track", "userId": "user-2", "event": "Ignored",
                  "integrations": {"AutopilotHQ": False}})  # fmt: skip
    calls.append({"type": "identify", "traits": {"firstName": "Nobody"}, "anonymousId": "a-1"})
    calls.append({"type": "track", "anonymousId": "a-2", "event": "Signed Up"})
    calls.append({"type": "shout", "userId": "user-3"})
    return calls


def email_events() -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    for n, kind in enumerate(EVENT_TYPES * 3):
        who = n % 25 + 1  # person21..25 were never identified: they stay anonymous
        event: dict[str, Any] = {
            "id": f"evt_demo_{n}",
            "type": kind,
            "occurred_at": "2026-11-20T10:15:00Z",
            "contact": {"contact_id": f"person_{who}", "email": f"person{who}@example.com"},
            "journey": {"id": "campaign_onboarding", "name": "Onboarding Journey"},
            "email": {"id": "email_welcome", "subject": "Welcome", "name": "First email"},
        }
        if kind == "email_clicked":
            event["link"] = {"id": "link_1", "url": "https://example.com/pricing"}
        events.append(event)
    events.append({"id": "evt_bad_1", "type": "email_forwarded", "occurred_at": "x"})
    events.append({"id": "evt_bad_2", "type": "email_clicked", "occurred_at":
                   "2026-11-20T10:15:00Z", "contact": {"contact_id": "p", "email": "a@b.c"},
                   "email": {"id": "e"}})  # fmt: skip
    events.append({"id": "evt_test", "type": "email_opened", "occurred_at":
                   "2026-11-20T10:15:00Z", "contact": {"contact_id": "p", "email": "a@b.c"},
                   "email": {"id": "e"}, "test": True})  # fmt: skip
    return events


async def wait_http(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                await client.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.5)
            else:
                return
    raise RuntimeError(f"{url} did not answer in {timeout_s}s")


async def feed(web: str, kafka: dict[str, Any]) -> None:
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    async with httpx.AsyncClient(base_url=web, timeout=30) as client:
        batch = {"batch": segment_calls()}
        reply = await client.post(
            "/v1/batch", json=batch, headers={"Authorization": f"Basic {basic}"}
        )
        print(f"POST /v1/batch ({len(batch['batch'])} calls): {reply.status_code}")
        # let the identities be learned first, so the email events can name their users
        await settle(kafka, ["autopilot.requests"], quiet_s=2)
        events = email_events()
        reply = await client.post(f"/autopilot/events?token={WEBHOOK_TOKEN}", json=events)
        print(f"POST /autopilot/events ({len(events)} events): {reply.status_code}")
        reply = await client.post("/v1/track", json={"event": "x"})
        print(f"POST /v1/track without a write key: {reply.status_code}")


async def topic_counts(consumer: AIOKafkaConsumer, topics: list[str]) -> dict[str, int]:
    counts = {}
    for topic in topics:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = await consumer.end_offsets(parts) if parts else {}
        counts[topic] = sum(ends.values())
    return counts


def client_config(env: dict[str, str]) -> dict[str, Any]:
    """How the demo's clients connect: as the worker with the settings in `env` does."""
    kafka = {k.lower(): v for k, v in env.items() if k.startswith("KAFKA_")}
    return kafka_client_config(Settings.model_validate(kafka))


async def read_topic(kafka: dict[str, Any], topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, **kafka, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list[Any] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def settle(kafka: dict[str, Any], topics: list[str], quiet_s: float = 6) -> dict[str, int]:
    """Wait until no topic has grown for a few seconds."""
    consumer = AIOKafkaConsumer(*topics, **kafka)
    await consumer.start()
    try:
        last: dict[str, int] = {}
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            await asyncio.sleep(1)
            now = await topic_counts(consumer, topics)
            if now != last:
                last, quiet_since = now, time.monotonic()
        return last
    finally:
        await consumer.stop()


async def summary(kafka: dict[str, Any], fake: str) -> None:
    topics = [
        "segment.calls",
        "autopilot.email-events",
        "segment.tracks",
        "autopilot.requests",
        "autopilot.deliveries",
        "autopilot-worker.dead-letters",
    ]
    counts = await settle(kafka, topics)
    print("\n| topic | records |\n|---|---|")
    for topic, count in counts.items():
        print(f"| {topic} | {count} |")
    letters = await read_topic(kafka, "autopilot-worker.dead-letters")
    reasons = Counter(
        (h.get("__autopilot.errors.pipeline", b"").decode(),
         h.get("__autopilot.errors.class.name", b"").decode(),
         h.get("__autopilot.errors.exception.message", b"").decode()[:70])
        for h in (dict(r.headers) for r in letters)
    )  # fmt: skip
    print("\n| pipeline | error class | reason | count |\n|---|---|---|---|")
    for (pipeline, cls, reason), count in sorted(reasons.items()):
        print(f"| {pipeline} | {cls} | {reason} | {count} |")
    async with httpx.AsyncClient(base_url=fake) as client:
        state = (await client.get("/_state")).json()
    tracks = [orjson.loads(r.value) for r in await read_topic(kafka, "segment.tracks")]
    known = sum(1 for t in tracks if "userId" in t)
    print(f"\nstand-in Autopilot API: {len(state['contacts'])} contacts, "
          f"{len(state['journeys'])} journey entries, {state['requests']['total']} requests, "
          f"{state['http_429']['rate_limited']} rate-limit violations")  # fmt: skip
    print(f"source tracks: {len(tracks)} ({known} with a learned or given userId, "
          f"{len(tracks) - known} anonymous)")  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def secured_settings(kafka: Any) -> dict[str, str]:
    """The worker's settings for the secured local broker's SASL_SSL listener."""
    user = kafka.security.scram_sha_512
    return {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.sasl_ssl_bootstrap),
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": str(user.username),
        "KAFKA_SASL_PASSWORD": str(user.password),
        "KAFKA_SSL_CA_FILE": str(kafka.ca_file),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--secured", action="store_true", help="over the broker's SASL_SSL listener (SCRAM)"
    )
    args = parser.parse_args(argv)
    localkafka = _load_localkafka()
    workdir = Path(tempfile.mkdtemp(prefix="autopilot-demo-"))
    port = _free_port()
    kafka = localkafka.LocalKafka(
        port=port,
        controller_port=_free_port(),
        data_dir=workdir / "kafka",
        security=localkafka.KafkaSecurity.on_free_ports() if args.secured else None,
    )
    fake_port, web_port = _free_port(), _free_port()
    plain = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env = dict(
        plain,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap,
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=f"http://127.0.0.1:{fake_port}",
        AUTOPILOT_TRIGGER_ID="0001",
        AUTOPILOT_BULK_LINGER_MS="500",
        SEGMENT_WRITE_KEYS=WRITE_KEY,
        AUTOPILOT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        WORKER_WEB_PORT=str(web_port),
    )
    kafka.start()
    if args.secured:
        env.update(secured_settings(kafka))
    print(f"demo: Kafka on {env['KAFKA_BOOTSTRAP_SERVERS']}, logs in {workdir}", flush=True)
    children: list[subprocess.Popen[bytes]] = []
    try:
        with (
            (workdir / "fake.log").open("wb") as fake_log,
            (workdir / "worker.log").open("wb") as log,
        ):
            fake = [sys.executable, "-m", "worker", "fake-autopilot", "--port", str(fake_port)]
            children.append(subprocess.Popen(fake, env=env, stdout=fake_log, stderr=fake_log))
            worker = [sys.executable, "-m", "worker", "run"]
            children.append(subprocess.Popen(worker, env=env, stdout=log, stderr=log))
        web = f"http://127.0.0.1:{web_port}"
        asyncio.run(_demo(web, env["AUTOPILOT_BASE_URL"], client_config(env), workdir))
    finally:
        for child in reversed(children):
            _stop(child)
        kafka.stop()
    return 0


async def _demo(web: str, fake: str, kafka: dict[str, Any], workdir: Path) -> None:
    await wait_http(f"{fake}/_state")
    await wait_http(f"{web}/healthz")
    deadline = time.monotonic() + 120
    while "[^Worker]: Ready" not in (workdir / "worker.log").read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not become ready; see worker.log")
        await asyncio.sleep(0.5)
    await feed(web, kafka)
    await summary(kafka, fake)


if __name__ == "__main__":
    sys.exit(main())
