"""The ingest endpoints on faust's own web server (aiohttp, WORKER_WEB_PORT).

Mounted at import (`worker.agents` imports this module) as plain aiohttp routes on
`app.web.web_app.router`: `app.web` is faust's aiohttp driver, created on first use as
`@app.page` does, and its router is frozen only when the server starts. A plain route hands the
handler aiohttp's `Request`, whose streamed body lets the size caps apply while reading. The
server runs on the worker's event loop and starts after the producer, before the consumer.

The handlers only move bytes between aiohttp and the pure modules of this package; the order
of the checks is: configuration (503), a Basic header (401, body unread), body size (400),
gzip and JSON (400), the body's write key (401), message sizes and shape (400), Kafka (503).

Every error answer of the web server is JSON, `{"success": false, "code", "message"}`: besides
the handlers' own, `json_errors` (a middleware on the whole server) turns the router's 404 (a
path nothing serves) and 405 (a method a path does not take, with `Allow`) and any unexpected
failure of a handler (500, logged) into that shape, where aiohttp would answer in plain text.
Answers a handler returns itself, whatever their status, pass unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from worker.app import app, raw_topic, settings, topic_names
from worker.errors import ConfigurationError
from worker.ingest.auth import (
    authenticate_header,
    check_webhook_token,
    check_write_key,
    write_keys,
)
from worker.ingest.autopilot_webhook import MAX_WEBHOOK_BYTES, webhook_records
from worker.ingest.body import MAX_REQUEST_BYTES, decode_body, parse_json, read_capped
from worker.ingest.problems import (
    OK_BODY,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Rejected,
)
from worker.ingest.segment_api import PATHS, body_write_key, segment_records
from worker.ingest.storing import TopicSender, store_all

__all__ = ["WEBHOOK_PATH", "json_errors", "mount", "segment_owned"]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/autopilot/events"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_keys = write_keys(settings.segment_write_keys)
_sender = TopicSender(
    {name: raw_topic(name) for name in (topic_names.segment_calls, topic_names.email_events)}
)


def segment_owned(path: str) -> bool:
    """True for the Segment API's paths and anything else under `/v1/` (CORS answers there)."""
    return path in PATHS or path.startswith("/v1/")


#: Browsers may call the Segment routes from any page, as they call Segment's API: the write
#: key, not the origin, is what authenticates, and no cookie is ever read. Analytics.js sends
#: `Authorization` (Basic, its write key) and, when it retries, `X-Retry-Count`.
_CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT_HEADERS = {
    **_CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding, X-Retry-Count",
    "Access-Control-Max-Age": "86400",
}


def _answer(
    rejection: Rejected | None, *, body_read: bool, headers: dict[str, str] | None = None
) -> web.Response:
    if rejection is None:
        return web.Response(body=OK_BODY, content_type="application/json", headers=headers)
    response = web.Response(
        status=rejection.status,
        body=rejection.body(),
        content_type="application/json",
        headers=headers,
    )
    if not body_read:
        response.force_close()  # do not read (or decompress) the rest of a refused body
    return response


async def _read_body(request: web.Request, limit: int) -> bytes:
    try:
        raw = await read_capped(request.content, limit)
    except RequestPayloadError:
        raise BadRequest(
            "invalid_body", "the body could not be read (is Content-Encoding right?)"
        ) from None
    return decode_body(raw, request.headers.get("Content-Encoding"), limit=limit)


def _segment_handler(route: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        received_at = datetime.now(UTC)
        body_read = False
        try:
            authenticated = authenticate_header(request.headers.get("Authorization"), _keys)
            data = await _read_body(request, MAX_REQUEST_BYTES)
            body_read = True
            payload = parse_json(data)
            if not authenticated:
                check_write_key(body_write_key(payload), _keys)
            records = segment_records(
                route, payload, topic=topic_names.segment_calls, received_at=received_at
            )
            await store_all(
                _sender, records, timeout_s=settings.ingest_kafka_timeout_s, what=request.path
            )
        except Rejected as rejection:
            log.debug("%s: %d %s", request.path, rejection.status, rejection.code)
            return _answer(rejection, body_read=body_read, headers=_CORS_HEADERS)
        return _answer(None, body_read=True, headers=_CORS_HEADERS)

    handle.__name__ = f"segment_{route}"
    return handle


async def segment_preflight(request: web.Request) -> web.Response:
    """OPTIONS on a Segment route: a browser's CORS preflight before its POST."""
    return web.Response(status=204, headers=_PREFLIGHT_HEADERS)


async def autopilot_events(request: web.Request) -> web.Response:
    """POST /autopilot/events: Autopilot's webhook deliveries onto the raw email-events topic."""
    body_read = False
    try:
        check_webhook_token(request.headers, request.query, settings.autopilot_webhook_token)
        data = await _read_body(request, MAX_WEBHOOK_BYTES)
        body_read = True
        payload = parse_json(data)
        records = webhook_records(payload, topic=topic_names.email_events)
        await store_all(
            _sender, records, timeout_s=settings.ingest_kafka_timeout_s, what=WEBHOOK_PATH
        )
    except Rejected as rejection:
        log.debug("%s: %d %s", WEBHOOK_PATH, rejection.status, rejection.code)
        return _answer(rejection, body_read=body_read)
    return _answer(None, body_read=True)


def _router_rejection(request: web.Request, error: web.HTTPException) -> Rejected:
    """The router's error as a rejection (aiohttp's router raises only a 405 or a 404)."""
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return MethodNotAllowed(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
        )
    return NotFound("not_found", f"nothing is served at {request.path}")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The router's 404 and 405 and a handler's unexpected failure (500), answered in JSON.

    A 405 keeps its `Allow` header; an answer on a Segment-owned path (`segment_owned`) carries
    the CORS header, so a page's script can read it. The handler's own answers pass unchanged.
    """
    router_error = request.match_info.http_exception
    if router_error is not None:
        rejection = _router_rejection(request, router_error)
        headers = {k: v for k, v in router_error.headers.items() if k.lower() == "allow"}
    else:
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # an answer a handler chose to raise (faust's views may): left to aiohttp
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            rejection = InternalError("internal_error", "the worker failed on the request; retry")
            headers = {}
    if segment_owned(request.path):
        headers.update(_CORS_HEADERS)
    response = web.Response(
        status=rejection.status,
        body=rejection.body(),
        content_type="application/json",
        headers=headers,
    )
    response.force_close()  # the request's body, if any, was not read
    return response


def mount(application: web.Application) -> None:
    """Add every ingest route, and `json_errors`, to `application` (before it starts)."""
    router = application.router
    for path, route in PATHS.items():
        router.add_post(path, _segment_handler(route))
        router.add_route("OPTIONS", path, segment_preflight)
    router.add_post(WEBHOOK_PATH, autopilot_events)
    application.middlewares.append(json_errors)


def _aiohttp_web_app() -> web.Application:
    driver = app.web
    if not isinstance(driver, AiohttpWeb):
        raise ConfigurationError(f"ingest needs faust's aiohttp web driver, not {driver!r}")
    application: web.Application = driver.web_app
    return application


mount(_aiohttp_web_app())
log.info(
    "ingest: Segment API on %s %s; Autopilot webhook on %s %s",
    ", ".join(PATHS),
    f"({len(_keys)} write key(s))" if _keys else "(not configured: 503)",
    WEBHOOK_PATH,
    "(token set)"
    if settings.autopilot_webhook_token and settings.autopilot_webhook_token.get_secret_value()
    else "(not configured: 503)",
)
