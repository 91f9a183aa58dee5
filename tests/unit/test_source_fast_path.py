"""The source's three ways in must agree: the compiled common shape (`mapping.NATIVE`, Rust),
the common shape (`CommonEmailEvent`, msgspec structs) and the contract (`EmailEvent`, models).

`map_source` maps an event through the first that takes it; `EmailEvent` alone words errors.
That is only right if every event the native mapper or the common shape takes, the contract
takes too, and maps to the very same track (same key, same bytes). These tests hold the three
to that on every golden input and on thousands of mutations of them (among them what msgspec's
parser takes and pydantic's does not), hold the output to the `TrackMessage` model the JSON
Schema is generated from, and msgspec's JSON to the bytes orjson wrote before.

The intake's key comes the same way: whatever email the native mapper's `contact_email`
answers, the Python path (`email_event_contact` without it) answers too, on the same inputs.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from worker import __version__
from worker.errors import DecodeError, InvalidInput, SkipMessage, ValidationError
from worker.models.segment_track import TrackMessage
from worker.source import mapping
from worker.source.mapping import (
    email_event_contact,
    email_event_to_track,
    map_source,
    parse_email_event,
)
from worker.source.track import received_text, write_track

GOLDEN = sorted((Path(__file__).parents[1] / "golden" / "source").glob("*.json"))
RECEIVED_AT = datetime(2026, 11, 20, 10, 15, 5, 123456, tzinfo=UTC)

Outcome = tuple[Any, ...]


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _raw(case: dict[str, Any]) -> bytes:
    if "input_text" in case:
        text: str = case["input_text"]
        return text.encode(case.get("input_encoding", "utf-8"))
    return orjson.dumps(case["input"])


def _fast(raw: bytes, learned: str | None = None) -> Outcome | None:
    """What the common-shape path makes of `raw`, or None when it hands the event over."""
    common = mapping._common_event(raw)
    if common is None:
        return None
    found = common
    received = received_text(RECEIVED_AT)
    return _outcome(
        lambda: write_track(mapping.autopilot_neutral_event(found), learned, received, __version__)
    )


def _native(raw: bytes, learned: str | None = None) -> Outcome | None:
    """What the compiled path makes of `raw`, or None when it hands the event over."""
    assert mapping.NATIVE is not None, "the native mapper is built by `make install`"
    mapped = mapping.NATIVE.map(
        raw, learned, received_text(RECEIVED_AT), mapping._integration(__version__)
    )
    return None if mapped is None else ("output", *mapped)


def _native_contact(raw: bytes) -> str | None:
    """The email the compiled path answers for `raw`, held to the Python path's; or None."""
    assert mapping.NATIVE is not None, "the native mapper is built by `make install`"
    email = mapping.NATIVE.contact_email(raw)
    if email is not None:
        try:
            expected = mapping._python_contact(raw)
        except InvalidInput as error:
            pytest.fail(f"native answered {email!r} where Python raised {error!r}: {raw!r}")
        assert email == expected, raw
    return email


def _model(raw: bytes, learned: str | None = None) -> Outcome:
    """What the `EmailEvent` path makes of `raw`."""
    return _outcome(
        lambda: email_event_to_track(
            parse_email_event(raw),
            learned_user_id=learned,
            received_at=RECEIVED_AT,
            integration_version=__version__,
        )
    )


def _outcome(run: Any) -> Outcome:
    try:
        output = run()
    except SkipMessage as skip:
        return ("skip", skip.reason)
    except InvalidInput as error:
        return ("error", type(error).__name__, error.message)
    assert orjson.dumps(output.track) == output.to_json()  # the bytes orjson wrote before
    return ("output", output.key, output.to_json())


def _agree(raw: bytes, learned: str | None = None) -> bool:
    """Assert that the fast outcomes, if any, are the model's, and the native contact, if any,
    the Python path's; say whether the common shape took `raw`. What the native mapper takes,
    its `contact_email` answers, and what that answers, the common shape takes."""
    fast = _fast(raw, learned)
    native = _native(raw, learned)
    contact = _native_contact(raw)
    if fast is not None:
        assert fast == _model(raw, learned), raw
    if native is not None:
        assert native == fast, raw
        assert contact is not None, raw
    if contact is not None:
        assert fast is not None, raw
    return fast is not None


# --- every golden input ---


@pytest.mark.parametrize("path", GOLDEN, ids=lambda path: path.stem)
def test_golden_inputs_agree(path: Path) -> None:
    case = _case(path)
    _agree(_raw(case), case.get("learned_user_id"))


