"""Plan the HTTP calls for a batch of Ortto request descriptors: bulk merges and activities.

Each descriptor is one call's body with one item (`people` or `activities` of one). Rules, per
contact (the descriptor's `contact`, also the Kafka key):

- A contact's merges are merged in input order into one person (later fields win, field by
  field; the merge_by fields are the union, in order) and sent with other people in
  `POST /v1/person/merge`; its activities are sent with others in `POST /v1/activities/create`,
  in input order. Both take at most 100 items and 2 MB a request; only items whose envelope
  (merge_by, async, strategies) is the same share a request.
- One contact's steps keep their order: a merge that comes after an activity is not merged
  into the earlier one but starts a new generation, sent after that activity; an activity found
  by other fields than the contact's previous one does too (their requests could not share a
  call). Every call waits for the calls holding its contacts' earlier steps (`after`).
- Anything else (a hand-written or replayed descriptor of another shape) is sent as it is, in
  its own generation.

Each call says which input indices it settles: one group per item, in body order (a merged
person settles every merge that went into it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from worker.backends.ortto.create_activity import ACTIVITIES_PATH
from worker.backends.ortto.merge_person import MERGE_PATH
from worker.backends.seam import PlannedCall
from worker.models.autopilot_request import RequestDescriptor

__all__ = ["ARRAYS", "MAX_ITEMS", "MAX_PAYLOAD_BYTES", "plan_batch", "split_bulk"]

MAX_ITEMS: Final = 100
#: Ortto's limit of 2 MB a payload, counted as 2,000,000 bytes to stay clear of it.
MAX_PAYLOAD_BYTES: Final = 2_000_000
#: The array of items in each bulk path's body.
ARRAYS: Final = {MERGE_PATH: "people", ACTIVITIES_PATH: "activities"}


@dataclass(slots=True)
class _Person:
    item: dict[str, Any]
    envelope: dict[str, Any]
    indices: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Contact:
    generation: int = 0
    last: str = ""  # the kind of this generation's latest step: merge, activity or single
    activity_key: bytes = b""


def _single_item(request: RequestDescriptor) -> tuple[str, dict[str, Any]] | None:
    """(array name, its one item) when the descriptor has the shape the bulk paths take."""
    array = ARRAYS.get(request.path)
    items = request.body.get(array) if array else None
    if array and request.method == "POST" and isinstance(items, list) and len(items) == 1:
        item = items[0]
        if isinstance(item, dict) and isinstance(item.get("fields", {}), dict):
            return array, item
    return None


def _envelope(body: dict[str, Any], array: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != array}


def _key(envelope: dict[str, Any]) -> bytes:
    return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)


def _merged(person: _Person, item: dict[str, Any], envelope: dict[str, Any]) -> None:
    """`item` merged into `person` (later fields win; later location wins)."""
    fields = {**person.item.get("fields", {}), **item.get("fields", {})}
    person.item = {**person.item, **item, "fields": fields}
    merge_by = list(person.envelope.get("merge_by") or [])
    merge_by += [f for f in envelope.get("merge_by") or [] if f not in merge_by]
    person.envelope = {**person.envelope, **envelope, "merge_by": merge_by}


def plan_batch(batch: Sequence[RequestDescriptor]) -> list[PlannedCall]:
    contacts: defaultdict[str, _Contact] = defaultdict(_Contact)
    people: dict[tuple[str, int], _Person] = {}  # first-seen order
    activities: defaultdict[int, list[int]] = defaultdict(list)  # generation -> indices
    singles: defaultdict[int, list[int]] = defaultdict(list)
    shapes: dict[int, tuple[str, dict[str, Any]]] = {}
    for index, request in enumerate(batch):
        state = contacts[request.contact]
        shape = _single_item(request)
        if shape is None:
            if state.last:
                state.generation += 1
            state.last = "single"
            singles[state.generation].append(index)
            continue
        shapes[index] = shape
        array, item = shape
        envelope = _envelope(request.body, array)
        if array == "people":
            if state.last in ("activity", "single"):
                state.generation += 1
            state.last = "merge"
            key = (request.contact, state.generation)
            person = people.get(key)
            if person is None:
                people[key] = _Person(item, envelope, [index])
            else:
                _merged(person, item, envelope)
                person.indices.append(index)
        else:
            activity_key = _key(envelope)
            if state.last == "single" or (
                state.last == "activity" and state.activity_key != activity_key
            ):
                state.generation += 1
            state.last, state.activity_key = "activity", activity_key
            activities[state.generation].append(index)

    calls: list[PlannedCall] = []
    last_call: dict[str, int] = {}  # contact -> position of the latest call holding its steps

    def add(
        method: Literal["POST", "GET"],
        path: str,
        body: dict[str, Any],
        groups: list[tuple[int, ...]],
    ) -> None:
        holders = {batch[i].contact for group in groups for i in group}
        after = tuple(sorted({last_call[c] for c in holders if c in last_call}))
        last_call.update(dict.fromkeys(holders, len(calls)))
        calls.append(PlannedCall(method, path, body, tuple(groups), after))

    generations = max((state.generation for state in contacts.values()), default=0)
    for generation in range(generations + 1):
        merged = [p for (_, g), p in people.items() if g == generation]
        for envelope, chunk in _chunks(
            [(p.envelope, p.item, tuple(p.indices)) for p in merged], "people"
        ):
            add("POST", MERGE_PATH, envelope, chunk)
        created: list[_Entry] = [
            (_envelope(batch[i].body, "activities"), shapes[i][1], (i,))
            for i in activities[generation]
        ]
        for envelope, chunk in _chunks(created, "activities"):
            add("POST", ACTIVITIES_PATH, envelope, chunk)
        for index in singles[generation]:
            request = batch[index]
            add(request.method, request.path, request.body, [(index,)])
    return calls


_Entry = tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]
"""An item to send: its envelope, the item, the input indices it settles."""


def _chunks(
    entries: Sequence[_Entry], array: str
) -> list[tuple[dict[str, Any], list[tuple[int, ...]]]]:
    """Bodies of at most `MAX_ITEMS` items and `MAX_PAYLOAD_BYTES`, one envelope each, in the
    order the entries come (grouped by envelope, first seen first), with their groups."""
    by_envelope: dict[bytes, list[_Entry]] = {}
    for entry in entries:
        by_envelope.setdefault(_key(entry[0]), []).append(entry)
    bodies: list[tuple[dict[str, Any], list[tuple[int, ...]]]] = []
    for group in by_envelope.values():
        envelope = group[0][0]
        overhead = len(_key(envelope)) + len(array) + 8
        items: list[dict[str, Any]] = []
        groups: list[tuple[int, ...]] = []
        size = overhead
        for _, item, indices in group:
            item_size = len(orjson.dumps(item)) + 1
            if items and (len(items) == MAX_ITEMS or size + item_size > MAX_PAYLOAD_BYTES):
                bodies.append(({array: items, **envelope}, groups))
                items, groups, size = [], [], overhead
            items.append(item)
            groups.append(indices)
            size += item_size
        bodies.append(({array: items, **envelope}, groups))
    return bodies


def split_bulk(call: PlannedCall) -> list[PlannedCall]:
    """One call per item of a bulk call, so one bad item fails alone; [] for a single."""
    array = ARRAYS.get(call.path)
    if array is None:
        return []
    items = call.body.get(array)
    if not isinstance(items, list) or len(call.groups) < 2 or len(items) != len(call.groups):
        return []
    envelope = _envelope(call.body, array)
    return [
        PlannedCall(call.method, call.path, {array: [item], **envelope}, (group,))
        for item, group in zip(items, call.groups, strict=True)
    ]
