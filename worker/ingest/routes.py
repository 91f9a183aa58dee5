"""The ingest endpoints on faust's own web server (aiohttp, WORKER_WEB_PORT).

Mounted at import (`worker.agents` imports this module) as plain aiohttp routes on
`app.web.web_app.router`: `app.web` is faust's aiohttp driver, created on first use as
`@app.page` does, and its router is frozen only when the server starts. A plain route hands the
handler aiohttp's `Request`, whose streamed body lets the size caps apply while reading. The
server runs on the worker's event loop and starts after the producer, before the consumer.

The handlers only move bytes between aiohttp and the pure modules of this package; the order
of the checks is: configuration (503), a Basic header (401, body unread), body size (400),
gzip and JSON (400), the body's write key (401), message sizes and shape (400), Kafka (503).
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
from worker.ingest.problems import OK_BODY, BadRequest, Rejected
from worker.ingest.segment_api import ROUTES, body_write_key, segment_records
from worker.ingest.storing import TopicSender, store_all

__all__ = ["WEBHOOK_PATH", "mount", "segment_path"]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/autopilot/events"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_keys = write_keys(settings.segment_write_keys)
_sender = TopicSender(
    {name: raw_topic(name) for name in (topic_names.segment_calls, topic_names.email_events)}
)


def segment_path(route: str) -> str:
    return f"/v1/{route}"


#: Browsers may call the Segment routes from any page, as they call Segment's API: the write
#: key, not the origin, is what authenticates, and no cookie is ever read.
_CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT_HEADERS = {
    **_CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
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


def mount(router: web.UrlDispatcher) -> None:
    """Add every ingest route to `router`."""
    for route in ROUTES:
        router.add_post(segment_path(route), _segment_handler(route))
        router.add_route("OPTIONS", segment_path(route), segment_preflight)
    router.add_post(WEBHOOK_PATH, autopilot_events)


def _aiohttp_web_app() -> web.Application:
    driver = app.web
    if not isinstance(driver, AiohttpWeb):
        raise ConfigurationError(f"ingest needs faust's aiohttp web driver, not {driver!r}")
    application: web.Application = driver.web_app
    return application


mount(_aiohttp_web_app().router)
log.info(
    "ingest: Segment API on /v1/{%s} %s; Autopilot webhook on %s %s",
    ",".join(ROUTES),
    f"({len(_keys)} write key(s))" if _keys else "(not configured: 503)",
    WEBHOOK_PATH,
    "(token set)"
    if settings.autopilot_webhook_token and settings.autopilot_webhook_token.get_secret_value()
    else "(not configured: 503)",
)