def test_the_common_shape_takes_the_golden_outputs() -> None:
    """Every golden output but none of the golden errors goes the fast way."""
    for path in GOLDEN:
        case = _case(path)
        fast = mapping._common_event(_raw(case)) is not None
        assert fast == ("error" not in case["expected"]), path.stem


@pytest.mark.parametrize(
    "path",
    [path for path in GOLDEN if "output" in _case(path)["expected"]],
    ids=lambda path: path.stem,
)
def test_fast_track_is_a_track_message(path: Path) -> None:
    """The dict written is what `TrackMessage` (and so the JSON Schema) says, byte for byte."""
    case = _case(path)
    output = map_source(
        _raw(case), received_at=RECEIVED_AT, learned_user_id=case.get("learned_user_id")
    )
    model = TrackMessage.model_validate(output.track)
    assert model.to_json() == output.to_json()
    assert orjson.loads(output.to_json()) == model.to_dict()
    assert orjson.dumps(output.track) == output.to_json()  # what `to_json` was: orjson's dump


def test_msgspec_writes_strings_as_orjson_does() -> None:
    """The track is encoded by msgspec; every character comes out as orjson writes it."""
    text = "".join(chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF)
    assert msgspec.json.encode(text) == orjson.dumps(text)
    assert msgspec.json.encode([True, False, None]) == orjson.dumps([True, False, None])


# --- mutations ---

_VALUES: tuple[Any, ...] = (
    None,
    "",
    " ",
    "x",
    0,
    1,
    1.5,
    True,
    False,
    [],
    {},
    ["x"],
    {"id": "x"},
    {"id": None, "name": None, "url": None},
    {"id": "x", "name": "n", "url": "https://x"},
    {"contact_id": "c", "email": "a@b.c"},
    {"contact_id": "c", "email": "a@b.c", "user_id": ""},
    "Email Opened",
    " email_clicked ",
    "EMAIL_MARKED_AS_SPAM",
    "email link clicked",
    "unsubscribed",
    "email_forwarded",
    "a@b",
    "a b@c",
    "@b",
    "a@",
    "a@@b",
    "é@b.c",
    "a\u2003b@c",
    "a\x1cb@c",
    "a\tb@c",
    "2026-11-20T10:15:00Z",
    "2026-11-20T10:15:00.5+02:00",
    "2026-11-20T10:15:00+00:00",
    "2026-11-20T10:15:00-00:00",
    "2026-11-20",
    "2026-11-20 10:15:00Z",
    "2026-02-30T10:15:00Z",
    "2026-11-20T10:15:00.1234567Z",
    "2026-11-20T10:15:00+24:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "x" * 300,
)

_PATHS: tuple[tuple[str, ...], ...] = (
    ("id",),
    ("type",),
    ("occurred_at",),
    ("contact",),
    ("contact", "contact_id"),
    ("contact", "email"),
    ("contact", "user_id"),
    ("journey",),
    ("journey", "id"),
    ("journey", "name"),
    ("email",),
    ("email", "id"),
    ("email", "subject"),
    ("email", "name"),
    ("email", "transactional"),
    ("link",),
    ("link", "id"),
    ("link", "url"),
    ("ip",),
    ("user_agent",),
    ("test",),
    ("unknown",),
)

_DELETE = object()


def _set(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any] | None:
    event = copy.deepcopy(event)
    target = event
    for key in path[:-1]:
        target = target.get(key)  # type: ignore[assignment]
        if not isinstance(target, dict):
            return None
    if value is _DELETE:
        if path[-1] not in target:
            return None
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return event


