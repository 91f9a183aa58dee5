//! The warehouse loader's rows as PostgreSQL's binary COPY data, compiled.
//!
//! `worker/warehouse/loader.py`'s `_Fitter` is the reference: it fits each row's values to its
//! table's column types, and psycopg encodes the fitted tuples (`write_row`). `copy_rows` does
//! both at once for the values it is sure of (a string into a text column, an ISO time of the
//! form `2026-11-20T10:15:00.000Z` into a timestamp column, an int into an integer column, a
//! float into a float column, a bool into a boolean column) and asks the Python `fit` for any
//! other value, then encodes what it answers. It declines the whole table (None: the Python path
//! builds the tuples) for anything it cannot encode exactly as psycopg would: a key that is no
//! column, a string that is not UTF-8 (a lone surrogate), an id that is not a string, a fitted
//! value of an unexpected type. `tests/unit/test_warehouse_fast_path.py` holds it to the Python
//! path's tuples encoded by psycopg, byte for byte.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// The column types, as `worker/warehouse/loader.py` numbers them (`_KIND_CODES`).
const TIMESTAMP: u8 = 0;
const INTEGER: u8 = 1;
const FLOAT: u8 = 2;
const BOOLEAN: u8 = 3;
const TEXT: u8 = 4;

/// The binary COPY header: signature, flags, header extension length.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Days from 0001-01-01 (day 1 of the proleptic Gregorian calendar) to 2000-01-01,
/// PostgreSQL's epoch.
const PG_EPOCH_ORDINAL: i64 = 730_120;

/// A fitted value, encoded: its bytes (NULL: none).
enum Field {
    Null,
    Bytes(std::ops::Range<usize>),
}

/// The ordinal of a date (0001-01-01 is 1), as Python's `date.toordinal`.
fn ordinal(year: i64, month: i64, day: i64) -> i64 {
    const BEFORE: [i64; 13] = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let y = year - 1;
    let leap = month > 2 && (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0));
    y * 365 + y / 4 - y / 100 + y / 400 + BEFORE[month as usize] + i64::from(leap) + day
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Microseconds since 2000-01-01 of a naive date and time, as psycopg's binary timestamp.
fn pg_micros(date: (i64, i64, i64), time: (i64, i64, i64, i64)) -> i64 {
    let days = ordinal(date.0, date.1, date.2) - PG_EPOCH_ORDINAL;
    let seconds = days * 86_400 + time.0 * 3_600 + time.1 * 60 + time.2;
    seconds * 1_000_000 + time.3
}

