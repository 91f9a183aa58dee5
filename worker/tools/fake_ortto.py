"""A stand-in for Ortto's API, on loopback, for the tests, `make run` and the demo.

Behaviour, modelled on Ortto's public API documentation (help.ortto.com/developer):
- `X-Api-Key` must be one of the configured keys, else 401 `{"error": {"code":
  "unauthorized", ...}}`.
- Per key, at most `rate_limit` requests in any sliding one-second window; one that finds the
  window full is a violation and gets Ortto's 429, its hint nested: `{"error": {"code":
  "rate-limit", "message": "rate limit", "try-in-seconds": n}}`.
- Ortto's bad-request limiter: 15 refused requests (a 4xx other than 429, 401s included) from
  one IP within 15 s ban that IP for 15 s; while banned every request gets 429 (code
  `banned`, with the seconds left). Ortto does not document the status of a ban: this is a guess.
- `POST /v1/person/merge`: `people` of 1 to 100, a payload of at most 2 MB (2,000,000 bytes;
  else 413), `merge_by` a non-empty array of field ids, `merge_strategy` 1-3, `find_strategy`
  0-2. Each person is checked on its own and answered in body order: `{"people":
  [{"person_id", "status": "created"|"merged"}, ...]}`, a refused one as `{"status": "error",
  "error": "<why>"}`. A person is found by its `merge_by` fields in order (emails compared
  without case) and its fields overwrite (strategy 2), fill in (1) or are ignored (3).
- `POST /v1/activities/create`: `activities` of 1 to 100, 2 MB; each activity needs an
  `activity_id` (`act:...`), at most 15 attributes, at most 16 kB, fields naming the person by
  one of `merge_by`; it merges the person and records the activity; answered per activity,
  `{"activities": [{"person_id", "activity_id", "status": "ingested"}, ...]}`, or refused.
- Fields are `<type>:<namespace>:<name>`: built-in ones (no namespace) must be known, custom
  ones (`cm`) must be defined when definitions are strict (`POST /_definitions`), else they
  are defined by their first use. Values are checked by type: `str` text of at most 255
  characters, `txt` 4,000, `int` a whole number, `bol` true/false, `dtz::b` `{"year", "month",
  "day"}`, other `dtz` an ISO-8601 date or date-time, `phn` `{"n": "<digits>"}` (an empty phone
  is refused: the bug other integrations had), `geo` `{"name": "..."}`.
- `POST /v1/person/get` (what delivery probes while the key is refused) answers
  `{"contacts": [...]}`.

Test routes (no key needed): `GET /_state`; `POST /_faults` with any of `error_rate`,
`error_status`, `rate_limited_rate`, `latency_ms`, `timeout_rate`, `force_status` (as the
Autopilot stand-in's, `worker.tools.standin.Faults`); `POST /_definitions` with
`strict`, `fields` and `activities` (the custom field ids and activity ids that exist); and
`POST /_reset`. Faults apply after the ban, key and rate checks, so faulty requests still count.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError as PydanticValidationError

from worker.tools import standin

__all__ = ["DEFAULT_PORT", "FakeOrtto", "main", "run_fake_ortto", "start_fake_ortto"]

#: Where `python -m worker fake-ortto` and `make run` serve it ($FAKE_ORTTO_PORT moves it).
DEFAULT_PORT = 8788

MAX_ITEMS: Final = 100
MAX_PAYLOAD_BYTES: Final = 2_000_000
MAX_ATTRIBUTES: Final = 15
MAX_ACTIVITY_BYTES: Final = 16 * 1024
MAX_TEXT: Final = 255
MAX_LONG_TEXT: Final = 4000
BAD_REQUESTS: Final = 15
BAD_WINDOW_S: Final = 15.0
BAN_S: Final = 15.0

BUILT_IN_FIELDS: Final = frozenset(
    {
        "str::first",
        "str::last",
        "str::name",
        "str::email",
        "str::ei",
        "phn::phone",
        "geo::city",
        "geo::country",
        "geo::region",
        "str::postal",
        "dtz::b",
        "str::language",
        "bol::p",
        "bol::sp",
        "bol::gdpr",
    }
)
_FIELD_ID = re.compile(r"([a-z]{3}):([a-z]*):([A-Za-z0-9_-]+)")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _reply(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return _reply(status, {"error": {"code": code, "message": message, **extra}})


class _Refused(Exception):
    """One item refused: its reason."""


class _Rejected(Exception):
    """The whole request refused: the answer."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _check_value(field: str, kind: str, value: Any) -> None:
    if kind == "str" and not (isinstance(value, str) and len(value) <= MAX_TEXT):
        raise _Refused(f"{field}: text of at most {MAX_TEXT} characters expected")
    if kind == "txt" and not (isinstance(value, str) and len(value) <= MAX_LONG_TEXT):
        raise _Refused(f"{field}: long text of at most {MAX_LONG_TEXT} characters expected")
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Refused(f"{field}: a whole number expected")
    if kind == "bol" and not isinstance(value, bool):
        raise _Refused(f"{field}: true or false expected")
    if kind == "phn":
        number = value.get("n") if isinstance(value, dict) else None
        if not (isinstance(number, str) and number.strip()):
            raise _Refused(f"{field}: a phone number {{'n': ...}} expected, not an empty one")
    if kind == "geo":
        name = value.get("name") if isinstance(value, dict) else None
        if not (isinstance(name, str) and name.strip()):
            raise _Refused(f"{field}: a place {{'name': ...}} expected")
    if kind == "dtz":
        if field == "dtz::b":
            try:
                date(value["year"], value["month"], value["day"])
            except (TypeError, KeyError, ValueError):
                raise _Refused(f"{field}: {{'year', 'month', 'day'}} expected") from None
        else:
            try:
                datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise _Refused(f"{field}: an ISO-8601 date or date-time expected") from None


