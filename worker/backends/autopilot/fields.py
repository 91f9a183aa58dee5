"""Segment traits -> Autopilot contact fields: the rename tables, and the typing of custom fields.

Flat renames are data (`STANDARD_FIELDS`, `SPECIAL_FIELDS`); what depends on a value's type is
code (`custom_field`). The rules a reader can rely on:

- A standard field takes the first source path holding a scalar (not null, not an object or
  array). `company` may be a string (-> Company) or an object (name, industry, employee_count);
  `address` is an object (street, city, state, postalCode or postal_code, country).
- Every trait named in a table is consumed by it, whether or not it yielded a value: it never
  also appears in `custom`. So the other members of a `company` or `address` object (for
  example `company.plan`) are not sent; `email` is consumed too (it becomes `Email`).
- `_NewEmail` (change the contact's email) and `unsubscribed` pass through unchanged at the top
  of the contact, where Autopilot reads them.
- Every other trait becomes a custom field keyed `<type>--<Name>`, spaces in the name becoming
  `--`: boolean, integer, float, date (an ISO-8601 date or date-time string, sent as given) or
  string. Nulls are left out. Autopilot's custom fields are flat scalars, so a nested object or
  an array is sent as its compact JSON text under `string--`: nothing is lost, and it shows as
  text in Autopilot. With typing off the key is the trait name unchanged, values as above.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from operator import itemgetter
from typing import Any, Final

import orjson

from worker.errors import ValidationError
from worker.models.parsed_call import EMAIL_TRAIT

__all__ = [
    "CONSUMED_TRAITS",
    "EMAIL_TRAIT",
    "SPECIAL_FIELDS",
    "STANDARD_FIELDS",
    "contact_fields",
    "custom_field",
    "custom_fields",
    "special_fields",
    "standard_fields",
]

TraitPath = tuple[str] | tuple[str, str]
"""A trait, or a member of an object trait."""


STANDARD_FIELDS: Final[Mapping[str, tuple[TraitPath, ...]]] = {
    "FirstName": (("firstName",), ("firstname",), ("first_name",)),
    "LastName": (("lastName",), ("lastname",), ("last_name",)),
    "Phone": (("phone",),),
    "Company": (("company", "name"), ("company",)),
    "Status": (("status",),),
    "LeadSource": (("leadSource",), ("LeadSource",), ("lead_source",)),
    "Title": (("title",),),
    "Website": (("website",),),
    "Industry": (("company", "industry"),),
    "NumberOfEmployees": (("company", "employee_count"),),
    "MailingStreet": (("address", "street"),),
    "MailingCity": (("address", "city"),),
    "MailingState": (("address", "state"),),
    "MailingPostalCode": (("address", "postalCode"), ("address", "postal_code")),
    "MailingCountry": (("address", "country"),),
}
"""Autopilot standard field -> the trait paths it is read from, first scalar wins."""

SPECIAL_FIELDS: Final = ("_NewEmail", "unsubscribed")
"""Traits passed through unchanged as Autopilot's special contact fields."""

CONSUMED_TRAITS: Final = frozenset(
    {EMAIL_TRAIT, *SPECIAL_FIELDS, *(p[0] for ps in STANDARD_FIELDS.values() for p in ps)}
)
"""Top-level trait names that never become custom fields."""

_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)


