"""Ortto's activity webhook through the real worker: the route, the broker, the source, the
output topic, the dead letters and the metrics.

One worker with an Ortto token and attribute properties set. An identify on the Segment calls
topic teaches the source a userId for an email; then Ortto-shaped deliveries are posted to
`POST /ortto/webhook` as Ortto sends them (one activity a request, basic auth or a header),
plus an array carrying the cases the source must sort out: a test delivery, an activity no event
is named for, one without an email. Every activity must end as exactly one of: a track on the
output topic, a skip counted, a dead letter with its original bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.kafkautil import consume_all, end_offsets, produce, wait_until_read
from tests.workerproc import WorkerProcess, running_worker
from worker.pipeline.dead_letters import DeadLetterHeaders as H

pytestmark = pytest.mark.integration

TOKEN = "ort-integration-7c1d"
LINK_KEY = "str:cm:link-url"


@pytest.fixture(scope="module")
def ortto_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with running_worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("ortto"),
        ORTTO_WEBHOOK_TOKEN=TOKEN,
        ORTTO_ATTRIBUTE_PROPERTIES=orjson.dumps({LINK_KEY: "link_url"}).decode(),
    ) as process:
        yield process
    assert TOKEN not in process.log_text(), "the Ortto token reached the worker's log"


def _activity(delivery_id: str, field_id: str, email: str | None, **contact: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": delivery_id,
        "time": "2023-10-03T04:11:24.25726779Z",
        "webhook_id": "651b8aec8002153e16319fd3",
        "activity": {
            "id": f"a-{delivery_id}",
            "field_id": field_id,
            "created": "2023-10-03T04:11:23Z",
            "attr": {"str::is": "Journey", LINK_KEY: "https://example.com/pricing"},
        },
        "contact": {"contact_id": f"c-{delivery_id}", **contact},
    }
    if email is not None:
        body["contact"]["email"] = email
    return body


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ortto:{password}".encode()).decode()}


async def test_ortto_activities_become_tracks_skips_and_dead_letters(
    ortto_worker: WorkerProcess,
) -> None:
    env = ortto_worker.env
    bootstrap, app_id = env["KAFKA_BOOTSTRAP_SERVERS"], env["WORKER_APP_ID"]

    # the source learns that known@example.com is u-ortto (from a Segment identify)
    identify = {
        "type": "identify",
        "userId": "u-ortto",
        "messageId": "m-identify-ortto",
        "traits": {"email": "Known@Example.com"},
    }
    await produce(bootstrap, env["TOPIC_SEGMENT_CALLS"], [(b"u-ortto", orjson.dumps(identify), [])])
    await consume_all(bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], 1, timeout=60)
    await wait_until_read(bootstrap, app_id, f"{app_id}.source-by-email")

    opened = orjson.dumps(_activity("d-open", "act::o", "KNOWN@example.com", first_name="Kay"))
    clicked = _activity("d-click", "act::c", "abhi@example.com", external_id="user_x")
    test = _activity("d-test", "act::test_webhook", "abhi@example.com")
    tag = _activity("d-tag", "act::t", "abhi@example.com")
    no_email = _activity("d-no-email", "act::o", None)
    array = b"[" + b",\n  ".join(orjson.dumps(e) for e in (clicked, test, tag, no_email)) + b"]"
    async with httpx.AsyncClient(base_url=ortto_worker.web_url, timeout=30) as http:
        answers = [
            await http.post("/ortto/webhook", content=opened, headers=_basic(TOKEN)),
            await http.post("/ortto/webhook", content=array, headers={"X-Ortto-Token": TOKEN}),
            await http.post(
                "/ortto/webhook",
                content=orjson.dumps(test),
                headers={"Authorization": f"Bearer {TOKEN}"},
            ),
            await http.post("/ortto/webhook", content=opened, headers=_basic("wrong")),
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 401]
        assert answers[0].json() == {"success": True}

        # written: each activity as sent, keyed by lowercased email; the test deliveries not
        topic = env["TOPIC_ORTTO_ACTIVITIES"]
        stored = await consume_all(bootstrap, topic, 4, timeout=30)
        assert sum((await end_offsets(bootstrap, topic)).values()) == 4
        assert sorted((r.key or b"", r.value) for r in stored) == sorted(
            [
                (b"known@example.com", opened),
                (b"abhi@example.com", orjson.dumps(clicked)),
                (b"abhi@example.com", orjson.dumps(tag)),
                (b"", orjson.dumps(no_email)),  # no email, no key
            ]
        )
        assert [r.key for r in stored if r.value == orjson.dumps(no_email)] == [None]

        # mapped: two tracks, one userId learned, one given
        tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 2, timeout=60)
        by_id = {orjson.loads(r.value)["messageId"]: (r.key, orjson.loads(r.value)) for r in tracks}
        assert sorted(by_id) == ["ortto-d-click", "ortto-d-open"]
        key, track = by_id["ortto-d-open"]
        assert key == b"u-ortto"
        assert track["userId"] == "u-ortto"
        assert track["event"] == "Email Opened"
        assert track["timestamp"] == "2023-10-03T04:11:23.000Z"
        assert track["context"]["traits"] == {
            "email": "KNOWN@example.com",
            "contact_id": "c-d-open",
            "firstName": "Kay",
        }
        assert track["context"]["integration"]["name"] == "Ortto"
        assert track["integrations"] == {"AutopilotHQ": False, "Ortto": False}
        key, track = by_id["ortto-d-click"]
        assert key == b"user_x"
        assert track["event"] == "Email Clicked"
        assert track["properties"]["event"] == "email_clicked"
        assert track["properties"]["link_url"] == "https://example.com/pricing"
        assert track["properties"]["attributes"] == clicked["activity"]["attr"]

        # refused: one dead letter, its original bytes, the reason
        (letter,) = await consume_all(bootstrap, env["TOPIC_DEAD_LETTERS"], 1, timeout=60)
        headers = dict(letter.headers)
        assert letter.value == orjson.dumps(no_email)
        assert headers[H.TOPIC].decode() == topic
        assert headers[H.CLASS_NAME] == b"ValidationError"
        assert headers[H.STATUS] == b"400"
        assert headers[H.MESSAGE] == b"contact.email: field required"

        # every activity accounted for, and the skips counted
        await wait_until_read(bootstrap, app_id, topic, timeout_s=30)
        metrics = (await http.get("/metrics")).text
    assert (
        'autopilot_worker_ingest_skipped_total{path="/ortto/webhook",reason="test_delivery"} 2.0'
        in metrics
    )
    assert (
        'autopilot_worker_messages_skipped_total{pipeline="source",reason="activity_not_mapped",'
        'stage="intake"} 1.0' in metrics
    )
    log = ortto_worker.log_text()
    assert "Ortto activity act::t is skipped (activity_not_mapped)" in log
    assert "test delivery from webhook 651b8aec8002153e16319fd3" in log
    assert ortto_worker.running
