"""The Autopilot Source's common-shape email event mapping, Kafka's murmur2 and the warehouse
loader's track layout and binary COPY rows, compiled (see src/lib.rs, src/warehouse.rs)."""

from collections.abc import Callable, Mapping, Sequence

class EmailEventMapper:
    def __init__(
        self,
        *,
        types: Mapping[str, tuple[str, str]],
        integrations: bytes,
        message_id_prefix: str,
        plain_id_max: int,
    ) -> None: ...
    def map(
        self, raw: bytes, learned_user_id: str | None, received: str, integration: bytes
    ) -> tuple[str, bytes] | None:
        """`(key, track bytes)` for `raw`, or None to hand it to the Python path."""
    def contact_email(self, raw: bytes) -> str | None:
        """`contact.email` of `raw` when `map` would take it but for a test delivery or a long
        id; else None to hand it to the Python path."""

def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java's `Utils.murmur2`), as an unsigned 32-bit int."""

def home_partition(key: bytes, partitions: int) -> int:
    """`(murmur2(key) & 0x7FFFFFFF) % partitions`; ValueError unless `partitions` > 0."""

def copy_rows(
    rows: Sequence[Mapping[str, object]],
    index: Mapping[str, int],
    kinds: Sequence[int],
    id_at: int,
    uuid_ts_at: int,
    uuid_ts: int,
    fit: Callable[[object, int], object],
) -> tuple[bytes, list[int]] | None:
    """`rows` fitted to the columns `index` numbers, of types `kinds` (0 timestamp, 1 integer,
    2 float, 3 boolean, 4 text), as PostgreSQL's binary COPY data, and the values of each column
    that did not fit (NULL); None to hand the table to the Python path. `fit(value, position)`
    fits what the common cases leave (None: a misfit); `uuid_ts` (microseconds since
    2000-01-01) goes to column `uuid_ts_at` (-1: none)."""

class TrackLayout:
    def __init__(
        self,
        reserved_tables: list[str],
        event_columns: list[str],
        common_fields: list[tuple[str, str]],
    ) -> None: ...
    def track(
        self, raw: bytes
    ) -> tuple[str, str, dict[str, object], dict[str, object], list[str]] | None:
        """`(id, event table, tracks row, event row, discarded)` of the track `raw`, as
        `worker.warehouse.layout.lay_out` makes them, or None to hand it to the Python path."""
    def peek(self, raw: bytes) -> tuple[str, DeferredTrack, tuple[str, ...]] | None:
        """`(id, deferred track, discarded)` of the track `raw` when `track` would take it,
        without its rows (`encode` makes them later, straight into COPY data); None to hand it
        to the Python path."""
    def encode(
        self,
        tracks: list[DeferredTrack],
        tracks_table: str,
        tables: Mapping[str, tuple[Mapping[str, int], Sequence[int], int, int]],
        uuid_ts: int,
        fit: Callable[[object, int], object],
    ) -> tuple[dict[str, tuple[bytes, int, list[int]]], list[int]] | None:
        """The rows of the deferred `tracks` as binary COPY data, by table, for the tables
        `tables` names (column -> position, kinds, id's position, uuid_ts's or -1): table ->
        (COPY data, rows, misfits by position) for each table it took, and the positions of the
        tracks with a row of a table it did not take; None when a track was
        deferred before the layout last forgot its names. `fit(value, kind)` fits what the
        common cases leave (None: a misfit)."""

class DeferredTrack:
    """A track `TrackLayout.peek` laid out, for `TrackLayout.encode`."""

    @property
    def raw(self) -> bytes:
        """The track as it was read."""
    @property
    def table(self) -> str:
        """Its event table."""
