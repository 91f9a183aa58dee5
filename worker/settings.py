"""Every setting the worker reads, from the environment, frozen once read.

Secrets are `SecretStr`: they print as `**********` and reach the wire only in
`worker.delivery` (the API key header), the ingest auth check (write keys) and the Kafka
clients' connection arguments (`worker.runtime.kafka_connection`: the SASL password, the client
key's password).
`secret_values` lists them for the one masker (logs, dead letters, errors).

An invalid setting is reported by `configuration_errors` as one line per variable, naming it,
saying what is wrong and the expected form, never the value (it may be a secret).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Final, Literal, Self
from urllib.parse import unquote, urlsplit

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as SettingsInvalid
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.models.ortto_activity import TEST_WEBHOOK_FIELD_ID
from worker.models.segment_track import SEED_PROPERTIES

__all__ = [
    "FEATURES",
    "MASK",
    "MAX_ACTIVITY_ATTRIBUTES",
    "MERGE_BY_FIELDS",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "Settings",
    "SettingsInvalid",
    "configuration_errors",
    "files_unchecked",
    "get_settings",
    "kafka_security_problems",
    "mask",
    "secret_values",
]

#: What a secret value becomes wherever text leaves the process (logs, dead letters, errors).
MASK = "**********"


_files_unchecked: ContextVar[bool] = ContextVar("files_unchecked", default=False)


@contextmanager
def files_unchecked() -> Iterator[None]:
    """Settings validated within do not look for the KAFKA_SSL_*_FILE files: the deploy files
    name paths that exist in a container, not where they are checked."""
    token = _files_unchecked.set(True)
    try:
        yield
    finally:
        _files_unchecked.reset(token)


#: The features a process can run (`WORKER_FEATURES`), in the order they are built.
FEATURES = ("source", "destination", "delivery", "ingest", "warehouse")

#: How WAREHOUSE_URL names its database: a DuckDB file or a PostgreSQL server.
WAREHOUSE_SCHEMES = ("duckdb", "postgresql", "postgres")

#: `KAFKA_SECURITY_PROTOCOL`, as Kafka's clients name it (`security.protocol`).
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SECURITY_PROTOCOLS: tuple[SecurityProtocol, ...] = (
    "PLAINTEXT",
    "SSL",
    "SASL_PLAINTEXT",
    "SASL_SSL",
)
#: `KAFKA_SASL_MECHANISM` (`sasl.mechanism`): the ones aiokafka speaks, GSSAPI (Kerberos) left out.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
SASL_MECHANISMS: tuple[SaslMechanism, ...] = (
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
)


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
    topic_ortto_deliveries_retention_days: float = Field(
        30.0,
        ge=0,
        description="Retention of Ortto's delivery-results topic when the worker creates it, in "
        "days (0: kept for ever).",
    )

    # Kafka security: every client of the worker connects with these
    # (worker.runtime.kafka_connection); named as Kafka's own clients name them
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT",
        description="PLAINTEXT, SSL (TLS; a client certificate when the broker asks for one), "
        "SASL_PLAINTEXT or SASL_SSL (SASL over TLS: what managed Kafka services use).",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None,
        description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with a username and password) or "
        "OAUTHBEARER (with KAFKA_SASL_OAUTH_TOKEN_PROVIDER); required with a SASL protocol.",
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_oauth_token_provider: str | None = Field(
        None,
        description="OAUTHBEARER only: `package.module:name` of an aiokafka AbstractTokenProvider "
        "class (or a function returning one) that gives the worker its tokens, e.g. one "
        "wrapping Amazon MSK's IAM signer.",
    )
    kafka_ssl_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the brokers' certificates; unset: the "
        "system's CAs (enough for services with publicly signed certificates).",
    )
    kafka_ssl_cert_file: Path | None = Field(
        None, description="PEM client certificate, for brokers that require one (mutual TLS)."
    )
    kafka_ssl_key_file: Path | None = Field(
        None, description="PEM private key of the client certificate (mutual TLS)."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of KAFKA_SSL_KEY_FILE when the key is encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(
        True,
        description="Verify that a broker's certificate names the host connected to; turn off "
        "only for brokers reached by an address their certificate does not name.",
    )

    # Topics: inputs, outputs, dead letters
    topic_email_events: str = "autopilot.email-events"
    topic_segment_tracks: str = "segment.tracks"
    topic_segment_calls: str = "segment.calls"
    topic_autopilot_requests: str = "autopilot.requests"
    topic_autopilot_deliveries: str = "autopilot.deliveries"
    topic_dead_letters: str = "autopilot-worker.dead-letters"
    topic_ortto_requests: str = "ortto.requests"
    topic_ortto_deliveries: str = "ortto.deliveries"
    topic_ortto_activities: str = "ortto.activities"

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

    # Ortto (worker.backends.ortto): mapped and delivered when ORTTO_API_KEY is set
    ortto_api_key: SecretStr | None = Field(
        None,
        description="Ortto custom API key (X-Api-Key); with it the worker maps and delivers to "
        "Ortto.",
    )
    ortto_region: Literal["us", "au", "eu"] = Field(
        "us", description="The Ortto instance's region: its API host (ORTTO_BASE_URL wins)."
    )
    ortto_base_url: str | None = Field(
        None, description="Ortto API base URL; unset: the region's host."
    )
    ortto_rate_limit: float = Field(10.0, gt=0)
    ortto_bulk_linger_ms: int = Field(200, ge=0)
    ortto_retry_budget_s: float = Field(4 * 3600, gt=0)
    ortto_request_timeout_s: float = Field(10.0, gt=0)
    ortto_auth_probe_interval_s: float = Field(30.0, gt=0)
    ortto_give_back_after_s: float = Field(10.0, gt=0)
    ortto_async_merge: bool = Field(
        True, description="Person merges ask Ortto to process them asynchronously (volume)."
    )
    ortto_merge_by: Annotated[tuple[str, ...], NoDecode] = Field(
        ("str::ei", "str::email"),
        description="JSON array: the person fields Ortto finds a person by, in order.",
    )
    ortto_person_fields: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="JSON object: trait name -> Ortto person field id."
    )
    ortto_activities: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="JSON object: Segment event name -> Ortto activity id."
    )
    ortto_activity_attributes: Annotated[dict[str, tuple[str, ...]], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: Segment event name -> the properties sent as its attributes.",
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
        description="Token for the admin endpoints (resuming a paused pipeline) and the Event "
        "Delivery page (/console); unset: they answer loopback clients only.",
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

    # Ortto's activity webhook as a source input (worker.ingest, worker.source.ortto)
    ortto_webhook_token: SecretStr | None = Field(
        None,
        description="Token Ortto's webhook must present (basic-auth password, Bearer token or "
        "X-Ortto-Token); unset: 503.",
    )
    ortto_activity_events: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: Ortto activity field_id -> Segment event name; adds to or "
        "overrides the built-in email activities.",
    )
    ortto_attribute_properties: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: Ortto activity attr key -> the track property it fills "
        f"({', '.join(SEED_PROPERTIES)}).",
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, raw: object) -> object:
        """`sasl_ssl` and `scram-sha-512` mean what their upper-case spellings mean."""
        return raw.strip().upper() if isinstance(raw, str) else raw

    @field_validator("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        """A PEM file setting names a file this process can read (a path is not a secret, so
        the error names it: a Secret not mounted where the setting says is the usual cause).
        Deploy files are validated on machines without their certificates: within
        `files_unchecked()` the files are not looked at."""
        if path is None or _files_unchecked.get():
            return path
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
        return path

    @model_validator(mode="after")
    def _security_settings_agree(self) -> Self:
        """The KAFKA_* security settings make one consistent client configuration; each
        problem is one line `VARIABLE: what is wrong` (see `configuration_errors`)."""
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

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
        return _json_object_of_text(raw, "event name to trigger id", _TRIGGERS_FORM)

    @field_validator("ortto_activities", mode="before")
    @classmethod
    def _parse_activities(cls, raw: object) -> object:
        """ORTTO_ACTIVITIES is a JSON object mapping a Segment event name to an activity id."""
        value = _json_object_of_text(raw, "event name to activity id", _ACTIVITIES_FORM)
        if isinstance(value, dict) and not all(
            isinstance(v, str) and v.startswith("act:") for v in value.values()
        ):
            raise ValueError(f"an activity id starts with act:; {_ACTIVITIES_FORM}")
        return value

    @field_validator("ortto_person_fields", mode="before")
    @classmethod
    def _parse_person_fields(cls, raw: object) -> object:
        """ORTTO_PERSON_FIELDS is a JSON object mapping a trait name to an Ortto field id."""
        value = _json_object_of_text(raw, "trait name to Ortto field id", _PERSON_FIELDS_FORM)
        if isinstance(value, dict) and not all(
            isinstance(v, str) and _FIELD_ID.fullmatch(v) for v in value.values()
        ):
            raise ValueError(f"a field id is <type>:<namespace>:<name>; {_PERSON_FIELDS_FORM}")
        return value

    @field_validator("ortto_activity_attributes", mode="before")
    @classmethod
    def _parse_activity_attributes(cls, raw: object) -> object:
        """ORTTO_ACTIVITY_ATTRIBUTES is a JSON object: event name -> up to 15 property names."""
        if not isinstance(raw, str | bytes):
            return raw
        value = _json_value(raw, {})
        if not isinstance(value, dict) or not all(
            isinstance(names, list)
            and len(names) <= MAX_ACTIVITY_ATTRIBUTES
            and all(isinstance(name, str) and name for name in names)
            for names in value.values()
        ):
            raise ValueError(
                f"not a JSON object of event name to at most {MAX_ACTIVITY_ATTRIBUTES} property "
                f"names; {_ATTRIBUTES_FORM}"
            )
        return value

    @field_validator("ortto_merge_by", mode="before")
    @classmethod
    def _parse_merge_by(cls, raw: object) -> object:
        """ORTTO_MERGE_BY is a JSON array of str::ei and str::email, in the order Ortto tries."""
        if not isinstance(raw, str | bytes):
            return raw
        value = _json_value(raw, None)
        if (
            not isinstance(value, list)
            or not value
            or len(set(value)) != len(value)
            or not all(v in MERGE_BY_FIELDS for v in value)
        ):
            raise ValueError(
                'not a JSON array of "str::ei" and/or "str::email"; expected e.g. '
                '["str::ei", "str::email"]'
            )
        return value

    @field_validator("ortto_activity_events", "ortto_attribute_properties", mode="before")
    @classmethod
    def _parse_ortto_tables(cls, raw: object) -> object:
        """Both are JSON objects of non-empty text to non-empty text."""
        if not isinstance(raw, str | bytes):
            return raw
        if not raw.strip():
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004
        return value

    @field_validator("ortto_activity_events")
    @classmethod
    def _check_activity_events(cls, value: dict[str, str]) -> dict[str, str]:
        for field_id, event in value.items():
            if not field_id.strip() or not event.strip():
                raise ValueError("field ids and event names must not be empty")
        if TEST_WEBHOOK_FIELD_ID in value:
            raise ValueError(f"{TEST_WEBHOOK_FIELD_ID} is Ortto's test delivery, never mapped")
        return value

    @field_validator("ortto_attribute_properties")
    @classmethod
    def _check_attribute_properties(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            if not key.strip():
                raise ValueError("attr keys must not be empty")
            if name not in SEED_PROPERTIES:
                raise ValueError(
                    f"{name!r} is not a property the source fills; expected one of "
                    f"{', '.join(SEED_PROPERTIES)}"
                )
        return value


#: Ortto's limit of attributes on one activity.
MAX_ACTIVITY_ATTRIBUTES: Final = 15
#: The person fields ORTTO_MERGE_BY may name: the identifiers every Segment call can give.
MERGE_BY_FIELDS: Final = ("str::ei", "str::email")

_TRIGGERS_FORM = 'expected e.g. {"Order Completed": "0001", "Signed Up": "0002"}'
_ACTIVITIES_FORM = 'expected e.g. {"Order Completed": "act:cm:order-completed"}'
_PERSON_FIELDS_FORM = 'expected e.g. {"plan": "str:cm:plan", "seats": "int:cm:seat-count"}'
_ATTRIBUTES_FORM = 'expected e.g. {"Order Completed": ["order_id", "total"]}'
_FIELD_ID = re.compile(r"[a-z]{3}:[a-z]*:[A-Za-z0-9_-]+")


def _json_value(raw: str | bytes, empty: object) -> object:
    """The JSON value of a setting's text (`empty` for blank text, None when not JSON)."""
    if not raw.strip():
        return empty
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _json_object_of_text(raw: object, what: str, form: str) -> object:
    """A setting holding a JSON object of strings to strings, parsed (other inputs as given)."""
    if not isinstance(raw, str | bytes):
        return raw
    value = _json_value(raw, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"not a JSON object of {what}; {form}")
    return value


