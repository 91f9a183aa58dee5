"""Column types of the warehouse layout: what a first value makes a column, what fits it."""

from __future__ import annotations

from datetime import datetime

import pytest

from worker.warehouse.columns import INT64_MAX, MISFIT, ColumnType, coerce, infer, parse_timestamp

T = ColumnType


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, T.BOOLEAN),
        (False, T.BOOLEAN),
        (0, T.INTEGER),
        (-(2**63), T.INTEGER),
        (2**63, T.FLOAT),  # beyond a 64-bit integer
        (1.0, T.FLOAT),
        (19.99, T.FLOAT),
        ("2026-11-20T10:15:00.000Z", T.TIMESTAMP),
        ("2026-11-20T10:15:00+02:00", T.TIMESTAMP),
        ("2026-11-20 10:15", T.TIMESTAMP),
        ("2026-11-20T10:15:00.123456789Z", T.TIMESTAMP),
        ("2026-11-20", T.TEXT),  # a date alone stays text
        ("2026-02-30T10:15:00Z", T.TEXT),  # no such day
        ("10:15", T.TEXT),
        ("7", T.TEXT),
        ('["a","b"]', T.TEXT),
        ("", T.TEXT),
    ],
)
def test_infer(value: object, expected: ColumnType) -> None:
    assert infer(value) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:15:00.000Z", datetime(2026, 11, 20, 10, 15)),
        ("2026-11-20T10:15:00+02:00", datetime(2026, 11, 20, 8, 15)),
        ("2026-11-20T10:15:00-0130", datetime(2026, 11, 20, 11, 45)),
        ("2026-11-20T10:15", datetime(2026, 11, 20, 10, 15)),  # no offset: UTC
        ("2026-11-20T10:15:00.123456789Z", datetime(2026, 11, 20, 10, 15, 0, 123456)),
        ("2026-11-20T10:15:00.1z", datetime(2026, 11, 20, 10, 15, 0, 100000)),
        ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
        ("2026-11-20T25:00:00Z", None),
        ("next tuesday", None),
    ],
)
def test_parse_timestamp(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        ("x", T.TEXT, "x"),
        (7, T.TEXT, "7"),
        (1.5, T.TEXT, "1.5"),
        (True, T.TEXT, "true"),
        ("a\x00b", T.TEXT, MISFIT),  # PostgreSQL text cannot hold NUL
        (7, T.INTEGER, 7),
        (7.6, T.INTEGER, 8),  # rounded: Segment documents the loss of precision
        (INT64_MAX + 1, T.INTEGER, MISFIT),
        ("7", T.INTEGER, MISFIT),
        (True, T.INTEGER, MISFIT),
        (7, T.FLOAT, 7.0),
        (7.5, T.FLOAT, 7.5),
        (10**400, T.FLOAT, MISFIT),
        ("7.5", T.FLOAT, MISFIT),
        (False, T.FLOAT, MISFIT),
        (True, T.BOOLEAN, True),
        (1, T.BOOLEAN, MISFIT),
        ("true", T.BOOLEAN, MISFIT),
        ("2026-11-20T10:15:00Z", T.TIMESTAMP, datetime(2026, 11, 20, 10, 15)),
        ("yesterday", T.TIMESTAMP, MISFIT),
        (1_700_000_000, T.TIMESTAMP, MISFIT),
    ],
)
def test_coerce(value: object, column: ColumnType, expected: object) -> None:
    assert coerce(value, column) == expected
