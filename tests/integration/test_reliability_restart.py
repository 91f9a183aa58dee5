"""The smallest restart there is: what the worker learned survives a clean stop and a start.

Every other reliability test restarts the worker; this one shows the restart itself on one
identify and one email event, so that when it fails the cause is plain. The identify teaches
both tables (email -> userId for the source, userId -> email for the destination); after a warm
shutdown (SIGTERM) and a start, the worker must be ready again, read its tables back from their
changelogs and use them: an email event for that email goes out with the learned userId, and a
track with the userId alone gets the learned email.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.kafkautil import consume_all, produce, wait_until_read
from tests.reliability.inputs import TRIGGER_ID
from tests.reliability.supervisor import Supervisor
from tests.workerproc import worker_env

pytestmark = pytest.mark.integration


@pytest.mark.reliability
async def test_learned_identities_survive_a_restart(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique, AUTOPILOT_TRIGGER_ID=TRIGGER_ID)
    identify = {
        "type": "identify",
        "userId": "u-restart",
        "messageId": "m-identify",
        "traits": {"email": "Restart@Example.com"},
    }
    track = {"type": "track", "event": "Signed Up", "userId": "u-restart", "messageId": "m-track"}
    event = {
        "id": "evt-restart",
        "type": "email_opened",
        "occurred_at": "2026-11-20T10:15:00+02:00",
        "contact": {"contact_id": "person_1", "email": "restart@example.com"},
        "email": {"id": "email_1"},
    }
    async with Supervisor(env, tmp_path / "first.log") as first:
        await first.wait_ready()
        await produce(
            kafka_bootstrap,
            env["TOPIC_SEGMENT_CALLS"],
            [(b"u-restart", orjson.dumps(identify), [])],
        )
        requests = await consume_all(kafka_bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], 1, 60)
        assert [orjson.loads(r.value)["message_id"] for r in requests] == ["m-identify"]
        # the tie is in the source's table once the request's batch is acknowledged (this worker
        # holds every partition); had it gone through the internal topic, this waits until it
        # was read there: what is tested is the table surviving the restart, not that race
        internal = f"{env['WORKER_APP_ID']}.source-by-email"
        await wait_until_read(kafka_bootstrap, env["WORKER_APP_ID"], internal)

    async with Supervisor(env, tmp_path / "second.log") as second:
        await second.wait_ready(timeout=90)
        await produce(kafka_bootstrap, env["TOPIC_EMAIL_EVENTS"], [(None, orjson.dumps(event), [])])
        await produce(
            kafka_bootstrap, env["TOPIC_SEGMENT_CALLS"], [(b"u-restart", orjson.dumps(track), [])]
        )
        tracks = await consume_all(kafka_bootstrap, env["TOPIC_SEGMENT_TRACKS"], 1, 60)
        requests = await consume_all(kafka_bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], 2, 60)
        assert "Error in recovery" not in second.log_text()

    assert [orjson.loads(r.value).get("userId") for r in tracks] == ["u-restart"]
    descriptors = {d["message_id"]: d for d in (orjson.loads(r.value) for r in requests)}
    assert descriptors["m-track"]["contact"] == "restart@example.com"
