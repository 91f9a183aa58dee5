"""PostgreSQL, with psycopg 3 (`WAREHOUSE_URL=postgresql://user:password@host:5432/database`).

A load is one transaction, tables in name order and rows in id order, so two replicas loading
the same ids (a rebalance hands a batch over) wait on each other instead of deadlocking; a
deadlock or a serialization failure all the same is tried again. Rows travel in PostgreSQL's
binary COPY format (`COPY ... FROM STDIN`: each value's type is known, and formatting text
costs the client several times as much), in one of two ways:

- **straight** (the common case: ids not loaded yet): each table's rows are copied straight
  into it. An id already there makes the COPY fail with a unique violation; the transaction is
  then rolled back and the load done again the careful way, which the next
  `CAREFUL_AFTER_CONFLICT` loads also take (a replay, or the overlap after a restart, is
  likely to go on meeting loaded ids). This writes each row once, where the careful way
  writes it twice and checks every id on the way (about twice the server's time).
- **careful**: each table's rows are copied into a temporary table of the session, then one
  `INSERT ... SELECT ... ORDER BY id ON CONFLICT (id) DO NOTHING` per table moves them (users
  `ON CONFLICT ... DO UPDATE`: users always go this way); the temporary tables empty
  themselves at commit.

Either way an id already in a table keeps its row: the first copy wins.

Schema changes run in a short transaction of their own, before the load, under a transaction
advisory lock per schema: two replicas that meet the same new table or column take turns, the
second finds it there (`IF NOT EXISTS`), and both read back the type the first one chose.
Tables are created and altered in name order too, the order loads take their locks in.

Types: timestamp is `timestamp with time zone` (the session's time zone is UTC), integer
`bigint`, float `double precision`, boolean `boolean`, text `text`.

The connection is opened on the first load and opened again after it failed. An unreachable
server, a refused password or missing privileges are `TransientDatabaseError`s: the loader
waits and tries again, saying so in the log, without acking anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

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

__all__ = ["APPLICATION_NAME", "PostgresWarehouse", "column_type"]

APPLICATION_NAME = "autopilot-worker warehouse"
CONNECT_TIMEOUT_S = 10
#: How many loads after a straight COPY met a loaded id go the careful way before trying again.
CAREFUL_AFTER_CONFLICT = 20

SQL_TYPES = {
    ColumnType.TIMESTAMP: "timestamp with time zone",
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TEXT: "text",
}
#: The staging tables' types: the loader's times are naive UTC, copied as `timestamp` and cast
#: to `timestamp with time zone` by the INSERT (the session's time zone is UTC).
STAGING_TYPES = {**SQL_TYPES, ColumnType.TIMESTAMP: "timestamp"}

#: Failures that pass: the server, the network, locks, privileges an operator will grant.
_TRANSIENT = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
    pg_errors.InsufficientPrivilege,
)
#: A table, column or schema the loader knew of is gone.
_SCHEMA_CHANGED = (pg_errors.UndefinedTable, pg_errors.UndefinedColumn, pg_errors.InvalidSchemaName)


def column_type(sql_type: str) -> ColumnType:
    """The layout type of a column PostgreSQL reports (information_schema's `data_type`)."""
    if sql_type.startswith("timestamp") or sql_type == "date":
        return ColumnType.TIMESTAMP
    if sql_type in {"bigint", "integer", "smallint"}:
        return ColumnType.INTEGER
    if sql_type in {"double precision", "real", "numeric"}:
        return ColumnType.FLOAT
    if sql_type == "boolean":
        return ColumnType.BOOLEAN
    return ColumnType.TEXT


class PostgresWarehouse:
    """The loader's `Database` on a PostgreSQL server."""

    name = "PostgreSQL"
    takes_copy_data = True

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        #: staging table of this session per target table: (its columns and types, its name)
        self._staging: dict[TableKey, tuple[tuple[tuple[str, ColumnType], ...], str]] = {}
        self._staged = 0
        #: loads left to go the careful way (see the module docstring)
        self._careful_left = 0
        #: loads that went straight, and straight COPYs that met a loaded id
        self.straight_loads = 0
        self.conflicts = 0

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._staging.clear()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                application_name=APPLICATION_NAME,
                connect_timeout=CONNECT_TIMEOUT_S,
                # UTF-8 whatever the database's encoding: the text of binary COPY data made
                # outside psycopg (`TableLoad.copy_data`) is UTF-8, as psycopg's then is
                options="-c TimeZone=UTC -c client_encoding=UTF8",
            )
        except psycopg.Error as exc:
            raise TransientDatabaseError(f"cannot connect: {_first_line(exc)}") from exc
        self._conn = conn
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _forget(self) -> None:
        """Drop the connection after a failure that may have left it mid-protocol (a
        cancellation): it is closed in the background and opened again on the next call."""
        conn, self._conn = self._conn, None
        self._staging.clear()
        if conn is not None and not conn.closed:
            task = asyncio.ensure_future(conn.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def read_schema(self, schema: str) -> dict[str, Columns]:
        try:
            return await self._read(await self._connection(), schema, None)
        except psycopg.Error as exc:
            raise self._translated(exc) from exc
        except BaseException:
            self._forget()  # cancelled (a rebalance): the session may be mid-way through a command
            raise

    async def _read(
        self,
        conn: psycopg.AsyncConnection[tuple[object, ...]],
        schema: str,
        tables: Sequence[str] | None,
    ) -> dict[str, Columns]:
        query = (
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position"
        )
        result: dict[str, Columns] = {}
        async with conn.cursor() as cur:
            await cur.execute(query, (schema,))
            for table, column, sql_type in await cur.fetchall():
                if tables is None or table in tables:
                    result.setdefault(str(table), {})[str(column)] = column_type(str(sql_type))
        return result

    async def evolve(self, changes: Sequence[TableChange]) -> dict[TableKey, Columns]:
        try:
            conn = await self._connection()
            schemas = sorted({change.schema for change in changes})
            async with conn.transaction():
                for schema in schemas:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))",
                        (f"autopilot-worker warehouse {schema}",),
                    )
                    await conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                    )
                for change in sorted(changes, key=lambda c: (c.schema, c.table)):
                    await _apply(conn, change)
            result: dict[TableKey, Columns] = {}
            for schema in schemas:
                tables = [change.table for change in changes if change.schema == schema]
                for table, columns in (await self._read(conn, schema, tables)).items():
                    result[schema, table] = columns
        except psycopg.Error as exc:
            raise self._translated(exc) from exc
        except BaseException:
            self._forget()  # cancelled (a rebalance): the session may be mid-way through a command
            raise
        return result

    async def load(self, loads: Sequence[TableLoad]) -> list[int]:
        try:
            conn = await self._connection()
            if self._careful_left > 0:
                self._careful_left -= 1
            else:
                try:
                    counts = await self._load(conn, loads, straight=True)
                except pg_errors.UniqueViolation:
                    self.conflicts += 1
                    self._careful_left = CAREFUL_AFTER_CONFLICT
                else:
                    self.straight_loads += 1
                    return counts
            return await self._load(conn, loads, straight=False)
        except psycopg.Error as exc:
            raise self._translated(exc) from exc
        except BaseException:
            self._forget()  # cancelled (a rebalance): the session may be mid-way through a command
            raise

    async def _load(
        self,
        conn: psycopg.AsyncConnection[tuple[object, ...]],
        loads: Sequence[TableLoad],
        *,
        straight: bool,
    ) -> list[int]:
        """One transaction for `loads`: `straight` into the tables, merges excepted (a unique
        violation when an id is there already), or through the staging tables."""
        counts: list[int] = []
        for load in loads:  # outside the transaction, so a rollback keeps them
            if not (straight and not load.merge):
                await self._staging_for(conn, load)
        async with conn.transaction(), conn.cursor() as cur:
            for load in loads:
                columns = sql.SQL(", ").join(map(sql.Identifier, load.columns))
                into_table = straight and not load.merge
                staging = "" if into_table else self._staging[load.schema, load.table][1]
                target = (
                    sql.Identifier(load.schema, load.table)
                    if into_table
                    else sql.Identifier(staging)
                )
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    target, columns
                )
                async with cur.copy(copy_sql) as copy:
                    if load.copy_data is not None:
                        await copy.write(load.copy_data)
                    else:
                        # a naive UTC time is the same 8 bytes in the binary format whether
                        # the column is `timestamp` (staging) or `timestamp with time zone`
                        copy.set_types([STAGING_TYPES[t] for t in load.types])
                        for row in load.rows:
                            await copy.write_row(row)
                if into_table:
                    counts.append(load.size)
                    continue
                await cur.execute(_insert_sql(load, staging, columns))
                counts.append(max(cur.rowcount, 0))
        return counts

    async def _staging_for(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], load: TableLoad
    ) -> None:
        signature = tuple(zip(load.columns, load.types, strict=True))
        key = (load.schema, load.table)
        known = self._staging.get(key)
        if known is not None and known[0] == signature:
            return
        if known is not None:
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(known[1])))
        self._staged += 1
        name = f"_load_{self._staged}"
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(STAGING_TYPES[t]))
            for c, t in signature
        )
        await conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(name), columns
            )
        )
        self._staging[key] = (signature, name)

    def _translated(self, exc: psycopg.Error) -> Exception:
        """The loader's exception for a failure of psycopg."""
        if isinstance(exc, _SCHEMA_CHANGED):
            self._staging.clear()
            return SchemaChanged(_first_line(exc))
        if isinstance(exc, _TRANSIENT):
            self._forget()
            return TransientDatabaseError(_first_line(exc))
        return RefusedByDatabase(_first_line(exc))


