"""`make bench`: every benchmark in one run, a Markdown table on stdout, bench-results.json.

Sections, in this order (progress goes to stderr):

1. mapping throughput on one core, source (both formats) and destination, against orjson loads +
   dumps;
2. delivery against the stand-in Autopilot API, then against the stand-in Ortto API (no
   broker);
3. the warehouse loader into PostgreSQL (a server of Debian's package started for the run)
   against a plain COPY of the same rows, and into DuckDB against its appender (no broker);
4. on one broker (KAFKA_BOOTSTRAP_SERVERS, else a local JVM broker on free ports in a temp
   dir): pipeline throughput of the worker, a plain aiokafka loop and quixstreams, with peak
   RSS; end-to-end latency through the worker at a steady 1,000 events/s; ingest over HTTP.

Environment: BENCH_N (inputs per pipeline, default 200000), BENCH_PIPELINE_ROUNDS (rounds of
the one-process contenders, default 3), BENCH_WAREHOUSE_N (tracks the
warehouse section loads, default 100000), BENCH_ONLY (comma-separated section names: mapping,
delivery, ortto, warehouse, pipeline, latency, ingest), BENCH_RESULTS (the JSON path,
default bench-results.json at the repository root). A section that fails is reported as failed
and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.benchmarks import (
    bench_delivery,
    bench_delivery_ortto,
    bench_ingest,
    bench_mapping,
    bench_pipeline,
    bench_warehouse,
)
from tests.benchmarks.broker import bench_broker

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("mapping", "delivery", "ortto", "warehouse", "pipeline", "latency", "ingest")


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _section(results: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    if name not in _wanted():
        return
    _log(f"{name}: running")
    started = time.perf_counter()
    try:
        results[name] = run()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    results[name]["section_s"] = round(time.perf_counter() - started, 1)
    _log(f"{name}: done in {results[name]['section_s']} s")


def _wanted() -> set[str]:
    only = os.environ.get("BENCH_ONLY", "").strip()
    return {s.strip() for s in only.split(",") if s.strip()} if only else set(SECTIONS)


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run_all() -> dict[str, Any]:
    # the output topics of a contender are watched before it creates them; not worth a warning
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": _load(),
        },
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git(),
    }
    started = time.perf_counter()
    _section(results, "mapping", bench_mapping.measure)
    _section(results, "delivery", lambda: asyncio.run(bench_delivery.run()))
    _section(results, "ortto", lambda: asyncio.run(bench_delivery_ortto.run()))
    _section(results, "warehouse", bench_warehouse.measure)
    if _wanted() & {"pipeline", "latency", "ingest"}:
        _log("starting the broker")
        with bench_broker() as broker:
            results["broker"] = broker.source
            _section(
                results, "pipeline", lambda: bench_pipeline.measure_throughput(broker.bootstrap)
            )
            _section(results, "latency", lambda: bench_pipeline.measure_latency(broker.bootstrap))
            _section(results, "ingest", lambda: bench_ingest.measure(broker.bootstrap))
    results["machine"]["load_average_at_end"] = _load()
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


# -------------------------------------------------------------------------------------- table


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _failed(section: dict[str, Any]) -> str | None:
    error = section.get("error")
    return f"failed: {str(error).splitlines()[0][:200]}" if error else None


def _mapping_rows(m: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(m):
        return [["mapping throughput, one core", failed, "", "", "≥ 0.4"]]
    rows = []
    labels = {  # side -> (row, the issues' goal for the ratio)
        "source": ("source mapping", "≥ 0.4"),
        "ortto": ("source mapping, Ortto webhook activities", "none set"),
        "destination": ("destination mapping", "≥ 0.4"),
    }
    for side, (label, goal) in labels.items():
        if side not in m:
            continue
        r = m[side]
        stages = ", ".join(f"{k.split(' ')[0]} {v:g}" for k, v in r["stages_us"].items())
        rows.append(
            [
                f"{label}, one core, bytes → JSON bytes",
                f"{_n(r['events_per_s'])} events/s ({r['us_per_event']:g} µs; µs by stage: "
                f"{stages})",
                f"orjson loads + dumps {_n(r['floor_events_per_s'])}/s "
                f"({r['floor_us_per_event']:g} µs)",
                f"{r['ratio']:.3f}",
                goal,
            ]
        )
    return rows


def _pipeline_rows(p: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(p):
        return [["pipeline throughput", failed, "", "", ""]]
    w = p["worker"]
    inputs = f"{_n(p['inputs'])} inputs ({_n(p['n_per_pipeline'])} per pipeline)"

    def figure(run: dict[str, Any]) -> str:
        if not run.get("complete"):
            return _failed(run) or "incomplete"
        return (
            f"{_n(run.get('events_per_s'))} events/s ({run.get('seconds')} s from spawn; "
            f"{_n(run.get('processing_events_per_s'))}/s after the first output)"
        )

    rows = [["pipeline throughput (a) the worker, " + inputs, figure(w), "", "", ""]]
    for other, label, goal in (
        ("aiokafka", "(b) plain aiokafka loop", "≥ 0.6"),
        ("quix", "(c) quixstreams Application", "≥ 1.0"),
    ):
        ratio = p.get(f"ratio_worker_to_{other}")
        processing = p.get(f"ratio_worker_to_{other}_processing")
        rows.append(
            [
                f"pipeline throughput {label}",
                figure(p[other]),
                "",
                f"(a)/{label[:3]} {_n(ratio, 3)} (after first output: {_n(processing, 3)})",
                goal,
            ]
        )
    if "worker_x2" in p:
        ratio = p.get("ratio_worker_x2_to_quix_x2")
        processing = p.get("ratio_worker_x2_to_quix_x2_processing")
        pair_cpu = p["worker_x2"].get("cpu_us_per_event")
        quix_cpu = p.get("quix_x2", {}).get("cpu_us_per_event")
        rows += [
            [
                "pipeline throughput (a2) two worker processes, one group",
                figure(p["worker_x2"]),
                "",
                "",
                "",
            ],
            [
                "pipeline throughput (c2) two quixstreams processes, one group",
                figure(p.get("quix_x2", {})),
                f"CPU µs/event: (a2) {_n(pair_cpu, 0)}, (c2) {_n(quix_cpu, 0)}",
                f"(a2)/(c2) {_n(ratio, 3)} (after first output: {_n(processing, 3)})",
                "",
            ],
        ]
    rss = w.get("peak_rss_mib")
    rows.append(
        [
            "worker peak RSS during the throughput run",
            f"{_n(rss, 1)} MiB (VmHWM)",
            f"aiokafka loop {_n(p['aiokafka'].get('peak_rss_mib'), 1)} MiB, quixstreams "
            f"{_n(p['quix'].get('peak_rss_mib'), 1)} MiB",
            "",
            "< 300 MB",
        ]
    )
    return rows


def _latency_rows(lat: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(lat):
        return [["end-to-end latency", failed, "", "", "p99 < 100 ms"]]
    acks = lat["input_append_ack_ms"]
    return [
        [
            f"end-to-end latency, source pipeline, {_n(lat['rate_per_s'])} events/s for "
            f"{lat['seconds']:g} s (CreateTime in → CreateTime out)",
            f"p50 {_n(lat['p50_ms'])} ms, p99 {_n(lat['p99_ms'])} ms (max {_n(lat['max_ms'])}; "
            f"{_n(lat['received'])}/{_n(lat['sent'])} arrived; p50 by 5-s window of sending: "
            + " → ".join(f"{w / 1000:.1f} s" for w in lat["p50_ms_by_5s_window"])
            + f"; worker CPU busy {lat['worker_cpu_busy']:.0%} of a core)",
            f"the input producer's own acks (acks=all): p50 {acks['p50']:g} ms, "
            f"p99 {acks['p99']:g} ms",
            "",
            "p99 < 100 ms",
        ]
    ]


def _delivery_rows(d: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(d):
        return [["delivery", failed, "", "", "0 429s"]]
    return [
        [
            f"delivery, bulk upserts at {d['rate_limit']:g} req/s (stand-in API)",
            f"{_n(d['contacts_per_s'], 1)} contacts/s ({d['bulk_requests']} bulk requests)",
            f"{d['http_429']} 429s, at most {d['max_requests_in_1s']} requests in any second",
            "",
            "0 429s",
        ],
        [
            f"delivery, triggers at {d['rate_limit']:g} req/s",
            f"{_n(d['triggers_per_s'], 2)} triggers/s",
            "",
            "",
            "",
        ],
    ]


def _ortto_rows(o: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(o):
        return [["delivery to Ortto", failed, "", "", "≥ 0.9 of 100 x rate, 0 429s"]]
    rate = o["rate_limit"]
    return [
        [
            f"Ortto, person merges at {rate:g} req/s (stand-in API)",
            f"{_n(o['people_per_s'], 1)} people/s",
            f"100 x rate = {_n(100 * rate)}/s; {o['http_429']} 429s, at most "
            f"{o['max_requests_in_1s']} requests in any second",
            f"**{o['people_ratio']:.3f}**",
            "≥ 0.9, 0 429s",
        ],
        [
            f"Ortto, activities at {rate:g} req/s",
            f"{_n(o['activities_per_s'], 1)} activities/s",
            f"100 x rate = {_n(100 * rate)}/s",
            f"**{o['activities_ratio']:.3f}**",
            "≥ 0.9",
        ],
    ]


def _ingest_rows(i: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(i):
        return [["ingest", failed, "", "", ""]]
    return [
        [
            f"ingest, POST /v1/batch ({i['per_request']} messages a request, "
            f"{i['concurrency']} in flight)",
            f"{_n(i['messages_per_s'])} messages/s accepted (request p50 "
            f"{i['request_p50_ms']:g} ms, p99 {i['request_p99_ms']:g} ms)",
            "",
            "",
            "",
        ]
    ]


def _warehouse_rows(w: dict[str, Any]) -> list[list[str]]:
    if failed := _failed(w):
        return [["warehouse loader", failed, "", "", "≥ 0.5"]]
    what = f"{_n(w['tracks'])} tracks, {_n(w['rows'])} rows, batches of {_n(w['batch'])}"
    return [
        [
            f"warehouse loader into PostgreSQL, bytes → committed rows ({what})",
            f"{_n(w['postgres_loader_rows_per_s'])} rows/s (the client's CPU "
            f"{w['postgres_loader_cpu_us_per_track']:g} µs a track)",
            f"plain COPY of the same rows: binary {_n(w['postgres_copy_rows_per_s'])} rows/s, "
            f"text {_n(w['postgres_text_copy_rows_per_s'])} rows/s",
            f"{w['postgres_ratio']:.3f}, the median of {w['rounds']} alternating rounds "
            f"({', '.join(f'{r:.3f}' for r in w['postgres_ratios'])}; of the text COPY: "
            f"{w['postgres_text_ratio']:.3f})",
            "≥ 0.5",
        ],
        [
            "its time in the database (COPY straight into the tables, the ids being new; "
            "overlapping the next batch's parse)",
            f"{_n(w['postgres_loader_database_rows_per_s'])} rows/s",
            "the binary COPY",
            f"{w['postgres_database_ratio']:.3f}",
            "",
        ],
        [
            "the loader again over the same tracks (a replay: every id there already)",
            f"{_n(w['postgres_replay_rows_per_s'])} rows/s",
            "",
            "",
            "",
        ],
        [
            "warehouse loader into DuckDB, bytes → committed rows",
            f"{_n(w['duckdb_loader_rows_per_s'])} rows/s (database side "
            f"{_n(w['duckdb_loader_database_rows_per_s'])} rows/s)",
            f"DuckDB's appender, same rows {_n(w['duckdb_appender_rows_per_s'])} rows/s",
            f"{w['duckdb_ratio']:.3f} (database side {w['duckdb_database_ratio']:.3f})",
            "",
        ],
    ]


def _detail(p: dict[str, Any]) -> list[str]:
    """One line per contender: where the time and the memory went."""
    lines = [
        "| contender | events/s from spawn | events/s after first output | start-up to first "
        "output | CPU µs/event | peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name in (
        ("worker", "(a) worker"),
        ("aiokafka", "(b) aiokafka"),
        ("quix", "(c) quix"),
        ("worker_x2", "(a2) 2 workers"),
        ("quix_x2", "(c2) 2 quix"),
    ):
        r = p.get(key)
        if r is None:
            continue
        lines.append(
            f"| {name} | {_n(r.get('events_per_s'))} | {_n(r.get('processing_events_per_s'))} "
            f"| {_n(r.get('startup_to_first_output_s'), 1)} s | {_n(r.get('cpu_us_per_event'), 0)}"
            f" | {_n(r.get('peak_rss_mib'), 1)} MiB"
            + (f" (sum {_n(r['peak_rss_sum_mib'], 1)})" if "peak_rss_sum_mib" in r else "")
            + " |"
        )
    rounds = {key: p.get(key, {}).get("rounds") for key in ("worker", "aiokafka", "quix")}
    if rounds["worker"] and len(rounds["worker"]) > 1:
        lines += ["", _rounds_line(rounds)]
    return lines


def _rounds_line(rounds: dict[str, list[dict[str, Any]] | None]) -> str:
    """Each one-process contender's rounds, in the order run, and the CPU ratio of each."""
    parts = []
    for key, name in (("worker", "(a)"), ("aiokafka", "(b)"), ("quix", "(c)")):
        runs = rounds.get(key) or []
        parts.append(
            f"{name} "
            + ", ".join(
                f"{_n(r.get('events_per_s'))}/s {_n(r.get('cpu_us_per_event'), 0)} µs" for r in runs
            )
        )
    ratios = [
        f"{w['cpu_us_per_event'] / q['cpu_us_per_event']:.2f}"
        for w, q in zip(rounds.get("worker") or [], rounds.get("quix") or [], strict=False)
        if w.get("cpu_us_per_event") and q.get("cpu_us_per_event")
    ]
    return (
        f"Rounds (a, b, c in turn, {len(rounds['worker'] or [])} times; the table gives each "
        f"figure's median): "
        + "; ".join(parts)
        + ". CPU µs/event (a)/(c) round by round: "
        + (", ".join(ratios) or "n/a")
        + "."
    )


