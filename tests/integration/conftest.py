"""Shared fixtures of the integration tests: a running worker, the stand-in Autopilot API,
Debian's headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.prerequisites import unavailable
from tests.workerproc import WorkerProcess, running_worker
from worker.tools.fake_autopilot import start_fake_autopilot


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The real worker (`python -m worker run`), ready to consume, stopped after the module."""
    with running_worker(kafka_bootstrap, tmp_path_factory.mktemp("worker")) as process:
        yield process


@pytest.fixture(scope="module")
def delivery_worker(
    kafka_bootstrap: str,
    fake_api: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A worker that delivers to `fake_api` with the module's `API_KEY` and `TRIGGER`."""
    with running_worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("worker"),
        AUTOPILOT_API_KEY=getattr(request.module, "API_KEY", "dev-key"),
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID=getattr(request.module, "TRIGGER", "0001"),
        AUTOPILOT_AUTH_PROBE_INTERVAL_S="0.5",
        AUTOPILOT_BULK_LINGER_MS="300",
    ) as process:
        yield process


@pytest.fixture(scope="module")
async def fake_api(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The stand-in Autopilot API on loopback, accepting the module's `API_KEY`; its base URL."""
    api_key = getattr(request.module, "API_KEY", "dev-key")
    runner, base_url = await start_fake_autopilot(api_keys=[api_key], rate_limit=5.0)
    try:
        yield base_url
    finally:
        await runner.cleanup()


#: Debian's chromium: the browser tests never download one (`playwright install` is not run).
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    """Debian's headless Chromium under playwright (a `playwright.async_api.Browser`)."""
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does)")
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415
    except ImportError:
        unavailable("the python package playwright is missing: `make install`")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
