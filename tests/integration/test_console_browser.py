"""The console in a real browser, against a real worker on a real broker.

A worker delivering to the stand-in API, with `WORKER_ADMIN_TOKEN` set, is fed a mix of good
and bad input: valid email events, one that is not JSON, one of an unsupported type, a test
event (skipped), identifies with and without an email, and a trigger for a contact the API does
not know (404). Debian's headless Chromium (playwright, never a downloaded browser) then opens
the console with the token as its Basic password, and:

- the page shows the right counts per pipeline and for the destination, and each dead
  letter's reason (class, status, message) and payload;
- a search finds the contact of the 404;
- once the contact exists at the API, ticking that failure and pressing the replay button
  replays that one letter onto the retry topic, and its new outcome (delivered) appears;
- a foreign page's form posting a replay to the console is refused, and nothing is replayed;
- nothing is loaded from beyond loopback, and the page breaks no rule of its security policy.

`CONSOLE_SCREENSHOT=<path>` saves the page as it ends (the README's screenshot is made so).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from aiohttp import web

from tests.kafkautil import Record, produce
from tests.reliability.topics import read_topic
from tests.workerproc import WorkerProcess, running_worker
from worker.pipeline.replay import REPLAY_TARGET

pytestmark = pytest.mark.integration

API_KEY = "console-key-7a1b"
TOKEN = "console-admin-3e9f2c"
TRIGGER = "0001"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@pytest.fixture(scope="module")
def console_worker(
    kafka_bootstrap: str, fake_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with running_worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID=TRIGGER,
        AUTOPILOT_BULK_LINGER_MS="100",
        WORKER_ADMIN_TOKEN=TOKEN,
    ) as process:
        yield process
    log = process.log_text()
    assert TOKEN not in log, "the admin token reached the worker's log"
    assert API_KEY not in log


@pytest.fixture
async def foreign_origin(console_worker: WorkerProcess) -> AsyncIterator[str]:
    """Another site on loopback whose page posts a replay to the console when opened."""
    target = console_worker.web_url + "/console/replay"
    page = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}" enctype="text/plain">
<input name='{{"refs": ["0@0"], "x": "' value='"}}'></form>
<script>document.getElementById("f").submit();</script></body></html>""".encode()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html")

    application = web.Application()
    application.router.add_get("/", serve)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def _event(event_id: str, email: str, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00Z",
            "contact": {"contact_id": f"person_{event_id}", "email": email},
            "email": {"id": "email_1", "subject": "Welcome"},
            **extra,
        }
    )


async def _feed(worker: WorkerProcess, tag: str) -> None:
    """The mix of good and bad input; events keyed by email, as the webhook keys them."""
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    emails = [f"ada{i}-{tag}@example.com" for i in range(4)]
    events: list[Record] = [
        (e.encode(), _event(f"evt_{tag}_{i}", e), []) for i, e in enumerate(emails)
    ]
    events += [
        (
            f"test-{tag}@example.com".encode(),
            _event(f"evt_{tag}_t", f"test-{tag}@example.com", test=True),
            [],
        ),
        (b"k", b"{not json", []),
        (
            f"fwd-{tag}@example.com".encode(),
            _event(f"evt_{tag}_fwd", f"fwd-{tag}@example.com", type="email_forwarded"),
            [],
        ),
    ]
    await produce(bootstrap, env["TOPIC_EMAIL_EVENTS"], events)
    calls: list[dict[str, Any]] = [
        {
            "type": "identify",
            "userId": f"u-{tag}-{i}",
            "messageId": f"{tag}-identify-{i}",
            "traits": {"email": f"grace{i}-{tag}@example.com"},
        }
        for i in range(2)
    ]
    calls.append(
        {"type": "identify", "userId": f"u-{tag}-x", "messageId": f"{tag}-noemail", "traits": {}}
    )
    await produce(
        bootstrap,
        env["TOPIC_SEGMENT_CALLS"],
        [(c["userId"].encode(), orjson.dumps(c), []) for c in calls],
    )
    trigger = {
        "method": "POST",
        "path": f"/v1/trigger/{TRIGGER}/contact/nobody-{tag}%40example.com",
        "json": {"property": {"plan": "pro"}},
        "kind": "trigger_journey",
        "message_id": f"{tag}-404",
        "contact": f"nobody-{tag}@example.com",
    }
    await produce(bootstrap, env["TOPIC_AUTOPILOT_REQUESTS"], [(b"k", orjson.dumps(trigger), [])])


async def _until(
    page: Any,
    what: str,
    done: Callable[[], Awaitable[bool]],
    timeout: float = 60,  # noqa: ASYNC109
) -> None:
    """Reload the page until `done` holds."""
    deadline = time.monotonic() + timeout
    while not await done():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the console never showed {what}:\n{await page.inner_text('main')}"
            )
        await page.wait_for_timeout(500)
        await page.reload()


async def _count(page: Any, key: str, column: int = 0) -> int | None:
    """The page's last-hour (0) or last-day (1) count for `key` (`data-count`); None if absent."""
    cells = page.locator(f'tr[data-count="{key}"] td.num')
    if await cells.count() == 0:
        return None
    return int(await cells.nth(column).inner_text())


async def _retry_records(worker: WorkerProcess) -> list[Any]:
    topic = f"{worker.env['WORKER_APP_ID']}.retry"
    return await read_topic(worker.env["KAFKA_BOOTSTRAP_SERVERS"], topic, timeout=30)


