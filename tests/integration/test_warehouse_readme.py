"""Every SQL query of the README's warehouse section runs on DuckDB and on PostgreSQL, on tables
the loader wrote from the source's own tracks (every email event type) and a few Segment calls,
and answers at least one row."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.benchmarks.inputs import Expect, source_inputs
from worker.source.mapping import map_source
from worker.warehouse.duckdb import DuckDBWarehouse
from worker.warehouse.layout import CALL_TYPES, TRACK_TYPES, lay_out
from worker.warehouse.loader import Database, WarehouseWriter
from worker.warehouse.postgres import PostgresWarehouse

pytestmark = pytest.mark.integration

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("## Loading the warehouse\n", 1)[1].split("\n## ", 1)[0]
QUERIES = re.findall(r"```sql\n(.*?)```", SECTION, re.DOTALL)

CALLS = [
    {
        "type": "identify",
        "messageId": f"i-{n}",
        "userId": f"u-{n % 3}",
        "receivedAt": f"2026-11-2{n % 3}T10:00:00Z",
        "traits": {"email": f"person{n % 3}@example.com", "firstName": "Ada"},
    }
    for n in range(6)
] + [
    {"type": "page", "messageId": "p-1", "anonymousId": "a-1", "properties": {"path": "/pricing"}},
    {"type": "screen", "messageId": "s-1", "userId": "u-1", "name": "Home"},
    {"type": "group", "messageId": "g-1", "userId": "u-1", "groupId": "g", "traits": {"name": "I"}},
    {"type": "alias", "messageId": "al-1", "userId": "u-1", "previousId": "a-1"},
]


def test_the_section_has_a_query_per_table() -> None:
    tables = {"tracks", "identifies", "users", "pages", "screens", "groups", "aliases"}
    tables |= {
        f"email_{e}"
        for e in ("delivered", "opened", "clicked", "bounced", "marked_as_spam", "unsubscribed")
    }
    named = set(re.findall(r"(?:autopilothq|website)\.(\w+)", "\n".join(QUERIES)))
    assert tables <= named


async def _load(database: Database) -> None:
    received = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    tracks = [
        map_source(item.value, received_at=received, integration_version="readme").to_json()
        for item in source_inputs(3000)
        if item.expect is Expect.OUTPUT
    ]
    writer = WarehouseWriter(database)
    laid = [lay_out(raw, schema="autopilothq", types=TRACK_TYPES) for raw in tracks]
    laid += [lay_out(orjson.dumps(c), schema="website", types=CALL_TYPES) for c in CALLS]
    outcomes = await writer.write(laid)
    assert all(o.error is None for o in outcomes)
    await writer.close()


async def _check(query: Callable[[str], list[tuple[Any, ...]]]) -> None:
    for sql in QUERIES:
        rows = query(sql)
        assert rows, f"no row from:\n{sql}"


async def test_the_readme_queries_on_duckdb(tmp_path: Path) -> None:
    path = str(tmp_path / "warehouse.duckdb")
    await _load(DuckDBWarehouse(path))
    import duckdb  # noqa: PLC0415

    with duckdb.connect(path, read_only=True) as con:
        await _check(lambda sql: con.execute(sql).fetchall())


async def test_the_readme_queries_on_postgresql(postgres_url: str, unique: str) -> None:
    # the queries name the schemas autopilothq and website: a database of this test's own
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE readme_{unique}")
    url = postgres_url.rsplit("/", 1)[0] + f"/readme_{unique}"
    await _load(PostgresWarehouse(url))
    with psycopg.connect(url) as conn:
        await _check(lambda sql: conn.execute(sql).fetchall())
