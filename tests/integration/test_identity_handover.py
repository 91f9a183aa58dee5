"""Ties written straight into the source's table survive a rebalance to another worker.

One worker holds every partition, so it writes each tie of an email to a userId into the
source's table itself (the row, and its changelog record with the call's batch), with no
identity record on the internal topic. A second worker then joins the group and takes some of
those partitions: it rebuilds their rows from the changelog, and the email events it maps find
every tie.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson

from tests.kafkautil import Record, consume_all, end_offsets, produce
from tests.workerproc import READY, WorkerProcess, free_port, running_worker, until_ready
from worker.identity import KIND_HEADER, KIND_IDENTITY
from worker.runtime.placement import home_partition

CONTACTS = 30


def _event(n: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"evt_{n}",
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00+02:00",
            "contact": {"contact_id": f"person_{n}", "email": f"Contact{n}@Example.com"},
            "email": {"id": "email_1"},
        }
    )


async def _source_inputs_read(worker: WorkerProcess) -> int:
    """How many inputs `worker`'s source intake has read (its /metrics)."""
    async with httpx.AsyncClient(base_url=worker.web_url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    counts = re.findall(
        r'^autopilot_worker_messages_in_total\{pipeline="source",stage="intake"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return int(float(counts[0])) if counts else 0


async def test_ties_written_in_place_are_rebuilt_by_the_worker_that_takes_their_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with running_worker(kafka_bootstrap, first_dir) as first:
        env = first.env
        app_id, partitions = env["WORKER_APP_ID"], int(env["TOPIC_PARTITIONS"])
        emails = [f"contact{n}@example.com" for n in range(CONTACTS)]
        assert {home_partition(e.encode(), partitions) for e in emails} == set(range(partitions))
        identifies: list[Record] = [
            (
                f"u-{n}".encode(),
                orjson.dumps(
                    {
                        "type": "identify",
                        "userId": f"u-{n}",
                        "messageId": f"m-identify-{n}",
                        "traits": {"email": f"Contact{n}@Example.com"},
                    }
                ),
                [],
            )
            for n in range(CONTACTS)
        ]
        await produce(kafka_bootstrap, env["TOPIC_SEGMENT_CALLS"], identifies)
        requests = await consume_all(kafka_bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], CONTACTS, 60)
        assert len(requests) == CONTACTS  # each call's batch, its ties' records with it, acked

        internal = f"{app_id}.source-by-email"
        told = await consume_all(
            kafka_bootstrap, internal, sum((await end_offsets(kafka_bootstrap, internal)).values())
        )
        assert [r for r in told if (KIND_HEADER, KIND_IDENTITY) in r.headers] == []

        second = WorkerProcess(
            {**env, "WORKER_WEB_PORT": str(free_port())}, second_dir / "worker.log"
        ).start()
        try:
            await asyncio.to_thread(second.wait_for_log, READY)
            await until_ready(second, within_s=90)  # partitions taken, their tables rebuilt
            await until_ready(first, within_s=90)

            events: list[Record] = [(e.encode(), _event(n), []) for n, e in enumerate(emails)]
            await produce(kafka_bootstrap, env["TOPIC_EMAIL_EVENTS"], events)
            tracks = await consume_all(kafka_bootstrap, env["TOPIC_SEGMENT_TRACKS"], CONTACTS, 60)

            by_event = {
                t["messageId"]: t.get("userId") for t in (orjson.loads(r.value) for r in tracks)
            }
            assert by_event == {f"autopilot-evt_{n}": f"u-{n}" for n in range(CONTACTS)}
            # the second worker mapped some of them, from rows it rebuilt from the changelog
            assert 0 < await _source_inputs_read(second) < CONTACTS
        finally:
            second.stop()
