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

Speed: the models in `worker.models` are the contract (schemas, error messages), but building
them costs more than the mapping itself. So `parse_call` reads a call of the common shape
(`_common_call`: ids, event and messageId strings, objects where objects belong), of any type,
straight into a `ParsedCall` of plain values, and only every other call through
`SegmentCall`; the requests come out as plain dicts in the descriptor's wire form
(`DestinationResult.descriptors`), ready for `orjson.dumps`; `contact_fields` plans its work
once per shape of traits. `tests/unit/test_destination_fast_path.py` holds the fast ways to
the slow ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import msgspec
import orjson
import pydantic

from worker.destination.traits import EMAIL_TRAIT, contact_fields, custom_field
from worker.errors import (
    DecodeError,
    MessageTooLarge,
    SkipMessage,
    UnsupportedType,
    ValidationError,
)
from worker.models.autopilot_request import RequestDescriptor
from worker.models.segment_call import (
    GroupCall,
    IdentifyCall,
    PageCall,
    ScreenCall,
    SegmentCall,
    TrackCall,
)
from worker.settings import Settings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "DestinationConfig",
    "DestinationResult",
    "ParsedCall",
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
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_UPDATES: Final[Mapping[str, bool]] = MappingProxyType({})
_SAFE_BYTES_AND_AT: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~@"
"""What `urllib.parse.quote` never escapes, and `@`."""
_quoted_triggers: dict[str, str] = {}

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


class DestinationResult(msgspec.Struct, gc=False):
    """The requests for one call, and the audience memberships to record once they are sent.

    `descriptors` are the request descriptors in their wire form (`RequestDescriptor` dumped
    by alias, keys in its order), what the agent writes with `orjson.dumps`; `contact` is the
    Kafka key. Treat them as read-only: they share the call's own objects (its properties).
    A msgspec struct, as `ParsedCall` is, for its constructor in C.
    """

    descriptors: list[dict[str, Any]]
    audience_updates: Mapping[str, bool]

    @property
    def requests(self) -> list[RequestDescriptor]:
        """The same requests as validated models; for tests and tools, not hot paths."""
        return [RequestDescriptor.model_validate(d) for d in self.descriptors]


class ParsedCall(msgspec.Struct, gc=False):
    """A valid Segment call, as the mapping reads it: plain values, a `null` object read as {}.

    Made by `parse_call`, from the decoded JSON for a call of the common shape, else from the
    validated `SegmentCall` model. `event` is None for every type but track; `properties` is {}
    for identify, group and alias; `traits` is {} for page, screen and alias; `audience_class`
    and `audience_key` are `context.personas.computation_class` and `.computation_key`
    (Engage), or None. A msgspec struct because one is made per message and its constructor
    runs in C; its values are JSON data, which cannot refer back to it (hence gc=False).
    """

    type: str
    user_id: str | None
    anonymous_id: str | None
    message_id: str
    event: str | None
    traits: dict[str, Any]
    properties: dict[str, Any]
    context_traits: dict[str, Any]
    integrations: dict[str, Any]
    audience_class: str | None
    audience_key: str | None

    def __repr__(self) -> str:  # the traits carry personal data: keep them out of logs
        return f"ParsedCall(type={self.type!r}, message_id={self.message_id!r})"

    @classmethod
    def from_model(cls, call: SegmentCall) -> ParsedCall:
        """The call's declared fields (not the extra ones a model also keeps as attributes)."""
        personas = call.context.personas
        return cls(
            call.type,
            call.user_id,
            call.anonymous_id,
            call.message_id,
            call.event if isinstance(call, TrackCall) else None,
            call.traits if isinstance(call, IdentifyCall | TrackCall | GroupCall) else {},
            call.properties if isinstance(call, TrackCall | PageCall | ScreenCall) else {},
            call.context.traits,
            call.integrations,
            personas.computation_class if personas else None,
            personas.computation_key if personas else None,
        )


def parse_call(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> ParsedCall:
    """Bytes -> a valid Segment call of any type, or an `InvalidInput` (400) naming the problem.

    Separate from `accept_call` so that identities can be learned from calls this destination
    skips (an identify with AutopilotHQ turned off still says who a contact is).
    """
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"message is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(raw, exc) from None
    if type(message) is dict:
        call = _common_call(message, raw)
        if call is not None:
            return call
    return _model_call(_checked_message(message, raw))


def _checked_message(message: Any, raw: bytes) -> dict[str, Any]:
    """The decoded call past the checks whose messages are ours; a missing messageId filled in."""
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
        message["messageId"] = _derived_message_id(raw)
    return message


def _derived_message_id(raw: bytes) -> str:
    return f"derived-{hashlib.sha256(raw).hexdigest()}"


def _model_call(message: dict[str, Any]) -> ParsedCall:
    """The call through the `SegmentCall` models: any type, and the errors' wording."""
    try:
        return ParsedCall.from_model(_CALLS.validate_python(message))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][1:])  # [0] is the type tag
        raise ValidationError(f"{where}: {error['msg']}") from None


