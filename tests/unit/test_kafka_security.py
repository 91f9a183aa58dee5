"""The Kafka security settings, the one connection builder, and how a refusal is told apart.

No broker: the settings are validated as pydantic values, the clients' arguments compared with
what faust's aiokafka driver makes of `broker_credentials`, and the refusals classified from
aiokafka's and ssl's own exceptions, or from real TLS handshakes with a small TLS server on
loopback (an expired certificate, a certificate for another host). Certificates come from the
`openssl` command line, as the secured test broker's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from tests.conftest import load_localkafka
from tests.workerproc import free_port
from worker.runtime import kafka_connection, topic_admin
from worker.runtime.app import create_app
from worker.runtime.health import BrokerProbe
from worker.runtime.kafka_connection import (
    KafkaRefused,
    KafkaSettingsInvalid,
    connection_problems,
    faust_credentials,
    kafka_client_config,
    outage_hint,
    probe,
    refusal,
    ssl_context,
    token_provider,
)
from worker.settings import Settings, SettingsInvalid, configuration_errors, secret_values

PASSWORD = "sasl-pw-4e1d9"
ADDRESS = "broker.example:9093"


class Tokens(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped to mypy
    """An OAUTHBEARER token provider, as a user's module would have one."""

    async def token(self) -> str:
        return "a-token"


def tokens_factory() -> Tokens:
    return Tokens()


class NotAProvider:
    pass


def problems(**settings: Any) -> list[str]:
    try:
        Settings(**settings)
    except SettingsInvalid as error:
        return configuration_errors(error)
    return []


def scram(**more: Any) -> Settings:
    return Settings(
        kafka_bootstrap_servers=ADDRESS,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="worker",
        kafka_sasl_password=PASSWORD,
        **more,
    )


# --- certificates ----------------------------------------------------------------------------

_CA_CONFIG = """\
[ca]
default_ca = test
[test]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = none
unique_subject = no
[anything]
commonName = supplied
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {san}
"""


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue_server_cert(
    tls: Any, out: Path, *, san: str, start: str | None = None, end: str | None = None
) -> tuple[Path, Path]:
    """A server certificate signed by `tls`'s CA (localkafka's TlsFiles), for `san`, valid
    from `start` to `end` (openssl's YYYYMMDDHHMMSSZ; default: now, for a year)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.txt").write_text("")
    (out / "serial").write_text("1000\n")
    (out / "ca.cnf").write_text(_CA_CONFIG.format(dir=out, san=san))
    _openssl(out, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", "key.pem")  # fmt: skip
    _openssl(out, "req", "-new", "-key", "key.pem", "-subj", "/CN=server", "-out", "req.csr")
    dates = ["-startdate", start, "-enddate", end] if start and end else ["-days", "365"]
    _openssl(out, "ca", "-batch", "-config", "ca.cnf", "-extensions", "server", "-notext",
             "-cert", str(tls.ca_cert), "-keyfile", str(tls.ca_key), "-in", "req.csr",
             "-out", "cert.pem", *dates)  # fmt: skip
    return out / "cert.pem", out / "key.pem"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA, a server and a client certificate (localkafka's make_tls_files)."""
    return load_localkafka().make_tls_files(tmp_path_factory.mktemp("tls") / "set")


