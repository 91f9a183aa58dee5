"""Planning a batch of Ortto descriptors: people merged per person, bulks of at most 100 items
and 2 MB by envelope, each person's steps in input order."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from worker.backends.ortto.bulk import MAX_PAYLOAD_BYTES, plan_batch, split_bulk
from worker.backends.ortto.create_activity import ACTIVITIES_PATH
from worker.backends.ortto.merge_person import MERGE_PATH
from worker.backends.seam import PlannedCall
from worker.models.autopilot_request import RequestDescriptor, RequestKind

BY_BOTH = ["str::ei", "str::email"]


def merge(user: str, *, by: list[str] | None = None, **fields: Any) -> RequestDescriptor:
    return RequestDescriptor(
        path=MERGE_PATH,
        body={
            "people": [{"fields": {"str::ei": user, **fields}}],
            "async": True,
            "merge_by": by or ["str::ei"],
            "merge_strategy": 2,
            "find_strategy": 0,
        },
        kind=RequestKind.MERGE_PERSON,
        message_id=f"m-{user}-{sorted(fields)}",
        contact=user,
    )


def activity(user: str, name: str = "act:cm:signed-up", **attributes: Any) -> RequestDescriptor:
    return RequestDescriptor(
        path=ACTIVITIES_PATH,
        body={
            "activities": [
                {"activity_id": name, "attributes": attributes, "fields": {"str::ei": user}}
            ],
            "merge_by": ["str::ei"],
        },
        kind=RequestKind.CREATE_ACTIVITY,
        message_id=f"a-{user}-{name}",
        contact=user,
    )


def shape(plan: list[PlannedCall]) -> list[tuple[str, int, tuple[int, ...]]]:
    return [(c.path, len(c.groups), c.after) for c in plan]


def test_250_people_become_three_merges_of_at_most_100_settling_every_index() -> None:
    batch = [merge(f"u{n}") for n in range(250)]
    plan = plan_batch(batch)
    assert shape(plan) == [(MERGE_PATH, 100, ()), (MERGE_PATH, 100, ()), (MERGE_PATH, 50, ())]
    assert sorted(i for call in plan for i in call.settles) == list(range(250))
    assert [len(c.body["people"]) for c in plan] == [100, 100, 50]
    assert plan[0].body["merge_by"] == ["str::ei"]
    assert plan[0].body["async"] is True


def test_250_activities_become_three_creates_of_at_most_100() -> None:
    plan = plan_batch([activity(f"u{n}") for n in range(250)])
    assert [(c.path, len(c.body["activities"])) for c in plan] == [
        (ACTIVITIES_PATH, 100),
        (ACTIVITIES_PATH, 100),
        (ACTIVITIES_PATH, 50),
    ]


def test_one_persons_merges_are_merged_in_order_and_merge_by_is_their_union() -> None:
    batch = [
        merge("u1", plan="free", seats=1),
        merge("u2", plan="free"),
        merge("u1", by=BY_BOTH, plan="pro", **{"str::email": "a@x.io"}),
        merge("u2", seats=2),
    ]
    first, second = plan_batch(batch)
    # u1's merged person is found by both fields, u2 by its ei alone: two envelopes, two calls
    assert (first.body["merge_by"], first.groups) == (BY_BOTH, ((0, 2),))
    assert first.body["people"] == [
        {"fields": {"str::ei": "u1", "plan": "pro", "seats": 1, "str::email": "a@x.io"}}
    ]
    assert (second.body["merge_by"], second.groups) == (["str::ei"], ((1, 3),))
    assert second.body["people"] == [{"fields": {"str::ei": "u2", "plan": "free", "seats": 2}}]


def test_people_found_by_other_fields_never_share_a_call() -> None:
    batch = [merge("u1"), merge("u2", by=BY_BOTH, **{"str::email": "b@x.io"}), merge("u3")]
    plan = plan_batch(batch)
    assert [(c.body["merge_by"], c.groups) for c in plan] == [
        (["str::ei"], ((0,), (2,))),
        (BY_BOTH, ((1,),)),
    ]


def test_an_activity_waits_for_its_persons_merge_and_activities_keep_their_order() -> None:
    batch = [merge("u1"), activity("u1", "act:cm:a"), activity("u1", "act:cm:b"), merge("u2")]
    plan = plan_batch(batch)
    assert shape(plan) == [(MERGE_PATH, 2, ()), (ACTIVITIES_PATH, 2, (0,))]
    assert [a["activity_id"] for a in plan[1].body["activities"]] == ["act:cm:a", "act:cm:b"]
    assert plan[1].groups == ((1,), (2,))


def test_a_merge_after_an_activity_is_sent_after_that_activity() -> None:
    batch = [merge("u1", plan="free"), activity("u1"), merge("u1", plan="pro"), activity("u2")]
    plan = plan_batch(batch)
    assert shape(plan) == [
        (MERGE_PATH, 1, ()),
        (ACTIVITIES_PATH, 2, (0,)),
        (MERGE_PATH, 1, (1,)),
    ]
    assert plan[0].body["people"][0]["fields"]["plan"] == "free"
    assert plan[2].body["people"][0]["fields"]["plan"] == "pro"


def test_an_activity_found_by_other_fields_starts_a_new_generation() -> None:
    by_email = activity("u1")
    by_email.body["merge_by"] = BY_BOTH
    batch = [activity("u1", "act:cm:a"), by_email, activity("u1", "act:cm:c")]
    plan = plan_batch(batch)
    assert [(c.groups, c.after) for c in plan] == [(((0,),), ()), (((1,),), (0,)), (((2,),), (1,))]


def test_a_persons_activities_over_two_calls_keep_their_order() -> None:
    batch = [activity(f"u{n}") for n in range(99)] + [activity("u0", "act:cm:x")] * 3
    plan = plan_batch(batch)
    assert shape(plan) == [(ACTIVITIES_PATH, 100, ()), (ACTIVITIES_PATH, 2, (0,))]


def test_a_descriptor_of_another_shape_is_sent_as_it_is_in_its_place() -> None:
    odd = RequestDescriptor(
        path=MERGE_PATH,
        body={"people": [], "merge_by": ["str::ei"]},
        kind=RequestKind.MERGE_PERSON,
        message_id="odd",
        contact="u1",
    )
    plan = plan_batch([merge("u1"), odd, merge("u1", plan="pro")])
    assert [(c.body.get("people"), c.groups, c.after) for c in plan][1:] == [
        ([], ((1,),), (0,)),
        ([{"fields": {"str::ei": "u1", "plan": "pro"}}], ((2,),), (1,)),
    ]


def test_payloads_stay_under_2_mb() -> None:
    wide: dict[str, Any] = {f"str:cm:f{k}": "x" * 250 for k in range(100)}
    batch = [merge(f"u{n}", **wide) for n in range(100)]
    plan = plan_batch(batch)
    assert len(plan) > 1
    assert all(len(orjson.dumps(c.body)) <= MAX_PAYLOAD_BYTES for c in plan)
    assert sorted(i for c in plan for i in c.settles) == list(range(100))


def test_every_dependency_points_backwards_and_nothing_is_touched() -> None:
    batch = [merge(f"u{n % 7}", n=n) if n % 3 else activity(f"u{n % 7}") for n in range(60)]
    before = copy.deepcopy([b.model_dump() for b in batch])
    plan = plan_batch(batch)
    assert all(all(a < position for a in call.after) for position, call in enumerate(plan))
    assert sorted(i for call in plan for i in call.settles) == list(range(60))
    assert [b.model_dump() for b in batch] == before


def test_split_bulk_gives_one_call_per_item() -> None:
    (call,) = plan_batch([merge("u1"), merge("u2"), merge("u1", plan="pro")])
    parts = split_bulk(call)
    assert [(p.groups, len(p.body["people"]), p.body["merge_by"]) for p in parts] == [
        (((0, 2),), 1, ["str::ei"]),
        (((1,),), 1, ["str::ei"]),
    ]
    assert split_bulk(parts[0]) == []
    assert split_bulk(PlannedCall("POST", "/v1/other", {}, ((0,), (1,)))) == []


def test_empty_batch_plans_nothing() -> None:
    assert plan_batch([]) == []
