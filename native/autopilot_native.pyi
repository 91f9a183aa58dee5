"""The Autopilot Source's common-shape email event mapping, compiled (see src/lib.rs)."""

from collections.abc import Mapping

class EmailEventMapper:
    def __init__(
        self,
        *,
        types: Mapping[str, tuple[str, str]],
        integrations: bytes,
        message_id_prefix: str,
        plain_id_max: int,
    ) -> None: ...
    def map(
        self, raw: bytes, learned_user_id: str | None, received: str, integration: bytes
    ) -> tuple[str, bytes] | None:
        """`(key, track bytes)` for `raw`, or None to hand it to the Python path."""
