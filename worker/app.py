"""The Faust app and its wiring, nothing else.

Agents live next to their feature (`worker/source/agents.py`, ...) and are imported explicitly
by `worker.__main__` so that what runs is visible in one place.
"""

from __future__ import annotations

import faust

from worker.admin import MAX_RECORD_BYTES
from worker.faustapp import PromptTableManager, QuietMonitor, RawSchema, WorkerApp
from worker.placement import Placement, kafka_partitioner
from worker.settings import get_settings
from worker.topics import TopicNames

__all__ = ["app", "placement", "raw_topic", "topic_names"]

settings = get_settings()
topic_names = TopicNames.from_settings(settings)

app = WorkerApp(
    settings.worker_app_id,
    broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
    store="memory://",
    autodiscover=False,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    topic_allow_declare=True,
    topic_disable_leader=True,
    monitor=QuietMonitor(),
    TableManager=PromptTableManager,
    producer_acks=-1,
    # records are sent a batch at a time: a few milliseconds of linger and room for a whole
    # batch in one request mean fewer, fuller produce requests (about 15 % less CPU an input)
    producer_linger_ms=5,
    producer_max_batch_size=1024 * 1024,
    producer_partitioner=kafka_partitioner,
    producer_max_request_size=MAX_RECORD_BYTES + 64 * 1024,
    # a record Kafka will not take must fail its send (and stop the worker) within a minute,
    # not hold a shutdown for faust's default of 20 minutes
    producer_request_timeout=60.0,
    consumer_auto_offset_reset="earliest",
    # up to 2 MiB a partition per fetch (faust's default: 1 MiB): with a backlog, the worker
    # waited on fetches (the machine half idle); 2 MiB gave about 1.3 times the events a second
    # for about 20 MiB more peak RSS, and 4 MiB no more events for 70 MiB more (README)
    consumer_max_fetch_size=2 * 1024 * 1024,
    broker_commit_interval=1.0,
    broker_session_timeout=settings.broker_session_timeout,
    table_standby_replicas=0,
    web_port=settings.worker_web_port,
    web_host="127.0.0.1",
    web_in_thread=False,
)

#: Partition counts as the consumer last saw them, asked per record. A lambda, because reading
#: `app.consumer` here would create the consumer at import time.
placement = Placement(lambda topic: app.consumer.topic_partitions(topic))  # noqa: PLW0108


def raw_topic(*names: str) -> faust.TopicT:
    """Topics read and written as raw bytes: decoding is ours, so failures can be routed."""
    return app.topic(
        *names,
        schema=RawSchema(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        ),
        partitions=settings.topic_partitions,
    )
