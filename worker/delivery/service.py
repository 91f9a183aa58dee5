"""`Deliverer`: performs a batch of request descriptors and returns one final outcome for each.

What a caller (the delivery agent) can rely on:
- `deliver(batch)` returns exactly one `DeliveryResult` per input, in input order, and only final
  ones: delivered, or dead-lettered (rejected at once, or retried past the budget). Retries with
  backoff happen inside, so an offset may be committed once its result is back.
- One contact's requests reach the API in input order (the backend's `plan`).
- A refused key (401/403) fails nothing: `paused` turns true, one error is logged, the backend's
  probe path is read every auth-probe interval, and when the key works again the same calls go
  on. Paused time does not count against the retry budget. `deliver` does not return meanwhile.
- A bulk rejected for good is retried item by item (the backend's `split`), so one bad contact
  is the only dead letter; an item the API refuses inside a 2xx answer (the backend's
  `item_errors`) is dead-lettered alone (`DeliveryRejected`, status 400), the others delivered.
- Every result names the backend it was sent to.
- Every request, probes included, waits for the rate limiter: in the worker, this process's
  share of its key's limit (`worker.delivery.share`), so a process without one sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx

from worker.backends.seam import Backend, PlannedCall
from worker.delivery.backoff import Backoff
from worker.delivery.client import ApiClient, Exchange
from worker.delivery.ratelimit import RateLimiter
from worker.errors import (
    AuthenticationFailed,
    ConfigurationError,
    DeliveryRejected,
    RetryableDeliveryError,
    RetryBudgetExhausted,
    WorkerError,
)
from worker.models.autopilot_request import RequestDescriptor
from worker.models.delivery_result import AttemptRecord, DeliveryResult

__all__ = ["Deliverer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Done:
    history: tuple[AttemptRecord, ...]
    exchange: Exchange
    error: WorkerError | None


class Deliverer:
    def __init__(
        self,
        backend: Backend,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        api = backend.api()
        key = api.api_key
        if key is None or not key.get_secret_value():
            raise ConfigurationError(f"{api.api_key_setting} is not set: delivery cannot start")
        self._backend = backend
        self._api = api
        self.limiter = limiter or RateLimiter(
            api.rate_limit, request_timeout_s=api.request_timeout_s
        )
        self._backoff = backoff or Backoff(budget_s=api.retry_budget_s)
        self._probe_interval_s = api.auth_probe_interval_s
        self._client = ApiClient(
            base_url=api.base_url,
            api_key=key,
            auth_headers=backend.auth_headers,
            retry_hint=backend.retry_hint,
            api_name=backend.display_name,
            timeout_s=api.request_timeout_s,
            limiter=self.limiter,
            transport=transport,
        )
        self._resumed = asyncio.Event()
        self._resumed.set()
        #: when the API last refused the key (epoch seconds); None while delivery runs
        self.paused_since: float | None = None
        self._probe: asyncio.Task[None] | None = None

    @property
    def paused(self) -> bool:
        """True while the API refuses the key; /readyz reports not ready."""
        return not self._resumed.is_set()

    async def deliver(self, batch: Sequence[RequestDescriptor]) -> list[DeliveryResult]:
        received = time.monotonic()
        tasks: list[asyncio.Task[dict[int, DeliveryResult]]] = []
        async with asyncio.TaskGroup() as group:
            for call in self._backend.plan(batch):
                after = [tasks[position] for position in call.after]
                tasks.append(group.create_task(self._settle(call, after, batch, received)))
        settled = {index: result for task in tasks for index, result in task.result().items()}
        return [settled[index] for index in range(len(batch))]

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _settle(
        self,
        call: PlannedCall,
        after: list[asyncio.Task[dict[int, DeliveryResult]]],
        batch: Sequence[RequestDescriptor],
        received: float,
    ) -> dict[int, DeliveryResult]:
        for task in after:
            await task
        done = await self._perform(call)
        parts = self._backend.split(call) if isinstance(done.error, DeliveryRejected) else []
        if not parts:
            return _results(call, done, batch, received, self._backend, masked=self._client.masked)
        settled: dict[int, DeliveryResult] = {}
        for part, alone in zip(
            parts, await asyncio.gather(*map(self._perform, parts)), strict=True
        ):
            with_bulk = _Done(done.history + alone.history, alone.exchange, alone.error)
            settled |= _results(
                part, with_bulk, batch, received, self._backend, masked=self._client.masked
            )
        return settled

    async def _perform(self, call: PlannedCall) -> _Done:
        """Attempt `call` until its outcome is final; pauses while the key is refused."""
        history: list[AttemptRecord] = []
        failures, budget_start = 0, time.monotonic()
        while True:
            await self._resumed.wait()
            at = datetime.now(UTC)
            exchange = await self._client.attempt(call.method, call.path, call.body)
            error = exchange.error
            history.append(AttemptRecord(at=at, status=exchange.status, error=_message(error)))
            match error:
                case AuthenticationFailed():
                    self._pause(error)
                    await self._resumed.wait()
                    failures, budget_start = 0, time.monotonic()
                case RetryableDeliveryError():
                    failures += 1
                    elapsed = time.monotonic() - budget_start
                    delay = self._backoff.next_delay(failures, elapsed, error.retry_after)
                    if delay is None:
                        exhausted = RetryBudgetExhausted(
                            f"retry budget of {self._backoff.budget_s:g}s spent after "
                            f"{len(history)} attempts; last: {error}",
                            http_status=exchange.status,
                        )
                        return _Done(tuple(history), exchange, exhausted)
                    await asyncio.sleep(delay)
                case _:
                    return _Done(tuple(history), exchange, error)

    def _pause(self, error: AuthenticationFailed) -> None:
        if self.paused:
            return
        self._resumed.clear()
        self.paused_since = time.time()
        log.error(
            "%s: delivery is paused, nothing is dead-lettered; probing every %gs until the key "
            "is accepted. Check %s.",
            error,
            self._probe_interval_s,
            self._api.api_key_setting,
        )
        self._probe = asyncio.create_task(self._probe_until_accepted())

    async def _probe_until_accepted(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            backend = self._backend
            method = "GET" if backend.probe_body is None else "POST"
            error = (
                await self._client.attempt(method, backend.probe_path, backend.probe_body)
            ).error
            if error is None or isinstance(error, DeliveryRejected):
                break
        self._resumed.set()
        self.paused_since = None
        log.warning("%s accepts the API key again: delivery resumed", self._backend.display_name)


def _message(error: WorkerError | None) -> str | None:
    return None if error is None else str(error)


def _results(
    call: PlannedCall,
    done: _Done,
    batch: Sequence[RequestDescriptor],
    received: float,
    backend: Backend,
    *,
    masked: Callable[[str], str],
) -> dict[int, DeliveryResult]:
    """The result of every input index `call` settles, with the ids the API returned."""
    data = done.exchange.data
    ids = backend.item_ids(call, data)
    refusals = backend.item_errors(call, data) if done.error is None else [None] * len(ids)
    history = done.history
    latency_ms = round((time.monotonic() - received) * 1000, 3)
    results: dict[int, DeliveryResult] = {}
    for group, contact_id, refusal in zip(call.groups, ids, refusals, strict=True):
        error, status = done.error, done.exchange.status
        if refusal is not None:
            error = DeliveryRejected(
                f"{backend.display_name} refused this item in its HTTP {status} answer: "
                f"{masked(refusal)}",
                http_status=400,
                body=masked(refusal),
            )
            status = 400
        for index in group:
            request = batch[index]
            results[index] = DeliveryResult(
                backend=backend.name,
                message_id=request.message_id,
                kind=request.kind,
                contact=request.contact,
                status=status if status is not None else type(error).__name__,
                outcome="delivered" if error is None else "dead_lettered",
                attempts=len(history),
                first_attempt_at=history[0].at,
                last_attempt_at=history[-1].at,
                latency_ms=latency_ms,
                contact_id=contact_id,
                error=_message(error),
                error_class=None if error is None else type(error).__name__,
                response_body=error.body if isinstance(error, DeliveryRejected) else None,
                history=() if error is None else history,
            )
    return results
