"""localkafka.py's secured mode: SASL_SSL and SSL listeners work, and refuse what they should.

The broker is the session's secured one (tests/integration/secured_kafka.py), a JVM of its own
beside the session's plaintext broker. Topics are created over its PLAINTEXT listener.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from tests.integration.secured_kafka import PLAIN, SCRAM_SHA_256, SCRAM_SHA_512, SecuredKafka
from tests.kafkautil import committed_offsets, create_topics

pytestmark = pytest.mark.integration

REFUSAL_TIMEOUT_S = 30.0


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


async def _round_trip(config: dict[str, Any], bootstrap: str, topic: str, group: str) -> None:
    """Produce one record with ``config``, consume it back in ``group`` and commit it."""
    await create_topics(bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(**config, acks="all", client_id="tests-secured-producer")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, value=b"secret payload", key=b"k", headers=[("h", b"v")]
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        **config,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id="tests-secured-consumer",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            record = await consumer.getone()
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (record.key, record.value, list(record.headers)) == (
        b"k",
        b"secret payload",
        [("h", b"v")],
    )
    assert record.offset == sent.offset
    # The group's commit went through the secured listener; read it back over PLAINTEXT.
    assert await committed_offsets(bootstrap, group, topic) == {0: sent.offset + 1}


async def _refused(config: dict[str, Any]) -> None:
    """A producer with ``config`` cannot start: aiokafka finds no broker it may talk to."""
    producer = AIOKafkaProducer(**config, request_timeout_ms=5000, client_id="tests-refused")
    try:
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            async with asyncio.timeout(REFUSAL_TIMEOUT_S):
                await producer.start()
    finally:
        await producer.stop()


@pytest.mark.parametrize("mechanism", [SCRAM_SHA_512, SCRAM_SHA_256, PLAIN])
async def test_sasl_ssl_round_trip(
    secured_kafka: SecuredKafka, unique: str, mechanism: str
) -> None:
    name = mechanism.lower().replace("-", "")
    await _round_trip(
        secured_kafka.sasl_ssl_config(mechanism),
        secured_kafka.bootstrap,
        topic=f"test-sasl-{name}-{unique}",
        group=f"test-sasl-{name}-{unique}",
    )


async def test_admin_over_sasl_ssl_sees_the_sasl_ssl_listener(
    secured_kafka: SecuredKafka,
) -> None:
    admin = AIOKafkaAdminClient(
        **secured_kafka.sasl_ssl_config(SCRAM_SHA_512), client_id="tests-secured-admin"
    )
    await admin.start()
    try:
        cluster: dict[str, Any] = await admin.describe_cluster()
    finally:
        await admin.close()
    # Metadata answers with the advertised address of the listener the client came in on.
    host, port = _host_port(secured_kafka.sasl_ssl_bootstrap)
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [(host, port)]


@pytest.mark.parametrize(
    ("mechanism", "case"),
    [
        (SCRAM_SHA_512, "wrong-password"),
        (SCRAM_SHA_256, "wrong-password"),
        (PLAIN, "wrong-password"),
        (SCRAM_SHA_512, "unknown-user"),
        # SCRAM users exist per mechanism: the SHA-256 user is unknown to SCRAM-SHA-512.
        (SCRAM_SHA_512, "scram256-user"),
    ],
)
async def test_sasl_ssl_refuses_bad_credentials(
    secured_kafka: SecuredKafka, mechanism: str, case: str
) -> None:
    right = secured_kafka.credentials(mechanism)
    username, password = {
        "wrong-password": (right.username, "wrong-password"),
        "unknown-user": ("nobody", right.password),
        "scram256-user": (
            secured_kafka.scram_sha_256.username,
            secured_kafka.scram_sha_256.password,
        ),
    }[case]
    config = secured_kafka.sasl_ssl_config(mechanism, username=username, password=password)
    host, port = _host_port(secured_kafka.sasl_ssl_bootstrap)

    # The broker's own answer, from a bare connection: authentication failed.
    with pytest.raises(SaslAuthenticationFailed):
        async with asyncio.timeout(REFUSAL_TIMEOUT_S):
            await create_conn(
                host,
                port,
                client_id="tests-refused",
                ssl_context=config["ssl_context"],
                security_protocol="SASL_SSL",
                sasl_mechanism=mechanism,
                sasl_plain_username=username,
                sasl_plain_password=password,
            )
    # And what a producer sees.
    await _refused(config)


async def test_ssl_with_client_certificate_round_trip(
    secured_kafka: SecuredKafka, unique: str
) -> None:
    await _round_trip(
        secured_kafka.ssl_config(client_cert=True),
        secured_kafka.bootstrap,
        topic=f"test-mtls-{unique}",
        group=f"test-mtls-{unique}",
    )


async def test_ssl_without_client_certificate_is_refused(secured_kafka: SecuredKafka) -> None:
    await _refused(secured_kafka.ssl_config(client_cert=False))


def test_ssl_listener_demands_a_certificate_in_the_handshake(
    secured_kafka: SecuredKafka,
) -> None:
    """Without a certificate the broker ends the TLS session with a certificate alert."""
    host, port = _host_port(secured_kafka.ssl_bootstrap)
    context = secured_kafka.ssl_context(client_cert=False)

    def handshake_and_read(raw: socket.socket) -> None:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            # TLS 1.3: the client's side of the handshake completes; the alert comes on read.
            tls.recv(1)

    with (
        socket.create_connection((host, port), timeout=10) as raw,
        # Java answers bad_certificate (RFC 8446 would have certificate_required).
        pytest.raises(ssl.SSLError, match=r"BAD_CERTIFICATE|CERTIFICATE_REQUIRED"),
    ):
        handshake_and_read(raw)


@pytest.mark.parametrize("listener", ["sasl_ssl", "ssl"])
async def test_plaintext_client_cannot_use_a_tls_port(
    secured_kafka: SecuredKafka, listener: str
) -> None:
    bootstrap = getattr(secured_kafka, f"{listener}_bootstrap")
    await _refused({"bootstrap_servers": bootstrap})


async def test_client_not_trusting_the_ca_is_refused(secured_kafka: SecuredKafka) -> None:
    config = secured_kafka.sasl_ssl_config(SCRAM_SHA_512)
    config["ssl_context"] = ssl.create_default_context()  # system CAs only
    await _refused(config)


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_broker_certificate_is_valid_for(secured_kafka: SecuredKafka, name: str) -> None:
    """Hostname verification passes for both SAN entries (clients may use either name)."""
    host, port = _host_port(secured_kafka.sasl_ssl_bootstrap)
    context = secured_kafka.ssl_context()
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_broker_certificate_is_not_valid_for_other_names(secured_kafka: SecuredKafka) -> None:
    host, port = _host_port(secured_kafka.sasl_ssl_bootstrap)
    context = secured_kafka.ssl_context()
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="kafka.example.com")
