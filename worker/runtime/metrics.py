"""The worker's Prometheus metrics: one registry of its own, rendered for `GET /metrics`.

Where each figure comes from, so the per-message loop pays nothing for it:

- Messages in, out, skipped and dead-lettered are the `StageStats` the loop keeps anyway,
  read at scrape time from every stage a shell `track`ed.
- The shells report each batch (`start_batch` ... `BatchTimer.done`) and each delivery outcome
  (`observe_delivery`); histograms take a batch in one weighted observation, not one per message.
- Scrape-time sources (`add_source`: the rate limiter, the delivery pause, consumer lag,
  readiness; registered by `worker.runtime.health`) are read when Prometheus asks.

Everything is updated and read on the worker's event-loop thread, so plain counters suffice. A
source that fails while being read is left out of that scrape and counted in
`autopilot_worker_scrape_errors_total{source}`: a scrape never fails, nor stops the worker,
because one part could not be read.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from worker.pipeline.logs import log_fields

if TYPE_CHECKING:
    from worker.models.delivery_result import DeliveryResult
    from worker.pipeline.records import InboundMessage
    from worker.pipeline.stage import Stage

__all__ = [
    "BATCH_BUCKETS_S",
    "DELIVERY_BUCKETS_S",
    "MAPPING_BUCKETS_S",
    "PREFIX",
    "BatchTimer",
    "WeightedHistogram",
    "WorkerMetrics",
    "consumer_lags",
    "metrics",
]

log = logging.getLogger(__name__)

PREFIX = "autopilot_worker"

#: Per-message mapping time: microseconds (a valid event) to tens of milliseconds.
MAPPING_BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
)  # fmt: skip
#: A batch from being taken to Kafka's acks for all it produced.
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A request descriptor from `deliver` receiving it to its final outcome (retries included, so
#: up to AUTOPILOT_RETRY_BUDGET_S, 4 h by default).
DELIVERY_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
)  # fmt: skip

#: A scrape-time source: yields finished metric families, may raise (it is then left out).
Source = Callable[[], Iterable[Metric]]


class WeightedHistogram:
    """A labelled histogram whose observations may carry a weight (`count`).

    `observe(labels, v, count=n)` is n observations of v in O(log buckets): a batch of n messages
    that took t seconds to map is `observe(labels, t / n, count=n)`.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        if list(buckets) != sorted(buckets):
            raise ValueError("buckets must be sorted")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], value: float, count: int = 1) -> None:
        if count <= 0:
            return
        counts = self._counts.get(labels)
        if counts is None:
            counts = self._counts[labels] = [0] * (len(self.bounds) + 1)
        counts[bisect_left(self.bounds, value)] += count
        self._sums[labels] = self._sums.get(labels, 0.0) + value * count

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, counts in self._counts.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, self._sums[labels])
        return family


class BatchTimer:
    """Times one batch of one stage: `handed_off()` once its records are with the producer,
    `done(size)` once Kafka acknowledged them (see `WorkerMetrics.start_batch`)."""

    __slots__ = (
        "_mapping_before",
        "_mapping_s",
        "_metrics",
        "_pipeline",
        "_started",
        "_with_mapping",
    )

    def __init__(self, metrics: WorkerMetrics, pipeline: Stage, *, with_mapping: bool) -> None:
        self._metrics = metrics
        self._pipeline = pipeline
        self._with_mapping = with_mapping
        self._mapping_before = pipeline.stats.mapping_seconds
        self._mapping_s: float | None = None
        self._started = time.perf_counter()

    def handed_off(self) -> None:
        """The batch is mapped; the next one's mapping, which may begin now, is not its own."""
        if self._with_mapping:
            self._mapping_s = self._pipeline.stats.mapping_seconds - self._mapping_before

    def done(self, size: int) -> None:
        total_s = time.perf_counter() - self._started
        self._metrics.observe_batch(
            self._pipeline, size, total_s=total_s, mapping_s=self._mapping_s
        )


