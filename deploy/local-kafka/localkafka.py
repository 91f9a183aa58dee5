#!/usr/bin/env python3
"""A real single-node Apache Kafka (KRaft, broker+controller in one JVM) without Docker.

The jars come from Maven Central through ``pom.xml`` beside this file and are cached in a
git-ignored folder; the broker runs as a plain ``java`` process on 127.0.0.1.

Command line (run it with the project's venv python, which has aiokafka for the readiness check)::

    localkafka.py fetch                      # copy the jars into the cache (no-op when present)
    localkafka.py up [--port 9092] [--controller-port 9093] [--data-dir DIR] [--foreground]
    localkafka.py up --secured [--port 9192] [--controller-port 9193] [--sasl-ssl-port 9194]
                     [--ssl-port 9195] [--data-dir DIR] [--foreground]
    localkafka.py down [--secured] [--data-dir DIR]
    localkafka.py status [--secured] [--data-dir DIR]    # exit 0 when the broker of DIR runs

Environment overrides (a command-line flag wins over them): ``LOCAL_KAFKA_PORT``,
``LOCAL_KAFKA_CONTROLLER_PORT`` (default: ``LOCAL_KAFKA_PORT`` + 1, as ``make run`` has it too;
:func:`env_ports`), ``LOCAL_KAFKA_DATA_DIR``, ``LOCAL_KAFKA_CACHE`` (the folder
holding the jars, default ``.cache/kafka/libs`` under the repository root),
``LOCAL_KAFKA_JAVA_OPTS`` (extra JVM flags) and ``LOCAL_KAFKA_LOG_LEVEL`` (broker log level,
default WARN). The port and data-dir variables are for the plaintext broker only: ``--secured``
has its own defaults (the ports above, data in ``.cache/kafka/data-secured``), so both can run
side by side.

What a caller can rely on:

* ``up`` returns (or, with ``--foreground``, prints the bootstrap address) only once an admin
  metadata request has succeeded, so producers and consumers can connect straight away.
* A port another process holds is one line naming it and the variable (or flag) to set instead
  (:class:`PortInUse`), before anything is started.
* Storage is formatted only when the data dir holds no ``meta.properties`` yet: topics and
  records survive ``down``/``up`` and :meth:`LocalKafka.restart`.
* ``down`` and :meth:`LocalKafka.stop` send SIGTERM (a clean Kafka shutdown), then SIGKILL after
  15 s. They only ever signal a process whose command line is this broker's.

As a library (the test harness loads this file by path with importlib)::

    kafka = LocalKafka(port=19092, controller_port=19093, data_dir=Path("/tmp/k"))
    kafka.start()          # returns once ready
    kafka.bootstrap        # "127.0.0.1:19092"
    kafka.restart()        # same data dir, same ports
    kafka.stop()

Secured mode (GitHub issue "Production Kafka: TLS and SASL"): pass ``security=KafkaSecurity(...)``
and the broker gets two more client listeners on 127.0.0.1, besides PLAINTEXT and CONTROLLER::

    kafka = LocalKafka(port=p1, controller_port=p2, data_dir=d,
                       security=KafkaSecurity(sasl_ssl_port=p3, ssl_port=p4))
    kafka.start()
    kafka.sasl_ssl_bootstrap   # SASL_SSL: SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN users
    kafka.ssl_bootstrap        # SSL: mutual TLS, a client certificate is required
    kafka.ca_file, kafka.client_cert_file, kafka.client_key_file   # PEM files
    kafka.security.scram_sha_512.username, kafka.security.scram_sha_512.password

* ``SASL_SSL``: TLS with the broker certificate, no client certificate asked for; SASL
  mechanisms SCRAM-SHA-256, SCRAM-SHA-512 (users made by ``StorageTool format --add-scram``, so
  only when the storage is formatted) and PLAIN (users in the listener's JAAS property).
* ``SSL``: ``ssl.client.auth=required``; the client certificate is the authentication.
* ``PLAINTEXT`` stays on and is the inter-broker listener (single node, loopback only: nothing
  crosses a network) and what the readiness probe uses; ``CONTROLLER`` stays PLAINTEXT too.
* No authorizer: every authenticated principal may do anything.
* Certificates are made with the ``openssl`` command line into ``<data-dir>/tls`` on the first
  secured start and reused after: a self-signed CA, a broker certificate for ``localhost`` and
  ``127.0.0.1`` (SAN) and a client certificate (CN ``localkafka-client``), both signed by the
  CA, EC P-256 keys in unencrypted PKCS#8 PEM. The broker reads PEM directly
  (``ssl.keystore.type=PEM``), so no JKS and no keytool.
* Readiness also does a TLS handshake with each TLS listener (with the client certificate on
  the SSL one), so the certificates are known good once ``start`` returns.
* SCRAM users live in the KRaft metadata: a data dir formatted in plaintext mode, or with other
  SCRAM users, is refused in secured mode (use a fresh data dir).

The file is self-contained and uses the standard library only (aiokafka is imported lazily for
the readiness check, with a raw ApiVersions probe as fallback when it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, NamedTuple, TypeVar

__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "PLAIN",
    "SCRAM_SHA_256",
    "SCRAM_SHA_512",
    "SECURED_DEFAULT_PORTS",
    "Credentials",
    "KafkaSecurity",
    "LocalKafka",
    "LocalKafkaError",
    "PortInUse",
    "TlsFiles",
    "default_data_dir",
    "default_libs_dir",
    "default_secured_data_dir",
    "env_ports",
    "fetch_libs",
    "free_port",
    "main",
    "make_tls_files",
]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"

DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
HOST = "127.0.0.1"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
HEAP_OPTS = ("-Xms256m", "-Xmx512m")

READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0
FETCH_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
OPENSSL_TIMEOUT_S = 60.0

PID_FILE = "kafka.pid"
LOG_FILE = "kafka.log"
PROPS_FILE = "server.properties"
LOGS_SUBDIR = "logs"
TLS_SUBDIR = "tls"
SCRAM_USERS_FILE = "scram-users.json"

# Secured mode: SASL mechanisms, listener names (named after their security protocol), and the
# command line's default ports (plaintext, controller, SASL_SSL, SSL), clear of 9092/9093 so a
# secured broker can run beside the plaintext one.
SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_512 = "SCRAM-SHA-512"
PLAIN = "PLAIN"
SASL_SSL_LISTENER = "SASL_SSL"
SSL_LISTENER = "SSL"
SECURED_DEFAULT_PORTS = (9192, 9193, 9194, 9195)
CLIENT_CERT_CN = "localkafka-client"
CERT_DAYS = 3650

_T = TypeVar("_T")


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


#: Where the plaintext broker's ports come from, by the role of the port.
PORT_VARIABLES = {
    "client": "LOCAL_KAFKA_PORT",
    "controller": "LOCAL_KAFKA_CONTROLLER_PORT",
}
#: The command line's flag for each role (the secured mode's ports are set by flags only).
PORT_FLAGS = {
    "client": "--port",
    "controller": "--controller-port",
    "SASL_SSL": "--sasl-ssl-port",
    "SSL": "--ssl-port",
}


class PortInUse(LocalKafkaError):
    """A port the broker is to listen on is held by another process; the message says which
    variable (or flag) moves it."""

    def __init__(self, port: int, role: str, *, secured: bool = False) -> None:
        self.port = port
        self.role = role
        flag = PORT_FLAGS[role]
        variable = None if secured else PORT_VARIABLES.get(role)
        how = f"set {variable} (or {flag})" if variable else f"pass {flag}"
        default = " (default: LOCAL_KAFKA_PORT + 1)" if variable and role == "controller" else ""
        super().__init__(
            f"port {port} (the broker's {role} port) is already in use by another process: "
            f"{how} to a free port{default}"
        )


# --------------------------------------------------------------------------- paths and defaults


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def default_libs_dir() -> Path:
    """``$LOCAL_KAFKA_CACHE`` or ``<repo>/.cache/kafka/libs``."""
    return _env_path("LOCAL_KAFKA_CACHE", REPO_ROOT / ".cache" / "kafka" / "libs")


def default_data_dir() -> Path:
    """``$LOCAL_KAFKA_DATA_DIR`` or ``<repo>/.cache/kafka/data``."""
    return _env_path("LOCAL_KAFKA_DATA_DIR", REPO_ROOT / ".cache" / "kafka" / "data")


def default_secured_data_dir() -> Path:
    """``<repo>/.cache/kafka/data-secured``: the command line's secured broker (``--secured``)."""
    return REPO_ROOT / ".cache" / "kafka" / "data-secured"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise LocalKafkaError(f"{name}={value!r} is not a port number") from None


