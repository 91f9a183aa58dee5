"""Classify one API exchange into the error family, by the rule that Segment's
action-destinations and RudderStack share.

    response or exception                          outcome                  fate
    2xx                                            None (delivered)         -
    408, 423, 429, 5xx except 501                  RetryableDeliveryError   retry, then DLQ
    timeouts, connection and protocol errors       RetryableDeliveryError   retry, then DLQ
    401, 403                                       AuthenticationFailed     pause and probe
    any other status (other 4xx, 501, 1xx, 3xx)    DeliveryRejected         dead letter now

`retry_after` comes from `Retry-After` (seconds or an HTTP date), else from the hint the
backend reads in the body (a `body_hint`). A rejected body is kept for the dead letter with the
API key masked and cut to `MAX_BODY_CHARS`. Everything here is pure: `now` is injected for
HTTP dates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from worker.errors import (
    AuthenticationFailed,
    DeliveryRejected,
    RetryableDeliveryError,
    WorkerError,
)
from worker.settings import mask

__all__ = [
    "MAX_BODY_CHARS",
    "classify_exception",
    "classify_response",
    "mask_secret",
    "retry_after",
]

MAX_BODY_CHARS = 2048
_RETRYABLE_STATUSES = frozenset({408, 423, 429})


def mask_secret(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced, cut to `MAX_BODY_CHARS`."""
    text = mask(text, (secret,))
    return text if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS] + "...(truncated)"


def classify_response(
    response: httpx.Response,
    *,
    secret: str = "",
    now: datetime | None = None,
    body_hint: Callable[[Mapping[str, Any]], float | None] | None = None,
    api: str = "the API",
) -> WorkerError | None:
    """None when the response means delivered, else the error whose fate applies.

    `body_hint` reads a retry hint from the response's JSON body (the backend's), `api` names
    the API in messages."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status in (401, 403):
        return AuthenticationFailed(f"{api} refused the API key ({reason})")
    if status in _RETRYABLE_STATUSES or (status >= 500 and status != 501):
        hint = retry_after(response, now=now, body_hint=body_hint)
        return RetryableDeliveryError(reason, http_status=status, retry_after=hint)
    body = mask_secret(response.text, secret)
    return DeliveryRejected(reason, http_status=status, body=body)


def classify_exception(exc: httpx.TransportError, *, secret: str = "") -> RetryableDeliveryError:
    """A request that got no response: always transient."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
    return RetryableDeliveryError(mask_secret(f"{kind}: {type(exc).__name__}: {exc}", secret))


def retry_after(
    response: httpx.Response,
    *,
    now: datetime | None = None,
    body_hint: Callable[[Mapping[str, Any]], float | None] | None = None,
) -> float | None:
    """The server's hint in seconds: `Retry-After` first, then what `body_hint` reads in the
    response's JSON object."""
    header = response.headers.get("Retry-After")
    if header is not None and (seconds := _parse_retry_after(header, now)) is not None:
        return seconds
    if body_hint is None:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body_hint(body) if isinstance(body, dict) else None


def _parse_retry_after(value: str, now: datetime | None) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
