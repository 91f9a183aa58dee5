"""The pipeline benchmark's rounds: each figure the median of its rounds, a failed round fails."""

from __future__ import annotations

from tests.benchmarks.bench_pipeline import median_of_rounds


def _round(events: int, cpu: float, **more: object) -> dict[str, object]:
    return {"complete": True, "events_per_s": events, "cpu_us_per_event": cpu, "inputs": 4} | more


def test_each_number_is_the_median_of_its_rounds_and_the_rounds_are_kept() -> None:
    merged = median_of_rounds(
        [_round(15_000, 44.0, topics={"a": 1}), _round(13_000, 38.5), _round(16_000, 41.0)]
    )
    assert (merged["events_per_s"], merged["cpu_us_per_event"]) == (15_000, 41.0)
    assert merged["inputs"] == 4
    assert merged["topics"] == {"a": 1}  # not a number: the first round's
    assert [r["cpu_us_per_event"] for r in merged["rounds"]] == [44.0, 38.5, 41.0]


def test_a_failed_round_fails_the_contender_with_its_error() -> None:
    failed = {"complete": False, "error": "stalled at 10 of 20 records"}
    merged = median_of_rounds([_round(15_000, 44.0), failed])
    assert merged["complete"] is False
    assert merged["error"] == "stalled at 10 of 20 records"
    assert len(merged["rounds"]) == 2