@contextlib.asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[int]:
    """A loopback TLS server presenting `cert` that closes every connection; its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def close(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            ["KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL=SASL_SSL; expected "
             "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"],
        ),
        (
            {"kafka_security_protocol": "sasl_ssl", "kafka_sasl_mechanism": "scram-sha-256"},
            ["KAFKA_SASL_USERNAME: required with KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
             "KAFKA_SASL_PASSWORD: required with KAFKA_SASL_MECHANISM=SCRAM-SHA-256"],
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "OAUTHBEARER"},
            ["KAFKA_SASL_OAUTH_TOKEN_PROVIDER: required with KAFKA_SASL_MECHANISM=OAUTHBEARER; "
             "expected package.module:name of a token provider"],
        ),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD},
            ["KAFKA_SASL_USERNAME: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL "
             "(SASL_SSL or SASL_PLAINTEXT do)",
             "KAFKA_SASL_PASSWORD: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL "
             "(SASL_SSL or SASL_PLAINTEXT do)"],
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
             "kafka_sasl_username": "u", "kafka_sasl_password": "p",
             "kafka_ssl_ca_file": __file__},
            ["KAFKA_SSL_CA_FILE: set, but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use "
             "TLS (SSL or SASL_SSL do)"],
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_file": __file__},
            ["KAFKA_SSL_KEY_FILE: set without KAFKA_SSL_CERT_FILE, its certificate"],
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/no/such/cert.pem"},
            ["KAFKA_SSL_CERT_FILE: no such file: /no/such/cert.pem"],
        ),
        (
            {"kafka_security_protocol": "TLS"},
            ["KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or "
             "'SASL_SSL'"],
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"},
            ["KAFKA_SASL_MECHANISM: Input should be 'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512' "
             "or 'OAUTHBEARER'"],
        ),
    ],
)  # fmt: skip
def test_security_settings_that_disagree_are_one_line_each(
    settings: dict[str, Any], expected: list[str]
) -> None:
    assert problems(**settings) == [f"configuration error: {line}" for line in expected]
    assert not any(PASSWORD in line for line in problems(**settings))


def test_security_settings_that_agree() -> None:
    assert problems() == []
    assert problems(kafka_security_protocol="SSL") == []  # system CAs, no client certificate
    assert problems(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                    kafka_sasl_username="key", kafka_sasl_password="secret") == []  # fmt: skip
    assert problems(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER",
                    kafka_sasl_oauth_token_provider="m:T") == []  # fmt: skip
    # compose passes an unset secret on as an empty value
    assert problems(kafka_sasl_password="", kafka_ssl_key_password="") == []


def test_the_kafka_secrets_are_masked_everywhere() -> None:
    settings = scram(
        kafka_ssl_cert_file=__file__,
        kafka_ssl_key_file=__file__,
        kafka_ssl_key_password="key-pw-77aa",
    )
    assert {PASSWORD, "key-pw-77aa"} <= set(secret_values(settings))
    assert PASSWORD not in repr(settings)


# --- the clients' arguments ------------------------------------------------------------------


def test_plaintext_has_no_security_arguments() -> None:
    config = kafka_client_config(Settings(kafka_bootstrap_servers=ADDRESS))
    assert config == {"bootstrap_servers": ADDRESS, "security_protocol": "PLAINTEXT"}
    assert faust_credentials(config) is None


def test_sasl_ssl_with_scram(tls: Any) -> None:
    config = kafka_client_config(scram(kafka_ssl_ca_file=tls.ca_cert))
    context = config.pop("ssl_context")
    assert config == {
        "bootstrap_servers": ADDRESS,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "localkafka test CA"),),)
    ]


def test_mutual_tls_and_no_hostname_check(tls: Any) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=tls.ca_cert,
        kafka_ssl_cert_file=tls.client_cert,
        kafka_ssl_key_file=tls.client_key,
        kafka_ssl_check_hostname=False,
    )
    config = kafka_client_config(settings)
    assert config["security_protocol"] == "SSL"
    assert config["ssl_context"].check_hostname is False
    assert config["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # the chain is still checked
    assert "sasl_mechanism" not in config


def test_sasl_plaintext_has_no_tls_context() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password=PASSWORD,
    )
    config = kafka_client_config(settings)
    assert "ssl_context" not in config
    assert config["sasl_mechanism"] == "PLAIN"


def test_oauthbearer_takes_its_tokens_from_the_provider() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider=f"{__name__}:Tokens",
    )
    config = kafka_client_config(settings)
    assert isinstance(config["sasl_oauth_token_provider"], Tokens)
    assert "sasl_plain_password" not in config
    # one provider per process (it may cache its token)
    assert token_provider(settings) is config["sasl_oauth_token_provider"]


@pytest.mark.parametrize(
    "path", [f"{__name__}:Tokens", f"{__name__}:tokens_factory", f"{__name__}:PROVIDER"]
)
def test_a_token_provider_is_a_class_a_function_or_an_instance(path: str) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider=path,
    )
    assert isinstance(token_provider(settings), Tokens)


PROVIDER = Tokens()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("no_such_module_19:Tokens", "cannot import no_such_module_19:Tokens: ModuleNotFound"),
        (f"{__name__}:Missing", "cannot import"),
        ("just_a_module", "expected package.module:name"),
        (f"{__name__}:NotAProvider", "gave a NotAProvider, not an aiokafka.abc"),
    ],
)
def test_a_token_provider_that_cannot_be_used_is_a_configuration_error(
    path: str, says: str
) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider=path,
    )
    (line,) = connection_problems(settings)
    assert line.startswith("configuration error: KAFKA_SASL_OAUTH_TOKEN_PROVIDER: ")
    assert says in line


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(kafka_security_protocol="SSL"),
        Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="u",
            kafka_sasl_password=PASSWORD,
        ),
        scram(),
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="OAUTHBEARER",
            kafka_sasl_oauth_token_provider=f"{__name__}:Tokens",
        ),
    ],
    ids=["plaintext", "ssl", "sasl_plaintext", "sasl_ssl", "oauthbearer"],
)
def test_faust_gives_its_clients_the_same_arguments(settings: Settings) -> None:
    """faust's aiokafka driver turns `broker_credentials` into its clients' arguments; they must
    be the ones every other client gets (faust expresses SCRAM and SASL_SSL unpatched)."""
    config = kafka_client_config(settings)
    expected = {k: v for k, v in config.items() if k != "bootstrap_servers"}
    app_credentials = create_app(settings).conf.broker_credentials
    for credentials in (faust_credentials(config), app_credentials):
        made = dict(credentials_to_aiokafka_auth(credentials))
        if "ssl_context" in expected:
            assert isinstance(made.pop("ssl_context"), ssl.SSLContext)
            assert made == {k: v for k, v in expected.items() if k != "ssl_context"}
        else:
            assert {k: v for k, v in made.items() if v is not None} == expected


def test_files_that_do_not_load_are_named(tls: Any, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    ssl_settings: dict[str, Any] = {"kafka_security_protocol": "SSL"}

    (line,) = connection_problems(Settings(**ssl_settings, kafka_ssl_ca_file=garbage))
    assert line.startswith("configuration error: KAFKA_SSL_CA_FILE: no CA certificate could be")

    mismatched = Settings(**ssl_settings, kafka_ssl_cert_file=tls.client_cert,
                          kafka_ssl_key_file=tls.broker_key)  # fmt: skip
    assert connection_problems(mismatched) == [
        "configuration error: KAFKA_SSL_KEY_FILE: not the key of the certificate in "
        "KAFKA_SSL_CERT_FILE"
    ]
    (line,) = connection_problems(Settings(**ssl_settings, kafka_ssl_cert_file=garbage,
                                           kafka_ssl_key_file=tls.client_key))  # fmt: skip
    assert line.startswith("configuration error: KAFKA_SSL_CERT_FILE: no PEM certificate could")
    (line,) = connection_problems(Settings(**ssl_settings, kafka_ssl_cert_file=tls.client_cert,
                                           kafka_ssl_key_file=garbage))  # fmt: skip
    assert line.startswith("configuration error: KAFKA_SSL_KEY_FILE: no PEM private key could")


def test_an_encrypted_key_needs_its_password(tls: Any, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted-key.pem"
    _openssl(tmp_path, "pkey", "-in", str(tls.client_key), "-aes256", "-passout",
             "pass:right-pw-1", "-out", str(encrypted))  # fmt: skip
    base: dict[str, Any] = {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cert_file": tls.client_cert,
        "kafka_ssl_key_file": encrypted,
    }
    assert connection_problems(Settings(**base)) == [
        "configuration error: KAFKA_SSL_KEY_FILE: the key is encrypted; set KAFKA_SSL_KEY_PASSWORD"
    ]
    wrong = connection_problems(Settings(**base, kafka_ssl_key_password="wrong-pw-2"))
    assert wrong == [
        "configuration error: KAFKA_SSL_KEY_PASSWORD: does not decrypt KAFKA_SSL_KEY_FILE"
    ]
    assert connection_problems(Settings(**base, kafka_ssl_key_password="right-pw-1")) == []
    with pytest.raises(KafkaSettingsInvalid):
        ssl_context(Settings(**base))


# --- refusals --------------------------------------------------------------------------------


def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_message = message
    return error


def _alert(reason: str) -> KafkaConnectionError:
    error = KafkaConnectionError(f"Connection at {ADDRESS} closed")
    cause = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    cause.reason = reason
    error.__cause__ = cause
    return error


def _tls_alert_read_as_size() -> KafkaConnectionError:
    error = KafkaConnectionError(f"Connection at {ADDRESS} closed")
    error.__cause__ = asyncio.IncompleteReadError(b"\x15\x03\x03", 0x15030300)
    return error


@pytest.mark.parametrize(
    ("error", "settings", "says"),
    [
        (
            SaslAuthenticationFailed("Authentication failed during authentication due to invalid"
                                     " credentials with SASL mechanism SCRAM-SHA-512"),
            scram(),
            f"Kafka at {ADDRESS} refused the SASL credentials (KAFKA_SASL_USERNAME=worker/"
            "KAFKA_SASL_PASSWORD, mechanism SCRAM-SHA-512, KAFKA_SASL_MECHANISM): "
            "Authentication failed during",
        ),
        (
            UnsupportedSaslMechanismError("conn"),
            scram(),
            f"Kafka at {ADDRESS} does not offer the SASL mechanism SCRAM-SHA-512 "
            "(KAFKA_SASL_MECHANISM)",
        ),
        (
            IllegalSaslStateError("conn"),
            scram(),
            "does not take SASL on this port (KAFKA_SECURITY_PROTOCOL=SASL_SSL)",
        ),
        (
            _verify_error("self-signed certificate in certificate chain"),
            scram(),
            "TLS handshake with Kafka at broker.example:9093 failed: self-signed certificate in "
            "certificate chain (KAFKA_SSL_CA_FILE is unset, so only the system's CAs are trusted)",
        ),
        (
            _verify_error("certificate has expired"),
            scram(kafka_ssl_ca_file=Path(__file__)),
            "failed: certificate has expired (the broker's certificate chain, verified with "
            "KAFKA_SSL_CA_FILE: renewed on the broker, or this machine's clock is wrong)",
        ),
        (
            _verify_error("Hostname mismatch, certificate is not valid for 'broker.example'."),
            scram(),
            "(KAFKA_BOOTSTRAP_SERVERS, KAFKA_SSL_CHECK_HOSTNAME)",
        ),
        (
            _alert("SSLV3_ALERT_BAD_CERTIFICATE"),
            Settings(kafka_security_protocol="SSL"),
            "ended the TLS handshake (sslv3 alert bad certificate): it requires a client "
            "certificate, and KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE are unset",
        ),
        (
            _alert("TLSV1_ALERT_UNKNOWN_CA"),
            Settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=Path(__file__)),
            "refused the client certificate (tlsv1 alert unknown ca; "
            "KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE)",
        ),
        (
            _alert("WRONG_VERSION_NUMBER"),
            Settings(kafka_security_protocol="SSL"),
            "the port does not speak TLS (KAFKA_SECURITY_PROTOCOL=SSL, KAFKA_BOOTSTRAP_SERVERS)",
        ),
        (
            _tls_alert_read_as_size(),
            Settings(),
            "speaks TLS, and KAFKA_SECURITY_PROTOCOL is PLAINTEXT: set SSL or SASL_SSL",
        ),
    ],
)  # fmt: skip
def test_a_refusal_is_one_line_naming_the_setting(
    error: BaseException, settings: Settings, says: str
) -> None:
    line = refusal(error, settings, ADDRESS)
    assert line is not None
    assert says in line
    assert "\n" not in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        KafkaConnectionError("Connection at x closed"),
        asyncio.IncompleteReadError(b"", 4),
    ],
)
def test_an_outage_is_not_a_refusal(error: BaseException) -> None:
    assert refusal(error, scram(), ADDRESS) is None


def test_a_reset_tls_handshake_is_waited_for_with_a_hint() -> None:
    reset = ConnectionResetError()
    assert refusal(reset, Settings(kafka_security_protocol="SSL"), ADDRESS) is None
    assert "KAFKA_SECURITY_PROTOCOL=SSL right?" in outage_hint(
        reset, Settings(kafka_security_protocol="SSL")
    )
    assert outage_hint(reset, Settings()) == ""


async def test_an_expired_broker_certificate_in_a_real_handshake(tls: Any, tmp_path: Path) -> None:
    cert, key = issue_server_cert(tls, tmp_path / "expired", san="IP:127.0.0.1",
                                  start="20200101000000Z", end="20200201000000Z")  # fmt: skip
    async with tls_server(cert, key) as port:
        settings = Settings(
            kafka_bootstrap_servers=f"127.0.0.1:{port}",
            kafka_security_protocol="SSL",
            kafka_ssl_ca_file=tls.ca_cert,
        )
        with pytest.raises(KafkaRefused, match="certificate has expired") as refused:
            await probe(settings, timeout_s=5)
    assert "KAFKA_SSL_CA_FILE" in str(refused.value)


async def test_a_certificate_for_another_host_in_a_real_handshake(tls: Any, tmp_path: Path) -> None:
    cert, key = issue_server_cert(tls, tmp_path / "other-host", san="DNS:kafka.example.com")
    async with tls_server(cert, key) as port:
        base: dict[str, Any] = {
            "kafka_bootstrap_servers": f"127.0.0.1:{port}",
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_file": tls.ca_cert,
        }
        with pytest.raises(KafkaRefused, match="KAFKA_SSL_CHECK_HOSTNAME"):
            await probe(Settings(**base), timeout_s=5)
        # without the host name check the handshake passes; the server then hangs up, which
        # is an outage to wait out, not a refusal
        with pytest.raises(KafkaConnectionError):
            await probe(Settings(**base, kafka_ssl_check_hostname=False), timeout_s=5)


async def test_nothing_listening_is_raised_as_it_is_for_a_retry() -> None:
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(OSError, match="Connect call failed"):
        await probe(settings, timeout_s=5)


async def test_a_refusal_at_start_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def refused(settings: Settings, **_: Any) -> str:
        nonlocal calls
        calls += 1
        raise KafkaRefused("Kafka at x refused the SASL credentials (...)")

    monkeypatch.setattr(topic_admin, "probe", refused)
    with pytest.raises(KafkaRefused):
        await topic_admin.wait_for_kafka(Settings(kafka_startup_timeout_s=60))
    assert calls == 1


async def test_readiness_names_a_refusal_as_such() -> None:
    async def refused() -> str:
        raise KafkaRefused("Kafka at x refused the SASL credentials (KAFKA_SASL_USERNAME=...)")

    result = await BrokerProbe(refused).check_once()
    assert not result.ok
    assert result.detail == "Kafka at x refused the SASL credentials (KAFKA_SASL_USERNAME=...)"


def test_the_probe_module_names_no_client_of_its_own() -> None:
    """Every client is built from kafka_client_config: no module but kafka_connection builds
    security arguments itself (a grep, kept honest by this test)."""
    root = Path(kafka_connection.__file__).parents[1]
    for path in root.rglob("*.py"):
        if path.name == "kafka_connection.py":
            continue
        text = path.read_text()
        for argument in ("security_protocol=", "sasl_plain_password", "bootstrap_servers="):
            assert argument not in text, f"{path} builds {argument} itself"