/// `2026-11-20T10:15:00.000Z` (what the loader's `parse_timestamp` reads first, as
/// `datetime.fromisoformat` of all but the `Z`), in microseconds since 2000-01-01; None for
/// anything else, which the Python path reads.
fn common_time(text: &[u8]) -> Option<i64> {
    if text.len() != 24 || text[23] != b'Z' || text[10] != b'T' || text[19] != b'.' {
        return None;
    }
    if text[4] != b'-' || text[7] != b'-' || text[13] != b':' || text[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        text[range].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let millis = number(20..23)?;
    let valid = year >= 1
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour < 24
        && minute < 60
        && second < 60;
    valid.then(|| pg_micros((year, month, day), (hour, minute, second, millis * 1000)))
}

/// The binary encoding of a value the Python `fit` answered, as psycopg dumps it for `kind`
/// (`STAGING_TYPES`); None when it is not of the type `kind` fits to.
fn put_fitted(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, kind: u8) -> PyResult<Option<()>> {
    match kind {
        TEXT => match value.downcast_exact::<PyString>() {
            Ok(text) => match text.to_str() {
                Ok(text) => out.extend_from_slice(text.as_bytes()),
                Err(_) => return Ok(None),
            },
            Err(_) => return Ok(None),
        },
        TIMESTAMP => {
            // a naive datetime (`parse_timestamp` answers UTC without tzinfo)
            if !value.getattr("tzinfo")?.is_none() || !value.hasattr("hour")? {
                return Ok(None);
            }
            let get = |name: &str| -> PyResult<i64> { value.getattr(name)?.extract() };
            let date = (get("year")?, get("month")?, get("day")?);
            let time = (
                get("hour")?,
                get("minute")?,
                get("second")?,
                get("microsecond")?,
            );
            out.extend_from_slice(&pg_micros(date, time).to_be_bytes());
        }
        INTEGER => match value.downcast_exact::<PyInt>() {
            Ok(number) => match number.extract::<i64>() {
                Ok(number) => out.extend_from_slice(&number.to_be_bytes()),
                Err(_) => return Ok(None),
            },
            Err(_) => return Ok(None),
        },
        FLOAT => match value.downcast_exact::<PyFloat>() {
            Ok(number) => out.extend_from_slice(&number.value().to_be_bytes()),
            Err(_) => return Ok(None),
        },
        BOOLEAN => match value.downcast_exact::<PyBool>() {
            Ok(flag) => out.push(u8::from(flag.is_true())),
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    }
    Ok(Some(()))
}

/// One value into `out` as `kind` wants it, the common cases without Python: `Some(true)` for
/// a value that fit, `Some(false)` for a misfit (NULL), None to decline.
fn put_value(
    out: &mut Vec<u8>,
    value: &Bound<'_, PyAny>,
    kind: u8,
    at: usize,
    fit: &Bound<'_, PyAny>,
) -> PyResult<Option<bool>> {
    if let Ok(text) = value.downcast_exact::<PyString>() {
        let Ok(text) = text.to_str() else {
            return Ok(None);
        };
        if kind == TEXT {
            if text.as_bytes().contains(&0) {
                return Ok(Some(false));
            }
            out.extend_from_slice(text.as_bytes());
            return Ok(Some(true));
        }
        if kind == TIMESTAMP {
            if let Some(micros) = common_time(text.as_bytes()) {
                out.extend_from_slice(&micros.to_be_bytes());
                return Ok(Some(true));
            }
        }
    } else if kind == BOOLEAN {
        if let Ok(flag) = value.downcast_exact::<PyBool>() {
            out.push(u8::from(flag.is_true()));
            return Ok(Some(true));
        }
    } else if kind == INTEGER {
        if let Ok(number) = value.downcast_exact::<PyInt>() {
            if let Ok(number) = number.extract::<i64>() {
                out.extend_from_slice(&number.to_be_bytes());
                return Ok(Some(true));
            }
        }
    } else if kind == FLOAT {
        if let Ok(number) = value.downcast_exact::<PyFloat>() {
            out.extend_from_slice(&number.value().to_be_bytes());
            return Ok(Some(true));
        }
    }
    let fitted = fit.call1((value, at))?;
    if fitted.is_none() {
        return Ok(Some(false));
    }
    Ok(put_fitted(out, &fitted, kind)?.map(|()| true))
}

/// `rows` (each a dict of column -> value, in id order) fitted to the columns `index` numbers
/// (name -> position) of types `kinds`, as binary COPY data from signature to trailer, and
/// how many values of each column did not fit (NULL); None to hand the table to the Python path.
/// `uuid_ts` is the load's time for column `uuid_ts_at` (-1: none), in microseconds since
/// 2000-01-01; `fit(value, position)` fits any value the common cases leave, answering None
/// for a misfit.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // a keyword call from one place in Python
#[pyo3(signature = (rows, index, kinds, id_at, uuid_ts_at, uuid_ts, fit))]
pub fn copy_rows<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyList>,
    index: &Bound<'py, PyDict>,
    kinds: Vec<u8>,
    id_at: usize,
    uuid_ts_at: isize,
    uuid_ts: i64,
    fit: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyBytes>, Vec<u64>)>> {
    let columns = kinds.len();
    let Ok(count) = i16::try_from(columns) else {
        return Ok(None);
    };
    if id_at >= columns {
        return Ok(None);
    }
    let mut out: Vec<u8> = Vec::with_capacity(64 + rows.len() * (columns * 12 + 256));
    out.extend_from_slice(SIGNATURE);
    let mut misfits = vec![0u64; columns];
    let mut values: Vec<u8> = Vec::with_capacity(1024);
    let mut fields: Vec<Field> = Vec::with_capacity(columns);
    for row in rows.iter() {
        let row = row.downcast_exact::<PyDict>()?;
        values.clear();
        fields.clear();
        fields.extend((0..columns).map(|_| Field::Null));
        if let Ok(at) = usize::try_from(uuid_ts_at) {
            if at < columns {
                values.extend_from_slice(&uuid_ts.to_be_bytes());
                fields[at] = Field::Bytes(0..8);
            }
        }
        for (key, value) in row.iter() {
            let Some(at) = index.get_item(&key)? else {
                return Ok(None);
            };
            let at: usize = at.extract()?;
            if at >= columns {
                return Ok(None);
            }
            if at == id_at && !value.is_exact_instance_of::<PyString>() {
                return Ok(None); // the Python path sorts by the fitted id's text
            }
            let start = values.len();
            match put_value(&mut values, &value, kinds[at], at, fit)? {
                None => return Ok(None),
                Some(true) => fields[at] = Field::Bytes(start..values.len()),
                Some(false) if at == id_at => return Ok(None),
                Some(false) => {
                    misfits[at] += 1;
                    fields[at] = Field::Null;
                }
            }
        }
        out.extend_from_slice(&count.to_be_bytes());
        for field in &fields {
            match field {
                Field::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Field::Bytes(range) => {
                    let Ok(size) = i32::try_from(range.len()) else {
                        return Ok(None);
                    };
                    out.extend_from_slice(&size.to_be_bytes());
                    out.extend_from_slice(&values[range.clone()]);
                }
            }
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(Some((PyBytes::new(py, &out), misfits)))
}

// --- the layout of a track --------------------------------------------------------------------
//
// `worker/warehouse/layout.py`'s `lay_out` is the reference: `TrackLayout.track` lays out the
// common shape of a track the same way (the same rows, keys in the same order, values of the
// same types) and declines (None) everything else, which the Python path then lays out or
// words as an error: input that is not UTF-8 or holds a backslash, a duplicate key (among the
// keys read; in any object of `context` or `properties`), nesting deeper than `MAX_DEPTH`, an
// array in `context` or `properties` (stored as orjson's JSON text), a number with an exponent,
// an integer beyond 64 bits, a fraction of more than 15 digits, a message that is not a track,
// an id, a name or a time that is not a non-empty string, two names that become one column, an
// event whose table is empty or one of Segment's own.

use super::Parser;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a: names are short, and SipHash's defence against chosen collisions costs more than
/// the lookup (the maps are bounded by `MAX_CACHED` and cleared past it).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Names<V> = HashMap<String, V, BuildHasherDefault<Fnv>>;

const MAX_DEPTH: u32 = 64;
/// Columns and paths kept between calls; past this many, forgotten (names chosen by senders).
const MAX_CACHED: usize = 65_536;
/// PostgreSQL's identifier limit, in bytes (`MAX_NAME_BYTES`); names are ASCII by then.
const MAX_NAME_BYTES: usize = 63;
/// The message members the layout reads besides the common fields' (the others are checked
/// and stepped over).
const READ: [&str; 5] = ["type", "event", "messageId", "context", "properties"];

enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Obj(Vec<(&'a str, Val<'a>)>),
}

/// A JSON value of `context` or `properties`; None to decline.
fn value<'a>(p: &mut Parser<'a>, depth: u32) -> Option<Val<'a>> {
    p.ws();
    match *p.s.get(p.i)? {
        b'"' => p.string().map(Val::Str),
        b'{' => {
            if depth >= MAX_DEPTH {
                return None;
            }
            p.i += 1;
            let mut members: Vec<(&'a str, Val<'a>)> = Vec::with_capacity(8);
            p.members(|p, key| {
                if members.iter().any(|(seen, _)| *seen == key) {
                    return None;
                }
                let member = value(p, depth + 1)?;
                members.push((key, member));
                Some(())
            })?;
            Some(Val::Obj(members))
        }
        b't' => p.literal(b"true").map(|()| Val::Bool(true)),
        b'f' => p.literal(b"false").map(|()| Val::Bool(false)),
        b'n' => p.literal(b"null").map(|()| Val::Null),
        b'-' | b'0'..=b'9' => {
            let start = p.i;
            p.number()?;
            // SAFETY: a number's bytes are ASCII
            let text = unsafe { std::str::from_utf8_unchecked(&p.s[start..p.i]) };
            if text.contains('.') {
                // few enough digits that any correctly rounded parser reads the same double
                let digits = text.bytes().filter(u8::is_ascii_digit).count();
                (digits <= 15).then(|| text.parse().ok().map(Val::Float))?
            } else {
                text.parse().ok().map(Val::Int)
            }
        }
        _ => None, // an array, or not JSON
    }
}

