"""Imports every agent module, so that the app they register on is complete; wires replay."""

import faust

from worker import health  # noqa: F401  (mounts /metrics, /healthz and /readyz)
from worker.app import app, raw_topic, topic_names
from worker.delivery import agents as delivery_agents
from worker.destination import agents as destination_agents
from worker.ingest import routes as ingest_routes
from worker.replay import REPLAY_PIPELINE, REPLAY_STAGE, replay_handler
from worker.source import agents as source_agents
from worker.streaming import run_pipeline
from worker.wiring import build_pipeline

__all__ = ["app", "delivery_agents", "destination_agents", "ingest_routes", "source_agents"]

_replay = build_pipeline(REPLAY_PIPELINE, REPLAY_STAGE, replay_handler)


@app.agent(raw_topic(topic_names.retry), name="replay-retry")
async def replay_retry(stream: faust.StreamT[bytes]) -> None:
    """Dead letters replayed by `python -m worker dlq replay`, each through its own stage."""
    await run_pipeline(stream, _replay)
