"""Autopilot webhook deliveries -> records for the raw Autopilot email-events topic (pure).

A delivery is one event object or an array of them. Each element is written as its own record,
its JSON re-encoded compactly, keyed by its lowercased `contact.email` when it has one (else no
key). Nothing else is checked here: the source pipeline's intake validates every event and
dead-letters the ones it cannot use, with the reason, so a bad event is never lost at the door.
"""

from __future__ import annotations

from typing import Final

import orjson

from worker.pipeline.records import OutboundRecord

__all__ = ["MAX_WEBHOOK_BYTES", "event_key", "webhook_records"]

MAX_WEBHOOK_BYTES: Final = 1024 * 1024
"""Largest delivery accepted (decompressed): under Kafka's default 1 MB record limit."""


def event_key(event: object) -> bytes | None:
    """The lowercased `contact.email` of an event, as UTF-8, if it has a non-empty one."""
    if not isinstance(event, dict):
        return None
    contact = event.get("contact")
    email = contact.get("email") if isinstance(contact, dict) else None
    if not isinstance(email, str) or not email:
        return None
    return email.lower().encode()  # as the source's intake keys it


def webhook_records(payload: object, *, topic: str) -> list[OutboundRecord]:
    """One record per event of the delivery, in order."""
    events = payload if isinstance(payload, list) else [payload]
    return [OutboundRecord(topic, event_key(event), orjson.dumps(event), []) for event in events]