/// `name` in snake_case, as `layout.snake_case` writes it (go-snakecase's rules).
fn snake_case(name: &str) -> String {
    let lower_or_digit = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let upper_or_digit = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let s = name.as_bytes();
    let n = s.len();
    let mut i = 0;
    while i < n && (lower_or_digit(s[i]) || (s[i] == b'_' && i < n - 1 && lower_or_digit(s[i + 1])))
    {
        i += 1;
    }
    if i == n {
        return name.to_owned();
    }
    if i > 0 && s[i - 1].is_ascii_digit() {
        i -= 1;
    }
    let mut out: Vec<u8> = s[..i].to_vec();
    while i < n {
        if !s[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        if !out.is_empty() {
            out.push(b'_');
        }
        while i < n && upper_or_digit(s[i]) {
            out.push(s[i].to_ascii_lowercase());
            i += 1;
        }
        while i < n && lower_or_digit(s[i]) {
            out.push(s[i]);
            i += 1;
        }
    }
    // SAFETY: every byte pushed is ASCII, or a prefix of `name` ending before an ASCII byte
    unsafe { String::from_utf8_unchecked(out) }
}

/// The column a `_`-joined path becomes (`layout.column_name`): snake_case, at most 63 bytes
/// ("" when no letter or digit is left). snake_case is ASCII, so 63 bytes are 63 characters.
fn column_name(path: &str) -> String {
    let mut column = snake_case(path);
    column.truncate(MAX_NAME_BYTES);
    column
}

/// One row's columns being gathered: column ids and values, in order.
struct Gathered<'a> {
    columns: Vec<u32>,
    values: Vec<PyVal<'a>>,
}

/// A track laid out, borrowing from its bytes: what `track` makes dicts of and `encode` COPY
/// rows of. `event` holds the common columns' ids (`taken` of them) and then the properties'
/// columns and values.
struct LaidTrack<'a> {
    message_id: &'a str,
    table: String,
    common: Gathered<'a>,
    event: Gathered<'a>,
    taken: usize,
    discarded: Vec<String>,
}

