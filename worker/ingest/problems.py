"""Why an ingest request is refused: a closed family of rejections, each with one status.

    Rejected                      (abstract)
    ├── BadRequest                400  invalid JSON, a body of the wrong shape
    │   └── TooLarge              400  over 32 KB per message or 500 KB per request
    ├── Unauthorized              401  missing or wrong write key / webhook token
    ├── NotFound                  404  nothing is served at the path
    ├── MethodNotAllowed          405  the path does not take the method (`Allow` says which)
    ├── InternalError             500  the worker failed on the request (a bug; logged); retry
    └── Unavailable               503  Kafka did not acknowledge every message, or the endpoint
                                       is not configured; the client should retry

A webhook is never answered 410 (Autopilot deletes a hook that answers 410). Messages name
what was wrong, never a secret: a write key or token is never formatted into a rejection.
The JSON body, `{"success": false, "code": ..., "message": ...}`, has the fields the official
Segment libraries read from an error answer.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

__all__ = [
    "OK_BODY",
    "BadRequest",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "Rejected",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]

#: The answer once every message of a request is stored.
OK_BODY = orjson.dumps({"success": True})


class Rejected(Exception):
    """Base of the family; `code` is a stable machine-readable label."""

    status: ClassVar[int] = 500

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def body(self) -> bytes:
        """The JSON answer for this rejection."""
        return orjson.dumps({"success": False, "code": self.code, "message": self.message})


class BadRequest(Rejected):
    """The request can never be accepted as it is; retrying it unchanged will not help."""

    status = 400


class TooLarge(BadRequest):
    """Over one of Segment's size limits (still a 400, as Segment answers)."""


class Unauthorized(Rejected):
    """No credential, or one that is not accepted."""

    status = 401


class NotFound(Rejected):
    """No endpoint at the path (a client pointed at the wrong host or path)."""

    status = 404


class MethodNotAllowed(Rejected):
    """The path exists but does not take the request's method."""

    status = 405


class InternalError(Rejected):
    """The worker failed on the request (a bug, logged with its traceback): nothing of the
    request can be promised stored, and the client retries as for a 503."""

    status = 500


class Unavailable(Rejected):
    """Nothing of the request can be promised stored; the client should retry later."""

    status = 503
