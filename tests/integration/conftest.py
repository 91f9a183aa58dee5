"""A running worker on topics of its own, shared by the tests of one module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workerproc import WorkerProcess, worker_env


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The real worker (`python -m worker run`), ready to consume, stopped after the module."""
    suffix = uuid.uuid4().hex[:10]
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    process = WorkerProcess(worker_env(kafka_bootstrap, suffix), log_path).start()
    try:
        process.wait_for_log("[^Worker]: Ready")
        yield process
    finally:
        process.stop()