enum PyVal<'a> {
    Str(&'a str),
    /// the event's table name (`LaidTrack::table`), the value of column `event`
    Table,
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// The common shape of a track, laid out as `layout.lay_out` does (see above).
#[pyclass(module = "autopilot_native")]
pub struct TrackLayout {
    /// column names, by id, as Python strings
    names: Vec<(String, Py<PyString>)>,
    ids: Names<u32>,
    /// path -> column id (`u32::MAX`: a path with no letter or digit)
    paths: Names<u32>,
    /// ids of the columns every track has: id, the common fields, event and event_text, and
    /// those of an event table's fixed part (see `TrackLayout::fixed`)
    fixed: Vec<u32>,
    /// Segment's own tables (`layout.RESERVED_TABLES`), given by the Python layout
    reserved_tables: Vec<String>,
    /// an event table's fixed columns, which properties never overwrite (`layout._EVENT`)
    event_columns: Vec<String>,
    /// (column, message member) of the common fields, in order (`layout._COMMON_FIELDS`)
    common_fields: Vec<(String, String)>,
    /// how many times the names were forgotten: a `DeferredTrack`'s column ids are of one
    generation: u64,
}

const NO_COLUMN: u32 = u32::MAX;

impl TrackLayout {
    /// Forgets the names and paths once past `MAX_CACHED` (senders choose them).
    fn clear_if_full(&mut self) {
        if self.names.len() > MAX_CACHED || self.paths.len() > MAX_CACHED {
            self.names.clear();
            self.ids.clear();
            self.paths.clear();
            self.fixed.clear();
            self.generation += 1;
        }
    }

    /// The track `raw` laid out (see above), or None to decline it.
    fn lay_out<'a>(&mut self, py: Python<'_>, raw: &'a [u8]) -> Option<LaidTrack<'a>> {
        let fixed = self.fixed(py);
        let mut p = Parser::new(raw)?;
        // the members read; the others are checked and stepped over
        let mut fields: Vec<(&str, Val<'_>)> = Vec::with_capacity(12);
        p.open()?;
        let common_fields = &self.common_fields;
        let read = p.members(|p, key| {
            if READ.contains(&key) || common_fields.iter().any(|(_, member)| member == key) {
                if fields.iter().any(|(seen, _)| *seen == key) {
                    return None;
                }
                let member = value(p, 1)?;
                fields.push((key, member));
                Some(())
            } else {
                p.skip(1)
            }
        });
        p.ws();
        if read.is_none() || p.i != raw.len() {
            return None;
        }
        let field = |name: &str| fields.iter().find(|(key, _)| *key == name).map(|(_, v)| v);
        if !matches!(field("type"), Some(Val::Str("track"))) {
            return None;
        }
        let (Some(Some(message_id)), Some(Some(event_text))) = (
            optional_text(field("messageId")),
            optional_text(field("event")),
        ) else {
            return None;
        };
        let table = column_name(event_text);
        if table.is_empty() || self.reserved_tables.contains(&table) {
            return None;
        }
        // the common columns: id, the common fields, the context, event and event_text
        let mut common = Gathered {
            columns: Vec::with_capacity(24),
            values: Vec::with_capacity(24),
        };
        common.columns.push(fixed[0]);
        common.values.push(PyVal::Str(message_id));
        let n_common = self.common_fields.len();
        for (at, (_, key)) in self.common_fields.iter().enumerate() {
            let text = optional_text(field(key))?;
            if let Some(text) = text {
                common.columns.push(fixed[1 + at]);
                common.values.push(PyVal::Str(text));
            }
        }
        let mut discarded: Vec<String> = Vec::new();
        match field("context") {
            None | Some(Val::Null) => {}
            Some(Val::Obj(context)) => {
                self.flatten(
                    py,
                    context,
                    &mut String::from("context"),
                    &mut String::from("context"),
                    &mut common,
                    &[],
                    &[],
                    &mut discarded,
                )?;
            }
            Some(_) => return None,
        }
        for (id, value) in [
            (fixed[1 + n_common], PyVal::Table),
            (fixed[2 + n_common], PyVal::Str(event_text)),
        ] {
            if common.columns.contains(&id) {
                // a context column cannot be named so (it starts with `context`): never here
                return None;
            }
            common.columns.push(id);
            common.values.push(value);
        }
        let properties = match field("properties") {
            None | Some(Val::Null) => &[][..],
            Some(Val::Obj(properties)) => properties.as_slice(),
            Some(_) => return None,
        };
        let reserved = &fixed[3 + n_common..];
        let taken = common.columns.clone();
        let mut event = Gathered {
            columns: taken.clone(),
            values: Vec::new(),
        };
        self.flatten(
            py,
            properties,
            &mut String::new(),
            &mut String::from("properties"),
            &mut event,
            reserved,
            &taken,
            &mut discarded,
        )?;
        Some(LaidTrack {
            message_id,
            table,
            common,
            event,
            taken: taken.len(),
            discarded,
        })
    }

    /// The ids of `id`, the common fields' columns, `event`, `event_text`, then of the event
    /// table's fixed columns (made once, and again after the caches were cleared).
    fn fixed(&mut self, py: Python<'_>) -> Vec<u32> {
        if self.fixed.is_empty() {
            let mut names = vec!["id".to_owned()];
            names.extend(self.common_fields.iter().map(|(column, _)| column.clone()));
            names.extend(["event".to_owned(), "event_text".to_owned()]);
            names.extend(self.event_columns.iter().cloned());
            self.fixed = names.iter().map(|c| self.column_id(py, c)).collect();
        }
        self.fixed.clone()
    }

    fn column_id(&mut self, py: Python<'_>, column: &str) -> u32 {
        if let Some(&id) = self.ids.get(column) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(NO_COLUMN - 1);
        self.names
            .push((column.to_owned(), PyString::new(py, column).unbind()));
        self.ids.insert(column.to_owned(), id);
        id
    }

    /// The column id of a path (`NO_COLUMN` when it has no letter or digit).
    fn path_column(&mut self, py: Python<'_>, path: &str) -> u32 {
        if let Some(&id) = self.paths.get(path) {
            return id;
        }
        let column = column_name(path);
        let id = if column.is_empty() {
            NO_COLUMN
        } else {
            self.column_id(py, &column)
        };
        self.paths.insert(path.to_owned(), id);
        id
    }

    /// `layout._flatten`: `obj`'s leaves into `into`; discarded source paths into `discarded`.
    #[allow(clippy::too_many_arguments)] // recursive, as the Python path's
    /// `path` holds the prefix (the `_`-joined path of `obj`, "" at the top of `properties`)
    /// and `source` the `.`-joined path of `obj` in the message; each member's is written
    /// after them in place, and both are left as they were.
    fn flatten<'a>(
        &mut self,
        py: Python<'_>,
        obj: &[(&'a str, Val<'a>)],
        path: &mut String,
        source: &mut String,
        into: &mut Gathered<'a>,
        reserved: &[u32],
        taken: &[u32],
        discarded: &mut Vec<String>,
    ) -> Option<()> {
        let prefix = path.len();
        for (key, member) in obj {
            if matches!(member, Val::Null) {
                continue;
            }
            path.truncate(prefix);
            if prefix > 0 {
                path.push('_');
            }
            path.push_str(key);
            let value = match member {
                Val::Obj(inner) => {
                    let within = source.len();
                    source.push('.');
                    source.push_str(key);
                    self.flatten(py, inner, path, source, into, reserved, taken, discarded)?;
                    source.truncate(within);
                    continue;
                }
                Val::Null => continue,
                Val::Str(text) => PyVal::Str(text),
                Val::Bool(flag) => PyVal::Bool(*flag),
                Val::Int(number) => PyVal::Int(*number),
                Val::Float(number) => PyVal::Float(*number),
            };
            let column = self.path_column(py, path);
            if column != NO_COLUMN && (reserved.contains(&column) || taken.contains(&column)) {
                discarded.push(format!("{source}.{key}"));
                continue;
            }
            if column == NO_COLUMN || into.columns.contains(&column) {
                return None; // a collision: the Python path words it
            }
            into.columns.push(column);
            into.values.push(value);
        }
        path.truncate(prefix);
        Some(())
    }

    fn put<'py>(
        &self,
        py: Python<'py>,
        row: &Bound<'py, PyDict>,
        column: u32,
        value: &PyVal<'_>,
        table: &str,
    ) -> PyResult<()> {
        let key = self.names[column as usize].1.bind(py);
        match value {
            PyVal::Str(text) => row.set_item(key, PyString::new(py, text)),
            PyVal::Table => row.set_item(key, PyString::new(py, table)),
            PyVal::Bool(flag) => row.set_item(key, PyBool::new(py, *flag)),
            PyVal::Int(number) => row.set_item(key, number),
            PyVal::Float(number) => row.set_item(key, number),
        }
    }
}

