"""Shared fixtures of the integration tests: a running worker, the stand-in Autopilot API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

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
