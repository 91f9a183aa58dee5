"""Dead-letter replay through a real broker and the real worker.

Malformed input becomes dead letters; `dlq list` and `dlq show` read them; `dlq replay --dry-run`
writes nothing; `dlq replay` puts them on the worker-private retry topic, the worker runs them
through source intake again and, still bad, they come back with replay count 1 (then 2, then
the CLI refuses them). A dead letter made by hand whose value is valid reaches the Segment
tracks topic through the retry topic.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from tests.kafkautil import Headers, consume_all, end_offsets, produce
from tests.workerproc import WorkerProcess
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.pipeline.letters import DeadLetter, LetterRef
from worker.pipeline.records import ORIGIN_PREFIX, header
from worker.pipeline.replay import REPLAY_TARGET
from worker.runtime import dead_letter_topic
from worker.settings import Settings
from worker.tools import dlq as dlqcli
from worker.tools.dlq import run_dlq


def _settings(env: dict[str, str]) -> Settings:
    return Settings.model_validate({key.lower(): value for key, value in env.items()})


async def _dlq(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await run_dlq(argv, _settings(env), out, err)
    return status, out.getvalue(), err.getvalue()


def _event(event_id: str, email: str) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "email_opened",
            "occurred_at": "2026-11-20T10:15:00+02:00",
            "contact": {"contact_id": f"person_{event_id}", "email": email},
            "journey": {"id": "campaign_1", "name": "Onboarding"},
            "email": {"id": "email_1", "subject": "Welcome"},
        }
    )


def _ref(record: ConsumerRecord) -> str:
    return f"{record.partition}@{record.offset}"


def _replays(record: ConsumerRecord) -> int:
    raw = header(list(record.headers), H.REPLAY_COUNT)
    return int(raw) if raw is not None else 0


async def test_still_bad_letters_come_back_counted_until_refused(worker: WorkerProcess) -> None:
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    inputs = env["TOPIC_EMAIL_EVENTS"]
    letters_topic = env["TOPIC_DEAD_LETTERS"]
    retry = f"{env['WORKER_APP_ID']}.retry"
    malformed = [b"{not json, replay test", b"[1, 2, 3]"]
    await produce(bootstrap, inputs, [(b"k", v, [("trace-id", b"t-1")]) for v in malformed])
    firsts = await consume_all(bootstrap, letters_topic, 2, timeout=60)
    assert sorted(r.value for r in firsts) == sorted(malformed)

    # list: one line each; --json; filters that exclude
    status, out, err = await _dlq(env, "list", "--topic", inputs)
    assert status == 0, err
    header, *lines = out.splitlines()
    assert header.startswith("FAILED AT (UTC)")
    assert len(lines) == 2
    for line in lines:
        assert "source/intake" in line
        assert f"{inputs}[" in line  # the input, as the logs name it
    assert "2 of 2 dead letters" in err
    status, out, _ = await _dlq(env, "list", "--json", "--pipeline", "source/intake")
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(
        (r.partition, r.offset) for r in firsts
    )
    assert {r["topic"] for r in rows} == {inputs}
    assert {r["error_class"] for r in rows} <= {"DecodeError", "ValidationError"}
    for excluding in (
        ["--topic", "some-other-topic"],
        ["--error-class", "UnexpectedError"],
        ["--message-id", "no-such-message"],
        ["--contact", "nobody@example.com"],
        ["--since", datetime.now(UTC).replace(year=2100).isoformat()],
        ["--until", "2000-01-01T00:00:00Z"],
    ):
        status, out, _ = await _dlq(env, "list", *excluding)
        assert (status, out) == (0, ""), excluding
    # --since reads only what was written from a minute before it: here, nothing, then all
    status, out, err = await _dlq(env, "list", "--since", "2100-01-01T00:00:00Z")
    assert (status, out) == (0, "")
    assert "0 of 0 dead letters written since 2099-12-31T23:59:00+00:00" in err
    status, out, err = await _dlq(env, "list", "--topic", inputs, "--since", "2000-01-01")
    assert (status, len(out.splitlines())) == (0, 3)  # the header and two rows
    assert "2 of 2 dead letters written since" in err

    # show: every header and the value
    status, out, err = await _dlq(env, "show", _ref(firsts[0]).replace("@", ":"))
    assert status == 0, err
    assert f"{H.TOPIC}: {inputs}" in out
    assert "trace-id: t-1" in out
    assert firsts[0].value.decode() in out
    assert "input " + f"{inputs}[" in out
    status, _, err = await _dlq(env, "show", "0@999999")
    assert status == 1
    assert "no dead letter at 0@999999" in err

    # a dry run writes nothing
    status, out, err = await _dlq(env, "replay", "--dry-run", "--topic", inputs)
    assert status == 0, err
    assert out.count("would replay") == 2
    assert "dry run: 2 to replay onto" in out
    await asyncio.sleep(1)
    assert sum((await end_offsets(bootstrap, retry)).values()) == 0

    # a real replay: both come back, counted, still naming the input message
    status, out, err = await _dlq(env, "replay", "--topic", inputs)
    assert status == 0, err
    assert f"replayed 2 onto {retry}" in out
    assert "replaying [" in err  # the progress bar
    assert sum((await end_offsets(bootstrap, retry)).values()) == 2
    letters = await consume_all(bootstrap, letters_topic, 4, timeout=60)
    seconds = [r for r in letters if _replays(r) == 1]
    assert sorted(r.value for r in seconds) == sorted(malformed)
    first_by_value = {r.value: dict(r.headers) for r in firsts}
    for record in seconds:
        got = dict(record.headers)
        first = first_by_value[record.value]
        assert record.key == b"k"
        assert got["trace-id"] == b"t-1"
        assert (got[H.PIPELINE], got[H.STAGE]) == (b"source", b"intake")
        assert got[H.TOPIC] == inputs.encode()
        assert (got[H.PARTITION], got[H.OFFSET]) == (first[H.PARTITION], first[H.OFFSET])
        assert got[H.FIRST_FAILURE] == first[H.FIRST_FAILURE]
        assert REPLAY_TARGET not in got
    assert worker.running

    # replayed again by filter: only the latest letter of each message goes (count 2)
    status, out, err = await _dlq(env, "replay", "--pipeline", "source")
    assert status == 0, err
    assert "replayed 2" in out
    assert "2 superseded" in out
    letters = await consume_all(bootstrap, letters_topic, 6, timeout=60)
    assert sorted(_replays(r) for r in letters) == [0, 0, 1, 1, 2, 2]

    # the loop stopper: at --max-replays nothing more goes
    status, out, err = await _dlq(env, "replay", "--max-replays", "2")
    assert status == 0, err
    assert out.startswith(f"replayed 0 onto {retry}; skipped 2 at --max-replays 2, 4 superseded")
    assert err.count("replayed 2 times already") == 2
    assert sum((await end_offsets(bootstrap, retry)).values()) == 4


async def test_a_valid_letter_reaches_the_output_through_the_retry_topic(
    worker: WorkerProcess,
) -> None:
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    letters_topic = env["TOPIC_DEAD_LETTERS"]
    handmade = [
        ("trace-id", b"t-2"),
        *_letter_of(
            env["TOPIC_EMAIL_EVENTS"],
            123456,
            replays=0,
            failed=(b"UnexpectedError", b"a bug since fixed", b"500"),
        ),
    ]
    value = _event("evt_replayed", "Replayed@Example.com")
    (meta,) = await produce(bootstrap, letters_topic, [(b"k2", value, handmade)])

    status, out, err = await _dlq(env, "replay", f"{meta.partition}@{meta.offset}")
    assert status == 0, err
    assert "replayed 1" in out

    tracks = await consume_all(bootstrap, env["TOPIC_SEGMENT_TRACKS"], 1, timeout=60)
    (track,) = [r for r in tracks if orjson.loads(r.value)["messageId"] == "autopilot-evt_replayed"]
    assert track.key == b"replayed@example.com"
    got = dict(track.headers)
    assert got["trace-id"] == b"t-2"
    assert got[H.REPLAY_COUNT] == b"1"
    assert REPLAY_TARGET not in got
    assert worker.running


async def test_a_letter_of_a_stage_that_cannot_replay_comes_back_as_the_retry_stage(
    worker: WorkerProcess,
) -> None:
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    letters_topic = env["TOPIC_DEAD_LETTERS"]
    handmade = [
        (H.TOPIC, b"somewhere"),
        (H.PARTITION, b"0"),
        (H.OFFSET, b"7"),
        (H.TIMESTAMP, b"1700000000000"),
        (H.PIPELINE, b"nowhere"),
        (H.STAGE, b"deliver"),
        (H.CLASS_NAME, b"DeliveryRejected"),
    ]
    (meta,) = await produce(bootstrap, letters_topic, [(b"k3", b"{}", handmade)])
    status, out, err = await _dlq(env, "replay", f"{meta.partition}:{meta.offset}")
    assert status == 0, err
    assert "replayed 1" in out

    for _ in range(60):
        letters = await consume_all(bootstrap, letters_topic, 10**6, timeout=1)
        back = [r for r in letters if r.key == b"k3" and r.offset != meta.offset]
        if back:
            break
    (record,) = back
    got = dict(record.headers)
    assert (got[H.PIPELINE], got[H.STAGE]) == (b"replay", b"retry")
    assert got[REPLAY_TARGET] == b"nowhere/deliver"
    assert got[H.REPLAY_COUNT] == b"1"
    assert got[H.TOPIC] == b"somewhere"
    assert b"no stage nowhere/deliver" in got[H.MESSAGE]


def _letter_of(
    input_topic: str,
    input_offset: int,
    replays: int,
    failed: tuple[bytes, bytes, bytes] = (b"DecodeError", b"not JSON", b"400"),
) -> Headers:
    """The headers of a source/intake dead letter of `input_topic`'s message at `input_offset`,
    `failed` as (error class, message, status)."""
    error_class, message, status = failed
    failed_at = datetime.now(UTC).isoformat(timespec="milliseconds").encode()
    headers = [
        (H.TOPIC, input_topic.encode()),
        (H.PARTITION, b"0"),
        (H.OFFSET, str(input_offset).encode()),
        (H.TIMESTAMP, b"1700000000000"),
        (H.PIPELINE, b"source"),
        (H.STAGE, b"intake"),
        (H.CLASS_NAME, error_class),
        (H.MESSAGE, message),
        (H.STATUS, status),
        (H.FIRST_FAILURE, failed_at),
        (H.FAILED_AT, failed_at),
    ]
    return headers + ([(H.REPLAY_COUNT, str(replays).encode())] if replays else [])


async def test_list_is_in_failure_order_naming_inputs_ids_and_contacts_and_show_cuts(
    worker: WorkerProcess,
) -> None:
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    letters_topic = env["TOPIC_DEAD_LETTERS"]
    inputs = f"orders-{uuid.uuid4().hex[:8]}"  # an input topic of this test alone

    def letter(offset: int, failed_at: str) -> Headers:
        headers = _letter_of(inputs, offset, replays=0)
        return [*(h for h in headers if h[0] != H.FAILED_AT), (H.FAILED_AT, failed_at.encode())]

    call = orjson.dumps({"type": "track", "messageId": "m-late", "userId": "u-9",
                         "context": {"traits": {"email": "Late@Example.com"}}})  # fmt: skip
    big = orjson.dumps({"id": "evt_big", "contact": {"email": "big@example.com"},
                        "padding": "x" * 200_000})  # fmt: skip
    # written in one order onto several partitions, failed in another
    await produce(
        bootstrap, letters_topic, [(b"u-9", call, letter(3, "2026-11-20T10:00:03+00:00"))]
    )
    await produce(
        bootstrap, letters_topic, [(b"k1", b"{not json", letter(1, "2026-11-20T10:00:01+00:00"))]
    )
    (big_meta,) = await produce(
        bootstrap,
        letters_topic,
        [(b"big@example.com", big, letter(2, "2026-11-20T10:00:02+00:00"))],
    )

    status, out, err = await _dlq(env, "list", "--topic", inputs)
    assert status == 0, err
    header, *lines = out.splitlines()
    assert [line.split("  ")[1].strip() for line in lines] == [
        f"{inputs}[0]@1",
        f"{inputs}[0]@2",
        f"{inputs}[0]@3",
    ]
    assert "evt_big" in lines[1]
    assert "big@example.com" in lines[1]
    assert "m-late" in lines[2]
    assert "Late@Example.com" in lines[2]
    assert header.index("MESSAGE ID") == lines[2].index("m-late")

    status, out, _ = await _dlq(env, "list", "--topic", inputs, "--message-id", "m-late")
    assert (status, len(out.splitlines())) == (0, 2)
    status, out, _ = await _dlq(env, "list", "--topic", inputs, "--contact", "late@example.com")
    assert (status, len(out.splitlines())) == (0, 2)
    status, out, _ = await _dlq(env, "list", "--topic", inputs, "--contact", "u-9", "--json")
    (row,) = [orjson.loads(line) for line in out.splitlines()]
    assert (row["input"], row["message_id"], row["contact"]) == (
        f"{inputs}[0]@3",
        "m-late",
        "Late@Example.com",
    )

    ref = f"{big_meta.partition}@{big_meta.offset}"
    status, out, err = await _dlq(env, "show", ref)
    assert status == 0, err
    assert len(out) < 10_000
    assert f"value (utf-8, {len(big)} bytes):" in out
    assert "more characters not shown; --full shows them" in out
    assert f"input {inputs}[0]@2, message id evt_big, contact big@example.com" in out
    status, out, _ = await _dlq(env, "show", ref, "--full")
    assert status == 0
    assert big.decode() in out


async def test_replay_reads_twice_to_the_same_end_and_streams_what_it_replays(
    worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replays go one at a time (REPLAY_CHUNK 1): the first one is back on the dead-letter topic
    before the second read ends, and letters written between the reads are not read either."""
    env = worker.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    letters_topic = env["TOPIC_DEAD_LETTERS"]
    retry = f"{env['WORKER_APP_ID']}.retry"
    inputs = "streamed-replay-input"
    bad = b"{not json, streamed"
    await produce(
        bootstrap,
        letters_topic,
        [
            (b"stream-a", bad, _letter_of(inputs, 1, 0)),
            (b"stream-b", bad, _letter_of(inputs, 2, 0)),  # superseded by the next
            (b"stream-b", bad, _letter_of(inputs, 2, 1)),
            (b"stream-c", bad, _letter_of(inputs, 3, 0)),
        ],
    )
    retry_before = sum((await end_offsets(bootstrap, retry)).values())

    async def dead_lettered_again(key: bytes) -> bool:
        for _ in range(60):
            letters = await consume_all(bootstrap, letters_topic, 10**6, timeout=1)
            if any(r.key == key and _replays(r) == 1 for r in letters):
                return True
        return False

    real_read_all = dead_letter_topic.read_all  # what the command reads with
    reads: list[list[LetterRef]] = []
    back_during_second_read: list[bool] = []

    async def read_all(settings: Settings, **kwargs: Any) -> AsyncIterator[DeadLetter]:
        refs: list[LetterRef] = []
        reads.append(refs)
        async for letter in real_read_all(settings, **kwargs):
            refs.append(letter.ref)
            yield letter
            if len(reads) == 2 and letter.key == b"stream-a":
                # resumed once "stream-a" was replayed: wait for the worker to fail it again
                back_during_second_read.append(await dead_lettered_again(b"stream-a"))
        if len(reads) == 1:
            between = [
                (b"stream-a-later", bad, _letter_of(inputs, 1, 1)),
                (b"stream-e", bad, _letter_of(inputs, 4, 0)),
            ]
            await produce(bootstrap, letters_topic, between)

    monkeypatch.setattr(dlqcli, "read_all", read_all)
    monkeypatch.setattr(dlqcli, "REPLAY_CHUNK", 1)
    status, out, err = await _dlq(env, "replay", "--topic", inputs)
    assert status == 0, err
    assert back_during_second_read == [True]
    assert len(reads) == 2
    assert sorted(reads[0]) == sorted(reads[1])
    lines = out.splitlines()
    assert sorted(line.split(" (")[1] for line in lines[:-1]) == [
        "replay 1, DecodeError, 19 bytes)",
        "replay 1, DecodeError, 19 bytes)",
        "replay 2, DecodeError, 19 bytes)",
    ]
    assert lines[-1] == (
        f"replayed 3 onto {retry}; skipped 0 at --max-replays 3, "
        "1 superseded by a later replay, 0 without a stage to replay through"
    )
    assert "replaying [" in err

    retry_end = sum((await end_offsets(bootstrap, retry)).values())
    assert retry_end - retry_before == 3
    replayed = await consume_all(bootstrap, retry, retry_end, timeout=30)
    ours = [
        r for r in replayed if header(list(r.headers), ORIGIN_PREFIX + "topic") == inputs.encode()
    ]
    assert sorted((r.key, _replays(r)) for r in ours) == [
        (b"stream-a", 1),
        (b"stream-b", 2),
        (b"stream-c", 1),
    ]


async def test_the_command_line_entry_point(worker: WorkerProcess) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOPIC_", "AUTOPILOT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "dlq",
        "list",
        "--json",
        env={**clean, **worker.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert rows
    assert all({"partition", "offset", "pipeline", "replay_count"} <= set(row) for row in rows)