/// A string field of the message: absent, null or "" is None; any other non-string declines.
fn optional_text<'a>(member: Option<&Val<'a>>) -> Option<Option<&'a str>> {
    match member {
        None | Some(Val::Null) => Some(None),
        Some(Val::Str("")) => Some(None),
        Some(Val::Str(text)) => Some(Some(text)),
        Some(_) => None,
    }
}

#[pymethods]
impl TrackLayout {
    /// The layout with the Python layout's tables: Segment's own table names, an event
    /// table's fixed columns and the common fields as (column, message member).
    #[new]
    fn new(
        reserved_tables: Vec<String>,
        event_columns: Vec<String>,
        common_fields: Vec<(String, String)>,
    ) -> Self {
        Self {
            names: Vec::new(),
            ids: Names::default(),
            paths: Names::default(),
            fixed: Vec::new(),
            reserved_tables,
            event_columns,
            common_fields,
            generation: 0,
        }
    }

    /// `(id, event table, tracks row, event row, discarded)` of the track `raw`, as
    /// `layout.lay_out` makes them, or None to hand `raw` to the Python path.
    #[allow(clippy::type_complexity)]
    fn track<'py>(
        &mut self,
        py: Python<'py>,
        raw: &[u8],
    ) -> PyResult<
        Option<(
            Bound<'py, PyString>,
            Bound<'py, PyString>,
            Bound<'py, PyDict>,
            Bound<'py, PyDict>,
            Vec<String>,
        )>,
    > {
        self.clear_if_full();
        let Some(laid) = self.lay_out(py, raw) else {
            return Ok(None);
        };
        let LaidTrack {
            message_id,
            table,
            common,
            event,
            taken,
            discarded,
        } = laid;
        let tracks_row = PyDict::new(py);
        for (column, value) in common.columns.iter().zip(&common.values) {
            self.put(py, &tracks_row, *column, value, &table)?;
        }
        let event_row = tracks_row.copy()?;
        let properties_columns = &event.columns[taken..];
        for (column, value) in properties_columns.iter().zip(&event.values) {
            self.put(py, &event_row, *column, value, &table)?;
        }
        let table_id = self.column_id(py, &table);
        let table = self.names[table_id as usize].1.bind(py).clone();
        let id = PyString::new(py, message_id);
        Ok(Some((id, table, tracks_row, event_row, discarded)))
    }

    /// `(id, deferred track, discarded)` of the track `raw` when `track` would take it, without
    /// its rows: the deferred track keeps what `encode` makes them of, straight into COPY
    /// data; None to hand `raw` to the Python path.
    #[allow(clippy::type_complexity)]
    fn peek<'py>(
        &mut self,
        py: Python<'py>,
        raw: &Bound<'py, PyBytes>,
    ) -> PyResult<
        Option<(
            Bound<'py, PyString>,
            Bound<'py, DeferredTrack>,
            Bound<'py, PyTuple>,
        )>,
    > {
        self.clear_if_full();
        let bytes = raw.as_bytes();
        let Some(laid) = self.lay_out(py, bytes) else {
            return Ok(None);
        };
        let table_id = self.column_id(py, &laid.table);
        let table = self.names[table_id as usize].1.clone_ref(py);
        let base = bytes.as_ptr() as usize;
        let owned = |columns: &[u32], values: &[PyVal<'_>]| -> Vec<(u32, Owned)> {
            columns
                .iter()
                .zip(values)
                .map(|(column, value)| (*column, Owned::of(value, base)))
                .collect()
        };
        let common = owned(&laid.common.columns, &laid.common.values);
        let properties = owned(&laid.event.columns[laid.taken..], &laid.event.values);
        let deferred = DeferredTrack {
            raw: raw.clone().unbind(),
            table,
            table_text: laid.table,
            id: Owned::range(laid.message_id, base),
            generation: self.generation,
            common,
            properties,
        };
        Ok(Some((
            PyString::new(py, laid.message_id),
            Bound::new(py, deferred)?,
            PyTuple::new(py, laid.discarded)?,
        )))
    }

    /// The rows of the deferred tracks `tracks` (made by `peek`) as binary COPY data, table by
    /// table, for the tables `tables` names: table -> (column -> position, kinds, position of
    /// id, position of uuid_ts or -1), as `copy_rows` takes them. The tracks table is
    /// `tracks_table` (each track's tracks row), the others the tracks' event tables (each
    /// track's event row). Answers table -> (COPY data, rows, misfits by position) for each
    /// table it took, and the positions of the tracks with a row it did not take: of a table
    /// not in `tables`, with a column not in its `index`, or with an id that does not fit (the
    /// Python path lays those tracks out and fits those rows). None
    /// when a track was deferred before the names were last forgotten (the Python path then
    /// does all of them).
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (tracks, tracks_table, tables, uuid_ts, fit))]
    fn encode<'py>(
        &mut self,
        py: Python<'py>,
        tracks: &Bound<'py, PyList>,
        tracks_table: &str,
        tables: &Bound<'py, PyDict>,
        uuid_ts: i64,
        fit: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyDict>, Vec<usize>)>> {
        self.clear_if_full();
        let mut plans: Names<Plan> = Names::default();
        for (name, spec) in tables.iter() {
            let name: String = name.extract()?;
            let (index, kinds, id_at, uuid_ts_at): (Bound<'py, PyDict>, Vec<u8>, usize, isize) =
                spec.extract()?;
            plans.insert(name, Plan::new(self, &index, kinds, id_at, uuid_ts_at)?);
        }
        let mut values: Vec<u8> = Vec::with_capacity(1024);
        let mut fields: Vec<Field> = Vec::with_capacity(64);
        for track in tracks.iter() {
            let track = track.downcast_exact::<DeferredTrack>()?;
            let track = track.get();
            if track.generation != self.generation {
                return Ok(None);
            }
            let raw = track.raw.bind(py).as_bytes();
            let message_id = Owned::text(raw, track.id);
            let table = track.table_text.as_str();
            // the tracks row (the common columns), then the event row (those and the properties)
            for (name, properties) in [(tracks_table, &[][..]), (table, &track.properties[..])] {
                if let Some(plan) = plans.get_mut(name) {
                    let row = track.common.iter().chain(properties);
                    let row = row.map(|(c, v)| (*c, v.borrowed(raw)));
                    plan.add(
                        py,
                        message_id,
                        table,
                        row,
                        uuid_ts,
                        fit,
                        &mut values,
                        &mut fields,
                    )?;
                }
            }
        }
        let taken = |table: &str| plans.get(table).is_some_and(|plan| !plan.declined);
        let mut left: Vec<usize> = Vec::new();
        for (at, track) in tracks.iter().enumerate() {
            let track = track.downcast_exact::<DeferredTrack>()?.get();
            if !taken(tracks_table) || !taken(&track.table_text) {
                left.push(at);
            }
        }
        let out = PyDict::new(py);
        for (name, plan) in plans {
            if plan.declined || plan.rows.is_empty() {
                continue;
            }
            let count = plan.rows.len();
            let (data, misfits) = plan.finish();
            out.set_item(name, (PyBytes::new(py, &data), count, misfits))?;
        }
        Ok(Some((out, left)))
    }
}

