"""The compiled warehouse paths give exactly what the Python paths give.

The track layout (`autopilot_native.TrackLayout`, used by `layout.lay_out`) must give the
Python path's `Laid` (rows, keys in the same order, values of the same types, discarded
properties) for every track it takes, and take none the Python path refuses. Checked on the
golden cases, the benchmark's tracks, mutations of them and random tracks.

The COPY encoder (`autopilot_native.copy_rows`, used by `_Fitter.copy_data` for PostgreSQL)
must turn a table's rows into the bytes psycopg's binary COPY makes of the Python fitter's
tuples (`_Fitter.__call__`, sorted by `id_of`), and count the same values as not fitting; or
decline the table, which then takes the Python path. Checked on the golden cases' rows, on
every kind of value against every column type, and on random rows.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from psycopg import postgres
from psycopg._copy_base import BinaryFormatter
from psycopg.adapt import Transformer
from psycopg.pq import Format

from worker.errors import WorkerError
from worker.warehouse import layout, loader
from worker.warehouse.columns import ColumnType, infer
from worker.warehouse.layout import CALL_TYPES, FIXED_COLUMNS, TRACK_TYPES, Laid, lay_out
from worker.warehouse.loader import TableLoad, _Fitter, _merged_users
from worker.warehouse.postgres import STAGING_TYPES

pytestmark = pytest.mark.skipif(
    loader.NATIVE is None or layout.NATIVE_TRACKS is None,
    reason="the native module is built by `make install`",
)

NOW = datetime(2026, 11, 20, 12, 0, 0, 123456)  # naive UTC, as the loader's
T = ColumnType
GOLDEN = Path(__file__).parents[1] / "golden" / "warehouse"


def _psycopg_copy(rows: Sequence[tuple[object, ...]], types: Sequence[ColumnType]) -> bytes:
    """What psycopg sends for `rows` in a binary COPY after `set_types(STAGING_TYPES)`."""
    transformer = Transformer()
    oids = [postgres.types.get_oid(STAGING_TYPES[t]) for t in types]
    transformer.set_dumper_types(oids, Format.BINARY)
    formatter = BinaryFormatter(transformer)
    out = bytearray()
    for row in rows:
        out += formatter.write_row(row)
    out += formatter.end()
    return bytes(out)


def _check(columns: Mapping[str, ColumnType], rows: list[Mapping[str, object]]) -> bool:
    """Assert that the encoder, if it takes `rows`, gives what the Python path gives; say
    whether it took them (a failure of the Python path's own `coerce`, which the encoder calls,
    counts as taken when both fail alike)."""
    python_nulled: Counter[tuple[str, str, str]] = Counter()
    python = _Fitter(dict(columns), NOW, "s.t", python_nulled)
    failure: Exception | None = None
    try:
        fitted = sorted((python(values) for values in rows), key=python.id_of)
        expected: bytes | None = _psycopg_copy(fitted, python.types)
    except Exception as exc:  # the Python path fails: the encoder must decline, or fail alike
        expected, failure = None, exc
    native_nulled: Counter[tuple[str, str, str]] = Counter()
    native = _Fitter(dict(columns), NOW, "s.t", native_nulled)
    try:
        load = native.copy_data("s", "t", rows, merge=False)
    except Exception as exc:  # compared with the Python path's failure below
        native_failure: Exception | None = exc
    else:
        native_failure = None
    if native_failure is not None:
        assert (type(native_failure), str(native_failure)) == (type(failure), str(failure))
        return True
    if load is None:
        return False
    assert expected is not None, f"the encoder took rows the Python path fails on: {rows!r}"
    assert load.copy_data == expected, rows
    assert native_nulled == python_nulled
    assert (load.copied, load.size, load.rows) == (len(rows), len(rows), [])
    assert (load.columns, load.types) == (python.names, python.types)
    return True


Rows = list[Mapping[str, object]]


def _golden_tables() -> dict[tuple[str, str], tuple[dict[str, ColumnType], Rows]]:
    """The golden cases' rows by table, with columns typed as the writer would."""
    tables: dict[tuple[str, str], tuple[dict[str, ColumnType], Rows]] = {}
    for path in sorted(GOLDEN.glob("*.json")):
        case = orjson.loads(path.read_bytes())
        if "input" not in case:
            continue
        try:
            laid = lay_out(orjson.dumps(case["input"]), schema="s", types=CALL_TYPES)
        except WorkerError:
            continue
        for row in laid.rows:
            columns, rows = tables.setdefault(
                (laid.schema, row.table), (dict(FIXED_COLUMNS[row.kind]), [])
            )
            for column, value in row.values.items():
                columns.setdefault(column, infer(value))
            rows.append(row.values)
    return tables


