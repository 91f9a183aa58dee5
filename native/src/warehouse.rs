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
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

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