def _scalar_at(traits: Mapping[str, Any], path: TraitPath) -> Any:
    value = traits.get(path[0])
    for key in path[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return None if isinstance(value, dict | list) else value


def standard_fields(traits: Mapping[str, Any]) -> dict[str, Any]:
    """The Autopilot standard fields found in `traits` (Email excepted: the caller resolves it)."""
    fields: dict[str, Any] = {}
    for field, paths in STANDARD_FIELDS.items():
        for path in paths:
            value = _scalar_at(traits, path) if path[0] in traits else None
            if value is not None:
                fields[field] = value
                break
    return fields


def special_fields(traits: Mapping[str, Any]) -> dict[str, Any]:
    """`_NewEmail` and `unsubscribed` when set."""
    return {name: traits[name] for name in SPECIAL_FIELDS if traits.get(name) is not None}


def _is_iso_date(text: str) -> bool:
    # The regex keeps out what fromisoformat also accepts but nobody means as a date
    # ("20240115", week dates); fromisoformat then rejects impossible dates (2024-02-30).
    # JavaScript's `toISOString()` (YYYY-MM-DDTHH:MM:SS.mmmZ) skips the regex: fromisoformat
    # reads only ASCII digits where the separators leave room for them, as the regex would.
    if not (
        len(text) == 24 and text[4:20:3] == "--T::." and text[23] == "Z"
    ) and not _ISO_8601.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def custom_field(name: str, value: Any, *, typed: bool) -> tuple[str, Any]:
    """One non-null trait as an Autopilot custom `(key, value)`.

    bool is tested before int because `True` is an `int` in Python.
    """
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "integer"
    elif isinstance(value, float):
        kind = "float"
    elif isinstance(value, str):
        kind = "date" if _is_iso_date(value) else "string"
    else:
        try:
            kind, value = "string", orjson.dumps(value).decode()
        except orjson.JSONEncodeError as exc:  # nested deeper than orjson's limit of 254
            raise ValidationError(f"traits.{name}: cannot be sent as JSON text: {exc}") from None
    return (f"{kind}--{name.replace(' ', '--')}" if typed else name), value


def custom_fields(traits: Mapping[str, Any], *, typed: bool) -> dict[str, Any]:
    """Every trait not consumed by a table and not null, as Autopilot custom fields."""
    return dict(
        custom_field(name, value, typed=typed)
        for name, value in traits.items()
        if value is not None and name not in CONSUMED_TRAITS
    )


# One pass over the traits, for the destination's hot path: the same contact as
# {"Email": email, **standard_fields(t), **special_fields(t), "custom": custom_fields(t)}.

_Candidate = tuple[int, str | None]
"""A trait that may give a standard field: its index among the traits' values, and its member
to read when the trait is an object (None: the trait itself, a scalar)."""
_Shape = tuple[
    Callable[[tuple[Any, ...]], tuple[Any, ...]] | None,
    tuple[str, ...],
    tuple[tuple[int, str], ...],
    tuple[tuple[int, str], ...],
    tuple[tuple[str, tuple[_Candidate, ...]], ...],
    tuple[tuple[str, int], ...],
]
"""What `contact_fields` does with traits of these names and value types: pick the custom
values out of the values (None: there are none), their keys (strings taken as not dates), the
strings among them with their key as dates, the objects and arrays among them with their name,
the standard fields with the candidates that can give them, and the special fields present."""

_KINDS: Final[Mapping[type, str]] = {bool: "boolean", int: "integer", float: "float", str: "string"}
_CONTAINERS: Final = (dict, list)
_SHAPES_MAX: Final = 4096
_shapes: dict[tuple[bool, tuple[str, ...], tuple[type, ...]], _Shape] = {}


def contact_fields(email: str, traits: Mapping[str, Any], *, typed: bool) -> dict[str, Any]:
    """The Autopilot contact for `traits` with `email` as its Email: standard fields in the
    order of `STANDARD_FIELDS`, then the special fields, then `custom` (when not empty).

    What depends only on the traits' names and value types (consumed or custom, the keys,
    which paths can give a standard field) is worked out once per such shape, which a producer
    keeps from one call to the next; the custom fields are then built in C.
    """
    values = tuple(traits.values())
    signature = (typed, tuple(traits), tuple(map(type, values)))
    shape = _shapes.get(signature)
    if shape is None:
        shape = _shape(*signature)
    pick, keys, strings, objects, standard, special = shape
    contact: dict[str, Any] = {"Email": email}
    for field, candidates in standard:
        for index, member in candidates:
            value = values[index]
            if member is not None:
                value = value.get(member)
                if value is None or isinstance(value, _CONTAINERS):
                    continue
            contact[field] = value
            break
    for name, index in special:
        contact[name] = values[index]
    if pick is not None:
        if strings or objects:
            custom_keys, custom_values = list(keys), list(pick(values))
            for index, date_key in strings:
                text = custom_values[index]  # `_is_iso_date` needs 4 digits then "-"
                if len(text) >= 10 and text[4] == "-" and _is_iso_date(text):
                    custom_keys[index] = date_key
            for index, name in objects:
                custom_keys[index], custom_values[index] = custom_field(
                    name, custom_values[index], typed=typed
                )
            contact["custom"] = dict(zip(custom_keys, custom_values, strict=True))
        else:
            contact["custom"] = dict(zip(keys, pick(values), strict=True))
    return contact


def _shape(typed: bool, names: tuple[str, ...], kinds: tuple[type, ...]) -> _Shape:
    def key(kind: str, name: str) -> str:
        return f"{kind}--{name.replace(' ', '--')}" if typed else name

    index_of = {name: index for index, name in enumerate(names)}
    custom = [
        index
        for index, name in enumerate(names)
        if kinds[index] is not type(None) and name not in CONSUMED_TRAITS
    ]
    keys = tuple(key(_KINDS.get(kinds[index], "string"), names[index]) for index in custom)
    strings = tuple(
        (position, key("date", names[index]))
        for position, index in enumerate(custom)
        if kinds[index] is str
    )
    objects = tuple(
        (position, names[index])
        for position, index in enumerate(custom)
        if kinds[index] not in _KINDS
    )
    standard = []
    for field, paths in STANDARD_FIELDS.items():
        candidates: list[_Candidate] = []
        for path in paths:
            index = index_of.get(path[0])
            if index is None:
                continue
            if len(path) == 2:
                if issubclass(kinds[index], dict):
                    candidates.append((index, path[1]))
            elif kinds[index] is not type(None) and not issubclass(kinds[index], _CONTAINERS):
                candidates.append((index, None))
                break  # a scalar: the paths after it are never read
        if candidates:
            standard.append((field, tuple(candidates)))
    special = tuple(
        (name, index_of[name])
        for name in SPECIAL_FIELDS
        if name in index_of and kinds[index_of[name]] is not type(None)
    )
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
    if len(custom) == 1:  # itemgetter(i) would give the value itself, not a tuple
        pick = itemgetter(slice(custom[0], custom[0] + 1))
    elif custom:
        pick = itemgetter(*custom)
    shape = (pick, keys, strings, objects, tuple(standard), special)
    if len(_shapes) < _SHAPES_MAX:
        _shapes[typed, names, kinds] = shape
    return shape
