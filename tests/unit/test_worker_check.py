"""`python -m worker check` without a broker: the API key's probe, the ingest secrets, a Kafka
that does not answer (the checks against a secured broker are in
tests/integration/test_secured_worker.py)."""

from __future__ import annotations

import io
import subprocess
import sys

import httpx
import orjson
import pytest
from pydantic import SecretStr

from tests.workerproc import free_port
from worker.backends.autopilot.responses import PROBE_PATH
from worker.backends.ortto.responses import PROBE_BODY as ORTTO_PROBE_BODY
from worker.backends.ortto.responses import PROBE_PATH as ORTTO_PROBE_PATH
from worker.settings import Settings
from worker.tools.check import Verdict, check_api_key, check_api_keys, check_ingest, run_check


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


async def test_check_asks_each_api_the_worker_serves_about_its_key() -> None:
    """Both keys: Autopilot's GET probe and Ortto's POST /v1/person/get, each on its own host
    with its own header; Ortto refusing its key fails Ortto's line alone."""
    asked: list[tuple[str, str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append((request.method, request.url.host, request.url.raw_path.decode()))
        if request.url.host == "ortto.example":
            assert request.method == "POST"
            assert request.url.raw_path.decode() == ORTTO_PROBE_PATH
            assert orjson.loads(request.content) == dict(ORTTO_PROBE_BODY)
            refused = request.headers["x-api-key"] != "ortto-key-1"
            return httpx.Response(401 if refused else 200, json={})
        assert request.headers["autopilotapikey"] == "api-key-9"
        return httpx.Response(404, json={})

    settings = Settings(
        autopilot_api_key=SecretStr("api-key-9"),
        autopilot_base_url="https://api.example",
        ortto_api_key=SecretStr("ortto-key-1"),
        ortto_base_url="https://ortto.example",
    )
    verdicts = await check_api_keys(settings, httpx.MockTransport(handler))
    assert [v.line() for v in verdicts] == [
        "ok    AUTOPILOT_API_KEY is accepted by https://api.example",
        "ok    ORTTO_API_KEY is accepted by https://ortto.example",
    ]
    assert asked == [
        ("GET", "api.example", PROBE_PATH),
        ("POST", "ortto.example", ORTTO_PROBE_PATH),
    ]
    wrong = settings.model_copy(update={"ortto_api_key": SecretStr("revoked")})
    verdicts = await check_api_keys(wrong, httpx.MockTransport(handler))
    assert [v.ok for v in verdicts] == [True, False]
    assert verdicts[1].what == "ORTTO_API_KEY is refused by https://ortto.example (401)"
    # Ortto alone: one line, Ortto's
    alone = await check_api_keys(
        Settings(ortto_api_key=SecretStr("ortto-key-1"), ortto_base_url="https://ortto.example"),
        httpx.MockTransport(handler),
    )
    assert [v.what for v in alone] == ["ORTTO_API_KEY is accepted by https://ortto.example"]