def _mutations() -> Iterator[bytes]:
    bases = [_case(p)["input"] for p in GOLDEN if isinstance(_case(p).get("input"), dict)]
    for base in bases:
        for path in _PATHS:
            for value in (_DELETE, *_VALUES):
                event = _set(base, path, value)
                if event is not None:
                    yield orjson.dumps(event)
        body = orjson.dumps(base)[1:]
        yield b'{"deep":' + b"[" * 150 + b"]" * 150 + b"," + body
        yield b'{"deep":' + b"[" * 250 + b"]" * 250 + b"," + body
        yield b'{"n":NaN,' + body
        yield b'{"n":1e400,' + body
        yield b'{"n":123456789012345678901234567890,' + body
        yield b'{"id":"first",' + body  # a duplicate key: the last one counts, in both
        yield b"\xef\xbb\xbf{" + body
        yield b"{" + body + b"\n "
        # what msgspec's parser takes and pydantic's does not
        yield b'{"x":"\xff",' + body  # bad UTF-8 in a field nobody reads
        yield b'{"x":"\xed\xa0\x80",' + body  # an encoded surrogate
        yield b'{"x":"\xc3\xa9",' + body  # good UTF-8 there
        for depth in (199, 200, 201, 300, 600):
            yield b'{"deep":' + b"[" * depth + b"]" * depth + b"," + body
            yield b'{"deep":' + b'{"":' * depth + b"1" + b"}" * depth + b"," + body
        yield b'{"n":' + b"1" * 4400 + b"," + body  # past pydantic's 4300 digits
        yield b'{"n":' + b"1" * 4000 + b"," + body
        yield b'{"n":1e999999,' + body


def test_duplicate_and_escaped_keys_agree() -> None:
    """The last of two keys counts, and an escaped key is the key, in both ways (or the
    common shape hands the event over)."""
    head = '{"id":"e","type":"email_opened","occurred_at":"2026-11-20T10:15:00Z","email":{"id":"x"}'
    contacts = [
        ',"contact":{"contact_id":"a","email":"x@y","email":"z@w"}}',
        ',"contact":{"contact_id":"a","email":"x@y"},"contact":{"contact_id":"b","email":"q@r"}}',
        ',"contact":5,"contact":{"contact_id":"b","email":"q@r"}}',
        ',"contact":{"contact_id":"b","email":"q@r"},"contact":5}',
        ',"contact":{"contact_id":"a","email":"x@y","user_id":"u","user_id":null}}',
        ',"contact":{"contact_\\u0069d":"a","\\u0065mail":"x@y"}}',
    ]
    for contact in contacts:
        _agree((head + contact).encode())
        _agree((head + contact).encode(), "u-learned")


def test_mutations_agree() -> None:
    fast = native = contact = total = 0
    for raw in _mutations():
        total += 1
        fast += _agree(raw)
        native += _native(raw) is not None
        contact += _native_contact(raw) is not None
    assert total > 5000
    assert fast > 3000  # every way is exercised
    assert total - fast > 3000
    assert 2000 < native < contact < fast  # test deliveries and long ids: a contact, no track


def test_the_native_mapper_takes_plain_golden_outputs() -> None:
    """It takes the golden outputs in the shape producers send, and declines what it leaves
    to the Python path: escapes, a non-ASCII address, a UTC offset other than zero."""
    taken = declined = 0
    for path in GOLDEN:
        case = _case(path)
        if "output" not in case["expected"]:
            continue
        raw = _raw(case)
        mapped = _native(raw, case.get("learned_user_id"))
        taken += mapped is not None
        declined += mapped is None
        if mapped is not None:
            assert mapped[1] == case["expected"]["output"]["key"], path.stem
            assert _native_contact(raw) == case["input"]["contact"]["email"], path.stem
    assert taken > declined > 0


# --- fuzzing the two fields the common shape checks itself ---


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt_1",
        "type": "email_opened",
        "occurred_at": "2026-11-20T10:15:00Z",
        "contact": {"contact_id": "person_7F3A", "email": "thomas@tankengine.com"},
        "email": {"id": "email_1"},
    }
    return event | changes


def _datetimes(rng: random.Random, count: int) -> Iterator[str]:
    def two(top: int) -> str:
        return f"{rng.randrange(top):02d}"

    for _ in range(count):
        year = rng.choice(["0000", "0001", "1969", "1970", "2024", "2026", "9999"])
        date = f"{year}-{two(14)}-{two(33)}"
        time = f"{two(26)}:{two(62)}:{two(62)}"
        fraction = rng.choice(
            ["", "", "." + "".join(rng.choices("0123456789", k=rng.randrange(1, 9)))]
        )
        offset = rng.choice(
            ["Z", "Z", "z", "", f"+{two(26)}:{two(62)}", f"-{two(26)}:{two(62)}", "+0200", "+00:00"]
        )
        separator = rng.choice(["T", "T", "T", " ", "t"])
        yield f"{date}{separator}{time}{fraction}{offset}"


def test_occurred_at_fuzz_agrees() -> None:
    rng = random.Random(20261120)
    fast = 0
    for text in _datetimes(rng, 4000):
        fast += _agree(orjson.dumps(_event(occurred_at=text)))
    assert fast > 500


