"""`ChangelogTable`: rows read where faust's store keeps them, and the record of each change."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import orjson

from worker.runtime.tables import ChangelogTable


class CountingStore(MutableMapping[bytes, str]):
    """A store like faust's in-memory one: its rows in a plain dict, `data`; counts the calls
    of its own mapping methods."""

    def __init__(self) -> None:
        self.data: dict[bytes, str] = {}
        self.calls = 0

    def __getitem__(self, key: bytes) -> str:
        self.calls += 1
        return self.data[key]

    def __setitem__(self, key: bytes, value: str) -> None:
        self.calls += 1
        self.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        self.calls += 1
        del self.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_rows_are_read_and_written_in_the_stores_own_dict() -> None:
    store = CountingStore()
    table: ChangelogTable[str] = ChangelogTable(lambda: store, "users-changelog")
    assert table.get(b"kay@example.com") is None
    record = table.set(b"kay@example.com", "u-1")
    assert table.get(b"kay@example.com") == "u-1"
    assert store.data == {b"kay@example.com": "u-1"}
    assert store.calls == 0
    assert (record.topic, record.key, orjson.loads(record.value)) == (
        "users-changelog",
        b"kay@example.com",
        "u-1",
    )


def test_a_store_without_a_dict_is_used_through_its_mapping() -> None:
    class Opaque(CountingStore):
        def __init__(self) -> None:
            super().__init__()
            self.rows = self.data
            del self.data

        def __getitem__(self, key: bytes) -> str:
            self.calls += 1
            return self.rows[key]

        def __setitem__(self, key: bytes, value: str) -> None:
            self.calls += 1
            self.rows[key] = value

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.rows)

        def __len__(self) -> int:
            return len(self.rows)

    store = Opaque()
    table: ChangelogTable[str] = ChangelogTable(lambda: store, "users-changelog")
    table.set(b"kay@example.com", "u-1")
    assert table.get(b"kay@example.com") == "u-1"
    assert table.get(b"nobody@example.com") is None
    assert store.calls >= 2
