"""The console's page, rendered on the server: HTML with its style sheet, a small script and
its charts (inline SVG) inside, nothing loaded from anywhere else (no build step, no CDN).

Everything here is pure: `render` takes a `PageData` the routes gathered and returns the
page. Every value from a message or the settings goes through `_e` (HTML-escaped); texts from
a payload were masked of every secret before they got here.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from urllib.parse import urlencode

from worker.console.failures import Failure
from worker.console.replays import Replay
from worker.pipeline.letters import LetterRef, Origin
from worker.runtime.history import Key, Series

__all__ = [
    "HOUR_S",
    "WINDOWS",
    "DeliveryView",
    "PageData",
    "PipelineView",
    "render",
]

HOUR_S = 3600
DAY_S = 24 * HOUR_S
#: window name -> (seconds, chart bucket seconds)
WINDOWS = {"hour": (HOUR_S, 60), "day": (DAY_S, 900)}
CONSOLE_PATH = "/console"
REPLAY_PATH = "/console/replay"
_CHART_W, _CHART_H = 440, 56
#: what an empty cell shows
NONE = "\N{EN DASH}"


@cache
def _asset(name: str) -> str:
    return resources.files("worker.console").joinpath("assets", name).read_text()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(epoch: float | datetime | None) -> str:
    if epoch is None:
        return "?"
    moment = epoch if isinstance(epoch, datetime) else datetime.fromtimestamp(epoch, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class PipelineView:
    name: str
    #: its stages, the one its input enters first
    stages: list[str]
    #: None while it runs; else since when and why its breaker paused it
    paused: str | None
    #: input topic -> records not yet committed (this process's partitions)
    lag: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    #: this process runs the delivery feature (WORKER_FEATURES)
    runs: bool
    #: ... with an API key
    enabled: bool
    backend: str
    paused_since: float | None
    #: requests a second over the last minute (None: not measured yet)
    rate_in_use: float | None
    rate_limit: float
    waited_s_hour: float
    lag: dict[str, int]


@dataclass(frozen=True)
class PageData:
    app_id: str
    now: float
    started_at: float
    window: str
    hour: Counter[Key]
    day: Counter[Key]
    series: Series
    pipelines: list[PipelineView]
    delivery: DeliveryView
    #: the failures on this page, newest first
    failures: list[Failure]
    page: int
    pages: int
    query: str
    scope: str
    search_note: str
    ring_note: str
    replays: list[Replay]
    replay_of: dict[LetterRef, Replay]
    later: dict[Origin, Failure]
    csrf: str
    nonce: str
    mask: Callable[[str], str] = field(default=lambda text: text)

    @property
    def pending(self) -> bool:
        return any(not r.state.final for r in self.replays)


def _link(data: PageData, **changes: object) -> str:
    params = {"window": data.window, "q": data.query, "scope": data.scope, "page": data.page}
    params.update(changes)
    kept = {k: v for k, v in params.items() if v not in ("", None, 1, "recent", "hour")}
    return CONSOLE_PATH + ("?" + urlencode(kept) if kept else "")


# -- counts --------------------------------------------------------------------------------------


_ORDER = {"in": 0, "out": 1, "skipped": 2, "dead_lettered": 3}


def _count_rows(data: PageData, pipeline: PipelineView) -> Iterable[str]:
    keys = sorted(
        {k for k in data.day if k[0] == "stage" and k[1] == pipeline.name}
        | {("stage", pipeline.name, s, what) for s in pipeline.stages for what in ("in", "out")},
        key=lambda k: (
            pipeline.stages.index(k[2]) if k[2] in pipeline.stages else 99,
            _ORDER.get(k[3], 9),
            k[4:],
        ),
    )
    for key in keys:
        _, name, stage, what, *rest = key
        if what == "in":
            label, css = "in", ""
        elif what == "out":
            label, css = ("delivered" if name == "delivery" else "written"), ""
        elif what == "skipped":
            label, css = f"skipped: {rest[0]}", "skip"
        else:
            label, css = f"dead-lettered: {rest[0]} {rest[1]}", "dead"
        yield (
            f'<tr class="{css}" data-count="{_e(":".join(key[1:]))}"><td>{_e(label)}</td>'
            f'<td class="muted">{_e(stage)}</td>'
            f'<td class="num">{data.hour[key]}</td><td class="num">{data.day[key]}</td></tr>'
        )


def _chart(series: Series, parts: list[tuple[str, Callable[[Counter[Key]], int]]]) -> str:
    """Bars per bucket: each part's count drawn from the bottom, the later parts over the
    earlier (so a part that is a share of an earlier one shows as that share)."""
    buckets = series.buckets
    peak = max((fn(b) for b in buckets for _, fn in parts), default=0) or 1
    width = _CHART_W / len(buckets)
    bars: list[str] = []
    for index, bucket in enumerate(buckets):
        x = index * width
        tip = ", ".join(f"{fn(bucket)} {css_label}" for css_label, fn in parts)
        start = _time(series.starts_at + index * series.bucket_s)[11:16]
        bars.append(f"<g><title>{_e(start)}: {_e(tip)}</title>")
        for css_label, fn in parts:
            count = fn(bucket)
            if not count:
                continue
            height = max(1.0, count / peak * (_CHART_H - 2))
            css = css_label.split(" ")[0]
            bars.append(
                f'<rect class="{_e(css)}" x="{x:.1f}" y="{_CHART_H - height:.1f}" '
                f'width="{max(width - 1, 1):.1f}" height="{height:.1f}"/>'
            )
        bars.append("</g>")
    return (
        f'<svg class="chart" role="img" viewBox="0 0 {_CHART_W} {_CHART_H}" '
        'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="0" y="{_CHART_H - 1}" width="{_CHART_W}" height="1" fill="#dde2e8"/>'
        + "".join(bars)
        + "</svg>"
    )


def _span(data: PageData) -> str:
    bucket_s = WINDOWS[data.window][1]
    unit = "minute" if bucket_s == 60 else f"{bucket_s // 60} minutes"
    return f"last {data.window}, a bar per {unit}"


def _lag(lag: dict[str, int]) -> str:
    if not lag:
        return '<span class="muted">no input partition assigned to this process</span>'
    return ", ".join(f'{_e(topic)} <b class="num">{count}</b>' for topic, count in lag.items())


def _pipeline_card(data: PageData, pipeline: PipelineView) -> str:
    name = pipeline.name
    if pipeline.paused:
        state = (
            f'<span class="badge bad">paused</span> <span class="muted">{_e(pipeline.paused)}'
            "</span>"
        )
    else:
        state = '<span class="badge ok">running</span>'
    entry = pipeline.stages[0] if pipeline.stages else ""

    def entered(bucket: Counter[Key]) -> int:
        return bucket["stage", name, entry, "in"]

    def dead(bucket: Counter[Key]) -> int:
        return sum(
            v for k, v in bucket.items() if k[:2] == ("stage", name) and k[3] == "dead_lettered"
        )

    chart = _chart(data.series, [(f"in {entry}", entered), ("bad dead-lettered", dead)])
    return (
        f'<div class="card" id="pipeline-{_e(name)}" data-pipeline="{_e(name)}">'
        f'<div class="card-head"><h2>{_e(name)}</h2>{state}</div>'
        f'<dl class="facts"><dt>lag</dt><dd>{_lag(pipeline.lag)}</dd></dl>'
        f"{chart}"
        f'<div class="legend">{_e(_span(data))}<span class="sw in"></span>in ({_e(entry)})'
        '<span class="sw bad"></span>dead-lettered</div>'
        '<table class="counts"><thead><tr><th>messages</th><th>stage</th>'
        '<th class="num">last hour</th><th class="num">last day</th></tr></thead><tbody>'
        + "".join(_count_rows(data, pipeline))
        + "</tbody></table></div>"
    )


def _delivery_card(data: PageData) -> str:
    view = data.delivery
    title = f"{view.backend or 'destination'} (destination)"
    if not view.runs:
        state = '<span class="badge off">not run by this process</span>'
    elif not view.enabled:
        state = '<span class="badge off">not enabled: no API key</span>'
    elif view.paused_since is not None:
        state = (
            '<span class="badge bad">paused</span> <span class="muted">the API refuses the key '
            f"since {_e(_time(view.paused_since))}; nothing is dead-lettered meanwhile</span>"
        )
    else:
        state = '<span class="badge ok">running</span>'
    keys = sorted({k for k in data.day if k[0] == "delivery"})
    rows = (
        "".join(
            f'<tr class="{"dead" if k[1] != "delivered" else ""}" data-count="{_e(":".join(k))}">'
            f"<td>{_e(k[1].replace('_', '-'))}</td><td>{_e(k[2])}</td>"
            f'<td class="num">{data.hour[k]}</td><td class="num">{data.day[k]}</td></tr>'
            for k in keys
        )
        or '<tr><td colspan="4" class="muted">no outcome yet</td></tr>'
    )
    rate = (
        f"{view.rate_in_use:.2f} requests/s over the last minute"
        if view.rate_in_use is not None
        else "not measured yet"
    )

    def delivered(bucket: Counter[Key]) -> int:
        return sum(v for k, v in bucket.items() if k[:2] == ("delivery", "delivered"))

    def failed(bucket: Counter[Key]) -> int:
        return sum(v for k, v in bucket.items() if k[0] == "delivery" and k[1] != "delivered")

    chart = _chart(data.series, [("good delivered", delivered), ("bad dead-lettered", failed)])
    return (
        f'<div class="card" id="destination" data-backend="{_e(view.backend)}">'
        f'<div class="card-head"><h2>{_e(title)}</h2>{state}</div>'
        '<dl class="facts">'
        f"<dt>rate</dt><dd>{_e(rate)} of {view.rate_limit:g}/s allowed "
        f"(AUTOPILOT_RATE_LIMIT); {view.waited_s_hour:.1f} s waited for a slot in the last "
        "hour</dd>"
        f"<dt>lag</dt><dd>{_lag(view.lag)}</dd></dl>"
        f"{chart}"
        f'<div class="legend">{_e(_span(data))}<span class="sw good"></span>delivered'
        '<span class="sw bad"></span>dead-lettered</div>'
        '<table class="counts"><thead><tr><th>outcome</th><th>status</th>'
        '<th class="num">last hour</th><th class="num">last day</th></tr></thead><tbody>'
        f"{rows}</tbody></table></div>"
    )


# -- failures ------------------------------------------------------------------------------------


def _outcome(data: PageData, failure: Failure) -> str:
    parts: list[str] = []
    replay = data.replay_of.get(failure.ref)
    if replay is not None:
        css = "state-" + replay.state.value.replace(" ", "-")
        again = f" as {_e(replay.again)}" if replay.again is not None else ""
        parts.append(
            f'<span class="{css}" data-state="{_e(replay.state.value)}">replay {replay.number}: '
            f"{_e(replay.state.value)}{again}</span>"
        )
        if replay.detail:
            parts.append(f'<div class="muted">{_e(data.mask(replay.detail))}</div>')
    else:
        later = data.later.get(failure.origin) if failure.origin is not None else None
        if later is not None and later.replay_count > failure.replay_count:
            parts.append(
                f'<span class="state-failed-again">failed again as {_e(later.ref)} '
                f"(replay {later.replay_count})</span>"
            )
    if failure.replay_count:
        parts.append(f'<div class="muted">this is replay {failure.replay_count}</div>')
    return "".join(parts)


def _payload(failure: Failure) -> str:
    cut = " (cut: `python -m worker dlq show` prints it all)" if failure.truncated else ""
    body = (
        f'<div class="muted">response body</div><pre>{_e(failure.response_body)}</pre>'
        if failure.response_body
        else ""
    )
    return (
        f"<details><summary>{failure.payload_bytes} bytes, {_e(failure.payload_encoding)}"
        f"{_e(cut)}</summary><pre>{_e(failure.payload)}</pre>{body}</details>"
    )


def _failure_row(data: PageData, failure: Failure) -> str:
    ref = str(failure.ref)
    return (
        f'<tr data-ref="{_e(ref)}" data-message-id="{_e(failure.message_id or "")}">'
        f'<td><input type="checkbox" name="ref" value="{_e(ref)}" '
        f'aria-label="select {_e(ref)}"></td>'
        f'<td class="mono">{_e(_time(failure.failed_at))}</td>'
        f'<td class="mono id">{_e(failure.message_id or NONE)}</td>'
        f'<td class="id">{_e(failure.contact or NONE)}</td>'
        f"<td>{_e(failure.pipeline)}/{_e(failure.stage)}</td>"
        f'<td class="error-class">{_e(failure.error_class)}</td>'
        f'<td class="msg">{_e(failure.message)}</td>'
        f'<td class="num">{_e(failure.status)}</td>'
        f'<td class="num">{_e(failure.attempts if failure.attempts is not None else 1)}</td>'
        f'<td class="outcome">{_outcome(data, failure)}</td>'
        f"<td>{_payload(failure)}"
        f'<div class="muted mono">letter {_e(ref)}</div></td></tr>'
    )


def _clear_link(data: PageData) -> str:
    return f'<a href="{_e(_link(data, q="", scope="recent", page=1))}">clear</a>'


def _failures(data: PageData) -> str:
    rows = "".join(_failure_row(data, f) for f in data.failures) or (
        '<tr><td colspan="11" class="muted">no failure'
        + (" matches" if data.query else "")
        + "</td></tr>"
    )
    pager = ""
    if data.pages > 1:
        newer = (
            f'<a href="{_e(_link(data, page=data.page - 1))}">newer</a>' if data.page > 1 else ""
        )
        older = (
            f'<a href="{_e(_link(data, page=data.page + 1))}">older</a>'
            if data.page < data.pages
            else ""
        )
        pager = f'<div class="pager">{newer} page {data.page} of {data.pages} {older}</div>'
    checked = " checked" if data.scope == "topic" else ""
    return (
        '<section id="failures-section"><h2>Recent failures</h2>'
        f'<p class="muted">{_e(data.ring_note)}</p>'
        f'<form class="search" method="get" action="{CONSOLE_PATH}" role="search">'
        f'<input type="hidden" name="window" value="{_e(data.window)}">'
        f'<input type="search" name="q" value="{_e(data.query)}" '
        'placeholder="messageId or contact" aria-label="messageId or contact">'
        f'<label><input type="checkbox" name="scope" value="topic"{checked}> the whole '
        "dead-letter topic (read on demand)</label>"
        '<button type="submit">Search</button>'
        + (
            f'<a href="{_e(_link(data, q="", scope="recent", page=1))}">clear</a>'
            if data.query
            else ""
        )
        + "</form>"
        + (f'<p id="search-note">{_e(data.search_note)}</p>' if data.search_note else "")
        + f'<form id="failures" method="post" action="{REPLAY_PATH}" autocomplete="off">'
        '<div class="toolbar"><button id="replay" type="submit" disabled>Replay selected'
        '</button><span id="replay-status" role="status"></span></div>'
        '<table class="failures"><thead><tr><th></th><th>failed at</th><th>messageId</th>'
        "<th>contact</th><th>stage</th><th>error class</th><th>message</th>"
        '<th class="num">status</th><th class="num">attempts</th><th>outcome</th>'
        "<th>payload</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></form>{pager}</section>"
    )


def _replays(data: PageData) -> str:
    if not data.replays:
        return ""
    rows = "".join(
        f'<tr data-replay="{_e(r.ref)}"><td class="mono">{_e(_time(r.at))}</td>'
        f'<td class="mono">{_e(r.ref)}</td><td>{_e(r.target)}</td><td class="num">{r.number}</td>'
        f'<td class="mono id">{_e(data.mask(r.message_id or NONE))}</td>'
        f'<td><span class="state-{_e(r.state.value.replace(" ", "-"))}">{_e(r.state.value)}'
        "</span>"
        + (f" as {_e(r.again)}" if r.again is not None else "")
        + (f'<div class="muted">{_e(data.mask(r.detail))}</div>' if r.detail else "")
        + "</td></tr>"
        for r in data.replays[:50]
    )
    return (
        '<section id="replays"><h2>Replays from this console</h2>'
        "<table><thead><tr><th>replayed at</th><th>letter</th><th>through</th>"
        '<th class="num">replay</th><th>messageId</th><th>outcome</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def render(data: PageData) -> str:
    """The whole page."""
    since = ""
    if data.now - data.started_at < DAY_S:
        since = f" · counts since this process started, {_time(data.started_at)} (kept in memory)"
    windows = " ".join(
        f'<a href="{_e(_link(data, window=name, page=1))}"'
        + (' class="current"' if name == data.window else "")
        + f">last {name}</a>"
        for name in WINDOWS
    )
    cards = "".join(_pipeline_card(data, p) for p in data.pipelines) + _delivery_card(data)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="console-csrf" content="{_e(data.csrf)}">'
        '<link rel="icon" href="data:,">'
        f"<title>Event delivery · {_e(data.app_id)}</title>"
        f'<style nonce="{_e(data.nonce)}">{_asset("console.css")}</style></head>'
        f'<body data-pending="{"yes" if data.pending else "no"}">'
        f'<header><h1>Event delivery</h1><span class="meta">{_e(data.app_id)} · '
        f"{_e(_time(data.now))}{_e(since)}</span></header><main>"
        f'<nav class="windows">Charts: {windows} · <a href="{_e(_link(data))}">refresh</a>'
        "</nav>"
        f'<section class="cards">{cards}</section>'
        f"{_failures(data)}{_replays(data)}</main>"
        f'<script nonce="{_e(data.nonce)}">{_asset("console.js")}</script>'
        "</body></html>\n"
    )
