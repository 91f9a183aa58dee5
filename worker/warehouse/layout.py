"""Segment's warehouse layout: one Segment message in, the table rows it becomes out.

Pure (no database, no Kafka), the layout of Segment Warehouses (segment-docs,
connections/storage/warehouses/schema.md):

- a `track` is one row in `<schema>.tracks` (the columns common to every event) and one row in
  `<schema>.<event>` (the common columns plus its properties), both with the message's id;
- with the Segment calls topic (`WAREHOUSE_CALLS_SCHEMA`): an `identify` is a row in
  `identifies` and, when it has a userId, merged into that user's row in `users`; a `page` a row
  in `pages`, a `screen` in `screens`, a `group` in `groups`, an `alias` in `aliases`;
- the common columns: `id` (the messageId), `anonymous_id`, `user_id`, `received_at`, `sent_at`,
  `timestamp`, `original_timestamp`, `uuid_ts` (when loaded; the loader sets it), `context_*`
  (the context flattened with `_`); tracks add `event` (the snake_case name, `email_opened`)
  and `event_text` (the name as sent, `Email Opened`);
- properties (traits for identifies, users and groups) are columns without a prefix;
- names are snake_case by go-snakecase's rules (`Email Marked as Spam` becomes
  `email_marked_as_spam`, `userAgent` `user_agent`); nested objects are flattened with `_`;
  arrays are stored as JSON text; a null creates no column ("Segment creates and populates a
  column only when it receives a non-null value");
- a property named like a reserved column (a common column, or a context column of the same
  message) is discarded: it never overwrites the reserved one;
- names stop at 63 bytes (PostgreSQL's limit, applied to DuckDB too, so both hold the same
  tables); they are ASCII after snake_case, so 63 characters.

What cannot be laid out raises a `WorkerError` (the message's dead letter): bytes that are not
a JSON object, a message of a type the topic does not carry, no messageId, no event name, an
event whose table would be one of Segment's own tables, a name without a letter or digit, and
two names of one message that become the same column (after snake_case or truncation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from enum import StrEnum
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Final, NamedTuple

import orjson

from worker.errors import DecodeError, UnsupportedType, ValidationError
from worker.warehouse.columns import ColumnType

try:
    import autopilot_native
except ImportError:  # `make install` builds it (native/); without it the Python path lays out all
    autopilot_native = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from autopilot_native import DeferredTrack

__all__ = [
    "CALL_TYPES",
    "FIXED_COLUMNS",
    "MAX_NAME_BYTES",
    "NATIVE_TRACKS",
    "RESERVED_TABLES",
    "TRACK_TYPES",
    "Laid",
    "Row",
    "TableKind",
    "column_name",
    "lay_out",
    "lay_out_message",
    "lay_out_python",
    "layout_of",
    "rows_of",
    "snake_case",
    "table_name",
]

#: PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
MAX_NAME_BYTES: Final = 63

#: The message types the tracks topic carries, and those the Segment calls topic does.
TRACK_TYPES: Final = frozenset({"track"})
CALL_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})


class TableKind(StrEnum):
    """Which of Segment's tables a row goes to (an event table is named after its event)."""

    TRACKS = "tracks"
    EVENT = "event"
    IDENTIFIES = "identifies"
    USERS = "users"
    PAGES = "pages"
    SCREENS = "screens"
    GROUPS = "groups"
    ALIASES = "aliases"


_TRACKS: Final = TableKind.TRACKS.value

#: Tables Segment names itself: no event table may take one of these names.
RESERVED_TABLES: Final = frozenset(
    {kind.value for kind in TableKind if kind is not TableKind.EVENT} | {"accounts"}
)

_T, _TS = ColumnType.TEXT, ColumnType.TIMESTAMP
_IDS: Final = {"id": _T, "anonymous_id": _T, "user_id": _T}
_TIMES: Final = {
    "received_at": _TS,
    "sent_at": _TS,
    "timestamp": _TS,
    "original_timestamp": _TS,
    "uuid_ts": _TS,
}
_COMMON: Final = {**_IDS, **_TIMES}
_EVENT: Final = {**_IDS, "event": _T, "event_text": _T, **_TIMES}