def test_the_golden_rows_are_taken_and_encoded_as_psycopg_does() -> None:
    tables = _golden_tables()
    assert len(tables) > 8
    for (_, table), (columns, rows) in tables.items():
        values = _merged_users(rows) if table == "users" else rows
        assert _check(columns, values), table


VALUES: list[object] = [
    "",
    "plain",
    "é, ✓ and 🙂",
    "with\x00nul",
    "2026-11-20T10:15:00.000Z",
    "2024-02-29T23:59:59.999Z",
    "2023-02-29T10:00:00.000Z",
    "0000-01-01T00:00:00.000Z",
    "0001-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
    "2026-11-20T24:00:00.000Z",
    "2026-11-20T10:60:00.000Z",
    "2026-11-20T10:15:60.000Z",
    "2026-13-20T10:15:00.000Z",
    "2026-11-00T10:15:00.000Z",
    "2026-11-20t10:15:00.000Z",
    "2026-11-20T10:15:00.000z",
    "2026-11-20T1a:15:00.000Z",
    "2026-11-20T10:15:00,000Z",
    "+026-11-20T10:15:00.000Z",
    "\uff12\uff10\uff12\uff16-11-20T10:15:00.000Z",  # full-width digits
    "2026-11-20 10:15:00",
    "2026-11-20T10:15Z",
    "2026-11-20T10:15:00+02:00",
    "2026-11-20T00:15:00.5-0130",
    "2026-11-20T10:15:00.123456789Z",
    "0001-01-01T00:00+01:00",
    "2026-11-20",
    "true",
    "12",
    0,
    -1,
    7,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    10**30,
    0.0,
    -0.0,
    1.5,
    2.5,
    -2.5,
    1e300,
    1e-300,
    float("inf"),
    True,
    False,
    ["a", 1],
]


@pytest.mark.parametrize("kind", list(ColumnType))
def test_every_kind_of_value_into_every_type(kind: ColumnType) -> None:
    columns = {"id": T.TEXT, "uuid_ts": T.TIMESTAMP, "x": kind}
    rows: list[Mapping[str, object]] = [
        {"id": f"m{i:03}", "x": value} for i, value in enumerate(VALUES)
    ]
    assert _check(columns, rows)
    for i, value in enumerate(VALUES):  # one at a time too, each value its own table
        assert _check(columns, [{"id": "a", "x": value}, {"id": f"b{i}"}])
    # `parse_timestamp` reads this one as `fromisoformat("...00.00Z")`, a time with a zone:
    # the encoder takes only naive times, so the table goes the Python way
    assert (
        not _check(columns, [{"id": "a", "x": "2026-11-20T10:15:00.00ZZ"}])
        or kind is not T.TIMESTAMP
    )


def test_rows_keep_the_load_time_unless_they_hold_their_own() -> None:
    columns = {"id": T.TEXT, "uuid_ts": T.TIMESTAMP, "n": T.INTEGER}
    assert _check(columns, [{"id": "b", "n": 1}, {"id": "a", "uuid_ts": "2026-01-01T00:00Z"}])
    assert _check({"n": T.INTEGER, "id": T.TEXT}, [{"n": 2, "id": "z"}, {"id": "y"}])
    assert _check(columns, [])


def test_it_declines_what_the_python_path_must_word() -> None:
    columns = {"id": T.TEXT, "x": T.TEXT}
    assert not _check(columns, [{"id": "a", "y": "not a column"}])
    assert not _check(columns, [{"id": 12, "x": "an id that is not a string"}])
    assert not _check(columns, [{"id": "nul\x00", "x": "an id that does not fit"}])
    assert not _check(columns, [{"id": "a", "x": "a lone \udcff surrogate"}])
    assert not _check({"x": T.TEXT, "id": T.TIMESTAMP}, [{"id": "2026-11-20T10:15:00.000Z"}])


