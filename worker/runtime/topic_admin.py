"""Creates the worker's topics before faust starts, so nothing relies on broker auto-creation.

At start Kafka may not answer yet (a broker restarting, a cluster still coming up): the admin
connection is retried, with one line every few seconds saying what it waits for, up to
`KAFKA_STARTUP_TIMEOUT_S`; then `KafkaUnavailable` (exit 70) with one clear line. A Kafka that
answers and refuses the worker (its SASL credentials, its certificates, the mechanism, TLS on a
plaintext port) is not waited for: `KafkaRefused` at once (exit 70), one line naming the
setting(s) (`worker.runtime.kafka_connection.probe`).

Retention is a choice said out loud: the dead-letter and delivery-results topics are created
with the retention their settings name (30 days by default, long enough to fix a cause and
replay), stated at start; an existing topic that keeps records for less is reported, never
altered (retention is the operator's to change).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from worker.errors import FatalError
from worker.runtime.kafka_connection import kafka_client_config, outage_hint, probe
from worker.settings import Settings
from worker.topics import TopicNames, TopicSpec

__all__ = ["KafkaUnavailable", "connect_admin", "ensure_topics", "retention_ms", "wait_for_kafka"]

log = logging.getLogger(__name__)

#: Largest record on the topics we create. An input may be as large as the broker allows
#: (about 1 MiB by default); its dead letter, or its copy on an internal re-keying topic, is that
#: plus our headers, so our topics take twice the broker's default.
MAX_RECORD_BYTES = 2 * 1024 * 1024

#: While Kafka does not answer at start, one line this often.
WAIT_LINE_EVERY_S = 5.0
_DAY_MS = 24 * 3600 * 1000


class KafkaUnavailable(FatalError):
    """Kafka did not answer within `KAFKA_STARTUP_TIMEOUT_S` at start."""


def retention_ms(days: float) -> int:
    """Kafka's `retention.ms` for `days` (0: for ever, -1)."""
    return -1 if days == 0 else int(days * _DAY_MS)


async def wait_for_kafka(settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> str:
    """Return the bootstrap address that answered (the TLS handshake and SASL authentication
    passed); retried while Kafka does not answer, until the start-up timeout passes
    (`KafkaUnavailable`). A refusal (`KafkaRefused`) is raised at once: waiting fixes none."""
    config = kafka_client_config(settings)
    started = clock()
    last_line = -WAIT_LINE_EVERY_S
    attempt = 0
    while True:
        attempt += 1
        try:
            # no aiokafka client yet: its bootstrap would log each failure and hide the cause
            return await probe(settings, config=config)
        except (KafkaError, OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            waited = clock() - started
            reason = str(error) or type(error).__name__
            if not reason.startswith(type(error).__name__):
                reason = f"{type(error).__name__}: {reason}"
            reason += outage_hint(error, settings)
            if waited >= settings.kafka_startup_timeout_s:
                raise KafkaUnavailable(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
                    f"{settings.kafka_startup_timeout_s:g} s (KAFKA_STARTUP_TIMEOUT_S): {reason}"
                ) from None
            if waited - last_line >= WAIT_LINE_EVERY_S:
                last_line = waited
                log.warning(
                    "waiting for Kafka at %s (KAFKA_BOOTSTRAP_SERVERS): %s; %.0f s of %g s "
                    "(KAFKA_STARTUP_TIMEOUT_S), attempt %d",
                    settings.kafka_bootstrap_servers,
                    reason,
                    waited,
                    settings.kafka_startup_timeout_s,
                    attempt,
                )
            await asyncio.sleep(min(1.0, max(settings.kafka_startup_timeout_s - waited, 0.05)))


async def connect_admin(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic
) -> AIOKafkaAdminClient:
    """A started admin client, once Kafka answers (`wait_for_kafka`); a failure to start after
    that (Kafka gone again within the second) is retried the same way."""
    started = clock()
    while True:
        await wait_for_kafka(settings, clock=clock)
        admin = AIOKafkaAdminClient(**kafka_client_config(settings), request_timeout_ms=10_000)
        try:
            await admin.start()
        except (KafkaError, OSError) as error:
            await _close_quietly(admin)
            if clock() - started >= settings.kafka_startup_timeout_s:
                raise KafkaUnavailable(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
                    f"{settings.kafka_startup_timeout_s:g} s (KAFKA_STARTUP_TIMEOUT_S): {error}"
                ) from None
            await asyncio.sleep(1.0)
            continue
        return admin


async def _close_quietly(admin: AIOKafkaAdminClient) -> None:
    try:
        await admin.close()
    except Exception:
        log.debug("closing an unconnected admin client failed", exc_info=True)


def _new_topic(spec: TopicSpec, settings: Settings) -> NewTopic:
    configs = {"max.message.bytes": str(MAX_RECORD_BYTES)}
    if spec.compacted:
        configs["cleanup.policy"] = "compact"
    if spec.retention_days is not None:
        configs["retention.ms"] = str(retention_ms(spec.retention_days))
    return NewTopic(
        name=spec.name,
        num_partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        topic_configs=configs,
    )


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every missing topic of the topic map; return the names that were created.

    Existing topics are left as they are. A partition-count mismatch, or a retention shorter
    than the settings ask, on an existing topic is logged, not fixed: changing the count would
    move keys between partitions, and retention is the operator's to change.
    """
    names = TopicNames.from_settings(settings)
    admin = await connect_admin(settings)
    try:
        existing = set(await admin.list_topics())
        created: list[str] = []
        for spec in names.all_specs():
            if spec.name in existing:
                continue
            try:
                await admin.create_topics([_new_topic(spec, settings)])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another replica created it at the same moment
        await _warn_on_partition_mismatch(admin, names, settings.topic_partitions)
        await _report_retention(admin, names, created)
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


def _days(ms: int) -> str:
    return "for ever" if ms < 0 else f"{ms / _DAY_MS:g} days"


async def _report_retention(
    admin: AIOKafkaAdminClient, names: TopicNames, created: list[str]
) -> None:
    """Say how long the dead letters and delivery results are kept; warn when an existing
    topic keeps them for less than its setting asks."""
    specs = [spec for spec in names.all_specs() if spec.retention_days is not None]
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, spec.name, configs={"retention.ms": None})
        for spec in specs
    ]
    actual: dict[str, int] = {}
    try:
        for response in await admin.describe_configs(resources):
            for _code, _message, _type, name, entries in response.resources:
                for entry in entries:
                    if entry[0] == "retention.ms" and entry[1] is not None:
                        actual[name] = int(entry[1])
    except (KafkaError, ValueError, IndexError, TypeError) as error:
        log.warning("could not read the topics' retention: %s", error)
    for spec in specs:
        assert spec.retention_days is not None
        wanted = retention_ms(spec.retention_days)
        kept = actual.get(spec.name)
        if kept is None:
            continue
        shorter = wanted < 0 <= kept or 0 <= kept < wanted
        if shorter and spec.name not in created:
            log.warning(
                "topic %s keeps records %s, less than %s asks (%s); not altered: raise its "
                "retention.ms, or they expire before they can be replayed",
                spec.name,
                _days(kept),
                spec.retention_setting,
                _days(wanted),
            )
        else:
            log.info(
                "topic %s keeps records %s (%s)", spec.name, _days(kept), spec.retention_setting
            )