#: The columns each kind of table is created with: `id` first, the primary key.
FIXED_COLUMNS: Final[Mapping[TableKind, Mapping[str, ColumnType]]] = {
    TableKind.TRACKS: _EVENT,
    TableKind.EVENT: _EVENT,
    TableKind.IDENTIFIES: _COMMON,
    TableKind.USERS: {"id": _T, "received_at": _TS, "uuid_ts": _TS},
    TableKind.PAGES: {**_COMMON, "name": _T, "category": _T},
    TableKind.SCREENS: {**_COMMON, "name": _T},
    TableKind.GROUPS: {**_COMMON, "group_id": _T},
    TableKind.ALIASES: {**_COMMON, "previous_id": _T},
}

#: Message fields that become common columns, by their column.
_COMMON_FIELDS: Final = (
    ("anonymous_id", "anonymousId"),
    ("user_id", "userId"),
    ("received_at", "receivedAt"),
    ("sent_at", "sentAt"),
    ("timestamp", "timestamp"),
    ("original_timestamp", "originalTimestamp"),
)


class Row(NamedTuple):
    """One row: its table, the kind of table, and its values by column (JSON scalars, never
    None: a column without a value is left out). Named tuples: two or three are made per
    message, and a frozen dataclass costs several times as much to make."""

    table: str
    kind: TableKind
    values: dict[str, object]


class Laid(NamedTuple):
    """One message laid out: the rows it becomes in `schema` (all but a users row carry the
    message's `id`), and the properties discarded because they named a reserved column.

    A track laid out with `defer` carries the compiled layout's `DeferredTrack` instead of its
    rows: the compiled encoder makes them straight into COPY data, and `rows_of` makes them
    when wanted."""

    schema: str
    id: str
    rows: tuple[Row, ...]
    discarded: tuple[str, ...] = ()
    deferred: DeferredTrack | None = None


# --- names ------------------------------------------------------------------------------------


def _lower_or_digit(c: int) -> bool:
    return 97 <= c <= 122 or 48 <= c <= 57


def _upper_or_digit(c: int) -> bool:
    return 65 <= c <= 90 or 48 <= c <= 57


def _alphanumeric(c: int) -> bool:
    return 97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57


@lru_cache(maxsize=8192)
def snake_case(name: str) -> str:
    """`name` in snake_case as Segment's go-snakecase writes it: words split at non-alphanumeric
    characters and before an upper-case letter that follows a lower-case one, lowered, joined
    with `_`; anything but ASCII letters and digits is dropped."""
    s = name.encode()
    n = len(s)
    i = 0
    # a run that needs no change: lower-case letters, digits, `_` before one of those
    while i < n and (
        _lower_or_digit(s[i]) or (s[i] == 95 and i < n - 1 and _lower_or_digit(s[i + 1]))
    ):
        i += 1
    if i == n:
        return name
    if i > 0 and 48 <= s[i - 1] <= 57:  # a digit followed by an upper-case letter
        i -= 1
    out = bytearray(s[:i])
    while i < n:
        if not _alphanumeric(s[i]):
            i += 1
            continue
        if out:
            out.append(95)
        while i < n and _upper_or_digit(s[i]):
            out.append(s[i] | 0x20 if 65 <= s[i] <= 90 else s[i])
            i += 1
        while i < n and _lower_or_digit(s[i]):
            out.append(s[i])
            i += 1
    return out.decode()


@lru_cache(maxsize=8192)
def column_name(path: str) -> str:
    """The column a (`_`-joined) path of keys becomes: snake_case, at most 63 bytes; "" when
    no letter or digit is left."""
    return snake_case(path)[:MAX_NAME_BYTES]


def table_name(event: str) -> str:
    """The event table of an event name (its `event` column holds the same)."""
    return column_name(event)


# --- flattening -------------------------------------------------------------------------------


class _Columns:
    """Columns being gathered for one row (`values`), and where each came from (`sources`:
    the source and the key), to name both in a collision."""

    __slots__ = ("sources", "values")

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.sources: dict[str, tuple[str, str]] = {}


def _collision(into: _Columns, column: str, source: str, key: str) -> ValidationError:
    where = f"{source}.{key}"
    if not column:
        return ValidationError(f"{where}: the name has no letter or digit to name a column")
    earlier = "{}.{}".format(*into.sources[column])
    return ValidationError(f"{earlier} and {where} both become column {column!r}")


_NONE: Final[Mapping[str, object]] = {}


@lru_cache(maxsize=8192)
def _path_column(prefix: str, key: str) -> tuple[str, str]:
    """The `_`-joined path of `key` under `prefix`, and the column it names."""
    path = f"{prefix}_{key}" if prefix else key
    return path, column_name(path)


