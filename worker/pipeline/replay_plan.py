"""Which selected dead letters a replay writes to the retry topic, and which it skips and why.

One plan for every way of replaying: `python -m worker dlq replay` and the console's replay
button (`worker.console`) both turn the letters they read into `plan_replay`'s records and
produce them onto the worker-private retry topic; `worker.pipeline.replay` says how the headers
are rewritten and how the worker runs a replayed message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto

from worker.pipeline.letters import DeadLetter, Origin
from worker.pipeline.records import OutboundRecord
from worker.pipeline.replay import ReplayTarget, replay_headers

__all__ = [
    "DEFAULT_MAX_REPLAYS",
    "PlannedReplay",
    "ReplayCensus",
    "ReplayPlan",
    "ReplayTally",
    "Skip",
    "classify",
    "plan_replay",
]

#: A letter replayed this many times already is skipped (the loop stopper; `--max-replays`).
DEFAULT_MAX_REPLAYS = 3


@dataclass(frozen=True, slots=True)
class PlannedReplay:
    letter: DeadLetter
    target: ReplayTarget
    record: OutboundRecord

    @property
    def replay_number(self) -> int:
        return self.letter.replay_count + 1


class Skip(Enum):
    """Why `replay` leaves a selected letter alone."""

    AT_MAX_REPLAYS = auto()
    SUPERSEDED = auto()
    WITHOUT_TARGET = auto()


def classify(
    letter: DeadLetter,
    *,
    max_replays: int,
    latest_replay: Mapping[Origin, int] | None = None,
) -> ReplayTarget | Skip:
    """The stage a selected letter is replayed through, or why it is skipped.

    `latest_replay` maps an input message (topic, partition, offset) to the highest replay
    count any letter of it carries; a letter below that count is superseded. None: no letter is.
    """
    target = letter.target
    if target is None:
        return Skip.WITHOUT_TARGET
    if letter.replay_count >= max_replays:
        return Skip.AT_MAX_REPLAYS
    origin = letter.origin
    if (
        latest_replay is not None
        and origin is not None
        and latest_replay.get(origin, 0) > letter.replay_count
    ):
        return Skip.SUPERSEDED
    return target


@dataclass
class ReplayPlan:
    """What `replay` writes for some selected letters, and what it skips and why."""

    replays: list[PlannedReplay] = field(default_factory=list)
    at_max_replays: list[DeadLetter] = field(default_factory=list)
    superseded: list[DeadLetter] = field(default_factory=list)
    without_target: list[DeadLetter] = field(default_factory=list)


def plan_replay(
    letters: Iterable[DeadLetter],
    *,
    retry_topic: str,
    max_replays: int,
    latest_replay: Mapping[Origin, int] | None = None,
) -> ReplayPlan:
    """Sort the selected letters into replays and skips, each as `classify` says."""
    plan = ReplayPlan()
    for letter in letters:
        match classify(letter, max_replays=max_replays, latest_replay=latest_replay):
            case ReplayTarget() as target:
                record = OutboundRecord(
                    topic=retry_topic,
                    key=letter.key,
                    value=letter.value,
                    headers=replay_headers(letter.headers, target, key=letter.key),
                )
                plan.replays.append(PlannedReplay(letter, target, record))
            case Skip.AT_MAX_REPLAYS:
                plan.at_max_replays.append(letter)
            case Skip.SUPERSEDED:
                plan.superseded.append(letter)
            case Skip.WITHOUT_TARGET:
                plan.without_target.append(letter)
    return plan


@dataclass
class ReplayTally:
    """How many letters a `replay` run replayed and skipped, chunk by chunk."""

    replays: int = 0
    at_max_replays: int = 0
    superseded: int = 0
    without_target: int = 0

    def add(self, plan: ReplayPlan) -> None:
        self.replays += len(plan.replays)
        self.at_max_replays += len(plan.at_max_replays)
        self.superseded += len(plan.superseded)
        self.without_target += len(plan.without_target)

    def skipped_text(self, max_replays: int) -> str:
        return (
            f"skipped {self.at_max_replays} at --max-replays {max_replays}, "
            f"{self.superseded} superseded by a later replay, "
            f"{self.without_target} without a stage to replay through"
        )


@dataclass
class ReplayCensus:
    """The first of `replay`'s two reads: what the superseded check and the progress bar need.

    Fed every dead letter (`add`), it keeps per input message its highest replay count
    (`latest`, for `classify`) and how many selected letters with each count are due, never a
    letter: it grows with the number of input messages that failed, not with the size of their
    letters. `replays` is then how many letters the second read, up to the same end offsets,
    replays: those due at their input message's latest count. Not `superseding`
    (`--include-superseded`, or letters named by reference), `latest` stays empty and nothing
    is superseded.
    """

    max_replays: int
    superseding: bool = True
    latest: dict[Origin, int] = field(default_factory=dict, init=False)
    _due: Counter[tuple[Origin | None, int]] = field(
        default_factory=Counter, init=False, repr=False
    )

    def add(self, letter: DeadLetter, *, selected: bool) -> None:
        origin, count = letter.origin, letter.replay_count
        if self.superseding and origin is not None:
            self.latest[origin] = max(self.latest.get(origin, 0), count)
        if selected and isinstance(classify(letter, max_replays=self.max_replays), ReplayTarget):
            self._due[origin, count] += 1

    @property
    def replays(self) -> int:
        latest = self.latest
        return sum(
            due
            for (origin, count), due in self._due.items()
            if origin is None or count >= latest.get(origin, 0)
        )