async def test_the_console_shows_counts_failures_search_and_replays_in_a_browser(
    chromium: Any, console_worker: WorkerProcess, fake_api: str, foreign_origin: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    await _feed(console_worker, tag)
    aborted: list[str] = []
    console_lines: list[str] = []
    context = await chromium.new_context(
        http_credentials={"username": "admin", "password": TOKEN},
        viewport={"width": 1400, "height": 1000},
    )
    try:

        async def only_loopback(route: Any) -> None:
            if urlsplit(route.request.url).hostname in LOOPBACK:
                await route.continue_()
            else:
                aborted.append(route.request.url)
                await route.abort()

        await context.route("**/*", only_loopback)
        page = await context.new_page()
        page.on("console", lambda message: console_lines.append(message.text))
        response = await page.goto(console_worker.web_url + "/")
        assert response is not None
        assert response.status == 200
        assert urlsplit(page.url).path == "/console"

        # -- the counts, once everything was processed
        expected = {
            "source:intake:in": 7,
            "source:intake:out": 4,
            "source:intake:skipped:test_delivery": 1,
            "source:intake:dead_lettered:DecodeError:400": 1,
            "source:intake:dead_lettered:UnsupportedType:400": 1,
            "destination:intake:in": 3,
            "destination:intake:dead_lettered:ValidationError:400": 1,
            "delivery:deliver:in": 3,
            "delivery:deliver:out": 2,
            "delivery:deliver:dead_lettered:DeliveryRejected:404": 1,
            "delivery:delivered:200": 2,
            "delivery:dead_lettered:404": 1,
        }

        async def counted() -> bool:
            shown = {key: await _count(page, key) for key in expected}
            return (
                shown == expected
                and await page.locator(f'tr[data-message-id="{tag}-404"]').count() == 1
            )

        await _until(page, "the counts of the mix", counted)
        for key, count in expected.items():
            assert await _count(page, key, column=1) == count, key  # the last day too
        assert await page.locator("#pipeline-source .badge").first.inner_text() == "running"
        assert await page.locator("#destination .badge").first.inner_text() == "running"
        assert "of 5/s allowed" in await page.locator("#destination").inner_text()

        # -- a dead letter's reason and payload
        row = page.locator(f'tr[data-message-id="{tag}-404"]')
        assert await row.locator(".error-class").inner_text() == "DeliveryRejected"
        assert "404" in await row.locator(".msg").inner_text()
        await row.locator("summary").click()
        payload = await row.locator("details pre").first.inner_text()
        assert orjson.loads(payload)["contact"] == f"nobody-{tag}@example.com"
        bad_json = page.locator("tr", has=page.locator(".error-class", has_text="DecodeError"))
        assert "invalid JSON" in await bad_json.first.locator(".msg").inner_text()

        # -- search by contact, then by messageId
        await page.fill('input[name="q"]', f"NOBODY-{tag}@example.com")
        await page.click('form.search button[type="submit"]')
        await page.wait_for_load_state()
        rows = page.locator("table.failures tbody tr[data-ref]")
        assert await rows.count() == 1
        assert await rows.first.get_attribute("data-message-id") == f"{tag}-404"
        assert "1 of the" in await page.locator("#search-note").inner_text()
        await page.goto(console_worker.web_url + f"/console?q=evt_{tag}_fwd&scope=topic")
        assert await rows.count() == 1
        assert "UnsupportedType" in await rows.first.inner_text()

        # -- a foreign page cannot make the browser replay
        retry_before = len(await _retry_records(console_worker))
        foreign = await context.new_page()
        await foreign.goto(foreign_origin + "/")
        await foreign.wait_for_url("**/console/replay")
        refused = await foreign.inner_text("body")
        assert "replay" in refused
        await foreign.close()

        # -- the contact now exists: replay the 404 from the page, and see it delivered
        async with httpx.AsyncClient(base_url=fake_api) as api:
            created = await api.post(
                "/v1/contact",
                json={"contact": {"Email": f"nobody-{tag}@example.com"}},
                headers={"autopilotapikey": API_KEY},
            )
            created.raise_for_status()
        await page.goto(console_worker.web_url + f"/console?q=nobody-{tag}")
        ref = await rows.first.get_attribute("data-ref")
        assert await page.locator("#replay").is_disabled()
        await page.check(f'input[name="ref"][value="{ref}"]')
        async with page.expect_response("**/console/replay") as replayed:
            await page.click("#replay")
        answer = await (await replayed.value).json()
        assert [r["ref"] for r in answer["replayed"]] == [ref]
        assert answer["replayed"][0]["target"] == "delivery/deliver"
        assert answer["skipped"] == []

        # the page reloads itself while the replay's outcome is awaited
        await page.wait_for_selector(
            f'tr[data-ref="{ref}"] .outcome [data-state="delivered"]', timeout=60_000
        )
        assert "status 200" in await page.locator(f'tr[data-ref="{ref}"] .outcome').inner_text()
        assert "delivered" in await page.locator("#replays").inner_text()

        retries = await _retry_records(console_worker)
        assert len(retries) == retry_before + 1, (
            "one letter replayed, nothing from the foreign page"
        )
        assert dict(retries[-1].headers)[REPLAY_TARGET] == b"delivery/deliver"
        assert orjson.loads(retries[-1].value)["message_id"] == f"{tag}-404"

        await page.goto(console_worker.web_url + "/console")
        shot = os.environ.get("CONSOLE_SCREENSHOT")
        if shot:
            await page.screenshot(path=str(Path(shot)), full_page=True)
        html = await page.content()
    finally:
        await context.close()

    assert aborted == [], f"the page reached beyond loopback: {aborted}"
    violations = [line for line in console_lines if "Content Security Policy" in line]
    assert violations == [], violations
    assert TOKEN not in html
    assert API_KEY not in html
