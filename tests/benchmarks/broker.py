"""The benchmarks' broker, bulk preloading, and watching output topics fill up.

Every client of the harness connects as the worker does: `client_security()` is the worker's own
`kafka_client_config` read from the `KAFKA_*` environment, so a secured broker named by
`KAFKA_BOOTSTRAP_SERVERS` (with `KAFKA_SECURITY_PROTOCOL` and the rest) is benchmarked over TLS
and SASL like the worker, the plain aiokafka loop and quixstreams run on it. `BENCH_SECURED=1`
starts the local broker in its secured mode and runs everything over its SASL_SSL listener
(SCRAM-SHA-512): what TLS and SASL cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from tests.benchmarks.inputs import Input
from worker.runtime.kafka_connection import describe_security, kafka_client_config
from worker.settings import Settings

__all__ = [
    "Broker",
    "OffsetWatcher",
    "bench_broker",
    "client_security",
    "preload",
    "proc_status",
    "warm_group_coordinator",
]

BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    source: str


def client_security() -> dict[str, Any]:
    """The connection arguments, the address aside, of every client of the harness: the
    worker's (`kafka_client_config`) from the `KAFKA_*` environment."""
    config = kafka_client_config(Settings())
    config.pop("bootstrap_servers")
    return config


@contextlib.contextmanager
def _secured_environment(broker: Any) -> Iterator[None]:
    """The `KAFKA_*` settings of the secured local broker's SASL_SSL listener, for this process
    and the processes it starts (the worker, the loops), restored afterwards."""
    user = broker.security.scram_sha_512
    settings = {
        "KAFKA_BOOTSTRAP_SERVERS": str(broker.sasl_ssl_bootstrap),
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": str(user.username),
        "KAFKA_SASL_PASSWORD": str(user.password),
        "KAFKA_SSL_CA_FILE": str(broker.ca_file),
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def bench_broker() -> Iterator[Broker]:
    """KAFKA_BOOTSTRAP_SERVERS when set (connected to with the `KAFKA_*` security settings),
    else a local JVM broker on free ports in a temp dir; with BENCH_SECURED=1, in its secured
    mode, used over its SASL_SSL listener.

    Call from the main thread: the local broker is tied to it (SIGTERMed if this process dies).
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        yield Broker(bootstrap, f"KAFKA_BOOTSTRAP_SERVERS ({describe_security(Settings())})")
        return
    if os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper() != "PLAINTEXT":
        raise SystemExit(
            "KAFKA_SECURITY_PROTOCOL is set without KAFKA_BOOTSTRAP_SERVERS: name the secured "
            "broker, or use BENCH_SECURED=1 for a local one"
        )
    from tests.conftest import load_localkafka  # noqa: PLC0415  (imports pytest)

    lk = load_localkafka()
    secured = os.environ.get("BENCH_SECURED", "").strip() not in ("", "0")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    broker: Any = None
    try:
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            broker = lk.LocalKafka(
                port=lk.free_port(),
                controller_port=lk.free_port(),
                data_dir=data_dir,
                die_with_parent=True,
                security=lk.KafkaSecurity.on_free_ports() if secured else None,
            )
            try:
                broker.start()
                break
            except lk.LocalKafkaError as exc:
                broker.stop()
                if "already in use" not in str(exc) or attempt == 2:
                    raise
        source = f"local JVM broker (Kafka jars in {broker.libs_dir})"
        if not secured:
            yield Broker(str(broker.bootstrap), source)
            return
        with _secured_environment(broker):
            yield Broker(
                str(broker.sasl_ssl_bootstrap), f"{source}, over SASL_SSL with SCRAM-SHA-512"
            )
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def preload(
    bootstrap: str, topic: str, inputs: Iterable[Input], partitions: int = 3
) -> float:
    """Append `inputs` to `topic` in big batches (keyed ones by Kafka's default partitioner,
    the others round-robin); return the seconds it took, once every batch is acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=BATCH_BYTES,
        client_id="bench-load",
        **client_security(),
    )
    await producer.start()
    started = time.perf_counter()
    try:
        partitioner = DefaultPartitioner()
        all_partitions = list(range(partitions))
        batches: dict[int, Any] = {}
        pending = []
        for n, item in enumerate(inputs):
            if item.key is None:
                partition = n % partitions
            else:
                partition = partitioner(item.key, all_partitions, all_partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=item.key, value=item.value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=item.key, value=item.value, timestamp=None)
        for partition, batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def warm_group_coordinator(bootstrap: str, topic: str) -> None:
    """Have a consumer group join and commit once, so that the broker has its group coordinator
    (the `__consumer_offsets` topic) up before the first contender starts: on a fresh broker
    the first group to join waits for it, and those after it do not."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-warm-{uuid.uuid4().hex[:10]}",
        enable_auto_commit=False,
        client_id="bench-warm",
        **client_security(),
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100, max_records=1)
        await consumer.commit(dict.fromkeys(consumer.assignment(), 0))
    finally:
        await consumer.stop()


class OffsetWatcher:
    """Sums the log-end offsets of some topics; one consumer, no group, nothing committed."""

    def __init__(self, bootstrap: str, topics: Sequence[str], partitions: int = 3) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, client_id="bench-watch", **client_security()
        )
        self._partitions = [TopicPartition(t, p) for t in topics for p in range(partitions)]

    async def __aenter__(self) -> OffsetWatcher:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        ends = await self._consumer.end_offsets(self._partitions)
        return int(sum(ends.values()))

    async def by_topic(self) -> dict[str, int]:
        ends = await self._consumer.end_offsets(self._partitions)
        totals: dict[str, int] = {}
        for tp, offset in ends.items():
            totals[tp.topic] = totals.get(tp.topic, 0) + int(offset)
        return totals


def proc_status(pid: int) -> dict[str, float]:
    """Peak and current RSS (MiB, from /proc/<pid>/status) and CPU seconds used so far."""
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)  # kB -> MiB
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = os.sysconf("SC_CLK_TCK")
        after_name = stat.rsplit(")", 1)[1].split()
        # fields 14 and 15 of stat (utime, stime); after the ")" they are at 11 and 12
        fields["cpu_s"] = round((int(after_name[11]) + int(after_name[12])) / ticks, 2)
    return fields
