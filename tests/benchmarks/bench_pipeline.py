"""Pipeline throughput, memory and end-to-end latency on a real broker.

Throughput: N raw Autopilot events and N Segment calls (`BENCH_N`, default 200,000 each) are
preloaded once onto two input topics; then each contender, a child process started cold and
given its own consumer group and output topics, reads both from the earliest offset:

(a) the worker, `python -m worker run` (source and destination pipelines, tables and all);
(b) a plain aiokafka consume -> map -> produce loop (`tests.benchmarks.loops aiokafka`);
(c) a quixstreams Application (`tests.benchmarks.loops quix`).

All three run the same mapping functions on the same inputs and must write the same number of
records: one per output (track or request descriptor) plus one per dead letter (the inputs are
tagged, see `tests.benchmarks.inputs`). A throwaway consumer group joins first, so that the
broker's group coordinator is up before any contender (on a fresh broker the first group to
join waits for it, and would be the worker). The clock starts when the process is spawned and
stops when the end offsets of its output topics add up to that number. `processing` events/s leaves
the start-up out: from the first output record to the last. Peak RSS (VmHWM) and CPU seconds
are read from /proc just before each contender is stopped.

Latency: a fresh worker on topics of its own; raw events are appended to its input topic at a
steady rate, and each one's latency is its track's CreateTime on the output topic minus its own
CreateTime on the input topic (both stamped by the producers, on this one machine's clock).

Run alone: `.venv/bin/python -m tests.benchmarks.bench_pipeline`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.benchmarks.broker import (
    OffsetWatcher,
    bench_broker,
    client_security,
    preload,
    proc_status,
    warm_group_coordinator,
)
from tests.benchmarks.inputs import (
    TRIGGERS,
    Expect,
    Input,
    check_tags,
    destination_inputs,
    source_inputs,
)
from tests.kafkautil import create_topics
from tests.workerproc import WorkerProcess, free_port, worker_env

__all__ = [
    "Preloaded",
    "default_n",
    "expected_records",
    "measure_latency",
    "measure_throughput",
    "preload_inputs",
    "run_worker",
]

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3
POLL_S = 0.1
STALL_S = 90.0
"""A contender that writes nothing for this long is given up on (and reported as such)."""
LATENCY_RATE = 1000
LATENCY_SECONDS = 20.0
LATENCY_WARMUP_S = 3.0
READY_LINE = "[^Worker]: Ready"
COMMIT_INTERVAL_S = 1.0
"""The worker's commit interval (`broker_commit_interval` in `worker.runtime.app`)."""


def default_n() -> int:
    return int(os.environ.get("BENCH_N", "200000"))


def default_rounds() -> int:
    """Rounds of the one-process contenders (`BENCH_PIPELINE_ROUNDS`, default 3)."""
    return max(1, int(os.environ.get("BENCH_PIPELINE_ROUNDS", "3")))


#: the figures a round list keeps for each round
ROUND_FIGURES = ("events_per_s", "processing_events_per_s", "cpu_us_per_event", "peak_rss_mib")


