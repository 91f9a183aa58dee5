"""The Autopilot Source through a real broker: outputs, dead letters, offsets, learned ids."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer

from tests.kafkautil import consume_all, end_offsets, produce, wait_until_read
from tests.workerproc import WorkerProcess
from worker.identity import KIND_HEADER, KIND_IDENTITY
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.runtime.faust_overrides import REWIND_AFTER_S
from worker.runtime.placement import home_partition


def _event(event_id: str, email: str, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00+02:00",
            "contact": {"contact_id": f"person_{event_id}", "email": email},
            "journey": {"id": "campaign_1", "name": "Onboarding"},
            "email": {"id": "email_1", "subject": "Welcome"},
            **extra,
        }
    )


async def test_valid_and_malformed_events(worker: WorkerProcess) -> None:
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    valid = [_event(f"evt_{i}", f"User{i}@Example.com") for i in range(5)]
    malformed = [
        b"{not json",
        b"[1, 2]",
        b"\xff\xfe",
        orjson.dumps({"id": "evt_x", "type": "email_forwarded"}),
        _event("evt_no_email", ""),
    ]
    inputs = valid[:3] + malformed + valid[3:]
    headers = [("trace-id", b"abc")]
    await produce(bootstrap, env["TOPIC_EMAIL_EVENTS"], [(b"k", v, headers) for v in inputs])

    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], len(valid), timeout=60)
    letters = await consume_all(bootstrap, env["TOPIC_DEAD_LETTERS"], len(malformed), timeout=60)

    messages = [orjson.loads(r.value) for r in tracks]
    assert sorted(m["messageId"] for m in messages) == [f"autopilot-evt_{i}" for i in range(5)]
    for record, message in zip(tracks, messages, strict=True):
        assert message["event"] == "Email Opened"
        assert message["anonymousId"] == message["context"]["traits"]["email"]
        assert "userId" not in message
        assert record.key == message["anonymousId"].lower().encode()
        assert message["timestamp"] == "2026-11-20T08:15:00.000Z"

    assert sorted(r.value for r in letters) == sorted(malformed)
    for letter in letters:
        got = dict(letter.headers)
        assert got["trace-id"] == b"abc"
        assert letter.key == b"k"
        assert got[H.TOPIC].decode() == env["TOPIC_EMAIL_EVENTS"]
        assert int(got[H.PARTITION]) >= 0
        assert int(got[H.OFFSET]) >= 0
        assert int(got[H.TIMESTAMP]) > 0
        assert got[H.PIPELINE] == b"source"
        assert got[H.STAGE] == b"intake"
        assert got[H.STATUS] == b"400"
        assert got[H.CLASS_NAME] in {b"DecodeError", b"ValidationError", b"UnsupportedType"}
        assert got[H.MESSAGE]
        assert got[H.WORKER_VERSION]
        assert got[H.FIRST_FAILURE]
    by_value = {r.value: dict(r.headers) for r in letters}
    assert b"email_forwarded" in by_value[malformed[3]][H.MESSAGE]
    assert b"contact.email" in by_value[malformed[4]][H.MESSAGE]
    assert worker.running

    # every input is accounted for: the group's committed offsets reach the end of the topic
    await wait_until_read(bootstrap, env["WORKER_APP_ID"], env["TOPIC_EMAIL_EVENTS"], timeout_s=30)


async def test_identity_learned_from_identify(worker: WorkerProcess) -> None:
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    identify = orjson.dumps(
        {
            "type": "identify",
            "userId": "u-42",
            "messageId": "m-identify-42",
            "traits": {"email": "Known@Example.com", "firstName": "Kay"},
        }
    )
    await produce(bootstrap, env["TOPIC_SEGMENT_CALLS"], [(None, identify, [])])
    requests = await consume_all(bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], 1, timeout=60)
    assert [orjson.loads(r.value)["message_id"] for r in requests] == ["m-identify-42"]
    # this one worker holds every partition, so the tie went straight into the source's table
    # with the request's batch: its changelog holds it, and no identity record was written for
    # the map stage to read back
    app_id = env["WORKER_APP_ID"]
    changelog = f"{app_id}-source_user_by_email-changelog"
    rows = await consume_all(
        bootstrap, changelog, sum((await end_offsets(bootstrap, changelog)).values())
    )
    assert [(r.key, orjson.loads(r.value)) for r in rows if r.key == b"known@example.com"] == [
        (b"known@example.com", "u-42")
    ]
    internal = f"{app_id}.source-by-email"
    forwarded = await consume_all(
        bootstrap, internal, sum((await end_offsets(bootstrap, internal)).values())
    )
    assert [r.key for r in forwarded if (KIND_HEADER, KIND_IDENTITY) in r.headers] == []

    # the same contact's events, one on the partition its email hashes to (mapped at once by the
    # intake) and one elsewhere (forwarded to the map stage first): both find the identity
    key = b"known@example.com"
    home = home_partition(key, int(env["TOPIC_PARTITIONS"]))
    topic = env["TOPIC_EMAIL_EVENTS"]
    await produce(bootstrap, topic, [(key, _event("evt_home", "Known@example.com"), [])])
    away = (home + 1) % int(env["TOPIC_PARTITIONS"])
    await produce(
        bootstrap, topic, [(key, _event("evt_away", "known@example.com"), [])], partition=away
    )

    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 7, timeout=60)
    known = {
        m["messageId"]: m for m in map(orjson.loads, (r.value for r in tracks if r.key == b"u-42"))
    }
    assert sorted(known) == ["autopilot-evt_away", "autopilot-evt_home"]
    for message in known.values():
        assert message["userId"] == "u-42"
        assert "anonymousId" not in message


async def test_events_written_in_transactions_are_read_and_committed_past_the_markers(
    worker: WorkerProcess,
) -> None:
    """A transactional producer leaves a commit marker after each transaction: offsets with no
    record to deliver. The worker's commits must pass them without waiting for the rewind of a
    held-back partition (REWIND_AFTER_S), and must not pass anything else."""
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    topic = env["TOPIC_EMAIL_EVENTS"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    await producer.start()
    try:
        for transaction in range(4):
            async with producer.transaction():
                for i in range(3):
                    event_id = f"evt_tx_{transaction}_{i}"
                    await producer.send(topic, _event(event_id, f"tx{i}@example.com"), key=b"k")
    finally:
        await producer.stop()

    await wait_until_read(bootstrap, env["WORKER_APP_ID"], topic, timeout_s=REWIND_AFTER_S - 5)
    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 10_000, timeout=3)
    ids = {orjson.loads(r.value)["messageId"] for r in tracks}
    assert {f"autopilot-evt_tx_{t}_{i}" for t in range(4) for i in range(3)} <= ids
