"""Deferred tracks load exactly what tracks laid out at once load.

For PostgreSQL the loader's parse checks a track with the compiled layout and keeps its bytes
(`lay_out(defer=True)`); the writer then has the compiled encoder (`TrackLayout.encode`) make
COPY data straight from the bytes, for the tables it knows, and makes the rows of the others
(`rows_of`). Whatever it takes, the writer must hand the database the same loads, byte for
byte, and count the same, as with every track laid out at once (whose rows go through
`copy_rows`, held to psycopg's own encoding by test_warehouse_fast_path.py). Checked on the
golden cases, the benchmark's tracks and mutations of them, in batches that create tables and
columns and batches that meet known ones, mixed with calls of other types.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import pytest

from tests.unit.test_warehouse_fast_path import _bench_tracks, _golden_inputs, _mutations
from worker.errors import WorkerError
from worker.warehouse import layout, loader
from worker.warehouse.columns import ColumnType
from worker.warehouse.layout import CALL_TYPES, TRACK_TYPES, Laid, lay_out
from worker.warehouse.loader import Columns, TableChange, TableKey, TableLoad, WarehouseWriter

pytestmark = pytest.mark.skipif(
    layout.NATIVE_TRACKS is None, reason="the native module is built by `make install`"
)

NOW = datetime(2026, 11, 20, 12, 0, 0, 123456)


class _Recording:
    """A database that takes COPY data and records each load (its tables evolve as asked)."""

    name = "recording"
    takes_copy_data = True

    def __init__(self) -> None:
        self.tables: dict[TableKey, Columns] = {}
        self.loads: list[list[TableLoad]] = []

    async def read_schema(self, schema: str) -> dict[str, Columns]:
        return {t: dict(c) for (s, t), c in self.tables.items() if s == schema}

    async def evolve(self, changes: Sequence[TableChange]) -> dict[TableKey, Columns]:
        for change in changes:
            columns = self.tables.setdefault((change.schema, change.table), {})
            for name, kind in change.columns.items():
                columns.setdefault(name, kind)
        return {(c.schema, c.table): dict(self.tables[c.schema, c.table]) for c in changes}

    async def load(self, loads: Sequence[TableLoad]) -> list[int]:
        self.loads.append(list(loads))
        return [load.size for load in loads]

    async def close(self) -> None:
        pass


def _laid(raws: Sequence[bytes], *, defer: bool) -> list[Laid]:
    out = []
    for raw in raws:
        types = CALL_TYPES if b'"identify"' in raw else TRACK_TYPES
        try:
            out.append(lay_out(raw, schema="s", types=types, defer=defer))
        except WorkerError:
            continue  # dead-lettered by the sink, either way
    return out


def _load_all(batches: Sequence[Sequence[bytes]], *, defer: bool) -> tuple[Any, ...]:
    database = _Recording()
    writer = WarehouseWriter(database, now=lambda: NOW)

    async def run() -> None:
        for batch in batches:
            await writer.write(_laid(batch, defer=defer))

    asyncio.run(run())
    loads = [
        [
            (
                load.schema,
                load.table,
                load.columns,
                load.types,
                load.merge,
                load.size,
                load.copy_data,
                load.rows,
            )
            for load in batch
        ]
        for batch in database.loads
    ]
    stats = writer.stats
    return (
        loads,
        sorted(database.tables.items()),
        dict(stats.rows),
        dict(stats.values_nulled),
        stats.properties_discarded,
        stats.messages_repeated,
    )


def _again(raws: Sequence[bytes], suffix: str) -> list[bytes]:
    """`raws` with new message ids (the same rows in tables that exist by then)."""
    out = []
    for raw in raws:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out.append(raw)
            continue
        if isinstance(message, dict) and isinstance(message.get("messageId"), str):
            message["messageId"] += suffix
        out.append(orjson.dumps(message))
    return out


def _retyped(raws: Sequence[bytes], rng: random.Random) -> list[bytes]:
    """`raws` with new ids and values of other simple types than their columns' (which the
    compiled layout takes): misfits, loaded as NULL, or values fitted by the Python `fit`."""
    values: list[object] = [7, -1, 2.5, True, False, "text", "12", "2026-11-20", "1.5e3"]
    out = []
    for i, raw in enumerate(raws):
        message = orjson.loads(raw)
        message["messageId"] += f"-r{i}"
        properties = dict(message.get("properties") or {})
        for name in list(properties)[:3]:
            properties[name] = rng.choice(values)
        message["properties"] = properties
        message["timestamp"] = rng.choice(["soon", "2026-11-20T10:00:00Z", "2026-11-20"])
        out.append(orjson.dumps(message))
    return out


def _identify(i: int) -> bytes:
    return orjson.dumps(
        {"type": "identify", "messageId": f"i-{i}", "userId": f"u{i}", "traits": {"plan": "p"}}
    )


def _count_rows_made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list counting the deferred tracks whose rows the writer makes."""
    made = [0]

    def counted(laid: Laid) -> Any:
        made[0] += laid.deferred is not None
        return layout.rows_of(laid)

    monkeypatch.setattr(loader, "rows_of", counted)
    return made