def median_of_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One contender's figures over its rounds: each number the median of the rounds' (a
    figure the rounds disagree on otherwise, and every non-number, from the first round), the
    rounds' own figures under `rounds`; a round that failed makes the whole fail, with its
    error."""
    failed = [r for r in rounds if not r.get("complete", False)]
    if failed:
        return failed[0] | {"rounds": [_round_figures(r) for r in rounds]}
    merged = dict(rounds[0])
    for key, value in rounds[0].items():
        values = [r.get(key) for r in rounds]
        if isinstance(value, int | float) and not isinstance(value, bool):
            numbers = [v for v in values if isinstance(v, int | float)]
            if len(numbers) == len(rounds):
                median = statistics.median(numbers)
                merged[key] = round(median, 2) if isinstance(median, float) else median
    merged["rounds"] = [_round_figures(r) for r in rounds]
    return merged


def _round_figures(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: figures.get(key) for key in ROUND_FIGURES}


@dataclass
class Run:
    """What one contender did."""

    name: str
    expected: int
    written: int = 0
    spawned_to_done_s: float | None = None
    spawned_to_first_output_s: float | None = None
    spawned_to_ready_s: float | None = None
    status: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def figures(self, inputs: int) -> dict[str, Any]:
        done, first = self.spawned_to_done_s, self.spawned_to_first_output_s
        out: dict[str, Any] = {
            "inputs": inputs,
            "records_expected": self.expected,
            "records_written": self.written,
            "complete": self.error is None,
        }
        if self.error:
            out["error"] = self.error
        if done is not None:
            out["seconds"] = round(done, 2)
            out["events_per_s"] = round(inputs / done)
        if done is not None and first is not None and done > first:
            out["processing_seconds"] = round(done - first, 2)
            out["processing_events_per_s"] = round(inputs / (done - first))
        if first is not None:
            out["startup_to_first_output_s"] = round(first, 2)
        if self.spawned_to_ready_s is not None:
            out["startup_to_ready_s"] = round(self.spawned_to_ready_s, 2)
        if self.status:
            out["peak_rss_mib"] = self.status.get("VmHWM")
            if "VmHWM_sum" in self.status:
                out["peak_rss_sum_mib"] = self.status["VmHWM_sum"]
            out["rss_at_end_mib"] = self.status.get("VmRSS")
            out["cpu_s"] = self.status.get("cpu_s")
            if "cpu_s" in self.status:
                out["cpu_us_per_event"] = round(self.status["cpu_s"] / inputs * 1e6, 1)
        return out


class _LogTail:
    """Reads a growing log file incrementally, looking for one line."""

    def __init__(self, path: Path, needle: str) -> None:
        self._path = path
        self._needle = needle.encode()
        self._offset = 0
        self._carry = b""

    def seen(self) -> bool:
        try:
            with self._path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except OSError:
            return False
        self._offset += len(chunk)
        text = self._carry + chunk
        self._carry = text[-len(self._needle) :]
        return self._needle in text


async def _watch(
    run: Run,
    procs: Sequence[subprocess.Popen[bytes]],
    spawned: float,
    bootstrap: str,
    outputs: Sequence[str],
    *,
    ready: _LogTail | None,
) -> None:
    """Poll the output topics until `run.expected` records are there, the process dies or it
    stalls; record the times, then the process's peak RSS and CPU time."""
    async with OffsetWatcher(bootstrap, outputs, PARTITIONS) as watcher:
        last_progress = time.perf_counter()
        while True:
            total = await watcher.total()
            now = time.perf_counter()
            if ready is not None and run.spawned_to_ready_s is None and ready.seen():
                run.spawned_to_ready_s = now - spawned
            if total > run.written:
                last_progress = now
                if run.written == 0:
                    run.spawned_to_first_output_s = now - spawned
                run.written = total
            if total >= run.expected:
                run.spawned_to_done_s = now - spawned
                break
            dead = next((proc for proc in procs if proc.poll() is not None), None)
            if dead is not None:
                run.error = f"exited with status {dead.returncode} after {total} records"
                break
            if now - last_progress > STALL_S:
                run.error = f"stalled at {total} of {run.expected} records for {STALL_S:.0f} s"
                break
            await asyncio.sleep(POLL_S)
    run.status = _combined([proc_status(proc.pid) for proc in procs])


