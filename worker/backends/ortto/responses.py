"""What Ortto's responses say beyond their status: person ids, refused items, when to retry.

- A 429 carries its hint nested: `{"error": {"code": "rate-limit", "message": "rate limit",
  "try-in-seconds": 10}}` (Autopilot's is at the top; both are read, nested first).
- A merge may answer per person, `{"people": [{"person_id": "...", "status": "merged"}, ...]}`
  in body order, and activities per activity, `{"activities": [{"person_id": ...}, ...]}`.
  Ortto's public reference shows the requests, not these answers in full; so an answer is read
  per item only when it holds exactly one entry per item, and an entry whose `status` is
  `error`, or that carries an `error` member, is that item refused (the stand-in answers so).
  Anything else about a 2xx is "every item accepted, no id".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from worker.backends.ortto.bulk import ARRAYS
from worker.backends.seam import PlannedCall

__all__ = ["PROBE_BODY", "PROBE_PATH", "item_errors", "person_ids", "try_in_seconds"]

PROBE_PATH: Final = "/v1/person/get"
"""Ortto's "retrieve people" (a POST): asked while paused, any answer but 401/403 proves the key."""
PROBE_BODY: Final[Mapping[str, Any]] = MappingProxyType({"limit": 1, "fields": ["str::email"]})


def _entries(call: PlannedCall, data: Mapping[str, Any]) -> list[Any] | None:
    array = ARRAYS.get(call.path)
    entries = data.get(array) if array else None
    if isinstance(entries, list) and len(entries) == len(call.groups):
        return entries
    return None


def person_ids(call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
    """Ortto's person id for each item of `call` (None where it gave none)."""
    entries = _entries(call, data) or [None] * len(call.groups)
    ids = [e.get("person_id") if isinstance(e, dict) else None for e in entries]
    return [i if isinstance(i, str) else None for i in ids]


def _refusal(entry: Any) -> str | None:
    if not isinstance(entry, dict) or (entry.get("status") != "error" and "error" not in entry):
        return None
    error = entry.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) and error else "refused, without a reason"


def item_errors(call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
    """Why Ortto refused each item of `call` inside its 2xx answer (None: accepted)."""
    entries = _entries(call, data) or [None] * len(call.groups)
    return [_refusal(entry) for entry in entries]


def try_in_seconds(data: Mapping[str, Any]) -> float | None:
    """The body's `error.try-in-seconds` (else a top-level `try-in-seconds`), if it is a
    finite number (never below 0)."""
    error = data.get("error")
    value = error.get("try-in-seconds") if isinstance(error, dict) else None
    if value is None:
        value = data.get("try-in-seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None