def test_the_same_loads_as_tracks_laid_out_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    bench = _bench_tracks()
    golden = _golden_inputs()
    mutated = [
        raw
        for track in [orjson.loads(r) for r in bench[:6]]
        for raw in rng.sample(_mutations(track, rng), 40)
    ]
    batches = [
        bench[:100],  # creates the tables
        _again(bench[:100], "-b"),  # known tables: encoded from the bytes
        bench[100:300] + golden,
        _again(golden + bench[100:200], "-c") + bench[:5],  # repeats within and across
        mutated,  # new columns, misfits, declined tracks
        _again(mutated, "-d") + [_identify(i) for i in range(5)],
        [*_again(bench[300:], "-e"), _identify(1), bench[300]],
        _retyped(bench[:200], rng),  # values that do not fit their known columns
    ]
    made = _count_rows_made(monkeypatch)
    deferred = _load_all(batches, defer=True)
    assert deferred == _load_all(batches, defer=False)
    assert deferred[2]  # rows were loaded
    assert deferred[3]  # values that did not fit were counted
    # the deferred path was taken: most tracks' rows were never made
    assert 0 < made[0] < sum(len(b) for b in batches) // 3


def test_known_tables_take_no_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench_tracks()
    made = _count_rows_made(monkeypatch)
    database = _Recording()
    writer = WarehouseWriter(database, now=lambda: NOW)

    async def run() -> None:
        await writer.write(_laid(bench, defer=True))
        assert made == [len(bench)]  # new tables: every track's rows were made
        await writer.write(_laid(_again(bench, "-2"), defer=True))
        assert made == [len(bench)]  # known tables: none

    asyncio.run(run())
    last = database.loads[-1]
    assert all(load.copy_data for load in last)
    assert sum(load.size for load in last) == 2 * len(bench)


def test_a_new_column_takes_the_type_of_the_batch_s_first_value() -> None:
    """A deferred track before a track the compiled layout declines (an array): the column
    both meet is typed by the first one's value, as when every row is made at once."""

    def event(message_id: str, properties: dict[str, object]) -> bytes:
        return orjson.dumps(
            {"type": "track", "event": "Typed", "messageId": message_id, "properties": properties}
        )

    batch = [event("a", {"x": 1}), event("b", {"x": "one", "list": [1, 2]})]
    laid = _laid(batch, defer=True)
    assert [item.deferred is not None for item in laid] == [True, False]
    deferred = _load_all([batch], defer=True)
    assert deferred == _load_all([batch], defer=False)
    assert dict(deferred[1])["s", "typed"]["x"] is ColumnType.INTEGER