def _combined(statuses: Sequence[dict[str, float]]) -> dict[str, float]:
    """Several processes' /proc figures as one: CPU seconds added up, the largest peak RSS
    (and, with more than one process, their peaks added up as `VmHWM_sum`)."""
    if len(statuses) == 1:
        return statuses[0]
    out: dict[str, float] = {"cpu_s": round(sum(s.get("cpu_s", 0.0) for s in statuses), 2)}
    for name in ("VmHWM", "VmRSS"):
        out[name] = max(s.get(name, 0.0) for s in statuses)
    out["VmHWM_sum"] = round(sum(s.get("VmHWM", 0.0) for s in statuses), 1)
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run_worker(
    bootstrap: str, shared: dict[str, str], expected: int, tmp: Path, *, processes: int = 1
) -> tuple[Run, dict[str, int]]:
    suffix = uuid.uuid4().hex[:10]
    env = worker_env(
        bootstrap,
        suffix,
        TOPIC_EMAIL_EVENTS=shared["source"],
        TOPIC_SEGMENT_CALLS=shared["destination"],
        AUTOPILOT_TRIGGERS=orjson.dumps(TRIGGERS).decode(),
    )
    outputs = [
        env["TOPIC_SEGMENT_TRACKS"],
        env["TOPIC_AUTOPILOT_REQUESTS"],
        env["TOPIC_DEAD_LETTERS"],
    ]
    asyncio.run(
        create_topics(bootstrap, outputs, PARTITIONS, security=client_security())
    )  # so they can be watched at once
    run = Run("worker" if processes == 1 else f"worker x{processes}", expected)
    logs, workers = [], []
    spawned = time.perf_counter()
    for i in range(processes):
        # each in a folder of its own: faust keeps its data directory where the process runs
        folder = tmp / f"worker-{processes}-{i}"
        folder.mkdir()
        logs.append(folder / "worker-throughput.log")
        own = env if i == 0 else env | {"WORKER_WEB_PORT": str(free_port())}
        workers.append(WorkerProcess(own, logs[-1]).start())
    procs = [worker.proc for worker in workers if worker.proc is not None]
    try:
        ready = _LogTail(logs[0], READY_LINE)
        asyncio.run(_watch(run, procs, spawned, bootstrap, outputs, ready=ready))
        written = asyncio.run(_internal_records(bootstrap, env["WORKER_APP_ID"], outputs))
    finally:
        for worker in workers:
            worker.stop()
    if run.error:
        kept = _keep_logs(logs)
        run.error += f"; logs kept in {kept}; log tail: " + " / ".join(_tail(log) for log in logs)
    return run, written


#: where the logs of a worker run that failed are kept (the run's own folder is temporary)
FAILED_RUN_LOGS = Path(".cache/bench-failed-runs")


def _keep_logs(logs: Sequence[Path]) -> Path:
    """Copies of a failed run's worker logs, kept for reading after the benchmark."""
    kept = FAILED_RUN_LOGS / time.strftime("%Y%m%dT%H%M%S")
    kept.mkdir(parents=True, exist_ok=True)
    for n, log in enumerate(logs):
        if log.exists():
            (kept / f"worker-{n}.log").write_bytes(log.read_bytes())
    return kept


async def _internal_records(bootstrap: str, app_id: str, outputs: Sequence[str]) -> dict[str, int]:
    """Records the worker wrote, by topic: its outputs and its internal topics and changelogs."""
    internal = [
        f"{app_id}.source-by-email",
        f"{app_id}.destination-by-user",
        f"{app_id}-source_user_by_email-changelog",
        f"{app_id}-destination_email_by_user-changelog",
        f"{app_id}-destination_audiences-changelog",
    ]
    async with OffsetWatcher(bootstrap, [*outputs, *internal], PARTITIONS) as watcher:
        return await watcher.by_topic()


