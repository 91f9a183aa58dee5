"""The worker's peers in the pipeline benchmark, each run as a child process like the worker.

`python -m tests.benchmarks.loops aiokafka|quix` with the topics in the environment (BENCH_*).
Both read the source and destination input topics, run the worker's own mapping functions
(`map_source`, `map_destination` with the same trigger map), write each output to its output
topic with the same key and bytes the worker writes, each failure's original bytes to a dead
letter topic, and nothing for a skip. Both are at-least-once with acks=all, as the worker is.

What they do not do, and the worker does: learn identities (an identity record to the source
for each call that ties an email to a userId), keep the learned-identity and audience tables
(changelog writes), re-key inputs not keyed by contact onto an internal topic (a second Kafka
hop; the benchmark's inputs are keyed as the worker's ingest keys them, so few are), dead-letter
headers, the dead-letter breaker, metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from tests.benchmarks.inputs import DESTINATION_BACKEND
from worker.destination.mapping import map_destination
from worker.errors import SkipMessage, WorkerError
from worker.source.mapping import map_source

__all__ = ["Out", "map_destination_record", "map_source_record"]


class Out(NamedTuple):
    """One record to produce: `dead` ones go to the dead-letter topic."""

    dead: bool
    key: bytes | None
    value: bytes


def map_source_record(key: bytes | None, raw: bytes) -> list[Out]:
    try:
        output = map_source(raw, received_at=datetime.now(UTC))
    except SkipMessage:
        return []
    except WorkerError:
        return [Out(True, key, raw)]
    return [Out(False, output.key.encode(), output.to_json())]


def map_destination_record(key: bytes | None, raw: bytes) -> list[Out]:
    try:
        descriptors = map_destination(raw, backend=DESTINATION_BACKEND).descriptors
    except SkipMessage:
        return []
    except WorkerError:
        return [Out(True, key, raw)]
    return [Out(False, d["contact"].encode(), orjson.dumps(d)) for d in descriptors]


class Topics(NamedTuple):
    source: str
    destination: str
    tracks: str
    requests: str
    dead: str

    @classmethod
    def from_env(cls) -> Topics:
        return cls(*(os.environ[f"BENCH_{name.upper()}"] for name in cls._fields))


async def run_aiokafka(bootstrap: str, group: str, topics: Topics) -> None:
    """getmany -> map -> send everything -> wait for every ack -> commit, until SIGTERM."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: PLC0415

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    from tests.benchmarks.broker import client_security  # noqa: PLC0415

    consumer = AIOKafkaConsumer(
        topics.source,
        topics.destination,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="bench-aiokafka-loop",
        **client_security(),
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_security())
    await consumer.start()
    await producer.start()
    handlers: dict[str, tuple[Callable[[bytes | None, bytes], list[Out]], str]] = {
        topics.source: (map_source_record, topics.tracks),
        topics.destination: (map_destination_record, topics.requests),
    }
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            pending = []
            for tp, records in batches.items():
                handler, output = handlers[tp.topic]
                for record in records:
                    for out in handler(record.key, record.value or b""):
                        topic = topics.dead if out.dead else output
                        pending.append(await producer.send(topic, out.value, key=out.key))
            if batches:
                await asyncio.gather(*pending)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def run_quix(bootstrap: str, group: str, topics: Topics) -> None:
    """A quixstreams Application: one StreamingDataFrame per input topic, routed by `to_topic`.
    It stops (committing its checkpoint) on SIGTERM."""
    from quixstreams import Application  # noqa: PLC0415
    from quixstreams.models.serializers import Serializer  # noqa: PLC0415

    class OutValue(Serializer):
        def __call__(self, value: Out, ctx: Any) -> bytes:
            return value.value

    with tempfile.TemporaryDirectory(prefix="bench-quix-") as state_dir:
        app = Application(
            broker_address=quix_connection(bootstrap),
            consumer_group=group,
            auto_offset_reset="earliest",
            processing_guarantee="at-least-once",
            loglevel="WARNING",
            state_dir=state_dir,
            use_changelog_topics=False,
        )

        def out_topic(name: str) -> Any:
            return app.topic(name, key_serializer="bytes", value_serializer=OutValue())

        tracks, requests, dead = (out_topic(t) for t in topics[2:])
        for name, handler, output in (
            (topics.source, map_source_record, tracks),
            (topics.destination, map_destination_record, requests),
        ):
            inbound = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
            sdf = app.dataframe(inbound)
            sdf = sdf.apply(_with_key(handler), expand=True, metadata=True)
            sdf.to_topic(_router(output, dead), key=lambda out: out.key)
        app.run()


def quix_connection(bootstrap: str) -> Any:
    """quixstreams' (librdkafka's) spelling of the worker's `KAFKA_*` security settings."""
    from quixstreams.kafka.configuration import ConnectionConfig  # noqa: PLC0415

    from worker.settings import Settings  # noqa: PLC0415

    settings = Settings()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return bootstrap
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        raise SystemExit("the quixstreams loop takes no OAUTHBEARER token provider")
    password = settings.kafka_sasl_password
    key_password = settings.kafka_ssl_key_password

    def path(value: Any) -> str | None:
        return str(value) if value is not None else None

    return ConnectionConfig(
        bootstrap_servers=bootstrap,
        security_protocol=protocol.lower(),
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=password.get_secret_value() if password else None,
        ssl_ca_location=path(settings.kafka_ssl_ca_file),
        ssl_certificate_location=path(settings.kafka_ssl_cert_file),
        ssl_key_location=path(settings.kafka_ssl_key_file),
        ssl_key_password=key_password.get_secret_value() if key_password else None,
        ssl_endpoint_identification_algorithm=(
            "https" if settings.kafka_ssl_check_hostname else "none"
        ),
    )


def _with_key(
    handler: Callable[[bytes | None, bytes], list[Out]],
) -> Callable[[bytes, Any, int, Any], list[Out]]:
    def apply(value: bytes, key: Any, timestamp: int, headers: Any) -> list[Out]:
        return handler(key, value)

    return apply


def _router(output: Any, dead: Any) -> Callable[[Out, Any, int, Any], Any]:
    def route(value: Out, key: Any, timestamp: int, headers: Any) -> Any:
        return dead if value.dead else output

    return route


def main(argv: list[str]) -> int:
    kind = argv[0]
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    group = os.environ["BENCH_GROUP"]
    topics = Topics.from_env()
    if kind == "aiokafka":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_aiokafka(bootstrap, group, topics))
        return 0
    if kind == "quix":
        run_quix(bootstrap, group, topics)
        return 0
    raise SystemExit(f"unknown loop {kind!r}: aiokafka or quix")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
