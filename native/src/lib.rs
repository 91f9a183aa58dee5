//! The Autopilot Source's common shape, compiled: raw email event bytes in, the track's key and
//! bytes out, or `None` to hand the event to the Python path.
//!
//! `worker/source/mapping.py` is the reference and owns the data (the `type` spellings, the
//! messageId rule, the pre-encoded `integration(s)` objects). This module takes only what it can
//! map with certainty and declines everything else, so declining is always safe: the Python
//! path then maps the event or words its error. It declines, among others: any backslash in the
//! input (so no string holds an escape), invalid UTF-8, a byte-order mark, nesting deeper than
//! `MAX_DEPTH`, numbers with an exponent or longer than `MAX_NUMBER_LEN`, a duplicate known
//! key, a `type` spelling not in the table, a non-ASCII address, an `occurred_at` with an offset
//! other than `Z`, `+00:00` or `-00:00`, an id too long for a plain messageId, and test
//! deliveries. `contact_email` answers the intake's key from the same parse and checks (test
//! deliveries and long ids included: those are valid events, which `map` declines only because
//! the Python path skips or hashes them). `tests/unit/test_source_fast_path.py` holds what it
//! does take to the Python path, byte for byte.
//!
//! It also hashes Kafka keys for `worker/placement.py` (`murmur2`, `home_partition`), whose
//! Python `python_murmur2` is the reference.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::collections::HashMap;

mod warehouse;

/// Deeper nesting is declined (pydantic's parser refuses past 200; msgspec goes further).
const MAX_DEPTH: u32 = 64;
/// Longer numbers are declined (pydantic's parser refuses past 4,300 digits).
const MAX_NUMBER_LEN: usize = 100;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    /// A parser of `raw`, when it is UTF-8 without a backslash (so no string holds an escape).
    fn new(raw: &'a [u8]) -> Option<Self> {
        if memchr::memchr(b'\\', raw).is_some() || std::str::from_utf8(raw).is_err() {
            return None;
        }
        Some(Self { s: raw, i: 0 })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips white space, then takes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A string; the input holds no backslash, so its text is the bytes between the quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.ws();
        if *self.s.get(self.i)? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let end = start + memchr::memchr(b'"', self.s.get(start..)?)?;
        let text = &self.s[start..end];
        // a raw control character is not JSON (a fold, not `any`, so that it vectorises)
        if text.iter().fold(false, |control, &c| control | (c < 0x20)) {
            return None;
        }
        self.i = end + 1;
        // SAFETY: `s` was checked to be UTF-8 as a whole (see `Parser::new`), and a slice of it
        // between two ASCII quotes begins and ends on character boundaries.
        Some(unsafe { std::str::from_utf8_unchecked(text) })
    }

    /// Takes `null` if it is next: whether it did (`None` for a broken literal).
    fn null(&mut self) -> Option<bool> {
        self.ws();
        if self.s.get(self.i) != Some(&b'n') {
            return Some(false);
        }
        self.literal(b"null").map(|()| true)
    }

    fn nullable_string(&mut self) -> Option<Option<&'a str>> {
        if self.null()? {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        self.ws();
        match self.s.get(self.i)? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    fn nullable_boolean(&mut self) -> Option<Option<bool>> {
        if self.null()? {
            Some(None)
        } else {
            self.boolean().map(Some)
        }
    }

    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.s.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            let first = self.i;
            self.digits();
            if self.i == first {
                return None;
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) || self.i - start > MAX_NUMBER_LEN {
            return None;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    /// Any JSON value nobody reads, checked and stepped over.
    fn skip(&mut self, depth: u32) -> Option<()> {
        self.ws();
        match *self.s.get(self.i)? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.members(|parser, _| parser.skip(depth + 1))
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    return if self.eat(b']') { Some(()) } else { None };
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// The members of an object whose `{` was taken: `member(parser, key)` reads each value.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            member(self, key)?;
            if self.eat(b',') {
                continue;
            }
            return if self.eat(b'}') { Some(()) } else { None };
        }
    }

    /// `{` of an object, after white space.
    fn open(&mut self) -> Option<()> {
        if self.eat(b'{') {
            Some(())
        } else {
            None
        }
    }
}

/// Marks `bit` seen in `seen`; `None` when it was already (a duplicate key: declined).
fn first(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

#[derive(Default)]
struct Contact<'a> {
    email: &'a str,
    contact_id: &'a str,
    user_id: Option<&'a str>,
}

