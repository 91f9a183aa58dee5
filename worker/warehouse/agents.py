"""The warehouse loader, built by `build_warehouse`: Segment tracks -> tables in Segment's layout.

It runs on the runtime's reusable sink (`worker.runtime.sink`) with its own agent, in the same
consumer group as the others: it reads the tracks topic (`TOPIC_SEGMENT_TRACKS`, track calls
only) into `WAREHOUSE_SCHEMA` and, when `WAREHOUSE_CALLS_SCHEMA` is set, the Segment calls topic
(`TOPIC_SEGMENT_CALLS`, every call type) into that schema, as Segment keeps each source in a
schema of its own. A batch of up to `WAREHOUSE_BATCH_SIZE` messages is one transaction
(`worker.warehouse.loader`); its offsets are acked only once it committed and its dead letters
are on Kafka. A message that cannot be laid out is dead-lettered at once; the batch's others
load. Replayed dead letters come back through `<app id>.warehouse-replay`, a topic only this
worker reads, and load into the schema of the topic they first came from.

Without `WAREHOUSE_URL` no agent is registered, and the worker says so. With a DuckDB file, the
file is opened when the loader is built: a second process pointed at it is refused then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faust

from worker.errors import ConfigurationError, ValidationError
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.runtime.batches import run_batches
from worker.runtime.metrics import metrics
from worker.runtime.sink import BatchingSink
from worker.runtime.stages import Runtime
from worker.settings import Settings
from worker.warehouse.layout import CALL_TYPES, NATIVE_TRACKS, TRACK_TYPES, Laid, layout_of
from worker.warehouse.loader import Database, WarehouseStats, WarehouseWriter

__all__ = ["WarehouseInput", "build_warehouse", "open_database", "warehouse_inputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WarehouseInput:
    """A topic the loader reads, the schema its messages go to and the types it carries."""

    topic: str
    schema: str
    types: frozenset[str]


def warehouse_inputs(settings: Settings) -> dict[str, WarehouseInput]:
    """The loader's input topics by name."""
    inputs = [WarehouseInput(settings.topic_segment_tracks, settings.warehouse_schema, TRACK_TYPES)]
    if settings.warehouse_calls_schema is not None:
        inputs.append(
            WarehouseInput(
                settings.topic_segment_calls, settings.warehouse_calls_schema, CALL_TYPES
            )
        )
    return {i.topic: i for i in inputs}


def open_database(settings: Settings) -> Database:
    """The database WAREHOUSE_URL names (a DuckDB file is opened now; PostgreSQL on first use).

    Each driver is imported here, when a warehouse is configured: together they are about a
    sixth of the worker's start-up imports, and a worker without a warehouse needs neither."""
    if settings.warehouse_url is None:
        raise ConfigurationError("WAREHOUSE_URL is not set")
    url = settings.warehouse_url.get_secret_value()
    if url.startswith("duckdb:"):
        from worker.warehouse.duckdb import DuckDBWarehouse  # noqa: PLC0415

        return DuckDBWarehouse.from_url(url)
    from worker.warehouse.postgres import PostgresWarehouse  # noqa: PLC0415

    return PostgresWarehouse(url)


def parser(
    inputs: dict[str, WarehouseInput], *, defer: bool = False
) -> Callable[[InboundMessage], Laid]:
    """The sink's `parse`: a message's rows, in the schema of the topic it first came from;
    with `defer`, a track's rows are made by the writer (`lay_out`'s `defer`: for a database
    that takes COPY data)."""

    layouts = {
        topic: layout_of(source.schema, source.types, defer=defer)
        for topic, source in inputs.items()
    }

    def parse(message: InboundMessage) -> Laid:
        topic = message.origin()[0]  # a replayed message names the topic it came from
        layout = layouts.get(topic)
        if layout is None:
            raise ValidationError(f"came from {topic}, a topic the warehouse loader does not read")
        return layout(message.value)

    return parse


def build_warehouse(runtime: Runtime) -> WarehouseStats | None:
    """The loader's stage and agent on `runtime`'s app (none without WAREHOUSE_URL); its
    counters, which /metrics exports."""
    settings = runtime.settings
    topics = runtime.topics

    def to_warehouse_replay(message: InboundMessage) -> list[OutboundRecord]:
        """How a replayed dead letter re-enters the loader: via a topic only this worker reads."""
        return [
            OutboundRecord(
                topic=topics.warehouse_replay,
                key=message.key,
                value=message.value,
                headers=message.forwarded_headers(),
            )
        ]

    stage = runtime.build_stage("warehouse", "load", to_warehouse_replay)
    if settings.warehouse_url is None:
        log.info("WAREHOUSE_URL is not set: the warehouse loader is not started")
        return None
    if NATIVE_TRACKS is None:
        log.warning(
            "the compiled warehouse layout (native/, built by `make install`) is not installed: "
            "every track is laid out and fitted by the Python path: the same rows, slower"
        )
    inputs = warehouse_inputs(settings)
    database = open_database(settings)
    stats = WarehouseStats()
    metrics.add_source("warehouse", stats.families)
    parse = parser(inputs, defer=database.takes_copy_data)
    log.info(
        "warehouse loader: %s into %s, one transaction per batch of up to %d messages",
        ", ".join(f"{i.topic} -> {i.schema}" for i in inputs.values()),
        database.name,
        settings.warehouse_batch_size,
    )

    @runtime.app.agent(runtime.raw_topic(*inputs, topics.warehouse_replay), name="warehouse")
    async def load_warehouse(stream: faust.StreamT[bytes]) -> None:
        writer = WarehouseWriter(database, stats=stats)
        sink = BatchingSink(
            stage=stage,
            parse=parse,
            writer=writer,
            flow_control=runtime.app.flow_control,
            grace_s=settings.warehouse_give_back_after_s,
            overlap=True,  # the next batch is parsed while the database writes this one
        )
        try:
            await run_batches(
                stream,
                stage,
                sink.handle,
                batch_size=settings.warehouse_batch_size,
                within_s=settings.warehouse_linger_ms / 1000,
                with_mapping=False,
            )
        finally:
            await sink.drain()
            await writer.close()

    return stats
