"""A second real broker for the tests of "Production Kafka: TLS and SASL": one JVM started by
``deploy/local-kafka/localkafka.py`` in secured mode, for the whole session.

Besides its PLAINTEXT listener (inter-broker, admin, readiness) it has:

* ``SASL_SSL``: TLS, no client certificate; SASL users for SCRAM-SHA-256, SCRAM-SHA-512, PLAIN;
* ``SSL``: TLS that requires a client certificate signed by the test CA.

Certificates (a self-signed CA, the broker's for ``localhost``/``127.0.0.1``, a client's) are
made with ``openssl`` in the broker's throw-away data dir. It is always a local JVM broker, even
when ``KAFKA_BOOTSTRAP_SERVERS`` or Docker provides the session's plaintext one. When it cannot
start, tests that need it fail under CI (env ``CI`` set) and are skipped otherwise.

tests/conftest.py registers this module as a plugin (``pytest_plugins``), so every test module
shares the one session fixture ``secured_kafka``; :func:`start_secured_kafka` is the same
without pytest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context

from tests.conftest import load_localkafka

__all__ = ["Credentials", "SecuredKafka", "secured_kafka", "start_secured_kafka"]

SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_512 = "SCRAM-SHA-512"
PLAIN = "PLAIN"


@dataclass(frozen=True)
class Credentials:
    """A SASL user of the secured broker."""

    username: str
    password: str


@dataclass(frozen=True)
class SecuredKafka:
    """Where the secured broker listens, the PEM files and the users clients need."""

    bootstrap: str
    """PLAINTEXT ``host:port`` (no authentication; for admin set-up in tests)."""
    sasl_ssl_bootstrap: str
    """SASL_SSL ``host:port``: SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN over TLS."""
    ssl_bootstrap: str
    """SSL ``host:port``: TLS that requires a client certificate."""
    ca_file: Path
    """The test CA's certificate (PEM), which signed the broker's and the client's."""
    client_cert_file: Path
    """A client certificate (PEM, CN ``localkafka-client``) the SSL listener accepts."""
    client_key_file: Path
    """Its private key (unencrypted PKCS#8 PEM)."""
    scram_sha_256: Credentials
    scram_sha_512: Credentials
    plain: Credentials
    data_dir: Path
    """The broker's data dir (``kafka.log`` holds its output)."""

    def credentials(self, mechanism: str) -> Credentials:
        """The user of ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` or ``PLAIN``."""
        users = {
            SCRAM_SHA_256: self.scram_sha_256,
            SCRAM_SHA_512: self.scram_sha_512,
            PLAIN: self.plain,
        }
        return users[mechanism]

    def ssl_context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        """An aiokafka TLS context trusting the test CA, with the client certificate if asked."""
        context: ssl.SSLContext
        if client_cert:
            context = create_ssl_context(
                cafile=self.ca_file, certfile=self.client_cert_file, keyfile=self.client_key_file
            )
        else:
            context = create_ssl_context(cafile=self.ca_file)
        return context

    def sasl_ssl_config(
        self,
        mechanism: str = SCRAM_SHA_512,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client (producer, consumer, admin) on the SASL_SSL
        listener as ``mechanism``'s user; ``username``/``password`` replace the right ones."""
        user = self.credentials(mechanism)
        return {
            "bootstrap_servers": self.sasl_ssl_bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": user.username if username is None else username,
            "sasl_plain_password": user.password if password is None else password,
            "ssl_context": self.ssl_context(),
        }

    def ssl_config(self, *, client_cert: bool = True) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client on the SSL listener."""
        return {
            "bootstrap_servers": self.ssl_bootstrap,
            "security_protocol": "SSL",
            "ssl_context": self.ssl_context(client_cert=client_cert),
        }


def _described(broker: Any) -> SecuredKafka:
    security = broker.security

    def user(creds: Any) -> Credentials:
        return Credentials(str(creds.username), str(creds.password))

    return SecuredKafka(
        bootstrap=str(broker.bootstrap),
        sasl_ssl_bootstrap=str(broker.sasl_ssl_bootstrap),
        ssl_bootstrap=str(broker.ssl_bootstrap),
        ca_file=Path(broker.ca_file),
        client_cert_file=Path(broker.client_cert_file),
        client_key_file=Path(broker.client_key_file),
        scram_sha_256=user(security.scram_sha_256),
        scram_sha_512=user(security.scram_sha_512),
        plain=user(security.plain),
        data_dir=Path(broker.data_dir),
    )


def start_secured_kafka(finalizers: list[Callable[[], None]]) -> SecuredKafka:
    """Start a secured broker on free loopback ports in a temporary data dir.

    Appends what undoes it (stop the JVM, then remove the data dir) to ``finalizers``; run them
    in order. Call from the main thread: the JVM is tied to the thread that starts it.
    """
    lk = load_localkafka()
    data_dir = Path(tempfile.mkdtemp(prefix="localkafka-secured-"))
    finalizers.append(lambda: shutil.rmtree(data_dir, ignore_errors=True))
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between choosing it and binding it
        broker = lk.LocalKafka(
            port=lk.free_port(),
            controller_port=lk.free_port(),
            data_dir=data_dir,
            die_with_parent=True,
            security=lk.KafkaSecurity.on_free_ports(),
        )
        try:
            broker.start()
        except lk.LocalKafkaError as exc:
            last = exc
            broker.stop()
            if "already in use" not in str(exc):
                raise
            continue
        finalizers.insert(0, broker.stop)  # stop before the data dir goes
        return _described(broker)
    raise RuntimeError(f"no free ports for the secured broker: {last}")


@pytest.fixture(scope="session")
def secured_kafka() -> Iterator[SecuredKafka]:
    """The session's secured broker (see the module docstring); fails under CI if it cannot
    start, skips otherwise."""
    finalizers: list[Callable[[], None]] = []
    try:
        try:
            broker = start_secured_kafka(finalizers)
        except Exception as exc:
            message = f"no secured Kafka broker: {type(exc).__name__}: {exc}"
            if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        yield broker
    finally:
        for finalize in finalizers:
            with contextlib.suppress(Exception):
                finalize()