def test_occurred_at_one_character_off_agrees() -> None:
    """Every shape the common path takes, with each character replaced in turn."""
    shapes = ["2026-11-20T10:15:00Z", "2026-11-20T10:15:00.5Z", "2026-11-20T10:15:00.12Z"]
    shapes += ["2026-11-20T10:15:00.123Z", "2026-11-20T10:15:00.1234Z"]
    shapes += ["2026-11-20T10:15:00.12345Z", "2026-11-20T10:15:00.123456Z"]
    shapes += ["2024-02-29T23:59:59.999999+00:00", "2026-11-20T10:15:00.5-01:30"]
    replacements = "09:-.TtZz+ _a\u0661\uff10"
    fast = 0
    for shape in shapes:
        assert _agree(orjson.dumps(_event(occurred_at=shape)))
        for index in range(len(shape)):
            for char in replacements:
                text = shape[:index] + char + shape[index + 1 :]
                fast += _agree(orjson.dumps(_event(occurred_at=text)))
    assert fast > 200


def test_occurred_at_offsets_match_the_model() -> None:
    for text, utc in [
        ("2026-11-20T12:15:00.5+02:00", "2026-11-20T10:15:00.500Z"),
        ("2026-11-20T00:15:00.123456+01:00", "2026-11-19T23:15:00.123Z"),
        ("2026-12-31T23:30:00-01:30", "2027-01-01T01:00:00.000Z"),
        ("2024-02-29T23:59:59.999999-00:00", "2024-02-29T23:59:59.999Z"),
    ]:
        raw = orjson.dumps(_event(occurred_at=text))
        assert _agree(raw)
        assert map_source(raw, received_at=RECEIVED_AT).track["timestamp"] == utc


def test_email_fuzz_agrees() -> None:
    """Each character in each place, as orjson writes it (escaped or not) and escaped anyway;
    in an event that is all ASCII or not, with or without a backslash elsewhere."""
    odd = "\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\ufeff\u200b\xe9\u4e2d"
    characters = [chr(code) for code in range(128)] + list(odd)
    fast = 0
    for char in characters:
        for email in (f"a{char}b@c.d", f"{char}@c", f"a@{char}", f"a@b{char}c", f"{char}"):
            for extra in ({}, {"ip": "\\"}, {"ip": "\xe9"}):
                contact = {"contact_id": "c", "email": email}
                fast += _agree(orjson.dumps(_event(contact=contact, **extra)))
            escaped = email.replace(char, f"\\u{ord(char):04x}") if char != "\\" else email
            raw = orjson.dumps(_event(contact={"contact_id": "c", "email": "EMAIL"}))
            fast += _agree(raw.replace(b"EMAIL", escaped.encode()))
    assert fast > 300


def test_type_spellings_agree() -> None:
    spellings = ["email_opened", "Email Opened", "EMAIL OPENED", " Email Opened ", "email opened"]
    spellings += ["Email Link Clicked", "UNSUBSCRIBED", "Email_Opened", "email-opened", "\t"]
    for spelling in spellings:
        event = _event(type=spelling, link={"url": "https://x"})
        _agree(orjson.dumps(event))