#[derive(Default)]
struct Email<'a> {
    id: &'a str,
    subject: Option<&'a str>,
    name: Option<&'a str>,
    transactional: Option<bool>,
}

/// A journey's or a link's `id` and its `name` or `url`.
#[derive(Default)]
struct Pair<'a> {
    id: Option<&'a str>,
    other: Option<&'a str>,
}

#[derive(Default)]
struct Event<'a> {
    id: &'a str,
    kind: &'a str,
    occurred_at: &'a str,
    contact: Contact<'a>,
    email: Email<'a>,
    journey: Pair<'a>,
    link: Option<Pair<'a>>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    test: bool,
}

fn contact<'a>(p: &mut Parser<'a>) -> Option<Contact<'a>> {
    let mut out = Contact::default();
    let mut seen = 0u32;
    p.open()?;
    p.members(|p, key| {
        match key {
            "email" => {
                first(&mut seen, 1)?;
                out.email = p.string()?;
            }
            "contact_id" => {
                first(&mut seen, 2)?;
                out.contact_id = p.string().filter(|text| !text.is_empty())?;
            }
            "user_id" => {
                first(&mut seen, 4)?;
                out.user_id = p.nullable_string()?;
            }
            _ => p.skip(2)?,
        }
        Some(())
    })?;
    (seen & 3 == 3).then_some(out)
}

fn email<'a>(p: &mut Parser<'a>) -> Option<Email<'a>> {
    let mut out = Email::default();
    let mut seen = 0u32;
    p.open()?;
    p.members(|p, key| {
        match key {
            "id" => {
                first(&mut seen, 1)?;
                out.id = p.string().filter(|text| !text.is_empty())?;
            }
            "subject" => {
                first(&mut seen, 2)?;
                out.subject = p.nullable_string()?;
            }
            "name" => {
                first(&mut seen, 4)?;
                out.name = p.nullable_string()?;
            }
            "transactional" => {
                first(&mut seen, 8)?;
                out.transactional = p.nullable_boolean()?;
            }
            _ => p.skip(2)?,
        }
        Some(())
    })?;
    (seen & 1 == 1).then_some(out)
}

/// `null`, or an object whose `id` and `other_key` are strings or null.
fn pair<'a>(p: &mut Parser<'a>, other_key: &str) -> Option<Option<Pair<'a>>> {
    if p.null()? {
        return Some(None);
    }
    let mut out = Pair::default();
    let mut seen = 0u32;
    p.open()?;
    p.members(|p, key| {
        if key == "id" {
            first(&mut seen, 1)?;
            out.id = p.nullable_string()?;
        } else if key == other_key {
            first(&mut seen, 2)?;
            out.other = p.nullable_string()?;
        } else {
            p.skip(2)?;
        }
        Some(())
    })?;
    Some(Some(out))
}

fn event(raw: &[u8]) -> Option<Event<'_>> {
    let mut p = Parser::new(raw)?;
    let mut out = Event::default();
    let mut seen = 0u32;
    p.open()?;
    p.members(|p, key| {
        match key {
            "id" => {
                first(&mut seen, 1)?;
                out.id = p.string().filter(|text| !text.is_empty())?;
            }
            "type" => {
                first(&mut seen, 2)?;
                out.kind = p.string()?;
            }
            "occurred_at" => {
                first(&mut seen, 4)?;
                out.occurred_at = p.string()?;
            }
            "contact" => {
                first(&mut seen, 8)?;
                out.contact = contact(p)?;
            }
            "email" => {
                first(&mut seen, 16)?;
                out.email = email(p)?;
            }
            "journey" => {
                first(&mut seen, 32)?;
                out.journey = pair(p, "name")?.unwrap_or_default();
            }
            "link" => {
                first(&mut seen, 64)?;
                out.link = pair(p, "url")?;
            }
            "ip" => {
                first(&mut seen, 128)?;
                out.ip = p.nullable_string()?;
            }
            "user_agent" => {
                first(&mut seen, 256)?;
                out.user_agent = p.nullable_string()?;
            }
            "test" => {
                first(&mut seen, 512)?;
                out.test = p.boolean()?;
            }
            _ => p.skip(1)?,
        }
        Some(())
    })?;
    p.ws();
    (p.i == raw.len() && seen & 31 == 31).then_some(out)
}