def _flatten(  # noqa: PLR0917  (recursive: positional arguments are passed on as they are)
    obj: Mapping[str, object],
    prefix: str,
    source: str,
    into: _Columns,
    reserved: Set[str] = frozenset(),
    taken: Mapping[str, object] = _NONE,
) -> list[str]:
    """Put `obj`'s leaves into `into`, nested objects flattened with `_`, arrays as JSON text,
    nulls left out. A column in `reserved` or `taken` (the row's columns so far) is not put;
    the discarded source paths are returned."""
    discarded: list[str] = []
    values, sources = into.values, into.sources
    for key, value in obj.items():
        if value is None:
            continue
        path, column = _path_column(prefix, key)
        if type(value) is dict:
            discarded += _flatten(value, path, f"{source}.{key}", into, reserved, taken)
            continue
        if column in reserved or column in taken:
            discarded.append(f"{source}.{key}")
            continue
        if column in values or not column:
            raise _collision(into, column, source, key)
        if type(value) is list:
            value = orjson.dumps(value).decode()  # noqa: PLW2901  (stored as JSON text)
        values[column] = value
        sources[column] = (source, key)
    return discarded


def _object(message: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = message.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{key}: not an object")
    return value


#: Fields taken as text when they are numbers: ids (Segment's libraries send them both ways).
_IDS_AS_TEXT: Final = frozenset({"messageId", "userId", "anonymousId", "groupId", "previousId"})


def _text(message: Mapping[str, object], key: str, *, required: bool = False) -> str | None:
    """A string field (an id may be a number: its text)."""
    value = message.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and key in _IDS_AS_TEXT:
        value = orjson.dumps(value).decode()
    if value is None or value == "":
        if required:
            raise ValidationError(f"{key}: missing")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key}: not a string")
    if "\x00" in value:
        raise ValidationError(f"{key}: holds a NUL character")
    return value


# --- messages ---------------------------------------------------------------------------------

#: The compiled layout of a track's common shape (`native/src/warehouse.rs`: the same rows as
#: the Python path, which lays out whatever it declines); None without the native module.
#: It is given this module's tables, which stay the only copy.
NATIVE_TRACKS: Final = (
    None
    if autopilot_native is None
    else autopilot_native.TrackLayout(sorted(RESERVED_TABLES), list(_EVENT), list(_COMMON_FIELDS))
)


def lay_out(raw: bytes, *, schema: str, types: frozenset[str], defer: bool = False) -> Laid:
    """The rows the message `raw` becomes in `schema`, if it is of one of `types`; with
    `defer`, a track the compiled layout takes is checked now and its rows made later (see
    `Laid`)."""
    if defer:
        return layout_of(schema, types, defer=True)(raw)
    if NATIVE_TRACKS is not None and "track" in types:
        fast = NATIVE_TRACKS.track(raw)
        if fast is not None:
            message_id, table, common, event, discarded = fast
            # the tuples made directly: a named tuple's own `__new__` is a Python-level call
            rows = (
                _new_tuple(Row, (_TRACKS, _TRACKS_KIND, common)),
                _new_tuple(Row, (table, _EVENT_KIND, event)),
            )
            return _new_tuple(Laid, (schema, message_id, rows, tuple(discarded), None))
    return lay_out_python(raw, schema=schema, types=types)


def layout_of(schema: str, types: frozenset[str], *, defer: bool) -> Callable[[bytes], Laid]:
    """`lay_out` with its arguments given once: what a loader calls for each message."""
    if not (defer and NATIVE_TRACKS is not None and "track" in types):
        return partial(lay_out, schema=schema, types=types)
    peek = NATIVE_TRACKS.peek

    def laid(raw: bytes) -> Laid:
        peeked = peek(raw)
        if peeked is None:
            return lay_out(raw, schema=schema, types=types)
        message_id, deferred, discarded = peeked
        return _new_tuple(Laid, (schema, message_id, (), discarded, deferred))

    return laid


def rows_of(laid: Laid) -> tuple[Row, ...]:
    """The rows of `laid`, made now when it was laid out with `defer`."""
    if laid.deferred is None:
        return laid.rows
    return lay_out(laid.deferred.raw, schema=laid.schema, types=TRACK_TYPES).rows


_new_tuple: Final = tuple.__new__
_TRACKS_KIND: Final = TableKind.TRACKS
_EVENT_KIND: Final = TableKind.EVENT


