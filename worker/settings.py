"""Every setting the worker reads, from the environment, frozen once read.

Secrets are `SecretStr`: they print as `**********` and reach the wire only in
`worker.delivery` (the API key header) and the ingest auth check (write keys).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import orjson
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """The worker's configuration. The README's configuration table lists these one by one."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", env_prefix="", env_ignore_empty=True
    )

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    worker_app_id: str = Field(
        "autopilot-worker", description="Faust app id: consumer group and internal topic prefix."
    )
    broker_session_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds before the group gives up on a member that stopped heartbeating: "
        "how long a crashed worker's partitions wait for its replacement (faust's default: 60).",
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions of every topic we create.")
    topic_replication_factor: int = Field(1, ge=1)

    # Topics: inputs, outputs, dead letters
    topic_email_events: str = "autopilot.email-events"
    topic_segment_tracks: str = "segment.tracks"
    topic_segment_calls: str = "segment.calls"
    topic_autopilot_requests: str = "autopilot.requests"
    topic_autopilot_deliveries: str = "autopilot.deliveries"
    topic_dead_letters: str = "autopilot-worker.dead-letters"

    # Dead-letter breaker
    dlq_breaker_window: int = Field(
        1000, ge=1, description="Messages in the sliding window the breaker looks at."
    )
    dlq_breaker_min_messages: int = Field(
        200, ge=1, description="The breaker never trips before it has seen this many."
    )
    dlq_breaker_max_ratio: float = Field(
        0.8, gt=0, le=1, description="Dead-letter ratio over the window that stops the worker."
    )

    # Destination mapping
    autopilot_trigger_id: str | None = None
    autopilot_triggers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    autopilot_typed_custom_fields: bool = True

    # Delivery
    autopilot_api_key: SecretStr | None = None
    autopilot_base_url: str = "https://api2.autopilothq.com"
    autopilot_rate_limit: float = Field(5.0, gt=0)
    autopilot_bulk_linger_ms: int = Field(200, ge=0)
    autopilot_retry_budget_s: float = Field(4 * 3600, gt=0)
    autopilot_request_timeout_s: float = Field(10.0, gt=0)
    autopilot_auth_probe_interval_s: float = Field(30.0, gt=0)
    autopilot_give_back_after_s: float = Field(
        10.0,
        gt=0,
        description="When a rebalance or a shutdown begins, how long the delivery batch in hand "
        "may still take; then it is given back unacked, for the partition's next owner.",
    )

    # Web
    worker_web_port: int = 6066

    # Ingest: the Segment HTTP API and the Autopilot webhook on the web server (worker.ingest)
    segment_write_keys: SecretStr | None = Field(
        None, description="Comma-separated write keys the Segment API accepts; unset: 503."
    )
    autopilot_webhook_token: SecretStr | None = Field(
        None, description="Token the Autopilot webhook must present; unset: 503."
    )
    ingest_kafka_timeout_s: float = Field(
        10.0, gt=0, description="How long a request waits for Kafka's acks before a 503."
    )

    @field_validator("autopilot_triggers", mode="before")
    @classmethod
    def _parse_triggers(cls, raw: object) -> object:
        """AUTOPILOT_TRIGGERS is a JSON object mapping a Segment event name to a trigger id."""
        if not isinstance(raw, str | bytes):
            return raw
        if not raw.strip():
            return {}
        value = orjson.loads(raw)
        if not isinstance(value, dict):
            raise ValueError(  # noqa: TRY004  (pydantic reports ValueError as a validation error)
                "AUTOPILOT_TRIGGERS must be a JSON object of event name -> trigger id"
            )
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
