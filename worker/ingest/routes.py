"""The ingest endpoints on faust's own web server (aiohttp, WORKER_WEB_PORT).

Mounted by `build_ingest` (the composition root calls it) as plain aiohttp routes on faust's
aiohttp driver's router, which is frozen only when the server starts. A plain route hands the
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
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client.core import CounterMetricFamily, Metric
from pydantic import SecretStr

from worker.ingest.auth import (
    authenticate_header,
    check_ortto_token,
    check_webhook_token,
    check_write_key,
    write_keys,
)
from worker.ingest.autopilot_webhook import MAX_WEBHOOK_BYTES, webhook_records
from worker.ingest.body import MAX_REQUEST_BYTES, decode_body, parse_json, read_capped
from worker.ingest.ortto_webhook import OrttoDelivery, ortto_records
from worker.ingest.problems import (
    OK_BODY,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Rejected,
)
from worker.ingest.segment_api import PATHS, body_write_key, segment_records
from worker.ingest.storing import RecordSender, TopicSender, store_all
from worker.runtime.health import web_application
from worker.runtime.metrics import PREFIX, metrics
from worker.runtime.stages import Runtime
from worker.settings import Settings
from worker.topics import TopicNames

__all__ = [
    "ORTTO_PATH",
    "WEBHOOK_PATH",
    "Ingest",
    "build_ingest",
    "json_errors",
    "segment_owned",
]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/autopilot/events"
ORTTO_PATH = "/ortto/webhook"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


async def segment_preflight(request: web.Request) -> web.Response:
    """OPTIONS on a Segment route: a browser's CORS preflight before its POST."""
    return web.Response(status=204, headers=_PREFLIGHT_HEADERS)


class Ingest:
    """The ingest routes of one worker: the Segment API and the Autopilot and Ortto webhooks."""

    def __init__(self, settings: Settings, topics: TopicNames, sender: RecordSender) -> None:
        self.settings = settings
        self.topics = topics
        self.sender = sender
        self.keys = write_keys(settings.segment_write_keys)
        #: (path, reason) -> messages answered and not written (Ortto's test deliveries)
        self.skipped: Counter[tuple[str, str]] = Counter()

    def segment_handler(self, route: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            received_at = datetime.now(UTC)
            body_read = False
            try:
                authenticated = authenticate_header(request.headers.get("Authorization"), self.keys)
                data = await _read_body(request, MAX_REQUEST_BYTES)
                body_read = True
                payload = parse_json(data)
                if not authenticated:
                    check_write_key(body_write_key(payload), self.keys)
                records = segment_records(
                    route, payload, topic=self.topics.segment_calls, received_at=received_at
                )
                await store_all(
                    self.sender,
                    records,
                    timeout_s=self.settings.ingest_kafka_timeout_s,
                    what=request.path,
                )
            except Rejected as rejection:
                log.debug("%s: %d %s", request.path, rejection.status, rejection.code)
                return _answer(rejection, body_read=body_read, headers=_CORS_HEADERS)
            return _answer(None, body_read=True, headers=_CORS_HEADERS)

        handle.__name__ = f"segment_{route}"
        return handle

    async def autopilot_events(self, request: web.Request) -> web.Response:
        """POST /autopilot/events: Autopilot's webhook deliveries onto the email-events topic."""
        body_read = False
        try:
            check_webhook_token(
                request.headers, request.query, self.settings.autopilot_webhook_token
            )
            data = await _read_body(request, MAX_WEBHOOK_BYTES)
            body_read = True
            payload = parse_json(data)
            records = webhook_records(payload, topic=self.topics.email_events)
            await store_all(
                self.sender,
                records,
                timeout_s=self.settings.ingest_kafka_timeout_s,
                what=WEBHOOK_PATH,
            )
        except Rejected as rejection:
            log.debug("%s: %d %s", WEBHOOK_PATH, rejection.status, rejection.code)
            return _answer(rejection, body_read=body_read)
        return _answer(None, body_read=True)

    async def ortto_webhook(self, request: web.Request) -> web.Response:
        """POST /ortto/webhook: Ortto's activity webhooks onto the Ortto activities topic, each
        with its original bytes; Ortto's test deliveries are answered and counted, not written."""
        body_read = False
        try:
            check_ortto_token(request.headers, self.settings.ortto_webhook_token)
            data = await _read_body(request, MAX_WEBHOOK_BYTES)
            body_read = True
            delivery = ortto_records(data, parse_json(data), topic=self.topics.ortto_activities)
            await store_all(
                self.sender,
                delivery.records,
                timeout_s=self.settings.ingest_kafka_timeout_s,
                what=ORTTO_PATH,
            )
        except Rejected as rejection:
            log.debug("%s: %d %s", ORTTO_PATH, rejection.status, rejection.code)
            return _answer(rejection, body_read=body_read)
        self._count_tests(delivery)
        return _answer(None, body_read=True)

    def _count_tests(self, delivery: OrttoDelivery) -> None:
        if not delivery.test_webhooks:
            return
        self.skipped[ORTTO_PATH, "test_delivery"] += len(delivery.test_webhooks)
        log.info(
            "%s: Ortto's test delivery from webhook %s answered 200; nothing written",
            ORTTO_PATH,
            ", ".join(delivery.test_webhooks),
        )

    def skipped_metrics(self) -> Iterable[Metric]:
        """`autopilot_worker_ingest_skipped_total{path, reason}` (a metrics source)."""
        family = CounterMetricFamily(
            f"{PREFIX}_ingest_skipped",
            "Messages an ingest route answered and did not write, by path and reason "
            "(Ortto's test deliveries).",
            labels=("path", "reason"),
        )
        counts = {(ORTTO_PATH, "test_delivery"): 0, **self.skipped}  # 0 before the first
        for (path, reason), count in sorted(counts.items()):
            family.add_metric([path, reason], count)
        return [family]

    def mount(self, application: web.Application) -> None:
        """Add every ingest route, and `json_errors`, to `application` (before it starts)."""
        router = application.router
        for path, route in PATHS.items():
            router.add_post(path, self.segment_handler(route))
            router.add_route("OPTIONS", path, segment_preflight)
        router.add_post(WEBHOOK_PATH, self.autopilot_events)
        router.add_post(ORTTO_PATH, self.ortto_webhook)
        application.middlewares.append(json_errors)


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


def build_ingest(runtime: Runtime) -> Ingest:
    """The ingest routes on `runtime`'s web server, writing to its input topics."""
    settings, topics = runtime.settings, runtime.topics
    inputs = (topics.segment_calls, topics.email_events, topics.ortto_activities)
    sender = TopicSender({name: runtime.raw_topic(name) for name in inputs})
    ingest = Ingest(settings, topics, sender)
    ingest.mount(web_application(runtime))
    metrics.add_source("ingest", ingest.skipped_metrics)
    log.info(
        "ingest: Segment API on %s %s; Autopilot webhook on %s %s; Ortto webhook on %s %s",
        ", ".join(PATHS),
        f"({len(ingest.keys)} write key(s))" if ingest.keys else "(not configured: 503)",
        WEBHOOK_PATH,
        _token_state(settings.autopilot_webhook_token),
        ORTTO_PATH,
        _token_state(settings.ortto_webhook_token),
    )
    return ingest


def _token_state(token: SecretStr | None) -> str:
    return "(token set)" if token and token.get_secret_value() else "(not configured: 503)"
