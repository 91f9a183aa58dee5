"""The destination's fast paths must agree with the slow ones they stand for.

- `parse_call` reads a call of the common shape (any type) straight into a `ParsedCall`
  (`_common_call`), and every other call through `_checked_message` and the `SegmentCall`
  models (`_model_call`), whose errors are the ones dead letters carry. Whatever the common
  shape takes, those take too, with the same values: checked on every golden input and
  thousands of mutations of them.
- `contact_fields` (a plan per shape of the traits, names and value types) builds the contact
  the rename tables and `custom_fields` describe, keys in the same order; `_is_iso_date`'s
  shortcut for JavaScript dates answers as its regex does.
- `_quote` is `urllib.parse.quote(text, safe="")`.
- The descriptors written are what `RequestDescriptor` (and so the JSON Schema) says, byte for
  byte.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.unit.test_golden import backend_of
from worker.backends.autopilot import AutopilotBackend, AutopilotConfig, trigger_journey
from worker.backends.autopilot import fields as traits
from worker.backends.autopilot.fields import (
    CONSUMED_TRAITS,
    contact_fields,
    custom_fields,
    special_fields,
    standard_fields,
)
from worker.destination import mapping
from worker.destination.mapping import map_destination, precheck_call
from worker.errors import InvalidInput, SkipMessage
from worker.models.autopilot_request import RequestDescriptor
from worker.models.parsed_call import ParsedCall

INTEGRATIONS = AutopilotBackend().integration_names

GOLDEN = sorted((Path(__file__).parents[1] / "golden" / "destination").glob("*.json"))
#: the cases of Autopilot's mapping (the others name their backend; their inputs serve too)
AUTOPILOT_GOLDEN = [
    path
    for path in GOLDEN
    if json.loads(path.read_text()).get("backend", "autopilot") == "autopilot"
]

Outcome = tuple[Any, ...]


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())  # orjson refuses the lone surrogates
    return case


def _raw(case: dict[str, Any]) -> bytes:
    if "input_text" in case:
        text: str = case["input_text"]
        return text.encode("utf-8", "surrogateescape")
    return orjson.dumps(case["input"])


def _fields(call: ParsedCall) -> dict[str, Any]:
    return {name: getattr(call, name) for name in ParsedCall.__struct_fields__}


def _model(message: dict[str, Any]) -> Outcome:
    try:
        return ("call", _fields(mapping._model_call(message)))
    except InvalidInput as error:
        return ("error", type(error).__name__, error.message)


def _decoded(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _agree(raw: bytes) -> bool:
    """Assert that what the common shape reads, `_checked_message` passes and the models read
    the same; say whether it read it."""
    message = _decoded(raw)
    if not isinstance(message, dict):
        return False
    fast = mapping._common_call(copy.deepcopy(message), raw)
    if fast is None:
        return False
    checked = mapping._checked_message(message, raw)  # raises if the fast path took too much
    assert ("call", _fields(fast)) == _model(checked), raw
    return True


# --- every golden input, and mutations of them ---


@pytest.mark.parametrize("path", GOLDEN, ids=lambda path: path.stem)
def test_golden_inputs_agree(path: Path) -> None:
    _agree(_raw(_case(path)))


def test_the_common_shape_takes_the_plain_golden_calls() -> None:
    taken = {path.stem for path in GOLDEN if _agree(_raw(_case(path)))}
    assert {"identify_custom_typed", "track_trigger_map", "engage_identify_audience"} <= taken
    assert {"skip_page", "skip_screen", "skip_group", "skip_alias"} <= taken
    assert "identify_numeric_user_id" not in taken  # 42 becomes "42": the models' job


_VALUES: tuple[Any, ...] = (
    None,
    "",
    "x",
    "u-1",
    0,
    42,
    1.5,
    True,
    False,
    [],
    ["x"],
    {},
    {"email": "a@b.c"},
    {"email": " A@B.c ", "firstName": "Ann"},
    {"computation_class": "audience", "computation_key": "vip"},
    {"computation_class": 5, "computation_key": None},
    {"computation_class": None, "computation_key": ["x"]},
    {"traits": None, "personas": None},
    {"traits": {"email": "a@b.c"}, "personas": {"computation_class": "audience"}},
    {"traits": [], "personas": {}},
    {"personas": "audience"},
    {"AutopilotHQ": False},
    {"All": False, "AutopilotHQ": {"x": 1}},
)

_PATHS: tuple[tuple[str, ...], ...] = (
    ("type",),
    ("userId",),
    ("anonymousId",),
    ("messageId",),
    ("user_id",),
    ("anonymous_id",),
    ("message_id",),
    ("event",),
    ("traits",),
    ("properties",),
    ("integrations",),
    ("context",),
    ("context", "traits"),
    ("context", "personas"),
    ("context", "personas", "computation_class"),
    ("context", "personas", "computation_key"),
    ("name",),
    ("groupId",),
    ("group_id",),
    ("previousId",),
    ("previous_id",),
)

_DELETE = object()


def _set(call: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any] | None:
    call = copy.deepcopy(call)
    target = call
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            return None
    if value is _DELETE:
        if path[-1] not in target:
            return None
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return call


def _mutations() -> Iterator[bytes]:
    bases = [_case(p)["input"] for p in GOLDEN if isinstance(_case(p).get("input"), dict)]
    for base in bases:
        for path in _PATHS:
            for value in (_DELETE, *_VALUES):
                call = _set(base, path, value)
                if call is not None:
                    yield orjson.dumps(call)
        for kind in ("identify", "track", "page", "screen", "group", "alias", "Track", 7, None):
            call = _set(base, ("type",), kind)
            assert call is not None
            yield orjson.dumps(call)


def test_mutations_agree() -> None:
    fast = total = 0
    for raw in _mutations():
        total += 1
        fast += _agree(raw)
    assert total > 5000
    assert fast > 1000  # both ways are exercised
    assert total - fast > 1000


def test_agreement_carries_through_the_mapping() -> None:
    """Equal calls map equally; shown once end to end, on every golden input and config."""
    configs = [AutopilotConfig(**_case(p).get("config", {})) for p in AUTOPILOT_GOLDEN]
    for path in GOLDEN:
        raw = _raw(_case(path))
        try:
            message = orjson.loads(raw)
            slow = mapping._model_call(mapping._checked_message(copy.deepcopy(message), raw))
        except (InvalidInput, orjson.JSONDecodeError):
            continue
        fast = mapping._common_call(message, raw) or slow
        for config in configs:
            assert _mapped(fast, config) == _mapped(slow, config), path.stem


def _mapped(call: ParsedCall, config: AutopilotConfig) -> Outcome:
    try:
        result = AutopilotBackend(config).requests_for(
            mapping.accept_call(call, INTEGRATIONS), learned_email=None, audience_state=None
        )
    except SkipMessage as skip:
        return ("skip", skip.reason)
    except InvalidInput as error:
        return ("error", error.message)
    return ("output", [orjson.dumps(d) for d in result.descriptors], dict(result.audience_updates))


@pytest.mark.parametrize(
    "path",
    [path for path in GOLDEN if "output" in _case(path)["expected"]],
    ids=lambda path: path.stem,
)
def test_descriptors_are_request_descriptors(path: Path) -> None:
    case = _case(path)
    backend = backend_of(case)
    result = backend.requests_for(
        precheck_call(
            _raw(case), backend.integration_names, source_integrations=backend.source_integrations
        ),
        learned_email=case.get("learned_email"),
        audience_state=case.get("audience_state"),
    )
    for descriptor in result.descriptors:
        model = RequestDescriptor.model_validate(descriptor)
        assert orjson.dumps(model.model_dump(mode="json", by_alias=True)) == orjson.dumps(
            descriptor
        )
    assert [orjson.loads(orjson.dumps(d)) for d in result.descriptors] == case["expected"]["output"]


# --- contact_fields is the tables' contact, in the tables' order ---


def _contact_by_tables(email: str, traits: dict[str, Any], *, typed: bool) -> dict[str, Any]:
    contact = {"Email": email, **standard_fields(traits), **special_fields(traits)}
    if custom := custom_fields(traits, typed=typed):
        contact["custom"] = custom
    return contact


_TRAIT_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    7,
    2**70,
    4.5,
    "",
    "text",
    "2024-01-15",
    "2024-02-30",
    "2024-01-15T10:00Z",
    "20240115",
    "x" * 12,
    "1234-",
    [],
    [1, "two"],
    {},
    {"name": "Acme", "industry": "Rail", "employee_count": 12, "plan": "gold"},
    {"name": None, "industry": {"x": 1}},
    {"street": "1 Main", "city": "Paris", "postalCode": "75001", "postal_code": "x"},
    {"postal_code": "75002", "country": None, "state": ["IDF"]},
)


def _random_traits(rng: random.Random) -> dict[str, Any]:
    names = [*sorted(CONSUMED_TRAITS), "plan", "Favorite Color", "a  b", "age", "tags", "x"]
    return {
        name: rng.choice(_TRAIT_VALUES) for name in rng.sample(names, rng.randrange(len(names)))
    }


def test_contact_fields_are_the_tables_contact() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        traits = _random_traits(rng)
        for typed in (True, False):
            fast = contact_fields("a@b.c", traits, typed=typed)
            slow = _contact_by_tables("a@b.c", traits, typed=typed)
            assert list(fast.items()) == list(slow.items()), traits
            if "custom" in fast:
                assert list(fast["custom"].items()) == list(slow["custom"].items())


def test_contact_fields_on_golden_traits() -> None:
    for path in GOLDEN:
        call = _case(path).get("input")
        if isinstance(call, dict) and isinstance(call.get("traits"), dict):
            traits = call["traits"]
            for typed in (True, False):
                fast = contact_fields("e@x.y", traits, typed=typed)
                assert orjson.dumps(fast) == orjson.dumps(
                    _contact_by_tables("e@x.y", traits, typed=typed)
                )


def _is_iso_date_by_regex(text: str) -> bool:
    if not traits._ISO_8601.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def test_javascript_dates_are_the_regex_dates() -> None:
    """`_is_iso_date` skips its regex for `YYYY-MM-DDTHH:MM:SS.mmmZ`; one character off, its
    answer is still the regex's and fromisoformat's."""
    for shape in ("2024-02-29T23:59:59.999Z", "2023-02-28T00:00:00.000Z"):
        assert traits._is_iso_date(shape)
        for index in range(len(shape)):
            for char in "09-:.TtZz+ a\u0661\uff10":
                text = shape[:index] + char + shape[index + 1 :]
                assert traits._is_iso_date(text) == _is_iso_date_by_regex(text), text


# --- _quote is quote(safe="") ---


def test_quote_is_urllib_quote() -> None:
    rng = random.Random(7)
    alphabet = [chr(code) for code in range(128)] + ["é", "中", "\u2028", "😀"]
    samples = ["", "@", "a@b.c", "max+tag@example.com", "ann.lee@ex-ample.co.uk", "a b@c"]
    samples += ["".join(rng.choices(alphabet, k=rng.randrange(1, 12))) for _ in range(5000)]
    for text in samples:
        assert trigger_journey._quote(text) == quote(text, safe=""), text


def test_map_destination_uses_the_fast_path() -> None:
    raw = orjson.dumps(
        {"type": "identify", "userId": "u", "messageId": "m", "traits": {"email": "a@b.c"}}
    )
    assert mapping._common_call(orjson.loads(raw), raw) is not None
    assert map_destination(raw, backend=AutopilotBackend(AutopilotConfig())).descriptors == [
        {
            "method": "POST",
            "path": "/v1/contact",
            "json": {"contact": {"Email": "a@b.c"}},
            "kind": "upsert_contact",
            "message_id": "m",
            "contact": "a@b.c",
        }
    ]