def lay_out_python(raw: bytes, *, schema: str, types: frozenset[str]) -> Laid:
    """`lay_out` by the Python path alone (the reference of the compiled one)."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise DecodeError("not a JSON object")
    return lay_out_message(message, schema=schema, types=types)


def lay_out_message(message: Mapping[str, object], *, schema: str, types: frozenset[str]) -> Laid:
    """`lay_out` for a message already decoded."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in types:
        expected = " or ".join(sorted(types))
        raise UnsupportedType(f"type: {kind!r} is not {expected}")
    message_id = _text(message, "messageId", required=True)
    assert message_id is not None
    common: dict[str, object] = {"id": message_id}
    for column, key in _COMMON_FIELDS:
        value = message.get(key)
        if type(value) is str and value and "\x00" not in value:
            common[column] = value  # the common case, without the call
        elif value is not None:
            value = _text(message, key)
            if value is not None:
                common[column] = value
    context = _Columns()
    _flatten(_object(message, "context"), "context", "context", context)
    common.update(context.values)

    if kind == "track":
        return _track(message, schema, message_id, common)
    if kind == "identify":
        return _identify(message, schema, message_id, common)
    if kind in ("page", "screen"):
        table_kind = TableKind.PAGES if kind == "page" else TableKind.SCREENS
        own = {"name": _text(message, "name")}
        if kind == "page":
            own["category"] = _text(message, "category")
        return _with_payload(
            message,
            schema=schema,
            message_id=message_id,
            common=common,
            kind=table_kind,
            own=own,
            payload="properties",
        )
    if kind == "group":
        own = {"group_id": _text(message, "groupId", required=True)}
        return _with_payload(
            message,
            schema=schema,
            message_id=message_id,
            common=common,
            kind=TableKind.GROUPS,
            own=own,
            payload="traits",
        )
    own = {"previous_id": _text(message, "previousId", required=True)}  # alias
    return _with_payload(
        message,
        schema=schema,
        message_id=message_id,
        common=common,
        kind=TableKind.ALIASES,
        own=own,
        payload=None,
    )


def _track(
    message: Mapping[str, object], schema: str, message_id: str, common: dict[str, object]
) -> Laid:
    event_text = _text(message, "event", required=True)
    assert event_text is not None
    table = table_name(event_text)
    if not table:
        raise ValidationError(f"event: {event_text!r} has no letter or digit to name a table")
    if table in RESERVED_TABLES:
        raise ValidationError(f"event: {event_text!r} would be Segment's own table {table!r}")
    common["event"] = table
    common["event_text"] = event_text
    event = _Columns()  # the event row: the common columns, then the properties
    event.values = common.copy()
    discarded = _flatten(
        _object(message, "properties"), "", "properties", event, _EVENT.keys(), common
    )
    return Laid(
        schema,
        message_id,
        (Row(_TRACKS, TableKind.TRACKS, common), Row(table, TableKind.EVENT, event.values)),
        tuple(discarded),
    )


def _identify(
    message: Mapping[str, object], schema: str, message_id: str, common: dict[str, object]
) -> Laid:
    traits_obj = _object(message, "traits")
    traits = _Columns()
    fixed = FIXED_COLUMNS[TableKind.IDENTIFIES].keys()
    discarded = _flatten(traits_obj, "", "traits", traits, fixed, common)
    rows = [Row(TableKind.IDENTIFIES.value, TableKind.IDENTIFIES, {**common, **traits.values})]
    user_id = common.get("user_id")
    if user_id is not None:
        user = _Columns()
        _flatten(traits_obj, "", "traits", user, FIXED_COLUMNS[TableKind.USERS].keys())
        values: dict[str, object] = {"id": user_id, **user.values}
        if "received_at" in common:
            values["received_at"] = common["received_at"]
        rows.append(Row(TableKind.USERS.value, TableKind.USERS, values))
    return Laid(schema, message_id, tuple(rows), tuple(discarded))


def _with_payload(
    message: Mapping[str, object],
    *,
    schema: str,
    message_id: str,
    common: dict[str, object],
    kind: TableKind,
    own: Mapping[str, str | None],
    payload: str | None,
) -> Laid:
    values = {**common, **{k: v for k, v in own.items() if v is not None}}
    discarded: list[str] = []
    if payload is not None:
        columns = _Columns()
        fixed = FIXED_COLUMNS[kind].keys()
        discarded = _flatten(_object(message, payload), "", payload, columns, fixed, values)
        values.update(columns.values)
    return Laid(schema, message_id, (Row(kind.value, kind, values),), tuple(discarded))