async def _coalescible(bootstrap: str, topics: Sequence[str], interval_ms: int) -> dict[str, int]:
    """Per changelog topic: the records a cache writing each key's latest value once per commit
    interval would have left out, i.e. the records whose key was written again on the same
    partition within the same `interval_ms` window of CreateTime (issue 26's first lever)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client_security()
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: dict[str, set[tuple[int, bytes | None, int]]] = {t: set() for t in topics}
        repeats = dict.fromkeys(topics, 0)
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000)).items():
                for record in records:
                    window = (tp.partition, record.key, record.timestamp // interval_ms)
                    if window in seen[tp.topic]:
                        repeats[tp.topic] += 1
                    seen[tp.topic].add(window)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return repeats
    finally:
        await consumer.stop()


def _run_loop(
    kind: str,
    bootstrap: str,
    shared: dict[str, str],
    expected: int,
    tmp: Path,
    *,
    processes: int = 1,
) -> Run:
    suffix = uuid.uuid4().hex[:10]
    outputs = [f"{kind}-tracks-{suffix}", f"{kind}-requests-{suffix}", f"{kind}-dead-{suffix}"]
    asyncio.run(create_topics(bootstrap, outputs, PARTITIONS, security=client_security()))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "Quix__"))},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BENCH_GROUP": f"{kind}-{suffix}",
        "BENCH_SOURCE": shared["source"],
        "BENCH_DESTINATION": shared["destination"],
        "BENCH_TRACKS": outputs[0],
        "BENCH_REQUESTS": outputs[1],
        "BENCH_DEAD": outputs[2],
    }
    log = tmp / f"{kind}-{processes}.log"
    run = Run(kind if processes == 1 else f"{kind} x{processes}", expected)
    spawned = time.perf_counter()
    procs = []
    with log.open("ab") as out:
        for _ in range(processes):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.benchmarks.loops", kind],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        asyncio.run(_watch(run, procs, spawned, bootstrap, outputs, ready=None))
    finally:
        for proc in procs:
            _stop(proc)
    if run.error:
        run.error += "; log tail: " + _tail(log)
    return run


def expected_records(inputs: Sequence[Input]) -> int:
    return sum(1 for item in inputs if item.expect is not Expect.SKIP)


@dataclass
class Preloaded:
    """The benchmark's inputs, on two topics every contender reads from the earliest offset."""

    shared: dict[str, str]  # "source", "destination" -> topic
    inputs: int
    expected: int  # records the contenders must write
    load_s: float
    mix: dict[str, dict[str, int]]


def preload_inputs(bootstrap: str, n: int) -> Preloaded:
    """`n` raw events and `n` Segment calls preloaded onto topics of their own, the group
    coordinator warmed up."""
    source = list(source_inputs(n))
    destination = list(destination_inputs(n))
    check_tags(source[:5000], destination[:5000])
    suffix = uuid.uuid4().hex[:10]
    shared = {"source": f"bench-email-events-{suffix}", "destination": f"bench-calls-{suffix}"}
    asyncio.run(
        create_topics(bootstrap, list(shared.values()), PARTITIONS, security=client_security())
    )
    load_s = asyncio.run(preload(bootstrap, shared["source"], source, PARTITIONS))
    load_s += asyncio.run(preload(bootstrap, shared["destination"], destination, PARTITIONS))
    asyncio.run(warm_group_coordinator(bootstrap, shared["source"]))
    return Preloaded(
        shared=shared,
        inputs=len(source) + len(destination),
        expected=expected_records(source) + expected_records(destination),
        load_s=load_s,
        mix={
            "source": {e.value: sum(1 for i in source if i.expect is e) for e in Expect},
            "destination": {e.value: sum(1 for i in destination if i.expect is e) for e in Expect},
        },
    )