def env_ports() -> tuple[int, int]:
    """The plaintext broker's (client port, controller port): ``LOCAL_KAFKA_PORT`` (9092) and
    ``LOCAL_KAFKA_CONTROLLER_PORT``, by default the client port + 1 (9093). ``make kafka-up``
    and ``make run`` both take them from here."""
    port = _env_int("LOCAL_KAFKA_PORT", DEFAULT_PORT)
    return port, _env_int("LOCAL_KAFKA_CONTROLLER_PORT", port + 1)


def _pom_kafka_version() -> str:
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", POM.read_text("utf-8"))
    if match is None:
        raise LocalKafkaError(f"no <kafka.version> property in {POM}")
    return match.group(1)


def _tool(name: str, env_home: str | None = None) -> str:
    if env_home:
        home = os.environ.get(env_home)
        if home and (Path(home) / "bin" / name).is_file():
            return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise LocalKafkaError(f"`{name}` is not on PATH; it is needed to run the local broker")
    return found


# --------------------------------------------------------------------------------------- fetch


def _libs_complete(libs_dir: Path, version: str) -> bool:
    return (libs_dir / f"kafka_2.13-{version}.jar").is_file() and any(
        libs_dir.glob("log4j-slf4j-impl-*.jar")
    )


def fetch_libs(libs_dir: Path | None = None, *, quiet: bool = False) -> Path:
    """Copy Kafka's runtime jars into ``libs_dir`` with Maven unless they are there already.

    Idempotent and fast when the jars of the POM's Kafka version are present. The copy goes to a
    sibling temporary folder first, then is renamed into place, so an interrupted or concurrent
    fetch never leaves a half-filled libs folder behind.
    """
    libs = (libs_dir or default_libs_dir()).resolve()
    version = _pom_kafka_version()
    if _libs_complete(libs, version):
        return libs
    mvn = _tool("mvn", "MAVEN_HOME")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = libs.with_name(f"{libs.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    # The output directory must be absolute: Maven resolves a relative one against the POM's
    # folder, not the current directory.
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    if not quiet:
        print(f"localkafka: fetching Kafka {version} jars into {libs} ...", file=sys.stderr)
    started = time.monotonic()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise LocalKafkaError(
            f"mvn copy-dependencies timed out after {FETCH_TIMEOUT_S:.0f}s"
        ) from None
    if done.returncode != 0 or not _libs_complete(staging, version):
        shutil.rmtree(staging, ignore_errors=True)
        raise LocalKafkaError(
            f"mvn copy-dependencies failed (exit {done.returncode}):\n"
            f"{done.stdout[-4000:]}{done.stderr[-4000:]}"
        )
    if _libs_complete(libs, version):
        # A concurrent fetch finished first; keep its jars (a broker may be using them).
        shutil.rmtree(staging, ignore_errors=True)
        return libs
    if libs.exists():
        shutil.rmtree(libs)  # jars of another Kafka version
    try:
        staging.rename(libs)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not _libs_complete(libs, version):
            raise
    if not quiet:
        count = len(list(libs.glob("*.jar")))
        print(
            f"localkafka: {count} jars fetched in {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
    return libs


# ------------------------------------------------------------------------------- secured mode

_USERNAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_PASSWORD = re.compile(r"[A-Za-z0-9_.+-]{1,128}")


# NamedTuples rather than dataclasses: a dataclass needs its module in sys.modules while it is
# defined, and callers load this file by path.


class Credentials(NamedTuple):
    """A SASL user of the secured broker.

    Kept to characters that need no quoting in ``--add-scram`` and JAAS options: the username is
    letters, digits and ``_``; the password also allows ``.``, ``+`` and ``-``
    (:class:`LocalKafka` checks).
    """

    username: str
    password: str

    def check(self) -> None:
        if not _USERNAME.fullmatch(self.username):
            raise LocalKafkaError(f"SASL username {self.username!r}: use [A-Za-z0-9_] only")
        if not _PASSWORD.fullmatch(self.password):
            raise LocalKafkaError(
                f"password of {self.username!r}: use letters, digits and . _ + - only"
            )


class KafkaSecurity(NamedTuple):
    """Secured mode of :class:`LocalKafka`: the ports of its two extra client listeners and its
    SASL users (one per mechanism; the defaults are fixed, since this is a loopback test broker).
    """

    sasl_ssl_port: int
    ssl_port: int
    scram_sha_256: Credentials = Credentials("scram256", "scram256-secret")
    scram_sha_512: Credentials = Credentials("scram512", "scram512-secret")
    plain: Credentials = Credentials("plain", "plain-secret")

    @classmethod
    def on_free_ports(cls) -> KafkaSecurity:
        """Default users on two ports that are free right now."""
        return cls(sasl_ssl_port=free_port(), ssl_port=free_port())

    @property
    def users(self) -> dict[str, Credentials]:
        """Mechanism name (``SCRAM-SHA-256``, ``SCRAM-SHA-512``, ``PLAIN``) to its user."""
        return {
            SCRAM_SHA_256: self.scram_sha_256,
            SCRAM_SHA_512: self.scram_sha_512,
            PLAIN: self.plain,
        }

    @property
    def scram_users(self) -> dict[str, Credentials]:
        """The users made at format time, by mechanism."""
        return {SCRAM_SHA_256: self.scram_sha_256, SCRAM_SHA_512: self.scram_sha_512}


class TlsFiles(NamedTuple):
    """PEM files of the secured broker; every key is unencrypted PKCS#8."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        """The self-signed CA's certificate: the trust anchor of clients and broker."""
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca-key.pem"

    @property
    def broker_cert(self) -> Path:
        """The broker's certificate (SAN ``DNS:localhost``, ``IP:127.0.0.1``)."""
        return self.dir / "broker-cert.pem"

    @property
    def broker_key(self) -> Path:
        return self.dir / "broker-key.pem"

    @property
    def broker_keystore(self) -> Path:
        """Key, certificate and CA in one file: Kafka's ``ssl.keystore.location`` (type PEM)."""
        return self.dir / "broker-keystore.pem"

    @property
    def client_cert(self) -> Path:
        """A client certificate (CN ``localkafka-client``) the SSL listener accepts."""
        return self.dir / "client-cert.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client-key.pem"

    def complete(self) -> bool:
        """Every file is there (they are made together, see :func:`make_tls_files`)."""
        files = (self.ca_cert, self.ca_key, self.broker_cert, self.broker_key)
        return all(p.is_file() for p in (*files, self.broker_keystore, *self.client_files()))

    def client_files(self) -> tuple[Path, Path]:
        return (self.client_cert, self.client_key)


_OPENSSL_CONFIG = """\
# Written by deploy/local-kafka/localkafka.py: extensions of the secured broker's certificates.
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[broker]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(openssl: str, cwd: Path, *args: str) -> None:
    try:
        done = subprocess.run(
            [openssl, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=OPENSSL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LocalKafkaError(f"openssl {args[0]} timed out") from None
    if done.returncode != 0:
        raise LocalKafkaError(
            f"openssl {shlex.join(args)} failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def _args(line: str) -> list[str]:
    """Whitespace-separated arguments (none of ours holds a space, but the subjects)."""
    return line.split()


def _validity() -> list[str]:
    return _args(f"-set_serial 0x{secrets.randbits(120):x} -days {CERT_DAYS} -sha256")


def _new_ec_key(openssl: str, cwd: Path, out: str) -> None:
    _openssl(
        openssl, cwd, *_args(f"genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {out}")
    )


def _issue(openssl: str, cwd: Path, name: str, subject: str, extensions: str) -> None:
    """A new EC key ``<name>-key.pem`` and its CA-signed certificate ``<name>-cert.pem``."""
    key, csr, cert = f"{name}-key.pem", f"{name}.csr", f"{name}-cert.pem"
    _new_ec_key(openssl, cwd, key)
    _openssl(
        openssl,
        cwd,
        *_args(f"req -config openssl.cnf -new -key {key} -out {csr}"),
        "-subj",
        subject,
    )
    _openssl(
        openssl,
        cwd,
        *_args(f"x509 -req -in {csr} -CA ca.pem -CAkey ca-key.pem -out {cert}"),
        *_args(f"-extfile openssl.cnf -extensions {extensions}"),
        *_validity(),
    )
    (cwd / csr).unlink()


def make_tls_files(tls_dir: Path) -> TlsFiles:
    """Make the CA, broker and client certificates in ``tls_dir`` unless they are all there.

    Uses the ``openssl`` command line. The files are made in a sibling temporary folder and
    renamed into place, so an interrupted run leaves no half-made set behind.
    """
    files = TlsFiles(tls_dir.resolve())
    if files.complete():
        return files
    openssl = _tool("openssl")
    staging = files.dir.with_name(f"{files.dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    try:
        (staging / "openssl.cnf").write_text(_OPENSSL_CONFIG, "utf-8")
        _new_ec_key(openssl, staging, "ca-key.pem")
        _openssl(
            openssl,
            staging,
            *_args("req -config openssl.cnf -new -x509 -key ca-key.pem -out ca.pem -extensions ca"),
            *_validity(),
            "-subj",
            "/CN=localkafka test CA",
        )
        _issue(openssl, staging, "broker", "/CN=localhost", "broker")
        _issue(openssl, staging, "client", f"/CN={CLIENT_CERT_CN}", "client")
        staged = TlsFiles(staging)
        staged.broker_keystore.write_text(
            "".join(
                path.read_text("ascii")
                for path in (staged.broker_key, staged.broker_cert, staged.ca_cert)
            ),
            "ascii",
        )
        for path in staging.iterdir():
            path.chmod(0o600 if "key" in path.name else 0o644)
        shutil.rmtree(files.dir, ignore_errors=True)
        staging.rename(files.dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files


def _jaas_plain(user: Credentials) -> str:
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{user.username}="{user.password}";'
    )


def _tls_handshake(port: int, files: TlsFiles, *, client_cert: bool, timeout: float) -> None:
    """A TLS handshake with a listener, verifying its certificate against our CA and HOST."""
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    if client_cert:
        context.load_cert_chain(files.client_cert, files.client_key)
    with (
        socket.create_connection((HOST, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=HOST),
    ):
        pass


# ----------------------------------------------------------------------------- process helpers


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie no longer holds ports or files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_our_broker(pid: int, props: Path) -> bool:
    """True when ``pid`` is a ``kafka.Kafka`` JVM run with ``props`` (guards against pid reuse)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)  # no /proc (not Linux): trust the pid file
    return MAIN_CLASS.encode() in args and str(props).encode() in args


def _port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the broker when the process that started it dies (even by SIGKILL)."""
    import ctypes  # noqa: PLC0415 - only in the forked child, only on Linux

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _run_in_thread(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a private event loop, even inside a running one."""
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="localkafka-probe", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _admin_metadata(bootstrap: str, wait_s: float) -> None:
    """Succeeds when the broker answers an admin metadata request and lists itself."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - lazy: venv-only dependency

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(wait_s * 1000),
        client_id="localkafka-probe",
    )
    try:
        async with asyncio.timeout(wait_s):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
        if not cluster.get("brokers"):
            raise LocalKafkaError("broker answered but lists no brokers yet")
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _api_versions_probe(port: int, timeout: float) -> None:
    """Fallback readiness probe without aiokafka: a raw ApiVersions v0 request."""
    client_id = b"localkafka-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = sock.recv(4)
        if len(header) < 4:
            raise LocalKafkaError("connection closed before an ApiVersions answer")
        payload = b""
        (size,) = struct.unpack(">i", header)
        while len(payload) < size:
            chunk = sock.recv(size - len(payload))
            if not chunk:
                raise LocalKafkaError("connection closed mid-answer")
            payload += chunk
    _correlation, error_code = struct.unpack(">ih", payload[:6])
    if error_code != 0:
        raise LocalKafkaError(f"ApiVersions answered error code {error_code}")


def _probe_ready(bootstrap: str, port: int, timeout: float) -> None:
    try:
        import aiokafka  # noqa: F401, PLC0415 - availability check only
    except ImportError:
        _api_versions_probe(port, timeout)
        return
    _run_in_thread(lambda: _admin_metadata(bootstrap, timeout))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------------ LocalKafka


class LocalKafka:
    """One single-node Kafka broker on 127.0.0.1 whose state lives in ``data_dir``.

    ``data_dir`` holds ``server.properties``, the pid file, the broker's log (when detached) and
    the Kafka log dirs under ``logs/``. Several instances may run side by side on different ports
    and data dirs.

    ``die_with_parent`` (Linux) makes the kernel SIGTERM the broker when the *thread* that called
    :meth:`start` ends, so a test run killed by SIGKILL leaves no JVM behind. Call ``start`` and
    ``restart`` from a long-lived thread then (the main thread; never ``asyncio.to_thread``).

    ``security`` (a :class:`KafkaSecurity`) turns on the secured mode the module docstring
    describes; without it (the default) the broker is plaintext-only, exactly as before.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        controller_port: int = DEFAULT_CONTROLLER_PORT,
        data_dir: Path | str | None = None,
        libs_dir: Path | str | None = None,
        *,
        ready_timeout: float = READY_TIMEOUT_S,
        java_opts: Sequence[str] | None = None,
        die_with_parent: bool = False,
        security: KafkaSecurity | None = None,
    ) -> None:
        if port == controller_port:
            raise LocalKafkaError("port and controller_port must differ")
        if (
            security is not None
            and len({port, controller_port, security.sasl_ssl_port, security.ssl_port}) != 4
        ):
            raise LocalKafkaError("the four ports of a secured broker must differ")
        if security is not None:
            for user in security.users.values():
                user.check()
        self.port = port
        self.controller_port = controller_port
        self.data_dir = Path(data_dir).resolve() if data_dir else default_data_dir()
        self.libs_dir = Path(libs_dir).resolve() if libs_dir else default_libs_dir()
        self.ready_timeout = ready_timeout
        env_opts = shlex.split(os.environ.get("LOCAL_KAFKA_JAVA_OPTS", ""))
        self.java_opts: list[str] = list(java_opts) if java_opts is not None else env_opts
        self.die_with_parent = die_with_parent
        self.security = security
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- what callers read

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` to hand to producers, consumers and admin clients."""
        return f"{HOST}:{self.port}"

    @property
    def props_path(self) -> Path:
        return self.data_dir / PROPS_FILE

    @property
    def pid_path(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log_path(self) -> Path:
        """Where a detached broker's stdout and stderr go."""
        return self.data_dir / LOG_FILE

    @property
    def logs_dir(self) -> Path:
        """Kafka's ``log.dirs`` (topic data and KRaft metadata)."""
        return self.data_dir / LOGS_SUBDIR

    # -- what callers read in secured mode

    @property
    def secured(self) -> bool:
        return self.security is not None

    def _require_security(self) -> KafkaSecurity:
        if self.security is None:
            raise LocalKafkaError("this broker runs without security=KafkaSecurity(...)")
        return self.security

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """``host:port`` of the SASL_SSL listener (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)."""
        return f"{HOST}:{self._require_security().sasl_ssl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        """``host:port`` of the SSL listener, which requires a client certificate."""
        return f"{HOST}:{self._require_security().ssl_port}"

    @property
    def tls(self) -> TlsFiles:
        """The PEM files under ``<data_dir>/tls`` (made by the first secured start)."""
        return TlsFiles(self.data_dir / TLS_SUBDIR)

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients verify the broker with (``cafile=``)."""
        return self.tls.ca_cert

    @property
    def client_cert_file(self) -> Path:
        """The client certificate for the SSL listener (``certfile=``)."""
        return self.tls.client_cert

    @property
    def client_key_file(self) -> Path:
        """The client certificate's private key (``keyfile=``)."""
        return self.tls.client_key

    @property
    def listeners(self) -> dict[str, str]:
        """Client listener name (``PLAINTEXT``, and ``SASL_SSL``, ``SSL`` when secured) to
        its ``host:port``."""
        found = {"PLAINTEXT": self.bootstrap}
        if self.security is not None:
            found[SASL_SSL_LISTENER] = self.sasl_ssl_bootstrap
            found[SSL_LISTENER] = self.ssl_bootstrap
        return found

    def connection_info(self) -> dict[str, str]:
        """Everything a client needs, flat (what ``up --secured`` prints as ``key=value``)."""
        info = {"bootstrap": self.bootstrap}
        if self.security is None:
            return info
        info |= {
            "sasl_ssl_bootstrap": self.sasl_ssl_bootstrap,
            "ssl_bootstrap": self.ssl_bootstrap,
            "ca_file": str(self.ca_file),
            "client_cert_file": str(self.client_cert_file),
            "client_key_file": str(self.client_key_file),
        }
        for mechanism, user in self.security.users.items():
            key = mechanism.lower().replace("-", "_")
            info[f"{key}_username"] = user.username
            info[f"{key}_password"] = user.password
        info["data_dir"] = str(self.data_dir)
        return info

    def pid(self) -> int | None:
        """The pid of this data dir's running broker, or None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and _is_our_broker(pid, self.props_path):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def is_formatted(self) -> bool:
        return (self.logs_dir / "meta.properties").is_file()

    # -- lifecycle

    def start(self, *, foreground: bool = False) -> None:
        """Start the broker (fetching jars and formatting storage if needed); return once ready.

        A broker already running on this data dir is waited for and left as it is. With
        ``foreground`` the broker's output goes to this process's stdout instead of the log file.
        """
        if self.is_running():
            self._wait_ready(time.monotonic())
            return
        self.pid_path.unlink(missing_ok=True)
        taken = self.ports_in_use()
        if taken:
            raise taken[0]
        fetch_libs(self.libs_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.security is not None:
            if self.is_formatted():
                self._check_scram_users(self.security)
            make_tls_files(self.tls.dir)
        self._write_properties()
        if not self.is_formatted():
            self._format()
        started = time.monotonic()
        self._spawn(foreground=foreground)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise

    def ports_in_use(self) -> list[PortInUse]:
        """The ports of this broker another process listens on (empty while it runs itself)."""
        if self.is_running():
            return []
        return [
            PortInUse(port, role, secured=self.security is not None)
            for role, port in self._ports().items()
            if _port_open(port)
        ]

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the broker, SIGKILL it after ``grace`` seconds; a no-op when it is not up."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, grace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 5.0)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.pid_path.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop, then start again on the same ports and data dir (data survives)."""
        self.stop()
        self.start()

    def wait(self) -> int:
        """Block until a broker this object started exits; return its exit code."""
        if self._proc is None:
            raise LocalKafkaError("wait() needs a broker started by this object")
        code = self._proc.wait()
        self.pid_path.unlink(missing_ok=True)
        return code

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals

    def _ports(self) -> dict[str, int]:
        """Each port by its role (the keys of `PORT_FLAGS`)."""
        ports = {"client": self.port, "controller": self.controller_port}
        if self.security is not None:
            ports[SASL_SSL_LISTENER] = self.security.sasl_ssl_port
            ports[SSL_LISTENER] = self.security.ssl_port
        return ports

    def _scram_record(self, security: KafkaSecurity) -> dict[str, list[str]]:
        return {m: [u.username, u.password] for m, u in security.scram_users.items()}

    def _check_scram_users(self, security: KafkaSecurity) -> None:
        """SCRAM users are made only by ``format``: refuse a data dir formatted with others."""
        record = self.data_dir / SCRAM_USERS_FILE
        try:
            formatted_with = json.loads(record.read_text("utf-8"))
        except (OSError, ValueError):
            formatted_with = None
        if formatted_with is None:
            raise LocalKafkaError(
                f"{self.data_dir} was formatted without SCRAM users (plaintext mode); "
                "a secured broker needs a fresh data dir"
            )
        if formatted_with != self._scram_record(security):
            raise LocalKafkaError(
                f"{self.data_dir} was formatted with other SCRAM users ({record}); "
                "use those, or a fresh data dir"
            )

    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        return [
            _tool("java", "JAVA_HOME"),
            *HEAP_OPTS,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            *self.java_opts,
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _write_properties(self) -> None:
        logs = _props_value(self.logs_dir)
        if self.security is None:
            listeners = [
                f"listeners=PLAINTEXT://{HOST}:{self.port},"
                f"CONTROLLER://{HOST}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
            ]
            protocol_map = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        else:
            clients = ",".join(f"{name}://{addr}" for name, addr in self.listeners.items())
            listeners = [
                f"listeners={clients},CONTROLLER://{HOST}:{self.controller_port}",
                f"advertised.listeners={clients}",
            ]
            protocol_map = (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                f"{SASL_SSL_LISTENER}:SASL_SSL,{SSL_LISTENER}:SSL"
            )
        lines = [
            "# Written by deploy/local-kafka/localkafka.py on every start; edits are overwritten.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{self.controller_port}",
            *listeners,
            "inter.broker.listener.name=PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={protocol_map}",
            f"log.dirs={logs}",
            "num.partitions=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.recovery.threads.per.data.dir=1",
            *self._security_properties(),
            "",
        ]
        self.props_path.write_text("\n".join(lines), "utf-8")
        if self.security is not None:
            self.props_path.chmod(0o600)  # holds the PLAIN password

    def _security_properties(self) -> list[str]:
        if self.security is None:
            return []
        sasl = f"listener.name.{SASL_SSL_LISTENER.lower()}"
        scram_module = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        mechanisms = ",".join(self.security.users)
        return [
            "# Secured mode. Both TLS listeners: PEM key store and trust store, no JKS.",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={_props_value(self.tls.broker_keystore)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={_props_value(self.tls.ca_cert)}",
            "ssl.client.auth=none",
            "# The SSL listener authenticates clients by their certificate.",
            f"listener.name.{SSL_LISTENER.lower()}.ssl.client.auth=required",
            "# The SASL_SSL listener: SCRAM users are in the metadata (format --add-scram),",
            "# PLAIN users in the JAAS option user_<name>.",
            f"sasl.enabled.mechanisms={mechanisms}",
            f"{sasl}.sasl.enabled.mechanisms={mechanisms}",
            f"{sasl}.{SCRAM_SHA_256.lower()}.sasl.jaas.config={scram_module}",
            f"{sasl}.{SCRAM_SHA_512.lower()}.sasl.jaas.config={scram_module}",
            f"{sasl}.{PLAIN.lower()}.sasl.jaas.config={_jaas_plain(self.security.plain)}",
        ]

    def _format(self) -> None:
        cluster_id = _new_cluster_id()
        cmd = self._java_cmd(STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(self.props_path))
        if self.security is not None:
            for mechanism, user in self.security.scram_users.items():
                cmd += [
                    "--add-scram",
                    f"{mechanism}=[name={user.username},password={user.password}]",
                ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise LocalKafkaError(
                f"kafka storage format timed out after {FORMAT_TIMEOUT_S:.0f}s"
            ) from None
        if done.returncode != 0 or not self.is_formatted():
            raise LocalKafkaError(
                f"kafka storage format failed (exit {done.returncode}):\n"
                f"{done.stdout[-4000:]}{done.stderr[-4000:]}"
            )
        if self.security is not None:
            record = self.data_dir / SCRAM_USERS_FILE
            record.write_text(json.dumps(self._scram_record(self.security), indent=2), "utf-8")
            record.chmod(0o600)

    def _spawn(self, *, foreground: bool) -> None:
        cmd = self._java_cmd(MAIN_CLASS, str(self.props_path))
        output: IO[bytes] | None = None
        if not foreground:
            self._log = output = self.log_path.open("ab")
            output.write(f"\n--- localkafka start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            output.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            cwd=self.data_dir,
            # Its own session: a Ctrl-C meant for a test run or a shell does not reach the
            # broker directly; stop() and the foreground signal forwarding shut it down cleanly.
            start_new_session=True,
            # Only a prctl call; the readiness-probe threads are gone by the time this forks.
            preexec_fn=_die_with_parent  # noqa: PLW1509
            if self.die_with_parent and sys.platform.startswith("linux")
            else None,
        )
        self.pid_path.write_text(f"{self._proc.pid}\n")

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.ready_timeout
        last_error = "port not open yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalKafkaError(
                    f"broker exited with code {self._proc.returncode} during start-up; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _port_open(self.port):
                try:
                    _probe_ready(self.bootstrap, self.port, timeout=10.0)
                    self._probe_tls(timeout=10.0)
                except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    return
            time.sleep(0.25)
        raise LocalKafkaError(
            f"broker on {self.bootstrap} not ready after {self.ready_timeout:.0f}s "
            f"({last_error}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def _probe_tls(self, timeout: float) -> None:
        """In secured mode: a verified TLS handshake with each TLS listener."""
        if self.security is None:
            return
        _tls_handshake(self.security.sasl_ssl_port, self.tls, client_cert=False, timeout=timeout)
        _tls_handshake(self.security.ssl_port, self.tls, client_cert=True, timeout=timeout)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.2)
                if self._proc.poll() is not None:
                    return True
            elif not _pid_alive(pid):
                return True
            else:
                time.sleep(0.2)
        return not _pid_alive(pid)


def _props_value(path: Path) -> str:
    """A path as a ``.properties`` value (a backslash would start an escape)."""
    return str(path).replace("\\", "\\\\")


def _new_cluster_id() -> str:
    """22 characters of URL-safe base64 over 16 random bytes, as ``kafka-storage random-uuid``."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        # Kafka never hands out ids starting with '-': they would read as a command-line flag.
        if not cluster_id.startswith("-"):
            return cluster_id


# ------------------------------------------------------------------------------------------ CLI


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="broker state (default: env LOCAL_KAFKA_DATA_DIR or <repo>/.cache/kafka/data; "
        "with --secured <repo>/.cache/kafka/data-secured)",
    )


def _add_secured(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--secured", action="store_true", help=help_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localkafka.py",
        description="Run a single-node Apache Kafka (KRaft) from Maven Central jars, no Docker.",
    )
    parser.add_argument(
        "--libs-dir",
        type=Path,
        default=None,
        help="jar cache (env LOCAL_KAFKA_CACHE; default <repo>/.cache/kafka/libs)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="copy the Kafka jars into the cache unless already there")
    up = sub.add_parser("up", help="start the broker and wait until it answers")
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="PLAINTEXT client port (env LOCAL_KAFKA_PORT; 9192 with --secured)",
    )
    up.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (env LOCAL_KAFKA_CONTROLLER_PORT; default the client port "
        "+ 1; 9193 with --secured)",
    )
    _add_data_dir(up)
    _add_secured(
        up,
        "also SASL_SSL (SCRAM-SHA-256/512, PLAIN) and SSL (client certificate required) "
        "listeners, with test certificates; prints listeners, files and users as key=value",
    )
    up.add_argument(
        "--sasl-ssl-port", type=int, default=None, help="SASL_SSL port with --secured (9194)"
    )
    up.add_argument("--ssl-port", type=int, default=None, help="SSL port with --secured (9195)")
    up.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; SIGINT/SIGTERM stop the broker",
    )
    down = sub.add_parser("down", help="stop the broker of a data dir")
    _add_data_dir(down)
    _add_secured(down, "the secured broker's default data dir")
    status = sub.add_parser("status", help="exit 0 when the broker of a data dir is running")
    _add_data_dir(status)
    _add_secured(status, "the secured broker's default data dir")
    return parser


def _print_ready(kafka: LocalKafka) -> None:
    """The bootstrap address on stdout; in secured mode ``key=value`` lines (shell-quoted)."""
    if kafka.security is None:
        print(kafka.bootstrap, flush=True)
        return
    for key, value in kafka.connection_info().items():
        print(f"{key}={shlex.quote(value)}")
    user = kafka.security.scram_sha_512
    print(
        "localkafka: try e.g. kcat -L -b "
        f"{kafka.sasl_ssl_bootstrap} -X security.protocol=SASL_SSL "
        f"-X sasl.mechanism={SCRAM_SHA_512} -X sasl.username={user.username} "
        f"-X sasl.password={user.password} -X ssl.ca.location={shlex.quote(str(kafka.ca_file))}",
        file=sys.stderr,
    )
    sys.stdout.flush()


def _run_foreground(kafka: LocalKafka) -> int:
    stopping = threading.Event()

    def kill_if_alive(pid: int) -> None:
        if _pid_alive(pid):
            print("localkafka: broker still up after SIGTERM, sending SIGKILL", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        pid = kafka.pid()
        print(f"localkafka: {signal.Signals(signum).name}, stopping the broker", file=sys.stderr)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            timer = threading.Timer(STOP_GRACE_S, kill_if_alive, args=(pid,))
            timer.daemon = True
            timer.start()

    if kafka.is_running():
        raise LocalKafkaError(
            f"a broker already runs for {kafka.data_dir} (pid {kafka.pid()}); "
            "stop it with `down` first, or drop --foreground"
        )
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    # Should this process be SIGKILLed, the broker gets SIGTERM instead of lingering.
    kafka.die_with_parent = True
    started = time.monotonic()
    try:
        kafka.start(foreground=True)
    except LocalKafkaError:
        if stopping.is_set():
            kafka.stop()
            return 0
        raise
    print(
        f"localkafka: ready on {kafka.bootstrap} in {time.monotonic() - started:.1f}s "
        f"(pid {kafka.pid()}); Ctrl-C stops it",
        file=sys.stderr,
    )
    _print_ready(kafka)
    code = kafka.wait()
    kafka.stop()  # closes handles, removes the pid file
    print(f"localkafka: broker exited with code {code}", file=sys.stderr)
    return 0 if stopping.is_set() else code


def _plaintext_ports(port: int | None, controller_port: int | None) -> tuple[int, int]:
    """The flags, else the environment (:func:`env_ports`); the controller port defaults to the
    client port + 1 whichever way that was given."""
    env_port, env_controller_port = env_ports()
    if port is None:
        port = env_port
    if controller_port is not None:
        return port, controller_port
    if os.environ.get("LOCAL_KAFKA_CONTROLLER_PORT"):
        return port, env_controller_port
    return port, port + 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "up" and not args.secured and (args.sasl_ssl_port or args.ssl_port):
        parser.error("--sasl-ssl-port and --ssl-port need --secured")
    libs_dir: Path = args.libs_dir.resolve() if args.libs_dir else default_libs_dir()
    try:
        if args.command == "fetch":
            print(fetch_libs(libs_dir))
            return 0
        secured: bool = args.secured
        data_dir: Path
        if args.data_dir:
            data_dir = args.data_dir.resolve()
        else:
            data_dir = default_secured_data_dir() if secured else default_data_dir()
        if args.command == "down":
            kafka = LocalKafka(data_dir=data_dir, libs_dir=libs_dir)
            if not kafka.is_running():
                kafka.pid_path.unlink(missing_ok=True)
                print(f"localkafka: no broker running for {data_dir}", file=sys.stderr)
                return 0
            kafka.stop()
            print(f"localkafka: stopped the broker of {data_dir}", file=sys.stderr)
            return 0
        if args.command == "status":
            kafka = LocalKafka(data_dir=data_dir, libs_dir=libs_dir)
            running = kafka.is_running()
            print(f"localkafka: {'running, pid ' + str(kafka.pid()) if running else 'stopped'}")
            return 0 if running else 1
        security: KafkaSecurity | None = None
        if secured:
            sport, cport, sasl_ssl_port, ssl_port = SECURED_DEFAULT_PORTS
            port: int = args.port if args.port is not None else sport
            if args.controller_port is not None:
                cport = args.controller_port
            security = KafkaSecurity(
                sasl_ssl_port=args.sasl_ssl_port or sasl_ssl_port,
                ssl_port=args.ssl_port or ssl_port,
            )
        else:
            port, cport = _plaintext_ports(args.port, args.controller_port)
        kafka = LocalKafka(port, cport, data_dir, libs_dir, security=security)
        taken = kafka.ports_in_use()
        if taken:  # every one, not only the first
            print("\n".join(f"localkafka: {error}" for error in taken), file=sys.stderr)
            return 1
        if args.foreground:
            return _run_foreground(kafka)
        started = time.monotonic()
        was_running = kafka.is_running()
        kafka.start()
        how = "already running" if was_running else f"ready in {time.monotonic() - started:.1f}s"
        print(
            f"localkafka: {how} (pid {kafka.pid()}, log {kafka.log_path})",
            file=sys.stderr,
        )
        _print_ready(kafka)
    except LocalKafkaError as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