class FakeOrtto:
    """The in-memory state and the handlers; `app` serves them."""

    def __init__(self, api_keys: Sequence[str], rate_limit: float, seed: int | None = None):
        self.rate_limit = rate_limit
        self._labels = {key: f"key-{n}" for n, key in enumerate(api_keys, 1)}
        self.gate = standin.Gate(
            rate_limit,
            seed,
            refuse=lambda status, message: _error(status, "fault", message),
            too_many=_rate_limited,
        )
        self._reset_state()
        self.app = web.Application(middlewares=[self._gate], client_max_size=8 * 1024 * 1024)
        self.app.add_routes(
            [
                web.post("/v1/person/merge", self._merge),
                web.post("/v1/activities/create", self._create_activities),
                web.post("/v1/person/get", self._get_people),
                web.get("/_state", self._state),
                web.post("/_faults", self._set_faults),
                web.post("/_definitions", self._set_definitions),
                web.post("/_reset", self._reset),
            ]
        )

    def _reset_state(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self._index: dict[tuple[str, str], str] = {}
        self.activities: list[dict[str, Any]] = []
        self.strict = False
        self.custom_fields: set[str] = set()
        self.activity_ids: set[str] = set()
        self._bad: defaultdict[str, deque[float]] = defaultdict(deque)
        self._banned_until: dict[str, float] = {}
        self.max_items: dict[str, int] = {"people": 0, "activities": 0}
        self.max_payload_bytes = 0
        self.banned = self.bans = 0

    # -- gate: ban, key, rate limit, faults ------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        label = self._labels.get(request.headers.get("X-Api-Key", ""))
        response = await self._checked(request, handler, label)
        self.gate.record(request, label, response.status)
        return response

    async def _checked(
        self, request: web.Request, handler: Handler, label: str | None
    ) -> web.StreamResponse:
        ip = request.remote or "?"
        now = time.monotonic()
        until = self._banned_until.get(ip, 0.0)
        if until > now:
            self.banned += 1
            message = f"{BAD_REQUESTS} bad requests within {BAD_WINDOW_S:g}s: this IP is banned"
            return _error(429, "banned", message, **{"try-in-seconds": math.ceil(until - now)})
        response = await self._answer(request, handler, label, now)
        if 400 <= response.status < 500 and response.status != 429:
            self._bad_request(ip, now)
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, label: str | None, now: float
    ) -> web.StreamResponse:
        if label is None:
            return _error(401, "unauthorized", "Missing or invalid X-Api-Key header.")
        refused = await self.gate.admit(label, now)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except _Rejected as rejected:
            return rejected.response

    def _bad_request(self, ip: str, now: float) -> None:
        bad = self._bad[ip]
        while bad and bad[0] <= now - BAD_WINDOW_S:
            bad.popleft()
        bad.append(now)
        if len(bad) >= BAD_REQUESTS:
            self._banned_until[ip] = now + BAN_S
            self.bans += 1
            bad.clear()

    # -- the API -------------------------------------------------------------------------------

    async def _body(self, request: web.Request, array: str) -> tuple[dict[str, Any], list[Any]]:
        raw = await request.read()
        self.max_payload_bytes = max(self.max_payload_bytes, len(raw))
        if len(raw) > MAX_PAYLOAD_BYTES:
            message = f"the payload is {len(raw)} bytes, over {MAX_PAYLOAD_BYTES} (2 MB)"
            raise _Rejected(_error(413, "too-large", message))
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            body = None
        items = body.get(array) if isinstance(body, dict) else None
        if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
            raise _bad(f"{array} must be an array of 1 to {MAX_ITEMS} items")
        merge_by = body.get("merge_by") if isinstance(body, dict) else None
        if not (
            isinstance(merge_by, list)
            and merge_by
            and all(isinstance(f, str) and f for f in merge_by)
        ):
            raise _bad("merge_by must be a non-empty array of field ids")
        assert isinstance(body, dict)
        self.max_items[array] = max(self.max_items[array], len(items))
        return body, items

    async def _merge(self, request: web.Request) -> web.Response:
        body, people = await self._body(request, "people")
        strategy = body.get("merge_strategy", 2)
        if strategy not in (1, 2, 3) or body.get("find_strategy", 0) not in (0, 1, 2):
            raise _bad("merge_strategy must be 1, 2 or 3 and find_strategy 0, 1 or 2")
        if not isinstance(body.get("async", False), bool):
            raise _bad("async must be true or false")
        answers = []
        for person in people:
            try:
                fields = self._fields(person.get("fields") if isinstance(person, dict) else None)
                person_id, status = self._merged(fields, body["merge_by"], strategy)
            except _Refused as refused:
                answers.append({"status": "error", "error": str(refused)})
            else:
                answers.append({"person_id": person_id, "status": status})
        return _reply(200, {"people": answers})

    async def _create_activities(self, request: web.Request) -> web.Response:
        body, activities = await self._body(request, "activities")
        answers = []
        for activity in activities:
            try:
                person_id, activity_id = self._activity(activity, body["merge_by"])
            except _Refused as refused:
                answers.append({"status": "error", "error": str(refused)})
            else:
                answers.append(
                    {"person_id": person_id, "activity_id": activity_id, "status": "ingested"}
                )
        return _reply(200, {"activities": answers})

    async def _get_people(self, request: web.Request) -> web.Response:
        people = list(self.people.values())[:1]
        return _reply(200, {"contacts": [{"id": p["person_id"], **p["fields"]} for p in people]})

    def _fields(self, fields: Any) -> dict[str, Any]:
        if not isinstance(fields, dict):
            raise _Refused("fields must be an object")
        for field, value in fields.items():
            match = _FIELD_ID.fullmatch(field) if isinstance(field, str) else None
            if match is None:
                raise _Refused(f"{field!r} is not a field id (<type>:<namespace>:<name>)")
            kind, namespace = match[1], match[2]
            if namespace == "" and field not in BUILT_IN_FIELDS:
                raise _Refused(f"{field}: no such field")
            if namespace == "cm":
                self._defined(field, self.custom_fields, "custom field")
            _check_value(field, kind, value)
        return fields

    def _defined(self, name: str, known: set[str], what: str) -> None:
        if name not in known:
            if self.strict:
                raise _Refused(f"{name}: no such {what} in this account")
            known.add(name)

    def _merged(
        self, fields: dict[str, Any], merge_by: list[str], strategy: int
    ) -> tuple[str, str]:
        keys = [(f, _lookup(f, fields[f])) for f in merge_by if fields.get(f) not in (None, "")]
        if not keys:
            raise _Refused(f"the person has none of the merge_by fields {merge_by}")
        found = next((self._index[k] for k in keys if k in self._index), None)
        if found is None:
            person_id = uuid.uuid4().hex[:24]
            self.people[person_id] = {"person_id": person_id, "fields": dict(fields)}
            status = "created"
        else:
            person_id, status = found, "merged"
            stored = self.people[person_id]["fields"]
            if strategy == 2:
                stored.update(fields)
            elif strategy == 1:
                for field, value in fields.items():
                    stored.setdefault(field, value)
        for field in ("str::ei", "str::email"):
            value = self.people[person_id]["fields"].get(field)
            if isinstance(value, str) and value:
                self._index[field, _lookup(field, value)] = person_id
        return person_id, status

    def _activity(self, activity: Any, merge_by: list[str]) -> tuple[str, str]:
        if not isinstance(activity, dict):
            raise _Refused("an activity must be an object")
        activity_id = activity.get("activity_id")
        if not (isinstance(activity_id, str) and activity_id.startswith("act:")):
            raise _Refused("activity_id must be an activity id (act:cm:<name>)")
        self._defined(activity_id, self.activity_ids, "activity definition")
        size = len(orjson.dumps(activity))
        if size > MAX_ACTIVITY_BYTES:
            raise _Refused(f"the activity is {size} bytes, over {MAX_ACTIVITY_BYTES}")
        attributes = activity.get("attributes", {})
        if not isinstance(attributes, dict):
            raise _Refused("attributes must be an object")
        if len(attributes) > MAX_ATTRIBUTES:
            raise _Refused(f"{len(attributes)} attributes, over {MAX_ATTRIBUTES} an activity")
        for field, value in attributes.items():
            match = _FIELD_ID.fullmatch(field) if isinstance(field, str) else None
            if match is None:
                raise _Refused(f"attribute {field!r} is not a field id")
            _check_value(field, match[1], value)
        location = activity.get("location")
        if location is not None and not isinstance(location, dict):
            raise _Refused("location must be an object")
        person_id, _ = self._merged(self._fields(activity.get("fields")), merge_by, 2)
        self.activities.append(
            {
                "activity_id": activity_id,
                "person_id": person_id,
                "attributes": attributes,
                "location": location,
                "at": time.time(),
            }
        )
        return person_id, activity_id

    # -- test routes ---------------------------------------------------------------------------

    async def _state(self, _request: web.Request) -> web.Response:
        gate = self.gate
        return _reply(
            200,
            {
                "people": self.people,
                "activities": self.activities,
                "definitions": {
                    "strict": self.strict,
                    "fields": sorted(self.custom_fields),
                    "activities": sorted(self.activity_ids),
                },
                "requests": gate.requests(),
                "http_429": {
                    "rate_limited": gate.rate_limited,
                    "injected": gate.injected_429,
                    "banned": self.banned,
                },
                "bans": self.bans,
                "rate_limit": self.rate_limit,
                "max_rate": gate.max_rate,
                "max_items": self.max_items,
                "max_payload_bytes": self.max_payload_bytes,
                "faults": gate.faults.model_dump(),
            },
        )

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            faults = self.gate.set_faults(await standin.json_body(request))
        except PydanticValidationError as exc:
            return _error(400, "bad-request", str(exc))
        return _reply(200, faults)

    async def _set_definitions(self, request: web.Request) -> web.Response:
        body = await standin.json_body(request)
        self.strict = bool(body.get("strict", self.strict))
        self.custom_fields.update(str(f) for f in body.get("fields", []))
        self.activity_ids.update(str(a) for a in body.get("activities", []))
        return _reply(200, {"strict": self.strict})

    async def _reset(self, _request: web.Request) -> web.Response:
        self.gate.reset()
        self._reset_state()
        return _reply(200, {})


