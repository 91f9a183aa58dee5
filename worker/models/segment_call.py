"""Inbound Segment spec messages (identify, track, page, screen, group, alias) on `segment.calls`.

The models are as lenient as Segment's HTTP API: unknown fields are kept (`extra="allow"`),
numeric ids are read as strings, and a `null` traits/properties/context object reads as empty.
Field names are snake_case in Python and camelCase on the wire (`userId`, `anonymousId`,
`messageId`, `groupId`, `previousId`).

What these models do not check is checked by hand before them (`worker.destination.mapping`),
because those rules have exact error messages: a known `type`, a `userId` or `anonymousId`, a
track's `event`. After parsing every call has a `messageId`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "AliasCall",
    "Context",
    "GroupCall",
    "IdentifyCall",
    "PageCall",
    "Personas",
    "ScreenCall",
    "SegmentCall",
    "TrackCall",
]


def _null_as_empty(value: object) -> object:
    return {} if value is None else value


_JsonObject = Annotated[dict[str, Any], BeforeValidator(_null_as_empty)]
"""A free-form JSON object; `null` reads as `{}` so mapping code never tests for None."""


class _Lenient(BaseModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, coerce_numbers_to_str=True, frozen=True
    )


class Personas(_Lenient):
    """`context.personas`, set by Segment Engage on audience and trait syncs."""

    computation_class: str | None = None
    computation_key: str | None = None


class Context(_Lenient):
    """The parts of `context` the destination reads; the rest is kept as extra fields."""

    traits: _JsonObject = Field(default_factory=dict)
    personas: Personas | None = None


class _Call(_Lenient):
    """Fields every Segment call shares."""

    user_id: str | None = Field(None, alias="userId")
    anonymous_id: str | None = Field(None, alias="anonymousId")
    message_id: str = Field(alias="messageId")
    context: Context = Field(default_factory=Context)
    integrations: _JsonObject = Field(default_factory=dict)


class IdentifyCall(_Call):
    type: Literal["identify"]
    traits: _JsonObject = Field(default_factory=dict)


class TrackCall(_Call):
    type: Literal["track"]
    event: str
    properties: _JsonObject = Field(default_factory=dict)
    traits: _JsonObject = Field(
        default_factory=dict, description="Not in the spec, but some libraries send it."
    )


class PageCall(_Call):
    type: Literal["page"]
    name: str | None = None
    properties: _JsonObject = Field(default_factory=dict)


class ScreenCall(_Call):
    type: Literal["screen"]
    name: str | None = None
    properties: _JsonObject = Field(default_factory=dict)


class GroupCall(_Call):
    type: Literal["group"]
    group_id: str | None = Field(None, alias="groupId")
    traits: _JsonObject = Field(default_factory=dict)


class AliasCall(_Call):
    type: Literal["alias"]
    previous_id: str | None = Field(None, alias="previousId")


SegmentCall = Annotated[
    IdentifyCall | TrackCall | PageCall | ScreenCall | GroupCall | AliasCall,
    Field(discriminator="type"),
]
"""Any Segment call, discriminated by `type` (use with `pydantic.TypeAdapter` for a schema)."""
