"""A stand-in for the Autopilot REST API, on loopback, for the tests, `make run` and the demo.

Behaviour, modelled on Autopilot's public API documentation:
- `autopilotapikey` must be one of the configured keys, else 401
  `{"error": "Unauthorized", "message": ...}`.
- Per key, at most `rate_limit` requests in any sliding one-second window. Every request that
  arrives counts; one that finds the window full is a violation and gets 429
  `{"error": "Too Many Requests", "message": ..., "try-in-seconds": n}`.
- Contacts are keyed by lowercased `Email`. An upsert merges into the stored contact (later
  fields win, `custom` merged key by key) and keeps its `contact_id` (`person_<UUID>`);
  `_NewEmail` moves the contact to a new email. An upsert without an `Email` is 400; a bulk of
  more than 100 contacts, or holding one invalid contact, is 400 and stores nothing.
- A trigger (`POST /v1/trigger/{id}/contact/{email_or_id}`) needs an existing contact, as the
  real "add contact to journey" call does, and is 404 otherwise: upsert first. It records a
  journey entry with the body's `property` object.
- `GET /v1/contact/{email_or_id}` and the unsubscribe call are 404 for unknown contacts.

Test routes (no key needed): `GET /_state`; `POST /_faults` with any of `error_rate`,
`error_status`, `rate_limited_rate`, `latency_ms`, `timeout_rate` (hang `HANG_S`, then 504),
`force_status` (every /v1 call answers it, e.g. 401 to revoke the keys; null to stop); and
`POST /_reset`. Faults apply after the key and rate checks, so faulty requests still count.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, TypeGuard

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from worker.tools import standin

__all__ = ["FakeAutopilot", "Faults", "main", "run_fake_autopilot", "start_fake_autopilot"]

DEFAULT_PORT = 8765
HANG_S = 30.0
MAX_BULK = 100
LOG_SIZE = 10_000


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(503, ge=400, le=599)
    rate_limited_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: float = Field(0.0, ge=0)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    force_status: int | None = Field(None, ge=100, le=599)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _reply(status: int, body: dict[str, Any] | list[Any]) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _reply(status, {"error": HTTPStatus(status).phrase, "message": message, **extra})


def _valid_contact(contact: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(contact, dict):
        return False
    email = contact.get("Email")
    return isinstance(email, str) and "@" in email


class FakeAutopilot:
    """The in-memory state and the handlers; `app` serves them."""

    def __init__(self, api_keys: Sequence[str], rate_limit: float, seed: int | None = None):
        self.rate_limit = rate_limit
        self._labels = {key: f"key-{n}" for n, key in enumerate(api_keys, 1)}
        self._random = random.Random(seed)
        self.faults = Faults()
        self.contacts: dict[str, dict[str, Any]] = {}
        self.journeys: list[dict[str, Any]] = []
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._counts: Counter[tuple[str, int]] = Counter()
        self._windows: defaultdict[str, deque[float]] = defaultdict(deque)
        self.max_rate: dict[str, int] = {}
        self.rate_limited = 0
        self.injected_429 = 0
        self.app = web.Application(middlewares=[self._gate])
        self.app.add_routes(
            [
                web.post("/v1/contact", self._upsert_one),
                web.post("/v1/contacts", self._upsert_many),
                web.get("/v1/contact/{contact}", self._get_contact),
                web.post("/v1/contact/{contact}/unsubscribe", self._unsubscribe),
                web.post("/v1/trigger/{trigger_id}/contact/{contact}", self._trigger),
                web.get("/_state", self._state),
                web.post("/_faults", self._set_faults),
                web.post("/_reset", self._reset),
            ]
        )

    # -- gate: key, rate limit, faults ---------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        label = self._labels.get(request.headers.get("autopilotapikey", ""))
        response = await self._checked(request, handler, label)
        self._record(request, label, response.status)
        return response

    async def _checked(
        self, request: web.Request, handler: Handler, label: str | None
    ) -> web.StreamResponse:
        if label is None:
            return _error(401, "Missing or invalid autopilotapikey header.")
        now = time.monotonic()
        window = self._windows[label]
        while window and window[0] <= now - 1.0:
            window.popleft()
        full = len(window) >= self.rate_limit
        window.append(now)
        self.max_rate[label] = max(self.max_rate.get(label, 0), len(window))
        if full:
            self.rate_limited += 1
            wait = math.ceil(window[0] + 1.0 - now)
            return _too_many(self.rate_limit, wait)
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.force_status is not None:
            return _error(faults.force_status, "Fault injected: forced status.")
        if self._random.random() < faults.timeout_rate:
            await asyncio.sleep(HANG_S)
            return _error(504, "Fault injected: timeout.")
        if self._random.random() < faults.rate_limited_rate:
            self.injected_429 += 1
            return _too_many(self.rate_limit, 1)
        if self._random.random() < faults.error_rate:
            return _error(faults.error_status, "Fault injected: error.")
        return await handler(request)

    def _record(self, request: web.Request, label: str | None, status: int) -> None:
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource else request.path}"
        self._counts[(route, status)] += 1
        self._log.append(
            {
                "at": time.time(),
                "route": route,
                "path": request.path,
                "key": label,
                "status": status,
            }
        )

    # -- the API -------------------------------------------------------------------------------

    async def _upsert_one(self, request: web.Request) -> web.Response:
        body = await standin.json_body(request)
        contact = body.get("contact")
        if not _valid_contact(contact):
            return _error(400, "A contact object with an Email is required.")
        return _reply(200, {"contact_id": self._upsert(contact)})

    async def _upsert_many(self, request: web.Request) -> web.Response:
        contacts = (await standin.json_body(request)).get("contacts")
        if not isinstance(contacts, list) or not 0 < len(contacts) <= MAX_BULK:
            return _error(400, f"contacts must be an array of 1 to {MAX_BULK} contacts.")
        invalid = [n for n, contact in enumerate(contacts) if not _valid_contact(contact)]
        if invalid:
            return _error(400, f"Contacts at positions {invalid} have no Email.")
        return _reply(200, {"contact_ids": [self._upsert(contact) for contact in contacts]})

    async def _get_contact(self, request: web.Request) -> web.Response:
        found = self._find(request.match_info["contact"])
        return _not_found() if found is None else _reply(200, found)

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        found = self._find(request.match_info["contact"])
        if found is None:
            return _not_found()
        found["unsubscribed"] = True
        return _reply(200, {})

    async def _trigger(self, request: web.Request) -> web.Response:
        found = self._find(request.match_info["contact"])
        if found is None:
            return _not_found()
        body = await standin.json_body(request)
        self.journeys.append(
            {
                "trigger_id": request.match_info["trigger_id"],
                "contact_id": found["contact_id"],
                "email": found["Email"].lower(),
                "property": body.get("property", {}),
                "at": time.time(),
            }
        )
        return _reply(200, {})

    def _upsert(self, contact: dict[str, Any]) -> str:
        email = contact["Email"].lower()
        fields = {k: v for k, v in contact.items() if k != "_NewEmail"}
        stored = self.contacts.pop(email, {"contact_id": f"person_{str(uuid.uuid4()).upper()}"})
        merged = {**stored, **fields}
        if isinstance(stored.get("custom"), dict) and isinstance(fields.get("custom"), dict):
            merged["custom"] = {**stored["custom"], **fields["custom"]}
        new_email = contact.get("_NewEmail")
        if isinstance(new_email, str) and "@" in new_email:
            merged["Email"] = new_email
        self.contacts[merged["Email"].lower()] = merged
        return str(merged["contact_id"])

    def _find(self, email_or_id: str) -> dict[str, Any] | None:
        if email_or_id.startswith("person_"):
            return next((c for c in self.contacts.values() if c["contact_id"] == email_or_id), None)
        return self.contacts.get(email_or_id.lower())

    # -- test routes ---------------------------------------------------------------------------

    async def _state(self, _request: web.Request) -> web.Response:
        by_route: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for (route, status), count in sorted(self._counts.items()):
            by_route[route][str(status)] = count
        return _reply(
            200,
            {
                "contacts": self.contacts,
                "journeys": self.journeys,
                "requests": {
                    "total": sum(self._counts.values()),
                    "by_route": by_route,
                    "log": list(self._log),
                },
                "http_429": {"rate_limited": self.rate_limited, "injected": self.injected_429},
                "rate_limit": self.rate_limit,
                "max_rate": self.max_rate,
                "faults": self.faults.model_dump(),
            },
        )

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults = Faults.model_validate(
                {**self.faults.model_dump(), **await standin.json_body(request)}
            )
        except PydanticValidationError as exc:
            return _error(400, str(exc))
        return _reply(200, self.faults.model_dump())

    async def _reset(self, _request: web.Request) -> web.Response:
        self.faults = Faults()
        self.contacts.clear()
        self.journeys.clear()
        self._log.clear()
        self._counts.clear()
        self._windows.clear()
        self.max_rate.clear()
        self.rate_limited = self.injected_429 = 0
        return _reply(200, {})


def _too_many(limit: float, wait: int) -> web.Response:
    message = f"Rate limit of {limit:g} requests per second exceeded."
    return _error(429, message, **{"try-in-seconds": wait})


def _not_found() -> web.Response:
    return _error(404, "Contact could not be found.")


async def start_fake_autopilot(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_keys: Sequence[str] = ("dev-key",),
    rate_limit: float = 5.0,
    seed: int | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve the fake in the running event loop (port 0 picks a free one); returns the runner,
    to `cleanup()` when done, and the base URL."""
    return await standin.start(FakeAutopilot(api_keys, rate_limit, seed).app, host, port)


def run_fake_autopilot(
    port: int, api_keys: Sequence[str], rate_limit: float, host: str = "127.0.0.1"
) -> None:
    """Serve the fake until interrupted."""
    standin.serve(
        FakeAutopilot(api_keys, rate_limit).app,
        host=host,
        port=port,
        banner=f"stand-in Autopilot API on http://{host}:{port}: GET /_state (what it received), "
        "POST /_faults, POST /_reset; Ctrl-C stops it",
    )


def main(argv: list[str]) -> int:
    return standin.main(
        argv,
        command="fake-autopilot",
        api="Autopilot",
        port_variable="FAKE_AUTOPILOT_PORT",
        key_variable="AUTOPILOT_API_KEY",
        default_port=DEFAULT_PORT,
        default_rate=5.0,
        run=run_fake_autopilot,
    )
