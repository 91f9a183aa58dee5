"""`make demo`: a local broker, the stand-in Autopilot API and the worker, fed a realistic mix.

It sends identify and track calls (some with Engage audiences, some repeated, some invalid)
through the worker's Segment HTTP API, every Autopilot email event type (and some invalid ones)
through the Autopilot webhook, waits until every input is accounted for, then prints:

- per pipeline, that every input is accounted for: in = out + skipped + dead-lettered, with the
  skips (from the worker's metrics) and the dead letters (from their topic) by reason, whole;
- why delivery made fewer HTTP requests than it delivered descriptors (bulk upserts);
- one input of each pipeline with what it became, down to the stand-in's contact.

Everything runs on free ports in a temporary directory (`autopilot-demo-*`), stopped and
removed at the end; it is kept, and said so, when the demo fails (or with `--keep`).

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
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

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
        print(
            f"POST /v1/track without a write key: {reply.status_code} (refused at the door: "
            "written to no topic, so in no count below)"
        )


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


CALLS = "segment.calls"
EMAIL_EVENTS = "autopilot.email-events"
TRACKS = "segment.tracks"
REQUESTS = "autopilot.requests"
DELIVERIES = "autopilot.deliveries"
DEAD_LETTERS = "autopilot-worker.dead-letters"
TOPICS = [CALLS, EMAIL_EVENTS, TRACKS, REQUESTS, DELIVERIES, DEAD_LETTERS]
#: How long the demo waits for every input to be accounted for once the topics are quiet.
RECONCILE_TIMEOUT_S = 60.0


@dataclass
class Ledger:
    """One pipeline's inputs and their fates: in = out + skipped + dead-lettered."""

    name: str
    route: str
    inputs: int
    out: int
    skipped: Counter[str] = field(default_factory=Counter)
    dead: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def balance(self) -> int:
        """Inputs not accounted for (0 when it adds up)."""
        return self.inputs - self.out - self.skipped.total() - self.dead.total()


@dataclass
class Outputs:
    """What the topics, the worker's metrics and the stand-in hold once the mix is through."""

    calls: list[Any]
    events: list[Any]
    tracks: list[Any]
    requests: list[Any]
    deliveries: list[Any]
    letters: list[Any]
    skipped: Counter[tuple[str, str]]
    state: dict[str, Any]

    def ledgers(self) -> list[Ledger]:
        dead: dict[str, Counter[tuple[str, str]]] = {}
        for letter in self.letters:
            headers = {k: v.decode(errors="replace") for k, v in letter.headers}
            reason = headers.get("__autopilot.errors.exception.message", "?")
            error = headers.get("__autopilot.errors.class.name", "?")
            pipeline = headers.get("__autopilot.errors.pipeline", "?")
            dead.setdefault(pipeline, Counter())[error, reason] += 1
        outcomes = Counter(orjson.loads(r.value)["outcome"] for r in self.deliveries)

        def skips(pipeline: str) -> Counter[str]:
            return Counter({r: n for (p, r), n in self.skipped.items() if p == pipeline})

        return [
            Ledger("destination", f"{CALLS} -> {REQUESTS}", len(self.calls), len(self.requests),
                   skips("destination"), dead.get("destination", Counter())),
            Ledger("source", f"{EMAIL_EVENTS} -> {TRACKS}", len(self.events), len(self.tracks),
                   skips("source"), dead.get("source", Counter())),
            Ledger("delivery", f"{REQUESTS} -> the API, outcomes on {DELIVERIES}",
                   len(self.requests), outcomes["delivered"], skips("delivery"),
                   dead.get("delivery", Counter())),
        ]  # fmt: skip