/// A track `TrackLayout::peek` laid out, for `TrackLayout::encode`: its bytes, its event
/// table, and its columns (ids of the layout's generation) with their values (ranges of the
/// bytes, which Python keeps unchanged).
#[pyclass(module = "autopilot_native", frozen)]
pub struct DeferredTrack {
    /// the track as it was read
    #[pyo3(get)]
    raw: Py<PyBytes>,
    /// its event table
    #[pyo3(get)]
    table: Py<PyString>,
    table_text: String,
    id: (u32, u32),
    generation: u64,
    /// the tracks row's columns and values (the event row's first ones)
    common: Vec<(u32, Owned)>,
    /// the event row's other columns and values
    properties: Vec<(u32, Owned)>,
}

/// A value of a deferred track: a string as its range of the track's bytes.
#[derive(Clone, Copy)]
enum Owned {
    Str((u32, u32)),
    Table,
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Owned {
    fn range(text: &str, base: usize) -> (u32, u32) {
        let start = text.as_ptr() as usize - base;
        // a track is far smaller than 4 GiB (Kafka's records are)
        (start as u32, (start + text.len()) as u32)
    }

    fn of(value: &PyVal<'_>, base: usize) -> Self {
        match value {
            PyVal::Str(text) => Self::Str(Self::range(text, base)),
            PyVal::Table => Self::Table,
            PyVal::Bool(flag) => Self::Bool(*flag),
            PyVal::Int(number) => Self::Int(*number),
            PyVal::Float(number) => Self::Float(*number),
        }
    }

    fn text(raw: &[u8], (start, end): (u32, u32)) -> &str {
        // SAFETY: the range was taken of a `&str` borrowed from these bytes (UTF-8 as a whole,
        // see `Parser::new`), and Python's bytes do not change
        unsafe { std::str::from_utf8_unchecked(&raw[start as usize..end as usize]) }
    }

    fn borrowed<'a>(&self, raw: &'a [u8]) -> PyVal<'a> {
        match *self {
            Self::Str(range) => PyVal::Str(Self::text(raw, range)),
            Self::Table => PyVal::Table,
            Self::Bool(flag) => PyVal::Bool(flag),
            Self::Int(number) => PyVal::Int(number),
            Self::Float(number) => PyVal::Float(number),
        }
    }
}