def _common_call(message: dict[str, Any], raw: bytes) -> ParsedCall | None:
    """The call when it is of the common shape, else None (`_checked_message` and the models
    then decide, and word the errors).

    The common shape, which `_checked_message` passes and `SegmentCall` reads with the same
    values: a known `type`; `userId`, `anonymousId` and `messageId` strings or null or absent
    (numbers, which the model turns into strings, are not), one of the first two not empty;
    none of `user_id`, `anonymous_id`, `message_id` (names the model also reads); a track's
    `event` a string not empty; `traits`, `properties` and `integrations` objects or null or
    absent; `context` an object or absent, its `traits` an object or null or absent, its
    `personas` null or absent or an object whose `computation_class` and `computation_key` are
    strings or null or absent; a page's or screen's `name`, a group's `groupId` and an alias's
    `previousId` strings or null or absent (and no `group_id`, `previous_id`).
    """
    get = message.get
    kind = get("type")
    event = None
    traits: Any = None
    properties: Any = None
    if kind == "track":
        event = get("event")
        if type(event) is not str or not event:
            return None
        traits = get("traits")
        properties = get("properties")
    elif kind == "identify":
        traits = get("traits")
    elif kind in ("page", "screen"):
        if not _optional_text(get("name")):
            return None
        properties = get("properties")
    elif kind == "group":
        if not _optional_text(get("groupId")) or "group_id" in message:
            return None
        traits = get("traits")
    elif kind == "alias":
        if not _optional_text(get("previousId")) or "previous_id" in message:
            return None
    else:
        return None
    traits = {} if traits is None else traits
    properties = {} if properties is None else properties
    integrations = get("integrations")
    integrations = {} if integrations is None else integrations
    user_id = get("userId")
    anonymous_id = get("anonymousId")
    if (
        type(traits) is not dict
        or type(properties) is not dict
        or type(integrations) is not dict
        or (user_id is not None and type(user_id) is not str)
        or (anonymous_id is not None and type(anonymous_id) is not str)
        or not (user_id or anonymous_id)
        or "user_id" in message
        or "anonymous_id" in message
        or "message_id" in message
    ):
        return None
    message_id = get("messageId")
    if message_id is None or message_id == "":
        message_id = _derived_message_id(raw)
    elif type(message_id) is not str:
        return None
    audience_class = audience_key = None
    context = get("context", _EMPTY)
    if type(context) is dict:
        context_traits = context.get("traits")
        if context_traits is None:
            context_traits = {}
        elif type(context_traits) is not dict:
            return None
        personas = context.get("personas")
        if personas is not None:
            if type(personas) is not dict:
                return None
            audience_class = personas.get("computation_class")
            audience_key = personas.get("computation_key")
            if not (_optional_text(audience_class) and _optional_text(audience_key)):
                return None
    elif context is _EMPTY:
        context_traits = {}
    else:
        return None
    return ParsedCall(
        kind,
        user_id,
        anonymous_id,
        message_id,
        event,
        traits,
        properties,
        context_traits,
        integrations,
        audience_class,
        audience_key,
    )


def _optional_text(value: object) -> bool:
    return value is None or type(value) is str