async def _apply(conn: psycopg.AsyncConnection[tuple[object, ...]], change: TableChange) -> None:
    target = sql.Identifier(change.schema, change.table)
    if change.create:
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(SQL_TYPES[t]))
            for c, t in change.columns.items()
        )
        await conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY (id))").format(target, columns)
        )
    if change.columns:
        additions = sql.SQL(", ").join(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(
                sql.Identifier(c), sql.SQL(SQL_TYPES[t])
            )
            for c, t in change.columns.items()
        )
        await conn.execute(sql.SQL("ALTER TABLE {} {}").format(target, additions))


def _insert_sql(load: TableLoad, staging: str, columns: sql.Composable) -> sql.Composed:
    insert = sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ORDER BY id ").format(
        sql.Identifier(load.schema, load.table), columns, columns, sql.Identifier(staging)
    )
    if not load.merge:
        return insert + sql.SQL("ON CONFLICT (id) DO NOTHING")
    updates = sql.SQL(", ").join(
        sql.SQL("{} = COALESCE(EXCLUDED.{}, t.{})").format(
            sql.Identifier(c), sql.Identifier(c), sql.Identifier(c)
        )
        for c in load.columns
        if c != "id"
    )
    return insert + sql.SQL(
        "ON CONFLICT (id) DO UPDATE SET {} WHERE t.received_at IS NULL "
        "OR EXCLUDED.received_at IS NULL OR EXCLUDED.received_at >= t.received_at"
    ).format(updates)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
