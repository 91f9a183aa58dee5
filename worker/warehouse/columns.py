"""Column types in Segment's warehouse layout: what a value's type is, and what fits a column.

Segment Warehouses know five types (timestamp, integer, float, boolean and text) and set a
column's type from the first value seen for it; later values are loaded as that type. Pure:
no database here; each writer maps `ColumnType` to its own SQL types.

`infer` reads a JSON value's type: a bool is boolean, a whole number integer (float beyond a
64-bit integer), a fraction float, a string that is an ISO-8601 date-time a timestamp, any
other string text (arrays reach here as JSON text already).

`coerce` fits a value to a column's type, or answers `MISFIT`, which the loader stores as NULL
and counts:

- integer column: a whole number; a fraction is rounded (Segment documents the loss of
  precision when the first value of a float column was whole); anything else misfits;
- float column: any number;
- boolean column: true or false only;
- timestamp column: an ISO-8601 date-time string, held in UTC;
- text column: a string as it is, a number or boolean as its JSON text; a string holding a NUL
  character misfits (PostgreSQL text cannot store one).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Final

import orjson

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MISFIT",
    "ColumnType",
    "coerce",
    "infer",
    "parse_timestamp",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class ColumnType(StrEnum):
    """Segment's warehouse column types."""

    TIMESTAMP = "timestamp"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TEXT = "text"


class _Misfit:
    """A value that does not fit its column's type (loaded as NULL, counted)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISFIT"


MISFIT: Final = _Misfit()

#: An ISO-8601 date-time: a date, `T` or a space, hours and minutes, optional seconds and
#: fraction, optional `Z` or offset. A date alone is text, as Segment keeps it.
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


@lru_cache(maxsize=4096)
def parse_timestamp(text: str) -> datetime | None:
    """`text` as a naive UTC datetime (no offset: read as UTC), or None if it is no ISO-8601
    date-time. Fractions beyond microseconds are cut. Cached: a track's rows share their
    times, and a batch's messages often do."""
    if len(text) == 24 and text[23] == "Z" and text[10] == "T" and text[19] == ".":
        try:  # the form Segment's libraries and the source write: 2026-11-20T10:15:00.000Z
            return datetime.fromisoformat(text[:23])
        except ValueError:
            pass
    if len(text) > 40 or not _DATE_TIME.fullmatch(text):
        return None
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most six fraction digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:  # 2026-02-30, 25:00, ...
        return None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+01:00
            return None
    return value


def infer(value: object) -> ColumnType:
    """The type a column created for `value` gets (`value` is a JSON scalar, never None)."""
    if isinstance(value, bool):
        return ColumnType.BOOLEAN
    if isinstance(value, int):
        return ColumnType.INTEGER if INT64_MIN <= value <= INT64_MAX else ColumnType.FLOAT
    if isinstance(value, float):
        return ColumnType.FLOAT
    if isinstance(value, str) and parse_timestamp(value) is not None:
        return ColumnType.TIMESTAMP
    return ColumnType.TEXT


def coerce(value: object, column: ColumnType) -> object:
    """`value` as column type `column` wants it, or `MISFIT` (see the module docstring)."""
    if column is ColumnType.TEXT:
        if isinstance(value, str):
            return MISFIT if "\x00" in value else value
        if isinstance(value, bool | int | float):
            return orjson.dumps(value).decode()
        return MISFIT
    if column is ColumnType.TIMESTAMP:
        return (parse_timestamp(value) or MISFIT) if isinstance(value, str) else MISFIT
    if isinstance(value, bool):
        return value if column is ColumnType.BOOLEAN else MISFIT
    if column is ColumnType.INTEGER:
        if isinstance(value, float):
            if not math.isfinite(value):
                return MISFIT
            value = round(value)
        if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
            return value
        return MISFIT
    if column is ColumnType.FLOAT:
        if isinstance(value, int | float):
            try:
                return float(value)
            except OverflowError:
                return MISFIT
        return MISFIT
    return MISFIT
