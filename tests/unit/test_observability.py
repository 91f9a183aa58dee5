"""Metrics: what a batch through a pipeline, a delivery outcome and the sources export."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.doubles import RecordingSender
from worker.errors import SkipMessage, UnsupportedType, ValidationError
from worker.models.delivery_result import DeliveryResult
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.metrics import WeightedHistogram, WorkerMetrics, consumer_lags

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def handler(message: InboundMessage) -> list[OutboundRecord]:
    match message.value:
        case b"skip":
            raise SkipMessage("test_delivery")
        case b"bad":
            raise ValidationError("contact.email: field required")
        case b"odd":
            raise UnsupportedType("email_forwarded")
        case b"bug":
            raise KeyError("oops")
    return [OutboundRecord("out", message.key, message.value.upper(), [])]


def pipeline(name: str = "source", stage: str = "intake") -> Stage:
    breaker = Breaker(window=100, min_messages=100, max_ratio=0.5)
    return Stage(name, stage, handler, RecordingSender(), "dlq", breaker)


def message(value: bytes, offset: int = 0) -> InboundMessage:
    return InboundMessage("in", 0, offset, 1_700_000_000_000, b"k", value)


def scrape(metrics: WorkerMetrics) -> Samples:
    text = metrics.render().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def result(outcome: str, status: int | str, latency_ms: float, message_id: str) -> DeliveryResult:
    now = datetime.now(UTC)
    return DeliveryResult.model_validate(
        {
            "message_id": message_id,
            "kind": "upsert_contact",
            "contact": "a@example.com",
            "status": status,
            "outcome": outcome,
            "attempts": 1,
            "first_attempt_at": now,
            "last_attempt_at": now,
            "latency_ms": latency_ms,
        }
    )


async def test_a_batch_is_counted_by_fate_and_timed() -> None:
    metrics = WorkerMetrics(process_metrics=False)
    p = pipeline()
    metrics.track(p)
    batch = [message(v, i) for i, v in enumerate([b"a", b"skip", b"bad", b"odd", b"bug", b"b"])]
    timer = metrics.start_batch(p)
    await p.process(batch)
    timer.handed_off()
    timer.done(len(batch))

    s = scrape(metrics)
    stage = {"pipeline": "source", "stage": "intake"}
    assert value(s, "autopilot_worker_messages_in_total", **stage) == 6
    assert value(s, "autopilot_worker_messages_out_total", **stage) == 2
    reason = {"reason": "test_delivery"}
    assert value(s, "autopilot_worker_messages_skipped_total", **stage, **reason) == 1
    dead = "autopilot_worker_messages_dead_lettered_total"
    assert value(s, dead, **stage, error_class="ValidationError") == 1
    assert value(s, dead, **stage, error_class="UnsupportedType") == 1
    assert value(s, dead, **stage, error_class="UnexpectedError") == 1
    assert value(s, dead, **stage) == 3
    # one weighted observation per batch: every message counted, their share summed
    assert value(s, "autopilot_worker_mapping_seconds_count", **stage) == 6
    inf = {**stage, "le": "+Inf"}
    assert value(s, "autopilot_worker_mapping_seconds_bucket", **inf) == 6
    mapped = value(s, "autopilot_worker_mapping_seconds_sum", **stage)
    assert mapped == pytest.approx(p.stats.mapping_seconds)
    assert mapped > 0
    assert value(s, "autopilot_worker_batch_seconds_count", **stage) == 1
    assert value(s, "autopilot_worker_batch_seconds_sum", **stage) >= mapped


async def test_stats_are_read_at_scrape_time_and_tracking_is_idempotent() -> None:
    metrics = WorkerMetrics(process_metrics=False)
    p = pipeline("destination", "map")
    metrics.track(p)
    metrics.track(p)  # an agent that restarts tracks again
    assert value(scrape(metrics), "autopilot_worker_messages_in_total") == 0
    await p.process([message(b"a"), message(b"b")])
    s = scrape(metrics)
    assert value(s, "autopilot_worker_messages_in_total", pipeline="destination") == 2
    # no batch was timed, so no histogram series
    assert value(s, "autopilot_worker_mapping_seconds_count") == 0


async def test_a_batch_s_mapping_time_is_its_own_when_the_next_is_mapped_before_its_acks() -> None:
    metrics = WorkerMetrics(process_metrics=False)
    p = pipeline()
    timer = metrics.start_batch(p)
    await p.process([message(b"a"), message(b"b")])
    timer.handed_off()
    first = p.stats.mapping_seconds
    await p.process([message(b"c", 2)] * 200)  # the next batch, while the first one's acks wait
    timer.done(2)
    s = scrape(metrics)
    assert value(s, "autopilot_worker_mapping_seconds_count") == 2
    assert value(s, "autopilot_worker_mapping_seconds_sum") == pytest.approx(first)
    assert p.stats.mapping_seconds > first


def test_a_stage_without_mapping_times_only_its_batches() -> None:
    metrics = WorkerMetrics(process_metrics=False)
    p = pipeline("delivery", "deliver")
    timer = metrics.start_batch(p, with_mapping=False)
    timer.done(3)
    metrics.start_batch(p).done(0)  # an empty batch is no observation
    s = scrape(metrics)
    assert value(s, "autopilot_worker_batch_seconds_count", pipeline="delivery") == 1
    assert value(s, "autopilot_worker_mapping_seconds_count", pipeline="delivery") == 0


def test_delivery_outcomes_and_latency(caplog: pytest.LogCaptureFixture) -> None:
    metrics = WorkerMetrics(process_metrics=False)
    p = pipeline("delivery", "deliver")
    with caplog.at_level(logging.DEBUG, logger="worker.runtime.metrics"):
        metrics.observe_delivery(p, message(b"{}", 7), result("delivered", 200, 120.0, "m-1"))
        metrics.observe_delivery(p, message(b"{}", 8), result("delivered", 200, 80.0, "m-2"))
        metrics.observe_delivery(
            p, message(b"{}", 9), result("dead_lettered", "RetryBudgetExhausted", 9000.0, "m-3")
        )
    s = scrape(metrics)
    outcomes = "autopilot_worker_delivery_outcomes_total"
    assert value(s, outcomes, outcome="delivered", status="200") == 2
    assert value(s, outcomes, outcome="dead_lettered", status="RetryBudgetExhausted") == 1
    latency = "autopilot_worker_delivery_latency_seconds"
    assert value(s, f"{latency}_count", outcome="delivered") == 2
    assert value(s, f"{latency}_sum", outcome="delivered") == pytest.approx(0.2)
    assert value(s, f"{latency}_bucket", outcome="delivered", le="0.1") == 1
    assert value(s, f"{latency}_bucket", outcome="delivered", le="0.25") == 2
    assert value(s, f"{latency}_bucket", outcome="dead_lettered", le="5.0") == 0
    assert value(s, f"{latency}_bucket", outcome="dead_lettered", le="10.0") == 1

    logged = [r for r in caplog.records if r.name == "worker.runtime.metrics"]
    assert [r.__dict__["message_id"] for r in logged] == ["m-1", "m-2", "m-3"]
    last = logged[-1].__dict__
    assert (last["pipeline"], last["stage"], last["topic"]) == ("delivery", "deliver", "in")
    assert (last["partition"], last["offset"]) == (0, 9)
    assert (last["outcome"], last["status"]) == ("dead_lettered", "RetryBudgetExhausted")


def test_a_failing_source_is_left_out_and_counted() -> None:
    metrics = WorkerMetrics(process_metrics=False)

    def broken() -> list[Metric]:
        raise RuntimeError("consumer went away")

    def lag() -> list[Metric]:
        return [GaugeMetricFamily("autopilot_worker_consumer_lag", "lag", value=3)]

    metrics.add_source("consumer_lag", broken)
    metrics.add_source("other", lag)
    s = scrape(metrics)
    assert value(s, "autopilot_worker_scrape_errors_total", source="consumer_lag") == 1
    assert value(s, "autopilot_worker_scrape_errors_total", source="other") == 0
    assert value(s, "autopilot_worker_consumer_lag") == 3
    s = scrape(metrics)
    assert value(s, "autopilot_worker_scrape_errors_total", source="consumer_lag") == 2


def test_process_metrics_are_in_the_registry_of_its_own() -> None:
    names = {name for name, _ in scrape(WorkerMetrics())}
    assert "process_cpu_seconds_total" in names or "python_info" in names
    assert not any(name.startswith("autopilot_worker_messages") for name in names)


def test_weighted_histogram_buckets_are_cumulative() -> None:
    histogram = WeightedHistogram("h", "doc", ("stage",), (0.1, 1.0))
    histogram.observe(("a",), 0.05, count=4)
    histogram.observe(("a",), 0.1)  # le is inclusive
    histogram.observe(("a",), 5.0)
    histogram.observe(("a",), 0.5, count=0)  # nothing
    (sample_set,) = [histogram.family()]
    got = {(s.name, s.labels.get("le")): s.value for s in sample_set.samples}
    assert got[("h_bucket", "0.1")] == 5
    assert got[("h_bucket", "1.0")] == 5
    assert got[("h_bucket", "+Inf")] == 6
    assert got[("h_count", None)] == 6
    assert got[("h_sum", None)] == pytest.approx(0.05 * 4 + 0.1 + 5.0)
    with pytest.raises(ValueError, match="sorted"):
        WeightedHistogram("h", "doc", (), (1.0, 0.1))


def test_consumer_lag_from_committed_then_read_offsets() -> None:
    highwaters = {("t", 0): 10, ("t", 1): 10, ("t", 2): 10, ("t", 3): None, ("t", 4): 3}

    def highwater(tp: tuple[str, int]) -> int | None:
        if tp == ("t", 5):
            raise AssertionError("Partition is not assigned")  # aiokafka, mid-rebalance
        return highwaters[tp]

    lags = consumer_lags(
        [("t", p) for p in range(6)],
        highwater=highwater,
        committed={("t", 0): 7, ("t", 4): 5},
        read={("t", 1): 4, ("t", 0): 9},
    )
    assert lags == {
        ("t", 0): 3,  # committed wins over read
        ("t", 1): 5,  # nothing committed yet: after the last read (4)
        ("t", 2): 10,  # nothing committed or read: from offset 0
        ("t", 4): 0,  # never negative (a committed offset ahead of a stale highwater)
    }
