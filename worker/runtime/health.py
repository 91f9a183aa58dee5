"""Operations endpoints on the worker's web server: `/metrics`, `/healthz` and `/readyz`.

Mounted by `install_operations` (the composition root calls it) as plain aiohttp routes on
faust's web server (WORKER_WEB_PORT), as the ingest endpoints are; the handlers run on the
worker's event loop, so an answer from `/healthz` is itself the proof that the loop runs.

`GET /readyz` answers 200 when every check passes and 503 otherwise, with a JSON body naming each
check, whether it passed and why:

- `assignment`: the consumer has stream partitions assigned (changelog partitions not counted);
- `recovery`: no rebalance is under way and table recovery has completed;
- `broker`: a metadata request to Kafka, made every `BROKER_CHECK_INTERVAL_S` by a task of its
  own over a connection made as every client's is (TLS, SASL), answered within
  `BROKER_CHECK_TIMEOUT_S`, and the last answer is recent; a Kafka that refuses the worker's
  credentials or certificate is named as such;
- `delivery`: delivery is not paused on a refused API key (passes when delivery is not enabled);
- `pipelines`: no pipeline is paused by its breaker (our own code failing most messages); the
  detail names each paused one, since when, why, and how to resume it.

`POST /admin/pipelines/<name>/resume` resumes a paused pipeline. It needs `WORKER_ADMIN_TOKEN`
as `Authorization: Bearer <token>`; with no token configured it answers loopback clients only.

`?check=broker` (or any comma-separated subset, or repeated `check=`) evaluates only those.
The full `/readyz` answers "is this worker doing all its work"; it is also 503 on a replica that
has no partition (more replicas than partitions) and while delivery is paused. A Kubernetes
Service in front of the ingest API only needs Kafka to take the records, so its readiness probe
should be `/readyz?check=broker`, or a paused delivery would also stop the ingest traffic.

How each check is read is in `live_inputs`; what they decide is the pure `evaluate`. Nothing
here may stop the worker: a value that cannot be read counts as a failing check (readiness) or
is left out (metrics).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka.errors import KafkaConnectionError
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from worker.errors import ConfigurationError
from worker.pipeline.breaker import Breaker
from worker.runtime.kafka_connection import KafkaRefused, kafka_client_config, probe
from worker.runtime.metrics import PREFIX, consumer_lags, metrics
from worker.runtime.stages import Runtime
from worker.settings import Settings

__all__ = [
    "CHECKS",
    "BrokerProbe",
    "CheckResult",
    "DeliveryStatus",
    "NoDelivery",
    "Operations",
    "ReadinessInputs",
    "admin_allowed",
    "evaluate",
    "install_operations",
    "live_inputs",
    "parse_checks",
    "paused_pipelines",
    "readiness_response",
    "web_application",
    "web_router",
]

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
#: The classic text format (what every Prometheus and KEDA version reads; our names need no
#: escaping, so `generate_latest`'s output is valid in it).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Every readiness check, in the order they are reported.
CHECKS = ("assignment", "recovery", "broker", "delivery", "pipelines")
RESUME_PATH = "/admin/pipelines/{name}/resume"

BROKER_CHECK_INTERVAL_S = 5.0
BROKER_CHECK_TIMEOUT_S = 3.0
#: The broker check fails when its last success is older than this (the probe itself is stuck).
BROKER_CHECK_STALE_S = 3 * BROKER_CHECK_INTERVAL_S + BROKER_CHECK_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ReadinessInputs:
    """What readiness is decided from, read from the live worker by `live_inputs`."""

    assigned_partitions: int | None  # stream partitions; None: the consumer could not be read
    rebalancing: bool
    recovery_completed: bool
    broker: CheckResult
    delivery_enabled: bool
    delivery_paused: bool
    #: paused pipeline -> why and since when (empty while every pipeline runs)
    paused_pipelines: dict[str, str] = field(default_factory=dict)


def evaluate(inputs: ReadinessInputs, checks: Sequence[str] = CHECKS) -> dict[str, CheckResult]:
    """The result of each of `checks` (names from `CHECKS`) for `inputs`."""
    results: dict[str, CheckResult] = {}
    for name in checks:
        if name == "assignment":
            count = inputs.assigned_partitions
            if count is None:
                results[name] = CheckResult(False, "the consumer is not running")
            elif count == 0:
                results[name] = CheckResult(False, "no partition assigned to this worker")
            else:
                results[name] = CheckResult(True, f"{count} partition(s) assigned")
        elif name == "recovery":
            if inputs.rebalancing:
                results[name] = CheckResult(False, "a rebalance is under way")
            elif not inputs.recovery_completed:
                results[name] = CheckResult(False, "table recovery has not completed")
            else:
                results[name] = CheckResult(True, "tables recovered, no rebalance under way")
        elif name == "broker":
            results[name] = inputs.broker
        elif name == "delivery":
            if not inputs.delivery_enabled:
                results[name] = CheckResult(True, "delivery is not enabled (no API key)")
            elif inputs.delivery_paused:
                results[name] = CheckResult(
                    False, "delivery is paused: Autopilot refuses the API key"
                )
            else:
                results[name] = CheckResult(True, "delivery is running")
        elif name == "pipelines":
            paused = inputs.paused_pipelines
            if paused:
                detail = "; ".join(f"{p} {why}" for p, why in sorted(paused.items()))
                results[name] = CheckResult(False, f"paused: {detail}")
            else:
                results[name] = CheckResult(True, "no pipeline is paused")
        else:
            raise ValueError(f"unknown readiness check {name!r}")
    return results


def parse_checks(values: Iterable[str]) -> tuple[str, ...]:
    """The checks a `?check=` query names (comma-separated or repeated); all when none."""
    named = [part.strip() for value in values for part in value.split(",") if part.strip()]
    unknown = sorted(set(named) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    return tuple(name for name in CHECKS if name in named) or CHECKS


def readiness_response(results: dict[str, CheckResult]) -> tuple[int, bytes]:
    """(HTTP status, JSON body): 200 when every check passed, else 503 naming the failing."""
    failing = [name for name, result in results.items() if not result.ok]
    body = {
        "status": "not ready" if failing else "ready",
        "failing": failing,
        "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()},
    }
    return (503 if failing else 200), orjson.dumps(body)


class BrokerProbe:
    """Asks Kafka for metadata every `interval_s`; `status()` says how the last ask went.

    `check` raises when the broker cannot be reached; it is given `timeout_s` to answer. The
    `/readyz` handler only reads the outcome, so a probe never waits on Kafka.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[str]],
        *,
        interval_s: float = BROKER_CHECK_INTERVAL_S,
        timeout_s: float = BROKER_CHECK_TIMEOUT_S,
        stale_s: float = BROKER_CHECK_STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stale_s = stale_s
        self._clock = clock
        self._last_ok_at: float | None = None
        self._last: CheckResult = CheckResult(False, "the broker was not checked yet")

    async def check_once(self) -> CheckResult:
        had_answered = self._last_ok_at is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                detail = await self._check()
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            result = CheckResult(False, f"no metadata from Kafka within {self._timeout_s:g}s")
        except KafkaRefused as exc:  # Kafka answers and refuses us: say why, not "unreachable"
            result = CheckResult(False, str(exc)[:300])
        except Exception as exc:  # noqa: BLE001  (any failure means: not reachable)
            reason = (
                str(exc)
                if str(exc).startswith(type(exc).__name__)
                else f"{type(exc).__name__}: {exc}"
            )
            result = CheckResult(False, f"Kafka unreachable: {reason}"[:300])
        else:
            self._last_ok_at = self._clock()
            result = CheckResult(True, detail)
        if had_answered and result.ok != self._last.ok:
            if result.ok:
                log.info("readiness: the broker answers again")
            else:
                log.warning("readiness: %s", result.detail)
        self._last = result
        return result

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval_s)

    def status(self) -> CheckResult:
        if not self._last.ok or self._last_ok_at is None:
            return self._last
        age = self._clock() - self._last_ok_at
        if age > self._stale_s:
            return CheckResult(False, f"the last metadata answer is {age:.0f}s old")
        return self._last


