"""Plan the HTTP calls for a batch of request descriptors: bulk upserts, then what depends on them.

Rules, per contact (the lowercased email, which is also the Kafka key):
- Upserts are merged in input order (later fields win; `custom` is merged key by key) and sent
  as `POST /v1/contacts` with at most 100 contacts per call (`POST /v1/contact` for a lone one).
- Every other request (journey triggers) is sent as it is, in input order, only after the call
  holding that contact's pending upsert has its final outcome.
- An upsert that comes after a trigger for the same contact is not merged into the earlier
  upsert: it starts a new generation that is sent after that trigger. So the journey sees the
  contact as it was when the trigger was sent, and one contact's requests keep their order.

The plan is a list of calls in an order that respects `after`; each call says which input
indices it settles (`groups`: one group per contact in the body, in body order).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.backends.seam import PlannedCall
from worker.models.autopilot_request import RequestDescriptor, RequestKind

__all__ = [
    "BULK_PATH",
    "CONTACT_PATH",
    "MAX_BULK_CONTACTS",
    "merge_contacts",
    "plan_batch",
    "split_bulk",
]

CONTACT_PATH = "/v1/contact"
BULK_PATH = "/v1/contacts"
MAX_BULK_CONTACTS = 100


@dataclass(slots=True)
class _Upsert:
    contact: dict[str, Any] = field(default_factory=dict)
    indices: list[int] = field(default_factory=list)


def merge_contacts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`; the nested `custom` objects are merged rather than replaced."""
    merged = {**base, **update}
    if isinstance(base.get("custom"), dict) and isinstance(update.get("custom"), dict):
        merged["custom"] = {**base["custom"], **update["custom"]}
    return merged


def plan_batch(batch: Sequence[RequestDescriptor]) -> list[PlannedCall]:
    upserts: dict[tuple[str, int], _Upsert] = {}  # (contact, generation), first-seen order
    singles: defaultdict[int, list[int]] = defaultdict(list)  # generation -> input indices
    generation: defaultdict[str, int] = defaultdict(int)
    for index, request in enumerate(batch):
        contact = request.body.get("contact")
        if request.kind is RequestKind.UPSERT_CONTACT and isinstance(contact, dict):
            upsert = upserts.setdefault((request.contact, generation[request.contact]), _Upsert())
            upsert.contact = merge_contacts(upsert.contact, contact)
            upsert.indices.append(index)
        else:
            singles[generation[request.contact]].append(index)
            generation[request.contact] += 1

    calls: list[PlannedCall] = []
    upsert_call: dict[tuple[str, int], int] = {}  # (contact, generation) -> plan position
    single_call: dict[tuple[str, int], int] = {}  # the single that ended that generation
    for gen in range(max(generation.values(), default=0) + 1):
        keys = [key for key in upserts if key[1] == gen]
        for start in range(0, len(keys), MAX_BULK_CONTACTS):
            chunk = keys[start : start + MAX_BULK_CONTACTS]
            after = tuple(sorted({single_call[(email, gen - 1)] for email, _ in chunk if gen > 0}))
            contacts = [upserts[key].contact for key in chunk]
            groups = tuple(tuple(upserts[key].indices) for key in chunk)
            path, body = (
                (CONTACT_PATH, {"contact": contacts[0]})
                if len(chunk) == 1
                else (BULK_PATH, {"contacts": contacts})
            )
            upsert_call.update(dict.fromkeys(chunk, len(calls)))
            calls.append(PlannedCall("POST", path, body, groups, after))
        for index in singles[gen]:
            request = batch[index]
            key = (request.contact, gen)
            previous = upsert_call.get(key, single_call.get((request.contact, gen - 1)))
            after = () if previous is None else (previous,)
            single_call[key] = len(calls)
            calls.append(
                PlannedCall(request.method, request.path, request.body, ((index,),), after)
            )
    return calls


def split_bulk(call: PlannedCall) -> list[PlannedCall]:
    """One `POST /v1/contact` per contact of a bulk call, so one bad contact fails alone; []
    for a call that is not a bulk."""
    if call.path != BULK_PATH or len(call.groups) < 2:
        return []
    return [
        PlannedCall("POST", CONTACT_PATH, {"contact": contact}, (group,))
        for contact, group in zip(call.body["contacts"], call.groups, strict=True)
    ]