def _decode_error(raw: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    try:  # only on failure: orjson's UTF-8 errors do not say where the bad byte is
        raw.decode()
    except UnicodeDecodeError as bad:
        return DecodeError(f"message is not valid UTF-8: {bad}")
    return DecodeError(f"message is not valid JSON: {exc}")


def accept_call(call: ParsedCall) -> ParsedCall:
    """The call itself if this destination sends it (identify, track), else `SkipMessage`."""
    if call.integrations and not _autopilot_enabled(call.integrations):
        raise SkipMessage("integration_disabled")
    if call.type not in ("identify", "track"):
        raise SkipMessage(f"unsupported_call_{call.type}")
    return call


def precheck_call(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> ParsedCall:
    """`parse_call`, then `accept_call`: every reason not to map these bytes, as an error."""
    return accept_call(parse_call(raw, max_bytes=max_bytes))


def _autopilot_enabled(integrations: Mapping[str, Any]) -> bool:
    # Segment's rule: a destination's own entry wins; an options object also turns it on.
    own = integrations.get("AutopilotHQ")
    if own is False:
        return False
    return integrations.get("All") is not False or own is True or isinstance(own, dict)


def _given_email(call: ParsedCall) -> str | None:
    email = call.traits.get(EMAIL_TRAIT)
    if isinstance(email, str) and (email := email.strip()):
        return email
    email = call.context_traits.get(EMAIL_TRAIT)
    if isinstance(email, str) and (email := email.strip()):
        return email
    if call.type == "track":
        email = call.properties.get(EMAIL_TRAIT)
        if isinstance(email, str) and (email := email.strip()):
            return email
    return None


def learned_identity(call: ParsedCall) -> tuple[str, str] | None:
    """`(lowercased email, userId)` when an identify or track names both, else None.

    It feeds two tables: email -> userId for the Autopilot Source, userId -> email for this
    destination's `learned_email`.
    """
    if not call.user_id or call.type not in ("identify", "track"):
        return None
    email = _given_email(call)
    return (email.lower(), call.user_id) if email else None


def call_to_requests(
    call: ParsedCall,
    *,
    config: DestinationConfig,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> DestinationResult:
    """The Autopilot requests for a prechecked call (an identify or a track).

    `learned_email` is the email known for the call's userId, used when the call gives none.
    `audience_state` is the last membership sent per audience key for this contact; None means
    no memory (the offline map), and every audience call is sent.
    """
    if call.type == "identify":
        return _identify(call, config, learned_email, audience_state)
    return _track(call, config, learned_email, audience_state)


def map_destination(raw: bytes, *, config: DestinationConfig) -> DestinationResult:
    """Bytes -> requests with no memory: the offline `map destination` command and golden tests
    (`precheck_call`, then `call_to_requests`)."""
    call = accept_call(parse_call(raw))
    if call.type == "identify":
        return _identify(call, config, None, None)
    return _track(call, config, None, None)


def _identify(
    call: ParsedCall,
    config: DestinationConfig,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> DestinationResult:
    traits = {**call.context_traits, **call.traits} if call.context_traits else call.traits
    email = _given_email(call) or learned_email
    if email is None:
        if not call.user_id:
            raise ValidationError(MISSING_IDENTIFIER)
        raise ValidationError(
            "traits.email is required: no email was given "
            f"and none is known for userId {call.user_id!r}"
        )
    updates = _NO_UPDATES
    if call.audience_class == "audience":
        audience = _identify_audience(call, traits)
        if audience is not None:
            updates = _audience_updates(audience, audience_state)
    contact = contact_fields(email, traits, typed=config.typed_custom_fields)
    return DestinationResult([_upsert(call, contact, email)], updates)


def _track(
    call: ParsedCall,
    config: DestinationConfig,
    learned_email: str | None,
    audience_state: Mapping[str, bool] | None,
) -> DestinationResult:
    event = call.event or ""  # never empty: parse_call refuses a track without its event
    if event in _AUDIENCE_EVENTS:
        audience = _track_audience(call, event)
        if audience is not None:
            email = _given_email(call) or learned_email
            if email is None:
                raise ValidationError(TRACK_EMAIL_REQUIRED)
            updates = _audience_updates(audience, audience_state)
            key, value = custom_field(*audience, typed=config.typed_custom_fields)
            return DestinationResult(
                [_upsert(call, {"Email": email, "custom": {key: value}}, email)], updates
            )
    trigger = config.triggers.get(event, config.trigger_id)
    if trigger is None:
        raise SkipMessage("no_trigger_for_event")
    email = _given_email(call) or learned_email
    if email is None:
        raise ValidationError(TRACK_EMAIL_REQUIRED)
    quoted_trigger = _quoted_triggers.get(trigger)
    if quoted_trigger is None:
        quoted_trigger = quote(trigger, safe="")
        if len(_quoted_triggers) < 1024:
            _quoted_triggers[trigger] = quoted_trigger
    return DestinationResult(
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
        _NO_UPDATES,
    )


def _quote(text: str) -> str:
    """`quote(text, safe="")`, without its per-byte Python loop when only `@` needs escaping
    (a non-ASCII character encodes to bytes that are not in the safe set)."""
    if not text.encode().strip(_SAFE_BYTES_AND_AT):
        return text.replace("@", "%40")
    return quote(text, safe="")


def _upsert(call: ParsedCall, contact: dict[str, Any], email: str) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/v1/contact",
        "json": {"contact": contact},
        "kind": "upsert_contact",
        "message_id": call.message_id,
        "contact": email.lower(),
    }


def _identify_audience(call: ParsedCall, traits: Mapping[str, Any]) -> Audience | None:
    key = call.audience_key
    member = traits.get(key) if key else None
    return (key, member) if key and isinstance(member, bool) else None


def _track_audience(call: ParsedCall, event: str) -> Audience | None:
    member = _AUDIENCE_EVENTS[event]
    key = call.properties.get("audience_key")
    return (key, member) if isinstance(key, str) and key else None


def _audience_updates(
    audience: Audience, audience_state: Mapping[str, bool] | None
) -> Mapping[str, bool]:
    """What to record for an audience call, or `SkipMessage` if it repeats the last one sent."""
    key, member = audience
    if audience_state is not None and audience_state.get(key) == member:
        raise SkipMessage("audience_unchanged")
    return {key: member}
