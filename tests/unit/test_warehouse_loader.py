"""The warehouse writer against an in-memory `Database`: what it asks the database to create and
load, how it fits values, and how it meets refusals, outages and a changed schema.

The real databases are in tests/integration/test_warehouse_databases.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import pytest

from worker.errors import UnexpectedError
from worker.warehouse.columns import ColumnType
from worker.warehouse.layout import CALL_TYPES, TRACK_TYPES, Laid, lay_out
from worker.warehouse.loader import (
    Columns,
    RefusedByDatabase,
    SchemaChanged,
    TableChange,
    TableKey,
    TableLoad,
    TransientDatabaseError,
    WarehouseWriter,
)

NOW = datetime(2026, 11, 20, 12, 0)
T = ColumnType


@dataclass
class MemoryDatabase:
    """Tables in dicts; failures on demand."""

    name: str = "Memory"
    takes_copy_data: bool = False
    tables: dict[TableKey, Columns] = field(default_factory=dict)
    rows: dict[TableKey, dict[str, dict[str, object]]] = field(default_factory=dict)
    evolved: list[list[TableChange]] = field(default_factory=list)
    loads: list[list[TableLoad]] = field(default_factory=list)
    #: ids the database refuses (a load holding one fails whole)
    refuse: set[str] = field(default_factory=set)
    #: loads that fail as transient before one succeeds
    outages: int = 0
    schema_changes: int = 0
    reads: int = 0

    async def read_schema(self, schema: str) -> dict[str, Columns]:
        self.reads += 1
        return {t: dict(c) for (s, t), c in self.tables.items() if s == schema}

    async def evolve(self, changes: Sequence[TableChange]) -> dict[TableKey, Columns]:
        self.evolved.append(list(changes))
        for change in changes:
            columns = self.tables.setdefault((change.schema, change.table), {})
            for column, kind in change.columns.items():
                columns.setdefault(column, kind)
        return {(c.schema, c.table): dict(self.tables[c.schema, c.table]) for c in changes}

    async def load(self, loads: Sequence[TableLoad]) -> list[int]:
        if self.outages:
            self.outages -= 1
            raise TransientDatabaseError("connection refused")
        if self.schema_changes:
            self.schema_changes -= 1
            raise SchemaChanged("column x does not exist")
        for load in loads:
            for row in load.rows:
                if row[load.columns.index("id")] in self.refuse:
                    raise RefusedByDatabase("value too long")
        self.loads.append(list(loads))
        counts = []
        for load in loads:
            table = self.rows.setdefault((load.schema, load.table), {})
            inserted = 0
            for row in load.rows:
                values = dict(zip(load.columns, row, strict=True))
                key = str(values["id"])
                if key not in table or load.merge:
                    inserted += 1
                    old = table.get(key, {})
                    table[key] = {
                        **old,
                        **{k: v for k, v in values.items() if v is not None},
                    }
            counts.append(inserted)
        return counts

    async def close(self) -> None:
        pass


async def no_sleep(_: float) -> None:
    return None


def writer(database: MemoryDatabase) -> WarehouseWriter:
    return WarehouseWriter(database, now=lambda: NOW, sleep=no_sleep)


def track(message_id: str, event: str = "Email Opened", **properties: object) -> Laid:
    message = {
        "type": "track",
        "event": event,
        "messageId": message_id,
        "anonymousId": "a@example.com",
        "receivedAt": "2026-11-20T10:15:00.000Z",
        "properties": properties,
    }
    return lay_out(orjson.dumps(message), schema="s", types=TRACK_TYPES)


async def test_a_new_table_is_created_with_its_kinds_columns_and_typed_by_first_values() -> None:
    db = MemoryDatabase()
    outcomes = await writer(db).write(
        [track("m1", count=3, rate=None), track("m2", count=2.5, rate=0.5, day="2026-11-20")]
    )
    assert all(o.error is None for o in outcomes)
    (changes,) = db.evolved
    assert [(c.table, c.create) for c in changes] == [("email_opened", True), ("tracks", True)]
    columns = changes[0].columns
    assert list(columns)[:5] == ["id", "anonymous_id", "user_id", "event", "event_text"]
    assert columns["count"] is T.INTEGER  # the first value's type
    assert columns["rate"] is T.FLOAT  # null first: the first non-null value
    assert columns["day"] is T.TEXT
    rows = db.rows["s", "email_opened"]
    assert rows["m2"]["count"] == 2  # a fraction in an integer column: rounded
    assert rows["m1"]["received_at"] == datetime(2026, 11, 20, 10, 15)
    assert rows["m1"]["uuid_ts"] == NOW


async def test_a_known_table_only_gets_the_new_columns_and_they_type_from_the_database() -> None:
    db = MemoryDatabase()
    w = writer(db)
    await w.write([track("m1", a=1)])
    db.tables["s", "email_opened"]["b"] = T.TEXT  # a replica added b first, as text
    await w.write([track("m2", a=2, b=5)])
    # the loader did not know of b: it asked to add it as integer; the database's text holds
    (_, second) = db.evolved
    assert [(c.table, c.create, c.columns) for c in second] == [
        ("email_opened", False, {"b": T.INTEGER})
    ]
    assert db.rows["s", "email_opened"]["m2"]["b"] == "5"
    await w.write([track("m3", a=3, b=6)])
    assert len(db.evolved) == 2  # nothing new


async def test_values_that_do_not_fit_load_as_null_and_are_counted() -> None:
    db = MemoryDatabase()
    w = writer(db)
    await w.write([track("m1", count=1, flag=True)])
    outcomes = await w.write([track("m2", count="seven", flag="yes")])
    assert outcomes[0].error is None
    row = db.rows["s", "email_opened"]["m2"]
    assert "count" not in row
    assert "flag" not in row
    assert w.stats.values_nulled == {
        ("s.email_opened", "count", "integer"): 1,
        ("s.email_opened", "flag", "boolean"): 1,
    }


async def test_a_batchs_repeated_ids_load_once_the_first_copy() -> None:
    db = MemoryDatabase()
    w = writer(db)
    await w.write([track("m1", n=1), track("m1", n=2), track("m2", n=3)])
    assert db.rows["s", "email_opened"]["m1"]["n"] == 1
    assert w.stats.messages_repeated == 1
    (loads,) = db.loads
    assert [len(load.rows) for load in loads] == [2, 2]


async def test_loads_are_sorted_by_table_and_rows_by_id() -> None:
    db = MemoryDatabase()
    await writer(db).write([track("m3", "Zeta"), track("m1", "Alpha"), track("m2", "Alpha")])
    (loads,) = db.loads
    assert [load.table for load in loads] == ["alpha", "tracks", "zeta"]
    assert [row[0] for row in loads[1].rows] == ["m1", "m2", "m3"]


async def test_rows_the_database_refuses_are_dead_lettered_and_the_others_load() -> None:
    db = MemoryDatabase(refuse={"m3", "m6"})
    w = writer(db)
    outcomes = await w.write([track(f"m{i}") for i in range(8)])
    failed = [i for i, o in enumerate(outcomes) if o.error is not None]
    assert failed == [3, 6]
    assert isinstance(outcomes[3].error, UnexpectedError)
    assert "Memory refused it: value too long" in str(outcomes[3].error)
    assert sorted(db.rows["s", "tracks"]) == ["m0", "m1", "m2", "m4", "m5", "m7"]


async def test_an_outage_is_waited_out_and_nothing_is_lost() -> None:
    db = MemoryDatabase(outages=3)
    w = writer(db)
    outcomes = await w.write([track("m1"), track("m2")])
    assert all(o.error is None for o in outcomes)
    assert w.stats.retries["transient"] == 3
    assert sorted(db.rows["s", "tracks"]) == ["m1", "m2"]


async def test_a_changed_schema_is_read_again_once() -> None:
    db = MemoryDatabase()
    w = writer(db)
    await w.write([track("m1")])
    db.schema_changes = 1
    await w.write([track("m2")])
    assert db.reads == 2
    assert w.stats.retries["schema"] == 1
    db.schema_changes = 2  # again and again: the batch is refused, message by message
    outcomes = await w.write([track("m3")])
    assert isinstance(outcomes[0].error, UnexpectedError)


async def test_users_are_merged_latest_values_winning() -> None:
    def identify(message_id: str, received: str, **traits: object) -> Laid:
        message = {
            "type": "identify",
            "messageId": message_id,
            "userId": "u-1",
            "receivedAt": received,
            "traits": traits,
        }
        return lay_out(orjson.dumps(message), schema="web", types=CALL_TYPES)

    db = MemoryDatabase()
    w = writer(db)
    await w.write(
        [
            identify("i1", "2026-11-20T10:00:00Z", plan="free", name="Ada"),
            identify("i2", "2026-11-20T11:00:00Z", plan="pro"),
        ]
    )
    (loads,) = db.loads
    users = next(load for load in loads if load.table == "users")
    assert users.merge
    assert len(users.rows) == 1
    assert db.rows["web", "users"]["u-1"]["plan"] == "pro"
    assert db.rows["web", "users"]["u-1"]["name"] == "Ada"
    assert sorted(db.rows["web", "identifies"]) == ["i1", "i2"]


@pytest.mark.parametrize("size", [1, 2, 5])
async def test_every_message_gets_one_outcome_in_order(size: int) -> None:
    db = MemoryDatabase(refuse={"m0"})
    outcomes = await writer(db).write([track(f"m{i}") for i in range(size)])
    assert len(outcomes) == size
    assert outcomes[0].error is not None
    assert all(o.error is None for o in outcomes[1:])
