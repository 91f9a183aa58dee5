"""`python -m worker check` without a broker: the API key's probe, the ingest secrets, a Kafka
that does not answer (the checks against a secured broker are in
tests/integration/test_secured_worker.py)."""

from __future__ import annotations

import io
import subprocess
import sys

import httpx
import pytest
from pydantic import SecretStr

from tests.workerproc import free_port
from worker.backends.autopilot.responses import PROBE_PATH
from worker.settings import Settings
from worker.tools.check import Verdict, check_api_key, check_ingest, run_check


def _answering(status: int) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.raw_path.decode() == PROBE_PATH
        assert request.headers["autopilotapikey"] == "api-key-9"
        return httpx.Response(status, json={})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("status", "ok", "says"),
    [
        (404, True, "AUTOPILOT_API_KEY is accepted by"),
        (200, True, "AUTOPILOT_API_KEY is accepted by"),
        (401, False, "AUTOPILOT_API_KEY is refused by https://api.example (401)"),
        (403, False, "AUTOPILOT_API_KEY is refused by https://api.example (403)"),
        (503, False, "could not be checked: https://api.example answered 503"),
    ],
)
async def test_check_asks_the_api_about_the_key(status: int, ok: bool, says: str) -> None:
    settings = Settings(
        autopilot_api_key=SecretStr("api-key-9"), autopilot_base_url="https://api.example"
    )
    verdict = await check_api_key(settings, _answering(status))
    assert verdict.ok is ok
    assert says in verdict.what
    assert "api-key-9" not in verdict.line()


async def test_check_without_a_key() -> None:
    verdict = await check_api_key(Settings())
    assert verdict == Verdict(
        False, "AUTOPILOT_API_KEY is not set: delivery (in WORKER_FEATURES) does not run"
    )
    assert (await check_api_key(Settings(worker_features="source"))).ok


def test_check_the_ingest_secrets() -> None:
    assert [v.ok for v in check_ingest(Settings())] == [False, True]
    verdicts = check_ingest(Settings(segment_write_keys=SecretStr("wk-1, wk-2")))
    assert verdicts[0] == Verdict(True, "SEGMENT_WRITE_KEYS: 2 write key(s) set")
    assert check_ingest(Settings(worker_features="delivery"))[0].ok


async def test_check_with_kafka_down_fails_and_says_where() -> None:
    out = io.StringIO()
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        autopilot_api_key=SecretStr("api-key-9"),
        autopilot_base_url="https://api.example",
        segment_write_keys=SecretStr("wk-1"),
    )
    status = await run_check(settings, out, http_transport=_answering(404))
    lines = out.getvalue().splitlines()
    assert status == 1
    assert lines[0].startswith("FAIL  Kafka at 127.0.0.1:")
    assert "(KAFKA_BOOTSTRAP_SERVERS)" in lines[0]
    assert lines[1] == "FAIL  topics: not checked, Kafka did not answer"
    assert lines[2].startswith("ok    AUTOPILOT_API_KEY is accepted")
    assert "api-key-9" not in out.getvalue()
    assert "wk-1" not in out.getvalue()


def test_check_is_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "--help"], capture_output=True, text=True, check=False
    )
    assert "check" in result.stdout
