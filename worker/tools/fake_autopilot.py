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
`error_status`, `rate_limited_rate`, `latency_ms`, `timeout_rate` (hang `standin.HANG_S`, then 504),
`force_status` (every /v1 call answers it, e.g. 401 to revoke the keys; null to stop); and
`POST /_reset`. Faults apply after the key and rate checks, so faulty requests still count.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, TypeGuard

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError as PydanticValidationError

from worker.tools import standin
from worker.tools.standin import Faults

__all__ = ["FakeAutopilot", "Faults", "main", "run_fake_autopilot", "start_fake_autopilot"]

DEFAULT_PORT = 8765
MAX_BULK = 100


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
        self.gate = standin.Gate(
            rate_limit, seed, refuse=_error, too_many=lambda wait: _too_many(rate_limit, wait)
        )
        self.contacts: dict[str, dict[str, Any]] = {}
        self.journeys: list[dict[str, Any]] = []
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
        response: web.StreamResponse | None
        if label is None:
            response = _error(401, "Missing or invalid autopilotapikey header.")
        else:
            response = await self.gate.admit(label, time.monotonic())
        if response is None:
            response = await handler(request)
        self.gate.record(request, label, response.status)
        return response

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
        gate = self.gate
        return _reply(
            200,
            {
                "contacts": self.contacts,
                "journeys": self.journeys,
                "requests": gate.requests(),
                "http_429": {"rate_limited": gate.rate_limited, "injected": gate.injected_429},
                "rate_limit": self.rate_limit,
                "max_rate": gate.max_rate,
                "faults": gate.faults.model_dump(),
            },
        )

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            faults = self.gate.set_faults(await standin.json_body(request))
        except PydanticValidationError as exc:
            return _error(400, str(exc))
        return _reply(200, faults)

    async def _reset(self, _request: web.Request) -> web.Response:
        self.gate.reset()
        self.contacts.clear()
        self.journeys.clear()
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
