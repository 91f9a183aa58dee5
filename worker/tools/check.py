"""`python -m worker check`: will this deployment work? One verdict per line, `ok` or `FAIL`,
saying what was checked and which setting it rests on; exit 1 when any failed.

- Kafka: a connection to the bootstrap addresses as every client of the worker makes it (the
  TLS handshake and SASL authentication included); a refusal says why, naming the setting.
- Topics: every topic of the topic map exists (the worker creates missing ones at start, when
  its principal may; a deployment whose principal may not must create them beforehand).
- The Autopilot API key: a harmless read (`GET` of delivery's probe path, the one delivery
  itself uses while the key is refused) on `AUTOPILOT_BASE_URL`; 401/403 is a refusal, 200 or
  404 (the probe contact does not exist) an acceptance.
- The ingest secrets: write keys (and the webhook token) are set when ingest runs.

Nothing is written anywhere; no secret is printed (every line goes through the settings'
masker besides).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from worker.composition import backend_for
from worker.runtime.kafka_connection import (
    KafkaRefused,
    describe_security,
    kafka_client_config,
    probe,
)
from worker.settings import Settings, get_settings, mask, secret_values
from worker.topics import TopicNames

__all__ = ["Verdict", "check_api_key", "check_ingest", "check_kafka", "main", "run_check"]

#: How long the Kafka checks may take in all (each connection also has its own timeout).
KAFKA_CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    what: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.what}"


def _topic_settings(names: TopicNames) -> dict[str, str]:
    """Topic name -> the setting naming it (internal topics: the app id they are prefixed by)."""
    named = {
        names.email_events: "TOPIC_EMAIL_EVENTS",
        names.segment_calls: "TOPIC_SEGMENT_CALLS",
        names.segment_tracks: "TOPIC_SEGMENT_TRACKS",
        names.autopilot_requests: "TOPIC_AUTOPILOT_REQUESTS",
        names.autopilot_deliveries: "TOPIC_AUTOPILOT_DELIVERIES",
        names.dead_letters: "TOPIC_DEAD_LETTERS",
    }
    return {
        spec.name: named.get(spec.name, "internal, named after WORKER_APP_ID")
        for spec in names.all_specs()
    }


async def check_kafka(settings: Settings) -> list[Verdict]:
    """Kafka answers and takes the worker's credentials; then every topic of the map exists."""
    how = describe_security(settings)
    try:
        address = await probe(settings)
    except KafkaRefused as refused:
        return [
            Verdict(False, f"Kafka: {refused}"),
            Verdict(False, "topics: not checked, Kafka refused the connection"),
        ]
    except (KafkaError, OSError, TimeoutError, asyncio.IncompleteReadError) as error:
        reason = str(error) or type(error).__name__
        return [
            Verdict(
                False,
                f"Kafka at {settings.kafka_bootstrap_servers} does not answer ({how}): "
                f"{type(error).__name__}: {reason} (KAFKA_BOOTSTRAP_SERVERS)",
            ),
            Verdict(False, "topics: not checked, Kafka did not answer"),
        ]
    verdicts = [
        Verdict(
            True,
            f"Kafka at {address} answers and takes the worker's connection ({how}) "
            "(KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL)",
        )
    ]
    return verdicts + await _check_topics(settings)


async def _check_topics(settings: Settings) -> list[Verdict]:
    names = TopicNames.from_settings(settings)
    admin = AIOKafkaAdminClient(
        **kafka_client_config(settings), client_id=f"{settings.worker_app_id}-check"
    )
    try:
        await admin.start()
        described = await admin.describe_topics([spec.name for spec in names.all_specs()])
    except KafkaError as error:
        return [Verdict(False, f"topics: could not be described: {type(error).__name__}: {error}")]
    finally:
        await admin.close()
    partitions = {
        entry["topic"]: len(entry.get("partitions", ()))
        for entry in described
        if entry.get("error_code") == 0
    }
    verdicts = []
    for name, setting in _topic_settings(names).items():
        count = partitions.get(name)
        if count is None:
            verdicts.append(
                Verdict(
                    False,
                    f"topic {name} ({setting}) is missing: `python -m worker topics` creates it "
                    "(the worker does at start, when Kafka lets its principal)",
                )
            )
        elif count != settings.topic_partitions:
            verdicts.append(
                Verdict(
                    True,
                    f"topic {name} ({setting}) is there, with {count} partitions where "
                    f"TOPIC_PARTITIONS says {settings.topic_partitions} (co-partitioned "
                    "lookups need equal counts)",
                )
            )
        else:
            verdicts.append(Verdict(True, f"topic {name} ({setting}) is there, {count} partitions"))
    return verdicts


