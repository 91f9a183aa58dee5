"""Segment call -> Autopilot request descriptors: the destination's pure core.

Nothing here touches Kafka, HTTP or a table. The agent gives the two pieces of memory the
mapping needs as plain arguments (`learned_email`, `audience_state`) and stores what the result
says to store, so every rule is testable from bytes to descriptors (`map_destination`, the golden
cases under `tests/golden/destination/`). Failures are raised from `worker.errors`; the agent
decides their fate.

The stages, in order:

1. `parse_call`: 400s. Over 32 KB; not UTF-8 JSON; not an object; no `type`; a `type` that is
   not a Segment call; neither `userId` nor `anonymousId`; a track without `event`; a field of
   the wrong type. A call without `messageId` gets `derived-<sha256 of the raw bytes>`, so a
   redelivery of the same bytes maps to the same id and can be deduplicated downstream.
2. `accept_call`: skips. `integrations` turning AutopilotHQ off (`integration_disabled`; this
   also stops the Autopilot Source's own tracks from looping back), then page, screen, group and
   alias (`unsupported_call_<type>`): the destination accepts identify and track only.
3. `call_to_requests`:
   - identify -> `POST /v1/contact` `{"contact": {...}}` (fields: `worker.destination.traits`).
     Email from traits, else context.traits, else the email learned for the userId.
   - track -> `POST /v1/trigger/{trigger_id}/contact/{email}` `{"property": properties}`, the
     trigger from the event's entry in AUTOPILOT_TRIGGERS, else AUTOPILOT_TRIGGER_ID, else
     skipped (`no_trigger_for_event`). Trigger id and email are percent-encoded in the path.
   - Engage audiences: an identify with `context.personas.computation_class == "audience"`
     whose trait `computation_key` is a boolean, and a track "Audience Entered" / "Audience
     Exited" with a string `properties.audience_key`. The track form needs no trigger: it
     becomes the same contact upsert as the identify form, `{"Email", "custom":
     {"boolean--<audience_key>": true | false}}`, so both forms land in one Autopilot field.
     Given the last membership sent for this contact, an unchanged one is skipped
     (`audience_unchanged`); `DestinationResult.audience_updates` is what to record once sent.

A descriptor's `contact` (the Kafka key) is the lowercased email; the email in the body and the
path is sent as given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import orjson
import pydantic

from worker.destination.traits import (
    EMAIL_TRAIT,
    custom_field,
    custom_fields,
    special_fields,
    standard_fields,
)
from worker.errors import (
    DecodeError,
    MessageTooLarge,
    SkipMessage,
    UnsupportedType,
    ValidationError,
)
from worker.models.autopilot_request import RequestDescriptor, RequestKind
from worker.models.segment_call import IdentifyCall, SegmentCall, TrackCall
from worker.settings import Settings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "DestinationConfig",
    "DestinationResult",
    "accept_call",
    "call_to_requests",
    "learned_identity",
    "map_destination",
    "parse_call",
    "precheck_call",
]

MAX_MESSAGE_BYTES: Final = 32 * 1024
"""Segment's limit for one call."""

MISSING_IDENTIFIER: Final = (
    "Missing unique identifier traits. Either email or user_id traits must be provided"
)
TRACK_EMAIL_REQUIRED: Final = "Email is required for track calls"

_CALLS: Final[pydantic.TypeAdapter[SegmentCall]] = pydantic.TypeAdapter(SegmentCall)
_CALL_TYPES: Final = ("identify", "track", "page", "screen", "group", "alias")
_AUDIENCE_EVENTS: Final = {"Audience Entered": True, "Audience Exited": False}
_JSON_TYPES: Final[Mapping[type, str]] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}

