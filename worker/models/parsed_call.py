"""`ParsedCall`: a valid Segment call as mappings read it, and who it names.

Made by the destination's `parse_call` from the raw bytes; read by every backend's mapping
(`worker.backends`). Plain values (a msgspec struct, built in C), no model to walk.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from worker.models.segment_call import (
    GroupCall,
    IdentifyCall,
    PageCall,
    ScreenCall,
    SegmentCall,
    TrackCall,
)

__all__ = ["EMAIL_TRAIT", "ParsedCall", "given_email"]

EMAIL_TRAIT: Final = "email"


class ParsedCall(msgspec.Struct, gc=False):
    """A valid Segment call, as the mapping reads it: plain values, a `null` object read as {}.

    Made by `parse_call`, from the decoded JSON for a call of the common shape, else from the
    validated `SegmentCall` model. `event` is None for every type but track; `properties` is {}
    for identify, group and alias; `traits` is {} for page, screen and alias; `audience_class`
    and `audience_key` are `context.personas.computation_class` and `.computation_key`
    (Engage), or None; `ip` is `context.ip` and `integration` is `context.integration.name`
    (what made the call: the worker's source writes AutopilotHQ) when they are strings, else
    None. A msgspec struct because one is made per message and its constructor runs in C; its
    values are JSON data, which cannot refer back to it (hence gc=False).
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
    ip: str | None = None
    integration: str | None = None

    def __repr__(self) -> str:  # the traits carry personal data: keep them out of logs
        return f"ParsedCall(type={self.type!r}, message_id={self.message_id!r})"

    @classmethod
    def from_model(cls, call: SegmentCall) -> ParsedCall:
        """The call's declared fields (not the extra ones a model also keeps as attributes)."""
        personas = call.context.personas
        ip = getattr(call.context, "ip", None)
        integration = getattr(call.context, "integration", None)
        name = integration.get("name") if isinstance(integration, dict) else None
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
            ip if type(ip) is str else None,
            name if type(name) is str else None,
        )


def given_email(call: ParsedCall) -> str | None:
    """The email the call gives: `traits.email`, else `context.traits.email`, else (a track)
    `properties.email`; stripped; None when none is a non-empty string."""
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
