"""The warehouse writer: a batch of laid-out messages into one database, in one transaction.

`WarehouseWriter` is the runtime sink's `SinkWriter` for the loader; the database behind it
(`worker.warehouse.duckdb`, `worker.warehouse.postgres`) is a `Database`. One `write`:

1. drops the batch's repeated messages (same schema and id): the first copy is kept;
2. evolves the schema: a table not seen yet is created with its kind's columns, a column not
   seen yet is added with the type of the batch's first value for it (`columns.infer`); the
   database's own answer, read back afterwards, is what counts (a replica may have added the
   column first, with another type);
3. fits every value to its column's type (`columns.coerce`); what does not fit is loaded as
   NULL and counted;
4. loads every table's rows in one transaction: rows whose id is in the table already are left
   as they are (`ON CONFLICT (id) DO NOTHING`: the first copy wins; PostgreSQL copies rows
   straight in while their ids are new, see `worker.warehouse.postgres`), users are merged (a
   value of the latest identify wins, a value it lacks is kept).

For a database that takes COPY data, a track laid out with `defer` (the loader's parse does)
goes from its bytes straight to COPY data (`TrackLayout.encode`) for the tables whose columns
are known; rows are made as dicts only for the tables it leaves, and those take steps 2 and 3.

The batch's offsets are acked only after `write` returns, so after the transaction committed.
When the database refuses the batch's data (`RefusedByDatabase`), the batch is halved until
the messages that cause it are found: each is dead-lettered (`UnexpectedError`: the values were
fitted to the columns' types, so a refusal is ours to understand) and the others load. When
the database cannot be written now (`TransientDatabaseError`: unreachable, a lock, a deadlock,
disk full) the batch is tried again, with backoff, for as long as it takes: nothing is acked
meanwhile, and a rebalance gives the batch back after the sink's grace. A table or column gone
from under the loader (`SchemaChanged`) makes it read the schema again and retry once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from prometheus_client.core import CounterMetricFamily, Metric

from worker.errors import UnexpectedError
from worker.pipeline.stage import LineBudget
from worker.runtime.sink import ItemOutcome
from worker.warehouse.columns import MISFIT, ColumnType, coerce, infer, parse_timestamp
from worker.warehouse.layout import FIXED_COLUMNS, NATIVE_TRACKS, Laid, TableKind, rows_of

try:
    import autopilot_native
except ImportError:  # `make install` builds it (native/); without it the Python path fits all
    autopilot_native = None  # type: ignore[assignment]

#: The compiled encoder's module, None without it (the Python path then fits every table).
NATIVE: Final = autopilot_native

__all__ = [
    "NATIVE",
    "Database",
    "RefusedByDatabase",
    "SchemaChanged",
    "TableChange",
    "TableLoad",
    "TransientDatabaseError",
    "WarehouseStats",
    "WarehouseWriter",
]

log = logging.getLogger(__name__)

#: Columns of one table, in the database's order: name -> type.
Columns = dict[str, ColumnType]
TableKey = tuple[str, str]  # (schema, table)

#: Backoff between attempts while the database cannot be written, doubling up to the last.
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class TransientDatabaseError(Exception):
    """The database cannot be written now (unreachable, a lock, a deadlock, disk full): the
    whole batch is tried again later."""


class SchemaChanged(Exception):
    """A table or column the loader knew of is not there (dropped by someone): the loader reads
    the schema again."""


class RefusedByDatabase(Exception):
    """The database refused the batch's data (a value, a constraint someone added): the
    messages that cause it are found by halving the batch."""


@dataclass(frozen=True, slots=True)
class TableChange:
    """A table to create (`create`: with `columns`, its kind's columns among them) or columns
    to add to it."""

    schema: str
    table: str
    kind: TableKind
    create: bool
    columns: Columns


@dataclass(frozen=True, slots=True)
class TableLoad:
    """One table's rows of a batch: a tuple per row in `columns`' order, sorted by id, one row
    per id; `merge` for users (update the row of an id already there).

    For a database that takes them (`Database.takes_copy_data`) the rows may come as
    PostgreSQL's binary COPY data instead (`copy_data`, signature to trailer, the same rows in
    the same order, encoded as psycopg encodes the tuples): `rows` is then empty and `copied`
    says how many there are."""

    schema: str
    table: str
    columns: tuple[str, ...]
    types: tuple[ColumnType, ...]
    rows: list[tuple[object, ...]]
    merge: bool = False
    copy_data: bytes | None = None
    copied: int = 0

    @property
    def size(self) -> int:
        """How many rows the load holds, in either form."""
        return len(self.rows) if self.copy_data is None else self.copied


class Database(Protocol):
    """What the writer asks of DuckDB or PostgreSQL. Failures are the three exceptions above."""

    #: "DuckDB" or "PostgreSQL", for log lines and dead letters
    name: str
    #: whether `load` takes a `TableLoad`'s rows as binary COPY data (`copy_data`), which the
    #: writer then makes, when it can, instead of the tuples
    takes_copy_data: bool

    async def read_schema(self, schema: str) -> dict[str, Columns]:
        """Every table of `schema` and its columns (none when the schema does not exist)."""

    async def evolve(self, changes: Sequence[TableChange]) -> dict[TableKey, Columns]:
        """Create the tables and add the columns `changes` name (each only if it is not there:
        a replica may do the same at the same time); the changed tables' columns as they are
        now."""

    async def load(self, loads: Sequence[TableLoad]) -> list[int]:
        """Every table's rows in one transaction; how many rows each load inserted (or, when
        merging, inserted or updated)."""

    async def close(self) -> None: ...


@dataclass
class WarehouseStats:
    """What the loader counts; `families` exports it to /metrics."""

    rows: Counter[tuple[str, str]] = field(default_factory=Counter)  # (table, outcome)
    values_nulled: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    properties_discarded: int = 0
    messages_repeated: int = 0
    tables_created: int = 0
    columns_added: int = 0
    transactions: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # by reason

    def families(self) -> Iterator[Metric]:
        prefix = "autopilot_worker_warehouse"
        rows = CounterMetricFamily(
            f"{prefix}_rows",
            "Rows written by the warehouse loader, by table (schema.table) and outcome: "
            "inserted (or merged, users), or duplicate (the id was loaded already).",
            labels=("table", "outcome"),
        )
        for (table, outcome), count in sorted(self.rows.items()):
            rows.add_metric([table, outcome], count)
        yield rows
        nulled = CounterMetricFamily(
            f"{prefix}_values_nulled",
            "Values that did not fit their column's type and were loaded as NULL.",
            labels=("table", "column", "type"),
        )
        for (table, column, kind), count in sorted(self.values_nulled.items()):
            nulled.add_metric([table, column, kind], count)
        yield nulled
        for name, value, text in (
            (
                "properties_discarded",
                self.properties_discarded,
                "Properties not loaded because "
                "they are named like a reserved column (Segment discards them).",
            ),
            (
                "messages_repeated",
                self.messages_repeated,
                "Messages whose id came again in the same batch: the first copy was loaded.",
            ),
            ("tables_created", self.tables_created, "Tables the loader asked to create."),
            ("columns_added", self.columns_added, "Columns the loader asked to add."),
            ("transactions", self.transactions, "Load transactions committed."),
        ):
            family = CounterMetricFamily(f"{prefix}_{name}", text)
            family.add_metric([], value)
            yield family
        retries = CounterMetricFamily(
            f"{prefix}_retries",
            "Loads tried again: the database could not be written (transient) or its schema "
            "changed under the loader (schema).",
            labels=("reason",),
        )
        for reason in ("transient", "schema"):
            retries.add_metric([reason], self.retries[reason])
        yield retries


_LOADED = ItemOutcome()


@dataclass
class _Prepared:
    loads: list[TableLoad]
    nulled: Counter[tuple[str, str, str]]
    discarded: int


class WarehouseWriter:
    """The loader's `SinkWriter` (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        stats: WarehouseStats | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC).replace(tzinfo=None),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.database = database
        self.stats = stats if stats is not None else WarehouseStats()
        self._now = now
        self._sleep = sleep
        #: what the loader knows of the database: every table of every schema read so far
        self._tables: dict[TableKey, Columns] = {}
        self._schemas_read: set[str] = set()
        self._retry_lines = LineBudget(1)
        self._nulled_lines = LineBudget(10)
        #: what the compiled encoder is told of each table, for the table's columns as known
        self._specs: dict[TableKey, tuple[Columns, _Spec | None]] = {}

    async def close(self) -> None:
        await self.database.close()

    async def write(self, items: Sequence[Laid]) -> list[ItemOutcome]:
        outcomes = [_LOADED] * len(items)
        await self._write_part(items, list(range(len(items))), outcomes)
        return outcomes

    async def _write_part(
        self, items: Sequence[Laid], indices: list[int], outcomes: list[ItemOutcome]
    ) -> None:
        try:
            await self._until_written([items[i] for i in indices])
        except RefusedByDatabase as refused:
            if len(indices) == 1:
                message = f"{self.database.name} refused it: {refused}"
                outcomes[indices[0]] = ItemOutcome(error=UnexpectedError(message[:2000]))
                return
            middle = len(indices) // 2
            await self._write_part(items, indices[:middle], outcomes)
            await self._write_part(items, indices[middle:], outcomes)

    async def _until_written(self, batch: list[Laid]) -> None:
        """One transaction for `batch`, tried until the database takes it or refuses it."""
        attempt = 0
        schema_retried = False
        while True:
            try:
                await self._write_once(batch)
            except TransientDatabaseError as exc:
                self.stats.retries["transient"] += 1
                wait = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                attempt += 1
                if self._retry_lines.take() is not None:
                    log.warning(
                        "warehouse: %s cannot be written (attempt %d), trying again in %g s: %s",
                        self.database.name,
                        attempt,
                        wait,
                        exc,
                    )
                await self._sleep(wait)
            except SchemaChanged as exc:
                self.stats.retries["schema"] += 1
                self._tables.clear()
                self._schemas_read.clear()
                if schema_retried:
                    raise RefusedByDatabase(f"the schema changed twice in a row: {exc}") from exc
                schema_retried = True
                log.warning("warehouse: %s: reading the schema again: %s", self.database.name, exc)
            else:
                return

    async def _write_once(self, batch: list[Laid]) -> None:
        first, eager, deferred, discarded = _split(batch)
        repeated = len(batch) - len(first)
        schemas = deferred.keys() | {laid.schema for laid in eager}
        for schema in sorted(schemas - self._schemas_read):
            for table, columns in (await self.database.read_schema(schema)).items():
                self._tables[schema, table] = columns
            self._schemas_read.add(schema)
        now = self._now()
        nulled: Counter[tuple[str, str, str]] = Counter()
        copy_data = self.database.takes_copy_data and autopilot_native is not None
        # the common case first: every row's table and columns known, so the compiled encoder
        # takes the table (it declines a column it is not given); only the rest is checked.
        # Deferred tracks (`lay_out(defer=True)`) go from their bytes straight to COPY data;
        # their rows are made only for the tables it leaves.
        encoded, left = self._encoded_tracks(eager, deferred, now, nulled, copy_data=copy_data)
        # the batch's order: a new column's type is its first value's
        left_ids = {id(laid) for laid in left}
        grouped = _grouped(
            [laid for laid in first if laid.deferred is None or id(laid) in left_ids], encoded
        )
        if copy_data:
            encoded.update(self._encoded(grouped, now, nulled))
        changes = self._changes({k: v for k, v in grouped.items() if k not in encoded})
        if changes:
            self._tables.update(await self.database.evolve(changes))
            self.stats.tables_created += sum(1 for c in changes if c.create)
            self.stats.columns_added += sum(len(c.columns) for c in changes if not c.create)
        changed = {(c.schema, c.table) for c in changes}
        loads = [
            encoded.get(key)
            or self._fitted(key, grouped[key], now, nulled, copy_data=copy_data and key in changed)
            for key in sorted(encoded.keys() | grouped.keys())
        ]
        counts = await self.database.load(loads)
        # counted only once the transaction committed
        stats = self.stats
        stats.transactions += 1
        stats.messages_repeated += repeated
        stats.properties_discarded += discarded
        for load, inserted in zip(loads, counts, strict=True):
            name = f"{load.schema}.{load.table}"
            stats.rows[name, "inserted"] += inserted
            stats.rows[name, "duplicate"] += load.size - inserted
        if nulled:
            stats.values_nulled.update(nulled)
            for (table, column, kind), count in sorted(nulled.items()):
                if self._nulled_lines.take() is not None:
                    log.warning(
                        "warehouse: %d value(s) of %s.%s did not fit its type %s: loaded as NULL",
                        count,
                        table,
                        column,
                        kind,
                    )

    def _changes(self, grouped: Mapping[TableKey, _TableRows]) -> list[TableChange]:
        """The tables and columns the rows of `grouped` need that the loader does not know of,
        typed by the batch's first value for each."""
        result: list[TableChange] = []
        for (schema, table), (kind, rows) in sorted(grouped.items()):
            known = self._tables.get((schema, table))
            columns: Columns = dict(FIXED_COLUMNS[kind]) if known is None else {}
            for values in rows:
                if known is not None and values.keys() <= known.keys():
                    continue  # the common case: nothing new
                for column, value in values.items():
                    if column not in columns and (known is None or column not in known):
                        columns[column] = infer(value)
            if known is None or columns:
                result.append(TableChange(schema, table, kind, known is None, columns))
        return result

    def _encoded(
        self,
        grouped: Mapping[TableKey, _TableRows],
        now: datetime,
        nulled: Counter[tuple[str, str, str]],
    ) -> dict[TableKey, TableLoad]:
        """The loads the compiled encoder makes of the tables it takes as they are known."""
        encoded: dict[TableKey, TableLoad] = {}
        for key, (_, rows) in grouped.items():
            columns = self._tables.get(key)
            if columns is not None:
                fit = _Fitter(columns, now, f"{key[0]}.{key[1]}", nulled)
                merge = key[1] == _USERS
                load = fit.copy_data(*key, _merged_users(rows) if merge else rows, merge=merge)
                if load is not None:
                    encoded[key] = load
        return encoded

    def _encoded_tracks(
        self,
        eager: list[Laid],
        deferred: Mapping[str, list[Laid]],
        now: datetime,
        nulled: Counter[tuple[str, str, str]],
        *,
        copy_data: bool,
    ) -> tuple[dict[TableKey, TableLoad], list[Laid]]:
        """The loads the compiled encoder makes straight from the `deferred` tracks (by
        schema), for the known tables none of the `eager` messages has rows for; and the
        deferred tracks with rows it left (their rows are to be made)."""
        if not deferred:
            return {}, []
        if NATIVE_TRACKS is None or not copy_data:
            return {}, [laid for laids in deferred.values() for laid in laids]
        others = {(laid.schema, row.table) for laid in eager for row in laid.rows}
        encoded: dict[TableKey, TableLoad] = {}
        left: list[Laid] = []
        uuid_ts = _pg_micros(now)
        for schema, laids in deferred.items():
            specs = {
                table: spec
                for (at, table), columns in self._tables.items()
                if at == schema and table != _USERS and (at, table) not in others
                for spec in (self._spec((at, table), columns),)
                if spec is not None
            }
            tracks = [laid.deferred for laid in laids if laid.deferred is not None]
            answer = NATIVE_TRACKS.encode(tracks, _TRACKS, specs, uuid_ts, _fit_kind)
            if answer is None:
                left.extend(laids)
                continue
            tables, positions = answer
            left.extend(laids[at] for at in positions)
            for table, (data, count, misfits) in tables.items():
                columns = self._tables[schema, table]
                names, types = tuple(columns), tuple(columns.values())
                for at, misfit in enumerate(misfits):
                    if misfit:
                        nulled[f"{schema}.{table}", names[at], types[at].value] += misfit
                encoded[schema, table] = TableLoad(
                    schema, table, names, types, [], False, data, count
                )
        return encoded, left

    def _spec(self, key: TableKey, columns: Columns) -> _Spec | None:
        """What the compiled encoder is told of a table of `columns` (None for an id column
        that is not text); made once per table's columns."""
        cached = self._specs.get(key)
        if cached is not None and cached[0] is columns:
            return cached[1]
        names = tuple(columns)
        index = {name: at for at, name in enumerate(names)}
        kinds = [_KIND_CODES[kind] for kind in columns.values()]
        id_at = index["id"]
        spec: _Spec | None = (index, kinds, id_at, index.get("uuid_ts", -1))
        if columns["id"] is not ColumnType.TEXT:
            spec = None  # rows are sorted by their id as sent, which is its text only here
        self._specs[key] = (columns, spec)
        return spec

    def _fitted(
        self,
        key: TableKey,
        table_rows: _TableRows,
        now: datetime,
        nulled: Counter[tuple[str, str, str]],
        *,
        copy_data: bool,
    ) -> TableLoad:
        """One table's rows fitted to its columns, sorted by id; as binary COPY data where
        `copy_data` asks for it and the compiled encoder takes the table."""
        rows = table_rows[1]
        schema, table = key
        fit = _Fitter(self._tables[key], now, f"{schema}.{table}", nulled)
        merge = table == _USERS
        values = _merged_users(rows) if merge else rows
        if copy_data:
            load = fit.copy_data(schema, table, values, merge=merge)
            if load is not None:
                return load
        fitted = [fit(v) for v in values]
        fitted.sort(key=fit.id_of)
        return TableLoad(schema, table, fit.names, fit.types, fitted, merge)

    def _prepare(self, batch: list[Laid], *, copy_data: bool = False) -> _Prepared:
        """Every table's rows of `batch` (whose tables and columns are known), fitted to its
        columns, sorted by table and by id; as binary COPY data where `copy_data` asks for it
        and the compiled encoder takes the table."""
        _, _, _, discarded = _split(batch)
        grouped = _grouped(batch, _NONE)
        now = self._now()
        nulled: Counter[tuple[str, str, str]] = Counter()
        native = copy_data and autopilot_native is not None
        loads = [
            self._fitted(key, rows, now, nulled, copy_data=native)
            for key, rows in sorted(grouped.items())
        ]
        return _Prepared(loads, nulled, discarded)


