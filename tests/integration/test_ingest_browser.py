"""Segment's Analytics.js, as a browser runs it, feeding a real worker and a real broker.

Analytics Next (`@segment/analytics-next`, pinned in tests/browser/package.json and installed
by `make install` with `npm ci`) is loaded from its UMD bundle in headless Chromium (Debian's
`chromium`, driven by playwright; never a downloaded browser build). A page served from one
loopback port calls `AnalyticsBrowser.load` with the worker, on another port, as its `apiHost`,
so every call crosses origins as on a customer's site: CORS preflights included. The CDN
settings are given inline and the bundle's own CDN (`analytics._cdn`) is the page's server,
so the page needs no network beyond loopback; every other request is aborted and fails the
test.

Each call (identify, track, page, screen, group, alias) must be answered 200 on the path the
library chose (`/v1/i` ... `/v1/a` one by one; `<apiHost>/b` when batching, with apiHost
`.../v1` and without it) and arrive on the worker's calls topic with the library's messageId.

Without chromium, playwright or the npm package the tests are skipped, and fail under CI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web

from tests.kafkautil import consume_all, end_offsets
from tests.prerequisites import unavailable
from tests.workerproc import WorkerProcess, running_worker

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "tests" / "browser" / "node_modules" / "@segment" / "analytics-next"
UMD_DIR = PACKAGE_DIR / "dist" / "umd"
WRITE_KEY = "wk-browser-3c9d"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
CALLS = ("identify", "track", "page", "screen", "group", "alias")

#: The page: no snippet, only the bundle, told where its CDN is (Segment's self-hosting
#: setting) so any chunk it loads comes from this server too.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script>window.analytics = {_cdn: location.origin};</script>
<script src="/analytics-next/bundles/index.js"></script>
</head><body><h1>shop</h1></body></html>
"""

#: Runs in the page: load Analytics.js pointed at the worker, make one call of each kind in
#: turn, and return what the library says it sent.
SCRIPT = """
async ({writeKey, apiHost, cdnURL, deliveryStrategy, tag}) => {
  const settings = {
    writeKey,
    cdnURL,
    cdnSettings: {
      integrations: {'Segment.io': {apiKey: writeKey, apiHost: 'api.segment.io/v1'}},
      metrics: {sampleRate: 0},
    },
  };
  const options = {
    integrations: {'Segment.io': {apiHost, protocol: 'http', deliveryStrategy}},
  };
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(settings, options);
  const contexts = [
    await analytics.identify(`u-${tag}`, {email: `${tag}@example.com`, firstName: 'Ada'}),
    await analytics.track('Plan Upgraded', {plan: 'pro', tag}),
    await analytics.page('Docs', 'Pricing', {tag}),
    await analytics.screen('Home', {tag}),
    await analytics.group(`g-${tag}`, {name: 'Acme'}),
    await analytics.alias(`u2-${tag}`),
  ];
  return contexts.map((ctx) => ({
    type: ctx.event.type,
    messageId: ctx.event.messageId,
    failed: ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null,
  }));
}
"""


@pytest.fixture(scope="module")
def analytics_bundle() -> Path:
    """The npm package's UMD bundle (exposes `AnalyticsNext`; needs no bundler)."""
    if not (UMD_DIR / "index.js").is_file():
        unavailable(
            f"{UMD_DIR / 'index.js'} is missing: `make install` runs "
            "`npm ci --prefix tests/browser` (needs npm)"
        )
    return UMD_DIR


@pytest.fixture(scope="module")
async def page_origin(analytics_bundle: Path) -> AsyncIterator[str]:
    """A loopback HTTP server for the page and the bundle's folder; its origin."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    application = web.Application()
    application.router.add_get("/", page)
    application.router.add_static("/analytics-next/bundles", analytics_bundle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def browser_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker taking the write key; nothing delivered anywhere (no API key)."""
    with running_worker(
        kafka_bootstrap, tmp_path_factory.mktemp("browser"), SEGMENT_WRITE_KEYS=WRITE_KEY
    ) as process:
        yield process
    assert WRITE_KEY not in process.log_text(), "the write key reached the worker's log"


