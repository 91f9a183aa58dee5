"""The Autopilot Source's common-shape email event mapping and Kafka's murmur2, compiled
(see src/lib.rs)."""

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
    def contact_email(self, raw: bytes) -> str | None:
        """`contact.email` of `raw` when `map` would take it but for a test delivery or a long
        id; else None to hand it to the Python path."""

def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java's `Utils.murmur2`), as an unsigned 32-bit int."""

def home_partition(key: bytes, partitions: int) -> int:
    """`(murmur2(key) & 0x7FFFFFFF) % partitions`; ValueError unless `partitions` > 0."""
