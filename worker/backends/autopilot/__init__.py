"""Autopilot Journeys' REST API (api2.autopilothq.com/v1, header `autopilotapikey`).

One module per action: `upsert_contact` (identify, and Engage audiences as custom booleans) and
`trigger_journey` (track); `fields` (traits -> contact fields), `bulk` (upserts merged into
`POST /v1/contacts`), `responses` (contact ids, `try-in-seconds`), and `backend`, the seam
delivery and the destination use.
"""

from __future__ import annotations

from worker.backends.autopilot.backend import AutopilotBackend, AutopilotConfig

__all__ = ["AutopilotBackend", "AutopilotConfig"]
