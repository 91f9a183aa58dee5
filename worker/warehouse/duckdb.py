"""DuckDB, the embedded target: a file (`WAREHOUSE_URL=duckdb:///path/to/file.duckdb`).

DuckDB takes one writing process per file: the worker opens the file when the loader is built
and holds it until it stops, so a second worker pointed at the same file is refused at start,
with one line saying so (`ConfigurationError`, exit 70). Other processes cannot open the file
either while the worker runs, to read it too: query it after the worker stopped, or load into
PostgreSQL.

A load stages each table's rows in a temporary table with DuckDB's appender, then runs one
`INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING` per table, all in one transaction. DuckDB's
API blocks, so every call runs on one thread of its own, one at a time: a load the sink
cancelled (a rebalance) still runs to its end there before the next one starts, and what it
committed is deduplicated when the batch is loaded again.

Types: timestamp is `TIMESTAMP` (UTC, no zone), integer `BIGINT`, float `DOUBLE`, boolean
`BOOLEAN`, text `VARCHAR`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import duckdb

from worker.errors import ConfigurationError
from worker.warehouse.columns import ColumnType
from worker.warehouse.loader import (
    Columns,
    RefusedByDatabase,
    SchemaChanged,
    TableChange,
    TableKey,
    TableLoad,
    TransientDatabaseError,
)

__all__ = ["DuckDBWarehouse", "duckdb_path"]

T = TypeVar("T")

SQL_TYPES = {
    ColumnType.TIMESTAMP: "TIMESTAMP",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.TEXT: "VARCHAR",
}

#: Failures that pass (the file, a lock, memory): the batch is tried again.
_TRANSIENT = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.OutOfMemoryException,
    duckdb.InterruptException,
)


def duckdb_path(url: str) -> str:
    """The file a `duckdb://` URL names: `duckdb:///abs/file.duckdb` is absolute,
    `duckdb://dir/file.duckdb` relative to the working directory."""
    parts = urlsplit(url)
    return unquote(parts.netloc + parts.path)


def column_type(sql_type: str) -> ColumnType:
    """The layout type of a column DuckDB reports (a column someone altered included)."""
    upper = sql_type.upper()
    if upper.startswith("TIMESTAMP") or upper == "DATE":
        return ColumnType.TIMESTAMP
    if upper in {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT"} or upper.startswith("U"):
        return ColumnType.INTEGER
    if upper in {"DOUBLE", "FLOAT", "REAL"} or upper.startswith("DECIMAL"):
        return ColumnType.FLOAT
    if upper == "BOOLEAN":
        return ColumnType.BOOLEAN
    return ColumnType.TEXT


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBWarehouse:
    """The loader's `Database` on a DuckDB file."""

    name = "DuckDB"
    takes_copy_data = False

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(path)
        except duckdb.IOException as exc:
            holder = re.search(r"Conflicting lock is held in (.*?)(?:\. See|$)", str(exc))
            if holder is None:
                raise ConfigurationError(f"WAREHOUSE_URL: cannot open {path}: {exc}") from None
            raise ConfigurationError(
                f"WAREHOUSE_URL: the DuckDB file {path} is being written by another process "
                f"({holder.group(1)}); DuckDB takes one writing process: run the warehouse "
                "feature in one worker only (WORKER_FEATURES), or load into PostgreSQL"
            ) from None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="duckdb")
        #: staging table per target table: (its columns and types, its name)
        self._staging: dict[TableKey, tuple[tuple[tuple[str, ColumnType], ...], str]] = {}
        self._staged = 0

    @classmethod
    def from_url(cls, url: str) -> DuckDBWarehouse:
        return cls(duckdb_path(url))

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def read_schema(self, schema: str) -> dict[str, Columns]:
        return await self._run(lambda: self._read(schema, None))

    async def evolve(self, changes: Sequence[TableChange]) -> dict[TableKey, Columns]:
        return await self._run(lambda: self._evolve(changes))

    async def load(self, loads: Sequence[TableLoad]) -> list[int]:
        return await self._run(lambda: self._load(loads))

    async def close(self) -> None:
        await self._run(self._con.close)
        self._thread.shutdown(wait=True)

    # --- on DuckDB's thread -------------------------------------------------------------------

    def _read(self, schema: str, tables: Sequence[str] | None) -> dict[str, Columns]:
        sql = (
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? ORDER BY table_name, ordinal_position"
        )
        try:
            found = self._con.execute(sql, [schema]).fetchall()
        except _TRANSIENT as exc:
            raise TransientDatabaseError(str(exc)) from exc
        result: dict[str, Columns] = {}
        for table, column, sql_type in found:
            if tables is None or table in tables:
                result.setdefault(table, {})[column] = column_type(sql_type)
        return result

    def _evolve(self, changes: Sequence[TableChange]) -> dict[TableKey, Columns]:
        con = self._con
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                for schema in sorted({change.schema for change in changes}):
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
                for change in changes:
                    target = f"{quote(change.schema)}.{quote(change.table)}"
                    if change.create:
                        columns = ", ".join(
                            f"{quote(c)} {SQL_TYPES[t]}" for c, t in change.columns.items()
                        )
                        con.execute(
                            f"CREATE TABLE IF NOT EXISTS {target} ({columns}, PRIMARY KEY (id))"
                        )
                    for column, kind in change.columns.items():
                        con.execute(
                            f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS "
                            f"{quote(column)} {SQL_TYPES[kind]}"
                        )
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        except _TRANSIENT as exc:
            raise TransientDatabaseError(str(exc)) from exc
        except duckdb.Error as exc:
            raise RefusedByDatabase(str(exc)) from exc
        result: dict[TableKey, Columns] = {}
        for schema in {change.schema for change in changes}:
            tables = [change.table for change in changes if change.schema == schema]
            for table, found in self._read(schema, tables).items():
                result[schema, table] = found
        return result

    def _load(self, loads: Sequence[TableLoad]) -> list[int]:
        con = self._con
        counts: list[int] = []
        try:
            for load in loads:  # outside the transaction, so a rollback keeps them
                self._staging_for(load)
            con.execute("BEGIN TRANSACTION")
            try:
                for load in loads:
                    staging = self._staging[load.schema, load.table][1]
                    appender = con.appender(staging)
                    appender.append_rows(load.rows)
                    appender.flush()
                    inserted = con.execute(_insert_sql(load, staging)).fetchone()
                    counts.append(int(inserted[0]) if inserted else 0)
                    con.execute(f"DELETE FROM {staging}")  # noqa: S608  (our own table)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        except _TRANSIENT as exc:
            raise TransientDatabaseError(str(exc)) from exc
        except (duckdb.CatalogException, duckdb.BinderException) as exc:
            self._staging.clear()
            raise SchemaChanged(str(exc)) from exc
        except (duckdb.Error, TypeError, ValueError, OverflowError) as exc:
            raise RefusedByDatabase(str(exc)) from exc
        return counts

    def _staging_for(self, load: TableLoad) -> None:
        signature = tuple(zip(load.columns, load.types, strict=True))
        key = (load.schema, load.table)
        known = self._staging.get(key)
        if known is not None and known[0] == signature:
            return
        if known is not None:
            self._con.execute(f"DROP TABLE IF EXISTS temp.{known[1]}")
        self._staged += 1
        name = f"_load_{self._staged}"
        columns = ", ".join(f"{quote(c)} {SQL_TYPES[t]}" for c, t in signature)
        self._con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({columns})")
        self._staging[key] = (signature, name)


def _insert_sql(load: TableLoad, staging: str) -> str:
    target = f"{quote(load.schema)}.{quote(load.table)}"
    columns = ", ".join(quote(c) for c in load.columns)
    select = f"SELECT {columns} FROM {staging}"  # noqa: S608  (quoted names, no values)
    if not load.merge:
        return f"INSERT INTO {target} ({columns}) {select} ON CONFLICT (id) DO NOTHING"
    return f"INSERT INTO {target} AS t ({columns}) {select} {merge_clause(load.columns)}"


def merge_clause(columns: Sequence[str]) -> str:
    """`ON CONFLICT` for users (target aliased `t`): a value of the later identify wins, a value
    it lacks is kept; an identify received before the row's is not merged (a replay)."""
    updates = ", ".join(
        f"{quote(c)} = COALESCE(EXCLUDED.{quote(c)}, t.{quote(c)})" for c in columns if c != "id"
    )
    return (
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE t.received_at IS NULL "
        "OR EXCLUDED.received_at IS NULL OR EXCLUDED.received_at >= t.received_at"
    )


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # no transaction left to roll back
        return
