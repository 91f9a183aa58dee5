"""The warehouse loader in the real worker (`python -m worker run`) on a real broker, loading a
real PostgreSQL server and a real DuckDB file.

- every track loads once, through a kill -9 and restart, a second replica joining (a
  rebalance) and a replay of the whole topic by a new consumer group;
- bad records are dead-lettered with their reason while the rest loads; a row the database
  refuses is dead-lettered, and loads once replayed (`dlq replay`) after the cause is gone;
- a DuckDB file: loaded, and a second worker pointed at it is refused with one line;
- with WAREHOUSE_CALLS_SCHEMA, Segment calls load into their own schema while the destination
  reads the same topic in the same consumer group.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import psycopg
import pytest

from tests.kafkautil import consume_all, produce, wait_until_read
from tests.workerproc import READY, WorkerProcess, free_port, worker_env
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.settings import Settings
from worker.tools.dlq import run_dlq

pytestmark = pytest.mark.integration

EVENTS = ("Email Opened", "Email Clicked", "Email Marked as Spam")


def track(n: int, event: str | None = None, **properties: object) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": event or EVENTS[n % len(EVENTS)],
            "messageId": f"autopilot-evt_{n}",
            "anonymousId": f"c{n % 50}@example.com",
            "timestamp": "2026-11-20T08:15:00.000Z",
            "originalTimestamp": "2026-11-20T08:15:00.000Z",
            "sentAt": "2026-11-20T10:15:05.000Z",
            "receivedAt": "2026-11-20T10:15:05.000Z",
            "context": {
                "traits": {"email": f"c{n % 50}@example.com", "contact_id": f"p{n % 50}"},
                "integration": {"name": "AutopilotHQ", "version": "0.1.0"},
            },
            "properties": {"event": "x", "campaign_id": f"camp_{n % 7}", "n": n, **properties},
        }
    )


def start(env: dict[str, str], log_dir: Path, name: str) -> WorkerProcess:
    """A worker with `env` on a web port of its own, ready to consume."""
    env = {**env, "WORKER_WEB_PORT": str(free_port())}
    process = WorkerProcess(env, log_dir / f"{name}.log").start()
    process.wait_for_log(READY)
    return process


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


async def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


def warehouse_env(bootstrap: str, url: str, schema: str, **more: str) -> dict[str, str]:
    settings = {
        "WORKER_FEATURES": "warehouse",
        "WAREHOUSE_URL": url,
        "WAREHOUSE_SCHEMA": schema,
        "WAREHOUSE_BATCH_SIZE": "500",
        "WAREHOUSE_LINGER_MS": "100",
    }
    return worker_env(bootstrap, uuid.uuid4().hex[:10], **{**settings, **more})


async def test_every_track_loads_once_through_a_kill_a_rebalance_and_a_replay(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    schema = f"s_{unique}"
    env = warehouse_env(kafka_bootstrap, postgres_url, schema)
    topic = env["TOPIC_SEGMENT_TRACKS"]
    total = 6000
    first = start(env, tmp_path, "first")
    await produce(kafka_bootstrap, topic, [(None, track(n), []) for n in range(total)])

    def loaded() -> int:
        try:
            return int(query(postgres_url, f"SELECT count(*) FROM {schema}.tracks")[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    await wait_for("the first rows", lambda: loaded() > 0)
    first.kill()  # kill -9 mid-stream: loaded rows whose offsets were not committed come again
    again = start(env, tmp_path, "again")
    second = start(env, tmp_path, "second")  # a second replica: the group rebalances
    await wait_until_read(kafka_bootstrap, env["WORKER_APP_ID"], topic, timeout_s=120)
    counts = query(
        postgres_url,
        f"SELECT count(*), count(DISTINCT id) FROM {schema}.tracks "
        f"UNION ALL SELECT count(*), count(DISTINCT id) FROM {schema}.email_opened",
    )
    assert counts == [(total, total), (total // 3, total // 3)]
    again.stop()
    second.stop()

    # a replay of the whole topic: a new consumer group, the same schema
    replay_env = {**env, "WORKER_APP_ID": f"replay-{unique}"}
    replay = start(replay_env, tmp_path, "replay")
    await wait_until_read(kafka_bootstrap, replay_env["WORKER_APP_ID"], topic, timeout_s=120)
    async with httpx.AsyncClient() as client:
        scraped = (await client.get(f"{replay.web_url}/metrics")).text
    replay.stop()
    assert loaded() == total
    line = f'autopilot_worker_warehouse_rows_total{{outcome="duplicate",table="{schema}.tracks"}}'
    assert f"{line} {float(total)}" in scraped


async def test_bad_records_are_dead_lettered_and_a_refused_row_loads_when_replayed(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    schema = f"s_{unique}"
    env = warehouse_env(kafka_bootstrap, postgres_url, schema)
    topic = env["TOPIC_SEGMENT_TRACKS"]
    # the tables exist, with a rule the loader cannot know of
    worker = start(env, tmp_path, "worker")
    await produce(kafka_bootstrap, topic, [(None, track(0), [])])
    await wait_until_read(kafka_bootstrap, env["WORKER_APP_ID"], topic)
    query(
        postgres_url,
        f"ALTER TABLE {schema}.email_opened ADD CONSTRAINT n_is_small CHECK (n < 1000)",
    )
    bad = {
        b"{not json": "DecodeError",
        orjson.dumps({"type": "identify", "messageId": "i-1", "userId": "u"}): "UnsupportedType",
        track(4, **{"campaignId": "c"}): "ValidationError",  # campaign_id twice
        track(5, "Tracks"): "ValidationError",
        track(1002, "Email Opened"): "UnexpectedError",  # n = 1002: the database refuses it
    }
    good = [track(n) for n in range(6, 30)]
    await produce(
        kafka_bootstrap, topic, [(b"k", value, [("trace", b"t-1")]) for value in [*bad, *good]]
    )
    letters = await consume_all(kafka_bootstrap, env["TOPIC_DEAD_LETTERS"], len(bad), timeout=60)
    await wait_until_read(kafka_bootstrap, env["WORKER_APP_ID"], topic)
    assert {r.value: dict(r.headers)[H.CLASS_NAME].decode() for r in letters} == bad
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[H.PIPELINE] == b"warehouse"
        assert headers[H.STAGE] == b"load"
        assert headers[H.TOPIC].decode() == topic
        assert headers["trace"] == b"t-1"
        assert headers[H.MESSAGE]
    by_value = {r.value: dict(r.headers)[H.MESSAGE].decode() for r in letters}
    assert "campaign_id" in by_value[track(4, campaignId="c")]
    assert "n_is_small" in by_value[track(1002, "Email Opened")]
    assert query(postgres_url, f"SELECT count(*) FROM {schema}.tracks") == [(1 + len(good),)]

    # the cause is gone: the refused row loads when replayed, through the loader's own topic
    query(postgres_url, f"ALTER TABLE {schema}.email_opened DROP CONSTRAINT n_is_small")
    settings = Settings.model_validate({k.lower(): v for k, v in env.items()})
    out, err = io.StringIO(), io.StringIO()
    status = await run_dlq(
        ["replay", "--pipeline", "warehouse", "--error-class", "UnexpectedError"],
        settings,
        out,
        err,
    )
    assert status == 0, err.getvalue()
    assert "replayed 1" in out.getvalue()

    def replayed() -> bool:
        rows = query(postgres_url, f"SELECT n FROM {schema}.email_opened WHERE n = 1002")
        return rows == [(1002,)]

    await wait_for("the replayed row", replayed)
    assert query(postgres_url, f"SELECT count(*) FROM {schema}.tracks") == [(2 + len(good),)]
    worker.stop()


async def test_a_duckdb_file_loads_and_a_second_worker_is_refused(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    path = tmp_path / "warehouse.duckdb"
    env = warehouse_env(kafka_bootstrap, f"duckdb://{path}", "autopilothq")
    topic = env["TOPIC_SEGMENT_TRACKS"]
    worker = start(env, tmp_path, "worker")
    await produce(kafka_bootstrap, topic, [(None, track(n), []) for n in range(30)])
    await wait_until_read(kafka_bootstrap, env["WORKER_APP_ID"], topic)

    other_env = {**env, "WORKER_APP_ID": f"other-{unique}", "WORKER_WEB_PORT": str(free_port())}
    other = WorkerProcess(other_env, tmp_path / "other.log")
    other.start()
    assert other.proc is not None
    assert other.proc.wait(120) == 70
    refusals = [line for line in other.log_text().splitlines() if "DuckDB" in line]
    assert len(refusals) == 1
    assert refusals[0].startswith(
        f"configuration error: WAREHOUSE_URL: the DuckDB file {path} is being written by "
    )
    assert "DuckDB takes one writing process" in refusals[0]

    assert worker.stop() == 0
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT event, count(*) FROM autopilothq.tracks GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("email_clicked", 10), ("email_marked_as_spam", 10), ("email_opened", 10)]


async def test_segment_calls_load_into_their_own_schema_beside_the_destination(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    schema, calls_schema = f"s_{unique}", f"web_{unique}"
    env = warehouse_env(
        kafka_bootstrap,
        postgres_url,
        schema,
        WAREHOUSE_CALLS_SCHEMA=calls_schema,
        WORKER_FEATURES="destination,warehouse",
    )
    worker = start(env, tmp_path, "worker")
    calls = [
        {
            "type": "identify",
            "messageId": "i-1",
            "userId": "u-1",
            "receivedAt": "2026-11-20T10:00:00Z",
            "traits": {"email": "ada@example.com", "firstName": "Ada"},
        },
        {"type": "page", "messageId": "p-1", "userId": "u-1", "name": "Pricing"},
        {"type": "track", "messageId": "t-1", "userId": "u-1", "event": "Signed Up"},
    ]
    await produce(
        kafka_bootstrap,
        env["TOPIC_SEGMENT_CALLS"],
        [(b"u-1", orjson.dumps(call), []) for call in calls],
    )
    await wait_until_read(kafka_bootstrap, env["WORKER_APP_ID"], env["TOPIC_SEGMENT_CALLS"])
    requests = await consume_all(kafka_bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], 1, timeout=30)
    worker.stop()
    assert [orjson.loads(r.value)["message_id"] for r in requests] == ["i-1"]
    assert query(postgres_url, f"SELECT id, first_name FROM {calls_schema}.identifies") == [
        ("i-1", "Ada")
    ]
    assert query(postgres_url, f"SELECT id, email FROM {calls_schema}.users") == [
        ("u-1", "ada@example.com")
    ]
    assert query(postgres_url, f"SELECT id, name FROM {calls_schema}.pages") == [("p-1", "Pricing")]
    assert query(postgres_url, f"SELECT id, event FROM {calls_schema}.signed_up") == [
        ("t-1", "signed_up")
    ]
    missing = query(postgres_url, f"SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'")
    assert missing == [(0,)]  # nothing came on the tracks topic
