"""Who may see the console and replay from it.

The console shows personal data (emails, payloads), so viewing needs `WORKER_ADMIN_TOKEN`:
as `Authorization: Bearer <token>` (curl, scripts) or as the password of HTTP Basic (a browser
asks for it; any user name). With no token configured it answers loopback clients only, and only
when they name it by a loopback host (`127.0.0.1`, `localhost`, `[::1]`): a page whose own
name resolves to 127.0.0.1 (DNS rebinding) would otherwise be same-origin with it.

A replay changes state, and a browser resends Basic credentials (and reaches loopback) on its
own, for any page that makes it post. So a replay must also carry what a foreign page cannot
send: the per-page anti-forgery token (`CsrfTokens`) in the `X-Console-Csrf` header, which the
page's own script reads from the page and sets (a foreign page can neither read the console,
which sends no CORS header, nor set a custom header on a cross-site request without a CORS
preflight, which the console never grants); a JSON body (a form cannot send one); and, when the
browser says where the request comes from (`Sec-Fetch-Site`), the console itself. A Bearer
token is such a proof already: a browser never sends one by itself.

Every console answer carries `SECURITY_HEADERS` (with a per-answer script and style nonce): no
framing (clickjacking a replay button), no caching (personal data), no referrer, nothing loaded
from anywhere but the answer itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

__all__ = [
    "CSRF_HEADER",
    "CsrfTokens",
    "Refusal",
    "Viewer",
    "security_headers",
    "viewer_of",
    "with_proof",
]

CSRF_HEADER = "X-Console-Csrf"
#: What a browser asks for credentials under (the realm of its Basic prompt).
REALM = "autopilot-worker console"
#: A page's anti-forgery token is good for this long (then: reload the page).
CSRF_MAX_AGE_S = 12 * 3600
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


@dataclass(frozen=True, slots=True)
class Viewer:
    """How a request proved it may see the console: `bearer`, `basic` or `loopback`."""

    how: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not see the console, as an HTTP status and a sentence."""

    status: int
    reason: str
    #: ask a browser for Basic credentials (401 with `WWW-Authenticate`)
    challenge: bool = False

    def headers(self) -> dict[str, str]:
        if not self.challenge:
            return {}
        return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


def _basic_password(value: str) -> str | None:
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def _is_loopback_host(host: str) -> bool:
    """Whether the Host header names this machine's loopback (port left out)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def viewer_of(request: web.Request, token: str | None) -> Viewer | Refusal:
    """Whether `request` may see the console (see the module docstring)."""
    given = request.headers.get("Authorization", "")
    if token:
        expected = token.encode()
        if given.lower().startswith("bearer ") and hmac.compare_digest(
            given[7:].strip().encode(), expected
        ):
            return Viewer("bearer")
        password = _basic_password(given)
        if password is not None and hmac.compare_digest(password.encode(), expected):
            return Viewer("basic")
        return Refusal(
            401,
            "the console needs WORKER_ADMIN_TOKEN: as the password your browser asks for (any "
            "user name), or as 'Authorization: Bearer <token>'",
            challenge=True,
        )
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return Refusal(
            403, "WORKER_ADMIN_TOKEN is not set: the console answers loopback clients only"
        )
    if not _is_loopback_host(request.host):
        return Refusal(
            403,
            "WORKER_ADMIN_TOKEN is not set: open the console as http://127.0.0.1:<port>/ or "
            "http://localhost:<port>/",
        )
    return Viewer("loopback")


class CsrfTokens:
    """Per-page anti-forgery tokens: `<issued epoch seconds>.<HMAC of it>` under a key made at
    start-up, so a token is worth nothing to another process or after a restart."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        max_age_s: float = CSRF_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        self._max_age_s = max_age_s
        self._clock = clock

    def _mac(self, issued: str) -> str:
        return hmac.new(self._key, f"console-replay:{issued}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        issued = str(int(self._clock()))
        return f"{issued}.{self._mac(issued)}"

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        issued, dot, mac = token.partition(".")
        if not dot or not issued.isdigit():
            return False
        if not hmac.compare_digest(mac.encode(), self._mac(issued).encode()):
            return False
        age = self._clock() - int(issued)
        return -60 <= age <= self._max_age_s


def with_proof(request: web.Request, viewer: Viewer, tokens: CsrfTokens) -> Refusal | None:
    """None when a state-changing request from `viewer` proves it comes from the console's own
    page (or carries a Bearer token); else why not."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return Refusal(403, f"a replay must come from the console's own page, not {site}")
    if request.content_type != "application/json":
        return Refusal(415, 'a replay is a JSON body: {"refs": ["PARTITION@OFFSET", ...]}')
    if viewer.how == "bearer":
        return None
    if not tokens.valid(request.headers.get(CSRF_HEADER)):
        return Refusal(
            403,
            f"a replay needs the page's anti-forgery token in {CSRF_HEADER} (reload the page: "
            "tokens end with the process and after 12 hours)",
        )
    return None


def security_headers(nonce: str) -> dict[str, str]:
    """What every console answer carries; `nonce` allows the page's own inline script and
    style and nothing else."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
