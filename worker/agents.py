"""Imports every agent module, so that the app they register on is complete."""

from worker.app import app
from worker.delivery import agents as delivery_agents
from worker.destination import agents as destination_agents
from worker.ingest import routes as ingest_routes  # noqa: F401  (mounts the ingest endpoints)
from worker.source import agents as source_agents

__all__ = ["app", "delivery_agents", "destination_agents", "source_agents"]