class _MetadataCheck:
    """One aiokafka client of our own on the worker's loop, asked for cluster metadata.

    Its own client, not faust's: the consumer and producer live on other threads' loops. It
    connects as every client of the worker does (`kafka_client_config`); when it cannot, a
    refusal (credentials revoked, a certificate expired) is said as such
    (`kafka_connection.refusal`), not as an unreachable broker.
    """

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._client: Any = None

    async def __call__(self) -> str:
        from aiokafka.client import AIOKafkaClient  # noqa: PLC0415  (worker process only)

        try:
            if self._client is None:
                self._client = AIOKafkaClient(
                    **kafka_client_config(self._settings),
                    client_id=self._client_id,
                    request_timeout_ms=int(BROKER_CHECK_TIMEOUT_S * 1000),
                )
                try:
                    await self._client.bootstrap()
                except KafkaConnectionError:
                    # aiokafka's bootstrap keeps only "unable to bootstrap": ask why once
                    await probe(self._settings, timeout_s=BROKER_CHECK_TIMEOUT_S)
                    raise
            cluster = await self._client.fetch_all_metadata()
        except BaseException:
            await self.close()
            raise
        return f"metadata answered ({len(cluster.brokers())} broker(s))"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing a broken client: nothing more to do
                log.debug("closing the readiness client failed", exc_info=True)


