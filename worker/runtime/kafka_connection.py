"""How every Kafka client of the worker connects: TLS and SASL from the `KAFKA_*` settings.

`kafka_client_config` is the one place the security settings become a client's keyword
arguments (`bootstrap_servers`, `security_protocol`, `ssl_context`, `sasl_mechanism`,
`sasl_plain_username`/`sasl_plain_password` or `sasl_oauth_token_provider`): the topic admin,
the readiness probe, `dlq`, `check`, the demo and the benchmark harness pass it to aiokafka as
it is, and the faust app gets the same thing as `broker_credentials` (`faust_credentials`,
which faust's aiokafka driver turns back into these very arguments for its consumer, producer
and table clients; faust 0.15 expresses SCRAM and SASL_SSL without a patch).

What a connection can say before a client is built on it:

- `connection_problems`: the TLS files load (a certificate, its key and the key's password
  agree) and the OAUTHBEARER token provider imports; each problem one `configuration error:`
  line naming the setting, as invalid settings are reported.
- `probe`: one connection to each bootstrap address, the TLS handshake and SASL
  authentication included. A refusal no retry can fix (credentials refused, a certificate not
  trusted or expired, a mechanism the broker does not offer, TLS spoken to a plaintext port or
  the reverse) raises `KafkaRefused` with one line naming the setting(s); anything else (nothing
  listening, a timeout) is raised as it is, for the caller to retry.

Secrets never reach a message: they are not formatted into one, and every message goes through
the settings' masker besides.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import faust
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.admin import SaslHandShakeRequest
from faust.types.auth import CredentialsT

from worker.errors import ConfigurationError, FatalError
from worker.settings import Settings, mask, secret_values

__all__ = [
    "KafkaRefused",
    "KafkaSettingsInvalid",
    "connection_problems",
    "describe_security",
    "faust_credentials",
    "kafka_client_config",
    "outage_hint",
    "probe",
    "refusal",
    "ssl_context",
    "token_provider",
]

#: How long one probe connection may take (TCP, TLS handshake, SASL) before it counts as down.
PROBE_TIMEOUT_S = 10.0

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
#: The first bytes of a TLS alert record (content type 21, version 3.x): what a TLS port sends
#: back to a client that spoke plaintext to it, read by aiokafka as a response's size.
_TLS_ALERT_PREFIX = 0x1503


class KafkaSettingsInvalid(ConfigurationError):
    """A TLS file or the token provider named by the settings cannot be used; the message is
    the `configuration error: VARIABLE: ...` line."""


class KafkaRefused(FatalError):
    """Kafka answered and refused this client for a reason a retry does not fix (credentials,
    certificates, the mechanism, the protocol of the port); the message is one line naming the
    setting(s) to look at."""


# --- building the clients' arguments ---------------------------------------------------------


def _no_key_password() -> str:
    raise KafkaSettingsInvalid(
        "configuration error: KAFKA_SSL_KEY_FILE: the key is encrypted; set KAFKA_SSL_KEY_PASSWORD"
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every connection (None when the protocol uses no TLS): the brokers'
    certificates checked against `KAFKA_SSL_CA_FILE` (else the system's CAs), their host names
    checked unless `KAFKA_SSL_CHECK_HOSTNAME` is off, the client certificate presented when one
    is set. `KafkaSettingsInvalid` names the file that cannot be loaded."""
    if settings.kafka_security_protocol not in _TLS_PROTOCOLS:
        return None
    ca_file = settings.kafka_ssl_ca_file
    try:
        # what aiokafka's create_ssl_context(cafile=...) does, without its log line per context
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (ssl.SSLError, OSError) as error:
        raise KafkaSettingsInvalid(
            f"configuration error: KAFKA_SSL_CA_FILE: no CA certificate could be loaded from "
            f"{ca_file} ({_ssl_reason(error)}); expected PEM certificates"
        ) from None
    cert_file, key_file = settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file
    if cert_file is not None:
        key_password = settings.kafka_ssl_key_password
        password: str | Callable[[], str] = (
            key_password.get_secret_value() if key_password is not None else _no_key_password
        )
        try:
            context.load_cert_chain(cert_file, key_file, password)
        except (ssl.SSLError, OSError) as error:
            raise KafkaSettingsInvalid(_cert_chain_problem(settings, error)) from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def _cert_chain_problem(settings: Settings, error: BaseException) -> str:
    """Which of the certificate, the key and the key's password kept them from loading."""
    reason = _ssl_reason(error)
    if "KEY_VALUES_MISMATCH" in str(error).upper():
        return (
            "configuration error: KAFKA_SSL_KEY_FILE: not the key of the certificate in "
            "KAFKA_SSL_CERT_FILE"
        )
    cert_file = settings.kafka_ssl_cert_file
    try:  # the certificate alone parses as a trust anchor does
        ssl.create_default_context().load_verify_locations(cafile=cert_file)
    except (ssl.SSLError, OSError) as cert_error:
        return (
            f"configuration error: KAFKA_SSL_CERT_FILE: no PEM certificate could be loaded from "
            f"{cert_file} ({_ssl_reason(cert_error)})"
        )
    key_file = settings.kafka_ssl_key_file or cert_file
    key_setting = "KAFKA_SSL_KEY_FILE" if settings.kafka_ssl_key_file else "KAFKA_SSL_CERT_FILE"
    try:
        encrypted = key_file is not None and b"ENCRYPTED" in key_file.read_bytes()
    except OSError:
        encrypted = False
    if encrypted and settings.kafka_ssl_key_password is not None:
        return f"configuration error: KAFKA_SSL_KEY_PASSWORD: does not decrypt {key_setting}"
    return (
        f"configuration error: {key_setting}: no PEM private key could be loaded from "
        f"{key_file} ({reason})"
    )


