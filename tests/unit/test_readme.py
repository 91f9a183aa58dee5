"""The README's tables name every setting and every topic the worker has."""

from __future__ import annotations

from pathlib import Path

from worker.settings import Settings
from worker.topics import TABLES, TopicNames

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [n.upper() for n in Settings.model_fields if f"| `{n.upper()}` |" not in README]
    assert missing == []


def test_every_topic_is_in_the_topic_map() -> None:
    names = TopicNames.from_settings(Settings())
    public = [names.email_events, names.segment_calls, names.segment_tracks,
              names.autopilot_requests, names.autopilot_deliveries, names.dead_letters]  # fmt: skip
    missing = [t for t in public if f"| `{t}` |" not in README]
    missing += [t for t in TABLES if f"{t}-changelog" not in README]
    assert missing == []
