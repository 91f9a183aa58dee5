"""`AutopilotBackend`: Autopilot's REST API behind the seam (`worker.backends.seam`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.backends.autopilot import bulk, responses
from worker.backends.autopilot.trigger_journey import trigger_journey
from worker.backends.autopilot.upsert_contact import upsert_contact
from worker.backends.seam import ApiSettings, CallRequests, PlannedCall
from worker.models.autopilot_request import RequestDescriptor
from worker.models.parsed_call import ParsedCall
from worker.settings import Settings

__all__ = ["AutopilotBackend", "AutopilotConfig"]


@dataclass(frozen=True, slots=True)
class AutopilotConfig:
    """The settings the mapping reads, so that tests and `map destination` need no environment."""

    trigger_id: str | None = None
    triggers: Mapping[str, str] = field(default_factory=dict)
    typed_custom_fields: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> AutopilotConfig:
        return cls(
            trigger_id=settings.autopilot_trigger_id,
            triggers=dict(settings.autopilot_triggers),
            typed_custom_fields=settings.autopilot_typed_custom_fields,
        )


@dataclass(frozen=True, slots=True)
class AutopilotBackend:
    """Segment calls to Autopilot's REST API, and how delivery talks to it."""

    config: AutopilotConfig = field(default_factory=AutopilotConfig)
    api_settings: ApiSettings | None = None
    name: str = "autopilot"
    display_name: str = "Autopilot"
    keeps_original_names: bool = True
    #: Segment's name for the destination; the source's own tracks say `AutopilotHQ: false`
    integration_names: tuple[str, ...] = ("AutopilotHQ",)
    #: none beside `integrations`: the source's own tracks turn AutopilotHQ off there
    source_integrations: tuple[str, ...] = ()
    probe_path: str = responses.PROBE_PATH
    probe_body: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AutopilotBackend:
        return cls(
            AutopilotConfig.from_settings(settings),
            ApiSettings(
                base_url=settings.autopilot_base_url,
                api_key=settings.autopilot_api_key,
                api_key_setting="AUTOPILOT_API_KEY",
                rate_limit=settings.autopilot_rate_limit,
                retry_budget_s=settings.autopilot_retry_budget_s,
                request_timeout_s=settings.autopilot_request_timeout_s,
                auth_probe_interval_s=settings.autopilot_auth_probe_interval_s,
                bulk_linger_ms=settings.autopilot_bulk_linger_ms,
                give_back_after_s=settings.autopilot_give_back_after_s,
            ),
        )

    def requests_for(
        self,
        call: ParsedCall,
        *,
        learned_email: str | None,
        audience_state: Mapping[str, bool] | None,
    ) -> CallRequests:
        config = self.config
        if call.type == "identify":
            return upsert_contact(
                call,
                typed_custom_fields=config.typed_custom_fields,
                learned_email=learned_email,
                audience_state=audience_state,
            )
        return trigger_journey(
            call,
            trigger_id=config.trigger_id,
            triggers=config.triggers,
            typed_custom_fields=config.typed_custom_fields,
            learned_email=learned_email,
            audience_state=audience_state,
        )

    def api(self) -> ApiSettings:
        if self.api_settings is None:
            raise ValueError("this AutopilotBackend was built without API settings")
        return self.api_settings

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"autopilotapikey": api_key}

    def plan(self, batch: Sequence[RequestDescriptor]) -> list[PlannedCall]:
        return bulk.plan_batch(batch)

    def split(self, call: PlannedCall) -> list[PlannedCall]:
        return bulk.split_bulk(call)

    def retry_hint(self, data: Mapping[str, Any]) -> float | None:
        return responses.try_in_seconds(data)

    def item_ids(self, call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
        return responses.contact_ids(call, data)

    def item_errors(self, call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
        return [None] * len(call.groups)  # Autopilot answers for the whole call