@lru_cache(maxsize=4)
def _load_token_provider(path: str) -> AbstractTokenProvider:
    """One provider per process and path: it may cache its token."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise KafkaSettingsInvalid(
            "configuration error: KAFKA_SASL_OAUTH_TOKEN_PROVIDER: expected package.module:name"
        )
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise KafkaSettingsInvalid(
            f"configuration error: KAFKA_SASL_OAUTH_TOKEN_PROVIDER: cannot import {path}: "
            f"{type(error).__name__}: {error}"
        ) from None
    provider = (
        found() if callable(found) and not isinstance(found, AbstractTokenProvider) else found
    )
    if not isinstance(provider, AbstractTokenProvider):
        raise KafkaSettingsInvalid(
            f"configuration error: KAFKA_SASL_OAUTH_TOKEN_PROVIDER: {path} gave a "
            f"{type(provider).__name__}, not an aiokafka.abc.AbstractTokenProvider"
        )
    return provider


def token_provider(settings: Settings) -> AbstractTokenProvider | None:
    """The OAUTHBEARER token provider `KAFKA_SASL_OAUTH_TOKEN_PROVIDER` names: a subclass of
    aiokafka's `AbstractTokenProvider` (instantiated without arguments), a function returning
    an instance, or an instance; None unless the mechanism is OAUTHBEARER. The one instance is
    asked for tokens from the main event loop and from the faust consumer's thread: it must
    keep no state bound to one loop."""
    path = settings.kafka_sasl_oauth_token_provider
    if settings.kafka_sasl_mechanism != "OAUTHBEARER" or not path:
        return None
    return _load_token_provider(path.strip())


def kafka_client_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of the worker is built with (producer, consumer,
    admin, `AIOKafkaClient`): where Kafka is and how to connect to it securely. The password
    is in it in clear, for aiokafka: never log this mapping."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in _TLS_PROTOCOLS:
        config["ssl_context"] = ssl_context(settings)
    if protocol in _SASL_PROTOCOLS:
        mechanism = settings.kafka_sasl_mechanism
        config["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            config["sasl_oauth_token_provider"] = token_provider(settings)
        else:
            password = settings.kafka_sasl_password
            config["sasl_plain_username"] = settings.kafka_sasl_username
            config["sasl_plain_password"] = (
                password.get_secret_value() if password is not None else None
            )
    return config


def faust_credentials(config: Mapping[str, Any]) -> CredentialsT | None:
    """`config` (from `kafka_client_config`) as faust's `broker_credentials`, which its aiokafka
    driver turns back into the same arguments (`credentials_to_aiokafka_auth`); None for
    PLAINTEXT."""
    protocol = config["security_protocol"]
    context = config.get("ssl_context")
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if config["sasl_mechanism"] == "OAUTHBEARER":
        return faust.OAuthCredentials(
            oauth_cb=config["sasl_oauth_token_provider"], ssl_context=context
        )
    # faust takes SASL_SSL from the presence of a TLS context, SASL_PLAINTEXT from its absence
    return faust.SASLCredentials(
        username=config["sasl_plain_username"],
        password=config["sasl_plain_password"],
        ssl_context=context,
        mechanism=config["sasl_mechanism"],
    )


def connection_problems(settings: Settings) -> list[str]:
    """What keeps the security settings from making a connection before any is tried: a TLS
    file that does not load, a token provider that does not import; one line each."""
    problems: list[str] = []
    for build in (ssl_context, token_provider):
        try:
            build(settings)
        except KafkaSettingsInvalid as error:
            problems.append(mask(str(error), secret_values(settings)))
    return problems


def describe_security(settings: Settings) -> str:
    """How the worker connects, for messages: `SASL_SSL, SCRAM-SHA-512 as user x`."""
    protocol = settings.kafka_security_protocol
    parts: list[str] = [protocol]
    if protocol in _SASL_PROTOCOLS:
        mechanism = settings.kafka_sasl_mechanism or "?"
        if mechanism == "OAUTHBEARER":
            parts.append(f"{mechanism} from {settings.kafka_sasl_oauth_token_provider}")
        else:
            parts.append(f"{mechanism} as user {settings.kafka_sasl_username}")
    if protocol in _TLS_PROTOCOLS and settings.kafka_ssl_cert_file is not None:
        parts.append("client certificate")
    return ", ".join(parts)


# --- telling a refusal from an outage --------------------------------------------------------


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _ssl_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).replace("_", " ").lower()
    return str(error) or type(error).__name__


def _ca_setting(settings: Settings) -> str:
    if settings.kafka_ssl_ca_file is not None:
        return "KAFKA_SSL_CA_FILE"
    return "KAFKA_SSL_CA_FILE is unset, so only the system's CAs are trusted"


def refusal(error: BaseException, settings: Settings, address: str) -> str | None:
    """One line saying why Kafka at `address` refused this client and which setting(s) to look
    at, when `error` (from connecting) is a refusal no retry can fix; None when it may be an
    outage worth waiting for."""
    mechanism = settings.kafka_sasl_mechanism
    protocol = settings.kafka_security_protocol
    for cause in _causes(error):
        if isinstance(cause, SaslAuthenticationFailed):
            said = str(cause).removeprefix("[Error 58] SaslAuthenticationFailed: ")
            if mechanism == "OAUTHBEARER":
                settings_named = "KAFKA_SASL_OAUTH_TOKEN_PROVIDER's token"
            else:
                settings_named = (
                    f"KAFKA_SASL_USERNAME={settings.kafka_sasl_username}/KAFKA_SASL_PASSWORD"
                )
            return (
                f"Kafka at {address} refused the SASL credentials ({settings_named}, mechanism "
                f"{mechanism}, KAFKA_SASL_MECHANISM): {said}"
            )
        if isinstance(cause, UnsupportedSaslMechanismError):
            return (
                f"Kafka at {address} does not offer the SASL mechanism {mechanism} "
                "(KAFKA_SASL_MECHANISM)"
            )
        if isinstance(cause, IllegalSaslStateError):
            return (
                f"Kafka at {address} does not take SASL on this port (KAFKA_SECURITY_PROTOCOL="
                f"{protocol}): is KAFKA_BOOTSTRAP_SERVERS the address of its SASL listener?"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = _ssl_reason(cause)
            lowered = reason.lower()
            if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
                named = "KAFKA_BOOTSTRAP_SERVERS, KAFKA_SSL_CHECK_HOSTNAME"
            elif "expired" in lowered or "not yet valid" in lowered:
                named = (
                    f"the broker's certificate chain, verified with {_ca_setting(settings)}: "
                    "renewed on the broker, or this machine's clock is wrong"
                )
            else:
                named = _ca_setting(settings)
            return f"TLS handshake with Kafka at {address} failed: {reason} ({named})"
        if isinstance(cause, ssl.SSLError):
            return _tls_failure(cause, settings, address)
        if (
            isinstance(cause, asyncio.IncompleteReadError)
            and protocol not in _TLS_PROTOCOLS
            and (cause.expected or 0) >> 16 == _TLS_ALERT_PREFIX
        ):
            return (
                f"Kafka at {address} speaks TLS, and KAFKA_SECURITY_PROTOCOL is {protocol}: "
                "set SSL or SASL_SSL"
            )
    return None


def outage_hint(error: BaseException, settings: Settings) -> str:
    """What to look at besides the network when an error that may be an outage repeats: a TLS
    handshake that the other end resets is what a plaintext port does (a restarting broker may
    too, so it is waited for, with this said)."""
    if settings.kafka_security_protocol in _TLS_PROTOCOLS and any(
        isinstance(cause, ConnectionResetError) for cause in _causes(error)
    ):
        protocol = settings.kafka_security_protocol
        return (
            " (the TLS handshake was reset, as a port that does not speak TLS does: are "
            f"KAFKA_BOOTSTRAP_SERVERS and KAFKA_SECURITY_PROTOCOL={protocol} right?)"
        )
    return ""


def _tls_failure(error: ssl.SSLError, settings: Settings, address: str) -> str:
    reason = _ssl_reason(error)
    upper = str(error).upper()
    if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER_FAILURE" in upper:
        return (
            f"TLS handshake with Kafka at {address} failed: {reason}: the port does not speak TLS "
            f"(KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}, "
            "KAFKA_BOOTSTRAP_SERVERS)"
        )
    if "ALERT" in upper:
        if settings.kafka_ssl_cert_file is None:
            return (
                f"Kafka at {address} ended the TLS handshake ({reason}): it requires a client "
                "certificate, and KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE are unset"
            )
        return (
            f"Kafka at {address} refused the client certificate ({reason}; "
            "KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE)"
        )
    return f"TLS handshake with Kafka at {address} failed: {reason} ({_ca_setting(settings)})"


async def _offered_mechanisms(host: str, port: int, config: Mapping[str, Any]) -> list[str]:
    """The SASL mechanisms Kafka at host:port offers (asked the way aiokafka asks, without
    authenticating); empty when it cannot be asked."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            conn = await create_conn(
                host,
                port,
                client_id="mechanisms",
                request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
                ssl_context=config.get("ssl_context"),
                security_protocol="SSL" if config.get("ssl_context") else "PLAINTEXT",
            )
            try:
                response = await conn.send(SaslHandShakeRequest(config["sasl_mechanism"]))
            finally:
                conn.close()
    except Exception:  # noqa: BLE001  (only a detail of a message)
        return []
    return [str(m) for m in getattr(response, "enabled_mechanisms", [])]


