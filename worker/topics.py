"""Every topic the worker reads or writes, named once from the settings.

Input topics are read as raw bytes (`key_serializer`/`value_serializer` "raw"): faust would ack
and lose a message whose decoding failed, so decoding happens in our per-message loop instead.
All topics, internal ones and table changelogs included, are created explicitly at start-up
with the configured partition count (`worker.runtime.topic_admin.ensure_topics`), never
auto-created.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.settings import Settings

__all__ = ["TABLES", "BackendTopics", "TopicNames", "TopicSpec"]

#: Faust tables of this worker: name -> what the changelog holds. Changelog topics are named
#: "<app id>-<table>-changelog", as faust names them.
TABLES: dict[str, str] = {
    "source_user_by_email": "lowercased email -> Segment userId (learned from identify/track)",
    "destination_email_by_user": "Segment userId -> email (learned from identify/track)",
    "destination_audiences": "contact + Engage audience key -> membership last sent (an API's "
    "own keys: Ortto's prefixed ortto:)",
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    role: str
    compacted: bool = False
    #: retention in days set when the worker creates the topic (0: for ever); None: the
    #: broker's default (7 days unless the cluster says otherwise)
    retention_days: float | None = None
    #: the setting that chooses `retention_days`
    retention_setting: str | None = None


@dataclass(frozen=True, slots=True)
class BackendTopics:
    """The topics of one destination API: its request descriptors (the destination writes,
    delivery reads), its delivery results, and the internal topic replayed descriptors take."""

    requests: str
    deliveries: str
    delivery_replay: str


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic map; the README's topic table is this class, row by row."""

    email_events: str
    ortto_activities: str
    segment_tracks: str
    segment_calls: str
    autopilot_requests: str
    autopilot_deliveries: str
    dead_letters: str
    source_by_email: str
    destination_by_user: str
    retry: str
    delivery_replay: str
    warehouse_replay: str
    app_id: str
    ortto_requests: str = "ortto.requests"
    ortto_deliveries: str = "ortto.deliveries"
    ortto_delivery_replay: str = "autopilot-worker.ortto-delivery-replay"
    dead_letters_retention_days: float = 30.0
    deliveries_retention_days: float = 30.0
    ortto_deliveries_retention_days: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        app_id = settings.worker_app_id
        return cls(
            email_events=settings.topic_email_events,
            ortto_activities=settings.topic_ortto_activities,
            segment_tracks=settings.topic_segment_tracks,
            segment_calls=settings.topic_segment_calls,
            autopilot_requests=settings.topic_autopilot_requests,
            autopilot_deliveries=settings.topic_autopilot_deliveries,
            dead_letters=settings.topic_dead_letters,
            source_by_email=f"{app_id}.source-by-email",
            destination_by_user=f"{app_id}.destination-by-user",
            retry=f"{app_id}.retry",
            delivery_replay=f"{app_id}.delivery-replay",
            warehouse_replay=f"{app_id}.warehouse-replay",
            app_id=app_id,
            ortto_requests=settings.topic_ortto_requests,
            ortto_deliveries=settings.topic_ortto_deliveries,
            ortto_delivery_replay=f"{app_id}.ortto-delivery-replay",
            dead_letters_retention_days=settings.topic_dead_letters_retention_days,
            deliveries_retention_days=settings.topic_autopilot_deliveries_retention_days,
            ortto_deliveries_retention_days=settings.topic_ortto_deliveries_retention_days,
        )

    def for_backend(self, name: str) -> BackendTopics:
        """The topics of the destination API `name` (a backend's `name`): Autopilot's keep the
        names they had before there were two."""
        if name == "autopilot":
            return BackendTopics(
                self.autopilot_requests, self.autopilot_deliveries, self.delivery_replay
            )
        if name == "ortto":
            return BackendTopics(
                self.ortto_requests, self.ortto_deliveries, self.ortto_delivery_replay
            )
        raise ValueError(f"no topics for a destination API named {name!r}")

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    def all_specs(self) -> list[TopicSpec]:
        """Every topic to create at start-up, with what it is for."""
        return [
            TopicSpec(self.email_events, "input: raw Autopilot email events (JSON)"),
            TopicSpec(self.ortto_activities, "input: Ortto activity webhooks, as Ortto sent them"),
            TopicSpec(self.segment_calls, "input: Segment calls (JSON)"),
            TopicSpec(self.segment_tracks, "output: Segment track messages from the source"),
            TopicSpec(self.autopilot_requests, "output/input: Autopilot request descriptors"),
            TopicSpec(
                self.autopilot_deliveries,
                "output: final delivery outcomes",
                retention_days=self.deliveries_retention_days,
                retention_setting="TOPIC_AUTOPILOT_DELIVERIES_RETENTION_DAYS",
            ),
            TopicSpec(
                self.dead_letters,
                "dead letters: original bytes + error headers",
                retention_days=self.dead_letters_retention_days,
                retention_setting="TOPIC_DEAD_LETTERS_RETENTION_DAYS",
            ),
            TopicSpec(self.source_by_email, "internal: email events and identities by email"),
            TopicSpec(self.destination_by_user, "internal: Segment calls by userId/anonymousId"),
            TopicSpec(self.ortto_requests, "output/input: Ortto request descriptors"),
            TopicSpec(
                self.ortto_deliveries,
                "output: final Ortto delivery outcomes",
                retention_days=self.ortto_deliveries_retention_days,
                retention_setting="TOPIC_ORTTO_DELIVERIES_RETENTION_DAYS",
            ),
            TopicSpec(self.retry, "internal: dead letters replayed to this worker only"),
            TopicSpec(self.delivery_replay, "internal: replayed request descriptors for delivery"),
            TopicSpec(
                self.ortto_delivery_replay,
                "internal: replayed Ortto request descriptors for Ortto's delivery",
            ),
            TopicSpec(
                self.warehouse_replay, "internal: replayed Segment messages for the warehouse"
            ),
            *(
                TopicSpec(self.changelog(table), f"changelog: {what}", compacted=True)
                for table, what in TABLES.items()
            ),
        ]