_USERS: Final = TableKind.USERS.value  # merged: a user's rows of a batch become one
_TRACKS: Final = TableKind.TRACKS.value
_NONE: Final[Mapping[TableKey, object]] = {}

#: What the compiled encoder is told of a table: column -> position, kinds, id's position,
#: uuid_ts's (-1: none).
_Spec = tuple[dict[str, int], list[int], int, int]

#: One table's rows of a batch: its kind and each row's values, in the batch's order.
_TableRows = tuple[TableKind, list[Mapping[str, object]]]


def _split(batch: list[Laid]) -> tuple[list[Laid], list[Laid], dict[str, list[Laid]], int]:
    """The first copy of each message of `batch` (by schema and id), in order; of those, the
    ones laid out at once and the deferred tracks by schema; how many properties they
    discarded."""
    seen: set[tuple[str, str]] = set()
    first: list[Laid] = []
    eager: list[Laid] = []
    deferred: dict[str, list[Laid]] = {}
    discarded = 0
    for laid in batch:
        key = (laid.schema, laid.id)
        if key in seen:
            continue
        seen.add(key)
        first.append(laid)
        if laid.discarded:
            discarded += len(laid.discarded)
        if laid.deferred is None:
            eager.append(laid)
        else:
            schema_tracks = deferred.get(laid.schema)
            if schema_tracks is None:
                schema_tracks = deferred[laid.schema] = []
            schema_tracks.append(laid)
    return first, eager, deferred, discarded


