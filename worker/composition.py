"""The composition root: which features run in this process, built on one runtime.

`WORKER_FEATURES` (default: all) names them: `ingest` (the HTTP routes), `source`, `destination`,
`delivery` and `warehouse` (which loads only when WAREHOUSE_URL is set); so one pod can only
deliver and another only map. The operations endpoints (health, metrics, resume), the console
(`/console`, led to from `/`) and the replay stage run in every worker. Nothing is registered on
import: `compose` builds what is asked, in one visible place.

Which destination APIs (`backends_for`): Ortto when ORTTO_API_KEY is set; Autopilot when
AUTOPILOT_API_KEY is set, and also when no key at all is set (as before there were two: the
mapping runs, delivery waits for a key). So an Ortto-only worker maps nothing for Autopilot,
and a worker with both keys serves both (a migration). The destination maps every call for
each of them; each backend with its key gets its own delivery agent.
"""

from __future__ import annotations

import logging

import faust
from pydantic import SecretStr

from worker.backends.autopilot import AutopilotBackend
from worker.backends.ortto import OrttoBackend
from worker.backends.seam import Backend, qualified
from worker.console.routes import build_console
from worker.delivery.agents import build_delivery
from worker.destination.agents import build_destination
from worker.ingest.routes import build_ingest
from worker.pipeline.replay import REPLAY_PIPELINE, REPLAY_STAGE, replay_handler
from worker.runtime.batches import run_stage
from worker.runtime.health import DeliveryStatus, NoDelivery, install_operations
from worker.runtime.stages import Runtime
from worker.settings import Settings
from worker.source.agents import build_source
from worker.topics import TopicNames
from worker.warehouse.agents import build_warehouse

__all__ = ["BACKENDS", "backend_named", "backends_for", "compose", "setup_warnings"]

log = logging.getLogger(__name__)

#: Every destination API the worker can send to, by name (`map destination --backend`).
BACKENDS = ("autopilot", "ortto")


def setup_warnings(settings: Settings) -> list[str]:
    """One line for each setting whose absence makes the features of this process drop or
    refuse data without any other sign than a metric or a 503: logged at start-up. The
    destination's and delivery's lines are per backend this worker maps for (`backends_for`)."""
    features = settings.worker_features
    backends = backends_for(settings)
    lines = []
    if (
        "destination" in features
        and any(b.name == "autopilot" for b in backends)
        and not (settings.autopilot_trigger_id or settings.autopilot_triggers)
    ):
        lines.append(
            "no journey trigger is configured (AUTOPILOT_TRIGGER_ID, AUTOPILOT_TRIGGERS): track "
            "calls are skipped (no_trigger_for_event), but for Audience Entered/Exited"
        )
    if "delivery" in features:
        for backend in backends:
            api = backend.api()
            if not _has(api.api_key):
                requests = TopicNames.from_settings(settings).for_backend(backend.name).requests
                lines.append(
                    f"{api.api_key_setting} is not set: delivery is off; request descriptors "
                    f"stay on {requests} until a worker with a key reads them"
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


def _has(key: SecretStr | None) -> bool:
    return key is not None and bool(key.get_secret_value())


def backends_for(settings: Settings) -> list[Backend]:
    """The destination APIs this worker maps for, Autopilot first."""
    ortto = _has(settings.ortto_api_key)
    backends: list[Backend] = []
    if _has(settings.autopilot_api_key) or not ortto:
        backends.append(AutopilotBackend.from_settings(settings))
    if ortto:
        backends.append(OrttoBackend.from_settings(settings))
    return backends


def backend_named(name: str, settings: Settings) -> Backend:
    """The backend `name` (one of `BACKENDS`), whether or not its key is set (offline mapping)."""
    if name == "ortto":
        return OrttoBackend.from_settings(settings)
    if name == "autopilot":
        return AutopilotBackend.from_settings(settings)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def compose(settings: Settings) -> Runtime:
    """The runtime with every feature `settings.worker_features` names built on it."""
    for line in setup_warnings(settings):
        log.warning("%s", line)
    runtime = Runtime.create(settings)
    backends = backends_for(settings)
    features = settings.worker_features
    source = build_source(runtime) if "source" in features else None
    if "destination" in features:
        # with the source here, a tie is written into its table where this process holds it
        build_destination(runtime, backends, None if source is None else source.user_by_email)
    deliveries: list[DeliveryStatus]
    if "delivery" in features:
        deliveries = [build_delivery(runtime, backend) for backend in backends]
    else:  # the console still names each API this worker maps for
        deliveries = [_not_delivered(backend) for backend in backends]
    if "ingest" in features:
        build_ingest(runtime)
    if "warehouse" in features:
        build_warehouse(runtime)
    operations = install_operations(runtime, deliveries)
    build_console(runtime, operations)
    _build_replay(runtime)
    return runtime


def _not_delivered(backend: Backend) -> NoDelivery:
    """What the console and readiness read of a backend this process maps for but does not
    deliver to."""
    return NoDelivery(
        name=backend.name,
        display_name=backend.display_name,
        pipeline=qualified("delivery", backend),
        rate_limit=backend.api().rate_limit,
    )


def _build_replay(runtime: Runtime) -> None:
    """The retry topic's stage: dead letters replayed by `python -m worker dlq replay`, each
    through the stage (of this process) that dead-lettered it."""
    stage = runtime.build_stage(REPLAY_PIPELINE, REPLAY_STAGE, replay_handler(runtime.stages))

    @runtime.app.agent(runtime.raw_topic(runtime.topics.retry), name="replay-retry")
    async def replay_retry(stream: faust.StreamT[bytes]) -> None:
        await run_stage(stream, stage)
