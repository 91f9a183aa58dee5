"""Shared fixtures: one real Kafka broker and one real PostgreSQL server for the test session.

The broker is chosen once, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (a broker someone else runs; nothing is started).
2. testcontainers' ``KafkaContainer().with_kraft()`` when a Docker engine answers.
3. ``deploy/local-kafka/localkafka.py``: Apache Kafka from Maven Central jars in a plain JVM on
   free loopback ports, with a temporary data dir removed at the end of the session.

``KAFKA_TEST_BROKER=docker`` or ``=local`` restricts the choice to that one (``auto`` is the
default). When no broker can be had, tests that need one fail under CI (env ``CI`` set) and are
skipped with the reasons otherwise.

The PostgreSQL server (the warehouse tests) is ``POSTGRES_TEST_URL`` if set, else a server of
Debian's ``postgresql`` package started by ``tests/localpostgres.py`` (initdb on a temporary
directory, a free port), removed at the end of the session; without the package the tests that
need it fail under CI and are skipped otherwise, as for the broker.

A second broker, ``secured_kafka`` (TLS and SASL listeners, always a local JVM, started only by
the tests that ask for it), comes from ``tests/integration/secured_kafka.py``, registered here
as a plugin so that every test module shares the one session fixture.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.kafkautil import LocalBroker
from tests.localpostgres import LocalPostgres, LocalPostgresError, free_port
from tests.prerequisites import unavailable

# The session's secured broker fixture (`secured_kafka`); a plugin is imported once this module
# is, so its `from tests.conftest import load_localkafka` finds it.
pytest_plugins = ["tests.integration.secured_kafka"]

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALKAFKA_PATH = REPO_ROOT / "deploy" / "local-kafka" / "localkafka.py"
DOCKER_START_TIMEOUT_S = 180


@dataclass
class KafkaBroker:
    """The session's broker: where it is, where it came from, and our handle if we run it."""

    bootstrap: str
    source: str
    local: LocalBroker | None = None
    notes: list[str] = field(default_factory=list)


def load_localkafka() -> ModuleType:
    """Import deploy/local-kafka/localkafka.py by path (its folder is no package)."""
    existing = sys.modules.get("localkafka")
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location("localkafka", LOCALKAFKA_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {LOCALKAFKA_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


def _docker_kafka(finalizers: list[Callable[[], None]]) -> str:
    """Start a KRaft Kafka container; raise if Docker or the image is not available."""
    import docker  # noqa: PLC0415 - only needed on this path

    docker.from_env(timeout=5).ping()  # DockerException at once when no engine answers
    try:
        from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415
    except ImportError:  # older testcontainers layout
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415

    container: Any = KafkaContainer().with_kraft()
    container.start(timeout=DOCKER_START_TIMEOUT_S)
    finalizers.append(container.stop)
    bootstrap: str = container.get_bootstrap_server()
    return bootstrap


def _local_kafka(finalizers: list[Callable[[], None]]) -> LocalBroker:
    """Start localkafka.py's broker on free ports with a throw-away data dir."""
    lk = load_localkafka()
    data_dir = Path(tempfile.mkdtemp(prefix="localkafka-test-"))
    finalizers.append(lambda: shutil.rmtree(data_dir, ignore_errors=True))
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between choosing it and binding it
        broker: LocalBroker = lk.LocalKafka(
            port=lk.free_port(),
            controller_port=lk.free_port(),
            data_dir=data_dir,
            # SIGTERM the JVM if pytest itself is killed; tied to this (the main) thread.
            die_with_parent=True,
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
        return broker
    raise RuntimeError(f"no free ports for the local broker: {last}")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The session's real Kafka broker, chosen as the module docstring says."""
    finalizers: list[Callable[[], None]] = []
    reasons: list[str] = []
    choice = os.environ.get("KAFKA_TEST_BROKER", "auto").strip().lower() or "auto"
    broker: KafkaBroker | None = None

    env_bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env_bootstrap:
        broker = KafkaBroker(env_bootstrap, "env KAFKA_BOOTSTRAP_SERVERS")
    if broker is None and choice in ("auto", "docker"):
        try:
            broker = KafkaBroker(_docker_kafka(finalizers), "testcontainers")
        except Exception as exc:
            reasons.append(f"testcontainers: {type(exc).__name__}: {exc}".splitlines()[0])
    if broker is None and choice in ("auto", "local"):
        try:
            local = _local_kafka(finalizers)
            broker = KafkaBroker(local.bootstrap, f"localkafka ({local.data_dir})", local)
        except Exception as exc:
            reasons.append(f"localkafka: {type(exc).__name__}: {exc}")
    try:
        if broker is None:
            unavailable("no Kafka broker for integration tests: " + "; ".join(reasons or [choice]))
        broker.notes = reasons
        yield broker
    finally:
        for finalize in finalizers:
            with contextlib.suppress(Exception):
                finalize()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port`` of the session's real broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def local_kafka(kafka_broker: KafkaBroker) -> LocalBroker:
    """The broker's handle when this session started it itself (restart tests need one)."""
    if kafka_broker.local is None:
        pytest.skip(f"the broker is not ours to restart (it comes from {kafka_broker.source})")
    return kafka_broker.local


@pytest.fixture
def unique() -> str:
    """A short random suffix for topic and group names (the broker is shared by the session)."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A URL (password included) of the session's real PostgreSQL server, as the module
    docstring says; each test keeps to schemas of its own (`unique`)."""
    env_url = os.environ.get("POSTGRES_TEST_URL", "").strip()
    if env_url:
        yield env_url
        return
    server: LocalPostgres | None = None
    try:
        server = LocalPostgres(Path(tempfile.mkdtemp(prefix="localpostgres-test-")), free_port())
        server.start()
    except LocalPostgresError as exc:
        if server is not None:
            server.remove()
        unavailable(f"no PostgreSQL server for the warehouse tests: {exc}")
    try:
        yield server.url
    finally:
        server.remove()