def _lookup(field: str, value: Any) -> str:
    text = str(value)
    return text.lower() if field == "str::email" else text


def _rate_limited(wait: int) -> web.Response:
    return _error(429, "rate-limit", "rate limit", **{"try-in-seconds": wait})


def _bad(message: str) -> _Rejected:
    return _Rejected(_error(400, "bad-request", message))


async def start_fake_ortto(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_keys: Sequence[str] = ("dev-key",),
    rate_limit: float = 10.0,
    seed: int | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve the fake in the running event loop (port 0 picks a free one); returns the runner,
    to `cleanup()` when done, and the base URL."""
    return await standin.start(FakeOrtto(api_keys, rate_limit, seed).app, host, port)


def run_fake_ortto(
    port: int, api_keys: Sequence[str], rate_limit: float, host: str = "127.0.0.1"
) -> None:
    """Serve the fake until interrupted."""
    standin.serve(
        FakeOrtto(api_keys, rate_limit).app,
        host=host,
        port=port,
        banner=f"stand-in Ortto API on http://{host}:{port}: GET /_state (what it received), "
        "POST /_faults, POST /_definitions, POST /_reset; Ctrl-C stops it",
    )


def main(argv: list[str]) -> int:
    return standin.main(
        argv,
        command="fake-ortto",
        api="Ortto",
        port_variable="FAKE_ORTTO_PORT",
        key_variable="ORTTO_API_KEY",
        default_port=DEFAULT_PORT,
        default_rate=10.0,
        run=run_fake_ortto,
    )
