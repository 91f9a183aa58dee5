"""The console's routes on the worker's web server, and what they gather for the page.

- `GET /` leads to `GET /console`: the page (`worker.console.page`), for `?window=hour|day`,
  `?q=` (a messageId or contact, searched in the recent failures, or with `scope=topic` on the
  whole dead-letter topic), `?page=`.
- `POST /console/replay` with `{"refs": ["PARTITION@OFFSET", ...]}` replays those dead letters
  (`worker.console.replays.replay_letters`) and answers what it replayed and skipped.

Both need what `worker.console.access` says; every answer carries its security headers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import quote

import orjson
from aiohttp import web

from worker.console.access import (
    CsrfTokens,
    Refusal,
    security_headers,
    viewer_of,
    with_proof,
)
from worker.console.failures import RING_SIZE, FailureFeed, search_topic
from worker.console.page import (
    CONSOLE_PATH,
    HOUR_S,
    REPLAY_PATH,
    WINDOWS,
    DeliveryView,
    PageData,
    PipelineView,
    render,
)
from worker.console.replays import MAX_REFS, ReplayLog, ReplayWatcher, replay_letters
from worker.pipeline.letters import LetterRef
from worker.pipeline.stage import Stage
from worker.runtime.dead_letter_topic import DeadLetterTopicError
from worker.runtime.health import DeliveryStatus, Operations, web_application
from worker.runtime.history import CountHistory, running_totals
from worker.runtime.metrics import metrics
from worker.runtime.stages import Runtime
from worker.settings import Settings, mask, secret_values
from worker.topics import TopicNames

__all__ = ["Console", "build_console", "page_masker"]

log = logging.getLogger(__name__)

#: The counters are read into the history this often (and before every page).
SAMPLE_EVERY_S = 5.0
PAGE_SIZE = 50
_MAX_QUERY_CHARS = 200
_MIN_ENCODED_CHARS = 8


def page_masker(settings: Settings) -> Callable[[str], str]:
    """Masks every secret of `settings` in a text, as is and in the forms a payload may carry
    it: base64 (standard and URL-safe, as in an HTTP Basic header) and percent-encoded."""
    values = secret_values(settings)
    forms = set(values)
    for value in values:
        forms.add(quote(value, safe=""))
        for text in (value, value + ":", ":" + value):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                encoded = encode(text.encode()).decode()
                forms |= {f for f in (encoded, encoded.rstrip("=")) if len(f) >= _MIN_ENCODED_CHARS}

    def masked(text: str) -> str:
        return mask(text, forms)

    return masked


def _inputs(
    topics: TopicNames, settings: Settings, deliveries: Iterable[DeliveryStatus]
) -> dict[str, list[str]]:
    """The topics each pipeline reads (the README's topic map): one delivery pipeline per
    backend (`delivery`, `delivery-ortto`), on its own topics."""
    warehouse = [topics.segment_tracks, topics.warehouse_replay]
    if settings.warehouse_calls_schema is not None:
        warehouse.insert(1, topics.segment_calls)
    inputs = {
        "source": [topics.email_events, topics.ortto_activities, topics.source_by_email],
        "destination": [topics.segment_calls, topics.destination_by_user],
        "warehouse": warehouse,
        "replay": [topics.retry],
    }
    for delivery in deliveries:
        backend = topics.for_backend(delivery.name)
        inputs[delivery.pipeline] = [backend.requests, backend.delivery_replay]
    return inputs


class Console:
    """The console of one worker process."""

    def __init__(self, runtime: Runtime, operations: Operations) -> None:
        self._runtime = runtime
        self._operations = operations
        settings = self._settings = runtime.settings
        token = settings.worker_admin_token
        self._token = token.get_secret_value() if token is not None else None
        self.mask = page_masker(settings)
        self.history = CountHistory()
        self.feed = FailureFeed(settings, self.mask)
        self.replays = ReplayLog()
        self.watcher = ReplayWatcher(
            settings,
            runtime.topics,
            str(runtime.app.conf.id),
            self.replays,
            self.feed,
            backends=[d.name for d in operations.deliveries],
        )
        self.csrf = CsrfTokens()
        #: (when, requests sent so far by backend), the last minute's samples
        self._requests: deque[tuple[float, dict[str, int]]] = deque(
            maxlen=int(60 / SAMPLE_EVERY_S) + 2
        )

    # -- the counters ---------------------------------------------------------------------------

    def _stages(self) -> list[Stage]:
        every = {(s.name, s.stage): s for s in self._runtime.stages.values()}
        for stage in metrics.stages():
            every.setdefault((stage.name, stage.stage), stage)
        return list(every.values())

    def sample(self) -> None:
        """Read the counters into the history."""
        deliveries = self._operations.deliveries
        requests = {d.name: d.requests_sent for d in deliveries}
        self.history.record(
            running_totals(
                self._stages(),
                metrics.delivery_outcomes(),
                requests=requests,
                waited_ms={d.name: round(d.rate_limit_waited_s * 1000) for d in deliveries},
            )
        )
        self._requests.append((time.monotonic(), requests))

    async def sampler(self) -> None:
        """Keeps the history current while the worker runs (an app task)."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY_S)

    def _rate_in_use(self, backend: str) -> float | None:
        now = time.monotonic()
        recent = [
            (at, sent[backend])
            for at, sent in self._requests
            if now - at <= 60 + SAMPLE_EVERY_S and backend in sent
        ]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] <= 0:
            return None
        (first_at, first), (last_at, last) = recent[0], recent[-1]
        return (last - first) / (last_at - first_at)

    def _lags(self) -> dict[str, int]:
        try:
            lags = self._operations.lags()
        except Exception:  # noqa: BLE001  (the consumer is not running yet, or going away)
            return {}
        by_topic: dict[str, int] = {}
        for (topic, _), lag in sorted(lags.items()):
            by_topic[topic] = by_topic.get(topic, 0) + lag
        return by_topic

    def _pipelines(self, lags: dict[str, int]) -> list[PipelineView]:
        inputs = _inputs(self._runtime.topics, self._settings, self._operations.deliveries)
        stages: dict[str, list[str]] = {}
        for stage in self._stages():
            stages.setdefault(stage.name, []).append(stage.stage)
        views = []
        for name, breaker in self._runtime.breakers.items():
            paused = None
            if breaker.tripped is not None:
                since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(breaker.paused_since or 0))
                paused = self.mask(
                    f"since {since}: {breaker.tripped} (resume: POST "
                    f"/admin/pipelines/{name}/resume)"
                )
            lag = {t: lags[t] for t in inputs.get(name, []) if t in lags}
            views.append(PipelineView(name, stages.get(name, []), paused, lag))
        return views

    def _deliveries(self, lags: dict[str, int]) -> list[DeliveryView]:
        """A view of each destination API this worker maps for (`backends_for`)."""
        deliveries = self._operations.deliveries
        inputs = _inputs(self._runtime.topics, self._settings, deliveries)
        hour = self.history.window(HOUR_S)
        return [
            DeliveryView(
                runs="delivery" in self._settings.worker_features,
                enabled=delivery.enabled,
                backend=delivery.display_name,
                paused_since=delivery.paused_since,
                rate_in_use=self._rate_in_use(delivery.name) if delivery.enabled else None,
                rate_limit=delivery.rate_limit,
                waited_s_hour=hour["rate_limit_waited_ms", delivery.name] / 1000,
                lag={t: lags[t] for t in inputs[delivery.pipeline] if t in lags},
                name=delivery.name,
                pipeline=delivery.pipeline,
                rate_setting=f"{delivery.name.upper()}_RATE_LIMIT",
            )
            for delivery in deliveries
        ]

    # -- HTTP -----------------------------------------------------------------------------------

    def _refused(self, refusal: Refusal, *, as_json: bool) -> web.Response:
        headers = {**security_headers(secrets.token_urlsafe(16)), **refusal.headers()}
        if as_json:
            return web.Response(
                status=refusal.status,
                body=orjson.dumps({"error": refusal.reason}),
                content_type="application/json",
                headers=headers,
            )
        return web.Response(status=refusal.status, text=refusal.reason + "\n", headers=headers)

    async def index(self, request: web.Request) -> web.Response:
        """`/` leads to the console."""
        return web.Response(status=302, headers={"Location": CONSOLE_PATH})

    async def page(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request, self._token)
        if isinstance(viewer, Refusal):
            return self._refused(viewer, as_json=False)
        query = request.query.get("q", "").strip()[:_MAX_QUERY_CHARS]
        scope = "topic" if request.query.get("scope") == "topic" and query else "recent"
        window = request.query.get("window", "hour")
        window = window if window in WINDOWS else "hour"
        try:
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            page = 1
        self.sample()
        self.replays.note_failures(self.feed.ring)
        ring = self.feed.ring
        topic = self._settings.topic_dead_letters
        search_note = ""
        if scope == "topic":
            try:
                failures, read, complete = await search_topic(self._settings, query, self.mask)
            except Exception as exc:  # noqa: BLE001  (Kafka unreachable, say: the page says so)
                failures, read, complete = [], 0, False
                search_note = self.mask(f"searching {topic} failed: {type(exc).__name__}: {exc}")
            else:
                search_note = (
                    f"{len(failures)} letter(s) on {topic} match {query!r} (the latest "
                    f"{len(failures)} shown, of {read} read"
                    + ("" if complete else "; the search stopped after 30 s")
                    + ")"
                )
        else:
            failures = ring.latest(query or None)
            if query:
                search_note = (
                    f"{len(failures)} of the {len(ring)} recent failures match {query!r}; tick "
                    "'the whole dead-letter topic' to search it all"
                )
        if self.feed.error is not None:
            ring_note = f"Reading {topic} fails: {self.mask(self.feed.error)}. Retrying."
        elif not self.feed.loaded.is_set():
            ring_note = f"Reading the latest dead letters from {topic}..."
        else:
            ring_note = (
                f"The latest {len(ring)} dead letters on {topic} (up to {RING_SIZE} are held "
                "in memory, read by this process), newest first."
            )
        pages = max(1, -(-len(failures) // PAGE_SIZE))
        page = min(page, pages)
        seconds, bucket_s = WINDOWS[window]
        lags = self._lags()
        replays = self.replays.latest()
        nonce = secrets.token_urlsafe(16)
        data = PageData(
            app_id=self._settings.worker_app_id,
            now=time.time(),
            started_at=self.history.started_at,
            window=window,
            hour=self.history.window(HOUR_S),
            day=self.history.window(WINDOWS["day"][0]),
            series=self.history.series(seconds, bucket_s),
            pipelines=self._pipelines(lags),
            deliveries=self._deliveries(lags),
            failures=failures[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            page=page,
            pages=pages,
            query=query,
            scope=scope,
            search_note=search_note,
            ring_note=ring_note,
            replays=replays,
            replay_of={r.ref: r for r in reversed(replays)},
            later=ring.later_failures(),
            csrf=self.csrf.issue(),
            nonce=nonce,
            mask=self.mask,
        )
        return web.Response(
            text=render(data),
            content_type="text/html",
            charset="utf-8",
            headers=security_headers(nonce),
        )

    async def replay(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request, self._token)
        if isinstance(viewer, Refusal):
            return self._refused(viewer, as_json=True)
        refusal = with_proof(request, viewer, self.csrf)
        if refusal is not None:
            return self._refused(refusal, as_json=True)
        try:
            refs = _refs(await request.read())
        except ValueError as exc:
            return self._refused(Refusal(400, str(exc)), as_json=True)
        try:
            answer = await replay_letters(
                self._settings,
                self._runtime.topics,
                refs,
                self._runtime.sender.send_each,
                self.watcher,
            )
        except DeadLetterTopicError as exc:
            return self._refused(Refusal(400, self.mask(str(exc))), as_json=True)
        except Exception as exc:  # noqa: BLE001  (Kafka unreachable, say: the worker runs on)
            log.warning("console: a replay failed: %s", self.mask(f"{type(exc).__name__}: {exc}"))
            reason = f"the replay failed ({type(exc).__name__}); nothing or part of it was sent"
            return self._refused(Refusal(503, reason), as_json=True)
        return web.Response(
            body=orjson.dumps(answer),
            content_type="application/json",
            headers=security_headers(secrets.token_urlsafe(16)),
        )

    def mount(self, application: web.Application) -> None:
        router = application.router
        router.add_get("/", self.index)
        router.add_get(CONSOLE_PATH, self.page)
        router.add_post(REPLAY_PATH, self.replay)


def _refs(body: bytes) -> list[LetterRef]:
    """The letters a replay body names: `{"refs": ["PARTITION@OFFSET", ...]}`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError('not JSON; expected {"refs": ["PARTITION@OFFSET", ...]}') from None
    refs = data.get("refs") if isinstance(data, dict) else None
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError('expected {"refs": ["PARTITION@OFFSET", ...]} with at least one letter')
    if len(refs) > MAX_REFS:
        raise ValueError(f"at most {MAX_REFS} letters at once (use `python -m worker dlq replay`)")
    return list(dict.fromkeys(LetterRef.parse(r) for r in refs))


def build_console(runtime: Runtime, operations: Operations) -> Console:
    """The console's routes on `runtime`'s web server, and the tasks that feed it."""
    console = Console(runtime, operations)
    console.mount(web_application(runtime))
    runtime.app.task(console.sampler)
    runtime.app.task(console.feed.run)
    runtime.app.task(console.watcher.run)
    token = runtime.settings.worker_admin_token
    log.info(
        "console on %s (%s)",
        CONSOLE_PATH,
        "WORKER_ADMIN_TOKEN as a Bearer token or Basic password"
        if token is not None and token.get_secret_value()
        else "loopback clients only: WORKER_ADMIN_TOKEN is not set",
    )
    return console
