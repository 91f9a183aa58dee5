"""The figures of a reliability run: printed, and appended as JSON lines to a file if asked.

`RELIABILITY_RESULTS=/path/results.jsonl make reliability` collects them for the README; `-s`
(or `-rP`) shows the printed line.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

__all__ = ["report"]


def report(test: str, **figures: object) -> None:
    line = orjson.dumps({"test": test, **figures}, default=str).decode()
    print(f"RELIABILITY {line}")
    path = os.environ.get("RELIABILITY_RESULTS", "").strip()
    if path:
        with Path(path).open("a") as out:
            out.write(line + "\n")
