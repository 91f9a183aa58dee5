"""`OrttoBackend`: Ortto's API (api.ap3api.com, header `X-Api-Key`) behind the seam."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from worker.backends.ortto import bulk, responses
from worker.backends.ortto.create_activity import create_activity
from worker.backends.ortto.merge_person import merge_person
from worker.backends.seam import ApiSettings, CallRequests, PlannedCall
from worker.models.autopilot_request import RequestDescriptor
from worker.models.parsed_call import ParsedCall
from worker.models.segment_track import INTEGRATION_NAME, ORTTO_INTEGRATION_NAME
from worker.settings import Settings

__all__ = ["REGION_HOSTS", "OrttoBackend", "OrttoConfig"]

#: Ortto's API host for each instance region (ORTTO_REGION).
REGION_HOSTS: Final[Mapping[str, str]] = {
    "us": "https://api.ap3api.com",
    "au": "https://api.au.ap3api.com",
    "eu": "https://api.eu.ap3api.com",
}


@dataclass(frozen=True, slots=True)
class OrttoConfig:
    """The settings the mapping reads, so that tests and `map destination` need no environment."""

    merge_by: tuple[str, ...] = ("str::ei", "str::email")
    person_fields: Mapping[str, str] = field(default_factory=dict)
    activities: Mapping[str, str] = field(default_factory=dict)
    activity_attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    async_merge: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> OrttoConfig:
        return cls(
            merge_by=settings.ortto_merge_by,
            person_fields=dict(settings.ortto_person_fields),
            activities=dict(settings.ortto_activities),
            activity_attributes=dict(settings.ortto_activity_attributes),
            async_merge=settings.ortto_async_merge,
        )


def base_url(settings: Settings) -> str:
    """ORTTO_BASE_URL, else the host of ORTTO_REGION."""
    return settings.ortto_base_url or REGION_HOSTS[settings.ortto_region]


@dataclass(frozen=True, slots=True)
class OrttoBackend:
    """Segment calls to Ortto's API, and how delivery talks to it."""

    config: OrttoConfig = field(default_factory=OrttoConfig)
    api_settings: ApiSettings | None = None
    name: str = "ortto"
    display_name: str = "Ortto"
    keeps_original_names: bool = False
    #: Segment's names for the destination (classic and Actions)
    integration_names: tuple[str, ...] = ("Ortto", "Ortto (Actions)")
    #: the worker's own source, of either input format: Autopilot's email events and Ortto's
    #: own activities (its webhook) never reach Ortto, whatever their `integrations` say
    source_integrations: tuple[str, ...] = (INTEGRATION_NAME, ORTTO_INTEGRATION_NAME)
    probe_path: str = responses.PROBE_PATH
    probe_body: dict[str, Any] | None = field(default_factory=lambda: dict(responses.PROBE_BODY))

    @classmethod
    def from_settings(cls, settings: Settings) -> OrttoBackend:
        return cls(
            OrttoConfig.from_settings(settings),
            ApiSettings(
                base_url=base_url(settings),
                api_key=settings.ortto_api_key,
                api_key_setting="ORTTO_API_KEY",
                rate_limit=settings.ortto_rate_limit,
                retry_budget_s=settings.ortto_retry_budget_s,
                request_timeout_s=settings.ortto_request_timeout_s,
                auth_probe_interval_s=settings.ortto_auth_probe_interval_s,
                bulk_linger_ms=settings.ortto_bulk_linger_ms,
                give_back_after_s=settings.ortto_give_back_after_s,
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
            return merge_person(
                call,
                merge_by=config.merge_by,
                named_fields=config.person_fields,
                async_merge=config.async_merge,
                learned_email=learned_email,
                audience_state=audience_state,
            )
        return create_activity(
            call,
            merge_by=config.merge_by,
            activities=config.activities,
            activity_attributes=config.activity_attributes,
            async_merge=config.async_merge,
            learned_email=learned_email,
            audience_state=audience_state,
        )

    def api(self) -> ApiSettings:
        if self.api_settings is None:
            raise ValueError("this OrttoBackend was built without API settings")
        return self.api_settings

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"X-Api-Key": api_key}

    def plan(self, batch: Sequence[RequestDescriptor]) -> list[PlannedCall]:
        return bulk.plan_batch(batch)

    def split(self, call: PlannedCall) -> list[PlannedCall]:
        return bulk.split_bulk(call)

    def retry_hint(self, data: Mapping[str, Any]) -> float | None:
        return responses.try_in_seconds(data)

    def item_ids(self, call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
        return responses.person_ids(call, data)

    def item_errors(self, call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
        return responses.item_errors(call, data)
