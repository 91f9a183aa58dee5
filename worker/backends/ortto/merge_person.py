"""identify -> `POST /v1/person/merge` with one person: Ortto's "create or update people".

Traits come from `traits`, then `context.traits` (as for Autopilot). The person is found by the
ORTTO_MERGE_BY fields it has (`str::ei`, the userId; `str::email`, the email given, else the one
learned for the userId); with neither email nor userId: "Missing unique identifier traits..."
(400). Fields: `worker.backends.ortto.fields`. An Engage audience identify
(`context.personas.computation_class == "audience"` with a boolean trait `computation_key`) is
the same merge, recorded so that an unchanged membership is skipped next time; its trait lands
in `bol:cm:<slug of the key>`, the field the track form writes too.

The descriptor's body is what one call would send (`people` holds one person); delivery merges
a batch's people into bulk calls (`worker.backends.ortto.bulk`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from worker.backends.ortto.fields import EMAIL_FIELD, USER_ID_FIELD, person_fields
from worker.backends.seam import NO_UPDATES, Audience, CallRequests, audience_updates
from worker.errors import ValidationError
from worker.models.parsed_call import ParsedCall, given_email

__all__ = [
    "FIND_STRATEGY",
    "MERGE_PATH",
    "MERGE_STRATEGY",
    "MISSING_IDENTIFIER",
    "contact_key",
    "identity_fields",
    "merge",
    "merge_by_for",
    "merge_person",
]

MERGE_PATH: Final = "/v1/person/merge"
#: 2: the values sent overwrite the person's (Ortto's "overwrite existing").
MERGE_STRATEGY: Final = 2
#: 0: find the person by the merge_by fields in their order.
FIND_STRATEGY: Final = 0
MISSING_IDENTIFIER: Final = (
    "Missing unique identifier traits. Either email or user_id traits must be provided"
)


def identity_fields(user_id: str | None, email: str | None) -> dict[str, Any]:
    """`str::ei` and `str::email`, those the call has, in that order."""
    fields: dict[str, Any] = {}
    if user_id:
        fields[USER_ID_FIELD] = user_id
    if email:
        fields[EMAIL_FIELD] = email
    return fields


def merge_by_for(fields: Mapping[str, Any], merge_by: Sequence[str]) -> list[str]:
    """The ORTTO_MERGE_BY fields the person has, in their order; a 400 when it has none."""
    present = [field for field in merge_by if fields.get(field)]
    if not present:
        raise ValidationError(
            f"the person has none of the fields ORTTO_MERGE_BY finds people by "
            f"({', '.join(merge_by)})"
        )
    return present


def contact_key(fields: Mapping[str, Any], merge_by: Sequence[str]) -> str:
    """The Kafka key of the person's requests: its first merge_by field (an email
    lowercased), so that all of one person's requests keep their order."""
    first = merge_by[0]
    value = str(fields[first])
    return value.lower() if first == EMAIL_FIELD else value


def merge(
    call: ParsedCall, fields: dict[str, Any], *, merge_by: Sequence[str], async_merge: bool
) -> dict[str, Any]:
    """The descriptor of one person merge, in its wire form."""
    found_by = merge_by_for(fields, merge_by)
    return {
        "method": "POST",
        "path": MERGE_PATH,
        "json": {
            "people": [{"fields": fields}],
            "async": async_merge,
            "merge_by": found_by,
            "merge_strategy": MERGE_STRATEGY,
            "find_strategy": FIND_STRATEGY,
        },
        "kind": "merge_person",
        "message_id": call.message_id,
        "contact": contact_key(fields, found_by),
    }


def merge_person(
    call: ParsedCall,
    *,
    merge_by: Sequence[str],
    named_fields: Mapping[str, str],
    async_merge: bool,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> CallRequests:
    """The merge for an identify."""
    traits = {**call.context_traits, **call.traits} if call.context_traits else call.traits
    email = given_email(call) or learned_email
    if email is None and not call.user_id:
        raise ValidationError(MISSING_IDENTIFIER)
    updates = NO_UPDATES
    if call.audience_class == "audience":
        audience = _identify_audience(call, traits)
        if audience is not None:
            updates = audience_updates(audience, audience_state)
    fields = {**identity_fields(call.user_id, email), **person_fields(traits, named_fields)}
    return CallRequests([merge(call, fields, merge_by=merge_by, async_merge=async_merge)], updates)


def _identify_audience(call: ParsedCall, traits: Mapping[str, Any]) -> Audience | None:
    key = call.audience_key
    member = traits.get(key) if key else None
    return (key, member) if key and isinstance(member, bool) else None