def measure_throughput(
    bootstrap: str, n: int | None = None, rounds: int | None = None
) -> dict[str, Any]:
    """(a) the worker, (b) aiokafka loop, (c) quixstreams, over the same preloaded inputs, each
    `rounds` times, in turn (a, b, c, a, b, c, ...), so that all three meet the machine in each
    of its moods: on 2 shared cores one run of a contender differs from the next by a tenth or
    more, and a ratio of two single runs by more than the levers measured. Each figure is the
    median of its rounds (`median_of_rounds`). The two-process rows run once, after them."""
    n = default_n() if n is None else n
    rounds = default_rounds() if rounds is None else rounds
    loaded = preload_inputs(bootstrap, n)
    shared, expected, inputs = loaded.shared, loaded.expected, loaded.inputs
    result: dict[str, Any] = {
        "n_per_pipeline": n,
        "inputs": inputs,
        "records_expected": expected,
        "preload_s": round(loaded.load_s, 1),
        "mix": loaded.mix,
        "rounds": rounds,
    }
    has_quix = importlib.util.find_spec("quixstreams") is not None
    runs: dict[str, list[dict[str, Any]]] = {"worker": [], "aiokafka": [], "quix": []}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        for round_ in range(rounds):
            folder = tmp / f"round-{round_}"
            folder.mkdir()
            worker, written = run_worker(bootstrap, shared, expected, folder)
            figures = worker.figures(inputs) | {"records_by_topic": written}
            if round_ == 0:
                changelogs = [topic for topic in written if topic.endswith("-changelog")]
                figures["changelog_records_coalescible"] = asyncio.run(
                    _coalescible(bootstrap, changelogs, int(COMMIT_INTERVAL_S * 1000))
                )
            runs["worker"].append(figures)
            runs["aiokafka"].append(
                _run_loop("aiokafka", bootstrap, shared, expected, folder).figures(inputs)
            )
            if has_quix:
                runs["quix"].append(
                    _run_loop("quix", bootstrap, shared, expected, folder).figures(inputs)
                )
        result["worker"] = median_of_rounds(runs["worker"])
        result["aiokafka"] = median_of_rounds(runs["aiokafka"])
        if has_quix:
            result["quix"] = median_of_rounds(runs["quix"])
        else:
            result["quix"] = {"complete": False, "error": "quixstreams is not installed"}
        # two processes in one consumer group each (3 partitions: one process takes two)
        pair, pair_written = run_worker(bootstrap, shared, expected, tmp, processes=2)
        result["worker_x2"] = pair.figures(inputs) | {"records_by_topic": pair_written}
        if importlib.util.find_spec("quixstreams") is not None:
            result["quix_x2"] = _run_loop(
                "quix", bootstrap, shared, expected, tmp, processes=2
            ).figures(inputs)
    for ours_name, other in (("worker", "aiokafka"), ("worker", "quix"), ("worker_x2", "quix_x2")):
        for figure, suffix in (("events_per_s", ""), ("processing_events_per_s", "_processing")):
            ours, theirs = result[ours_name].get(figure), result.get(other, {}).get(figure)
            if ours and theirs:
                result[f"ratio_{ours_name}_to_{other}{suffix}"] = round(ours / theirs, 3)
    return result


# ------------------------------------------------------------------------------------- latency


def _latency_events(count: int) -> list[tuple[str, Input]]:
    """Valid, non-test raw events and the messageId each one's track will carry."""
    chosen = []
    for item in source_inputs(count * 2, seed=31):
        if item.expect is Expect.OUTPUT:
            chosen.append(("autopilot-" + orjson.loads(item.value)["id"], item))
            if len(chosen) == count:
                break
    return chosen