def _random_value(rng: random.Random) -> object:
    choice = rng.random()
    if choice < 0.5:
        return rng.choice(VALUES)
    if choice < 0.6:
        return rng.randint(-(2**64), 2**64)
    if choice < 0.7:
        return rng.uniform(-1e6, 1e6)
    if choice < 0.85:  # a time of the common form, valid or not
        return (
            f"{rng.randint(0, 9999):04}-{rng.randint(0, 13):02}-{rng.randint(0, 32):02}T"
            f"{rng.randint(0, 25):02}:{rng.randint(0, 61):02}:{rng.randint(0, 61):02}."
            f"{rng.randint(0, 999):03}Z"
        )
    return "".join(rng.choice("ab_Z\x00é1:-.T ") for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("seed", range(40))
def test_random_rows(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"c{i}" for i in range(rng.randint(1, 12))]
    columns = {"id": T.TEXT} | {name: rng.choice(list(ColumnType)) for name in names}
    if rng.random() < 0.5:
        columns["uuid_ts"] = T.TIMESTAMP
    rows: list[Mapping[str, object]] = []
    for i in range(rng.randint(0, 30)):
        values: dict[str, object] = {"id": f"{rng.randint(0, 10**6):07}-{i}"}
        for name in rng.sample(names, rng.randint(0, len(names))):
            values[name] = _random_value(rng)
        rows.append(values)
    _check(columns, rows)


def test_the_writer_hands_copy_data_only_to_a_database_that_takes_it() -> None:
    writer = loader.WarehouseWriter(_NoDatabase(), now=lambda: NOW)
    laid = lay_out(
        orjson.dumps({"type": "track", "event": "E", "messageId": "m", "properties": {"n": 1}}),
        schema="s",
        types=CALL_TYPES,
    )
    writer._tables = {
        ("s", row.table): dict(FIXED_COLUMNS[row.kind]) | {"n": T.INTEGER} for row in laid.rows
    }
    tuples = writer._prepare([laid]).loads
    encoded = writer._prepare([laid], copy_data=True).loads
    assert all(load.copy_data is None and load.size == 1 for load in tuples)
    assert all(isinstance(load, TableLoad) and load.copy_data for load in encoded)
    for plain, copied in zip(tuples, encoded, strict=True):
        assert copied.copy_data == _psycopg_copy(plain.rows, plain.types)


class _NoDatabase:
    name = "none"
    takes_copy_data = True

    async def read_schema(self, schema: str) -> dict[str, loader.Columns]:
        raise AssertionError

    async def evolve(self, changes: object) -> dict[loader.TableKey, loader.Columns]:
        raise AssertionError

    async def load(self, loads: object) -> list[int]:
        raise AssertionError

    async def close(self) -> None:
        pass


# --- the track layout -------------------------------------------------------------------------


def _typed(laid: Laid) -> object:
    """`laid` with its rows' keys in order and each value's type."""
    rows = [
        (row.table, row.kind, [(k, type(v), v) for k, v in row.values.items()]) for row in laid.rows
    ]
    return (laid.schema, laid.id, rows, laid.discarded)


def _check_layout(raw: bytes) -> bool:
    """Assert that the compiled layout, if it takes `raw`, gives the Python path's rows; say
    whether it took it."""
    assert layout.NATIVE_TRACKS is not None
    taken = layout.NATIVE_TRACKS.track(raw) is not None
    for types in (TRACK_TYPES, CALL_TYPES):
        try:
            expected = layout.lay_out_python(raw, schema="s", types=types)
        except WorkerError as error:
            refused: WorkerError | None = error
        else:
            refused = None
        if refused is not None:
            assert not taken, f"the native layout took what Python refuses ({refused}): {raw!r}"
            continue
        got = lay_out(raw, schema="s", types=types)
        assert _typed(got) == _typed(expected), raw
    return taken


def _golden_inputs() -> list[bytes]:
    out = []
    for path in sorted(GOLDEN.glob("*.json")):
        case = orjson.loads(path.read_bytes())
        if "input" in case:
            out.append(orjson.dumps(case["input"]))
        else:
            out.append(case["input_text"].encode("utf-8", "surrogateescape"))
    return out


def _bench_tracks() -> list[bytes]:
    from tests.benchmarks.bench_warehouse import tracks  # noqa: PLC0415  (slow to import)

    return tracks(400)


def test_the_golden_cases_and_the_benchmark_tracks() -> None:
    golden = _golden_inputs()
    taken = [_check_layout(raw) for raw in golden]
    assert sum(taken) >= 8  # the golden tracks of the common shape
    assert all(_check_layout(raw) for raw in _bench_tracks())


NAMES = [
    "plan",
    "Camel Case",
    "camelCase",
    "HTTPServer",
    "a1B",
    "9lives",
    "ab__cd",
    "__",
    "_x",
    "x_",
    "!!!",
    "",
    "userId",
    "id",
    "event",
    "uuid_ts",
    "context_ip",
    "context",
    "Ünïcode Näme",
    "日本",
    "a" * 80,
    "x" * 62 + "Y",
    "a_b",
    "a b",
]
PROPERTY_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**63,
    -(2**63),
    1.5,
    -0.0,
    123456789.123456,
    1.0000000000000002,
    "",
    "text",
    "2026-11-20T10:15:00.000Z",
    {},
    {"b": 1, "c": {"d": "e"}},
    {"b": None},
    [1, 2],
    [],
]


