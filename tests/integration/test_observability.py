"""/metrics, /healthz, /readyz and the JSON logs of the real worker on a real broker.

One worker (delivery on, against the stand-in API) serves the module; the counters are checked
against a known mix of valid, skipped and invalid input sent to it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.kafkautil import produce
from tests.workerproc import WorkerProcess

API_KEY = "obs-key-5b2e19c4"
TRIGGER = "0001"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(worker: WorkerProcess) -> Samples:
    async with httpx.AsyncClient(base_url=worker.web_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def present(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls), _ in samples.items() if n == name]


async def scrape_until(
    worker: WorkerProcess, done: Callable[[Samples], bool], wait_s: float = 90
) -> Samples:
    """Scrape until `done` holds (or `wait_s` passed: the caller's asserts then say what is off)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    samples = await scrape(worker)
    while not done(samples) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        samples = await scrape(worker)
    return samples


async def readyz(worker: WorkerProcess, query: str = "") -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=worker.web_url) as client:
        response = await client.get(f"/readyz{query}")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def ready_within(worker: WorkerProcess, wait_s: float = 60) -> tuple[int, dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + wait_s
    status, body = await readyz(worker)
    while status != 200 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        status, body = await readyz(worker)
    return status, body


def email_event(event_id: str, email: str, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00Z",
            "contact": {"contact_id": f"person_{event_id}", "email": email},
            "email": {"id": "email_1", "subject": "Welcome"},
            **extra,
        }
    )


def _email_key(raw: bytes) -> bytes:
    """The webhook's key for an event: its lowercased email (`b"k"` when it has none)."""
    try:
        return str(orjson.loads(raw)["contact"]["email"]).lower().encode() or b"k"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return b"k"


async def test_alive_and_ready_after_start_up(delivery_worker: WorkerProcess) -> None:
    async with httpx.AsyncClient(base_url=delivery_worker.web_url) as client:
        alive = await client.get("/healthz")
        # faust's own views are off: they would serve the tables' emails to anyone
        table = await client.get("/table/source_user_by_email/")
        router = await client.get("/router/")
    assert alive.status_code == 200
    assert alive.json() == {"status": "alive"}
    assert (table.status_code, router.status_code) == (404, 404)

    status, body = await ready_within(delivery_worker)
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert set(body["checks"]) == {"assignment", "recovery", "broker", "delivery", "pipelines"}
    assert all(check["ok"] for check in body["checks"].values())

    status, body = await readyz(delivery_worker, "?check=broker")
    assert (status, list(body["checks"])) == (200, ["broker"])
    status, body = await readyz(delivery_worker, "?check=nonsense")
    assert status == 400
    assert "nonsense" in body["error"]