_WAREHOUSE_FORM = (
    "expected duckdb:///path/to/file.duckdb (duckdb://relative/path.duckdb) or "
    "postgresql://user:password@host:5432/database"
)

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _given(value: object) -> bool:
    """Set to something: an empty string or secret counts as unset."""
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return value is not None and value != ""


def kafka_security_problems(settings: Settings) -> list[str]:
    """Each way the KAFKA_* security settings disagree, as `VARIABLE: what is wrong` (never a
    value): a SASL protocol without its mechanism or credentials, SASL or TLS settings that the
    protocol would ignore (a sign that the protocol is not the one meant), a key without its
    certificate."""
    protocol = settings.kafka_security_protocol
    mechanism = settings.kafka_sasl_mechanism
    problems: list[str] = []
    sasl_settings = {
        "KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
        "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": settings.kafka_sasl_oauth_token_provider,
    }
    tls_settings = {
        "KAFKA_SSL_CA_FILE": settings.kafka_ssl_ca_file,
        "KAFKA_SSL_CERT_FILE": settings.kafka_ssl_cert_file,
        "KAFKA_SSL_KEY_FILE": settings.kafka_ssl_key_file,
        "KAFKA_SSL_KEY_PASSWORD": settings.kafka_ssl_key_password,
    }
    if protocol in _SASL_PROTOCOLS:
        if mechanism is None:
            problems.append(
                f"KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL={protocol}; "
                f"expected one of {', '.join(SASL_MECHANISMS)}"
            )
        elif mechanism == "OAUTHBEARER":
            if not _given(settings.kafka_sasl_oauth_token_provider):
                problems.append(
                    "KAFKA_SASL_OAUTH_TOKEN_PROVIDER: required with KAFKA_SASL_MECHANISM="
                    "OAUTHBEARER; expected package.module:name of a token provider"
                )
            for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
                if _given(sasl_settings[name]):
                    problems.append(
                        f"{name}: set, but KAFKA_SASL_MECHANISM=OAUTHBEARER takes its tokens "
                        "from KAFKA_SASL_OAUTH_TOKEN_PROVIDER"
                    )
        else:
            for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
                if not _given(sasl_settings[name]):
                    problems.append(f"{name}: required with KAFKA_SASL_MECHANISM={mechanism}")
            if _given(settings.kafka_sasl_oauth_token_provider):
                problems.append(
                    "KAFKA_SASL_OAUTH_TOKEN_PROVIDER: set, but only KAFKA_SASL_MECHANISM="
                    f"OAUTHBEARER uses it (it is {mechanism})"
                )
    else:
        problems.extend(
            f"{name}: set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
            "(SASL_SSL or SASL_PLAINTEXT do)"
            for name, value in sasl_settings.items()
            if _given(value)
        )
    if protocol not in _TLS_PROTOCOLS:
        problems.extend(
            f"{name}: set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
            "(SSL or SASL_SSL do)"
            for name, value in tls_settings.items()
            if _given(value)
        )
    else:
        if _given(settings.kafka_ssl_key_file) and not _given(settings.kafka_ssl_cert_file):
            problems.append("KAFKA_SSL_KEY_FILE: set without KAFKA_SSL_CERT_FILE, its certificate")
        if _given(settings.kafka_ssl_key_password) and not _given(settings.kafka_ssl_key_file):
            problems.append("KAFKA_SSL_KEY_PASSWORD: set without KAFKA_SSL_KEY_FILE, its key")
    return problems