async def skipped_by_reason(web: str) -> Counter[tuple[str, str]]:
    """(pipeline, reason) -> messages skipped, from the worker's /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{web}/metrics")).text
    found: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "autopilot_worker_messages_skipped_total":
                labels = sample.labels
                found[labels["pipeline"], labels["reason"]] += int(sample.value)
    return found


async def gather(kafka: dict[str, Any], web: str, fake: str) -> Outputs:
    read = {topic: await read_topic(kafka, topic) for topic in TOPICS}
    async with httpx.AsyncClient(base_url=fake) as client:
        state = (await client.get("/_state")).json()
    return Outputs(
        calls=read[CALLS],
        events=read[EMAIL_EVENTS],
        tracks=read[TRACKS],
        requests=read[REQUESTS],
        deliveries=read[DELIVERIES],
        letters=read[DEAD_LETTERS],
        skipped=await skipped_by_reason(web),
        state=state,
    )


async def reconciled(kafka: dict[str, Any], web: str, fake: str) -> Outputs:
    """The outputs once the topics are quiet and every input is accounted for (or, after
    `RECONCILE_TIMEOUT_S`, as they are: the summary then says what does not add up)."""
    await settle(kafka, TOPICS, quiet_s=3)
    deadline = time.monotonic() + RECONCILE_TIMEOUT_S
    while True:
        outputs = await gather(kafka, web, fake)
        if all(ledger.balance == 0 for ledger in outputs.ledgers()):
            return outputs
        if time.monotonic() > deadline:
            return outputs
        await asyncio.sleep(1)


def print_ledgers(ledgers: list[Ledger]) -> None:
    print("\nEvery input, accounted for (in = out + skipped + dead-lettered):\n")
    print("| pipeline | route | in | out | skipped | dead-lettered | adds up |")
    print("|---|---|---|---|---|---|---|")
    for ledger in ledgers:
        adds_up = "yes" if ledger.balance == 0 else f"NO: {ledger.balance:+d} unaccounted"
        print(f"| {ledger.name} | {ledger.route} | {ledger.inputs} | {ledger.out} | "
              f"{ledger.skipped.total()} | {ledger.dead.total()} | {adds_up} |")  # fmt: skip
    print("\n| pipeline | skipped (acknowledged, nothing sent), by reason | count |\n|---|---|---|")
    for ledger in ledgers:
        for reason, count in sorted(ledger.skipped.items()):
            print(f"| {ledger.name} | {reason} | {count} |")
    print("\n| pipeline | dead-lettered, by error and reason | count |\n|---|---|---|")
    for ledger in ledgers:
        for (error, reason), count in sorted(ledger.dead.items()):
            print(f"| {ledger.name} | {error}: {reason} | {count} |")
    print(
        "\nA dead letter keeps its input byte for byte with the reason; "
        "`python -m worker dlq list` lists them, `dlq replay` replays them once fixed."
    )


def print_bulk(outputs: Outputs) -> None:
    """Why the stand-in saw fewer requests than delivery delivered descriptors."""
    requests = [orjson.loads(r.value) for r in outputs.requests]
    upserts = [r for r in requests if r["kind"] == "upsert_contact"]
    triggers = [r for r in requests if r["kind"] == "trigger_journey"]
    by_route: dict[str, dict[str, int]] = outputs.state["requests"]["by_route"]

    def sent(route: str) -> int:
        return sum(by_route.get(route, {}).values())

    bulks, singles = sent("POST /v1/contacts"), sent("POST /v1/contact")
    trigger_calls = sent("POST /v1/trigger/{trigger_id}/contact/{contact}")
    total = outputs.state["requests"]["total"]
    statuses: Counter[str] = Counter()
    for counts in by_route.values():
        statuses.update(counts)
    print(
        f"\nDelivery: {len(requests)} request descriptors, {total} HTTP requests at the stand-in. "
        "Delivery gathers the descriptors of a batch (AUTOPILOT_BULK_LINGER_MS) and merges the "
        "contact upserts per email (later fields win) into bulk POST /v1/contacts requests of up "
        "to 100 contacts (POST /v1/contact for a lone one); each journey trigger is a request of "
        "its own, sent after its contact's upsert:"
    )
    contacts = len({u["contact"] for u in upserts})
    print(f"  {len(upserts)} contact upserts of {contacts} contacts -> {bulks} bulk and "
          f"{singles} single upsert requests")  # fmt: skip
    print(f"  {len(triggers)} journey triggers -> {trigger_calls} trigger requests")
    answers = ", ".join(f"{count} answered {status}" for status, count in sorted(statuses.items()))
    violations = outputs.state["http_429"]["rate_limited"]
    print(f"  = {bulks + singles + trigger_calls} requests; the stand-in counted {total} "
          f"({answers}; rate-limit violations: {violations})")  # fmt: skip


def _compact(value: bytes | dict[str, Any]) -> str:
    data = orjson.loads(value) if isinstance(value, bytes) else value
    return json.dumps(data, ensure_ascii=False)


def print_examples(outputs: Outputs) -> None:
    """One identify through the destination and delivery, one email event through the source."""
    print("\nOne input of each pipeline and what it became:")
    calls = [orjson.loads(r.value) for r in outputs.calls]
    identify = next(c for c in calls if c["type"] == "identify" and c.get("userId") == "user-1")
    descriptor = next(
        (r.value for r in outputs.requests
         if orjson.loads(r.value)["message_id"] == identify["messageId"]), None
    )  # fmt: skip
    outcome = next(
        (r.value for r in outputs.deliveries
         if orjson.loads(r.value)["message_id"] == identify["messageId"]), None
    )  # fmt: skip
    email = identify["traits"]["email"]
    print(f"\n  identify on {CALLS} (messageId, receivedAt and timestamp added by the ingest):")
    print(f"    {_compact(identify)}")
    print(f"  -> request descriptor on {REQUESTS}:")
    print(f"    {_compact(descriptor) if descriptor else '(none)'}")
    print(f"  -> outcome on {DELIVERIES}:")
    print(f"    {_compact(outcome) if outcome else '(none)'}")
    print("  -> the contact at the stand-in (GET /_state), all of this contact's upserts merged:")
    print(f"    {_compact(outputs.state['contacts'].get(email, {}))}")
    events = [orjson.loads(r.value) for r in outputs.events]
    event = next(e for e in events if e.get("id") == "evt_demo_0")
    track = next(
        (r.value for r in outputs.tracks
         if orjson.loads(r.value)["messageId"] == f"autopilot-{event['id']}"), None
    )  # fmt: skip
    print(f"\n  email event on {EMAIL_EVENTS}:")
    print(f"    {_compact(event)}")
    print(f"  -> Segment track on {TRACKS} (userId learned from the identify of its email):")
    print(f"    {_compact(track) if track else '(none)'}")


async def summary(kafka: dict[str, Any], web: str, fake: str) -> bool:
    """Print the summary; False when some input is not accounted for."""
    outputs = await reconciled(kafka, web, fake)
    ledgers = outputs.ledgers()
    print_ledgers(ledgers)
    print_bulk(outputs)
    print_examples(outputs)
    tracks = [orjson.loads(r.value) for r in outputs.tracks]
    known = sum(1 for t in tracks if "userId" in t)
    print(f"\nsource tracks: {len(tracks)} ({known} with a learned or given userId, "
          f"{len(tracks) - known} anonymous: of an email no identify named)")  # fmt: skip
    return all(ledger.balance == 0 for ledger in ledgers)


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
    parser = argparse.ArgumentParser(prog="deploy/demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the logs and the broker's data")
    parser.add_argument(
        "--secured", action="store_true", help="over the broker's SASL_SSL listener (SCRAM)"
    )
    args = parser.parse_args(argv)
    keep: bool = args.keep
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
    if args.secured:
        env.update(secured_settings(kafka))
    print(f"demo: Kafka on {env['KAFKA_BOOTSTRAP_SERVERS']}, logs in {workdir}", flush=True)
    children: list[subprocess.Popen[bytes]] = []
    adds_up = False
    try:
        kafka.start()
        with (
            (workdir / "fake.log").open("wb") as fake_log,
            (workdir / "worker.log").open("wb") as log,
        ):
            fake = [sys.executable, "-m", "worker", "fake-autopilot", "--port", str(fake_port)]
            children.append(
                subprocess.Popen(fake, env=env, stdout=fake_log, stderr=fake_log, cwd=workdir)
            )
            worker = [sys.executable, "-m", "worker", "run"]
            children.append(subprocess.Popen(worker, env=env, stdout=log, stderr=log, cwd=workdir))
        web = f"http://127.0.0.1:{web_port}"
        adds_up = asyncio.run(_demo(web, env["AUTOPILOT_BASE_URL"], client_config(env)))
    finally:
        for child in reversed(children):
            _stop(child)
        kafka.stop()
        if adds_up and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"\ndemo: stopped; {workdir} removed")
        else:
            print(f"\ndemo: stopped; the worker's log and the broker's data are in {workdir}")
    return 0 if adds_up else 1


async def _demo(web: str, fake: str, kafka: dict[str, Any]) -> bool:
    await wait_http(f"{fake}/_state")
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{web}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not become ready; see worker.log")
            await asyncio.sleep(0.5)
    await feed(web, kafka)
    return await summary(kafka, web, fake)


if __name__ == "__main__":
    sys.exit(main())