async def check_api_key(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> Verdict:
    """Does the configured API take the key? A GET of the backend's probe path answers it."""
    backend = backend_for(settings)
    api = backend.api()
    name, key, base = api.api_key_setting, api.api_key, api.base_url
    if key is None or not key.get_secret_value():
        if "delivery" in settings.worker_features:
            return Verdict(False, f"{name} is not set: delivery (in WORKER_FEATURES) does not run")
        return Verdict(True, f"{name}: not needed, delivery is not in WORKER_FEATURES")
    try:
        async with httpx.AsyncClient(
            base_url=base,
            headers={**backend.auth_headers(key.get_secret_value()), "Accept": "application/json"},
            timeout=api.request_timeout_s,
            transport=transport,
        ) as client:
            response = await client.get(backend.probe_path)
    except httpx.HTTPError as error:
        return Verdict(
            False, f"{base} could not be asked about {name}: {type(error).__name__}: {error}"
        )
    status = response.status_code
    if status in (401, 403):
        return Verdict(False, f"{name} is refused by {base} ({status})")
    if status in (200, 404):
        return Verdict(True, f"{name} is accepted by {base}")
    return Verdict(False, f"{name} could not be checked: {base} answered {status}")


def check_ingest(settings: Settings) -> list[Verdict]:
    """The ingest routes answer 503 without their secrets."""
    if "ingest" not in settings.worker_features:
        return [Verdict(True, "SEGMENT_WRITE_KEYS: not needed, ingest is not in WORKER_FEATURES")]
    keys = settings.segment_write_keys
    count = len([k for k in (keys.get_secret_value() if keys else "").split(",") if k.strip()])
    verdicts = [
        Verdict(True, f"SEGMENT_WRITE_KEYS: {count} write key(s) set")
        if count
        else Verdict(False, "SEGMENT_WRITE_KEYS is not set: the Segment API routes answer 503")
    ]
    token = settings.autopilot_webhook_token
    if token is not None and token.get_secret_value():
        verdicts.append(Verdict(True, "AUTOPILOT_WEBHOOK_TOKEN is set"))
    else:
        verdicts.append(
            Verdict(
                True,
                "AUTOPILOT_WEBHOOK_TOKEN is not set: the Autopilot webhook route answers 503 "
                "(fine when Autopilot does not post to this worker)",
            )
        )
    return verdicts


async def run_check(
    settings: Settings,
    out: TextIO,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Print one verdict per line to `out`; 0 when every one is ok, else 1."""
    secrets = secret_values(settings)
    failed = False

    def say(verdict: Verdict) -> None:
        nonlocal failed
        failed = failed or not verdict.ok
        out.write(mask(verdict.line(), secrets) + "\n")
        out.flush()

    try:
        async with asyncio.timeout(KAFKA_CHECK_TIMEOUT_S):
            kafka = await check_kafka(settings)
    except TimeoutError:
        kafka = [Verdict(False, f"Kafka: no verdict within {KAFKA_CHECK_TIMEOUT_S:g} s")]
    for verdict in kafka:
        say(verdict)
    say(await check_api_key(settings, http_transport))
    for verdict in check_ingest(settings):
        say(verdict)
    return 1 if failed else 0


def main() -> int:
    """`python -m worker check`."""
    return asyncio.run(run_check(get_settings(), sys.stdout))
