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
them costs more than the mapping itself. So `parse_call` reads an identify or a track of the
common shape (`_common_call`: ids, event and messageId strings, objects where objects belong)
straight into a `ParsedCall` of plain values, and only every other call through
`SegmentCall`; the requests come out as plain dicts in the descriptor's wire form
(`DestinationResult.descriptors`), ready for `orjson.dumps`. `tests/unit/
test_destination_fast_path.py` holds the two ways in to the same result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

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
_ALWAYS_SAFE_BYTES: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
"""What `urllib.parse.quote` never escapes."""
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


@dataclass(slots=True)
class DestinationResult:
    """The requests for one call, and the audience memberships to record once they are sent.

    `descriptors` are the request descriptors in their wire form (`RequestDescriptor` dumped
    by alias, keys in its order), what the agent writes with `orjson.dumps`; `contact` is the
    Kafka key. Treat them as read-only: they share the call's own objects (its properties).
    """

    descriptors: list[dict[str, Any]]
    audience_updates: Mapping[str, bool]

    @property
    def requests(self) -> list[RequestDescriptor]:
        """The same requests as validated models; for tests and tools, not hot paths."""
        return [RequestDescriptor.model_validate(d) for d in self.descriptors]


class ParsedCall:
    """A valid Segment call, as the mapping reads it: plain values, a `null` object read as {}.

    Made by `parse_call`, from the bytes for an identify or a track of the common shape, else
    from the validated `SegmentCall` model. `event` is None for every type but track;
    `properties` is {} for identify, group and alias; `traits` is {} for page, screen and alias;
    `audience_class` and `audience_key` are `context.personas.computation_class` and
    `.computation_key` (Engage), or None.
    """

    __slots__ = (
        "anonymous_id",
        "audience_class",
        "audience_key",
        "context_traits",
        "event",
        "integrations",
        "message_id",
        "properties",
        "traits",
        "type",
        "user_id",
    )

    def __init__(  # noqa: PLR0917 - positional: one is made per message, keywords cost more
        self,
        type: str,
        user_id: str | None,
        anonymous_id: str | None,
        message_id: str,
        event: str | None,
        traits: dict[str, Any],
        properties: dict[str, Any],
        context_traits: dict[str, Any],
        integrations: dict[str, Any],
        audience_class: str | None,
        audience_key: str | None,
    ) -> None:
        self.type = type
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        self.message_id = message_id
        self.event = event
        self.traits = traits
        self.properties = properties
        self.context_traits = context_traits
        self.integrations = integrations
        self.audience_class = audience_class
        self.audience_key = audience_key

    def __repr__(self) -> str:
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
    message, kind = _checked_message(raw, max_bytes)
    return _common_call(message, kind) or _model_call(message)


def _checked_message(raw: bytes, max_bytes: int) -> tuple[dict[str, Any], str]:
    """The decoded call and its type, past the checks whose messages are ours; a missing
    messageId filled in."""
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
    return message, kind


def _model_call(message: dict[str, Any]) -> ParsedCall:
    """The call through the `SegmentCall` models: any type, and the errors' wording."""
    try:
        return ParsedCall.from_model(_CALLS.validate_python(message))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][1:])  # [0] is the type tag
        raise ValidationError(f"{where}: {error['msg']}") from None


def _common_call(message: dict[str, Any], kind: str) -> ParsedCall | None:
    """The call when it is an identify or a track of the common shape, else None.

    The common shape, which `SegmentCall` accepts with the same values: `userId`,
    `anonymousId` and `messageId` strings or null or absent (numbers, which the model turns
    into strings, are not), none of `user_id`, `anonymous_id`, `message_id` (names the model
    also reads), a track's `event` a string, `traits`, `properties` and `integrations` objects
    or null or absent, `context` an object or absent, its `traits` an object or null or absent,
    its `personas` null or absent or an object whose `computation_class` and `computation_key`
    are strings or null or absent.
    """
    if kind == "identify":
        event = None
        properties: Any = _EMPTY
    elif kind == "track":
        event = message["event"]
        if type(event) is not str:
            return None
        properties = message.get("properties")
        if properties is None:
            properties = {}
        elif type(properties) is not dict:
            return None
    else:
        return None
    user_id = message.get("userId")
    anonymous_id = message.get("anonymousId")
    message_id = message["messageId"]
    if (
        (user_id is not None and type(user_id) is not str)
        or (anonymous_id is not None and type(anonymous_id) is not str)
        or type(message_id) is not str
        or "user_id" in message
        or "anonymous_id" in message
        or "message_id" in message
    ):
        return None
    traits = message.get("traits")
    if traits is None:
        traits = {}
    elif type(traits) is not dict:
        return None
    integrations = message.get("integrations")
    if integrations is None:
        integrations = {}
    elif type(integrations) is not dict:
        return None
    audience_class = audience_key = None
    context_traits: Any
    context = message.get("context", _EMPTY)
    if type(context) is not dict:
        if context is not _EMPTY:
            return None
        context_traits = {}
    else:
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
            if (audience_class is not None and type(audience_class) is not str) or (
                audience_key is not None and type(audience_key) is not str
            ):
                return None
    return ParsedCall(
        kind,
        user_id,
        anonymous_id,
        message_id,
        event,
        traits,
        {} if properties is _EMPTY else properties,
        context_traits,
        integrations,
        audience_class,
        audience_key,
    )


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:  # only on failure: orjson's UTF-8 errors do not say where the bad byte is
            raw.decode()
        except UnicodeDecodeError as bad:
            raise DecodeError(f"message is not valid UTF-8: {bad}") from None
        raise DecodeError(f"message is not valid JSON: {exc}") from None


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
    if isinstance(email, str) and email.strip():
        return email.strip()
    email = call.context_traits.get(EMAIL_TRAIT)
    if isinstance(email, str) and email.strip():
        return email.strip()
    if call.type == "track":
        email = call.properties.get(EMAIL_TRAIT)
        if isinstance(email, str) and email.strip():
            return email.strip()
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
    """Bytes -> requests with no memory: the offline `map destination` command and golden tests."""
    return call_to_requests(
        precheck_call(raw), config=config, learned_email=None, audience_state=None
    )


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
            email = _track_email(call, learned_email)
            updates = _audience_updates(audience, audience_state)
            key, value = custom_field(*audience, typed=config.typed_custom_fields)
            return DestinationResult(
                [_upsert(call, {"Email": email, "custom": {key: value}}, email)], updates
            )
    trigger = config.triggers.get(event, config.trigger_id)
    if trigger is None:
        raise SkipMessage("no_trigger_for_event")
    email = _track_email(call, learned_email)
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
    """`quote(text, safe="")`, without its per-byte Python loop when only `@` needs escaping."""
    if text.isascii() and not text.encode().translate(None, _ALWAYS_SAFE_BYTES).strip(b"@"):
        return text.replace("@", "%40")
    return quote(text, safe="")


def _track_email(call: ParsedCall, learned_email: str | None) -> str:
    email = _given_email(call) or learned_email
    if email is None:
        raise ValidationError(TRACK_EMAIL_REQUIRED)
    return email


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