/// One table's rows being encoded by `TrackLayout::encode`.
struct Plan {
    /// position of each column id of the layout (-1: not a column of the table)
    positions: Vec<i32>,
    kinds: Vec<u8>,
    id_at: usize,
    uuid_ts_at: Option<usize>,
    /// the rows' ids and encoded fields, one after the other
    ids: Vec<u8>,
    data: Vec<u8>,
    /// each row's id and fields (ranges of `ids` and `data`), sorted by id at the end
    rows: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    misfits: Vec<u64>,
    declined: bool,
}

impl Plan {
    fn new(
        layout: &TrackLayout,
        index: &Bound<'_, PyDict>,
        kinds: Vec<u8>,
        id_at: usize,
        uuid_ts_at: isize,
    ) -> PyResult<Self> {
        let mut positions = vec![-1i32; layout.names.len()];
        let mut declined = i16::try_from(kinds.len()).is_err() || id_at >= kinds.len();
        declined |= kinds.get(id_at) != Some(&TEXT);
        for (name, at) in index.iter() {
            let name = name.downcast_exact::<PyString>()?;
            let at: usize = at.extract()?;
            if at >= kinds.len() {
                declined = true;
            }
            if let Some(&column) = layout.ids.get(name.to_str()?) {
                positions[column as usize] = i32::try_from(at).unwrap_or(-1);
            }
        }
        let uuid_ts_at = usize::try_from(uuid_ts_at)
            .ok()
            .filter(|&at| at < kinds.len());
        Ok(Self {
            positions,
            misfits: vec![0; kinds.len()],
            kinds,
            id_at,
            uuid_ts_at,
            ids: Vec::new(),
            data: Vec::new(),
            rows: Vec::new(),
            declined,
        })
    }