def _as_object(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def _mutations(track: dict[str, object], rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    props = _as_object(track.get("properties"))
    for name in NAMES:
        for value in rng.sample(PROPERTY_VALUES, 4):
            out.append(orjson.dumps({**track, "properties": {**props, name: value}}))
    for key in ("messageId", "event", "userId", "anonymousId", "timestamp", "type", "context"):
        for value in ("", None, 12, "x", "tracks", "!!!", "Users", {"a": 1}, "A" * 100):
            out.append(orjson.dumps({**track, key: value}))
        out.append(orjson.dumps({k: v for k, v in track.items() if k != key}))
    context = _as_object(track.get("context"))
    for name in NAMES:
        out.append(orjson.dumps({**track, "context": {**context, name: "v"}}))
    shuffled = list(track.items())
    rng.shuffle(shuffled)
    out.append(orjson.dumps(dict(shuffled)))
    out.append(orjson.dumps(track, option=orjson.OPT_INDENT_2))
    text = orjson.dumps(track).decode()
    out.append((text[:-1] + ',"type":"track"}').encode())  # a duplicate key
    out.append((text[:-1] + ',"integrations":{"a":1,"a":2}}').encode())  # one not read
    out.append(text.replace('"Email', '"\\u0045mail').encode())  # an escape
    out.append(text.encode() + b" ")
    out.append(text.encode() + b"x")
    out.append(text[:-1].encode())
    out.append(text.encode("utf-8")[:-2] + b"\xff}")
    deep: object = "v"
    for _ in range(70):
        deep = {"n": deep}
    out.append(orjson.dumps({**track, "properties": deep}))
    return out


def test_mutations_of_the_tracks() -> None:
    rng = random.Random(7)
    tracks = [orjson.loads(raw) for raw in _bench_tracks()[:40]]
    for raw in _golden_inputs():
        try:
            case = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(case, dict) and case.get("type") == "track":
            tracks.append(case)
    taken = 0
    total = 0
    for track in tracks:
        for raw in _mutations(track, rng):
            taken += _check_layout(raw)
            total += 1
    assert taken > total // 3  # most mutations stay in the common shape


def _random_object(rng: random.Random, depth: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for _ in range(rng.randint(0, 5)):
        name = rng.choice(NAMES) if rng.random() < 0.5 else rng.choice(["a", "b", "A", "a_b", "aB"])
        if depth < 3 and rng.random() < 0.3:
            out[name] = _random_object(rng, depth + 1)
        else:
            out[name] = rng.choice(PROPERTY_VALUES)
    return out


@pytest.mark.parametrize("seed", range(30))
def test_random_tracks(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        track: dict[str, object] = {"type": "track", "event": rng.choice(NAMES), "messageId": "m"}
        for key in ("userId", "anonymousId", "receivedAt", "sentAt"):
            if rng.random() < 0.5:
                track[key] = rng.choice(["u", "", None, "2026-11-20T10:15:00.000Z"])
        track["context"] = _random_object(rng, 0)
        track["properties"] = _random_object(rng, 0)
        _check_layout(orjson.dumps(track))
