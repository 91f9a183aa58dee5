"""No secret ever leaves the worker: a scan of every log line, topic record and response.

The worker runs at log level debug (more than production's info, so more to leak) with
distinctive values for AUTOPILOT_API_KEY, ORTTO_API_KEY, two SEGMENT_WRITE_KEYS,
AUTOPILOT_WEBHOOK_TOKEN and ORTTO_WEBHOOK_TOKEN, WORKER_ADMIN_TOKEN, and WAREHOUSE_URL (the
session's PostgreSQL server, its password in the URL), and traffic goes down every path:

- source: valid and invalid email events on the input topic (the valid one's track loaded into
  the warehouse);
- destination and delivery against both stand-in APIs (the worker serves Autopilot and Ortto):
  identifies and tracks delivered to each, a request Autopilot rejects (400, a dead letter with
  the response body), a trigger for an unknown contact (404), and a refused key at both APIs
  (401: each delivery pauses, probes with its key, resumes);
- ingest: the Segment HTTP API with a wrong and a right write key, as HTTP Basic and as
  `writeKey` in the body (which must not reach the topic), the Autopilot webhook with a wrong
  token and the right one in its header, as a Bearer token and in the query string, and Ortto's
  webhook with a wrong token and the right one as a basic-auth password, in its header and as a
  Bearer token;
- the console: refused without the admin token and with a wrong one; its page, searches (the
  recent failures and the whole dead-letter topic) and a replay of the 400's dead letter with
  it (as a Bearer token and as the Basic password), until the replay shows it failed again.

Then every log line, every record (key, value, header names and values) of every topic the
broker lists for this worker, the dead letters among them, and every response the worker gave
are searched for each secret as is, in base64 (an HTTP Basic header is `base64(key + ":")`) and
percent-encoded. The wrong write key and tokens are searched for too: a wrong key is often a
right key with a typo.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import orjson
import psycopg
import pytest

from tests.kafkautil import produce
from tests.reliability.report import report
from tests.reliability.stream import topic_names
from tests.reliability.supervisor import Supervisor
from tests.reliability.topics import list_topics, read_topic
from tests.workerproc import worker_env
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.tools.fake_autopilot import start_fake_autopilot
from worker.tools.fake_ortto import start_fake_ortto

pytestmark = pytest.mark.integration

API_KEY = "apk-LEAKCHECK-7f3a9c1e5b2d"
ORTTO_API_KEY = "oak-LEAKCHECK-8d0f2b4c6e1a"
WRITE_KEY = "wk-LEAKCHECK-2d8e4b6a0c1f"
OTHER_WRITE_KEY = "wk-LEAKCHECK-9a1b3c5d7e0a"
WEBHOOK_TOKEN = "tok-LEAKCHECK-5e7a9c1d3f8b"
ORTTO_TOKEN = "ort-LEAKCHECK-3b5d7f9a1c2e"
ADMIN_TOKEN = "adm-LEAKCHECK-3c5e7a9b1d2f"
SECRETS = (
    API_KEY,
    ORTTO_API_KEY,
    WRITE_KEY,
    OTHER_WRITE_KEY,
    WEBHOOK_TOKEN,
    ORTTO_TOKEN,
    ADMIN_TOKEN,
)
WRONG = ("wk-WRONGKEY-0b1c2d3e4f5a", "tok-WRONGTOKEN-6a7b8c9d0e1f", "adm-WRONGTOKEN-4d6f8a0c2e")
TRIGGER = "0001"


def _forms(secret: str) -> set[bytes]:
    """The ways a secret can be written: as is, base64 (standard and URL-safe, with and without
    the Basic ':' and padding) and percent-encoded."""
    forms = {secret.encode(), quote(secret, safe="").encode()}
    for text in (secret, secret + ":", ":" + secret):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(text.encode())
            forms |= {encoded, encoded.rstrip(b"=")}
    return forms


NEEDLES: dict[bytes, str] = {
    form: name
    for name, secret in [
        ("AUTOPILOT_API_KEY", API_KEY),
        ("ORTTO_API_KEY", ORTTO_API_KEY),
        ("SEGMENT_WRITE_KEYS[0]", WRITE_KEY),
        ("SEGMENT_WRITE_KEYS[1]", OTHER_WRITE_KEY),
        ("AUTOPILOT_WEBHOOK_TOKEN", WEBHOOK_TOKEN),
        ("ORTTO_WEBHOOK_TOKEN", ORTTO_TOKEN),
        ("WORKER_ADMIN_TOKEN", ADMIN_TOKEN),
        ("wrong write key", WRONG[0]),
        ("wrong webhook token", WRONG[1]),
        ("wrong admin token", WRONG[2]),
    ]
    for form in _forms(secret)
}


def _warehouse_needles(url: str) -> dict[bytes, str]:
    """WAREHOUSE_URL's forms and its password's (a random one of the test server)."""
    needles = dict.fromkeys(_forms(url), "WAREHOUSE_URL")
    password = urlsplit(url).password
    if password:
        needles |= dict.fromkeys(_forms(unquote(password)), "WAREHOUSE_URL's password")
    return needles


def _leaks(where: str, data: bytes) -> list[str]:
    return [f"{NEEDLES[n]} in {where}" for n in NEEDLES if n in data]


def _basic(key: str, password: str = "") -> dict[str, str]:
    credentials = base64.b64encode(f"{key}:{password}".encode()).decode()
    return {"Authorization": "Basic " + credentials}


def _basic_password(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def _event(event_id: str, email: str) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00+02:00",
            "contact": {"contact_id": f"person_{event_id}", "email": email},
            "email": {"id": "email_1"},
        }
    )


def _ortto_activity(field_id: str, email: str) -> dict[str, Any]:
    return {
        "id": f"ortto-{field_id}",
        "time": "2026-11-20T10:15:00.123456789Z",
        "webhook_id": "webhook-1",
        "activity": {"id": "activity-1", "field_id": field_id, "attr": {}},
        "contact": {"contact_id": "contact-1", "email": email},
    }


def _call(kind: str, user: str, message_id: str, email: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"type": kind, "userId": user, "messageId": message_id}
    if kind == "identify":
        call["traits"] = {"email": email} if email else {}
    else:
        call["event"] = "Signed Up"
        call["properties"] = {"email": email} if email else {}
    return call


async def _wait(what: str, check: Any, timeout: float = 60) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def _outcome_ids(bootstrap: str, topic: str) -> dict[str, str]:
    records = await read_topic(bootstrap, topic)
    return {o["message_id"]: o["outcome"] for o in (orjson.loads(r.value) for r in records)}


async def _http_traffic(base_url: str, responses: list[httpx.Response]) -> None:
    """Every ingest request: wrong keys and tokens refused, right ones accepted."""
    batch = {"batch": [_call("identify", "u-http", "m-http-batch", "http@example.com")]}
    body_key = {
        **_call("track", "u-http", "m-http-body", "http@example.com"),
        "writeKey": WRITE_KEY,
    }
    webhook = orjson.dumps(orjson.loads(_event("evt-hook", "hook@example.com")))
    ortto = orjson.dumps(_ortto_activity("act::o", "ortto@example.com"))
    ortto_test = orjson.dumps(_ortto_activity("act::test_webhook", "ortto@example.com"))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        sent: list[tuple[str, dict[str, str], bytes, int]] = [
            ("/v1/batch", _basic(WRONG[0]), orjson.dumps(batch), 401),
            ("/v1/batch", {}, orjson.dumps({**batch, "writeKey": WRONG[0]}), 401),
            ("/v1/batch", _basic(WRITE_KEY), orjson.dumps(batch), 200),
            ("/v1/identify", _basic(OTHER_WRITE_KEY), orjson.dumps(batch["batch"][0]), 200),
            ("/v1/track", {}, orjson.dumps(body_key), 200),
            ("/autopilot/events", {"X-Autopilot-Token": WRONG[1]}, webhook, 401),
            ("/autopilot/events", {"X-Autopilot-Token": WEBHOOK_TOKEN}, webhook, 200),
            ("/autopilot/events", {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, webhook, 200),
            (f"/autopilot/events?token={WEBHOOK_TOKEN}", {}, webhook, 200),
            (f"/autopilot/events?token={WRONG[1]}", {}, webhook, 401),
            ("/ortto/webhook", _basic("ortto", WRONG[1]), ortto, 401),
            ("/ortto/webhook", {"X-Ortto-Token": WRONG[1]}, ortto, 401),
            ("/ortto/webhook", _basic("ortto", ORTTO_TOKEN), ortto, 200),
            ("/ortto/webhook", {"X-Ortto-Token": ORTTO_TOKEN}, ortto, 200),
            ("/ortto/webhook", {"Authorization": f"Bearer {ORTTO_TOKEN}"}, ortto_test, 200),
        ]
        for path, headers, body, status in sent:
            response = await http.post(path, content=body, headers=headers)
            responses.append(response)
            assert response.status_code == status, (path, response.status_code, response.text)
        for page in ("/", "/healthz", "/readyz", "/metrics"):
            responses.append(await http.get(page))


async def _console_traffic(base_url: str, responses: list[httpx.Response]) -> None:
    """The console: refused without the token or with a wrong one; its page, searches and a
    replay (of the 400, whose letter carries the API's response body) with it, until the
    replay's new outcome shows."""
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    basic = _basic_password(ADMIN_TOKEN)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        for headers in ({}, _basic_password(WRONG[2]), {"Authorization": f"Bearer {WRONG[2]}"}):
            response = await http.get("/console", headers=headers)
            responses.append(response)
            assert response.status_code == 401, response.text
        for query in ("", "?window=day", "?q=example.com", "?q=m-400&scope=topic"):
            response = await http.get("/console" + query, headers=bearer)
            responses.append(response)
            assert response.status_code == 200
        page = await http.get("/console", headers=basic)
        responses.append(page)
        found = re.search(r'data-ref="(\d+@\d+)" data-message-id="m-400"', page.text)
        csrf = re.search(r'name="console-csrf" content="([^"]+)"', page.text)
        assert found is not None, "the 400's dead letter is not on the console"
        assert csrf is not None
        body = {"refs": [found[1]]}
        refused = await http.post("/console/replay", json=body, headers=basic)
        responses.append(refused)
        assert refused.status_code == 403  # no anti-forgery token
        replayed = await http.post(
            "/console/replay", json=body, headers={**basic, "X-Console-Csrf": csrf[1]}
        )
        responses.append(replayed)
        assert replayed.status_code == 200, replayed.text

        async def failed_again() -> bool:
            response = await http.get("/console", headers=bearer)
            responses.append(response)
            return 'data-state="failed again"' in response.text

        await _wait("the console's replay to fail again", failed_again)


@pytest.mark.reliability
async def test_no_secret_in_any_log_line_topic_header_or_response(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    NEEDLES.update(_warehouse_needles(postgres_url))
    runner, fake_api = await start_fake_autopilot(api_keys=[API_KEY], rate_limit=5.0)
    ortto_runner, fake_ortto = await start_fake_ortto(api_keys=[ORTTO_API_KEY], rate_limit=10.0)
    env = worker_env(
        kafka_bootstrap,
        unique,
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID=TRIGGER,
        AUTOPILOT_AUTH_PROBE_INTERVAL_S="0.5",
        AUTOPILOT_BULK_LINGER_MS="100",
        ORTTO_API_KEY=ORTTO_API_KEY,
        ORTTO_BASE_URL=fake_ortto,
        ORTTO_AUTH_PROBE_INTERVAL_S="0.5",
        ORTTO_BULK_LINGER_MS="100",
        SEGMENT_WRITE_KEYS=f"{WRITE_KEY},{OTHER_WRITE_KEY}",
        AUTOPILOT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        ORTTO_WEBHOOK_TOKEN=ORTTO_TOKEN,
        WORKER_ADMIN_TOKEN=ADMIN_TOKEN,
        WAREHOUSE_URL=postgres_url,
        WAREHOUSE_SCHEMA=f"leakcheck_{unique}",
        WAREHOUSE_LINGER_MS="100",
    )
    names = topic_names(env)
    base_url = f"http://127.0.0.1:{env['WORKER_WEB_PORT']}"
    responses: list[httpx.Response] = []
    try:
        async with Supervisor(env, tmp_path / "worker.log", loglevel="debug") as worker:
            await worker.wait_ready()
            # source: a valid and an invalid email event
            await produce(
                kafka_bootstrap,
                names.email_events,
                [(None, _event("evt-1", "source@example.com"), []), (None, b"{nope", [])],
            )
            # destination and delivery: delivered, rejected (400 and 404), invalid
            calls = [
                _call("identify", "u-1", "m-identify", "one@example.com"),
                _call("track", "u-1", "m-track", "one@example.com"),
                _call("identify", "u-2", "m-invalid"),
            ]
            await produce(
                kafka_bootstrap,
                names.segment_calls,
                [(c["userId"].encode(), orjson.dumps(c), []) for c in calls],
            )
            rejected = {
                "path": "/v1/contact",
                "json": {"contact": {"FirstName": "NoEmail"}},
                "kind": "upsert_contact",
                "message_id": "m-400",
                "contact": "noemail@example.com",
            }
            unknown = {
                "path": f"/v1/trigger/{TRIGGER}/contact/nobody%40example.com",
                "json": {"property": {}},
                "kind": "trigger_journey",
                "message_id": "m-404",
                "contact": "nobody@example.com",
            }
            await produce(
                kafka_bootstrap,
                names.autopilot_requests,
                [(b"k", orjson.dumps(rejected), []), (b"k", orjson.dumps(unknown), [])],
            )

            async def settled() -> bool:
                ids = await _outcome_ids(kafka_bootstrap, names.autopilot_deliveries)
                ortto = await _outcome_ids(kafka_bootstrap, names.ortto_deliveries)
                return {"m-identify", "m-track", "m-400", "m-404"} <= set(ids) and {
                    "m-identify",
                    "m-track",
                } <= set(ortto)

            await _wait("the first outcomes", settled)

            def tracks_loaded() -> int:
                try:
                    with psycopg.connect(postgres_url) as conn:
                        count = conn.execute(f"SELECT count(*) FROM leakcheck_{unique}.tracks")
                        row = count.fetchone()
                        return int(row[0]) if row else 0
                except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                    return 0

            async def loaded() -> bool:
                return await asyncio.to_thread(tracks_loaded) == 1

            await _wait("the source's track in the warehouse", loaded)
            # a refused key at both APIs: each delivery pauses, probes with its key, resumes
            async with (
                httpx.AsyncClient(base_url=fake_api) as api,
                httpx.AsyncClient(base_url=fake_ortto) as ortto_api,
            ):
                for stand_in in (api, ortto_api):
                    await stand_in.post("/_faults", json={"force_status": 401})
                paused = _call("identify", "u-3", "m-paused", "three@example.com")
                await produce(
                    kafka_bootstrap, names.segment_calls, [(b"u-3", orjson.dumps(paused), [])]
                )

                async def is_paused() -> bool:
                    text = worker.log_text()
                    return "Check AUTOPILOT_API_KEY" in text and "Check ORTTO_API_KEY" in text

                await _wait("the pause", is_paused)
                await asyncio.sleep(2)  # a few probes
                for stand_in in (api, ortto_api):
                    await stand_in.post("/_faults", json={"force_status": None})

            async def resumed() -> bool:
                ids = await _outcome_ids(kafka_bootstrap, names.autopilot_deliveries)
                ortto = await _outcome_ids(kafka_bootstrap, names.ortto_deliveries)
                return ids.get("m-paused") == "delivered" and ortto.get("m-paused") == "delivered"

            await _wait("delivery to resume", resumed)
            await _http_traffic(base_url, responses)

            async def ingested() -> bool:
                ids = await _outcome_ids(kafka_bootstrap, names.autopilot_deliveries)
                return {"m-http-batch", "m-http-body"} <= set(ids)

            await _wait("the ingested calls' outcomes", ingested)
            await _console_traffic(base_url, responses)
        log = worker.log_text()
    finally:
        await runner.cleanup()
        await ortto_runner.cleanup()

    leaks: list[str] = []
    lines = log.splitlines()
    for number, line in enumerate(lines, 1):
        leaks += _leaks(f"log line {number}: {line[:200]}", line.encode())
    ours = [t for t in await list_topics(kafka_bootstrap) if unique in t]
    expected_topics = {spec.name for spec in names.all_specs()}
    assert expected_topics <= set(ours), f"topics not listed: {expected_topics - set(ours)}"
    records = 0
    letters = []
    for topic in ours:
        for r in await read_topic(kafka_bootstrap, topic):
            records += 1
            where = f"{topic}[{r.partition}]@{r.offset}"
            leaks += _leaks(f"{where} key", r.key or b"")
            leaks += _leaks(f"{where} value", r.value or b"")
            for name, value in r.headers:
                leaks += _leaks(f"{where} header {name}", name.encode() + b"=" + (value or b""))
            if topic == names.dead_letters:
                letters.append(r)
    for response in responses:
        text = f"{response.status_code} {response.headers} {response.text}".encode()
        leaks += _leaks(f"response to {response.request.url.path}", text)

    classes = sorted(dict(r.headers)[H.CLASS_NAME].decode() for r in letters)
    report(
        "secrets scan",
        seconds=round(time.monotonic() - started, 1),
        log_lines=len(lines),
        topics=len(ours),
        records=records,
        dead_letters=classes,
        responses=len(responses),
        needles=len(NEEDLES),
        leaks=len(leaks),
    )
    assert leaks == [], "\n".join(leaks[:20])
    # every path was taken: dead letters of source, destination and delivery (400 and 404)
    assert {"DecodeError", "ValidationError", "DeliveryRejected"} <= set(classes)
    assert "Autopilot accepts the API key again: delivery resumed" in log
    assert "Ortto accepts the API key again: delivery resumed" in log