#: The expected form of settings whose pydantic message alone would not say it.
_EXPECTED: dict[str, str] = {
    "topic_partitions": "expected a whole number of at least 1",
    "topic_replication_factor": "expected a whole number of at least 1",
    "autopilot_rate_limit": "expected requests per second above 0, e.g. 5 or 0.5",
    "ortto_rate_limit": "expected requests per second above 0, e.g. 10 or 2.5",
    "ortto_region": "expected us, au or eu",
    "worker_web_port": "expected a port number from 1 to 65535",
    "warehouse_schema": "expected a lowercase SQL name of at most 63 characters, e.g. autopilothq",
    "warehouse_calls_schema": "expected a lowercase SQL name of at most 63 characters, e.g. "
    "website",
    "ortto_activity_events": "expected a JSON object of activity field id to event name, e.g. "
    '{"act:cm:flight-booked": "Flight Booked"}',
    "ortto_attribute_properties": "expected a JSON object of activity attr key to property "
    'name, e.g. {"<attr key>": "campaign_id"}',
}


def configuration_errors(error: SettingsInvalid) -> list[str]:
    """One line per invalid variable: its name, what is wrong, the expected form; never its
    value, which may be a secret. A problem between settings (the model's own check, which has
    no single field) is already worded `VARIABLE: what`, one line each."""
    lines: list[str] = []
    for problem in error.errors(include_url=False, include_input=False):
        what = str(problem["msg"]).removeprefix("Value error, ")
        if not problem["loc"]:
            lines.extend(f"configuration error: {line}" for line in what.splitlines())
            continue
        name = str(problem["loc"][0])
        line = f"configuration error: {name.upper()}: {what}"
        expected = _EXPECTED.get(name)
        if expected:
            line += f"; {expected}"
        lines.append(line)
    return lines


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every secret value `settings` hold (the API key, each write key, the webhook and admin
    tokens, Kafka's SASL password and client key password, the warehouse URL and the password
    in it), so logs, dead letters and errors can be masked of them."""
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
