"""The worker against a broker that takes it only over TLS (issue #19), end to end.

The session's secured broker (tests/integration/secured_kafka.py) has a SASL_SSL listener
(SCRAM users) and an SSL listener that requires a client certificate. One real worker
(`python -m worker run`) per way in, for the module: SASL_SSL with SCRAM-SHA-512, and SSL with
the client certificate. Every connection of the worker goes through that listener: the topic
admin creates its topics there, the faust app's consumer, producer and tables, the ingest
producer and the readiness probe use it, as do `python -m worker check` and `dlq list`. The
test's own clients use the same listener.

Then what a misconfiguration gives: a wrong password, a CA that does not trust the broker, a
client certificate the broker does not trust, a mechanism the broker does not offer, TLS
settings on a plaintext port: one line naming the setting, exit 70, never the password.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import load_localkafka
from tests.integration.secured_kafka import SCRAM_SHA_512, SecuredKafka
from tests.integration.standin import state
from tests.kafkautil import consume_all, produce
from tests.workerproc import READY, WorkerProcess, worker_env
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.settings import Settings
from worker.topics import TopicNames

pytestmark = pytest.mark.integration

API_KEY = "secured-api-key-3b7d"
WRITE_KEY = "secured-write-key-51ae"
TRIGGER = "0001"
WRONG_PASSWORD = "not-the-password-8c2f"
EXIT_CONFIG = 70
WAYS_IN = ("sasl_ssl_scram_sha_512", "ssl_client_certificate")


def security_settings(broker: SecuredKafka, way_in: str) -> dict[str, str]:
    """The worker's settings for one way into the secured broker."""
    if way_in == "sasl_ssl_scram_sha_512":
        user = broker.credentials(SCRAM_SHA_512)
        return {
            "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_ssl_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM_SHA_512,
            "KAFKA_SASL_USERNAME": user.username,
            "KAFKA_SASL_PASSWORD": user.password,
            "KAFKA_SSL_CA_FILE": str(broker.ca_file),
        }
    assert way_in == "ssl_client_certificate"
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.ssl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_FILE": str(broker.ca_file),
        "KAFKA_SSL_CERT_FILE": str(broker.client_cert_file),
        "KAFKA_SSL_KEY_FILE": str(broker.client_key_file),
    }


def client_security(broker: SecuredKafka, way_in: str) -> dict[str, Any]:
    """The test's own aiokafka clients on the same listener (built by the fixture, not by the
    worker's code)."""
    if way_in == "sasl_ssl_scram_sha_512":
        config = broker.sasl_ssl_config(SCRAM_SHA_512)
    else:
        config = broker.ssl_config(client_cert=True)
    config.pop("bootstrap_servers")
    return config