# -- reading the live worker -------------------------------------------------------------------


class DeliveryStatus(Protocol):
    """What readiness, the metrics and the console read of the delivery feature."""

    @property
    def enabled(self) -> bool: ...

    @property
    def backend_name(self) -> str:
        """The destination API's name (`Backend.display_name`)."""

    @property
    def rate_limit(self) -> float:
        """Requests a second the API allows this process (AUTOPILOT_RATE_LIMIT)."""

    @property
    def paused(self) -> bool: ...

    @property
    def paused_since(self) -> float | None:
        """When the API refused the key (epoch seconds); None while delivery runs."""

    @property
    def rate_limit_waited_s(self) -> float: ...

    @property
    def requests_sent(self) -> int:
        """Requests the rate limiter let through so far."""


class NoDelivery:
    """This process does not deliver (`WORKER_FEATURES` leaves it out)."""

    enabled = False
    backend_name = ""
    rate_limit = 0.0
    paused = False
    paused_since = None
    rate_limit_waited_s = 0.0
    requests_sent = 0


def _stream_partitions(faust_app: Any) -> list[Any]:
    """Assigned partitions of the topics agents read (table changelogs left out)."""
    changelogs = faust_app.tables.changelog_topics
    return [tp for tp in faust_app.consumer.assignment() if tp.topic not in changelogs]


def paused_pipelines(breakers: dict[str, Breaker]) -> dict[str, str]:
    """Each paused pipeline: since when, why, and how to resume it."""
    paused: dict[str, str] = {}
    for name, breaker in breakers.items():
        if breaker.tripped is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(breaker.paused_since or 0))
            paused[name] = (
                f"since {since}: {breaker.tripped} (POST {RESUME_PATH.format(name=name)})"
            )
    return paused


def live_inputs(
    faust_app: Any, delivery: DeliveryStatus, probe: BrokerProbe, breakers: dict[str, Breaker]
) -> ReadinessInputs:
    """Readiness inputs from the running worker; what cannot be read counts as not ready."""
    try:
        assigned: int | None = len(_stream_partitions(faust_app))
    except Exception:  # noqa: BLE001  (consumer not started yet, or going away)
        assigned = None
    try:
        rebalancing = bool(faust_app.rebalancing)
        recovered = bool(faust_app.tables.recovery.completed.is_set())
    except Exception:  # noqa: BLE001
        rebalancing, recovered = True, False
    return ReadinessInputs(
        assigned_partitions=assigned,
        rebalancing=rebalancing,
        recovery_completed=recovered,
        broker=probe.status(),
        delivery_enabled=delivery.enabled,
        delivery_paused=delivery.paused,
        paused_pipelines=paused_pipelines(breakers),
    )


