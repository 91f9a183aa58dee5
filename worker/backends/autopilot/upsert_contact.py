"""identify -> `POST /v1/contact` `{"contact": {...}}`: Autopilot's "add or update contact".

The email comes from the call (traits, then context.traits), else the email learned for its
userId; without one: "Missing unique identifier traits..." (no userId either) or "traits.email
is required" (400). Fields: `worker.backends.autopilot.fields`. An Engage audience identify
(`context.personas.computation_class == "audience"` with a boolean trait `computation_key`)
is the same upsert, recorded so that an unchanged membership is skipped next time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from worker.backends.autopilot.fields import contact_fields
from worker.backends.seam import NO_UPDATES, Audience, CallRequests, audience_updates
from worker.errors import ValidationError
from worker.models.parsed_call import ParsedCall, given_email

__all__ = ["CONTACT_PATH", "MISSING_IDENTIFIER", "upsert", "upsert_contact"]

CONTACT_PATH: Final = "/v1/contact"
MISSING_IDENTIFIER: Final = (
    "Missing unique identifier traits. Either email or user_id traits must be provided"
)


def upsert_contact(
    call: ParsedCall,
    *,
    typed_custom_fields: bool,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> CallRequests:
    """The upsert for an identify."""
    traits = {**call.context_traits, **call.traits} if call.context_traits else call.traits
    email = given_email(call) or learned_email
    if email is None:
        if not call.user_id:
            raise ValidationError(MISSING_IDENTIFIER)
        raise ValidationError(
            "traits.email is required: no email was given "
            f"and none is known for userId {call.user_id!r}"
        )
    updates = NO_UPDATES
    if call.audience_class == "audience":
        audience = _identify_audience(call, traits)
        if audience is not None:
            updates = audience_updates(audience, audience_state)
    contact = contact_fields(email, traits, typed=typed_custom_fields)
    return CallRequests([upsert(call, contact, email)], updates)


def upsert(call: ParsedCall, contact: dict[str, Any], email: str) -> dict[str, Any]:
    """The descriptor of one contact upsert, in its wire form."""
    return {
        "method": "POST",
        "path": CONTACT_PATH,
        "json": {"contact": contact},
        "kind": "upsert_contact",
        "message_id": call.message_id,
        "contact": email.lower(),
    }


def _identify_audience(call: ParsedCall, traits: Mapping[str, Any]) -> Audience | None:
    key = call.audience_key
    member = traits.get(key) if key else None
    return (key, member) if key and isinstance(member, bool) else None
