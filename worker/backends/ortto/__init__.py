"""Ortto's API (api.ap3api.com and its regions, header `X-Api-Key`): Autopilot renamed in 2022.

One module per action: `merge_person` (identify, and Engage audiences as custom booleans) and
`create_activity` (track); `fields` (traits and properties -> person fields and attributes),
`bulk` (people and activities gathered into calls of up to 100), `responses` (person ids,
refused items, the nested `try-in-seconds`), and `backend`, the seam delivery and the
destination use.
"""

from __future__ import annotations

from worker.backends.ortto.backend import OrttoBackend, OrttoConfig

__all__ = ["OrttoBackend", "OrttoConfig"]
