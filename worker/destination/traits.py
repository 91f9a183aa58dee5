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
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from worker.errors import ValidationError

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

TraitPath = tuple[str, ...]

EMAIL_TRAIT: Final = "email"

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
    if not _ISO_8601.fullmatch(text):
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

_Plan = tuple[tuple[tuple[str, tuple[TraitPath, ...]], ...], tuple[str, ...]]

_KINDS: Final[Mapping[type, str]] = {bool: "boolean", int: "integer", float: "float"}
_PREFIXES: Final[Mapping[str, str]] = {
    kind: f"{kind}--" for kind in ("boolean", "integer", "float", "date", "string")
}
_plans: dict[tuple[str, ...], _Plan] = {}


def contact_fields(email: str, traits: Mapping[str, Any], *, typed: bool) -> dict[str, Any]:
    """The Autopilot contact for `traits` with `email` as its Email: standard fields in the
    order of `STANDARD_FIELDS`, then the special fields, then `custom` (when not empty)."""
    contact: dict[str, Any] = {"Email": email}
    custom: dict[str, Any] = {}
    consumed: list[str] = []
    for name, value in traits.items():
        if value is None:
            continue
        if name in CONSUMED_TRAITS:
            consumed.append(name)
            continue
        kind = _KINDS.get(type(value))
        if kind is None:
            if type(value) is not str:  # an object or an array: `custom_field` says how
                key, text = custom_field(name, value, typed=typed)
                custom[key] = text
                continue
            # `_is_iso_date` needs 4 digits then "-": most strings fail that at a glance
            is_date = len(value) >= 10 and value[4] == "-" and _is_iso_date(value)
            kind = "date" if is_date else "string"
        custom[_PREFIXES[kind] + name.replace(" ", "--") if typed else name] = value
    if consumed:
        standard, special = _plan(tuple(consumed))
        for field, paths in standard:
            for path in paths:
                value = traits[path[0]]
                for key in path[1:]:
                    value = value.get(key) if isinstance(value, dict) else None
                if value is not None and not isinstance(value, dict | list):
                    contact[field] = value
                    break
        for name in special:
            contact[name] = traits[name]
    if custom:
        contact["custom"] = custom
    return contact


def _plan(present: tuple[str, ...]) -> _Plan:
    """The standard fields that can come from the `present` consumed traits, with the paths
    that can give them, and the special fields among them; remembered per set of names."""
    plan = _plans.get(present)
    if plan is None:
        names = set(present)
        standard = tuple(
            (field, tuple(path for path in paths if path[0] in names))
            for field, paths in STANDARD_FIELDS.items()
            if any(path[0] in names for path in paths)
        )
        plan = (standard, tuple(name for name in SPECIAL_FIELDS if name in names))
        if len(_plans) < 4096:
            _plans[present] = plan
    return plan
