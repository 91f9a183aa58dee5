"""A process's share of one key's rate limit, on an injected clock: the table every process
computes alone, shares lost at once and gained a hand-over delay later, and, across simulated
groups with rebalances and skewed clocks, what the limiter's argument needs of them."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from worker.delivery.share import CLOCK_MARGIN_S, KeyShare, apportion

HANDOVER_S = 2.0
EPOCH_S = 6.0


@dataclass
class FakeClock:
    """Monotonic time `now`; wall-clock time `now + skew` (epochs are multiples of EPOCH_S)."""

    now: float = 0.0
    skew: float = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.skew


def share_of(limit: int, clock: FakeClock) -> KeyShare:
    return KeyShare(limit, HANDOVER_S, epoch_s=EPOCH_S, clock=clock)


def test_five_slots_over_three_partitions_rotate_two_two_one() -> None:
    assert [apportion(5, 3, epoch) for epoch in range(4)] == [
        [2, 2, 1],
        [1, 2, 2],
        [2, 1, 2],
        [2, 2, 1],
    ]


@pytest.mark.parametrize(("limit", "partitions"), [(5, 3), (1, 3), (2, 5), (6, 3), (5, 12), (7, 1)])
def test_every_epoch_gives_out_the_limit_and_a_cycle_gives_each_partition_its_share(
    limit: int, partitions: int
) -> None:
    for epoch in range(-partitions, 2 * partitions):
        assert sum(apportion(limit, partitions, epoch)) == limit
    cycle = [apportion(limit, partitions, epoch) for epoch in range(partitions)]
    assert [sum(column) for column in zip(*cycle, strict=True)] == [limit] * partitions


def test_a_process_with_no_partition_has_no_slot() -> None:
    clock = FakeClock()
    share = share_of(5, clock)
    for _ in range(20):
        clock.now += 1.7
        assert share.capacity() == 0
    share.assigned([], 3, generation=1)
    clock.now += 10 * HANDOVER_S
    assert share.capacity() == 0


def test_one_process_with_every_partition_has_the_whole_limit_in_every_epoch() -> None:
    clock = FakeClock(now=0.5)
    share = share_of(5, clock)
    share.assigned([0, 1, 2], 3, generation=1)
    assert share.capacity() == 0  # the previous owner's last requests may still count
    clock.now += HANDOVER_S - 0.01
    assert share.capacity() == 0
    clock.now += 0.01
    assert share.capacity() == 5
    for _ in range(200):  # across many epoch boundaries, never less
        clock.now += 0.37
        assert share.capacity() == 5


def test_a_gained_share_starts_a_handover_later_and_a_lost_one_ends_at_once() -> None:
    clock = FakeClock(now=0.5)  # epoch 0: partitions 0, 1, 2 hold 2, 2, 1
    share = share_of(5, clock)
    share.assigned([0], 3, generation=1)
    clock.now = 0.5 + HANDOVER_S
    assert share.capacity() == 2
    share.revoked([0])
    assert share.capacity() == 0
    share.assigned([0, 1], 3, generation=3)  # not the next generation: all of it is new
    assert share.capacity() == 0
    clock.now += HANDOVER_S
    assert share.capacity() == 4


def test_a_partition_kept_into_the_next_generation_keeps_its_slots() -> None:
    clock = FakeClock(now=0.5)
    share = share_of(5, clock)
    share.assigned([0, 1], 3, generation=1)
    clock.now += HANDOVER_S
    assert share.capacity() == 4
    share.revoked([0, 1])  # a rebalance: eager, everything is revoked
    assert share.capacity() == 0
    clock.now += 0.3
    share.assigned([1, 2], 3, generation=2)  # 1 kept, 2 new, 0 moved away
    assert share.capacity() == 2  # partition 1's, at once
    clock.now += HANDOVER_S
    assert share.capacity() == 3


def test_the_remainder_slot_moves_at_the_boundary_and_is_used_a_handover_later() -> None:
    clocks = [FakeClock(now=1.0) for _ in range(3)]
    shares = [share_of(5, clock) for clock in clocks]
    for partition, share in enumerate(shares):
        share.assigned([partition], 3, generation=1)
    capacities: list[list[int]] = []
    boundary = EPOCH_S  # epoch 0 gives partitions 0, 1, 2 two, two and one slots; epoch 1 one,
    for now in (3.0, boundary - 0.01, boundary, boundary + HANDOVER_S + CLOCK_MARGIN_S + 0.01):
        for clock in clocks:
            clock.now = now
        capacities.append([share.capacity() for share in shares])
    assert capacities == [
        [2, 2, 1],
        [2, 2, 1],
        [1, 2, 1],  # two and two: partition 0 lost its slot at once, 2 waits for it
        [1, 2, 2],  # until the other's last request has left its window, clocks apart or not
    ]


def test_the_capacity_rises_only_when_rise_in_says() -> None:
    clock = FakeClock(now=1.0)
    share = share_of(5, clock)
    share.assigned([2], 3, generation=1)
    now, rises = 1.0, []
    while now < 40:
        clock.now = now
        before, wait = share.capacity(), share.rise_in()
        assert wait > 0
        for k in range(1, 20):
            clock.now = now + wait * k / 20
            assert share.capacity() <= before
        now += wait
        clock.now = now
        if share.capacity() > before:
            rises.append(round(now, 3))
    # the first hand-over; then partition 2's second slot, which epochs 1, 2, 4, 5 ... give it
    assert rises == [3.0, 6 + 2.1, 24 + 2.1, 42 + 2.1]


def test_listeners_hear_of_every_change_of_ownership() -> None:
    clock = FakeClock()
    share = share_of(5, clock)
    heard: list[frozenset[int]] = []
    share.subscribe(lambda: heard.append(share.owned))
    share.assigned([0, 2], 3, generation=1)
    share.revoked([1])  # not owned: no change
    share.revoked([2])
    share.released()
    assert heard == [frozenset({0, 2}), frozenset({0}), frozenset()]


# --- groups ------------------------------------------------------------------------------------


def simulate_group(seed: int, limit: int, partitions: int) -> list[dict[int, int]]:
    """The capacity of each process every 50 ms for 120 s while up to four processes join, leave
    and rebalance at random, each with its wall clock off by up to the margin. A rebalance
    revokes everything (faust's is eager); the assignment comes up to 0.2 s later."""
    rng = random.Random(seed)
    step = 0.05
    clocks: dict[int, FakeClock] = {}
    shares: dict[int, KeyShare] = {}
    names = iter(range(1000))
    generation, assign_at = 0, -1
    samples: list[dict[int, int]] = []
    for tick in range(int(120 / step)):
        now = tick * step
        for clock in clocks.values():
            clock.now = now
        if tick % 100 == 0 and rng.random() < 0.6:
            if len(shares) < 4 and (not shares or rng.random() < 0.6):
                name = next(names)
                clocks[name] = FakeClock(now=now, skew=rng.uniform(0, CLOCK_MARGIN_S * 0.99))
                shares[name] = share_of(limit, clocks[name])
            elif len(shares) > 1:
                leaving = rng.choice(sorted(shares))
                shares.pop(leaving).released()  # before it leaves the group
                del clocks[leaving]
            for share in shares.values():  # each revocation ends before the group rejoins
                share.revoked(share.owned)
            assign_at = tick + rng.randrange(5)
        if tick == assign_at:
            generation += 1
            members = sorted(shares)
            owners = [members[(p + rng.randrange(2)) % len(members)] for p in range(partitions)]
            for name, share in shares.items():
                mine = [p for p, owner in enumerate(owners) if owner == name]
                share.assigned(mine, partitions, generation)
        samples.append({name: share.capacity() for name, share in shares.items()})
    return samples


@pytest.mark.parametrize(
    ("seed", "limit", "partitions"),
    [(1, 5, 3), (2, 5, 3), (3, 1, 3), (4, 7, 4), (5, 5, 12), (6, 2, 2)],
)
def test_in_any_handover_delay_the_most_each_process_may_hold_sums_to_the_limit(
    seed: int, limit: int, partitions: int
) -> None:
    """What the limiter's argument needs: requests the processes started within one hand-over
    delay may all hold their slots at once, so the most each may hold in it sums to the limit."""
    samples = simulate_group(seed, limit, partitions)
    ticks = int(HANDOVER_S / 0.05)
    for end in range(len(samples)):
        most: dict[int, int] = {}
        for sample in samples[max(0, end - ticks) : end + 1]:
            for name, capacity in sample.items():
                most[name] = max(most.get(name, 0), capacity)
        assert sum(most.values()) <= limit, (end, samples[max(0, end - ticks) : end + 1])
    used = sum(sum(sample.values()) for sample in samples)
    assert used > 0.5 * limit * len(samples)  # and the shares are not all held back
