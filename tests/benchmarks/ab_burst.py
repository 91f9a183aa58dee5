"""The worker under a burst of bad input, variants alternating: every input is dead-lettered.

`python -m tests.benchmarks.ab_burst NAME=CHECKOUT [NAME=CHECKOUT ...]`: as `ab_worker`, each
variant the worker of another checkout, but on `BENCH_N` (default 50,000) bad email events and
as many bad Segment calls (the kinds `tests.benchmarks.inputs` mixes into the pipeline
benchmark: broken JSON, missing fields, a track without an email), preloaded once. `AB_ROUNDS`
rounds (default 3). One JSON line a run: events/s from spawn, CPU µs an input, peak RSS, records
written. Bad data comes in bursts, and a dead letter costs more than a mapped input (the letter,
its log line, the console's feed of the dead-letter topic).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid

from tests.benchmarks import bench_pipeline as bp
from tests.benchmarks import inputs
from tests.benchmarks.ab_worker import run_variants
from tests.benchmarks.broker import (
    bench_broker,
    client_security,
    preload,
    warm_group_coordinator,
)
from tests.kafkautil import create_topics


def bad_inputs(n: int, *, seed: int = 7) -> tuple[list[inputs.Input], list[inputs.Input]]:
    """`n` bad email events and `n` bad Segment calls."""
    rng = random.Random(seed)
    error = inputs.Expect.ERROR
    events = [inputs.Input(None, inputs.bad_source(rng, i), error) for i in range(n)]
    calls = [inputs.Input(None, inputs.bad_destination(rng, i), error) for i in range(n)]
    return events, calls


def main(argv: list[str]) -> int:
    variants = dict(arg.split("=", 1) for arg in argv)
    if not variants:
        print(__doc__, file=sys.stderr)
        return 2
    n = int(os.environ.get("BENCH_N", "50000"))
    events, calls = bad_inputs(n)
    with bench_broker() as broker:
        bootstrap = broker.bootstrap
        suffix = uuid.uuid4().hex[:10]
        shared = {"source": f"burst-events-{suffix}", "destination": f"burst-calls-{suffix}"}
        topics = list(shared.values())
        asyncio.run(create_topics(bootstrap, topics, bp.PARTITIONS, security=client_security()))
        asyncio.run(preload(bootstrap, shared["source"], events, bp.PARTITIONS))
        asyncio.run(preload(bootstrap, shared["destination"], calls, bp.PARTITIONS))
        asyncio.run(warm_group_coordinator(bootstrap, shared["source"]))
        run_variants(bootstrap, shared, 2 * n, 2 * n, variants)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
