"""The worker alone, variants alternating on one preload: for measuring one lever at a time.

`python -m tests.benchmarks.ab_worker NAME=CHECKOUT [NAME=CHECKOUT ...]`: each variant is the
worker of another checkout (a git worktree of the commit to compare), run as `python -m worker
run` with that checkout first on `PYTHONPATH`. `AB_ROUNDS` rounds (default 3), each running
every variant once in the order given, on `BENCH_N` inputs per pipeline (default 200,000)
preloaded once, as the pipeline benchmark's (a). One JSON line a run: events/s from spawn,
CPU µs an input, peak RSS, records written, load average. Machines drift: compare variants
within a round, and over rounds.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import orjson

from tests.benchmarks import bench_pipeline as bp
from tests.benchmarks.broker import bench_broker


def main(argv: list[str]) -> int:
    variants = dict(arg.split("=", 1) for arg in argv)
    if not variants:
        print(__doc__, file=sys.stderr)
        return 2
    n = bp.default_n()
    with bench_broker() as broker:
        loaded = bp.preload_inputs(broker.bootstrap, n)
        run_variants(broker.bootstrap, loaded.shared, loaded.inputs, loaded.expected, variants)
    return 0


def run_variants(
    bootstrap: str, shared: dict[str, str], inputs: int, expected: int, variants: dict[str, str]
) -> None:
    """`AB_ROUNDS` rounds (default 3), each running the worker of every variant (name ->
    checkout) once, in the order given, on the preloaded topics `shared`; a JSON line a run."""
    rounds = int(os.environ.get("AB_ROUNDS", "3"))
    python_path = os.environ.get("PYTHONPATH", "")
    for round_ in range(rounds):
        for name, checkout in variants.items():
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (checkout, python_path) if p)
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    run, written = bp.run_worker(bootstrap, shared, expected, Path(tmp))
            finally:
                os.environ["PYTHONPATH"] = python_path
            figures = run.figures(inputs)
            line = {
                "round": round_,
                "variant": name,
                "events_per_s": figures.get("events_per_s"),
                "cpu_us_per_event": figures.get("cpu_us_per_event"),
                "peak_rss_mib": figures.get("peak_rss_mib"),
                "records_written": sum(written.values()),
                "load_average": round(os.getloadavg()[0], 2),
                "error": run.error,
            }
            print(orjson.dumps(line).decode(), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
