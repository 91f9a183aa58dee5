"""Ortto's field rules beyond the golden cases: shaping a value for a named field, and a named
field winning over a built-in rule."""

from __future__ import annotations

from typing import Any

import pytest

from worker.backends.ortto.fields import convert, custom_field, person_fields, slug
from worker.errors import ValidationError


@pytest.mark.parametrize(
    ("field", "value", "sent"),
    [
        ("str:cm:code", 42, "42"),
        ("txt:cm:notes", {"a": [1]}, '{"a":[1]}'),
        ("int:cm:seats", 3.0, 3),
        ("bol:cm:vip", False, False),
        ("dtz:cm:renews", "2026-01-31T09:00:00+01:00", "2026-01-31T09:00:00+01:00"),
        ("dtz::b", "2000-02-29", {"year": 2000, "month": 2, "day": 29}),
        ("phn::phone", " +1 555 0100 ", {"n": "+1 555 0100"}),
        ("phn::phone", "  ", None),
        ("geo::city", "Oslo", {"name": "Oslo"}),
        ("geo::city", "", None),
        ("sst:cm:tier", "gold", "gold"),  # a type the worker does not shape: sent as given
    ],
)
def test_a_value_is_shaped_by_its_fields_type(field: str, value: Any, sent: Any) -> None:
    assert convert(field, value, "traits.x") == sent


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("int:cm:seats", True, "takes a whole number"),
        ("int:cm:seats", 2.5, "takes a whole number"),
        ("bol:cm:vip", "true", "takes true or false"),
        ("dtz:cm:renews", "next week", "takes an ISO-8601 date"),
        ("dtz::b", "2001-02-29", "expected an ISO-8601 date"),  # no such day
    ],
)
def test_a_value_that_cannot_be_of_its_fields_type_is_a_400(
    field: str, value: Any, says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        convert(field, value, "traits.x")


def test_a_named_field_wins_over_the_built_in_rule() -> None:
    traits = {"phone": "555", "firstName": "Al", "first_name": "Alan", "birthday": "1990-01-02"}
    named = {"phone": "str:cm:phone-text", "firstName": "str:cm:nickname", "birthday": "str:cm:b"}
    assert person_fields(traits, named) == {
        "str::first": "Alan",  # the next name form the built-in rule reads
        "str:cm:phone-text": "555",
        "str:cm:nickname": "Al",
        "str:cm:b": "1990-01-02",
    }


def test_custom_fields_and_slugs() -> None:
    assert slug("Plan_Name Extra") == "plan-name-extra"
    assert custom_field("Signed Up", "2024-13-01", where="x") == ("str:cm:signed-up", "2024-13-01")
    assert custom_field("n", 10**20, where="x") == ("int:cm:n", 10**20)
    nested: Any = []
    for _ in range(300):
        nested = [nested]
    with pytest.raises(ValidationError, match="cannot be sent as JSON text"):
        custom_field("deep", nested, where="traits.deep")
