"""The warehouse loader's throughput, against each database's own bulk load of the same rows.

Inputs: the tracks the source makes of the benchmark's production-like email events
(`tests.benchmarks.inputs.source_inputs`, mapped by `map_source`: every event type, the optional
fields as producers fill them), as the bytes the loader reads off `segment.tracks`. Each track
is two rows (tracks and its event table). Both sides write the same rows in the same batches
(`BATCH` tracks, one transaction each) into tables made for them, one run after the other on the
same server or file; rows/s is table rows written a second, wall time.

- **PostgreSQL** (a server of Debian's package started for the run, durable settings): the
  loader as its agent runs it (`BatchingSink` with overlap + `WarehouseWriter` +
  `PostgresWarehouse`: bytes -> compiled layout -> COPY data -> `COPY` straight into the tables,
  the ids being new; tables created on the way) against a plain `COPY ... FROM STDIN` of the
  loader's own rows (already laid out and typed; the binary format, as the loader's, and the
  text format, psycopg's default) straight into tables of their own, created beforehand. Goal:
  at least 0.5 of it. The loader's time spent in the database is given too, to set against the
  COPY, and the client's CPU a track (the loader parses a batch while the server writes the last
  one, so wall time minus database time is no longer its Python side).
- **DuckDB** (a file in a temporary folder): the loader (`DuckDBWarehouse`: appender into a
  temporary table, `INSERT ... ON CONFLICT DO NOTHING`) against DuckDB's own bulk insert, its
  appender, straight into the tables.
- A replay: the loader given the same tracks again (every id already loaded, nothing written).

PostgreSQL's loader and binary COPY alternate, `BENCH_WAREHOUSE_ROUNDS` rounds (default 3),
each into tables of its own, and the ratio given is the median of the rounds' ratios: a
machine whose load drifts (two cores shared with whatever else runs) moves both sides of a
round alike, where one run of each minutes apart can be off by a third.

Run alone: `.venv/bin/python -m tests.benchmarks.bench_warehouse` (BENCH_WAREHOUSE_N tracks,
default 100,000; about a minute).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
from mode.utils.queues import FlowControlEvent
from psycopg import sql

from tests.benchmarks.inputs import Expect, source_inputs
from tests.localpostgres import LocalPostgres, free_port
from worker.__main__ import tune_gc
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.batches import MAX_IN_FLIGHT
from worker.runtime.sink import BatchingSink
from worker.source.mapping import map_source
from worker.warehouse.duckdb import SQL_TYPES as DUCKDB_TYPES
from worker.warehouse.duckdb import DuckDBWarehouse
from worker.warehouse.layout import TRACK_TYPES, Laid, lay_out, layout_of
from worker.warehouse.loader import Database, TableLoad, WarehouseWriter
from worker.warehouse.postgres import SQL_TYPES as POSTGRES_TYPES
from worker.warehouse.postgres import STAGING_TYPES, PostgresWarehouse

__all__ = ["measure", "tracks"]

BATCH = 5000
SCHEMA = "bench"


def tracks(count: int) -> list[bytes]:
    """`count` tracks as the source writes them (the mix's valid email events, mapped)."""
    received = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    out: list[bytes] = []
    for item in source_inputs(count * 2):
        if item.expect is Expect.OUTPUT:
            track = map_source(item.value, received_at=received, integration_version="bench")
            out.append(track.to_json())
            if len(out) == count:
                break
    return out


def _batches(items: Sequence[bytes]) -> list[Sequence[bytes]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


class _Timed:
    """A `Database` that adds up the seconds spent in it (the database side of a load)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.name = database.name
        self.takes_copy_data = database.takes_copy_data
        self.seconds = 0.0

    async def read_schema(self, schema: str) -> Any:
        return await self._timed(self.database.read_schema(schema))

    async def evolve(self, changes: Any) -> Any:
        return await self._timed(self.database.evolve(changes))

    async def load(self, loads: Any) -> Any:
        return await self._timed(self.database.load(loads))

    async def close(self) -> None:
        await self.database.close()

    async def _timed(self, work: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await work
        finally:
            self.seconds += time.perf_counter() - started


class _Acknowledged:
    """The stage's sender: Kafka is not part of this benchmark; counts what it is given."""

    def __init__(self) -> None:
        self.records = 0

    async def send(self, records: Sequence[OutboundRecord]) -> Awaitable[object]:
        self.records += len(records)
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def _load(
    database: Database, raw: Sequence[bytes], schema: str = SCHEMA
) -> tuple[float, float, float]:
    """Seconds the loader takes from bytes to committed rows, batch by batch, of those the
    seconds spent in the database, and the CPU seconds of this process (the client's whole
    work: layout, fitting, psycopg; steadier than wall time on a shared machine).

    The batches go through the loader's own sink as its agent runs it (`BatchingSink` with
    `overlap`: the next batch parsed while one is written; at most `MAX_IN_FLIGHT` batches
    handed off and not yet written), its messages made beforehand."""
    timed = _Timed(database)
    writer = WarehouseWriter(timed)
    # as the loader's parse lays them out (`agents.parser`)
    layout = layout_of(schema, TRACK_TYPES, defer=database.takes_copy_data)
    sender = _Acknowledged()
    breaker = Breaker(window=BATCH, min_messages=BATCH, max_ratio=1.0)
    stage = Stage("warehouse", "load", lambda _: [], sender, "dlq", breaker)
    flow = FlowControlEvent()
    flow.resume()
    sink = BatchingSink(
        stage=stage,
        parse=lambda message: layout(message.value),
        writer=writer,
        flow_control=flow,
        grace_s=600.0,
        overlap=True,
    )
    batches = [
        [InboundMessage("segment.tracks", 0, at, 0, None, value) for at, value in enumerate(batch)]
        for batch in _batches(raw)
    ]
    started = time.perf_counter()
    cpu = time.process_time()
    in_flight: deque[Awaitable[object]] = deque()
    for batch in batches:
        if len(in_flight) >= MAX_IN_FLIGHT:
            await in_flight.popleft()
        in_flight.append(asyncio.ensure_future(await sink.handle(batch)))
    for acked in in_flight:
        await acked
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await writer.close()
    assert sender.records == 0, "a track was dead-lettered"
    assert stage.stats.produced == len(raw)
    return elapsed, timed.seconds, cpu


def _prepared(raw: Sequence[bytes]) -> list[list[TableLoad]]:
    """The loads the loader makes of each batch (what the baselines write), made untimed by a
    loader on an in-memory DuckDB."""
    loads: list[list[TableLoad]] = []
    database = DuckDBWarehouse(":memory:")
    writer = WarehouseWriter(database)

    async def prepare() -> None:
        for batch in _batches(raw):
            laid: list[Laid] = [lay_out(value, schema=SCHEMA, types=TRACK_TYPES) for value in batch]
            await writer.write(laid)  # creates the tables, so the loads have every column
            loads.append(writer._prepare(laid).loads)
        await writer.close()

    asyncio.run(prepare())
    return loads


def _tables(loads: list[list[TableLoad]]) -> dict[str, TableLoad]:
    """The last load of each table: its columns are all the table's columns."""
    return {load.table: load for batch in loads for load in batch}


def _postgres_copy(
    url: str, loads: list[list[TableLoad]], *, binary: bool, round_: int = 0
) -> float:
    """Seconds a plain COPY of the same rows takes, batch by batch, into tables made for it:
    in the binary format, as the loader stages its rows, or in the text format."""
    schema = f"plain_{'binary' if binary else 'text'}_{round_}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table, load in _tables(loads).items():
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(POSTGRES_TYPES[t]))
                for c, t in zip(load.columns, load.types, strict=True)
            )
            conn.execute(
                sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id))").format(
                    sql.Identifier(schema, table), columns
                )
            )
        conn.execute("SET TIME ZONE 'UTC'")
        form = sql.SQL(" (FORMAT BINARY)" if binary else "")
        started = time.perf_counter()
        for batch in loads:
            with conn.transaction(), conn.cursor() as cur:
                for load in batch:
                    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
                        sql.Identifier(schema, load.table),
                        sql.SQL(", ").join(map(sql.Identifier, load.columns)),
                        form,
                    )
                    with cur.copy(copy_sql) as copy:
                        if binary:
                            # a naive UTC time is the same 8 bytes as a `timestamp with time
                            # zone` in the binary format
                            copy.set_types([STAGING_TYPES[t] for t in load.types])
                        for row in load.rows:
                            copy.write_row(row)
        return time.perf_counter() - started


