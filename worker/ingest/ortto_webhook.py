"""Ortto webhook deliveries -> records for the Ortto activities topic (pure).

A delivery is one activity object or an array of them (Ortto sends one a request). Each element
is written as its own record with its original bytes (an array is split into the bytes of its
elements, as sent; the white space around a body is not part of it), keyed by its lowercased
`contact.email` when it has one (else no key). Ortto's Test button sends an activity whose
`field_id` is `act::test_webhook`: it is answered with the rest and counted, never written.
Nothing else is checked here: the source's intake validates each activity and dead-letters the
ones it cannot use, with the reason, so a bad activity is never lost at the door.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

from worker.ingest.autopilot_webhook import event_key
from worker.ingest.problems import BadRequest
from worker.models.ortto_activity import TEST_WEBHOOK_FIELD_ID
from worker.pipeline.records import OutboundRecord

__all__ = ["OrttoDelivery", "is_test_webhook", "ortto_records"]

_JSON_SPACE: Final = b" \t\r\n"
_split_array: Final = msgspec.json.Decoder(list[msgspec.Raw]).decode


class OrttoDelivery(NamedTuple):
    """What a delivery writes, and the `webhook_id` of each test activity it held ("?" when it
    has none): those are not written."""

    records: list[OutboundRecord]
    test_webhooks: list[str]


def is_test_webhook(activity: object) -> bool:
    """Whether an element is the activity Ortto's Test button sends."""
    if not isinstance(activity, dict):
        return False
    inner = activity.get("activity")
    return isinstance(inner, dict) and inner.get("field_id") == TEST_WEBHOOK_FIELD_ID


def ortto_records(data: bytes, payload: object, *, topic: str) -> OrttoDelivery:
    """One record per element of the delivery, in order, test activities left out.

    `data` is the body's JSON text and `payload` that text decoded (`worker.ingest.body`)."""
    if isinstance(payload, list):
        try:
            raws = [bytes(raw) for raw in _split_array(data)]
        except msgspec.DecodeError:  # pragma: no cover - orjson read it first
            raise BadRequest("invalid_json", "the body is not valid UTF-8 JSON") from None
        elements: list[object] = payload
    else:
        raws, elements = [data.strip(_JSON_SPACE)], [payload]
    records: list[OutboundRecord] = []
    test_ids: list[str] = []
    for element, raw in zip(elements, raws, strict=True):
        if is_test_webhook(element):
            webhook_id = element.get("webhook_id") if isinstance(element, dict) else None
            test_ids.append(webhook_id if isinstance(webhook_id, str) else "?")
            continue
        records.append(OutboundRecord(topic, event_key(element), raw, []))
    return OrttoDelivery(records, test_ids)