fn two_digits(text: &[u8], at: usize) -> Option<u32> {
    match (text.get(at)?, text.get(at + 1)?) {
        (tens @ b'0'..=b'9', ones @ b'0'..=b'9') => {
            Some(u32::from(tens - b'0') * 10 + u32::from(ones - b'0'))
        }
        _ => None,
    }
}

/// `occurred_at` as the track writes it (`YYYY-MM-DDTHH:MM:SS.mmmZ`), when it is
/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}]` then `Z`, `+00:00` or `-00:00` and a real date-time.
fn timestamp(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 20 || [b[4], b[7], b[10], b[13], b[16]] != *b"--T::" {
        return None;
    }
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let (month, day) = (two_digits(b, 5)?, two_digits(b, 8)?);
    let (hour, minute, second) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year == 0 || day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut fraction = &b[19..19];
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return None;
        }
        fraction = &rest[1..=digits];
        rest = &rest[1 + digits..];
    }
    if !matches!(rest, b"Z" | b"+00:00" | b"-00:00") {
        return None;
    }
    let mut out = String::with_capacity(24);
    out.push_str(&text[..19]);
    out.push('.');
    for index in 0..3 {
        out.push(char::from(*fraction.get(index).unwrap_or(&b'0')));
    }
    out.push('Z');
    Some(out)
}

/// `contact.email` as an address, when it is ASCII: one `@`, not at either end, no space (raw
/// control characters are not JSON, and escapes were declined).
fn plain_address(address: &str) -> bool {
    let b = address.as_bytes();
    address.is_ascii()
        && !b.contains(&b' ')
        && b.iter().filter(|&&c| c == b'@').count() == 1
        && b.first() != Some(&b'@')
        && b.last() != Some(&b'@')
}

/// Appends `,"name":"text"` (`name` given with its quotes, comma and colon).
fn put(out: &mut Vec<u8>, name: &[u8], text: &str) {
    out.extend_from_slice(name);
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn put_some(out: &mut Vec<u8>, name: &[u8], text: Option<&str>) {
    if let Some(text) = text {
        put(out, name, text);
    }
}

/// The Autopilot Source's mapping for events of the common shape (see the module doc).
#[pyclass(frozen, module = "autopilot_native")]
struct EmailEventMapper {
    /// `type` spelling -> (canonical type, Segment event name)
    types: HashMap<String, (String, String)>,
    integrations: Vec<u8>,
    message_id_prefix: String,
    plain_id_max: usize,
}

/// A valid event of the common shape: the event, its (canonical type, Segment event name) and
/// its `timestamp` as the track writes it.
type Checked<'a> = (Event<'a>, &'a (String, String), String);

impl EmailEventMapper {
    /// `raw` when it is a valid event of the common shape this module is sure of (see the module
    /// doc), test deliveries and long ids included.
    fn checked<'a>(&'a self, raw: &'a [u8]) -> Option<Checked<'a>> {
        let event = event(raw)?;
        let kind = self.types.get(event.kind)?;
        let link_url = event.link.as_ref().and_then(|link| link.other);
        if kind.0 == "email_clicked" && link_url.is_none_or(str::is_empty) {
            return None;
        }
        if !plain_address(event.contact.email) {
            return None;
        }
        let timestamp = timestamp(event.occurred_at)?;
        Some((event, kind, timestamp))
    }
}

#[pymethods]
impl EmailEventMapper {
    #[new]
    #[pyo3(signature = (*, types, integrations, message_id_prefix, plain_id_max))]
    fn new(
        types: HashMap<String, (String, String)>,
        integrations: Vec<u8>,
        message_id_prefix: String,
        plain_id_max: usize,
    ) -> Self {
        Self {
            types,
            integrations,
            message_id_prefix,
            plain_id_max,
        }
    }

    /// `(key, track bytes)` for `raw`, or None to hand it to the Python path.
    #[pyo3(signature = (raw, learned_user_id, received, integration))]
    fn map<'py>(
        &self,
        py: Python<'py>,
        raw: &[u8],
        learned_user_id: Option<&str>,
        received: &str,
        integration: &[u8],
    ) -> Option<(Bound<'py, PyString>, Bound<'py, PyBytes>)> {
        let (event, (canonical, event_name), timestamp) = self.checked(raw)?;
        if event.test || event.id.chars().count() > self.plain_id_max {
            return None; // a test delivery (the Python path skips it) or a hashed messageId
        }
        let link = event.link.unwrap_or_default();
        let contact = &event.contact;
        let user_id = [contact.user_id, learned_user_id]
            .into_iter()
            .flatten()
            .find(|id| !id.is_empty());
        let key = match user_id {
            Some(user_id) => user_id.to_owned(),
            None => contact.email.to_ascii_lowercase(),
        };

        let mut out = Vec::with_capacity(raw.len() + 400);
        put(&mut out, br#"{"type":"track","event":""#, event_name);
        match user_id {
            Some(user_id) => put(&mut out, br#","userId":""#, user_id),
            None => put(&mut out, br#","anonymousId":""#, contact.email),
        }
        out.extend_from_slice(br#","messageId":""#);
        out.extend_from_slice(self.message_id_prefix.as_bytes());
        put(&mut out, b"", event.id);
        put(&mut out, br#","timestamp":""#, &timestamp);
        put(&mut out, br#","originalTimestamp":""#, &timestamp);
        put(&mut out, br#","sentAt":""#, received);
        put(&mut out, br#","receivedAt":""#, received);
        put(
            &mut out,
            br#","context":{"traits":{"email":""#,
            contact.email,
        );
        put(&mut out, br#","contact_id":""#, contact.contact_id);
        out.extend_from_slice(br#"},"integration":"#);
        out.extend_from_slice(integration);
        put_some(&mut out, br#","ip":""#, event.ip);
        put_some(&mut out, br#","userAgent":""#, event.user_agent);
        out.extend_from_slice(br#"},"integrations":"#);
        out.extend_from_slice(&self.integrations);
        put(&mut out, br#","properties":{"event":""#, canonical);
        put_some(&mut out, br#","campaign_id":""#, event.journey.id);
        put_some(&mut out, br#","campaign_name":""#, event.journey.other);
        put(&mut out, br#","email_id":""#, event.email.id);
        put_some(&mut out, br#","email_subject":""#, event.email.subject);
        put_some(&mut out, br#","email_name":""#, event.email.name);
        if let Some(transactional) = event.email.transactional {
            out.extend_from_slice(if transactional {
                br#","transactional":true"#.as_slice()
            } else {
                br#","transactional":false"#.as_slice()
            });
        }
        put_some(&mut out, br#","link_id":""#, link.id);
        put_some(&mut out, br#","link_url":""#, link.other);
        out.extend_from_slice(b"}}");
        Some((PyString::new(py, &key), PyBytes::new(py, &out)))
    }

    /// `contact.email` of `raw` (the intake's key, before lowercasing) when `raw` is an event
    /// `map` would take but for being a test delivery or having a long id; else None, to hand
    /// it to the Python path.
    fn contact_email<'py>(&self, py: Python<'py>, raw: &[u8]) -> Option<Bound<'py, PyString>> {
        let (event, ..) = self.checked(raw)?;
        Some(PyString::new(py, event.contact.email))
    }
}

/// Kafka's murmur2 (Java's `Utils.murmur2`) as an unsigned 32-bit int: `worker/placement.py`'s
/// `python_murmur2` is the reference.
#[pyfunction]
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    // Java's int length (a byte[] never reaches 2^31, so the cast never truncates there)
    let mut h = 0x9747_b28c ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes(word.try_into().unwrap()).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        h ^= rest
            .iter()
            .rev()
            .fold(0, |tail, &b| (tail << 8) | u32::from(b));
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ h >> 15
}

/// The partition of `partitions` that Kafka's default partitioner gives `key`, in one call (the
/// worker asks it several times per input, for mostly new keys).
#[pyfunction]
fn home_partition(key: &[u8], partitions: i64) -> PyResult<i64> {
    if partitions <= 0 {
        return Err(PyValueError::new_err(format!(
            "partitions must be positive, not {partitions}"
        )));
    }
    Ok(i64::from(murmur2(key) & 0x7fff_ffff) % partitions)
}

#[pymodule]
fn autopilot_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<EmailEventMapper>()?;
    module.add_function(wrap_pyfunction!(murmur2, module)?)?;
    module.add_function(wrap_pyfunction!(home_partition, module)?)?;
    module.add_function(wrap_pyfunction!(warehouse::copy_rows, module)?)?;
    module.add_class::<warehouse::DeferredTrack>()?;
    module.add_class::<warehouse::TrackLayout>()
}
