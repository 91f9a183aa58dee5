"""The worker's garbage-collector tuning (`worker.__main__.tune_gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker.__main__ import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_young_generation_collected_less_often_older_ones_as_before() -> None:
    before = gc.get_threshold()
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])


@pytest.mark.usefixtures("restored_gc")
def test_what_start_up_made_is_frozen_out_of_collections() -> None:
    gc.unfreeze()
    made_at_start_up: list[list[int]] = [[] for _ in range(1000)]  # lists: tracked by the gc
    tune_gc()
    assert gc.get_freeze_count() > len(made_at_start_up)