def test_received_at_in_any_zone_and_second() -> None:
    """The formatted second is remembered; a new second, or another zone, is formatted anew."""
    raw = orjson.dumps(_event())
    paris = datetime.fromisoformat("2026-11-20T11:15:05.5+01:00")
    for received_at, text in [
        (RECEIVED_AT, "2026-11-20T10:15:05.123Z"),
        (RECEIVED_AT.replace(microsecond=999999), "2026-11-20T10:15:05.999Z"),
        (RECEIVED_AT.replace(second=6, microsecond=0), "2026-11-20T10:15:06.000Z"),
        (paris, "2026-11-20T10:15:05.500Z"),
        (RECEIVED_AT.replace(year=2025), "2025-11-20T10:15:05.123Z"),
        (datetime.max.replace(tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
        (datetime.min.replace(tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
    ]:
        assert map_source(raw, received_at=received_at).track["receivedAt"] == text
    with pytest.raises(ValueError, match="timezone-aware"):
        map_source(raw, received_at=datetime(2026, 11, 20))


def test_native_takes_what_producers_send_and_agrees() -> None:
    """Unusual but plain events the native mapper maps itself, byte for byte as the others."""
    taken = [
        _event(
            email={"id": "e", "subject": "Café ☕ 𝄞 \u2028\x7f", "name": "", "transactional": True}
        ),
        _event(journey={"id": "", "name": None, "extra": [1, -2.5, {"a": [True, None]}]}),
        _event(journey=None, link=None, ip=None, user_agent=None, test=False),
        _event(occurred_at="2026-11-20T10:15:00.123456+00:00"),
        _event(occurred_at="2024-02-29T23:59:59.9-00:00"),
        _event(id="x" * 90),
        _event(contact={"contact_id": "c", "email": "MiXeD@Example.ORG", "user_id": None}),
        _event(type="email_clicked", link={"id": None, "url": "https://x/é"}),
        _event(unknown={"n": [0, -1, 0.5, 12345678901234567890, "", {}]}),
    ]
    for event in taken:
        raw = orjson.dumps(event)
        for learned in (None, "", "u-learned"):
            assert _agree(raw, learned), raw
            assert _native(raw, learned) is not None, raw
        assert _agree(b" \n\t" + raw + b"\r\n ")
        assert _native(b" \n\t" + raw + b"\r\n ") is not None
        assert _native_contact(raw) == event["contact"]["email"], raw


def test_native_declines_what_it_leaves_to_python() -> None:
    declined = [
        orjson.dumps(_event(id="x" * 91)),  # a hashed messageId
        orjson.dumps(_event(contact={"contact_id": "c", "email": "é@b.c"})),
        orjson.dumps(_event(occurred_at="2026-11-20T12:15:00+02:00")),
        orjson.dumps(_event(type="EMAIL OPENED")),
        orjson.dumps(_event(test=True)),
        orjson.dumps(_event(ip="a\\b")),  # an escape anywhere
        orjson.dumps(_event(unknown=1.5e300)),  # an exponent
        orjson.dumps(_event()).replace(
            b'{"id"', b'{"deep":' + b"[" * 65 + b"]" * 65 + b',"id"'
        ),  # deeper than 64
        b"\xef\xbb\xbf" + orjson.dumps(_event()),
    ]
    for raw in declined:
        assert _native(raw) is None, raw
        _agree(raw)
    # a hashed messageId and a test delivery are valid events: their contact is answered
    assert [_native_contact(raw) for raw in declined[:5]] == [
        "thomas@tankengine.com",
        None,
        None,
        None,
        "thomas@tankengine.com",
    ]
    assert [_native_contact(raw) for raw in declined[5:]] == [None] * 4


def test_email_event_contact_answers_or_words_python_errors() -> None:
    """The intake's key: the native answer when there is one, else the Python path's, whose
    errors are the contract's."""
    for event in (_event(), _event(test=True), _event(id="x" * 91)):
        raw = orjson.dumps(event)
        assert _native_contact(raw) == email_event_contact(raw) == "thomas@tankengine.com"
    non_ascii = orjson.dumps(_event(contact={"contact_id": "c", "email": "é@b.c"}))
    assert _native_contact(non_ascii) is None
    assert email_event_contact(non_ascii) == "é@b.c"
    with pytest.raises(DecodeError, match="not a JSON object: got an array"):
        email_event_contact(b"[]")
    bad_address = orjson.dumps(_event(contact={"contact_id": "c", "email": "a@"}))
    assert _native_contact(bad_address) is None
    with pytest.raises(ValidationError, match=r"^contact\.email: must be an email address"):
        email_event_contact(bad_address)


def test_byte_level_fuzz_agrees() -> None:
    """Golden inputs with bytes flipped, inserted, deleted or cut off: no way in crashes, and
    what the native mapper or the common shape takes maps as the contract does."""
    rng = random.Random(6122026)
    bases = [_raw(_case(path)) for path in GOLDEN if "output" in _case(path)["expected"]]
    alphabet = b'{}[]":,\\ \t\n0123456789.-+eEZTtrufalsn@a\xc3\xa9\x00\x1f\x7f\xff'
    taken = contacts = 0
    for _ in range(20_000):
        raw = bytearray(rng.choice(bases))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(raw))
            edit = rng.randrange(4)
            if edit == 0:
                raw[at] = rng.choice(alphabet)
            elif edit == 1:
                raw.insert(at, rng.choice(alphabet))
            elif edit == 2:
                del raw[at]
            else:
                del raw[at:]
                break
        taken += _native(bytes(raw)) is not None
        contacts += _native_contact(bytes(raw)) is not None
        _agree(bytes(raw))
    assert contacts >= taken > 1000
