"""track -> `POST /v1/activities/create` with one activity.

The activity is the event's entry in ORTTO_ACTIVITIES, else `act:cm:<slug of the event name>`
(each event looks up its own entry: several mapped events each get theirs). Its attributes are
the properties, typed as custom fields are (`str:cm:<slug>`, `int:cm:...`; nulls left out);
Ortto takes at most 15 an activity, so an event with more is a 400 unless
ORTTO_ACTIVITY_ATTRIBUTES lists the properties to send for it. The person is named by
`str::email` (given, else learned for the userId) and `str::ei` (the userId); with neither:
"Email or userId is required for track calls" (400). `context.ip` becomes
`location.source_ip`. An activity over 16 kB is a 400.

"Audience Entered"/"Audience Exited" with a string `properties.audience_key` are a person merge
of `bol:cm:<slug of the key>` (true, false) instead, sent only when the membership changed: the
field the identify form of an Engage audience writes too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from worker.backends.ortto.fields import custom_field, slug
from worker.backends.ortto.merge_person import contact_key, identity_fields, merge, merge_by_for
from worker.backends.seam import NO_UPDATES, Audience, CallRequests, audience_updates
from worker.errors import ValidationError
from worker.models.parsed_call import ParsedCall, given_email
from worker.settings import MAX_ACTIVITY_ATTRIBUTES

__all__ = [
    "ACTIVITIES_PATH",
    "MAX_ACTIVITY_BYTES",
    "TRACK_IDENTIFIER_REQUIRED",
    "activity_id_for",
    "create_activity",
]

ACTIVITIES_PATH: Final = "/v1/activities/create"
#: Ortto's limit for one activity.
MAX_ACTIVITY_BYTES: Final = 16 * 1024
TRACK_IDENTIFIER_REQUIRED: Final = "Email or userId is required for track calls"
_AUDIENCE_EVENTS: Final = {"Audience Entered": True, "Audience Exited": False}


def activity_id_for(event: str, activities: Mapping[str, str]) -> str:
    """The event's activity id: its ORTTO_ACTIVITIES entry, else `act:cm:<slug>`."""
    return activities.get(event) or f"act:cm:{slug(event)}"


def create_activity(
    call: ParsedCall,
    *,
    merge_by: Sequence[str],
    activities: Mapping[str, str],
    activity_attributes: Mapping[str, Sequence[str]],
    async_merge: bool,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> CallRequests:
    """The request for a track: an activity, or an audience membership's person merge."""
    event = call.event or ""  # never empty: parse_call refuses a track without its event
    email = given_email(call) or learned_email
    if email is None and not call.user_id:
        raise ValidationError(TRACK_IDENTIFIER_REQUIRED)
    person = identity_fields(call.user_id, email)
    if event in _AUDIENCE_EVENTS:
        audience = _track_audience(call, event)
        if audience is not None:
            updates = audience_updates(audience, audience_state)
            field, member = custom_field(*audience, where="properties.audience_key")
            person[field] = member
            return CallRequests(
                [merge(call, person, merge_by=merge_by, async_merge=async_merge)], updates
            )
    found_by = merge_by_for(person, merge_by)
    activity: dict[str, Any] = {
        "activity_id": activity_id_for(event, activities),
        "attributes": _attributes(call.properties, event, activity_attributes.get(event)),
        "fields": person,
    }
    if call.ip:
        activity["location"] = {"source_ip": call.ip}
    size = len(orjson.dumps(activity))
    if size > MAX_ACTIVITY_BYTES:
        raise ValidationError(
            f"the activity is {size:,} bytes, over Ortto's limit of {MAX_ACTIVITY_BYTES:,} "
            "bytes an activity"
        )
    return CallRequests(
        [
            {
                "method": "POST",
                "path": ACTIVITIES_PATH,
                "json": {"activities": [activity], "merge_by": found_by},
                "kind": "create_activity",
                "message_id": call.message_id,
                "contact": contact_key(person, found_by),
            }
        ],
        NO_UPDATES,
    )


def _attributes(
    properties: Mapping[str, Any], event: str, listed: Sequence[str] | None
) -> dict[str, Any]:
    """The activity's attributes: the properties `listed` for the event (in that order), else
    every property, at most `MAX_ACTIVITY_ATTRIBUTES`."""
    if listed is None:
        items = [(name, value) for name, value in properties.items() if value is not None]
        if len(items) > MAX_ACTIVITY_ATTRIBUTES:
            raise ValidationError(
                f"event {event!r} has {len(items)} properties and Ortto takes at most "
                f"{MAX_ACTIVITY_ATTRIBUTES} attributes an activity: list the ones to send in "
                "ORTTO_ACTIVITY_ATTRIBUTES"
            )
    else:
        items = [(name, properties[name]) for name in listed if properties.get(name) is not None]
    return dict(custom_field(name, value, where=f"properties.{name}") for name, value in items)


def _track_audience(call: ParsedCall, event: str) -> Audience | None:
    member = _AUDIENCE_EVENTS[event]
    key = call.properties.get("audience_key")
    return (key, member) if isinstance(key, str) and key else None
