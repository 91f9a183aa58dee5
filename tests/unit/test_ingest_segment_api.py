"""The Segment API's pure core: shapes, limits, enrichment, timestamps, batch merge, keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from worker.ingest.problems import BadRequest, TooLarge
from worker.ingest.segment_api import (
    MAX_MESSAGE_BYTES,
    PATHS,
    SINGLE_ROUTES,
    correct_timestamp,
    enrich,
    message_key,
    new_message_id,
    parse_time,
    request_messages,
    segment_records,
)

RECEIVED = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
TOPIC = "segment.calls"


def _records(route: str, payload: object) -> list[dict[str, Any]]:
    records = segment_records(
        route, payload, topic=TOPIC, received_at=RECEIVED, new_id=lambda: "api-new"
    )
    assert all(r.topic == TOPIC for r in records)
    return [orjson.loads(r.value) for r in records]


def test_paths_are_the_long_ones_and_those_segments_sdks_post_to() -> None:
    short = {"/v1/i": "identify", "/v1/t": "track", "/v1/p": "page", "/v1/s": "screen",
             "/v1/g": "group", "/v1/a": "alias", "/v1/b": "batch", "/b": "batch"}  # fmt: skip
    long = {f"/v1/{route}": route for route in (*SINGLE_ROUTES, "batch")}
    assert dict(PATHS) == long | short


@pytest.mark.parametrize("route", SINGLE_ROUTES)
def test_single_call_takes_its_type_from_the_route(route: str) -> None:
    [message] = _records(route, {"type": "track", "userId": "u1", "writeKey": "wk-secret"})
    assert message["type"] == route
    assert "writeKey" not in message
    assert message["messageId"] == "api-new"
    assert message["receivedAt"] == "2026-01-01T12:00:10.000Z"
    assert message["timestamp"] == "2026-01-01T12:00:10.000Z"
    assert "originalTimestamp" not in message


def test_given_message_id_is_kept_and_generated_ids_are_unique() -> None:
    [message] = _records("track", {"userId": "u1", "event": "E", "messageId": "m-1"})
    assert message["messageId"] == "m-1"
    assert new_message_id() != new_message_id()
    assert new_message_id().startswith("api-")


def test_timestamp_is_corrected_for_the_client_clock() -> None:
    # The client's clock runs an hour behind: it sent 5 s after the event, by its clock.
    [message] = _records(
        "track",
        {
            "userId": "u1",
            "event": "E",
            "timestamp": "2026-01-01T11:00:00Z",
            "sentAt": "2026-01-01T11:00:05Z",
        },
    )
    assert message["timestamp"] == "2026-01-01T12:00:05.000Z"
    assert message["originalTimestamp"] == "2026-01-01T11:00:00Z"
    assert message["sentAt"] == "2026-01-01T11:00:05Z"


T1 = "2026-01-01T11:00:00Z"
PLUS2 = "2025-12-31T10:00:00+02:00"
PLUS1 = "2026-01-01T11:00:00+01:00"
NAIVE = "2026-01-01T11:00:00"


@pytest.mark.parametrize(
    ("timestamp", "sent_at", "expected", "original"),
    [
        (None, None, "2026-01-01T12:00:10.000Z", None),
        (None, "2026-01-01T11:00:05Z", "2026-01-01T12:00:10.000Z", None),
        (PLUS2, None, PLUS2, PLUS2),
        (PLUS1, "2026-01-01T10:00:06Z", "2026-01-01T12:00:04.000Z", PLUS1),
        (NAIVE, "2026-01-01T11:00:01.5", "2026-01-01T12:00:08.500Z", NAIVE),
        ("yesterday", "2026-01-01T11:00:01Z", "yesterday", "yesterday"),
        (T1, "not a date", T1, T1),
        (1767261600, "2026-01-01T11:00:01Z", 1767261600, 1767261600),
    ],
)
def test_timestamp_rules(
    timestamp: object, sent_at: object, expected: object, original: object
) -> None:
    assert correct_timestamp(timestamp, sent_at, RECEIVED) == (expected, original)


def test_parse_time() -> None:
    assert parse_time("2026-01-01T12:00:00.123Z") == datetime(2026, 1, 1, 12, 0, 0, 123000, UTC)
    assert parse_time("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("") is None
    assert parse_time(12) is None


def test_batch_merges_context_and_integrations_item_wins() -> None:
    payload = {
        "writeKey": "wk-secret",
        "sentAt": "2026-01-01T11:00:05Z",
        "context": {"library": {"name": "top"}, "ip": "1.2.3.4"},
        "integrations": {"All": False, "AutopilotHQ": True},
        "batch": [
            {
                "type": "identify",
                "userId": "u1",
                "timestamp": "2026-01-01T11:00:00Z",
                "context": {"library": {"name": "item"}},
                "integrations": {"AutopilotHQ": False},
                "writeKey": "wk-secret",
            },
            {"type": "track", "anonymousId": "a2", "event": "E", "context": None},
            {
                "type": "page",
                "userId": "u3",
                "sentAt": "2026-01-01T12:00:10Z",
                "timestamp": "2026-01-01T12:00:00Z",
            },
        ],
    }
    first, second, third = _records("batch", payload)
    assert first["type"] == "identify"
    assert first["context"] == {"library": {"name": "item"}, "ip": "1.2.3.4"}
    assert first["integrations"] == {"All": False, "AutopilotHQ": False}
    assert first["timestamp"] == "2026-01-01T12:00:05.000Z"
    assert first["sentAt"] == "2026-01-01T11:00:05Z"
    assert second["context"] == {"library": {"name": "top"}, "ip": "1.2.3.4"}
    assert second["integrations"] == {"All": False, "AutopilotHQ": True}
    assert second["timestamp"] == "2026-01-01T12:00:10.000Z"
    assert third["sentAt"] == "2026-01-01T12:00:10Z"  # the item's own sentAt wins
    assert third["timestamp"] == "2026-01-01T12:00:00.000Z"
    for message in (first, second, third):
        assert "writeKey" not in message
        assert message["receivedAt"] == "2026-01-01T12:00:10.000Z"
        assert b"wk-secret" not in orjson.dumps(message)


def test_enrich_adds_no_context_when_there_is_none() -> None:
    message = enrich({"type": "track"}, {}, received_at=RECEIVED, new_id=lambda: "x")
    assert "context" not in message
    assert "integrations" not in message


def test_enrich_does_not_mutate_its_input() -> None:
    original = {"type": "track", "context": {"a": 1}}
    enrich(original, {"context": {"b": 2}}, received_at=RECEIVED)
    assert original == {"type": "track", "context": {"a": 1}}


def test_empty_batch_is_no_records() -> None:
    assert _records("batch", {"batch": []}) == []


@pytest.mark.parametrize(
    ("route", "payload", "code"),
    [
        ("track", [1, 2], "invalid_body"),
        ("track", "text", "invalid_body"),
        ("batch", {"batch": {"type": "track"}}, "invalid_batch"),
        ("batch", {}, "invalid_batch"),
        ("batch", {"batch": [{"type": "track"}, 3]}, "invalid_batch"),
        ("purchase", {}, "unknown_route"),
    ],
)
def test_bad_shapes_are_400(route: str, payload: object, code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        _records(route, payload)
    assert caught.value.status == 400
    assert caught.value.code == code


def _sized(size: int) -> dict[str, Any]:
    """A message whose JSON is exactly `size` bytes."""
    message: dict[str, Any] = {"type": "track", "userId": "u", "properties": {"p": ""}}
    message["properties"]["p"] = "x" * (size - len(orjson.dumps(message)))
    assert len(orjson.dumps(message)) == size
    return message


def test_message_limit_is_32_kb_as_sent() -> None:
    assert len(_records("batch", {"batch": [_sized(MAX_MESSAGE_BYTES)]})) == 1
    with pytest.raises(TooLarge) as caught:
        _records("batch", {"batch": [_sized(100), _sized(MAX_MESSAGE_BYTES + 1)]})
    assert caught.value.code == "message_too_large"
    assert "batch[1]" in caught.value.message
    # the writeKey a single call carries in its body does not count
    assert _records("track", {**_sized(MAX_MESSAGE_BYTES), "writeKey": "k"})
    with pytest.raises(TooLarge):
        _records("track", _sized(MAX_MESSAGE_BYTES + 1))


def test_request_messages_returns_the_shared_part() -> None:
    messages, shared = request_messages(
        "batch", {"batch": [], "context": {"a": 1}, "sentAt": "s", "other": 1, "writeKey": "k"}
    )
    assert messages == []
    assert shared == {"context": {"a": 1}, "sentAt": "s"}


@pytest.mark.parametrize(
    ("message", "key"),
    [
        ({"userId": "u1", "anonymousId": "a1"}, b"u1"),
        ({"userId": "", "anonymousId": "a1"}, b"a1"),
        ({"userId": None, "anonymousId": "a1"}, b"a1"),
        ({"userId": 42}, b"42"),
        ({"anonymousId": "ü"}, "ü".encode()),
        ({"userId": True}, None),
        ({"userId": {"id": 1}}, None),
        ({}, None),
    ],
)
def test_message_key(message: dict[str, Any], key: bytes | None) -> None:
    assert message_key(message) == key


def test_records_are_keyed_in_request_order() -> None:
    records = segment_records(
        "batch",
        {"batch": [{"type": "track", "userId": f"u{i}", "event": "E"} for i in range(5)]},
        topic=TOPIC,
        received_at=RECEIVED,
    )
    assert [r.key for r in records] == [f"u{i}".encode() for i in range(5)]
    assert len({orjson.loads(r.value)["messageId"] for r in records}) == 5
