"""Ortto's activity webhook as a source input: its settings, its times, the source's intake and
map stages taking it beside the Autopilot format (one source, two formats), and its two ways
through (the common shape and the worded path) making the same track of every golden input and
of thousands of mutations of them.

The mapping's rules, case by case, are the golden cases in tests/golden/ortto/.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.errors import InvalidInput, SkipMessage, ValidationError
from worker.identity import KIND_EMAIL_EVENT, KIND_HEADER, KIND_IDENTITY, KIND_ORTTO_ACTIVITY
from worker.models.ortto_activity import EMAIL_ACTIVITIES
from worker.pipeline.dead_letters import DeadLetterHeaders
from worker.pipeline.records import InboundMessage, OutboundRecord, header
from worker.pipeline.replay import ReplayTarget, replay_headers
from worker.runtime.placement import Placement, home_partition
from worker.runtime.tables import ChangelogTable
from worker.settings import Settings, SettingsInvalid, configuration_errors
from worker.source import ortto
from worker.source.agents import Source
from worker.source.mapping import map_source
from worker.source.ortto import (
    OrttoConfig,
    UnmappedActivity,
    canonical_type,
    map_ortto,
    parse_ortto_activity,
    utc_timestamp,
)
from worker.source.track import write_track
from worker.tools.map import run_map
from worker.topics import TopicNames

PARTITIONS = 3
RECEIVED_AT = datetime(2026, 11, 20, 10, 15, 5, tzinfo=UTC)
topic_names = TopicNames.from_settings(Settings())


def _activity(field_id: str = "act::o", email: str = "Kay@Example.com", **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "id": f"delivery-{field_id}",
            "time": "2026-11-20T10:15:01.123456789Z",
            "webhook_id": "webhook-1",
            "activity": {
                "id": "activity-1",
                "field_id": field_id,
                "created": "2026-11-20T10:15:00Z",
                "attr": {"str::is": "Journey"},
            },
            "contact": {"contact_id": "contact-1", "email": email},
            **extra,
        }
    )


def _autopilot_event(email: str = "Kay@Example.com") -> bytes:
    return orjson.dumps(
        {
            "id": "evt-1",
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00Z",
            "contact": {"contact_id": "contact-1", "email": email},
            "email": {"id": "email-1"},
        }
    )


# --- settings ------------------------------------------------------------------------------------


def test_the_settings_read_json_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTTO_ACTIVITY_EVENTS", '{"act:cm:flight-booked": "Flight Booked"}')
    monkeypatch.setenv("ORTTO_ATTRIBUTE_PROPERTIES", '{"str:cm:url": "link_url"}')
    settings = Settings()
    assert settings.ortto_activity_events == {"act:cm:flight-booked": "Flight Booked"}
    assert settings.ortto_attribute_properties == {"str:cm:url": "link_url"}
    config = OrttoConfig.from_settings(settings)
    assert config.events["act:cm:flight-booked"] == ("flight_booked", "Flight Booked")
    assert config.events["act::o"] == EMAIL_ACTIVITIES["act::o"]
    assert config.properties == (("str:cm:url", "link_url"),)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ORTTO_ACTIVITY_EVENTS", "[1]", "not a JSON object"),
        ("ORTTO_ACTIVITY_EVENTS", "{act::o: Opened}", "not a JSON object"),
        ("ORTTO_ACTIVITY_EVENTS", '{"act::o": 5}', "valid string"),
        ("ORTTO_ACTIVITY_EVENTS", '{"act::o": " "}', "must not be empty"),
        ("ORTTO_ACTIVITY_EVENTS", '{"act::test_webhook": "Test"}', "test delivery"),
        ("ORTTO_ATTRIBUTE_PROPERTIES", '{"str:cm:c": "campaign"}', "'campaign' is not a property"),
        ("ORTTO_ATTRIBUTE_PROPERTIES", '{"str:cm:c": "event"}', "'event' is not a property"),
        ("ORTTO_ATTRIBUTE_PROPERTIES", '{"": "campaign_id"}', "must not be empty"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsInvalid) as error:
        Settings()
    (line,) = configuration_errors(error.value)
    assert line.startswith(f"configuration error: {name}: ")
    assert says in line
    assert "expected a JSON object" in line


def test_the_token_is_a_secret() -> None:
    settings = Settings(ortto_webhook_token="tok-123")
    assert "tok-123" not in repr(settings)
    from worker.settings import secret_values  # noqa: PLC0415

    assert "tok-123" in secret_values(settings)


# --- times and names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("2023-10-03T04:11:24.25726779Z", "2023-10-03T04:11:24.257Z"),
        ("2023-10-03T04:11:23Z", "2023-10-03T04:11:23.000Z"),
        ("2023-10-03t04:11:23.5z", "2023-10-03T04:11:23.500Z"),
        ("2023-10-03T04:11:23.999999999+00:00", "2023-10-03T04:11:23.999Z"),
        ("2023-10-03T00:11:23-05:30", "2023-10-03T05:41:23.000Z"),
        ("2024-01-01T01:00:00+02:00", "2023-12-31T23:00:00.000Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
        ("2023-02-29T00:00:00Z", None),
        ("2023-10-03T24:00:00Z", None),
        ("2023-10-03T04:11:23+24:00", None),
        ("2023-10-03T04:11:23", None),
        ("2023-10-03 04:11:23Z", None),
        ("2023-10-03T04:11:23.Z", None),
        ("0001-01-01T00:30:00+01:00", None),
        ("9999-12-31T23:30:00-01:00", None),
        ("\uff12\uff10\uff12\uff13-10-03T04:11:23Z", None),  # fullwidth digits
        ("", None),
    ],
)
def test_utc_timestamp(text: str, written: str | None) -> None:
    assert utc_timestamp(text) == written


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Email Marked as Spam", "email_marked_as_spam"),
        ("email replied", "email_replied"),
        ("Email Link Clicked", "email_clicked"),
        ("Flight Booked", "flight_booked"),
        ("  SMS -- Sent! ", "sms_sent"),
        ("!!!", "!!!"),
    ],
)
def test_canonical_type_of_a_configured_name(name: str, kind: str) -> None:
    assert canonical_type(name) == kind


def test_an_unmapped_activity_says_which_and_its_attr_keys() -> None:
    with pytest.raises(UnmappedActivity) as skip:
        parse_ortto_activity(_activity("act:cm:logged-in"), OrttoConfig())
    assert skip.value.reason == "activity_not_mapped"
    assert skip.value.field_id == "act:cm:logged-in"
    assert skip.value.attr_keys == ("str::is",)


def test_both_formats_make_one_track_shape() -> None:
    """The same contact, the same learned userId: the same identity, key, times and shape."""
    ortto = map_ortto(
        _activity(), config=OrttoConfig(), received_at=RECEIVED_AT, learned_user_id="u-9"
    )
    autopilot = map_source(_autopilot_event(), received_at=RECEIVED_AT, learned_user_id="u-9")
    one, other = ortto.track, autopilot.track
    assert ortto.key == autopilot.key == "u-9"
    for name in ("type", "event", "userId", "timestamp", "originalTimestamp", "sentAt"):
        assert one[name] == other[name], name
    assert one["context"]["traits"] == other["context"]["traits"]
    assert one["properties"]["event"] == other["properties"]["event"] == "email_opened"
    assert other["integrations"] == {"AutopilotHQ": False}
    assert one["integrations"] == {"AutopilotHQ": False, "Ortto": False}
    assert (one["context"]["integration"]["name"], other["context"]["integration"]["name"]) == (
        "Ortto",
        "AutopilotHQ",
    )
    ortto.message  # noqa: B018 - both are TrackMessages
    autopilot.message  # noqa: B018


# --- the source's stages ---------------------------------------------------------------------


@pytest.fixture
def source() -> Source:
    """The source with its table's rows in a plain dict, on three partitions."""
    users: dict[bytes, str] = {}
    return Source(
        topic_names,
        Placement(lambda topic: PARTITIONS),
        ChangelogTable(lambda: users, "users-changelog"),
        OrttoConfig.build({"act:cm:flight-booked": "Flight Booked"}),
    )


