"""The warehouse writer on real databases: a DuckDB file and a PostgreSQL server (never a mock).

No Kafka here (tests/integration/test_warehouse_pipeline.py has the worker); each test loads
laid-out messages with `WarehouseWriter` and reads the tables back with the database's own
client. PostgreSQL is the session's server (`postgres_url`, tests/conftest.py); every test
writes into schemas of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pytest

from worker.errors import UnexpectedError
from worker.warehouse.duckdb import DuckDBWarehouse
from worker.warehouse.layout import CALL_TYPES, TRACK_TYPES, Laid, lay_out
from worker.warehouse.loader import Database, TransientDatabaseError, WarehouseWriter
from worker.warehouse.postgres import PostgresWarehouse

pytestmark = pytest.mark.integration


@dataclass
class Target:
    """One database under test: a writer's `Database` and a way to query it."""

    name: str
    make: Callable[[], Database]
    query: Callable[[str], list[tuple[Any, ...]]]
    #: how it names types in information_schema: integer, float, text, timestamp
    types: dict[str, str]


def _pg_query(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    return query


@pytest.fixture(params=["duckdb", "postgresql"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "duckdb":
        path = str(tmp_path / "warehouse.duckdb")
        opened: list[DuckDBWarehouse] = []

        def make() -> Database:
            db = DuckDBWarehouse(path)
            opened.append(db)
            return db

        def query(sql: str) -> list[tuple[Any, ...]]:
            # the writer's own connection: DuckDB lets one process open the file
            con: duckdb.DuckDBPyConnection = opened[-1]._con
            return con.execute(sql).fetchall()

        yield Target(
            "duckdb",
            make,
            query,
            {"integer": "BIGINT", "float": "DOUBLE", "text": "VARCHAR", "timestamp": "TIMESTAMP"},
        )
        return
    url: str = request.getfixturevalue("postgres_url")
    yield Target(
        "postgresql",
        lambda: PostgresWarehouse(url),
        _pg_query(url),
        {
            "integer": "bigint",
            "float": "double precision",
            "text": "text",
            "timestamp": "timestamp with time zone",
        },
    )


def track(
    message_id: str,
    schema: str,
    event: str = "Email Opened",
    *,
    user_id: str | None = None,
    props: dict[str, object] | None = None,
    **properties: object,
) -> Laid:
    message = {
        "type": "track",
        "event": event,
        "messageId": message_id,
        "anonymousId": "ada@example.com",
        "timestamp": "2026-11-20T08:15:00.000Z",
        "originalTimestamp": "2026-11-20T08:15:00.000Z",
        "sentAt": "2026-11-20T10:15:05.000Z",
        "receivedAt": "2026-11-20T10:15:05.000Z",
        "context": {
            "traits": {"email": "ada@example.com", "contact_id": "person_1"},
            "integration": {"name": "AutopilotHQ", "version": "0.1.0"},
            "ip": "203.0.113.7",
        },
        "properties": {
            "event": "email_opened",
            "campaign_id": "c-1",
            **(props or {}),
            **properties,
        },
    }
    if user_id is not None:
        message["userId"] = user_id
    # deferred, as the loader's parse has them for PostgreSQL (DuckDB's writer makes the rows)
    return lay_out(orjson.dumps(message), schema=schema, types=TRACK_TYPES, defer=True)


def columns(target: Target, schema: str, table: str) -> dict[str, str]:
    rows = target.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
    )
    return {str(name): str(kind) for name, kind in rows}


async def test_a_track_is_one_row_in_tracks_and_one_in_its_event_table(
    target: Target, unique: str
) -> None:
    schema = f"s_{unique}"
    writer = WarehouseWriter(target.make())
    outcomes = await writer.write([track("m-1", schema, email_subject="Welcome", opens=1)])
    assert [o.error for o in outcomes] == [None]

    tracks = target.query(
        f"SELECT id, anonymous_id, user_id, event, event_text, context_traits_email, "
        f"context_traits_contact_id, context_ip, context_integration_name, received_at, "
        f"uuid_ts IS NOT NULL FROM {schema}.tracks"
    )
    assert [row[:9] for row in tracks] == [
        (
            "m-1",
            "ada@example.com",
            None,
            "email_opened",
            "Email Opened",
            "ada@example.com",
            "person_1",
            "203.0.113.7",
            "AutopilotHQ",
        )
    ]
    assert tracks[0][9].year == 2026
    assert tracks[0][10] is True
    event = target.query(
        f"SELECT id, event, campaign_id, email_subject, opens FROM {schema}.email_opened"
    )
    assert event == [("m-1", "email_opened", "c-1", "Welcome", 1)]
    cols = columns(target, schema, "email_opened")
    assert list(cols)[:5] == ["id", "anonymous_id", "user_id", "event", "event_text"]
    assert cols["opens"] == target.types["integer"]
    assert cols["received_at"] == target.types["timestamp"]
    assert "context_ip" in columns(target, schema, "tracks")
    assert "campaign_id" not in columns(target, schema, "tracks")  # properties: event table only
    await writer.close()


async def test_loading_again_adds_no_row_and_the_first_copy_wins(
    target: Target, unique: str
) -> None:
    schema = f"s_{unique}"
    database = target.make()
    writer = WarehouseWriter(database)
    first = [track(f"m-{i}", schema, subject="first") for i in range(50)]
    await writer.write([*first, track("m-0", schema, subject="repeated in the batch")])
    await writer.write([track(f"m-{i}", schema, subject="first") for i in (51, 53)])
    # a restart, a rebalance or a replay: the same messages again, some changed
    await writer.write([track(f"m-{i}", schema, subject="second") for i in range(0, 60, 2)])
    if isinstance(database, PostgresWarehouse):
        # straight into the tables while the ids are new; the replay met loaded ids and was
        # loaded again the careful way
        assert (database.straight_loads, database.conflicts) == (2, 1)
    assert target.query(f"SELECT count(*), count(DISTINCT id) FROM {schema}.tracks") == [(57, 57)]
    subjects = dict(target.query(f"SELECT id, subject FROM {schema}.email_opened"))
    assert len(subjects) == 57
    assert subjects["m-0"] == "first"
    assert subjects["m-2"] == "first"
    assert subjects["m-52"] == "second"
    stats = writer.stats
    assert stats.rows[f"{schema}.tracks", "duplicate"] == 25
    assert stats.messages_repeated == 1
    await writer.close()


async def test_new_properties_add_columns_and_new_events_add_tables(
    target: Target, unique: str
) -> None:
    schema = f"s_{unique}"
    writer = WarehouseWriter(target.make())
    await writer.write([track("m-1", schema)])
    await writer.write(
        [
            track("m-2", schema, link_url="https://example.com", clicks=2, score=0.5, ok=True),
            track("m-3", schema, "Email Marked as Spam"),
        ]
    )
    cols = columns(target, schema, "email_opened")
    assert cols["link_url"] == target.types["text"]
    assert cols["clicks"] == target.types["integer"]
    assert cols["score"] == target.types["float"]
    assert cols["ok"].lower() == "boolean"
    assert target.query(f"SELECT id, link_url FROM {schema}.email_opened ORDER BY id") == [
        ("m-1", None),
        ("m-2", "https://example.com"),
    ]
    assert target.query(f"SELECT id, event FROM {schema}.email_marked_as_spam") == [
        ("m-3", "email_marked_as_spam")
    ]
    assert target.query(f"SELECT event, count(*) FROM {schema}.tracks GROUP BY 1 ORDER BY 1") == [
        ("email_marked_as_spam", 1),
        ("email_opened", 2),
    ]
    await writer.close()


async def test_a_value_that_does_not_fit_loads_as_null_and_is_counted(
    target: Target, unique: str
) -> None:
    schema = f"s_{unique}"
    writer = WarehouseWriter(target.make())
    await writer.write([track("m-1", schema, clicks=1, sent="2026-11-20T10:00:00Z")])
    outcomes = await writer.write(
        [track("m-2", schema, clicks="many", sent="not a time"), track("m-3", schema, clicks=3)]
    )
    assert [o.error for o in outcomes] == [None, None]
    assert target.query(
        f"SELECT id, clicks, sent IS NULL FROM {schema}.email_opened ORDER BY id"
    ) == [
        ("m-1", 1, False),
        ("m-2", None, True),
        ("m-3", 3, True),
    ]
    assert writer.stats.values_nulled == {
        (f"{schema}.email_opened", "clicks", "integer"): 1,
        (f"{schema}.email_opened", "sent", "timestamp"): 1,
    }
    await writer.close()


async def test_rows_the_database_refuses_are_dead_lettered_and_the_others_load(
    target: Target, unique: str
) -> None:
    schema = f"s_{unique}"
    writer = WarehouseWriter(target.make())
    await writer.write([track("m-0", schema)])
    # a rule the loader cannot know of: someone's check constraint
    if target.name == "postgresql":
        target.query(
            f"ALTER TABLE {schema}.tracks ADD CONSTRAINT no_test "
            "CHECK (user_id IS NULL OR user_id <> 'test-user')"
        )
        refused = {"m-3", "m-7"}
    else:  # DuckDB cannot add a constraint to a table: a value too large for its type instead
        target.query(f"ALTER TABLE {schema}.email_opened ADD COLUMN tiny TINYINT")
        refused = {"m-3", "m-7"}
    batch = []
    for i in range(1, 10):
        message_id = f"m-{i}"
        bad = message_id in refused
        if target.name == "postgresql":
            batch.append(track(message_id, schema, user_id="test-user" if bad else "u"))
        else:
            batch.append(track(message_id, schema, tiny=1000 if bad else 1))
    outcomes = await writer.write(batch)
    failed = {batch[i].id for i, o in enumerate(outcomes) if o.error is not None}
    assert failed == refused
    error = next(o.error for o in outcomes if o.error is not None)
    assert isinstance(error, UnexpectedError)
    assert "refused it" in str(error)
    loaded = {row[0] for row in target.query(f"SELECT id FROM {schema}.tracks")}
    assert loaded == {f"m-{i}" for i in range(10)} - refused
    await writer.close()


async def test_identifies_users_pages_from_the_calls_topic(target: Target, unique: str) -> None:
    schema = f"calls_{unique}"

    def call(**message: object) -> Laid:
        return lay_out(orjson.dumps(message), schema=schema, types=CALL_TYPES)

    writer = WarehouseWriter(target.make())
    await writer.write(
        [
            call(
                type="identify",
                messageId="i-1",
                userId="u-1",
                receivedAt="2026-11-20T10:00:00Z",
                traits={"email": "ada@example.com", "plan": "free"},
            ),
            call(
                type="page",
                messageId="p-1",
                userId="u-1",
                name="Pricing",
                properties={"path": "/p"},
            ),
        ]
    )
    await writer.write(
        [
            call(
                type="identify",
                messageId="i-2",
                userId="u-1",
                receivedAt="2026-11-20T11:00:00Z",
                traits={"plan": "pro", "seats": 3},
            ),
            # an identify received earlier, replayed late: it does not undo the later one
            call(
                type="identify",
                messageId="i-0",
                userId="u-1",
                receivedAt="2026-11-20T09:00:00Z",
                traits={"plan": "trial"},
            ),
        ]
    )
    assert target.query(f"SELECT id, email, plan, seats FROM {schema}.users") == [
        ("u-1", "ada@example.com", "pro", 3)
    ]
    assert target.query(f"SELECT id, plan FROM {schema}.identifies ORDER BY id") == [
        ("i-0", "trial"),
        ("i-1", "free"),
        ("i-2", "pro"),
    ]
    assert target.query(f"SELECT id, name, path FROM {schema}.pages") == [("p-1", "Pricing", "/p")]
    await writer.close()


async def test_names_of_63_characters(target: Target, unique: str) -> None:
    schema = f"s_{unique}"
    writer = WarehouseWriter(target.make())
    long_property = "p" * 80
    event = "An Event Whose Name Goes On And On Past Sixty Three Characters Of Text"
    await writer.write([track("m-1", schema, event, props={long_property: "x"})])
    table = "an_event_whose_name_goes_on_and_on_past_sixty_three_characters_"
    assert len(table) == 63
    assert target.query(f'SELECT id, "{"p" * 63}" FROM {schema}.{table}') == [("m-1", "x")]
    await writer.close()


# --- PostgreSQL only ----------------------------------------------------------------------------


async def test_two_replicas_meeting_the_same_new_columns_and_ids_on_postgresql(
    postgres_url: str, unique: str
) -> None:
    """Two writers (two replicas' sessions) load the same new tables and columns at the same
    time, each typing a column differently by its own first value, and overlapping ids (a
    rebalance hands a batch over): no failure, no duplicate, one type per column."""
    schema = f"s_{unique}"
    a = WarehouseWriter(PostgresWarehouse(postgres_url))
    b = WarehouseWriter(PostgresWarehouse(postgres_url))
    for round_ in range(6):
        events = [f"Event {round_} {n}" for n in range(3)]
        batch_a = [
            track(f"r{round_}-{i}", schema, events[i % 3], props={f"c{round_}": i, "n": i})
            for i in range(40)
        ]
        batch_b = [
            track(f"r{round_}-{i}", schema, events[i % 3], props={f"c{round_}": f"t{i}", "n": i})
            for i in range(20, 60)
        ]
        outcomes = await asyncio.gather(a.write(batch_a), b.write(batch_b))
        assert all(o.error is None for result in outcomes for o in result)
    assert target_count(postgres_url, f"SELECT count(*) FROM {schema}.tracks") == 6 * 60
    assert (
        target_count(postgres_url, f"SELECT count(*) - count(DISTINCT id) FROM {schema}.tracks")
        == 0
    )
    kinds = _pg_query(postgres_url)(
        "SELECT table_name, column_name, count(DISTINCT data_type) FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' GROUP BY 1, 2 HAVING count(DISTINCT data_type) > 1"
    )
    assert kinds == []
    # the column typed by whichever replica came first holds every value that fits it
    c0 = _pg_query(postgres_url)(
        "SELECT data_type FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' AND table_name = 'event_0_0' AND column_name = 'c0'"
    )
    assert c0 in ([("bigint",)], [("text",)])
    assert a.stats.retries["schema"] == b.stats.retries["schema"] == 0
    await a.close()
    await b.close()


def target_count(url: str, sql: str) -> int:
    ((count,),) = _pg_query(url)(sql)
    return int(count)


async def test_an_unreachable_server_is_waited_for_and_its_password_never_shown(
    postgres_url: str, unique: str
) -> None:
    url = postgres_url.rsplit(":", 1)[0] + ":1/postgres"  # port 1: nothing listens
    database = PostgresWarehouse(url)
    with pytest.raises(TransientDatabaseError) as raised:
        await database.read_schema("x")
    password = postgres_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password not in str(raised.value)
    writer = WarehouseWriter(database, sleep=lambda _: asyncio.sleep(0.01))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.write([track("m-1", f"s_{unique}")])
    assert writer.stats.retries["transient"] >= 2
    wrong = postgres_url.replace(password, "not-the-password")
    with pytest.raises(TransientDatabaseError, match="password authentication failed"):
        await PostgresWarehouse(wrong).read_schema("x")


# --- DuckDB only --------------------------------------------------------------------------------


def test_a_second_process_is_refused_the_duckdb_file_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = DuckDBWarehouse(str(path))
    code = (
        "import sys\n"
        "from worker.errors import ConfigurationError\n"
        "from worker.warehouse.duckdb import DuckDBWarehouse\n"
        "try:\n"
        f"    DuckDBWarehouse({str(path)!r})\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
        "    sys.exit(70)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 70, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"WAREHOUSE_URL: the DuckDB file {path} is being written by another ")
    assert "DuckDB takes one writing process" in line
    assert "PID" in line
    asyncio.run(holder.close())
