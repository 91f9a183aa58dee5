"""Imports every agent module, so that the app they register on is complete."""

from worker.app import app
from worker.delivery import agents as delivery_agents
from worker.destination import agents as destination_agents
from worker.source import agents as source_agents

__all__ = ["app", "delivery_agents", "destination_agents", "source_agents"]
