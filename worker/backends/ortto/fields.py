"""Segment traits and properties -> Ortto person fields and activity attributes.

Ortto names a field `<type>:<namespace>:<name>`: built-in person fields have no namespace
(`str::first`), custom ones are `cm` (`str:cm:job-title`), and must exist in the account (as
must the activity definitions). The rules a reader can rely on:

- Built-in fields, first value found wins: `firstName`/`first_name`/`firstname` -> `str::first`,
  the same for the last name -> `str::last`, `phone` -> `phn::phone` (`{"n": "<text>"}`),
  `address.city`/`.country`/`.state` -> `geo::city`/`geo::country`/`geo::region`
  (`{"name": "<text>"}`), `address.postalCode`/`.postal_code` -> `str::postal`, `birthday` ->
  `dtz::b` (`{"year", "month", "day"}`: the calendar date as written, an ISO-8601 date or
  date-time, never moved to another time zone), `language`, else `locale` -> `str::language`.
  An empty phone, place or birthday is left out: Ortto must never get an empty phone object.
- Consent is sent only when the call carries it, never defaulted: `email_permission` (or
  `emailPermission`) -> `bol::p`, `sms_permission` (`smsPermission`) -> `bol::sp`, `gdpr` ->
  `bol::gdpr`; each must be true or false.
- `email` is the identifier (`str::email`, set by the caller), never a custom field.
- `ORTTO_PERSON_FIELDS` (trait name -> field id) wins over every rule above but the email's:
  the trait goes to that field, its value shaped by the field's type (`convert`).
- Every other trait is a custom field `<type>:cm:<slug>` typed by its value (`custom_field`):
  `bol` for true/false, `int` for whole numbers, `dtz` for an ISO-8601 date or date-time
  (sent as written), `str` for text up to 255 characters and `txt` (long text) up to 4,000,
  more is a 400. A decimal number, an object or an array is sent as its JSON text (Ortto's
  number fields hold whole numbers): name a field in ORTTO_PERSON_FIELDS to choose otherwise.
  The slug is the name lowercased, spaces and underscores made hyphens.
- Nulls are left out, everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Final

import orjson

from worker.errors import ValidationError
from worker.models.parsed_call import EMAIL_TRAIT

__all__ = [
    "ADDRESS_FIELDS",
    "CONSENT_FIELDS",
    "EMAIL_FIELD",
    "MAX_LONG_TEXT",
    "MAX_TEXT",
    "STANDARD_FIELDS",
    "USER_ID_FIELD",
    "birthday",
    "convert",
    "custom_field",
    "person_fields",
    "slug",
]

EMAIL_FIELD: Final = "str::email"
USER_ID_FIELD: Final = "str::ei"
BIRTHDAY_FIELD: Final = "dtz::b"

#: Ortto's limits for text (`str`) and long text (`txt`) fields, in characters.
MAX_TEXT: Final = 255
MAX_LONG_TEXT: Final = 4000

STANDARD_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "str::first": ("firstName", "first_name", "firstname"),
    "str::last": ("lastName", "last_name", "lastname"),
    "phn::phone": ("phone",),
    "str::language": ("language", "locale"),
}
"""Built-in person field -> the traits it is read from, first value wins."""

ADDRESS_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "geo::city": ("city",),
    "geo::country": ("country",),
    "geo::region": ("state",),
    "str::postal": ("postalCode", "postal_code"),
}
"""Built-in person field -> the members of the `address` trait it is read from."""

CONSENT_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "bol::p": ("email_permission", "emailPermission"),
    "bol::sp": ("sms_permission", "smsPermission"),
    "bol::gdpr": ("gdpr",),
}
"""Consent field -> the traits that carry it; sent only when one of them is true or false."""

_CONSUMED: Final = frozenset(
    {
        EMAIL_TRAIT,
        "address",
        "birthday",
        *(name for names in STANDARD_FIELDS.values() for name in names),
        *(name for names in CONSENT_FIELDS.values() for name in names),
    }
)

_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)


def slug(name: str) -> str:
    """A field or activity name as Ortto's ids spell it: lowercased, spaces and underscores
    made hyphens (`Job Title` -> `job-title`)."""
    return name.lower().replace(" ", "-").replace("_", "-")


def _iso_date(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) written at the start of an ISO-8601 date or date-time, else None.

    The date is read as written: a date-time's offset never moves it to another day.
    """
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        return None
    try:
        if len(text) > 10:
            datetime.fromisoformat(text)  # rejects 25:00 and the like
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
    return day.year, day.month, day.day


