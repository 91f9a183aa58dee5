"""Every setting the worker reads, from the environment, frozen once read.

Secrets are `SecretStr`: they print as `**********` and reach the wire only in
`worker.delivery` (the API key header) and the ingest auth check (write keys).
`secret_values` lists them for the one masker (logs, dead letters, errors).

An invalid setting is reported by `configuration_errors` as one line per variable, naming it,
saying what is wrong and the expected form, never the value (it may be a secret).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated
from urllib.parse import unquote, urlsplit

import orjson
from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as SettingsInvalid
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "FEATURES",
    "MASK",
    "Settings",
    "SettingsInvalid",
    "configuration_errors",
    "get_settings",
    "mask",
    "secret_values",
]

#: What a secret value becomes wherever text leaves the process (logs, dead letters, errors).
MASK = "**********"


#: The features a process can run (`WORKER_FEATURES`), in the order they are built.
FEATURES = ("source", "destination", "delivery", "ingest", "warehouse")

#: How WAREHOUSE_URL names its database: a DuckDB file or a PostgreSQL server.
WAREHOUSE_SCHEMES = ("duckdb", "postgresql", "postgres")


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
    kafka_startup_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long the worker and its tools wait for Kafka to answer at start before "
        "they give up (exit 70).",
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions of every topic we create.")
    topic_replication_factor: int = Field(1, ge=1)
    topic_dead_letters_retention_days: float = Field(
        30.0,
        ge=0,
        description="Retention of the dead-letter topic when the worker creates it, in days "
        "(0: kept for ever). Long enough to fix a cause and replay.",
    )
    topic_autopilot_deliveries_retention_days: float = Field(
        30.0,
        ge=0,
        description="Retention of the delivery-results topic when the worker creates it, in days "
        "(0: kept for ever).",
    )

    # Topics: inputs, outputs, dead letters
    topic_email_events: str = "autopilot.email-events"
    topic_segment_tracks: str = "segment.tracks"
    topic_segment_calls: str = "segment.calls"
    topic_autopilot_requests: str = "autopilot.requests"
    topic_autopilot_deliveries: str = "autopilot.deliveries"
    topic_dead_letters: str = "autopilot-worker.dead-letters"

    # Breaker: pauses a pipeline whose own code fails (UnexpectedError); bad data never counts
    dlq_breaker_window: int = Field(
        1000, ge=1, description="Messages in the sliding window the breaker looks at."
    )
    dlq_breaker_min_messages: int = Field(
        200, ge=1, description="The breaker never trips before it has seen this many."
    )
    dlq_breaker_max_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Ratio of UnexpectedError (our bugs) over the window that pauses the pipeline.",
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

    # Which features run in this process (worker.composition)
    worker_features: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(FEATURES),
        description="Comma-separated features this process runs: ingest, source, destination, "
        "delivery, warehouse (default: all).",
    )

    # Warehouse: tracks (and optionally Segment calls) in Segment's table layout (worker.warehouse)
    warehouse_url: SecretStr | None = Field(
        None,
        description="Where the warehouse loader writes: duckdb:///path/to/file.duckdb or "
        "postgresql://user:password@host:port/database; unset: no loader.",
    )
    warehouse_schema: str = Field(
        "autopilothq",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Schema of the tracks topic's tables (Segment's <source> schema).",
    )
    warehouse_calls_schema: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="When set, the loader also takes the Segment calls topic into this schema "
        "(identifies, users, pages, screens, groups, aliases, tracks and event tables).",
    )
    warehouse_batch_size: int = Field(
        5000, ge=1, description="Messages the loader writes in one database transaction at most."
    )
    warehouse_linger_ms: int = Field(
        500, ge=0, description="How long the loader waits for a batch to fill."
    )
    warehouse_give_back_after_s: float = Field(
        10.0,
        gt=0,
        description="When a rebalance or a shutdown begins, how long the load in hand may still "
        "take; then it is given back unacked (rolled back, or loaded and deduplicated later).",
    )

    # Web
    worker_web_port: int = Field(6066, ge=1, le=65535)
    worker_admin_token: SecretStr | None = Field(
        None,
        description="Token for the admin endpoints (resuming a paused pipeline); unset: they "
        "answer loopback clients only.",
    )

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

    @field_validator("worker_features", mode="before")
    @classmethod
    def _parse_features(cls, raw: object) -> object:
        if not isinstance(raw, str):
            return raw
        named = {part.strip() for part in raw.split(",") if part.strip()}
        unknown = sorted(named - set(FEATURES))
        if unknown or not named:
            raise ValueError(
                f"unknown feature(s) {', '.join(unknown) or '(none named)'}; expected a "
                f"comma-separated subset of {', '.join(FEATURES)}"
            )
        return frozenset(named)

    @field_validator("warehouse_url", mode="before")
    @classmethod
    def _empty_warehouse_url(cls, raw: object) -> object:
        """An empty WAREHOUSE_URL is unset (compose passes `${WAREHOUSE_URL:-}` through)."""
        if isinstance(raw, str) and not raw.strip():
            return None
        return raw

    @field_validator("warehouse_url")
    @classmethod
    def _check_warehouse_url(cls, url: SecretStr | None) -> SecretStr | None:
        """A scheme the loader knows and a place to write; the value is never echoed."""
        if url is None:
            return None
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in WAREHOUSE_SCHEMES:
            raise ValueError(f"unknown database; {_WAREHOUSE_FORM}")
        if parts.scheme == "duckdb" and not (parts.netloc + parts.path).strip("/"):
            raise ValueError(f"no DuckDB file named; {_WAREHOUSE_FORM}")
        return url

    @field_validator("autopilot_triggers", mode="before")
    @classmethod
    def _parse_triggers(cls, raw: object) -> object:
        """AUTOPILOT_TRIGGERS is a JSON object mapping a Segment event name to a trigger id."""
        if not isinstance(raw, str | bytes):
            return raw
        if not raw.strip():
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"not a JSON object of event name to trigger id; {_TRIGGERS_FORM}")
        return value


_TRIGGERS_FORM = 'expected e.g. {"Order Completed": "0001", "Signed Up": "0002"}'
_WAREHOUSE_FORM = (
    "expected duckdb:///path/to/file.duckdb (duckdb://relative/path.duckdb) or "
    "postgresql://user:password@host:5432/database"
)

#: The expected form of settings whose pydantic message alone would not say it.
_EXPECTED: dict[str, str] = {
    "topic_partitions": "expected a whole number of at least 1",
    "topic_replication_factor": "expected a whole number of at least 1",
    "autopilot_rate_limit": "expected requests per second above 0, e.g. 5 or 0.5",
    "worker_web_port": "expected a port number from 1 to 65535",
    "warehouse_schema": "expected a lowercase SQL name of at most 63 characters, e.g. autopilothq",
    "warehouse_calls_schema": "expected a lowercase SQL name of at most 63 characters, e.g. "
    "website",
}


def configuration_errors(error: SettingsInvalid) -> list[str]:
    """One line per invalid variable: its name, what is wrong, the expected form; never its
    value, which may be a secret."""
    lines: list[str] = []
    for problem in error.errors(include_url=False, include_input=False):
        name = str(problem["loc"][0]) if problem["loc"] else "?"
        what = str(problem["msg"]).removeprefix("Value error, ")
        line = f"configuration error: {name.upper()}: {what}"
        expected = _EXPECTED.get(name)
        if expected:
            line += f"; {expected}"
        lines.append(line)
    return lines


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every secret value `settings` hold (the API key, each write key, the webhook and admin
    tokens, the warehouse URL and the password in it), so logs, dead letters and errors can be
    masked of them."""
    values: list[str] = []
    for name, value in settings:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            values.append(secret)
            if name == "segment_write_keys":
                values.extend(key.strip() for key in secret.split(","))
            if name == "warehouse_url":
                password = urlsplit(secret).password
                if password:
                    values.extend((password, unquote(password)))
    return tuple(v for v in values if v)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret in `secrets` replaced by `MASK`, longest first (so a secret
    that contains another is masked whole): the one masker of logs, dead letters and errors."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
