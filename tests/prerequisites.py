"""What a test does when something it needs is not on the machine: CI fails, others skip.

CI (environment variable ``CI`` set) installs everything the tests need (`.ci/run`), so a
missing broker, browser or npm package there is a broken install and must fail the run; on a
developer's machine the test is skipped with the reason, which says what to install.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "unavailable"]


def in_ci() -> bool:
    """True when ``CI`` is set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Fail the test under CI, skip it elsewhere; `message` says what is missing."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
