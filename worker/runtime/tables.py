"""Tables whose changelog records travel with the batch's outputs.

faust sends a table's changelog record on its own (`send_soon`) after an update, and does not
wait for it before committing the input's offset: a crash in between forgets the update (a
learned identity, an audience membership) while the input that taught it is never read again.
`ChangelogTable.set` updates the local rows and returns the changelog record instead; the agent
produces it with the batch's outputs, acknowledged (acks=all) before the batch is acked. faust
still owns the table: it assigns its partitions and rebuilds the rows from the changelog at
start-up, reading the records written here (raw key bytes, JSON values, the key's partition).

Every input reads a table or two, so the rows are reached at their cheapest: faust's in-memory
store keeps them in one plain dict (`Store.data`) for its whole life (recovery and clearing
change it in place), and a lookup there costs a dict lookup, where the store's own mapping
methods cost two Python calls.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, Generic, TypeVar

import orjson
from faust.types import TableT

from worker.pipeline.records import OutboundRecord

__all__ = ["ChangelogTable"]

V = TypeVar("V")


class ChangelogTable(Generic[V]):
    """Reads and writes one faust table's rows in place; `set` gives the changelog record."""

    def __init__(self, rows: Callable[[], MutableMapping[bytes, V]], changelog_topic: str) -> None:
        self._rows_of = rows
        #: the rows, found at first use (a table's store exists once the app runs)
        self._rows: MutableMapping[bytes, V] | None = None
        #: the topic `set`'s records go to; its partition p is the table's partition p
        self.changelog_topic = changelog_topic

    @classmethod
    def of(cls, table: TableT[Any, Any]) -> ChangelogTable[V]:
        """The rows of `table` (its store, read when used: it exists once the app runs)."""
        return cls(lambda: table.data, table.changelog_topic.get_topic_name())

    def get(self, key: bytes) -> V | None:
        rows = self._rows
        if rows is None:
            rows = self._find_rows()
        if type(rows) is dict:
            return rows.get(key)
        # not `rows.get`: faust's store gets it from `Mapping`, which raises KeyError on a miss
        return rows[key] if key in rows else None  # noqa: SIM401

    def set(self, key: bytes, value: V) -> OutboundRecord:
        """Store `value` under `key`; the record that makes it durable, to send with the batch."""
        rows = self._rows
        if rows is None:
            rows = self._find_rows()
        rows[key] = value
        return OutboundRecord(self.changelog_topic, key, orjson.dumps(value), [])

    def _find_rows(self) -> MutableMapping[bytes, V]:
        """The store's own dict when it keeps its rows in one (faust's in-memory store), else
        the store."""
        store = self._rows_of()
        inner = getattr(store, "data", None)
        rows: MutableMapping[bytes, V] = inner if type(inner) is dict else store
        self._rows = rows
        return rows