def birthday(value: Any, where: str) -> dict[str, int] | None:
    """`dtz::b` for a birthday: its calendar date as written, None when empty."""
    if value is None or value == "":
        return None
    parts = _iso_date(value) if isinstance(value, str) else None
    if parts is None:
        raise ValidationError(f"{where}: expected an ISO-8601 date or date-time, e.g. 1990-04-23")
    year, month, day = parts
    return {"year": year, "month": month, "day": day}


def _text(value: Any) -> str:
    """A scalar or a JSON value as the text a text field holds."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson's limit of 254
        raise ValidationError(f"cannot be sent as JSON text: {exc}") from None


def _typed(value: Any, where: str) -> tuple[str, Any]:
    """(Ortto type, value) of a custom field or attribute, by its value."""
    if isinstance(value, bool):  # before int: True is an int in Python
        return "bol", value
    if isinstance(value, int):
        return "int", value
    if isinstance(value, str) and _iso_date(value) is not None:
        return "dtz", value
    try:
        text = _text(value)
    except ValidationError as error:
        raise ValidationError(f"{where}: {error.message}") from None
    if len(text) <= MAX_TEXT:
        return "str", text
    if len(text) <= MAX_LONG_TEXT:
        return "txt", text
    raise ValidationError(
        f"{where}: {len(text)} characters, over Ortto's limit of {MAX_LONG_TEXT:,} for long text"
    )


def custom_field(name: str, value: Any, *, where: str) -> tuple[str, Any]:
    """One non-null trait or property as an Ortto custom `(field id, value)`: `<type>:cm:<slug>`
    typed by the value. `where` names it in errors (`traits.plan`)."""
    kind, typed = _typed(value, where)
    return f"{kind}:cm:{slug(name)}", typed


def convert(field_id: str, value: Any, where: str) -> Any:
    """`value` shaped for the field `field_id` names (its type is the id's first part); None
    to leave it out. Raises a 400 when the value cannot be of that type."""
    kind = field_id.split(":", 1)[0]
    if field_id == BIRTHDAY_FIELD:
        return birthday(value, where)
    if kind in ("str", "txt"):
        return _text(value)
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValidationError(f"{where}: {field_id} takes a whole number")
    if kind == "bol":
        if isinstance(value, bool):
            return value
        raise ValidationError(f"{where}: {field_id} takes true or false")
    if kind == "dtz":
        if isinstance(value, str) and _iso_date(value) is not None:
            return value
        raise ValidationError(f"{where}: {field_id} takes an ISO-8601 date or date-time")
    if kind == "phn":
        text = _text(value).strip() if isinstance(value, str | int | float) else ""
        return {"n": text} if text else None
    if kind == "geo":
        text = _text(value).strip() if isinstance(value, str | int | float) else ""
        return {"name": text} if text else None
    return value


def _scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, dict | list)


def person_fields(traits: Mapping[str, Any], named: Mapping[str, str]) -> dict[str, Any]:
    """The Ortto person fields for `traits` (the identifiers excepted: the caller adds
    `str::email` and `str::ei`), with `named` (ORTTO_PERSON_FIELDS) taking precedence."""
    fields: dict[str, Any] = {}
    for field, names in STANDARD_FIELDS.items():
        for name in names:
            value = traits.get(name)
            if name in named or not _scalar(value):
                continue
            shaped = convert(field, value, f"traits.{name}")
            if shaped is not None:
                fields[field] = shaped
            break
    address = traits.get("address")
    if isinstance(address, dict) and "address" not in named:
        for field, members in ADDRESS_FIELDS.items():
            value = next((address[m] for m in members if _scalar(address.get(m))), None)
            if value is not None:
                shaped = convert(field, value, "traits.address")
                if shaped is not None:
                    fields[field] = shaped
    if "birthday" not in named:
        born = birthday(traits.get("birthday"), "traits.birthday")
        if born is not None:
            fields[BIRTHDAY_FIELD] = born
    for field, names in CONSENT_FIELDS.items():
        for name in names:
            value = traits.get(name)
            if value is None or name in named:
                continue
            if not isinstance(value, bool):
                raise ValidationError(f"traits.{name}: expected true or false")
            fields[field] = value
            break
    for name, value in traits.items():
        if value is None or name == EMAIL_TRAIT:
            continue
        where = f"traits.{name}"
        if name in named:
            shaped = convert(named[name], value, where)
            if shaped is not None:
                fields[named[name]] = shaped
        elif name not in _CONSUMED:
            field, typed = custom_field(name, value, where=where)
            fields[field] = typed
    return fields