async def probe(
    settings: Settings,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    config: Mapping[str, Any] | None = None,
) -> str:
    """Connect to the bootstrap addresses one by one as every client will (TLS handshake and
    SASL authentication included) and return the first that answered. `KafkaRefused` when one
    refuses this client for good (one line, masked); else, when none answered, the last error,
    for the caller to retry."""
    config = config if config is not None else kafka_client_config(settings)
    connection = {k: v for k, v in config.items() if k != "bootstrap_servers"}
    last: BaseException | None = None
    for host, port, _family in collect_hosts(config["bootstrap_servers"], randomize=False):
        address = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(
                    host,
                    port,
                    client_id=f"{settings.worker_app_id}-probe",
                    request_timeout_ms=int(timeout_s * 1000),
                    **connection,
                )
        except Exception as error:  # noqa: BLE001  (told apart below)
            if settings.kafka_sasl_mechanism == "OAUTHBEARER" and not isinstance(
                error, KafkaError | OSError | TimeoutError | asyncio.IncompleteReadError
            ):
                # what the token provider's token() raised: no retry makes it work
                raise KafkaRefused(
                    mask(
                        f"KAFKA_SASL_OAUTH_TOKEN_PROVIDER failed to give a token for Kafka at "
                        f"{address}: {type(error).__name__}: {error}",
                        secret_values(settings),
                    )
                ) from None
            last = error
        else:
            conn.close()
            return address
        line = refusal(last, settings, address)
        if line is not None:
            if isinstance(last, UnsupportedSaslMechanismError):
                offered = await _offered_mechanisms(host, port, config)
                if offered:
                    line += f"; it offers {', '.join(offered)}"
            raise KafkaRefused(mask(line, secret_values(settings))) from None
    assert last is not None, "no bootstrap address"
    raise last
