"""The composition root: which features run in this process, built on one runtime.

`WORKER_FEATURES` (default: all) names them: `ingest` (the HTTP routes), `source`, `destination`,
`delivery` and `warehouse` (which loads only when WAREHOUSE_URL is set); so one pod can only
deliver and another only map. The operations endpoints (health, metrics, resume), the console
(`/console`, led to from `/`) and the replay stage run in every worker. Nothing is registered on
import: `compose` builds what is asked, in one visible place.
"""

from __future__ import annotations

import logging

import faust

from worker.backends.autopilot import AutopilotBackend
from worker.backends.seam import Backend
from worker.console.routes import build_console
from worker.delivery.agents import build_delivery
from worker.destination.agents import build_destination
from worker.ingest.routes import build_ingest
from worker.pipeline.replay import REPLAY_PIPELINE, REPLAY_STAGE, replay_handler
from worker.runtime.batches import run_stage
from worker.runtime.health import DeliveryStatus, install_operations
from worker.runtime.stages import Runtime
from worker.settings import Settings
from worker.source.agents import build_source
from worker.warehouse.agents import build_warehouse

__all__ = ["backend_for", "compose", "setup_warnings"]

log = logging.getLogger(__name__)


def setup_warnings(settings: Settings) -> list[str]:
    """One line for each setting whose absence makes the features of this process drop or
    refuse data without any other sign than a metric or a 503: logged at start-up."""
    features = settings.worker_features
    lines = []
    if "destination" in features and not (
        settings.autopilot_trigger_id or settings.autopilot_triggers
    ):
        lines.append(
            "no journey trigger is configured (AUTOPILOT_TRIGGER_ID, AUTOPILOT_TRIGGERS): track "
            "calls are skipped (no_trigger_for_event), but for Audience Entered/Exited"
        )
    if "delivery" in features and settings.autopilot_api_key is None:
        lines.append(
            "AUTOPILOT_API_KEY is not set: delivery is off; request descriptors stay on "
            f"{settings.topic_autopilot_requests} until a worker with a key reads them"
        )
    if "ingest" in features and settings.segment_write_keys is None:
        lines.append(
            "SEGMENT_WRITE_KEYS is not set: the Segment API routes (/v1/..., /b) answer 503"
        )
    if "ingest" in features and settings.autopilot_webhook_token is None:
        lines.append(
            "AUTOPILOT_WEBHOOK_TOKEN is not set: the Autopilot webhook (/autopilot/events) "
            "answers 503"
        )
    return lines


def backend_for(settings: Settings) -> Backend:
    """The destination API this worker sends to (Autopilot's REST API today)."""
    return AutopilotBackend.from_settings(settings)


def compose(settings: Settings) -> Runtime:
    """The runtime with every feature `settings.worker_features` names built on it."""
    for line in setup_warnings(settings):
        log.warning("%s", line)
    runtime = Runtime.create(settings)
    backend = backend_for(settings)
    features = settings.worker_features
    if "source" in features:
        build_source(runtime)
    if "destination" in features:
        build_destination(runtime, backend)
    delivery: DeliveryStatus | None = None
    if "delivery" in features:
        delivery = build_delivery(runtime, backend)
    if "ingest" in features:
        build_ingest(runtime)
    if "warehouse" in features:
        build_warehouse(runtime)
    operations = install_operations(runtime, delivery)
    build_console(runtime, operations)
    _build_replay(runtime)
    return runtime


def _build_replay(runtime: Runtime) -> None:
    """The retry topic's stage: dead letters replayed by `python -m worker dlq replay`, each
    through the stage (of this process) that dead-lettered it."""
    stage = runtime.build_stage(REPLAY_PIPELINE, REPLAY_STAGE, replay_handler(runtime.stages))

    @runtime.app.agent(runtime.raw_topic(runtime.topics.retry), name="replay-retry")
    async def replay_retry(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, stage)
