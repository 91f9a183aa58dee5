"""Segment call -> request descriptors: the destination's pure, API-neutral core.

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
2. `accept_call`: skips. `integrations` turning the backend off (`integration_disabled`; this
   also stops the source's own tracks from looping back to Autopilot), a call whose
   `context.integration.name` the backend refuses (`from_source_integration`: the source's own
   tracks never reach Ortto), then page, screen, group and alias (`unsupported_call_<type>`):
   the destination accepts identify and track only.
3. The backend's `requests_for` (`worker.backends`): the API's requests for the call, given the
   email learned for its userId and the Engage audience memberships last sent; an unchanged
   membership is skipped (`audience_unchanged`); `CallRequests.audience_updates` is what to
   record once sent.

A descriptor's `contact` (the Kafka key) says who it is about (Autopilot: the lowercased email;
Ortto: the userId, else the lowercased email).

Speed: the models in `worker.models` are the contract (schemas, error messages), but building
them costs more than the mapping itself. So `parse_call` reads a call of the common shape
(`_common_call`: ids, event and messageId strings, objects where objects belong), of any type,
straight into a `ParsedCall` of plain values, and only every other call through
`SegmentCall`; the requests come out as plain dicts in the descriptor's wire form
(`CallRequests.descriptors`), ready for `orjson.dumps`. `tests/unit/test_destination_fast_path.py`
holds the fast ways to the slow ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import orjson
import pydantic

from worker.backends.seam import Backend, CallRequests
from worker.errors import (
    DecodeError,
    MessageTooLarge,
    SkipMessage,
    UnsupportedType,
    ValidationError,
)
from worker.models.parsed_call import ParsedCall, given_email
from worker.models.segment_call import SegmentCall

__all__ = [
    "MAX_MESSAGE_BYTES",
    "accept_call",
    "learned_identity",
    "map_destination",
    "parse_call",
    "precheck_call",
]

MAX_MESSAGE_BYTES: Final = 32 * 1024
"""Segment's limit for one call."""

_CALLS: Final[pydantic.TypeAdapter[SegmentCall]] = pydantic.TypeAdapter(SegmentCall)
_CALL_TYPES: Final = ("identify", "track", "page", "screen", "group", "alias")
_JSON_TYPES: Final[Mapping[type, str]] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def parse_call(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> ParsedCall:
    """Bytes -> a valid Segment call of any type, or an `InvalidInput` (400) naming the problem.

    Separate from `accept_call` so that identities can be learned from calls this destination
    skips (an identify with this destination turned off still says who a contact is).
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
    audience_class = audience_key = ip = integration_name = None
    context = get("context", _EMPTY)
    if type(context) is dict:
        ip, integration_name = _context_strings(context)
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
        ip,
        integration_name,
    )


def _context_strings(context: dict[str, Any]) -> tuple[str | None, str | None]:
    """`context.ip` and `context.integration.name` when they are strings (as `from_model`)."""
    ip = context.get("ip")
    integration = context.get("integration")
    name = integration.get("name") if type(integration) is dict else None
    return (ip if type(ip) is str else None), (name if type(name) is str else None)


def _optional_text(value: object) -> bool:
    return value is None or type(value) is str


def _decode_error(raw: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    try:  # only on failure: orjson's UTF-8 errors do not say where the bad byte is
        raw.decode()
    except UnicodeDecodeError as bad:
        return DecodeError(f"message is not valid UTF-8: {bad}")
    return DecodeError(f"message is not valid JSON: {exc}")


def accept_call(
    call: ParsedCall,
    integration_names: Sequence[str],
    source_integrations: Sequence[str] = (),
) -> ParsedCall:
    """The call itself if this destination sends it (identify, track), else `SkipMessage`.

    `integration_names` are the backend's names in Segment's `integrations` object, and
    `source_integrations` the `context.integration.name`s whose calls it never takes: the loop
    guard that keeps a vendor's own events (the source's tracks) from going back to it.
    """
    if call.integrations and not _enabled(call.integrations, integration_names):
        raise SkipMessage("integration_disabled")
    if call.integration is not None and call.integration in source_integrations:
        raise SkipMessage("from_source_integration")
    if call.type not in ("identify", "track"):
        raise SkipMessage(f"unsupported_call_{call.type}")
    return call


def precheck_call(
    raw: bytes,
    integration_names: Sequence[str],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    source_integrations: Sequence[str] = (),
) -> ParsedCall:
    """`parse_call`, then `accept_call`: every reason not to map these bytes, as an error."""
    return accept_call(parse_call(raw, max_bytes=max_bytes), integration_names, source_integrations)


def _enabled(integrations: Mapping[str, Any], names: Sequence[str]) -> bool:
    # Segment's rule: a destination's own entry wins; an options object also turns it on.
    own = next((integrations[name] for name in names if name in integrations), None)
    if own is False:
        return False
    return integrations.get("All") is not False or own is True or isinstance(own, dict)


def learned_identity(call: ParsedCall) -> tuple[str, str] | None:
    """`(lowercased email, userId)` when an identify or track names both, else None.

    It feeds two tables: email -> userId for the source, userId -> email for this destination's
    `learned_email`.
    """
    if not call.user_id or call.type not in ("identify", "track"):
        return None
    email = given_email(call)
    return (email.lower(), call.user_id) if email else None


def map_destination(raw: bytes, *, backend: Backend) -> CallRequests:
    """Bytes -> requests with no memory: the offline `map destination` command and the golden
    cases (`precheck_call`, then the backend's `requests_for`)."""
    call = precheck_call(
        raw, backend.integration_names, source_integrations=backend.source_integrations
    )
    return backend.requests_for(call, learned_email=None, audience_state=None)
