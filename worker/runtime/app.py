"""The faust app, built from settings; nothing else.

`create_app` is called once, by the composition root (`worker.composition`), which then builds
the features that run in this process on it (`WORKER_FEATURES`).
"""

from __future__ import annotations

from worker.runtime.faust_overrides import PromptTableManager, QuietMonitor, WorkerApp
from worker.runtime.kafka_connection import faust_credentials, kafka_client_config
from worker.runtime.placement import kafka_partitioner
from worker.runtime.topic_admin import MAX_RECORD_BYTES
from worker.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings) -> WorkerApp:
    """The worker's faust app: raw bytes in and out, strict commits, acks=all; its consumer,
    producer and table clients connect with the `KAFKA_*` security settings."""
    return WorkerApp(
        settings.worker_app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        # TLS and SASL: faust's aiokafka driver gives every client it makes these arguments
        broker_credentials=faust_credentials(kafka_client_config(settings)),
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
        # for about 20 MiB more peak RSS, and 4 MiB no more events for 70 MiB more (docs/FIGURES.md)
        consumer_max_fetch_size=2 * 1024 * 1024,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.broker_session_timeout,
        table_standby_replicas=0,
        web_port=settings.worker_web_port,
        web_host="127.0.0.1",
        web_in_thread=False,
        # faust's own views would serve the tables (emails, userIds) and its router to anyone
        # who reaches the port: the worker serves its own pages, behind its admin token
        web_tables_enabled=False,
        web_router_enabled=False,
    )