async def test_counters_follow_valid_skipped_and_invalid_input(
    delivery_worker: WorkerProcess,
) -> None:
    env = delivery_worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:6]
    events = [
        *(email_event(f"evt_{tag}_{i}", f"obs{i}-{tag}@example.com") for i in range(4)),
        email_event(f"evt_{tag}_test", f"test-{tag}@example.com", test=True),  # skipped
        b"{not json",  # DecodeError
        email_event(f"evt_{tag}_fwd", f"fwd-{tag}@example.com", type="email_forwarded"),
        email_event(f"evt_{tag}_noemail", ""),  # ValidationError
    ]
    calls = [
        orjson.dumps(
            {
                "type": "identify",
                "userId": f"u-{tag}-{i}",
                "messageId": f"{tag}-identify-{i}",
                "traits": {"email": f"known{i}-{tag}@example.com"},
            }
        )
        for i in range(2)
    ]
    rejected = orjson.dumps(
        {
            "method": "POST",
            "path": f"/v1/trigger/{TRIGGER}/contact/nobody-{tag}%40example.com",
            "json": {"property": {}},
            "kind": "trigger_journey",
            "message_id": f"{tag}-404",
            "contact": f"nobody-{tag}@example.com",
        }
    )
    before = await scrape(delivery_worker)
    # keyed as the webhook keys them, so each valid event is on the partition its email hashes
    # to and the intake maps it at once; the map stage reads only the learned identities
    await produce(bootstrap, env["TOPIC_EMAIL_EVENTS"], [(_email_key(e), e, []) for e in events])
    await produce(
        bootstrap,
        env["TOPIC_SEGMENT_CALLS"],
        [(f"u-{tag}-{i}".encode(), c, []) for i, c in enumerate(calls)],
    )
    await produce(bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], [(b"k", rejected, [])])

    def delta(s: Samples, name: str, **labels: str) -> float:
        """How much `name` grew since `before` (the module's worker is shared)."""
        return value(s, f"autopilot_worker_{name}", **labels) - value(
            before, f"autopilot_worker_{name}", **labels
        )

    intake = {"pipeline": "source", "stage": "intake"}
    map_ = {"pipeline": "source", "stage": "map"}
    delivery = {"pipeline": "delivery"}

    dest_intake = {"pipeline": "destination", "stage": "intake"}

    def settled(s: Samples) -> bool:
        return (
            delta(s, "messages_out_total", **intake) >= 4
            and delta(s, "messages_out_total", **dest_intake) >= 6
            and delta(s, "messages_dead_lettered_total", pipeline="source") >= 3
            and delta(s, "delivery_outcomes_total") >= 3
        )

    s = await scrape_until(delivery_worker, settled)
    assert delta(s, "messages_in_total", **intake) == 8
    assert delta(s, "messages_out_total", **intake) == 4
    assert delta(s, "messages_skipped_total", **intake, reason="test_delivery") == 1
    for error_class in ("DecodeError", "UnsupportedType", "ValidationError"):
        dead = delta(s, "messages_dead_lettered_total", **intake, error_class=error_class)
        assert dead == 1, (error_class, dead)
    # the map stage read nothing: this worker holds every partition, so the destination's intake
    # wrote the two identities it learned into the source's table itself
    assert delta(s, "messages_in_total", **map_) == 0
    assert delta(s, "messages_out_total", **map_) == 0
    assert delta(s, "mapping_seconds_count", **intake) == 8
    assert delta(s, "mapping_seconds_sum", **intake) > 0
    assert delta(s, "batch_seconds_count", **intake) >= 1

    assert delta(s, "messages_in_total", **dest_intake) == 2
    # keyed by userId, so mapped in place: each call's request, its email's changelog record
    # and the source table's changelog record of the tie
    assert delta(s, "messages_out_total", **dest_intake) == 6

    assert delta(s, "messages_in_total", **delivery) == 3
    assert delta(s, "delivery_outcomes_total", outcome="delivered") == 2
    assert delta(s, "delivery_outcomes_total", outcome="dead_lettered", status="404") == 1
    assert delta(s, "messages_dead_lettered_total", **delivery, error_class="DeliveryRejected") == 1
    assert delta(s, "delivery_latency_seconds_count") == 3
    assert value(s, "autopilot_worker_delivery_paused") == 0
    assert present(s, "autopilot_worker_rate_limiter_wait_seconds_total")
    assert value(s, "autopilot_worker_scrape_errors_total") == 0
    assert present(s, "process_resident_memory_bytes")
    ready = {labels["check"] for labels in present(s, "autopilot_worker_ready")}
    assert ready == {"assignment", "recovery", "broker", "delivery", "pipelines"}
    paused = {labels["pipeline"] for labels in present(s, "autopilot_worker_pipeline_paused")}
    assert paused == {"source", "destination", "delivery", "warehouse", "replay"}
    assert value(s, "autopilot_worker_pipeline_paused", pipeline="source") == 0

    # every input partition reports its lag, and it drains to 0 once offsets are committed
    def drained(s: Samples) -> bool:
        lags = present(s, "autopilot_worker_consumer_lag")
        topic = {"topic": env["TOPIC_EMAIL_EVENTS"]}
        return any(ls["topic"] == topic["topic"] for ls in lags) and (
            value(s, "autopilot_worker_consumer_lag", **topic) == 0
        )

    s = await scrape_until(delivery_worker, drained, wait_s=30)
    lag_topics = {labels["topic"] for labels in present(s, "autopilot_worker_consumer_lag")}
    assert env["TOPIC_EMAIL_EVENTS"] in lag_topics
    assert not any(topic.endswith("-changelog") for topic in lag_topics)
    assert value(s, "autopilot_worker_consumer_lag", topic=env["TOPIC_EMAIL_EVENTS"]) == 0

    # the dead-letter warnings carry their context as fields, and never the key
    log_lines = [orjson.loads(line) for line in delivery_worker.log_text().splitlines() if line]
    letters = [e for e in log_lines if e["message"].startswith("dead-lettered")]
    by_id = {e.get("message_id"): e for e in letters}
    forwarded = by_id[f"evt_{tag}_fwd"]
    assert forwarded["pipeline"] == "source"
    assert forwarded["stage"] == "intake"
    assert forwarded["topic"] == env["TOPIC_EMAIL_EVENTS"]
    assert forwarded["error_class"] == "UnsupportedType"
    assert isinstance(forwarded["partition"], int)
    assert isinstance(forwarded["offset"], int)
    assert by_id[f"{tag}-404"]["pipeline"] == "delivery"
    assert by_id[f"{tag}-404"]["topic"] == env["TOPIC_AUTOPILOT_REQUESTS"]
    assert API_KEY not in delivery_worker.log_text()


async def test_a_paused_delivery_is_not_ready_but_ingest_is(
    delivery_worker: WorkerProcess, fake_api: str
) -> None:
    env = delivery_worker.env
    tag = uuid.uuid4().hex[:6]
    call = orjson.dumps(
        {
            "type": "identify",
            "userId": f"u-{tag}",
            "messageId": f"{tag}-paused",
            "traits": {"email": f"paused-{tag}@example.com"},
        }
    )
    async with httpx.AsyncClient(base_url=fake_api) as client:
        (await client.post("/_faults", json={"force_status": 401})).raise_for_status()
        try:
            await produce(
                env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_SEGMENT_CALLS"], [(None, call, [])]
            )
            s = await scrape_until(
                delivery_worker, lambda s: value(s, "autopilot_worker_delivery_paused") == 1, 60
            )
            assert value(s, "autopilot_worker_delivery_paused") == 1
            assert value(s, "autopilot_worker_ready", check="delivery") == 0
            status, body = await readyz(delivery_worker)
            assert status == 503
            assert body["failing"] == ["delivery"]
            assert "paused" in body["checks"]["delivery"]["detail"]
            status, body = await readyz(delivery_worker, "?check=broker")
            assert status == 200
        finally:
            (await client.post("/_faults", json={"force_status": None})).raise_for_status()
    status, body = await ready_within(delivery_worker)
    assert status == 200, body