async def _paced_send(
    bootstrap: str,
    topic: str,
    events: Sequence[tuple[str, Input]],
    rate: float,
    acks_ms: list[float] | None = None,
) -> dict[str, int]:
    """Append `events` at `rate` per second; return each messageId's input CreateTime (ms).

    `acks_ms`, when given, receives each append's acknowledgement time: what a round trip to
    this broker costs at that moment, for comparison with the worker's latency.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, **client_security()
    )
    await producer.start()

    def timed(started: float) -> Callable[[asyncio.Future[Any]], None]:
        def done(_: asyncio.Future[Any]) -> None:
            if acks_ms is not None:
                acks_ms.append((time.perf_counter() - started) * 1000)

        return done

    try:
        pending = []
        started = time.perf_counter()
        sent = 0
        while sent < len(events):
            due = min(len(events), int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                message_id, item = events[sent]
                at = time.perf_counter()
                future = await producer.send(topic, item.value, key=item.key)
                future.add_done_callback(timed(at))
                pending.append((message_id, future))
                sent += 1
            await asyncio.sleep(0.001)
        return {message_id: (await future).timestamp for message_id, future in pending}
    finally:
        await producer.stop()


async def _output_times(
    bootstrap: str, topic: str, wanted: set[str], wait_s: float
) -> dict[str, int]:
    """messageId -> CreateTime (ms) of the tracks on `topic`, once all of `wanted` are there."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_security(),
    )
    await consumer.start()
    found: dict[str, int] = {}
    try:
        deadline = time.monotonic() + wait_s
        while not wanted <= found.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    found[orjson.loads(record.value)["messageId"]] = record.timestamp
    finally:
        await consumer.stop()
    return found


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def measure_latency(bootstrap: str) -> dict[str, Any]:
    """p50/p99 input -> output at LATENCY_RATE events/s for LATENCY_SECONDS, source pipeline."""
    measured = int(LATENCY_RATE * LATENCY_SECONDS)
    warm = int(LATENCY_RATE * LATENCY_WARMUP_S)
    events = _latency_events(warm + measured)
    env = worker_env(bootstrap, uuid.uuid4().hex[:10])
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        worker = WorkerProcess(env, Path(tmp) / "worker-latency.log").start()
        try:
            worker.wait_for_log(READY_LINE, timeout=120)
            topic, tracks = env["TOPIC_EMAIL_EVENTS"], env["TOPIC_SEGMENT_TRACKS"]
            # warm-up: until its tracks come out, the group may still be settling
            asyncio.run(_paced_send(bootstrap, topic, events[:warm], LATENCY_RATE))
            asyncio.run(_output_times(bootstrap, tracks, {i for i, _ in events[:warm]}, 60))
            pid = worker.proc.pid if worker.proc else -1
            before = proc_status(pid)
            started = time.perf_counter()
            acks_ms: list[float] = []
            sent = asyncio.run(_paced_send(bootstrap, topic, events[warm:], LATENCY_RATE, acks_ms))
            got = asyncio.run(_output_times(bootstrap, tracks, set(sent), 60))
            busy = (proc_status(pid).get("cpu_s", 0.0) - before.get("cpu_s", 0.0)) / (
                time.perf_counter() - started
            )
            status = proc_status(pid)
        finally:
            worker.stop()
    latencies = sorted(got[m] - t for m, t in sent.items() if m in got)
    if not latencies:
        return {"error": "no output arrived", "sent": len(sent)}
    first = min(sent.values())
    windows: dict[int, list[int]] = {}
    for message_id, at in sent.items():
        if message_id in got:
            windows.setdefault((at - first) // 5000, []).append(got[message_id] - at)
    return {
        "rate_per_s": LATENCY_RATE,
        "seconds": LATENCY_SECONDS,
        "sent": len(sent),
        "received": len(latencies),
        "p50_ms": _percentile(latencies, 0.50),
        "p90_ms": _percentile(latencies, 0.90),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1],
        "mean_ms": round(statistics.fmean(latencies), 1),
        "p50_ms_by_5s_window": [statistics.median(windows[w]) for w in sorted(windows)],
        "worker_cpu_busy": round(busy, 2),
        "input_append_ack_ms": {
            "p50": round(statistics.median(acks_ms), 1),
            "p99": round(_percentile(sorted(acks_ms), 0.99), 1),
        },
        "worker_rss_mib": status.get("VmRSS"),
    }


def main() -> None:
    with bench_broker() as broker:
        result = {
            "throughput": measure_throughput(broker.bootstrap),
            "latency": measure_latency(broker.bootstrap),
        }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