Audience = tuple[str, bool]


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """The settings the mapping reads, so that tests and `map destination` need no environment."""

    trigger_id: str | None = None
    triggers: Mapping[str, str] = field(default_factory=dict)
    typed_custom_fields: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> DestinationConfig:
        return cls(
            trigger_id=settings.autopilot_trigger_id,
            triggers=dict(settings.autopilot_triggers),
            typed_custom_fields=settings.autopilot_typed_custom_fields,
        )


@dataclass(frozen=True, slots=True)
class DestinationResult:
    """The requests for one call, and the audience memberships to record once they are sent."""

    requests: list[RequestDescriptor]
    audience_updates: dict[str, bool] = field(default_factory=dict)


def parse_call(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> SegmentCall:
    """Bytes -> a valid Segment call of any type, or an `InvalidInput` (400) naming the problem.

    Separate from `accept_call` so that identities can be learned from calls this destination
    skips (an identify with AutopilotHQ turned off still says who a contact is).
    """
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"message is {len(raw)} bytes, over the {max_bytes}-byte limit")
    message = _decode(raw)
    if not isinstance(message, dict):
        raise DecodeError(f"message must be a JSON object, not {_JSON_TYPES[type(message)]}")
    kind = message.get("type")
    if kind is None or kind == "":
        raise ValidationError("type is required")
    if kind not in _CALL_TYPES:
        raise UnsupportedType(
            f"unsupported type {kind!r}: expected identify, track, page, screen, group or alias"
        )
    if message.get("userId") in (None, "") and message.get("anonymousId") in (None, ""):
        raise ValidationError("userId or anonymousId is required")
    if kind == "track" and message.get("event") in (None, ""):
        raise ValidationError("event is required for track calls")
    if message.get("messageId") in (None, ""):
        message["messageId"] = f"derived-{hashlib.sha256(raw).hexdigest()}"
    try:
        return _CALLS.validate_python(message)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][1:])  # [0] is the type tag
        raise ValidationError(f"{where}: {error['msg']}") from None


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:  # only on failure: orjson's UTF-8 errors do not say where the bad byte is
            raw.decode()
        except UnicodeDecodeError as bad:
            raise DecodeError(f"message is not valid UTF-8: {bad}") from None
        raise DecodeError(f"message is not valid JSON: {exc}") from None


def accept_call(call: SegmentCall) -> IdentifyCall | TrackCall:
    """The call itself if this destination sends it, else `SkipMessage` saying why."""
    if not _autopilot_enabled(call.integrations):
        raise SkipMessage("integration_disabled")
    if not isinstance(call, IdentifyCall | TrackCall):
        raise SkipMessage(f"unsupported_call_{call.type}")
    return call