class WorkerMetrics:
    """Every metric of the worker, in a `CollectorRegistry` of its own (`registry`)."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self._pipelines: dict[tuple[str, str], Stage] = {}
        self._sources: dict[str, Source] = {}
        self._scrape_errors: Counter[str] = Counter()
        self._delivery_outcomes: Counter[tuple[str, str]] = Counter()
        self.mapping = WeightedHistogram(
            f"{PREFIX}_mapping_seconds",
            "Per message: its share of its batch's time in the loop's route step (decode, pure "
            "mapping, routing failures; no Kafka I/O).",
            ("pipeline", "stage"),
            MAPPING_BUCKETS_S,
        )
        self.batch = WeightedHistogram(
            f"{PREFIX}_batch_seconds",
            "Per batch: from taking it to Kafka acknowledging everything it produced (outputs "
            "and dead letters); for delivery, the HTTP calls and retries included.",
            ("pipeline", "stage"),
            BATCH_BUCKETS_S,
        )
        self.delivery_latency = WeightedHistogram(
            f"{PREFIX}_delivery_latency_seconds",
            "Per request descriptor: from delivery receiving it to its final outcome "
            "(DeliveryResult.latency_ms), retries and rate-limit waits included.",
            ("outcome",),
            DELIVERY_BUCKETS_S,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # -- what the shells call ------------------------------------------------------------------

    def track(self, pipeline: Stage) -> None:
        """Export `pipeline`'s stats (idempotent: an agent that restarts tracks again)."""
        self._pipelines[pipeline.name, pipeline.stage] = pipeline

    def start_batch(self, pipeline: Stage, *, with_mapping: bool = True) -> BatchTimer:
        """Start timing a batch; `with_mapping=False` for a stage that does not `route`."""
        return BatchTimer(self, pipeline, with_mapping=with_mapping)

    def observe_batch(
        self, pipeline: Stage, size: int, *, total_s: float, mapping_s: float | None
    ) -> None:
        if size <= 0:
            return
        labels = (pipeline.name, pipeline.stage)
        self.batch.observe(labels, total_s)
        if mapping_s is not None:
            self.mapping.observe(labels, mapping_s / size, count=size)

    def observe_delivery(
        self, pipeline: Stage, message: InboundMessage, result: DeliveryResult
    ) -> None:
        """Count one final delivery outcome and log it (debug) with the message's context."""
        self._delivery_outcomes[result.outcome, str(result.status)] += 1
        self.delivery_latency.observe((result.outcome,), result.latency_ms / 1000)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s for %s after %d attempt(s): %s",
                result.outcome,
                result.kind,
                result.message_id,
                result.attempts,
                result.status,
                extra=log_fields(
                    pipeline.name,
                    pipeline.stage,
                    message,
                    message_id=result.message_id,
                    outcome=result.outcome,
                    status=str(result.status),
                ),
            )

    def stages(self) -> list[Stage]:
        """Every stage tracked so far (the console reads their counters, as a scrape does)."""
        return list(self._pipelines.values())

    def delivery_outcomes(self) -> dict[tuple[str, str], int]:
        """Final delivery outcomes so far, by (outcome, status)."""
        return dict(self._delivery_outcomes)

    def add_source(self, name: str, source: Source) -> None:
        """Read `source` at every scrape (replacing a source of that name)."""
        self._sources[name] = source

    # -- what Prometheus reads ------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The `prometheus_client` collector protocol (this object is in its own registry)."""
        yield from self._pipeline_families()
        yield self.mapping.family()
        yield self.batch.family()
        yield self.delivery_latency.family()
        outcomes = CounterMetricFamily(
            f"{PREFIX}_delivery_outcomes",
            "Final delivery outcomes by outcome (delivered, dead_lettered) and status (the last "
            "HTTP status, or the error class when no response came).",
            labels=("outcome", "status"),
        )
        for (outcome, status), count in sorted(self._delivery_outcomes.items()):
            outcomes.add_metric([outcome, status], count)
        yield outcomes
        for name, source in list(self._sources.items()):
            try:
                families = list(source())
            except Exception:  # a part that cannot be read must not fail the scrape
                self._scrape_errors[name] += 1
                log.debug("metrics source %s failed", name, exc_info=True)
                continue
            yield from families
        errors = CounterMetricFamily(
            f"{PREFIX}_scrape_errors",
            "Scrape-time metric sources that raised and were left out, by source.",
            labels=("source",),
        )
        for name in sorted(self._sources):
            errors.add_metric([name], self._scrape_errors[name])
        yield errors

    def _pipeline_families(self) -> Iterator[Metric]:
        stage = ("pipeline", "stage")
        consumed = CounterMetricFamily(
            f"{PREFIX}_messages_in", "Messages consumed by a pipeline stage.", labels=stage
        )
        produced = CounterMetricFamily(
            f"{PREFIX}_messages_out",
            "Records a stage produced, dead letters not included (delivery: descriptors "
            "delivered).",
            labels=stage,
        )
        skipped = CounterMetricFamily(
            f"{PREFIX}_messages_skipped",
            "Messages acknowledged without output, by reason.",
            labels=(*stage, "reason"),
        )
        dead = CounterMetricFamily(
            f"{PREFIX}_messages_dead_lettered",
            "Messages written to the dead-letter topic, by error class.",
            labels=(*stage, "error_class"),
        )
        for (name, stage_name), pipeline in sorted(self._pipelines.items()):
            stats = pipeline.stats
            consumed.add_metric([name, stage_name], stats.consumed)
            produced.add_metric([name, stage_name], stats.produced)
            for reason, count in sorted(stats.skipped.items()):
                skipped.add_metric([name, stage_name, reason], count)
            for error_class, count in sorted(stats.dead_lettered.items()):
                dead.add_metric([name, stage_name, error_class], count)
        yield from (consumed, produced, skipped, dead)


def consumer_lags(
    partitions: Iterable[tuple[str, int]],
    *,
    highwater: Callable[[tuple[str, int]], int | None],
    committed: Mapping[tuple[str, int], int | None],
    read: Mapping[tuple[str, int], int | None],
) -> dict[tuple[str, int], int]:
    """Records not yet committed by this worker, per assigned partition.

    lag = highwater (the offset the next record will get) - the committed offset (the next
    offset to process); before anything was committed, - (the last offset read + 1); before
    anything was read either, - 0. A partition whose highwater is not known yet (nothing
    fetched) or cannot be read is left out rather than guessed.
    """
    lags: dict[tuple[str, int], int] = {}
    for tp in partitions:
        try:
            end = highwater(tp)
        except Exception:  # noqa: BLE001, S112  (assignment moved under us: leave it out)
            continue
        if end is None:
            continue
        position = committed.get(tp)
        if position is None:
            last_read = read.get(tp)
            position = last_read + 1 if last_read is not None else 0
        lags[tp[0], tp[1]] = max(0, end - position)
    return lags


#: The process's metrics; `worker.runtime.health` serves them.
metrics = WorkerMetrics()
