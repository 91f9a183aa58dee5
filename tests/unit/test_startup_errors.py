"""A misconfiguration or an unreachable Kafka at start: one clear line, exit 70, no traceback.

Run as a user runs the worker (`python -m worker ...` in a subprocess); no broker is needed: the
settings are checked before anything connects, and Kafka is looked for on a port nobody serves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workerproc import free_port

SECRET = "sk-live-5f1e0c7d9a"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOPIC_", "AUTOPILOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**clean, "AUTOPILOT_API_KEY": SECRET, "SEGMENT_WRITE_KEYS": SECRET, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("AUTOPILOT_TRIGGERS", "{Order Completed: 0002}", '{"Order Completed": "0001"'),
        ("TOPIC_PARTITIONS", "abc", "a whole number of at least 1"),
        ("AUTOPILOT_RATE_LIMIT", "0", "above 0"),
        ("DLQ_BREAKER_MAX_RATIO", "2", "less than or equal to 1"),
    ],
)
@pytest.mark.parametrize("command", ["run", "topics"])
def test_an_invalid_setting_is_one_line_naming_it_and_exit_70(
    command: str, variable: str, value: str, says: str
) -> None:
    result = run(command, **{variable: value})
    assert result.returncode == 70
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}: ")
    assert says in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_a_secret_setting_that_is_invalid_is_named_without_its_value() -> None:
    result = run("run", WORKER_WEB_PORT=SECRET)
    assert result.returncode == 70
    assert result.stderr.startswith("configuration error: WORKER_WEB_PORT: ")
    assert SECRET not in result.stderr


def test_kafka_unreachable_at_start_is_waited_for_then_one_line_and_exit_70() -> None:
    port = free_port()
    result = run("run", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", KAFKA_STARTUP_TIMEOUT_S="6")
    assert result.returncode == 70
    lines = result.stderr.splitlines()
    waiting = [line for line in lines if "waiting for Kafka" in line]
    assert 1 <= len(waiting) <= 3, result.stderr  # one every 5 s
    assert "KAFKA_STARTUP_TIMEOUT_S" in lines[-1]
    assert f"127.0.0.1:{port} did not answer within 6 s" in lines[-1]
    assert len(lines) <= 6, result.stderr  # the clients' own errors are held back
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/no/such/ca.pem"},
            "configuration error: KAFKA_SSL_CA_FILE: no such file: /no/such/ca.pem",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": "worker",
            },
            "configuration error: KAFKA_SASL_PASSWORD: required with "
            "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
        ),
        (
            {"KAFKA_SASL_PASSWORD": SECRET},
            "configuration error: KAFKA_SASL_PASSWORD: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
            "does not use SASL (SASL_SSL or SASL_PLAINTEXT do)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "topics", "check", "dlq"])
def test_kafka_security_settings_that_disagree_are_one_line_and_exit_70(
    command: str, settings: dict[str, str], says: str
) -> None:
    args = [command, "list"] if command == "dlq" else [command]
    result = run(*args, **settings)
    assert result.returncode == 70
    assert result.stderr.splitlines() == [says]
    assert SECRET not in result.stderr + result.stdout


def test_a_tls_file_that_does_not_load_is_one_line_for_the_commands_that_connect(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    settings = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": str(garbage)}
    result = run("run", **settings)
    assert result.returncode == 70
    (line,) = result.stderr.splitlines()
    assert line.startswith("configuration error: KAFKA_SSL_CA_FILE: no CA certificate could be")
    # offline mapping connects to nothing: the file is not its concern
    mapped = subprocess.run(
        [sys.executable, "-m", "worker", "map", "source"],
        env={**os.environ, **settings},
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert mapped.returncode == 0, mapped.stderr
