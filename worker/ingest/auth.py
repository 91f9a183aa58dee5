"""Who may write: Segment write keys, the Autopilot webhook token and the Ortto webhook token.

Segment's clients authenticate with HTTP Basic, the write key as the user name and an empty
password (the password is not looked at), or with `writeKey` in the JSON body. When an
`Authorization: Basic` header is present it decides alone, before the body is read; otherwise
the body's `writeKey` does. The webhook token may come in `X-Autopilot-Token`, in
`Authorization: Bearer`, or in the `token` query parameter (Autopilot's REST hooks take only a
target URL, so in practice the query parameter), looked at in that order.

Ortto's webhook signs nothing and takes basic auth or custom headers, so its token may come in
`X-Ortto-Token`, as the password of `Authorization: Basic` (any user name), or in
`Authorization: Bearer`, looked at in that order.

Comparisons run in constant time; no secret is ever put into a rejection or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Final

from pydantic import SecretStr

from worker.ingest.problems import Unauthorized, Unavailable

__all__ = [
    "ORTTO_TOKEN_HEADER",
    "WEBHOOK_TOKEN_HEADER",
    "WEBHOOK_TOKEN_QUERY",
    "WriteKeys",
    "authenticate_header",
    "basic_credentials",
    "basic_user",
    "check_ortto_token",
    "check_webhook_token",
    "check_write_key",
    "require_configured",
    "write_keys",
]

#: Where the webhook token is looked for (names, not secrets).
WEBHOOK_TOKEN_HEADER: Final = "X-Autopilot-Token"  # noqa: S105
WEBHOOK_TOKEN_QUERY: Final = "token"  # noqa: S105
ORTTO_TOKEN_HEADER: Final = "X-Ortto-Token"  # noqa: S105

WriteKeys = tuple[bytes, ...]
"""The accepted write keys, as bytes for `hmac.compare_digest`."""


def write_keys(configured: SecretStr | None) -> WriteKeys:
    """The keys of SEGMENT_WRITE_KEYS (comma-separated; blanks ignored)."""
    if configured is None:
        return ()
    keys = (key.strip() for key in configured.get_secret_value().split(","))
    return tuple(key.encode() for key in keys if key)


def _matches(candidate: str, accepted: WriteKeys) -> bool:
    given = candidate.encode()
    # Compare against every key, so the time taken does not tell which one came close.
    return any([hmac.compare_digest(given, key) for key in accepted])  # noqa: C419


def require_configured(keys: WriteKeys) -> None:
    """No key configured is the operator's mistake, not the client's: 503, so clients retry."""
    if not keys:
        raise Unavailable(
            "segment_api_not_configured", "this endpoint is not configured (SEGMENT_WRITE_KEYS)"
        )


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user name, password) of an `Authorization: Basic` header; None when there is no such
    header. A Basic header that does not decode reads as both empty (wrong, not absent)."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def basic_user(authorization: str | None) -> str | None:
    """The user name of an `Authorization: Basic` header; None when there is no such header.

    A Basic header that does not decode reads as an empty user name (a wrong key, not none).
    """
    credentials = basic_credentials(authorization)
    return None if credentials is None else credentials[0]


def check_write_key(candidate: object, keys: WriteKeys) -> None:
    """Raise `Unauthorized` unless `candidate` is one of `keys`."""
    require_configured(keys)
    if not isinstance(candidate, str) or not candidate:
        raise Unauthorized("unauthorized", "a write key is required (HTTP Basic user or writeKey)")
    if not _matches(candidate, keys):
        raise Unauthorized("unauthorized", "the write key is not valid")


def authenticate_header(authorization: str | None, keys: WriteKeys) -> bool:
    """True when a Basic header carries a valid key, False when there is no Basic header.

    A Basic header with a wrong key raises `Unauthorized` at once: the body is not read.
    """
    require_configured(keys)
    user = basic_user(authorization)
    if user is None:
        return False
    check_write_key(user, keys)
    return True


def check_webhook_token(
    headers: Mapping[str, str], query: Mapping[str, str], expected: SecretStr | None
) -> None:
    """Raise unless the request presents the webhook token; never a 410 (see the module doc)."""
    if expected is None or not expected.get_secret_value():
        raise Unavailable(
            "webhook_not_configured", "this endpoint is not configured (AUTOPILOT_WEBHOOK_TOKEN)"
        )
    given = headers.get(WEBHOOK_TOKEN_HEADER)
    if given is None:
        scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            given = credentials.strip()
    if given is None:
        given = query.get(WEBHOOK_TOKEN_QUERY)
    _check_token(given, expected)


def check_ortto_token(headers: Mapping[str, str], expected: SecretStr | None) -> None:
    """Raise unless the request presents ORTTO_WEBHOOK_TOKEN (see the module doc)."""
    if expected is None or not expected.get_secret_value():
        raise Unavailable(
            "webhook_not_configured", "this endpoint is not configured (ORTTO_WEBHOOK_TOKEN)"
        )
    given = headers.get(ORTTO_TOKEN_HEADER)
    if given is None:
        authorization = headers.get("Authorization")
        credentials = basic_credentials(authorization)
        if credentials is not None:
            given = credentials[1]
        elif authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                given = token.strip()
    _check_token(given, expected)


def _check_token(given: str | None, expected: SecretStr) -> None:
    if not given:
        raise Unauthorized("unauthorized", "a webhook token is required")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("unauthorized", "the webhook token is not valid")