def table(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    if "mapping" in results:
        rows += _mapping_rows(results["mapping"])
    if "pipeline" in results:
        rows += _pipeline_rows(results["pipeline"])
    if "latency" in results:
        rows += _latency_rows(results["latency"])
    if "delivery" in results:
        rows += _delivery_rows(results["delivery"])
    if "ortto" in results:
        rows += _ortto_rows(results["ortto"])
    if "warehouse" in results:
        rows += _warehouse_rows(results["warehouse"])
    if "ingest" in results:
        rows += _ingest_rows(results["ingest"])
    machine = results["machine"]
    lines = [
        f"Benchmarks: `make bench`, {results['started_at']}, commit {results['commit']}, "
        f"{machine['cpus']} CPUs, Python {machine['python']}, load average "
        f"{machine['load_average_at_start'][:1]} → {machine.get('load_average_at_end', [])[:1]}, "
        f"broker: {results.get('broker', 'none')}, {results['total_s']} s in all.",
        "",
        "| what | figure | baseline (same run) | ratio | goal |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    pipeline = results.get("pipeline", {})
    if "worker" in pipeline:
        lines += ["", *_detail(pipeline)]
        written = pipeline["worker"].get("records_by_topic")
        if written:
            total = sum(written.values())
            lines += [
                "",
                f"Records the worker wrote for {_n(pipeline['inputs'])} inputs: {_n(total)} "
                f"({total / pipeline['inputs']:.2f} per input; the loops write "
                f"{pipeline['records_expected'] / pipeline['inputs']:.2f}): "
                + ", ".join(f"{topic} {_n(n)}" for topic, n in sorted(written.items())),
            ]
            coalescible = pipeline["worker"].get("changelog_records_coalescible")
            if coalescible is not None:
                changelog = sum(n for topic, n in written.items() if topic.endswith("-changelog"))
                saved = sum(coalescible.values())
                lines += [
                    "",
                    f"Of its {_n(changelog)} changelog records, a cache writing each key's latest "
                    f"value once per commit interval would have left out {_n(saved)}"
                    " (a key written again on its partition within the same second).",
                ]
    return "\n".join(lines)


def main() -> int:
    results = run_all()
    path = Path(os.environ.get("BENCH_RESULTS", "") or REPO / "bench-results.json")
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(table(results))
    print(f"\n(written to {path})")
    failed = [name for name in SECTIONS if "error" in results.get(name, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