def _grouped(batch: list[Laid], encoded: Mapping[TableKey, object]) -> dict[TableKey, _TableRows]:
    """The rows of `batch` by table, but those of tables `encoded` already (a deferred
    track's rows are made now)."""
    grouped: dict[TableKey, _TableRows] = {}
    for laid in batch:
        schema = laid.schema
        for row in rows_of(laid):
            key = (schema, row.table)
            if key in encoded:
                continue
            table_rows = grouped.get(key)
            if table_rows is None:
                table_rows = grouped[key] = (row.kind, [])
            table_rows[1].append(row.values)
    return grouped


def _merged_users(rows: list[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """One row per user id, merged in the order the identifies were received: later values
    over earlier ones (a value a later identify lacks is kept), the latest `received_at`."""

    def received(values: Mapping[str, object]) -> datetime:
        at = values.get("received_at")
        return (parse_timestamp(at) if isinstance(at, str) else None) or datetime.min

    merged: dict[object, dict[str, object]] = {}
    for values in sorted(rows, key=received):
        user = merged.get(values["id"])
        if user is None:
            merged[values["id"]] = dict(values)
        else:
            user.update(values)
    return list(merged.values())


class _Fitter:
    """Fits rows of one table to its columns: a tuple per row in the columns' order, NULL
    where a row has no value or its value does not fit (counted in `nulled`).

    Rows of one producer come in few shapes (the same keys in the same order), so the column
    position and type of each key are looked up once per shape."""

    __slots__ = ("id_at", "index", "label", "names", "nulled", "plans", "template", "types")

    def __init__(
        self, columns: Columns, now: datetime, label: str, nulled: Counter[tuple[str, str, str]]
    ) -> None:
        self.names = tuple(columns)
        self.types = tuple(columns.values())
        self.index = {name: i for i, name in enumerate(self.names)}
        self.id_at = self.index["id"]
        template: list[object] = [None] * len(self.names)
        if "uuid_ts" in self.index:
            template[self.index["uuid_ts"]] = now
        self.template = template
        self.label = label
        self.nulled = nulled
        self.plans: dict[tuple[str, ...], list[tuple[int, ColumnType]]] = {}

    def __call__(self, values: Mapping[str, object]) -> tuple[object, ...]:
        shape = tuple(values)
        plan = self.plans.get(shape)
        if plan is None:
            plan = self.plans[shape] = [(self.index[n], self.types[self.index[n]]) for n in shape]
        out = self.template.copy()
        text, timestamp = ColumnType.TEXT, ColumnType.TIMESTAMP
        for (at, kind), value in zip(plan, values.values(), strict=True):
            if type(value) is str:  # the common cases, without the call
                if kind is text and "\x00" not in value:
                    out[at] = value
                    continue
                if kind is timestamp:
                    parsed = parse_timestamp(value)
                    if parsed is not None:
                        out[at] = parsed
                        continue
            fitted = coerce(value, kind)
            if fitted is MISFIT:
                self.nulled[self.label, self.names[at], kind.value] += 1
                fitted = None
            out[at] = fitted
        return tuple(out)

    def id_of(self, row: tuple[object, ...]) -> str:
        return str(row[self.id_at])

    def fit_one(self, value: object, at: int) -> object:
        """`value` fitted to column `at`, None when it does not fit (the compiled encoder's
        answer for what it leaves to Python)."""
        fitted = coerce(value, self.types[at])
        return None if fitted is MISFIT else fitted

    def copy_data(
        self, schema: str, table: str, rows: list[Mapping[str, object]], *, merge: bool
    ) -> TableLoad | None:
        """The load of `rows` as binary COPY data, made by the compiled encoder
        (`native/src/warehouse.rs`: the same rows as `__call__` makes, sorted by id, encoded
        as psycopg encodes them); None when it declines the table."""
        assert autopilot_native is not None
        if self.types[self.id_at] is not ColumnType.TEXT:
            return None  # rows are sorted by their id as sent, which is its text only here
        uuid_ts = self.template[self.index["uuid_ts"]] if "uuid_ts" in self.index else None
        ordered = sorted(rows, key=_id_text)
        encoded = autopilot_native.copy_rows(
            ordered,
            self.index,
            [_KIND_CODES[kind] for kind in self.types],
            self.id_at,
            self.index.get("uuid_ts", -1),
            0 if uuid_ts is None else _pg_micros(uuid_ts),
            self.fit_one,
        )
        if encoded is None:
            return None
        data, misfits = encoded
        for at, count in enumerate(misfits):
            if count:
                self.nulled[self.label, self.names[at], self.types[at].value] += count
        return TableLoad(schema, table, self.names, self.types, [], merge, data, len(ordered))


#: The column types as the compiled encoder numbers them (`native/src/warehouse.rs`).
_KIND_CODES: Final = {
    ColumnType.TIMESTAMP: 0,
    ColumnType.INTEGER: 1,
    ColumnType.FLOAT: 2,
    ColumnType.BOOLEAN: 3,
    ColumnType.TEXT: 4,
}
_PG_EPOCH: Final = datetime(2000, 1, 1)  # naive UTC, as the loader's times


def _pg_micros(at: object) -> int:
    assert isinstance(at, datetime)
    return (at - _PG_EPOCH) // timedelta(microseconds=1)


def _id_text(values: Mapping[str, object]) -> str:
    """The sort key of a row before fitting: its id (a string; the encoder declines any
    other, so the order is `_Fitter.id_of`'s)."""
    return str(values["id"])


_KINDS_BY_CODE: Final = {code: kind for kind, code in _KIND_CODES.items()}


def _fit_kind(value: object, code: int) -> object:
    """`value` fitted to the column type the compiled encoder numbers `code`, None when it
    does not fit (what it asks of Python for the values it leaves)."""
    fitted = coerce(value, _KINDS_BY_CODE[code])
    return None if fitted is MISFIT else fitted