def _duckdb_appender(path: str, loads: list[list[TableLoad]]) -> float:
    """Seconds DuckDB's appender takes for the same rows, batch by batch, into tables made for
    them."""
    con = duckdb.connect(path)
    try:
        con.execute("CREATE SCHEMA plain")
        for table, load in _tables(loads).items():
            columns = ", ".join(
                f'"{c}" {DUCKDB_TYPES[t]}' for c, t in zip(load.columns, load.types, strict=True)
            )
            con.execute(f'CREATE TABLE plain."{table}" ({columns}, PRIMARY KEY (id))')
        started = time.perf_counter()
        for batch in loads:
            con.execute("BEGIN TRANSACTION")
            for load in batch:
                appender = con.appender(f'plain."{load.table}"', columns=list(load.columns))
                appender.append_rows(load.rows)
                appender.flush()
            con.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        con.close()


def _log(text: str) -> None:
    print(f"[bench warehouse {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def measure(count: int | None = None) -> dict[str, Any]:
    """The figures, as a dict (`make bench` tabulates them)."""
    count = count or int(os.environ.get("BENCH_WAREHOUSE_N", "100000"))
    rounds = max(1, int(os.environ.get("BENCH_WAREHOUSE_ROUNDS", "3")))
    _log(f"making {count:,} tracks")
    raw = tracks(count)  # bytes, which the garbage collector does not walk
    folder = Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    # a folder of its own: the server's user (postgres, when run as root) must reach it
    server = LocalPostgres(
        Path(tempfile.mkdtemp(prefix="bench-postgres-")), free_port(), durable=True
    )
    thresholds = gc.get_threshold()
    try:
        _log("the baselines' rows: the loader's own, laid out and typed")
        loads = _prepared(raw)
        rows = sum(len(load.rows) for batch in loads for load in batch)
        _log("starting PostgreSQL")
        server.start()
        # what start-up made, and the baselines' rows (millions of objects), are frozen out of
        # the garbage collector's walks and the collector tuned, as `python -m worker run`
        # does before its agents start
        tune_gc()
        loader: list[tuple[float, float, float]] = []
        copy: list[float] = []
        for round_ in range(rounds):
            _log(f"PostgreSQL, round {round_ + 1} of {rounds}: the loader")
            loader.append(
                asyncio.run(_load(PostgresWarehouse(server.url), raw, f"{SCHEMA}_{round_}"))
            )
            gc.collect()
            _log(f"PostgreSQL, round {round_ + 1} of {rounds}: a plain COPY, binary")
            copy.append(_postgres_copy(server.url, loads, binary=True, round_=round_))
        ratios = [c / run[0] for c, run in zip(copy, loader, strict=True)]
        middle = sorted(range(rounds), key=lambda r: ratios[r])[rounds // 2]
        loader_s, loader_db_s, loader_cpu_s = loader[middle]
        copy_s = copy[middle]
        _log("PostgreSQL: the loader again (a replay: every id there already)")
        replay_s, _, _ = asyncio.run(_load(PostgresWarehouse(server.url), raw, f"{SCHEMA}_0"))
        gc.collect()
        _log("PostgreSQL: a plain COPY, text")
        text_copy_s = _postgres_copy(server.url, loads, binary=False)
        with psycopg.connect(server.url) as conn:
            loaded = conn.execute(f"SELECT count(*) FROM {SCHEMA}_0.tracks").fetchone()
        assert loaded == (len(raw),)
        server.remove()
        _log("DuckDB: the loader")
        duck_s, duck_db_s, _ = asyncio.run(
            _load(DuckDBWarehouse(str(folder / "loader.duckdb")), raw)
        )
        _log("DuckDB: its appender")
        appender_s = _duckdb_appender(str(folder / "appender.duckdb"), loads)
    finally:
        gc.unfreeze()  # the other sections of `make bench` run in this process
        gc.set_threshold(*thresholds)
        server.remove()
        shutil.rmtree(folder, ignore_errors=True)

    def rate(seconds: float) -> float:
        return round(rows / seconds)

    return {
        "tracks": len(raw),
        "rows": rows,
        "batch": BATCH,
        "tables": len(_tables(loads)),
        "rounds": rounds,
        "postgres_ratios": [round(r, 3) for r in ratios],
        "postgres_loader_rows_per_s": rate(loader_s),
        "postgres_copy_rows_per_s": rate(copy_s),
        "postgres_ratio": round(copy_s / loader_s, 3),
        "postgres_text_copy_rows_per_s": rate(text_copy_s),
        "postgres_text_ratio": round(text_copy_s / loader_s, 3),
        "postgres_loader_database_rows_per_s": rate(loader_db_s),
        "postgres_database_ratio": round(copy_s / loader_db_s, 3),
        "postgres_replay_rows_per_s": rate(replay_s),
        "duckdb_loader_rows_per_s": rate(duck_s),
        "duckdb_appender_rows_per_s": rate(appender_s),
        "duckdb_ratio": round(appender_s / duck_s, 3),
        "duckdb_loader_database_rows_per_s": rate(duck_db_s),
        "duckdb_database_ratio": round(appender_s / duck_db_s, 3),
        "python_us_per_track": round((loader_s - loader_db_s) / len(raw) * 1e6, 1),
        "postgres_loader_cpu_us_per_track": round(loader_cpu_s / len(raw) * 1e6, 1),
        "seconds": {
            "postgres_loader": round(loader_s, 2),
            "postgres_loader_database": round(loader_db_s, 2),
            "postgres_copy": round(copy_s, 2),
            "postgres_text_copy": round(text_copy_s, 2),
            "postgres_replay": round(replay_s, 2),
            "duckdb_loader": round(duck_s, 2),
            "duckdb_loader_database": round(duck_db_s, 2),
            "duckdb_appender": round(appender_s, 2),
        },
    }


def main() -> int:
    print(orjson.dumps(measure(), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
