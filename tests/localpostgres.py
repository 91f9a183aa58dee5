"""A real PostgreSQL server for the tests and `make bench`, from Debian's `postgresql` package.

`LocalPostgres(base_dir, port).start()` runs `initdb` on `<base_dir>/data` (a superuser
`warehouse` with a random password, scram-sha-256 over TCP), then the server itself in the
foreground on 127.0.0.1:`port` (its socket in `base_dir`), and returns once it answers a query;
`stop()` asks for a fast shutdown. As the local Kafka broker, the server is a child of the
process that started it and Linux stops it if that process dies, even by SIGKILL, so a killed
test run leaves no server behind.

initdb and the server refuse to run as root: run as root, both run as the `postgres` user the
package creates (the folder is given to it, and must be reachable by it: `tempfile.mkdtemp`
under /tmp is, a folder inside another private temporary folder is not). `.ci/run` installs
the package when it is missing; `find_bin_dir` finds the newest version's binaries
(`/usr/lib/postgresql/<version>/bin`).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["LocalPostgres", "LocalPostgresError", "find_bin_dir", "free_port"]

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 30.0
SUPERUSER = "warehouse"
#: The server's run user when the tests run as root (Debian's package creates it).
RUN_USER = "postgres"


class LocalPostgresError(RuntimeError):
    """The server could not be set up, started or stopped."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_bin_dir() -> Path | None:
    """The folder of `initdb` and `postgres`: the newest of Debian's /usr/lib/postgresql/*/bin,
    else the one of an `initdb` on PATH; None when PostgreSQL is not installed."""

    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in path.parent.name.split("."))
        except ValueError:
            return (0,)

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGINT the server (a fast shutdown) when the process that started it dies.
    Set after the change of user (which clears it)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGINT, 0, 0, 0)


class LocalPostgres:
    """One throw-away server; see the module docstring."""

    def __init__(self, base_dir: Path, port: int, *, durable: bool = False) -> None:
        self.base_dir = base_dir
        self.port = port
        #: False (tests): fsync and synchronous commit off, to spare a shared machine's disk
        self.durable = durable
        self.password = secrets.token_urlsafe(16)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise LocalPostgresError(
                "PostgreSQL is not installed (apt-get install -y postgresql on Debian)"
            )
        self.bin_dir = bin_dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def url(self) -> str:
        """A URL for psycopg and WAREHOUSE_URL, password included."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _as_server_user(self) -> dict[str, Any]:
        """subprocess arguments that run a command as the server's user."""
        if os.geteuid() != 0:
            return {}
        return {"user": RUN_USER, "group": RUN_USER, "extra_groups": []}

    def _run(self, args: Sequence[str]) -> None:
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=self.base_dir,
            **self._as_server_user(),
        )
        if result.returncode != 0:
            raise LocalPostgresError(
                f"{' '.join(args[:1])} failed ({result.returncode}): {result.stderr.strip()}"
            )

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, RUN_USER, RUN_USER)
        password_file = self.base_dir / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, RUN_USER, RUN_USER)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={password_file}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
        password_file.unlink()
        settings = ["listen_addresses=127.0.0.1", f"port={self.port}"]
        settings.append(f"unix_socket_directories={self.base_dir}")
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for setting in settings:
            command += ["-c", setting]
        self._log = (self.base_dir / "server.log").open("ab")
        self._proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            # Only a prctl call in the child, after the change of user.
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            **self._as_server_user(),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg  # noqa: PLC0415  (the project's venv has it)

        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalPostgresError(f"the server exited: {self.log_tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                last = str(exc).strip()
                time.sleep(0.2)
            else:
                return
        self.stop()
        raise LocalPostgresError(f"not ready in {READY_TIMEOUT_S:g} s: {last}; {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.base_dir / "server.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """A fast shutdown (SIGINT: open sessions are ended), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def remove(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
