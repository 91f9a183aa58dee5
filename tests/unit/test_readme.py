"""The README's tables name every setting and every topic the worker has."""

from __future__ import annotations

from pathlib import Path

from worker.settings import Settings
from worker.topics import TABLES, TopicNames

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [n.upper() for n in Settings.model_fields if f"| `{n.upper()}` |" not in README]
    assert missing == []


def test_every_topic_the_worker_creates_is_in_the_topic_map() -> None:
    names = TopicNames.from_settings(Settings(worker_app_id="APP"))
    rows = {spec.name.replace("APP", "<app id>") for spec in names.all_specs()}
    missing = [t for t in sorted(rows) if f"| `{t}` |" not in README]
    assert missing == []
    assert len(rows) == 15 + len(TABLES)
