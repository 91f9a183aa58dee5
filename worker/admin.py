"""Creates the worker's topics before faust starts, so nothing relies on broker auto-creation."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from worker.settings import Settings
from worker.topics import TopicNames

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)

#: Largest record on the topics we create. An input may be as large as the broker allows
#: (about 1 MiB by default); its dead letter, or its copy on an internal re-keying topic, is that
#: plus our headers, so our topics take twice the broker's default.
MAX_RECORD_BYTES = 2 * 1024 * 1024


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every missing topic of the topic map; return the names that were created.

    Existing topics are left as they are. A partition-count mismatch on an existing topic is
    logged, not fixed: changing it would move keys between partitions.
    """
    names = TopicNames.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs={
                    "max.message.bytes": str(MAX_RECORD_BYTES),
                    **({"cleanup.policy": "compact"} if spec.compacted else {}),
                },
            )
            for spec in names.all_specs()
            if spec.name not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another replica created it at the same moment
        await _warn_on_partition_mismatch(admin, names, settings.topic_partitions)
        return created
    finally:
        await admin.close()


async def _warn_on_partition_mismatch(
    admin: AIOKafkaAdminClient, names: TopicNames, partitions: int
) -> None:
    described = await admin.describe_topics([spec.name for spec in names.all_specs()])
    for topic in described:
        count = len(topic.get("partitions", []))
        if count and count != partitions:
            log.warning(
                "topic %s has %d partitions, settings say %d; co-partitioned lookups need equal "
                "counts",
                topic["topic"],
                count,
                partitions,
            )
