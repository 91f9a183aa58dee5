"""Focused rules of the destination mapping that the golden cases show only by example."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.backends.autopilot import AutopilotBackend, AutopilotConfig
from worker.backends.autopilot.fields import (
    CONSUMED_TRAITS,
    STANDARD_FIELDS,
    custom_field,
    custom_fields,
    standard_fields,
)
from worker.destination.mapping import (
    MAX_MESSAGE_BYTES,
    learned_identity,
    map_destination,
    parse_call,
    precheck_call,
)
from worker.errors import MessageTooLarge, SkipMessage
from worker.settings import Settings

INTEGRATIONS = AutopilotBackend().integration_names


@pytest.mark.parametrize(
    ("value", "key", "sent"),
    [
        (True, "boolean--x", True),
        (False, "boolean--x", False),
        (0, "integer--x", 0),
        (1, "integer--x", 1),
        (2**70, "integer--x", 2**70),
        (1.0, "float--x", 1.0),
        (-4.5, "float--x", -4.5),
        ("2024-01-15", "date--x", "2024-01-15"),
        ("2024-01-15T10:00Z", "date--x", "2024-01-15T10:00Z"),
        ("2024-01-15T10:00:00.123+02:00", "date--x", "2024-01-15T10:00:00.123+02:00"),
        ("2024-02-30", "string--x", "2024-02-30"),
        ("20240115", "string--x", "20240115"),
        ("2024-W03", "string--x", "2024-W03"),
        ("15/01/2024", "string--x", "15/01/2024"),
        ("", "string--x", ""),
        ({"a": {"b": None}}, "string--x", '{"a":{"b":null}}'),
        ([1, "two", False], "string--x", '[1,"two",false]'),
        ([], "string--x", "[]"),
    ],
)
def test_custom_field_typing(value: Any, key: str, sent: Any) -> None:
    name, out = custom_field("x", value, typed=True)
    assert (name, out) == (key, sent)
    assert type(out) is type(sent)  # True must not come out as 1, nor 1.0 as 1


def test_custom_field_names() -> None:
    assert custom_field("Favorite  Color", "teal", typed=True) == (
        "string--Favorite----Color",
        "teal",
    )
    assert custom_field("Favorite Color", "teal", typed=False) == ("Favorite Color", "teal")


def test_custom_fields_drop_nulls() -> None:
    assert custom_fields({"a": None, "b": 1}, typed=True) == {"integer--b": 1}


@pytest.mark.parametrize("trait", sorted(CONSUMED_TRAITS))
@pytest.mark.parametrize("value", ["text", {"name": "x", "plan": "p"}, 7])
def test_consumed_traits_never_custom(trait: str, value: Any) -> None:
    assert custom_fields({trait: value, "kept": 1}, typed=True) == {"integer--kept": 1}


def test_every_standard_source_is_consumed() -> None:
    for paths in STANDARD_FIELDS.values():
        assert {path[0] for path in paths} <= CONSUMED_TRAITS


def test_standard_fields_first_scalar_wins() -> None:
    traits: dict[str, Any] = {
        "firstName": None,
        "firstname": "B",
        "first_name": "C",
        "company": {"name": {}},
    }
    assert standard_fields(traits) == {"FirstName": "B"}


def _raw(**message: Any) -> bytes:
    return orjson.dumps({"messageId": "m-1", **message})


def test_size_limit_is_inclusive() -> None:
    base = _raw(type="alias", userId="u", previousId="")
    fits = _raw(type="alias", userId="u", previousId="x" * (MAX_MESSAGE_BYTES - len(base)))
    assert len(fits) == MAX_MESSAGE_BYTES
    assert parse_call(fits).type == "alias"
    with pytest.raises(MessageTooLarge):
        parse_call(fits + b" ")


def test_identity_learned_from_a_call_the_destination_skips() -> None:
    raw = _raw(
        type="identify",
        userId="u-1",
        traits={"email": " Ann@Example.com "},
        integrations={"AutopilotHQ": False},
    )
    assert learned_identity(parse_call(raw)) == ("ann@example.com", "u-1")
    with pytest.raises(SkipMessage, match="integration_disabled"):
        precheck_call(raw, INTEGRATIONS)


@pytest.mark.parametrize(
    ("message", "identity"),
    [
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"email": "A@b"}},
            ("a@b", "u"),
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "context": {"traits": {"email": "a@b"}}},
            ("a@b", "u"),
        ),
        ({"type": "identify", "anonymousId": "a", "traits": {"email": "a@b"}}, None),
        ({"type": "identify", "userId": "u", "traits": {"email": 5}}, None),
        ({"type": "group", "userId": "u", "traits": {"email": "a@b"}}, None),
    ],
)
def test_learned_identity(message: dict[str, Any], identity: tuple[str, str] | None) -> None:
    assert learned_identity(parse_call(_raw(**message))) == identity


ENGAGE_IDENTIFY = _raw(
    type="identify",
    userId="u-1",
    traits={"email": "a@b.c", "vip": True},
    context={"personas": {"computation_class": "audience", "computation_key": "vip"}},
)


def test_audience_updates_say_what_was_sent() -> None:
    config = AutopilotConfig()
    assert map_destination(ENGAGE_IDENTIFY, backend=AutopilotBackend(config)).audience_updates == {
        "vip": True
    }
    state = {"vip": False}
    result = AutopilotBackend(config).requests_for(
        precheck_call(ENGAGE_IDENTIFY, INTEGRATIONS), learned_email=None, audience_state=state
    )
    assert result.audience_updates == {"vip": True}
    plain = _raw(type="identify", userId="u-1", traits={"email": "a@b.c", "vip": True})
    assert map_destination(plain, backend=AutopilotBackend(config)).audience_updates == {}


def test_config_from_settings() -> None:
    settings = Settings(
        autopilot_trigger_id="0001",
        autopilot_triggers={"Signed Up": "0042"},
        autopilot_typed_custom_fields=False,
    )
    assert AutopilotConfig.from_settings(settings) == AutopilotConfig(
        trigger_id="0001", triggers={"Signed Up": "0042"}, typed_custom_fields=False
    )


def test_a_trait_nested_too_deep_for_json_is_a_400_naming_it() -> None:
    from worker.backends.autopilot.fields import custom_field  # noqa: PLC0415
    from worker.errors import ValidationError  # noqa: PLC0415

    deep: object = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ValidationError, match=r"traits\.tags: cannot be sent as JSON text"):
        custom_field("tags", deep, typed=True)