def admin_allowed(request: web.Request, token: str | None) -> bool:
    """With a token: the request's `Authorization: Bearer` equals it. Without: a loopback
    client only (what `make run` uses)."""
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class Operations:
    """The operations endpoints and metrics sources of one running worker."""

    def __init__(self, runtime: Runtime, delivery: DeliveryStatus | None = None) -> None:
        self._runtime = runtime
        self._app = runtime.app
        self.delivery: DeliveryStatus = delivery or NoDelivery()
        settings = runtime.settings
        self._metadata_check = _MetadataCheck(settings, f"{settings.worker_app_id}-readiness")
        self.broker_probe = BrokerProbe(self._metadata_check)

    def inputs(self) -> ReadinessInputs:
        return live_inputs(self._app, self.delivery, self.broker_probe, self._runtime.breakers)

    # -- metrics sources

    def lags(self) -> dict[tuple[str, int], int]:
        """Records not yet committed, per assigned input partition (`consumer_lags`)."""
        consumer: Any = self._app.consumer  # faust's offsets bookkeeping is not on ConsumerT
        return consumer_lags(
            _stream_partitions(self._app),  # faust TPs: (topic, partition) tuples
            highwater=consumer.highwater,
            committed=dict(consumer._committed_offset),
            read=dict(consumer._read_offset),
        )

    def lag_metrics(self) -> Iterable[Metric]:
        lags = self.lags()
        family = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag",
            "Records on an assigned input partition not yet committed by this worker: "
            "highwater minus the committed offset (only partitions whose highwater is known).",
            labels=("topic", "partition"),
        )
        for (topic, partition), lag in sorted(lags.items()):
            family.add_metric([topic, str(partition)], lag)
        yield family

    def delivery_metrics(self) -> Iterable[Metric]:
        delivery = self.delivery
        if not delivery.enabled:
            return
        waited = CounterMetricFamily(
            f"{PREFIX}_rate_limiter_wait_seconds",
            "Seconds delivery requests spent waiting for a rate-limit slot (AUTOPILOT_RATE_LIMIT).",
        )
        waited.add_metric([], delivery.rate_limit_waited_s)
        yield waited
        yield GaugeMetricFamily(
            f"{PREFIX}_delivery_paused",
            "1 while delivery is paused because Autopilot refuses the API key, else 0.",
            value=1.0 if delivery.paused else 0.0,
        )

    def pipeline_metrics(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_pipeline_paused",
            "1 while the pipeline is paused by its breaker (our own code failing), else 0.",
            labels=("pipeline",),
        )
        for name, breaker in sorted(self._runtime.breakers.items()):
            family.add_metric([name], 1.0 if breaker.paused else 0.0)
        yield family

    def readiness_metrics(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_ready",
            "1 when the readiness check passes, else 0 (what /readyz reports).",
            labels=("check",),
        )
        for name, result in evaluate(self.inputs()).items():
            family.add_metric([name], 1.0 if result.ok else 0.0)
        yield family

    # -- HTTP

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        try:
            body = metrics.render()
        except Exception:
            log.exception("rendering the metrics failed")
            return web.Response(status=500, text="the metrics could not be rendered\n")
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def healthz_endpoint(self, request: web.Request) -> web.Response:
        """Alive: this answer comes from the worker's event loop."""
        return web.Response(body=b'{"status":"alive"}', content_type="application/json")

    async def readyz_endpoint(self, request: web.Request) -> web.Response:
        try:
            checks = parse_checks(request.query.getall("check", []))
        except ValueError as exc:
            body = orjson.dumps({"status": "bad request", "error": str(exc)})
            return web.Response(status=400, body=body, content_type="application/json")
        status, body = readiness_response(evaluate(self.inputs(), checks))
        return web.Response(status=status, body=body, content_type="application/json")

    async def resume_endpoint(self, request: web.Request) -> web.Response:
        """Resume a pipeline its breaker paused."""
        token = self._runtime.settings.worker_admin_token
        if not admin_allowed(request, token.get_secret_value() if token else None):
            return _json(
                401, {"error": "needs WORKER_ADMIN_TOKEN as 'Authorization: Bearer <token>'"}
            )
        name = request.match_info["name"]
        breakers = self._runtime.breakers
        breaker = breakers.get(name)
        if breaker is None:
            known = ", ".join(sorted(breakers))
            return _json(404, {"error": f"no pipeline {name!r}; known: {known}"})
        resumed = breaker.resume()
        return _json(200, {"pipeline": name, "resumed": resumed, "paused": breaker.paused})

    def add_metrics_sources(self) -> None:
        """Have every scrape read lags, delivery, readiness and paused pipelines."""
        metrics.add_source("consumer_lag", self.lag_metrics)
        metrics.add_source("delivery", self.delivery_metrics)
        metrics.add_source("readiness", self.readiness_metrics)
        metrics.add_source("pipelines", self.pipeline_metrics)

    def mount(self, router: web.UrlDispatcher) -> None:
        """Add /metrics, /healthz, /readyz and the resume endpoint to `router`."""
        router.add_get(METRICS_PATH, self.metrics_endpoint)
        router.add_get(HEALTHZ_PATH, self.healthz_endpoint)
        router.add_get(READYZ_PATH, self.readyz_endpoint)
        router.add_post(RESUME_PATH, self.resume_endpoint)

    async def probe_broker(self) -> None:
        """Keeps the broker probe current while the worker runs (an app task)."""
        try:
            await self.broker_probe.run()
        finally:
            await self._metadata_check.close()


def web_application(runtime: Runtime) -> web.Application:
    """faust's aiohttp web application (routes and middlewares frozen once the server starts)."""
    driver = runtime.app.web
    if not isinstance(driver, AiohttpWeb):
        raise ConfigurationError(f"the worker needs faust's aiohttp web driver, not {driver!r}")
    application: web.Application = driver.web_app
    return application


def web_router(runtime: Runtime) -> web.UrlDispatcher:
    """The router of faust's aiohttp web server."""
    return web_application(runtime).router


def install_operations(runtime: Runtime, delivery: DeliveryStatus | None = None) -> Operations:
    """Mount the endpoints, start the broker probe and register the metrics sources."""
    operations = Operations(runtime, delivery)
    runtime.app.task(operations.probe_broker)
    operations.add_metrics_sources()
    operations.mount(web_router(runtime))
    return operations
