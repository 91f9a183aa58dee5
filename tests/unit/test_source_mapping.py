"""Focused rules of the source mapping that golden files show less clearly."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pydantic
import pytest

from worker.errors import DecodeError, InvalidInput, UnsupportedType, ValidationError
from worker.models.segment_track import TrackMessage
from worker.source.mapping import SourceOutput, email_event_to_track, map_source, parse_email_event

RECEIVED_AT = datetime(2026, 11, 20, 10, 15, 5, tzinfo=UTC)


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt_1",
        "type": "email_opened",
        "occurred_at": "2026-11-20T10:15:00Z",
        "contact": {"contact_id": "person_7F3A", "email": "Thomas@TankEngine.com"},
        "email": {"id": "email_1"},
    }
    return event | changes


def _map(event: dict[str, Any], learned_user_id: str | None = None) -> SourceOutput:
    return map_source(orjson.dumps(event), received_at=RECEIVED_AT, learned_user_id=learned_user_id)


def test_message_id_is_deterministic() -> None:
    first, again = _map(_event()), _map(_event())
    assert first.message.message_id == again.message.message_id == "autopilot-evt_1"
    assert _map(_event(id="evt_2")).message.message_id != first.message.message_id


def test_long_event_id_is_hashed_within_100_characters() -> None:
    long_id = "x" * 300
    message_id = _map(_event(id=long_id)).message.message_id
    assert message_id == "autopilot-sha256-" + hashlib.sha256(long_id.encode()).hexdigest()
    assert len(message_id) <= 100
    assert _map(_event(id="y" * 300)).message.message_id != message_id


def test_message_id_stays_plain_up_to_100_characters() -> None:
    assert _map(_event(id="z" * 90)).message.message_id == "autopilot-" + "z" * 90
    assert _map(_event(id="z" * 91)).message.message_id.startswith("autopilot-sha256-")


@pytest.mark.parametrize(
    ("user_id", "learned", "expected"),
    [
        ("u-1", None, {"userId": "u-1"}),
        ("u-1", "u-learned", {"userId": "u-1"}),
        (None, "u-learned", {"userId": "u-learned"}),
        ("", "u-learned", {"userId": "u-learned"}),
        (None, None, {"anonymousId": "Thomas@TankEngine.com"}),
        (None, "", {"anonymousId": "Thomas@TankEngine.com"}),
    ],
)
def test_exactly_one_identity(
    user_id: str | None, learned: str | None, expected: dict[str, str]
) -> None:
    contact = {"contact_id": "person_7F3A", "email": "Thomas@TankEngine.com", "user_id": user_id}
    wire = _map(_event(contact=contact), learned).message.to_dict()
    assert {k: wire[k] for k in ("userId", "anonymousId") if k in wire} == expected


def test_track_message_refuses_both_or_neither_identity() -> None:
    message = _map(_event()).message
    with pytest.raises(pydantic.ValidationError, match="exactly one of userId and anonymousId"):
        TrackMessage.model_validate(message.model_dump() | {"user_id": "u-1"})
    with pytest.raises(pydantic.ValidationError, match="exactly one of userId and anonymousId"):
        TrackMessage.model_validate(message.model_dump() | {"anonymous_id": None})


def test_occurred_at_with_an_offset_becomes_utc() -> None:
    wire = _map(_event(occurred_at="2026-11-20T12:15:00.123456+02:00")).message.to_dict()
    assert wire["timestamp"] == wire["originalTimestamp"] == "2026-11-20T10:15:00.123Z"
    assert wire["sentAt"] == wire["receivedAt"] == "2026-11-20T10:15:05.000Z"


def test_key_is_user_id_else_lowercased_email() -> None:
    assert _map(_event()).key == "thomas@tankengine.com"
    assert _map(_event(), learned_user_id="u-Learned").key == "u-Learned"


def test_absent_properties_are_omitted_not_null() -> None:
    wire = _map(_event(journey={"id": "campaign_1", "name": None})).message.to_dict()
    assert wire["properties"] == {
        "event": "email_opened",
        "email_id": "email_1",
        "campaign_id": "campaign_1",
    }
    assert "ip" not in wire["context"]
    assert "userAgent" not in wire["context"]


def test_to_json_is_to_dict_as_bytes() -> None:
    message = _map(_event()).message
    assert orjson.loads(message.to_json()) == message.to_dict()


def test_integration_version_is_passed_through() -> None:
    event = parse_email_event(orjson.dumps(_event()))
    output = email_event_to_track(
        event, learned_user_id=None, received_at=RECEIVED_AT, integration_version="9.9.9"
    )
    assert output.message.to_dict()["context"]["integration"] == {
        "name": "AutopilotHQ",
        "version": "9.9.9",
    }


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{", DecodeError),
        (b"[]", DecodeError),
        (b'{"id": "\xff"}', DecodeError),
        (orjson.dumps(_event(type="email_forwarded")), UnsupportedType),
        (orjson.dumps(_event(id=None)), ValidationError),
        (orjson.dumps(_event(type="email_clicked")), ValidationError),
    ],
)
def test_error_classes(raw: bytes, error: type[InvalidInput]) -> None:
    with pytest.raises(error) as caught:
        parse_email_event(raw)
    assert type(caught.value) is error
    assert caught.value.status == 400


def test_unknown_type_wins_over_other_errors() -> None:
    with pytest.raises(UnsupportedType) as caught:
        parse_email_event(orjson.dumps(_event(type="email_forwarded", id=None)))
    assert caught.value.message == "Unknown Autopilot event type 'email_forwarded'"


def test_echoed_values_are_truncated() -> None:
    huge = "x" * 300 + "@example.com"
    contact = {"contact_id": "c", "email": huge.replace("@", "")}
    with pytest.raises(ValidationError) as caught:
        parse_email_event(orjson.dumps(_event(contact=contact)))
    message = caught.value.message
    assert message.startswith("contact.email: must be an email address (got 'xxx")
    assert message.endswith("...)")
    assert len(message) < 160