def _message(
    topic: str, value: bytes, key: bytes, *, home: bool = True, **kw: Any
) -> InboundMessage:
    partition = home_partition(key, PARTITIONS)
    return InboundMessage(
        topic=topic,
        partition=partition if home else (partition + 1) % PARTITIONS,
        offset=11,
        timestamp_ms=1_700_000_000_000,
        key=key,
        value=value,
        headers=kw.get("headers", [("trace", b"t-1")]),
    )


def test_an_ortto_activity_at_home_is_mapped_by_the_intake(source: Source) -> None:
    source.user_by_email.set(b"kay@example.com", "u-learned")
    (record,) = source.intake(
        _message(topic_names.ortto_activities, _activity(), b"kay@example.com")
    )
    assert (record.topic, record.key) == (topic_names.segment_tracks, b"u-learned")
    track = orjson.loads(record.value)
    assert track["messageId"] == "ortto-delivery-act::o"
    assert track["userId"] == "u-learned"
    assert record.headers == [("trace", b"t-1")]


def test_an_ortto_activity_away_is_forwarded_by_email_with_its_kind(source: Source) -> None:
    raw = _activity()
    message = _message(topic_names.ortto_activities, raw, b"someone-else", home=False)
    (record,) = source.intake(message)
    assert (record.topic, record.key, record.value) == (
        topic_names.source_by_email,
        b"kay@example.com",
        raw,
    )
    assert header(record.headers, KIND_HEADER) == KIND_ORTTO_ACTIVITY

    forwarded = InboundMessage(
        topic=record.topic,
        partition=home_partition(b"kay@example.com", PARTITIONS),
        offset=3,
        timestamp_ms=1,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
    (track,) = source.map_by_email(forwarded)
    assert track.topic == topic_names.segment_tracks
    assert orjson.loads(track.value)["properties"]["field_id"] == "act::o"
    assert header(track.headers, KIND_HEADER) is None
    assert ("trace", b"t-1") in track.headers


def test_the_autopilot_format_still_goes_its_way(source: Source) -> None:
    raw = _autopilot_event()
    (record,) = source.intake(_message(topic_names.email_events, raw, b"x", home=False))
    assert header(record.headers, KIND_HEADER) == KIND_EMAIL_EVENT
    (track,) = source.intake(_message(topic_names.email_events, raw, b"kay@example.com"))
    assert orjson.loads(track.value)["messageId"] == "autopilot-evt-1"


def test_identities_learned_serve_both_formats(source: Source) -> None:
    identity = _message(
        topic_names.source_by_email,
        orjson.dumps({"user_id": "u-42"}),
        b"kay@example.com",
        headers=[(KIND_HEADER, KIND_IDENTITY)],
    )
    assert [r.key for r in source.map_by_email(identity)] == [b"kay@example.com"]
    for topic, value in (
        (topic_names.ortto_activities, _activity()),
        (topic_names.email_events, _autopilot_event()),
    ):
        (track,) = source.intake(_message(topic, value, b"kay@example.com"))
        assert orjson.loads(track.value)["userId"] == "u-42"


def test_a_replayed_ortto_dead_letter_is_read_as_ortto(source: Source) -> None:
    """From the retry topic, the format comes from the topic the original was written to."""
    letter_headers = [
        (DeadLetterHeaders.TOPIC, topic_names.ortto_activities.encode()),
        (DeadLetterHeaders.PARTITION, b"0"),
        (DeadLetterHeaders.OFFSET, b"5"),
        (DeadLetterHeaders.TIMESTAMP, b"1"),
    ]
    headers = replay_headers(letter_headers, ReplayTarget("source", "intake"), key=b"k")
    message = _message(topic_names.retry, _activity(), b"kay@example.com", headers=headers)
    (record,) = source.intake(message)
    assert orjson.loads(record.value)["messageId"] == "ortto-delivery-act::o"


def test_skips_and_errors_leave_the_intake_as_errors_with_a_fate(
    source: Source, caplog: pytest.LogCaptureFixture
) -> None:
    def intake(value: bytes) -> list[OutboundRecord]:
        return source.intake(_message(topic_names.ortto_activities, value, b"k"))

    with pytest.raises(SkipMessage, match="test_delivery"):
        intake(_activity("act::test_webhook"))
    with pytest.raises(ValidationError, match=r"contact\.email"):
        intake(_activity(email="nobody"))
    with caplog.at_level(logging.INFO, logger="worker.source.agents"):
        for _ in range(3):
            with pytest.raises(UnmappedActivity):
                intake(_activity("act::t"))
    named = [r.getMessage() for r in caplog.records if "act::t" in r.getMessage()]
    assert len(named) == 1, "each unmapped field id is named once"
    assert "attr keys: str::is" in named[0]
    (track,) = intake(_activity("act:cm:flight-booked", email="k@example.com"))
    assert orjson.loads(track.value)["event"] == "Flight Booked"


# --- offline ---------------------------------------------------------------------------------


def test_map_ortto_writes_one_line_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTTO_ACTIVITY_EVENTS", '{"act::t": "Tagged"}')
    from worker.settings import get_settings  # noqa: PLC0415

    get_settings.cache_clear()
    try:
        lines = [
            _activity(),
            _activity("act::test_webhook"),
            _activity("act::x"),
            b"{",
            _activity("act::t"),
        ]
        out = io.StringIO()
        assert run_map("ortto", io.BytesIO(b"\n".join(lines) + b"\n"), out) == 0
    finally:
        get_settings.cache_clear()
    results = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert len(results) == len(lines)
    assert results[0]["output"]["event"] == "Email Opened"
    assert results[1] == {"skip": "test_delivery"}
    assert results[2] == {"skip": "activity_not_mapped"}
    assert results[3]["error"]["status"] == 400
    assert results[4]["output"]["event"] == "Tagged"


# --- the two ways through agree ------------------------------------------------------------

GOLDEN = sorted((Path(__file__).parents[1] / "golden" / "ortto").glob("*.json"))


def _golden(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _config(case: dict[str, Any]) -> OrttoConfig:
    config = case.get("config", {})
    return OrttoConfig.build(config.get("activity_events"), config.get("attribute_properties"))


Outcome = tuple[Any, ...]


def _written(run: Any) -> Outcome:
    try:
        event = run()
    except UnmappedActivity as skip:
        return ("skip", skip.reason, skip.field_id, skip.attr_keys)
    except SkipMessage as skip:
        return ("skip", skip.reason)
    except InvalidInput as error:
        return ("error", type(error).__name__, error.message)
    if event is None:
        return ("handed over",)
    output = write_track(event, "u-learned", "2026-11-20T10:15:05.000Z", "1.0")
    return ("output", output.key, output.to_json())


def _agree(raw: bytes, config: OrttoConfig) -> bool:
    """Assert that what the common shape makes of `raw`, if anything, is the worded path's;
    say whether it took `raw` (mapped or skipped it)."""
    fast = _written(lambda: ortto._common_activity(raw, config))
    if fast == ("handed over",):
        return False
    worded = _written(lambda: ortto._worded_activity(raw, config))
    if worded[:2] == ("error", "DecodeError") and "number is infinity" in worded[2]:
        return True  # a number past a double's range in a field nobody reads (module doc)
    assert fast == worded, raw
    return True


def test_the_common_shape_takes_what_ortto_sends() -> None:
    taken = {
        path.stem
        for path in GOLDEN
        if isinstance(_golden(path).get("input"), dict)
        and _agree(orjson.dumps(_golden(path)["input"]), _config(_golden(path)))
    }
    assert {"opened_sample_payload", "clicked_with_attribute_properties", "bounced"} <= taken
    assert {"other_activity_is_skipped", "test_webhook_is_skipped"} <= taken
    assert "created_with_offset_becomes_utc" not in taken  # an offset: the worded path
    assert "empty_external_id_is_absent" not in taken  # an empty string: the worded path
    assert not {path.stem for path in GOLDEN if "error" in _golden(path)["expected"]} & taken


_VALUES: tuple[Any, ...] = (
    None,
    "",
    " ",
    "x",
    0,
    1,
    -1.5,
    True,
    [],
    {},
    ["x"],
    {"str::is": "API"},
    {"a": {"b": 1}},
    {"n": 2**64},
    {"n": 2**64 - 1},
    {"n": -(2**63) - 1},
    {"n": 123456789012345678901234567890},
    {"f": 1e300, "g": -0.0, "t": True, "s": "", "z": None},
    "act::o",
    "act::c",
    "act::t",
    "act::test_webhook",
    "a@b",
    "a b@c",
    "@b",
    "a@",
    "a@@b",
    "é@b.c",
    "a\u2003b@c",
    "a\tb@c",
    "A\x1cb@c",
    "2026-11-20T10:15:00Z",
    "2026-11-20T10:15:00.123456789Z",
    "2026-11-20T10:15:00.5+02:00",
    "2026-11-20T10:15:00+00:00",
    "2026-11-20T10:15:00z",
    "2026-11-20t10:15:00Z",
    "2026-11-20T10:15:00.Z",
    "2026-11-20T10:15:00.\u0663Z",
    "2026-11-20T10:15:00",
    "2026-02-30T10:15:00Z",
    "2026-11-20T24:15:00Z",
    "2026-11-20 10:15:00Z",
    "0001-01-01T00:00:00+01:00",
    "x" * 120,
)

_PATHS: tuple[tuple[str, ...], ...] = (
    ("id",),
    ("time",),
    ("webhook_id",),
    ("activity",),
    ("activity", "id"),
    ("activity", "field_id"),
    ("activity", "created"),
    ("activity", "attr"),
    ("activity", "attr", "str::is"),
    ("contact",),
    ("contact", "contact_id"),
    ("contact", "external_id"),
    ("contact", "email"),
    ("contact", "first_name"),
    ("contact", "last_name"),
    ("contact", "city"),
    ("unknown",),
)

_DELETE = object()


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any] | None:
    body = copy.deepcopy(body)
    target = body
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
    return body


def _dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON, as Ortto writes it; integers past 64 bits too (orjson refuses them)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _mutations() -> Iterator[tuple[bytes, OrttoConfig]]:
    for path in GOLDEN:
        case = _golden(path)
        base, config = case.get("input"), _config(case)
        if not isinstance(base, dict):
            continue
        for field in _PATHS:
            for value in (_DELETE, *_VALUES):
                body = _set(base, field, value)
                if body is not None:
                    yield _dumps(body), config
        rest = orjson.dumps(base)[1:]
        for extra in (
            b'{"x":"\xff",',  # bad UTF-8 in a field nobody reads: msgspec skips it unread
            b'{"x":"\xed\xa0\x80",',  # an encoded surrogate
            b'{"x":"\xc3\xa9",',  # good UTF-8 there
            b'{"x":"\\ud800",',  # a lone surrogate escaped
            b'{"x":"\\q",',  # an escape JSON has not
            b'{"x":"\\u00e9\\/\\n",',
            b'{"id":"first",',  # a duplicate key: the last one counts, in both
            b'{"n":NaN,',
            b'{"n":1e400,',
            b'{"n":123456789012345678901234567890,',
            b"\xef\xbb\xbf{",
            b'{"x":\x01,',
        ):
            yield extra + rest, config
        for depth in (500, 1020, 1023, 1024, 1025, 1100):
            yield b'{"deep":' + b"[" * depth + b"]" * depth + b"," + rest, config
            yield b'{"deep":' + b'{"":' * depth + b"1" + b"}" * depth + b"," + rest, config
        yield orjson.dumps(base) + b"\n ", config
        yield orjson.dumps(base)[:-1], config


def test_mutations_agree() -> None:
    taken = total = 0
    for raw, config in _mutations():
        total += 1
        taken += _agree(raw, config)
    assert total > 30_000
    assert taken > 8_000  # both ways are exercised
    assert total - taken > 20_000


def test_escaped_and_duplicate_keys_agree() -> None:
    head = '{"id":"d","time":"2026-11-20T10:15:00Z","activity":{"field_id":"act::o"}'
    for contact in (
        ',"contact":{"email":"x@y","email":"z@w"}}',
        ',"contact":{"email":"x@y"},"contact":{"email":"q@r"}}',
        ',"contact":5,"contact":{"email":"q@r"}}',
        ',"contact":{"email":"q@r"},"contact":5}',
        ',"contact":{"external_id":"u","external_id":null,"email":"q@r"}}',
        ',"contact":{"\\u0065mail":"x@y","first_\\u006eame":"\\u00c9"}}',
        ',"contact":{"email":"x\\u0040y"}}',
        ',"contact":{"email":"x\\ty@z"}}',
    ):
        _agree((head + contact).encode(), OrttoConfig())
