"""The warehouse's settings: WAREHOUSE_URL is a secret (masked, its password too), checked in
one line that never shows it; the schemas are SQL names."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from worker.pipeline.logs import JsonFormatter
from worker.settings import MASK, Settings, SettingsInvalid, configuration_errors, secret_values
from worker.warehouse.agents import warehouse_inputs
from worker.warehouse.duckdb import duckdb_path

URL = "postgresql://loader:s3cr%2Ft-pw@db.internal:5432/analytics"


def errors(**values: object) -> list[str]:
    with pytest.raises(SettingsInvalid) as raised:
        Settings.model_validate(values)
    return configuration_errors(raised.value)


def test_the_url_and_its_password_are_secrets_masked_everywhere() -> None:
    settings = Settings(warehouse_url=SecretStr(URL))
    assert str(settings.warehouse_url) == MASK
    secrets = secret_values(settings)
    assert {URL, "s3cr%2Ft-pw", "s3cr/t-pw"} <= set(secrets)
    record = logging.LogRecord(
        "w", logging.ERROR, __file__, 1, "cannot connect to %s with s3cr/t-pw", (URL,), None
    )
    line = JsonFormatter(secrets).format(record)
    assert "s3cr" not in line
    assert "db.internal" not in line  # the whole URL is masked


@pytest.mark.parametrize(
    "url", ["mysql://u:p@h/db", "duckdb://", "sqlite:///x.db", "just-a-path.duckdb"]
)
def test_an_unknown_database_is_one_line_without_the_value(url: str) -> None:
    (line,) = errors(warehouse_url=url)
    assert line.startswith("configuration error: WAREHOUSE_URL: ")
    assert "postgresql://user:password@host:5432/database" in line
    assert url not in line.removeprefix("configuration error: WAREHOUSE_URL: ").split(";")[0]


def test_an_empty_url_is_unset() -> None:
    assert Settings.model_validate({"warehouse_url": ""}).warehouse_url is None


@pytest.mark.parametrize("schema", ["Autopilot", "1st", "a-b", "x" * 64, ""])
def test_schemas_are_lowercase_sql_names(schema: str) -> None:
    (line,) = errors(warehouse_schema=schema)
    assert line.startswith("configuration error: WAREHOUSE_SCHEMA: ")
    assert "a lowercase SQL name of at most 63 characters" in line


def test_duckdb_paths() -> None:
    assert duckdb_path("duckdb:///var/lib/w.duckdb") == "/var/lib/w.duckdb"
    assert duckdb_path("duckdb://.cache/warehouse.duckdb") == ".cache/warehouse.duckdb"
    assert duckdb_path("duckdb://my%20dir/w.duckdb") == "my dir/w.duckdb"


def test_the_tracks_topic_always_the_calls_topic_when_asked() -> None:
    tracks_only = warehouse_inputs(Settings())
    assert list(tracks_only) == ["segment.tracks"]
    assert tracks_only["segment.tracks"].schema == "autopilothq"
    assert tracks_only["segment.tracks"].types == {"track"}
    both = warehouse_inputs(Settings(warehouse_calls_schema="website"))
    assert both["segment.calls"].schema == "website"
    assert "identify" in both["segment.calls"].types
