"""The seam between the API-neutral destination and delivery and one destination API.

A `Backend` maps a Segment call to request descriptors (its one module per action), and tells
delivery how to authenticate, how to gather a batch into calls (bulk planning) and split a bulk
the API refused, how to read per-item results and retry hints from a response, what to read
while the key is refused, and which settings it runs with (`ApiSettings`).

Several backends can run in one worker (Autopilot and Ortto during a migration). Each has its
own requests and deliveries topics (`worker.topics.TopicNames.for_backend`), delivery agent,
stage and Engage audience memberships; `qualified` and `memberships_prefix` name them. The
first backend, Autopilot, keeps the names deployments already hold state under.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

import msgspec
from pydantic import SecretStr

from worker.errors import SkipMessage
from worker.models.autopilot_request import RequestDescriptor
from worker.models.parsed_call import ParsedCall

__all__ = [
    "NO_UPDATES",
    "ApiSettings",
    "Audience",
    "Backend",
    "CallRequests",
    "PlannedCall",
    "audience_updates",
    "memberships_prefix",
    "qualified",
]

#: (audience key, member or not): an Engage audience membership a call states.
Audience = tuple[str, bool]

NO_UPDATES: Final[Mapping[str, bool]] = MappingProxyType({})


class CallRequests(msgspec.Struct, gc=False):
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


def audience_updates(
    audience: Audience, audience_state: Mapping[str, bool] | None
) -> Mapping[str, bool]:
    """What to record for an audience call, or `SkipMessage` if it repeats the last one sent
    (`audience_state` None: no memory, always sent)."""
    key, member = audience
    if audience_state is not None and audience_state.get(key) == member:
        raise SkipMessage("audience_unchanged")
    return {key: member}


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One HTTP call, the input indices whose outcome it decides, and what must precede it."""

    method: Literal["POST", "GET"]
    path: str
    body: dict[str, Any]
    groups: tuple[tuple[int, ...], ...]
    after: tuple[int, ...] = ()
    """Positions in the plan of calls whose outcome must be final before this one is sent."""

    @property
    def settles(self) -> tuple[int, ...]:
        return tuple(sorted(i for group in self.groups for i in group))


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How delivery talks to the API: where, with which key, how fast, how long to retry."""

    base_url: str
    api_key: SecretStr | None
    #: the setting that holds the key, for messages
    api_key_setting: str
    rate_limit: float
    retry_budget_s: float
    request_timeout_s: float
    auth_probe_interval_s: float
    #: how long delivery gathers a batch (bulk requests)
    bulk_linger_ms: int
    #: when a rebalance or a shutdown begins, how long the batch in hand may still take
    give_back_after_s: float


class Backend(Protocol):
    """What the API-neutral destination and delivery ask of one destination API."""

    @property
    def name(self) -> str:
        """Short name, for logs, metrics and the names of what runs for it (`qualified`)."""

    @property
    def keeps_original_names(self) -> bool:
        """True for the backend the worker had before there were two (Autopilot): its agent,
        stages and audience memberships keep their unqualified names, so existing deployments
        keep their state."""

    @property
    def display_name(self) -> str:
        """The API's name in messages ("Autopilot refused the API key ...")."""

    @property
    def integration_names(self) -> tuple[str, ...]:
        """The Segment `integrations` keys that name this destination: the loop guard (a call
        with one of them false is not sent, so the vendor's own events never go back)."""

    @property
    def source_integrations(self) -> tuple[str, ...]:
        """`context.integration.name` values of calls never sent to this API: events that came
        from a vendor (the worker's own source writes AutopilotHQ), beside `integrations`."""

    @property
    def probe_path(self) -> str:
        """Asked while the key is refused: any answer but 401/403 proves it accepted again."""

    @property
    def probe_body(self) -> dict[str, Any] | None:
        """The probe's JSON body (then a POST; None: a GET of `probe_path`)."""

    def requests_for(
        self,
        call: ParsedCall,
        *,
        learned_email: str | None,
        audience_state: Mapping[str, bool] | None,
    ) -> CallRequests:
        """The requests for a prechecked identify or track (raises `WorkerError`s)."""

    def api(self) -> ApiSettings:
        """Delivery's settings for this API."""

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the key."""

    def plan(self, batch: Sequence[RequestDescriptor]) -> list[PlannedCall]:
        """The calls for a batch, bulk where the API allows, in an order that keeps each
        contact's requests in input order."""

    def split(self, call: PlannedCall) -> list[PlannedCall]:
        """A bulk call the API refused for good, one call per item (so only the bad one is
        dead-lettered); [] when `call` is not a bulk."""

    def retry_hint(self, data: Mapping[str, Any]) -> float | None:
        """Seconds the API's response body asks to wait before a retry, if it says."""

    def item_ids(self, call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
        """The API's id for each group of `call`, read from its response body."""

    def item_errors(self, call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
        """Why the API refused each group of `call` inside its 2xx answer (None: accepted), when
        it answers per item; such a group alone is dead-lettered."""


def qualified(base: str, backend: Backend) -> str:
    """`base` for the backend that keeps its original names, else `base-<name>`: the names of
    a backend's delivery agent and pipeline (`delivery`, `delivery-ortto`)."""
    return base if backend.keeps_original_names else f"{base}-{backend.name}"


def memberships_prefix(backend: Backend) -> str:
    """What the backend's Engage audience keys are stored under in the destination's table:
    nothing for the backend that keeps its original names, else `<name>:`; so each backend
    sends a membership on its own change."""
    return "" if backend.keeps_original_names else f"{backend.name}:"
