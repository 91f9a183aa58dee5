"""The outcome rule (2xx / retry / pause / dead letter), server hints, masking, and the client."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
import pytest
from pydantic import SecretStr

from worker.backends.autopilot import AutopilotBackend
from worker.delivery.client import ApiClient
from worker.delivery.outcomes import (
    MAX_BODY_CHARS,
    classify_exception,
    classify_response,
    retry_after,
)
from worker.delivery.ratelimit import RateLimiter
from worker.errors import (
    AuthenticationFailed,
    DeliveryRejected,
    Fate,
    RetryableDeliveryError,
)

KEY = "sk-live-0123456789abcdef"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status: int) -> None:
    assert classify_response(httpx.Response(status)) is None


@pytest.mark.parametrize("status", [408, 423, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    error = classify_response(httpx.Response(status))
    assert isinstance(error, RetryableDeliveryError)
    assert error.fate is Fate.RETRY
    assert error.status == status


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_pauses(status: int) -> None:
    error = classify_response(httpx.Response(status, text=f"bad key {KEY}"), secret=KEY)
    assert isinstance(error, AuthenticationFailed)
    assert error.fate is Fate.PAUSE
    assert KEY not in str(error)


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 501, 302])
def test_other_statuses_are_dead_lettered_with_the_body(status: int) -> None:
    error = classify_response(httpx.Response(status, json={"error": "nope"}))
    assert isinstance(error, DeliveryRejected)
    assert error.fate is Fate.DEAD_LETTER
    assert error.status == status
    assert orjson.loads(error.body) == {"error": "nope"}


def test_rejected_body_is_masked_and_truncated() -> None:
    body = f"key {KEY} was used; " + "x" * 5000
    error = classify_response(httpx.Response(400, text=body), secret=KEY)
    assert isinstance(error, DeliveryRejected)
    assert KEY not in error.body
    assert error.body.startswith("key ********** was used")
    assert len(error.body) < MAX_BODY_CHARS + 20


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "7"}, None, 7.0),
        ({"Retry-After": "1.5"}, None, 1.5),
        ({"Retry-After": "Thu, 01 Jan 2026 12:00:30 GMT"}, None, 30.0),
        ({"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}, None, 0.0),
        ({}, {"error": "Too Many Requests", "try-in-seconds": 3}, 3.0),
        ({"Retry-After": "2"}, {"try-in-seconds": 9}, 2.0),
        ({"Retry-After": "soon"}, {"try-in-seconds": 4}, 4.0),
        ({}, {"try-in-seconds": "3"}, None),
        ({}, {"try-in-seconds": True}, None),
        ({"Retry-After": "nan"}, None, None),
        ({}, None, None),
    ],
)
def test_retry_after_hints(
    headers: dict[str, str], body: dict[str, object] | None, expected: float | None
) -> None:
    response = httpx.Response(429, headers=headers, json=body)
    hint = AutopilotBackend().retry_hint  # reads Autopilot's body field `try-in-seconds`
    assert retry_after(response, now=NOW, body_hint=hint) == expected
    error = classify_response(response, now=NOW, body_hint=hint)
    assert isinstance(error, RetryableDeliveryError)
    assert error.retry_after == expected


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), "connection error"),
        (httpx.RemoteProtocolError("peer closed"), "connection error"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
    ],
)
def test_no_response_is_retried(exc: httpx.TransportError, kind: str) -> None:
    error = classify_exception(exc)
    assert error.fate is Fate.RETRY
    assert error.retry_after is None
    assert str(error).startswith(kind)


def _client(handler: httpx.MockTransport) -> ApiClient:
    backend = AutopilotBackend()
    return ApiClient(
        base_url="https://api.test",
        api_key=SecretStr(KEY),
        auth_headers=backend.auth_headers,
        retry_hint=backend.retry_hint,
        api_name=backend.display_name,
        timeout_s=1.0,
        limiter=RateLimiter(1000),
        transport=handler,
    )


async def test_client_sends_key_and_json_and_reads_reply() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"contact_id": "person_1"})

    client = _client(httpx.MockTransport(handler))
    exchange = await client.attempt("POST", "/v1/contact", {"contact": {"Email": "a@x.io"}})
    await client.aclose()
    assert (exchange.status, exchange.error, exchange.data) == (
        200,
        None,
        {"contact_id": "person_1"},
    )
    [request] = seen
    assert request.url == "https://api.test/v1/contact"
    assert request.headers["autopilotapikey"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert orjson.loads(request.content) == {"contact": {"Email": "a@x.io"}}


async def test_client_classifies_timeouts_and_masks_echoed_keys() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(422, text=f"invalid request for key {KEY}")

    client = _client(httpx.MockTransport(handler))
    timeout = await client.attempt("GET", "/slow")
    rejected = await client.attempt("POST", "/v1/contact", {})
    await client.aclose()
    assert timeout.status is None
    assert isinstance(timeout.error, RetryableDeliveryError)
    assert isinstance(rejected.error, DeliveryRejected)
    assert rejected.status == 422
    assert KEY not in rejected.error.body