@dataclass
class Traffic:
    """What the page asked of the network: posts it made, requests aborted, console lines."""

    posts: list[tuple[str, int | None, dict[str, str], Any]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Mode:
    """How the page sends: Analytics.js's delivery strategy, its apiHost's path on the worker,
    and the paths it must post to (one POST each)."""

    delivery: dict[str, Any]
    api_path: str
    paths: list[str]


BATCHING = {"strategy": "batching", "config": {"size": len(CALLS), "timeout": 500}}


async def _run_page(
    browser: Any, origin: str, *, api_host: str, mode: Mode, tag: str
) -> tuple[list[dict[str, Any]], Traffic]:
    """Open the page in a fresh context (no stored ids or queue), run SCRIPT, wait for one
    POST answer per path of `mode`; the library's contexts and the page's traffic."""
    traffic = Traffic()
    ended: list[Any] = []  # POSTs finished or failed, in the order they ended
    context = await browser.new_context()
    try:

        async def only_loopback(route: Any) -> None:
            if urlsplit(route.request.url).hostname in LOOPBACK:
                await route.continue_()
            else:
                traffic.aborted.append(route.request.url)
                await route.abort()

        def post_ended(request: Any) -> None:
            if request.method == "POST":
                ended.append(request)

        await context.route("**/*", only_loopback)
        context.on("requestfinished", post_ended)
        context.on("requestfailed", post_ended)
        page = await context.new_page()
        page.on("console", lambda message: traffic.console.append(message.text))
        await page.goto(origin + "/")
        sent = await page.evaluate(
            SCRIPT,
            {
                "writeKey": WRITE_KEY,
                "apiHost": api_host,
                "cdnURL": origin,
                "deliveryStrategy": mode.delivery,
                "tag": tag,
            },
        )
        for _ in range(100):  # a batch goes out after its last call returned
            if len(ended) >= len(mode.paths):
                break
            await page.wait_for_timeout(100)
        for request in ended:
            response = await request.response()  # None when the request failed
            status = response.status if response is not None else None
            headers = await request.all_headers()
            traffic.posts.append((request.url, status, headers, request.post_data_json))
    finally:
        await context.close()
    return sent, traffic


async def _stored_calls(worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    """Every message on the worker's calls topic now, by messageId."""
    bootstrap, topic = worker.env["KAFKA_BOOTSTRAP_SERVERS"], worker.env["TOPIC_SEGMENT_CALLS"]
    expected = sum((await end_offsets(bootstrap, topic)).values())
    records = await consume_all(bootstrap, topic, expected, timeout=30)
    messages = [orjson.loads(r.value) | {"__key": r.key} for r in records]
    return {m["messageId"]: m for m in messages}


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(Mode({}, "/v1", [f"/v1/{call[0]}" for call in CALLS]), id="standard"),
        pytest.param(Mode(BATCHING, "/v1", ["/v1/b"]), id="batching-v1"),
        pytest.param(Mode(BATCHING, "", ["/b"]), id="batching-root"),
    ],
)
async def test_analytics_js_calls_reach_the_calls_topic(
    chromium: Any, page_origin: str, browser_worker: WorkerProcess, mode: Mode
) -> None:
    worker_host = urlsplit(browser_worker.web_url).netloc
    tag = uuid.uuid4().hex[:8]
    sent, traffic = await _run_page(
        chromium, page_origin, api_host=worker_host + mode.api_path, mode=mode, tag=tag
    )
    answers = [(urlsplit(url).path, status) for url, status, *_ in traffic.posts]
    diagnosis = f"posts answered {answers}; console {traffic.console}"

    assert traffic.aborted == [], f"the page reached beyond loopback: {traffic.aborted}"
    assert [s["type"] for s in sent] == list(CALLS)
    assert all(s["failed"] is None for s in sent), diagnosis
    assert [urlsplit(url).path for url, *_ in traffic.posts] == mode.paths, diagnosis
    for url, status, headers, body in traffic.posts:
        assert urlsplit(url).netloc == worker_host
        assert status == 200, diagnosis
        assert headers["content-type"] == "text/plain"
        assert body["writeKey"] == WRITE_KEY

    stored = await _stored_calls(browser_worker)
    bodies = [body for *_, body in traffic.posts]
    posted = [item for body in bodies for item in body.get("batch", [body])]
    assert [p["messageId"] for p in posted] == [s["messageId"] for s in sent]
    for message in posted:  # stored as posted, less the write key, the clock corrected
        assert message["messageId"] in stored, f"{message} is not on the calls topic"
        kept = stored[message["messageId"]]
        same = {k: v for k, v in message.items() if k not in ("writeKey", "sentAt", "timestamp")}
        assert {k: kept.get(k) for k in same} == same
        assert kept["originalTimestamp"] == message["timestamp"]
        assert kept["receivedAt"].endswith("Z")
        assert "writeKey" not in kept
        assert kept["context"]["library"]["name"] == "analytics.js"
        assert kept["anonymousId"]
    by_type = {stored[c["messageId"]]["type"]: stored[c["messageId"]] for c in sent}
    assert by_type["identify"]["userId"] == f"u-{tag}"
    assert by_type["identify"]["traits"] == {"email": f"{tag}@example.com", "firstName": "Ada"}
    assert by_type["identify"]["__key"] == f"u-{tag}".encode()
    assert by_type["track"]["event"] == "Plan Upgraded"
    assert by_type["track"]["properties"] == {"plan": "pro", "tag": tag}
    assert by_type["page"]["name"] == "Pricing"
    assert by_type["page"]["properties"]["tag"] == tag
    assert by_type["screen"]["name"] == "Home"
    assert by_type["group"]["groupId"] == f"g-{tag}"
    # Analytics.js 1.84 posts an alias with the current user as userId too; stored as posted
    assert by_type["alias"]["previousId"] == f"u-{tag}"
