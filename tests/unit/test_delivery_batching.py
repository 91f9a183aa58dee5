"""Planning a batch: merged bulk upserts, triggers after their contact's upsert, input order."""

from __future__ import annotations

import copy
from typing import Any

from worker.backends.autopilot.bulk import (
    BULK_PATH,
    CONTACT_PATH,
    merge_contacts,
    plan_batch,
    split_bulk,
)
from worker.backends.seam import PlannedCall
from worker.models.autopilot_request import RequestDescriptor, RequestKind


def upsert(email: str, **fields: Any) -> RequestDescriptor:
    return RequestDescriptor(
        path=CONTACT_PATH,
        body={"contact": {"Email": email, **fields}},
        kind=RequestKind.UPSERT_CONTACT,
        message_id=f"m-{email}-{sorted(fields)}",
        contact=email,
    )


def trigger(email: str, trigger_id: str = "0001") -> RequestDescriptor:
    return RequestDescriptor(
        path=f"/v1/trigger/{trigger_id}/contact/{email}",
        body={"property": {"plan": "pro"}},
        kind=RequestKind.TRIGGER_JOURNEY,
        message_id=f"t-{email}-{trigger_id}",
        contact=email,
    )


def test_merge_later_fields_win_and_custom_is_merged() -> None:
    base = {
        "Email": "a@x.io",
        "FirstName": "Ann",
        "custom": {"string--plan": "free", "integer--age": 3},
    }
    update = {"FirstName": "Anna", "custom": {"string--plan": "pro"}}
    assert merge_contacts(base, update) == {
        "Email": "a@x.io",
        "FirstName": "Anna",
        "custom": {"string--plan": "pro", "integer--age": 3},
    }


def test_250_contacts_become_three_bulk_calls_settling_every_index() -> None:
    batch = [upsert(f"u{n}@x.io") for n in range(250)]
    plan = plan_batch(batch)
    assert [(c.path, len(c.body["contacts"])) for c in plan] == [
        (BULK_PATH, 100),
        (BULK_PATH, 100),
        (BULK_PATH, 50),
    ]
    assert [i for call in plan for i in call.settles] == list(range(250))
    assert all(call.after == () for call in plan)


def test_upserts_of_one_email_are_merged_in_order() -> None:
    batch = [
        upsert("a@x.io", FirstName="Ann", custom={"string--plan": "free"}),
        upsert("b@x.io", FirstName="Bob"),
        upsert("a@x.io", LastName="Lee", custom={"boolean--vip": True}),
        upsert("a@x.io", FirstName="Anna"),
    ]
    [call] = plan_batch(batch)
    assert call.path == BULK_PATH
    assert call.body["contacts"] == [
        {
            "Email": "a@x.io",
            "FirstName": "Anna",
            "LastName": "Lee",
            "custom": {"string--plan": "free", "boolean--vip": True},
        },
        {"Email": "b@x.io", "FirstName": "Bob"},
    ]
    assert call.groups == ((0, 2, 3), (1,))


def test_a_lone_contact_is_a_single_upsert() -> None:
    [call] = plan_batch([upsert("a@x.io", FirstName="Ann")])
    assert (call.path, call.body) == (
        CONTACT_PATH,
        {"contact": {"Email": "a@x.io", "FirstName": "Ann"}},
    )


def test_trigger_waits_for_its_contacts_upsert_and_keeps_input_order() -> None:
    batch = [
        trigger("c@x.io"),  # no pending upsert: free to go
        upsert("a@x.io"),
        trigger("a@x.io"),
        upsert("b@x.io"),
        trigger("b@x.io", "0002"),
        trigger("a@x.io", "0003"),
    ]
    plan = plan_batch(batch)
    bulk = plan[0]
    assert bulk.groups == ((1,), (3,))
    triggers = plan[1:]
    assert [call.groups for call in triggers] == [((0,),), ((2,),), ((4,),), ((5,),)]
    assert [call.after for call in triggers] == [(), (0,), (0,), (2,)]
    assert triggers[1].path == "/v1/trigger/0001/contact/a@x.io"
    assert triggers[1].body == {"property": {"plan": "pro"}}


def test_upsert_after_a_trigger_is_sent_after_that_trigger() -> None:
    batch = [
        upsert("a@x.io", FirstName="Old"),
        trigger("a@x.io"),
        upsert("a@x.io", FirstName="New"),
    ]
    plan = plan_batch(batch)
    assert [(c.path, c.groups, c.after) for c in plan] == [
        (CONTACT_PATH, ((0,),), ()),
        ("/v1/trigger/0001/contact/a@x.io", ((1,),), (0,)),
        (CONTACT_PATH, ((2,),), (1,)),
    ]
    assert plan[0].body["contact"]["FirstName"] == "Old"
    assert plan[2].body["contact"]["FirstName"] == "New"


def test_every_dependency_points_backwards() -> None:
    emails = [f"u{n % 7}@x.io" for n in range(300)]
    batch = [trigger(e) if n % 5 == 0 else upsert(e, n=n) for n, e in enumerate(emails)]
    plan = plan_batch(batch)
    assert all(dep < position for position, call in enumerate(plan) for dep in call.after)
    assert sorted(i for call in plan for i in call.settles) == list(range(300))


def test_planning_does_not_touch_the_input() -> None:
    batch = [upsert("a@x.io", custom={"k": 1}), upsert("a@x.io", custom={"j": 2})]
    before = copy.deepcopy([d.body for d in batch])
    plan_batch(batch)
    assert [d.body for d in batch] == before


def test_upsert_without_a_contact_object_is_sent_as_it_is() -> None:
    odd = RequestDescriptor(
        path=CONTACT_PATH,
        body={"oops": 1},
        kind=RequestKind.UPSERT_CONTACT,
        message_id="m",
        contact="a@x.io",
    )
    [call] = plan_batch([odd])
    assert (call.path, call.body, call.groups) == (CONTACT_PATH, {"oops": 1}, ((0,),))


def test_split_bulk_gives_one_call_per_contact() -> None:
    bulk = PlannedCall(
        "POST", BULK_PATH, {"contacts": [{"Email": "a"}, {"Email": "b"}]}, ((0, 2), (1,))
    )
    assert split_bulk(bulk) == [
        PlannedCall("POST", CONTACT_PATH, {"contact": {"Email": "a"}}, ((0, 2),)),
        PlannedCall("POST", CONTACT_PATH, {"contact": {"Email": "b"}}, ((1,),)),
    ]


def test_empty_batch_plans_nothing() -> None:
    assert plan_batch([]) == []
