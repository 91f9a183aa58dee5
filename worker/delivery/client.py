"""All HTTP to the destination API goes through `ApiClient`: one shared `httpx.AsyncClient`,
the backend's auth headers, the process-wide rate limit, and the outcome of every attempt.

The key is read from its `SecretStr` here and only here; it goes into the header and into the
mask applied to anything the API sends back, never into a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from worker.delivery.outcomes import classify_exception, classify_response, mask_secret
from worker.delivery.ratelimit import RateLimiter
from worker.errors import WorkerError

__all__ = ["ApiClient", "Exchange"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One attempt: the HTTP status (None when no response came), the classified error (None
    when delivered), and the response's JSON object (empty when there is none)."""

    status: int | None
    error: WorkerError | None
    data: dict[str, Any] = field(default_factory=dict)


class ApiClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        auth_headers: Callable[[str], dict[str, str]],
        retry_hint: Callable[[Mapping[str, Any]], float | None],
        api_name: str,
        timeout_s: float,
        limiter: RateLimiter,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._secret = api_key.get_secret_value()
        self._limiter = limiter
        self._retry_hint = retry_hint
        self._api_name = api_name
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                **auth_headers(self._secret),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            timeout=timeout_s,
            transport=transport,
        )

    async def attempt(self, method: str, path: str, body: dict[str, Any] | None = None) -> Exchange:
        """Wait for the rate limit, send one request, and classify what came back."""
        content = None if body is None else orjson.dumps(body)
        try:
            async with self._limiter.slot():
                response = await self._http.request(method, path, content=content)
        except httpx.TransportError as exc:
            return Exchange(None, classify_exception(exc, secret=self._secret))
        error = classify_response(
            response, secret=self._secret, body_hint=self._retry_hint, api=self._api_name
        )
        return Exchange(response.status_code, error, _json_object(response.content))

    def masked(self, text: str) -> str:
        """`text` the API sent back, with the key masked and cut as rejected bodies are."""
        return mask_secret(text, self._secret)

    async def aclose(self) -> None:
        await self._http.aclose()


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