    /// One row of `laid`, (column id, value) pairs, encoded; the table is declined at the
    /// first column it does not have or an id that does not fit.
    #[allow(clippy::too_many_arguments)]
    fn add<'a>(
        &mut self,
        py: Python<'_>,
        message_id: &str,
        table: &str,
        row: impl Iterator<Item = (u32, PyVal<'a>)>,
        uuid_ts: i64,
        fit: &Bound<'_, PyAny>,
        values: &mut Vec<u8>,
        fields: &mut Vec<Field>,
    ) -> PyResult<()> {
        if self.declined {
            return Ok(());
        }
        values.clear();
        fields.clear();
        fields.extend((0..self.kinds.len()).map(|_| Field::Null));
        if let Some(at) = self.uuid_ts_at {
            values.extend_from_slice(&uuid_ts.to_be_bytes());
            fields[at] = Field::Bytes(0..8);
        }
        let mut misfits: Vec<usize> = Vec::new();
        for (column, value) in row {
            let at = self.positions.get(column as usize).copied().unwrap_or(-1);
            let Ok(at) = usize::try_from(at) else {
                self.declined = true;
                return Ok(());
            };
            let start = values.len();
            match put_val(py, values, &value, table, self.kinds[at], fit)? {
                None => {
                    self.declined = true;
                    return Ok(());
                }
                Some(true) => fields[at] = Field::Bytes(start..values.len()),
                Some(false) if at == self.id_at => {
                    self.declined = true;
                    return Ok(());
                }
                Some(false) => {
                    misfits.push(at);
                    fields[at] = Field::Null;
                }
            }
        }
        let Ok(count) = i16::try_from(fields.len()) else {
            self.declined = true;
            return Ok(());
        };
        let start = self.data.len();
        let data = &mut self.data;
        data.extend_from_slice(&count.to_be_bytes());
        for field in fields.iter() {
            match field {
                Field::Null => data.extend_from_slice(&(-1i32).to_be_bytes()),
                Field::Bytes(range) => {
                    let Ok(size) = i32::try_from(range.len()) else {
                        self.declined = true;
                        return Ok(());
                    };
                    data.extend_from_slice(&size.to_be_bytes());
                    data.extend_from_slice(&values[range.clone()]);
                }
            }
        }
        for at in misfits {
            self.misfits[at] += 1;
        }
        let id_start = self.ids.len();
        self.ids.extend_from_slice(message_id.as_bytes());
        self.rows
            .push((id_start..self.ids.len(), start..self.data.len()));
        Ok(())
    }

    /// The COPY data, rows in id order, and the misfits by position.
    fn finish(mut self) -> (Vec<u8>, Vec<u64>) {
        let ids = &self.ids;
        self.rows
            .sort_by(|a, b| ids[a.0.clone()].cmp(&ids[b.0.clone()]));
        let mut out = Vec::with_capacity(SIGNATURE.len() + self.data.len() + 2);
        out.extend_from_slice(SIGNATURE);
        for (_, row) in &self.rows {
            out.extend_from_slice(&self.data[row.clone()]);
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        (out, self.misfits)
    }
}

/// `put_value` for a value of a laid-out track (the same bytes as for the value `track`
/// puts in its dicts), asking `fit(value, kind)` for what the common cases leave: `Some(true)`
/// for a value that fit, `Some(false)` for a misfit (NULL), None to decline.
fn put_val(
    py: Python<'_>,
    out: &mut Vec<u8>,
    value: &PyVal<'_>,
    table: &str,
    kind: u8,
    fit: &Bound<'_, PyAny>,
) -> PyResult<Option<bool>> {
    let text = match value {
        PyVal::Str(text) => Some(*text),
        PyVal::Table => Some(table),
        _ => None,
    };
    match (text, value, kind) {
        (Some(text), _, TEXT) => {
            if text.as_bytes().contains(&0) {
                return Ok(Some(false));
            }
            out.extend_from_slice(text.as_bytes());
            return Ok(Some(true));
        }
        (Some(text), _, TIMESTAMP) => {
            if let Some(micros) = common_time(text.as_bytes()) {
                out.extend_from_slice(&micros.to_be_bytes());
                return Ok(Some(true));
            }
        }
        (None, PyVal::Bool(flag), BOOLEAN) => {
            out.push(u8::from(*flag));
            return Ok(Some(true));
        }
        (None, PyVal::Int(number), INTEGER) => {
            out.extend_from_slice(&number.to_be_bytes());
            return Ok(Some(true));
        }
        (None, PyVal::Float(number), FLOAT) => {
            out.extend_from_slice(&number.to_be_bytes());
            return Ok(Some(true));
        }
        _ => {}
    }
    let object: Bound<'_, PyAny> = match (text, value) {
        (Some(text), _) => PyString::new(py, text).into_any(),
        (None, PyVal::Bool(flag)) => PyBool::new(py, *flag).to_owned().into_any(),
        (None, PyVal::Int(number)) => number.into_pyobject(py)?.into_any(),
        (None, PyVal::Float(number)) => PyFloat::new(py, *number).into_any(),
        (None, _) => return Ok(None),
    };
    let fitted = fit.call1((object, kind))?;
    if fitted.is_none() {
        return Ok(Some(false));
    }
    Ok(put_fitted(out, &fitted, kind)?.map(|()| true))
}
