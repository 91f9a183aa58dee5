"""Names and shapes of the warehouse layout beyond the golden cases (tests/golden/warehouse)."""

from __future__ import annotations

import orjson
import pytest

from worker.errors import DecodeError, UnsupportedType, ValidationError
from worker.warehouse.layout import (
    CALL_TYPES,
    FIXED_COLUMNS,
    MAX_NAME_BYTES,
    TRACK_TYPES,
    TableKind,
    column_name,
    lay_out,
    snake_case,
)

#: go-snakecase's own test samples (segmentio/go-snakecase, snake_test.go), which Segment's
#: warehouses name tables and columns with; and names of this project.
SNAKE_CASES = [
    ("sample text", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample_text", "sample_text"),
    ("sample___text", "sample_text"),
    ("sampleText", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"),
    ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("FOO#BAR#BAZ", "foo_bar_baz"),
    ("something.com", "something_com"),
    ("$something%", "something"),
    ("•¶§ƒ˚foo˙∆˚¬", "foo"),
    ("Email Opened", "email_opened"),
    ("Email Marked as Spam", "email_marked_as_spam"),
    ("Email Link Clicked", "email_link_clicked"),
    ("context_traits_contact_id", "context_traits_contact_id"),
    ("context_userAgent", "context_user_agent"),
]


@pytest.mark.parametrize(("name", "expected"), SNAKE_CASES)
def test_snake_case_as_go_snakecase(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_names_stop_at_63_bytes_and_are_ascii() -> None:
    name = column_name("Émile " * 30)
    assert len(name.encode()) == MAX_NAME_BYTES
    assert name.isascii()
    assert column_name("!!!") == ""


def _track(**fields: object) -> bytes:
    message = {"type": "track", "event": "Email Opened", "messageId": "m-1", **fields}
    return orjson.dumps(message)


def test_every_row_of_a_track_has_the_same_id_and_its_kinds_columns_are_fixed() -> None:
    laid = lay_out(_track(properties={"a": 1}), schema="s", types=TRACK_TYPES)
    assert [row.table for row in laid.rows] == ["tracks", "email_opened"]
    assert {row.values["id"] for row in laid.rows} == {"m-1"}
    assert list(FIXED_COLUMNS[TableKind.TRACKS])[:5] == [
        "id",
        "anonymous_id",
        "user_id",
        "event",
        "event_text",
    ]
    assert "uuid_ts" in FIXED_COLUMNS[TableKind.EVENT]  # set by the loader, reserved here


def test_context_and_properties_must_be_objects() -> None:
    with pytest.raises(ValidationError, match="context: not an object"):
        lay_out(_track(context="x"), schema="s", types=TRACK_TYPES)
    # absent or null is empty
    laid = lay_out(_track(context=None, properties=None), schema="s", types=TRACK_TYPES)
    assert "context_ip" not in laid.rows[0].values


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\xff", DecodeError),
        (b"null", DecodeError),
        (orjson.dumps({"type": "page", "messageId": "m"}), UnsupportedType),
        (orjson.dumps({"type": "track", "messageId": "m", "event": 5}), ValidationError),
        (orjson.dumps({"type": "track", "messageId": {"a": 1}, "event": "E"}), ValidationError),
        (orjson.dumps({"type": "track", "messageId": "m\x00", "event": "E"}), ValidationError),
    ],
)
def test_bad_messages_raise_their_dead_letter_error(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        lay_out(raw, schema="s", types=TRACK_TYPES)


def test_the_calls_topic_takes_every_call_type_but_not_unknown_ones() -> None:
    with pytest.raises(UnsupportedType, match="'flush'"):
        lay_out(orjson.dumps({"type": "flush", "messageId": "m"}), schema="s", types=CALL_TYPES)
    with pytest.raises(ValidationError, match="groupId: missing"):
        lay_out(orjson.dumps({"type": "group", "messageId": "m"}), schema="s", types=CALL_TYPES)