@dataclass
class SecuredWorker:
    way_in: str
    process: WorkerProcess
    security: dict[str, Any]
    fake_api: str

    @property
    def env(self) -> dict[str, str]:
        return self.process.env

    @property
    def bootstrap(self) -> str:
        return self.env["KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def password(self) -> str | None:
        return self.env.get("KAFKA_SASL_PASSWORD")


@pytest.fixture(scope="module", params=WAYS_IN)
def secured_worker(
    request: pytest.FixtureRequest,
    secured_kafka: SecuredKafka,
    fake_api: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecuredWorker]:
    """A worker running every feature, connected to the secured broker one way in."""
    way_in: str = request.param
    env = worker_env(
        "unused",
        uuid.uuid4().hex[:10],
        **security_settings(secured_kafka, way_in),
        AUTOPILOT_API_KEY=API_KEY,
        AUTOPILOT_BASE_URL=fake_api,
        AUTOPILOT_TRIGGER_ID=TRIGGER,
        AUTOPILOT_BULK_LINGER_MS="200",
        SEGMENT_WRITE_KEYS=WRITE_KEY,
    )
    process = WorkerProcess(env, tmp_path_factory.mktemp(way_in) / "worker.log").start()
    try:
        process.wait_for_log(READY, timeout=180)
        yield SecuredWorker(way_in, process, client_security(secured_kafka, way_in), fake_api)
    finally:
        process.stop()
    log = process.log_text()
    assert API_KEY not in log
    assert WRITE_KEY not in log
    password = env.get("KAFKA_SASL_PASSWORD")
    assert password is None or password not in log, "the SASL password reached the log"


async def run_command(env: dict[str, str], *args: str, wait_s: float = 90) -> tuple[int, str]:
    """`python -m worker <args>` with `env` (and nothing else of ours); (exit status, output).
    Run without blocking the event loop, which serves the stand-in API."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOPIC_", "AUTOPILOT_"))}
    clean = {k: v for k, v in clean.items() if not k.startswith(("KAFKA_", "SEGMENT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(wait_s):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


def _email_event(event_id: str, email: str, **extra: object) -> bytes:
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


# --- end to end over each way in -------------------------------------------------------------


async def test_an_email_event_in_gives_a_track_out(secured_worker: SecuredWorker) -> None:
    env = secured_worker.env
    event_id = f"evt_{uuid.uuid4().hex[:8]}"
    email = f"{event_id}@example.com"
    await produce(
        secured_worker.bootstrap,
        env["TOPIC_EMAIL_EVENTS"],
        [(email.encode(), _email_event(event_id, email), [])],
        security=secured_worker.security,
    )
    tracks = await consume_all(
        secured_worker.bootstrap,
        env["TOPIC_SEGMENT_TRACKS"],
        1,
        timeout=60,
        security=secured_worker.security,
    )
    messages = [orjson.loads(r.value) for r in tracks]
    assert [m["messageId"] for m in messages] == [f"autopilot-{event_id}"]
    assert messages[0]["event"] == "Email Opened"
    assert messages[0]["context"]["traits"]["email"] == email


async def test_an_identify_through_ingest_is_delivered(secured_worker: SecuredWorker) -> None:
    """HTTP in (the ingest producer), the destination's tables, delivery to the stand-in."""
    email = f"secured-{uuid.uuid4().hex[:8]}@example.com"
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    async with httpx.AsyncClient(base_url=secured_worker.process.web_url, timeout=30) as client:
        reply = await client.post(
            "/v1/identify",
            json={"userId": f"u-{email}", "traits": {"email": email, "firstName": "Tess"}},
            headers={"Authorization": f"Basic {basic}"},
        )
    assert reply.status_code == 200, reply.text
    deadline = time.monotonic() + 60
    contacts: dict[str, Any] = {}
    while time.monotonic() < deadline:
        contacts = (await state(secured_worker.fake_api))["contacts"]
        if email in contacts:
            break
        await asyncio.sleep(0.5)
    assert contacts.get(email, {}).get("FirstName") == "Tess"


async def test_readiness_probes_the_broker_over_the_secured_listener(
    secured_worker: SecuredWorker,
) -> None:
    async with httpx.AsyncClient(base_url=secured_worker.process.web_url, timeout=10) as client:
        deadline = time.monotonic() + 30
        while True:
            reply = await client.get("/readyz", params={"check": "broker"})
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    assert reply.status_code == 200, reply.text
    assert "metadata answered" in reply.json()["checks"]["broker"]["detail"]


async def test_worker_check_passes(secured_worker: SecuredWorker) -> None:
    status, output = await run_command(secured_worker.env, "check")
    lines = output.splitlines()
    assert status == 0, output
    assert lines, output
    assert all(line.startswith("ok  ") for line in lines), output
    security = secured_worker.env["KAFKA_SECURITY_PROTOCOL"]
    assert f"answers and takes the worker's connection ({security}" in lines[0]
    assert any("AUTOPILOT_API_KEY is accepted" in line for line in lines)
    every_topic = TopicNames.from_settings(Settings.model_validate({"worker_app_id": "w"}))
    assert sum("topic " in line for line in lines) == len(every_topic.all_specs())
    for secret in (API_KEY, WRITE_KEY, secured_worker.password):
        assert secret is None or secret not in output


async def test_dlq_reads_over_the_secured_listener_and_no_letter_holds_the_password(
    secured_worker: SecuredWorker,
) -> None:
    """A dead letter whose reason quotes the password (an event type that is the password)
    has it masked; `dlq list` reads the letters over the secured listener."""
    env = secured_worker.env
    secret = secured_worker.password or "no-password-here"
    bad = _email_event(f"evt_bad_{uuid.uuid4().hex[:6]}", "x@example.com", type=secret)
    await produce(
        secured_worker.bootstrap,
        env["TOPIC_EMAIL_EVENTS"],
        [(b"bad", bad, [])],
        security=secured_worker.security,
    )
    letters = await consume_all(
        secured_worker.bootstrap,
        env["TOPIC_DEAD_LETTERS"],
        1,
        timeout=60,
        security=secured_worker.security,
    )
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert headers[H.CLASS_NAME] == b"UnsupportedType"
    if secured_worker.password:
        assert secured_worker.password.encode() not in headers[H.MESSAGE]
        assert b"**********" in headers[H.MESSAGE]
    status, output = await run_command(env, "dlq", "list")
    assert status == 0, output
    assert "UnsupportedType" in output
    assert "1 of 1 dead letters" in output
    if secured_worker.password:
        assert secured_worker.password not in output


# --- refusals: one line naming the setting, exit 70 ------------------------------------------


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("command", [("run",), ("dlq", "list"), ("topics",)])
async def test_a_wrong_password_is_one_line_and_exit_70(
    secured_kafka: SecuredKafka, unique: str, command: tuple[str, ...]
) -> None:
    settings = security_settings(secured_kafka, "sasl_ssl_scram_sha_512")
    right = settings["KAFKA_SASL_PASSWORD"]
    env = worker_env("unused", unique, **{**settings, "KAFKA_SASL_PASSWORD": WRONG_PASSWORD})
    started = time.monotonic()
    status, output = await run_command(env, *command)
    assert status == EXIT_CONFIG, output
    assert time.monotonic() - started < 30, "a refusal is not waited for"
    line = _one_line(output)
    assert "refused the SASL credentials" in line
    assert "KAFKA_SASL_USERNAME" in line
    assert "KAFKA_SASL_PASSWORD" in line
    assert "SCRAM-SHA-512" in line
    assert WRONG_PASSWORD not in output
    assert right not in output


async def test_worker_check_names_a_wrong_password(
    secured_kafka: SecuredKafka, unique: str
) -> None:
    settings = security_settings(secured_kafka, "sasl_ssl_scram_sha_512")
    env = worker_env("unused", unique, **{**settings, "KAFKA_SASL_PASSWORD": WRONG_PASSWORD})
    status, output = await run_command(env, "check")
    assert status == 1, output
    first = output.splitlines()[0]
    assert first.startswith("FAIL")
    assert "refused the SASL credentials" in first
    assert WRONG_PASSWORD not in output


@pytest.mark.parametrize("way_in", WAYS_IN)
async def test_a_ca_that_does_not_trust_the_broker_is_one_line_and_exit_70(
    secured_kafka: SecuredKafka, unique: str, tmp_path: Path, way_in: str
) -> None:
    other = load_localkafka().make_tls_files(tmp_path / "other-ca")
    settings = {**security_settings(secured_kafka, way_in), "KAFKA_SSL_CA_FILE": str(other.ca_cert)}
    status, output = await run_command(worker_env("unused", unique, **settings), "run")
    assert status == EXIT_CONFIG, output
    line = _one_line(output)
    assert "TLS handshake with Kafka at" in line
    assert "certificate" in line
    assert "(KAFKA_SSL_CA_FILE)" in line
    password = settings.get("KAFKA_SASL_PASSWORD")
    assert password is None or password not in output


async def test_a_client_certificate_the_broker_does_not_trust_is_one_line_and_exit_70(
    secured_kafka: SecuredKafka, unique: str, tmp_path: Path
) -> None:
    other = load_localkafka().make_tls_files(tmp_path / "other-ca")
    settings = {
        **security_settings(secured_kafka, "ssl_client_certificate"),
        "KAFKA_SSL_CERT_FILE": str(other.client_cert),
        "KAFKA_SSL_KEY_FILE": str(other.client_key),
    }
    status, output = await run_command(worker_env("unused", unique, **settings), "run")
    assert status == EXIT_CONFIG, output
    line = _one_line(output)
    assert "refused the client certificate" in line
    assert "KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE" in line


async def test_no_client_certificate_for_a_listener_that_requires_one(
    secured_kafka: SecuredKafka, unique: str
) -> None:
    settings = security_settings(secured_kafka, "ssl_client_certificate")
    del settings["KAFKA_SSL_CERT_FILE"], settings["KAFKA_SSL_KEY_FILE"]
    status, output = await run_command(worker_env("unused", unique, **settings), "run")
    assert status == EXIT_CONFIG, output
    line = _one_line(output)
    assert "requires a client certificate" in line
    assert "KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE are unset" in line


async def test_a_mechanism_the_broker_does_not_offer_is_named_with_those_it_offers(
    secured_kafka: SecuredKafka, unique: str, tmp_path: Path
) -> None:
    (tmp_path / "issue19_tokens.py").write_text(
        "from aiokafka.abc import AbstractTokenProvider\n\n\n"
        "class Tokens(AbstractTokenProvider):\n"
        "    async def token(self):\n"
        "        return 'not-a-token'\n"
    )
    settings = security_settings(secured_kafka, "sasl_ssl_scram_sha_512")
    del settings["KAFKA_SASL_USERNAME"], settings["KAFKA_SASL_PASSWORD"]
    settings |= {
        "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": "issue19_tokens:Tokens",
        "PYTHONPATH": str(tmp_path),
    }
    status, output = await run_command(worker_env("unused", unique, **settings), "run")
    assert status == EXIT_CONFIG, output
    line = _one_line(output)
    assert "does not offer the SASL mechanism OAUTHBEARER (KAFKA_SASL_MECHANISM)" in line
    assert "it offers" in line
    assert "SCRAM-SHA-512" in line.split("it offers", 1)[1]


async def test_plaintext_settings_on_a_tls_port_are_one_line_and_exit_70(
    secured_kafka: SecuredKafka, unique: str
) -> None:
    env = worker_env(secured_kafka.sasl_ssl_bootstrap, unique)
    status, output = await run_command(env, "run")
    assert status == EXIT_CONFIG, output
    line = _one_line(output)
    assert "speaks TLS, and KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in line