def precheck_call(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> IdentifyCall | TrackCall:
    """`parse_call`, then `accept_call`: every reason not to map these bytes, as an error."""
    return accept_call(parse_call(raw, max_bytes=max_bytes))


def _autopilot_enabled(integrations: Mapping[str, Any]) -> bool:
    # Segment's rule: a destination's own entry wins; an options object also turns it on.
    own = integrations.get("AutopilotHQ")
    if own is False:
        return False
    return integrations.get("All") is not False or own is True or isinstance(own, dict)


def _given_email(call: IdentifyCall | TrackCall) -> str | None:
    sources = [call.traits, call.context.traits]
    if isinstance(call, TrackCall):
        sources.append(call.properties)
    for source in sources:
        email = source.get(EMAIL_TRAIT)
        if isinstance(email, str) and email.strip():
            return email.strip()
    return None


def learned_identity(call: SegmentCall) -> tuple[str, str] | None:
    """`(lowercased email, userId)` when an identify or track names both, else None.

    It feeds two tables: email -> userId for the Autopilot Source, userId -> email for this
    destination's `learned_email`.
    """
    if not isinstance(call, IdentifyCall | TrackCall) or not call.user_id:
        return None
    email = _given_email(call)
    return (email.lower(), call.user_id) if email else None


def call_to_requests(
    call: IdentifyCall | TrackCall,
    *,
    config: DestinationConfig,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> DestinationResult:
    """The Autopilot requests for a prechecked call.

    `learned_email` is the email known for the call's userId, used when the call gives none.
    `audience_state` is the last membership sent per audience key for this contact; None means
    no memory (the offline map), and every audience call is sent.
    """
    if isinstance(call, IdentifyCall):
        return _identify(call, config, learned_email, audience_state)
    return _track(call, config, learned_email, audience_state)


def map_destination(raw: bytes, *, config: DestinationConfig) -> DestinationResult:
    """Bytes -> requests with no memory: the offline `map destination` command and golden tests."""
    return call_to_requests(
        precheck_call(raw), config=config, learned_email=None, audience_state=None
    )


def _identify(
    call: IdentifyCall,
    config: DestinationConfig,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> DestinationResult:
    traits = {**call.context.traits, **call.traits}
    email = _given_email(call) or learned_email
    if email is None:
        if not call.user_id:
            raise ValidationError(MISSING_IDENTIFIER)
        raise ValidationError(
            "traits.email is required: no email was given "
            f"and none is known for userId {call.user_id!r}"
        )
    updates = _audience_updates(_identify_audience(call, traits), audience_state)
    contact: dict[str, Any] = {
        "Email": email,
        **standard_fields(traits),
        **special_fields(traits),
    }
    if custom := custom_fields(traits, typed=config.typed_custom_fields):
        contact["custom"] = custom
    return DestinationResult([_upsert(call, contact, email)], updates)


def _track(
    call: TrackCall,
    config: DestinationConfig,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> DestinationResult:
    audience = _track_audience(call)
    if audience is not None:
        email = _track_email(call, learned_email)
        updates = _audience_updates(audience, audience_state)
        key, value = custom_field(*audience, typed=config.typed_custom_fields)
        return DestinationResult(
            [_upsert(call, {"Email": email, "custom": {key: value}}, email)], updates
        )
    trigger = config.triggers.get(call.event, config.trigger_id)
    if trigger is None:
        raise SkipMessage("no_trigger_for_event")
    email = _track_email(call, learned_email)
    request = RequestDescriptor(
        path=f"/v1/trigger/{quote(trigger, safe='')}/contact/{quote(email, safe='')}",
        body={"property": call.properties},
        kind=RequestKind.TRIGGER_JOURNEY,
        message_id=call.message_id,
        contact=email.lower(),
    )
    return DestinationResult([request])


def _track_email(call: TrackCall, learned_email: str | None) -> str:
    email = _given_email(call) or learned_email
    if email is None:
        raise ValidationError(TRACK_EMAIL_REQUIRED)
    return email


def _upsert(call: SegmentCall, contact: dict[str, Any], email: str) -> RequestDescriptor:
    return RequestDescriptor(
        path="/v1/contact",
        body={"contact": contact},
        kind=RequestKind.UPSERT_CONTACT,
        message_id=call.message_id,
        contact=email.lower(),
    )


def _identify_audience(call: IdentifyCall, traits: Mapping[str, Any]) -> Audience | None:
    personas = call.context.personas
    if personas is None or personas.computation_class != "audience":
        return None
    key = personas.computation_key
    member = traits.get(key) if key else None
    return (key, member) if key and isinstance(member, bool) else None


def _track_audience(call: TrackCall) -> Audience | None:
    member = _AUDIENCE_EVENTS.get(call.event)
    key = call.properties.get("audience_key")
    return (key, member) if member is not None and isinstance(key, str) and key else None


def _audience_updates(
    audience: Audience | None, audience_state: Mapping[str, bool] | None
) -> dict[str, bool]:
    """What to record for an audience call, or `SkipMessage` if it repeats the last one sent."""
    if audience is None:
        return {}
    key, member = audience
    if audience_state is not None and audience_state.get(key) == member:
        raise SkipMessage("audience_unchanged")
    return {key: member}
