"""track -> `POST /v1/trigger/{trigger_id}/contact/{email}` `{"property": properties}`.

The trigger is the event's entry in AUTOPILOT_TRIGGERS, else AUTOPILOT_TRIGGER_ID, else the
track is skipped (`no_trigger_for_event`); trigger id and email are percent-encoded in the
path; a track without an email (given or learned) is a 400 ("Email is required for track
calls"). "Audience Entered"/"Audience Exited" with a string `properties.audience_key` need no
trigger: they are the contact upsert `{"Email", "custom": {"boolean--<key>": true|false}}`, so
both Engage forms land in one Autopilot field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from worker.backends.autopilot.fields import custom_field
from worker.backends.autopilot.upsert_contact import upsert
from worker.backends.seam import NO_UPDATES, Audience, CallRequests, audience_updates
from worker.errors import SkipMessage, ValidationError
from worker.models.parsed_call import ParsedCall, given_email

__all__ = ["TRACK_EMAIL_REQUIRED", "trigger_journey"]

TRACK_EMAIL_REQUIRED: Final = "Email is required for track calls"
_AUDIENCE_EVENTS: Final = {"Audience Entered": True, "Audience Exited": False}
_SAFE_BYTES_AND_AT: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~@"
"""What `urllib.parse.quote` never escapes, and `@`."""
_quoted_triggers: dict[str, str] = {}


def trigger_journey(
    call: ParsedCall,
    *,
    trigger_id: str | None,
    triggers: Mapping[str, str],
    typed_custom_fields: bool,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> CallRequests:
    """The request for a track: a journey trigger, or an audience upsert."""
    event = call.event or ""  # never empty: parse_call refuses a track without its event
    if event in _AUDIENCE_EVENTS:
        audience = _track_audience(call, event)
        if audience is not None:
            email = given_email(call) or learned_email
            if email is None:
                raise ValidationError(TRACK_EMAIL_REQUIRED)
            updates = audience_updates(audience, audience_state)
            key, value = custom_field(*audience, typed=typed_custom_fields)
            return CallRequests(
                [upsert(call, {"Email": email, "custom": {key: value}}, email)], updates
            )
    trigger = triggers.get(event, trigger_id)
    if trigger is None:
        raise SkipMessage("no_trigger_for_event")
    email = given_email(call) or learned_email
    if email is None:
        raise ValidationError(TRACK_EMAIL_REQUIRED)
    quoted_trigger = _quoted_triggers.get(trigger)
    if quoted_trigger is None:
        quoted_trigger = quote(trigger, safe="")
        if len(_quoted_triggers) < 1024:
            _quoted_triggers[trigger] = quoted_trigger
    return CallRequests(
        [
            {
                "method": "POST",
                "path": f"/v1/trigger/{quoted_trigger}/contact/{_quote(email)}",
                "json": {"property": call.properties},
                "kind": "trigger_journey",
                "message_id": call.message_id,
                "contact": email.lower(),
            }
        ],
        NO_UPDATES,
    )


def _quote(text: str) -> str:
    """`quote(text, safe="")`, without its per-byte Python loop when only `@` needs escaping
    (a non-ASCII character encodes to bytes that are not in the safe set)."""
    if not text.encode().strip(_SAFE_BYTES_AND_AT):
        return text.replace("@", "%40")
    return quote(text, safe="")


def _track_audience(call: ParsedCall, event: str) -> Audience | None:
    member = _AUDIENCE_EVENTS[event]
    key = call.properties.get("audience_key")
    return (key, member) if isinstance(key, str) and key else None
