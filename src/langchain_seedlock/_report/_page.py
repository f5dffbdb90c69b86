"""The ``seedlock report --html`` page, built from any store.

Everything is read through aggregate store queries (one row per model and
backend, per time bucket, per drifting request, per event name), plus a
bounded number of recent events: the page's size does not grow with the
number of stored calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_seedlock import _events as ev
from langchain_seedlock._decide import wilson
from langchain_seedlock._errors import StoreError
from langchain_seedlock._report import _html as h
from langchain_seedlock._store._base import (
    BackendSummary,
    BaselineStore,
    DriftingRequest,
    InFlightSummary,
    RateBucket,
    StoredEvent,
)

# Bucket widths the automatic choice picks from (seconds).
WIDTHS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 48


@dataclass(frozen=True, slots=True)
class Options:
    model: str | None = None
    """A ``provider:model`` key or a bare model name (every provider)."""
    bucket: float | None = None
    """Seconds per time bucket; None: the smallest of `WIDTHS` giving at most `MAX_BUCKETS`."""
    top: int = 25
    events: int = 500


def auto_width(span: float) -> float:
    return float(next((w for w in WIDTHS if span / w <= MAX_BUCKETS), WIDTHS[-1]))


def _matches(model_key: str, wanted: str | None) -> bool:
    return wanted is None or model_key == wanted or model_key.split(":", 1)[-1] == wanted


def _event_model(fields: Any) -> str:
    key = fields.get(ev.K_MODEL_KEY)
    if isinstance(key, str):
        return key
    return f"{fields.get(ev.K_PROVIDER)}:{fields.get(ev.K_REQUEST_MODEL) or '?'}"


@dataclass(frozen=True, slots=True)
class Report:
    """What the page shows, read from the store."""

    store_url: str
    generated_at: float
    options: Options
    width: float
    backends: list[BackendSummary]
    rates: list[RateBucket]
    drifting: list[DriftingRequest]
    inflight: list[InFlightSummary]
    event_counts: list[tuple[str, int, float, float]]
    events: list[StoredEvent]

    @property
    def models(self) -> list[str]:
        return sorted({b.model_key for b in self.backends})


def collect(store: BaselineStore, options: Options, *, now: float | None = None) -> Report:
    """Read the report from the store (aggregate queries only)."""
    backends = [b for b in store.backends() if _matches(b.model_key, options.model)]
    # The queries take one full key: a bare model name may match several.
    keys: list[str | None] = [None]
    if options.model is not None:
        keys = [*sorted({b.model_key for b in backends})]
    if backends:
        span = max(b.last_seen for b in backends) - min(b.first_seen for b in backends)
    else:
        span = 0.0
    width = options.bucket or auto_width(span)
    rates: list[RateBucket] = []
    drifting: list[DriftingRequest] = []
    inflight: list[InFlightSummary] = []
    for key in keys:
        rates += store.rate_buckets(width, model_key=key)
        drifting += store.drifting_requests(model_key=key, limit=options.top)
        inflight += store.in_flight(model_key=key)
    drifting.sort(key=lambda r: (-r.distinct_outputs, -r.calls, r.request_hash))
    events = [
        e for e in store.recent_events(limit=options.events)
        if options.model is None or _matches(_event_model(e.fields), options.model)
    ]  # fmt: skip
    return Report(
        store_url=store.url,
        generated_at=time.time() if now is None else now,
        options=options,
        width=width,
        backends=backends,
        rates=rates,
        drifting=drifting[: options.top],
        inflight=inflight,
        event_counts=[(c.name, c.count, c.first_at, c.last_at) for c in store.event_counts()],
        events=events,
    )


# -- rendering -----------------------------------------------------------------
def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _rate_cell(known: int, repeats: int) -> str:
    if not repeats:
        return "- (no repeat call)"
    lo, hi = wilson(known, repeats)
    return f"{h.percent(known / repeats)} [{h.percent(lo, 0)}-{h.percent(hi, 0)}]"


def _short(backend_id: str) -> str:
    return backend_id[:12]


def _backend_name(b: BackendSummary) -> str:
    return f"fingerprint {b.system_fingerprint or '(none)'} · backend {_short(b.backend_id)}"


def verdict(report: Report) -> tuple[str, str, str]:
    """(css class, headline, detail) for the top of the page."""
    repeated = [b for b in report.backends if b.repeat_calls]
    changes = len(report.backends) - len(report.models)
    change_note = (
        f" The backend identity changed {changes} time(s) (see the timelines)." if changes else ""
    )
    if not repeated:
        what = "holds no calls" if not report.backends else "has no request called twice"
        return (
            "v-unknown",
            "Not enough data",
            f"The store {what} under the same backend: nothing to compare yet.{change_note}",
        )
    bad = [b for b in repeated if b.known_repeats < b.repeat_calls]
    total = sum(b.repeat_calls for b in repeated)
    if not bad:
        return (
            "v-good",
            "Reproducible",
            f"Every repeat call ({total} over {len(repeated)} model/backend pair(s)) gave an "
            f"output already seen for its request under the same backend.{change_note}",
        )
    worst = min(bad, key=lambda b: b.known_repeats / b.repeat_calls)
    new = sum(b.repeat_calls - b.known_repeats for b in bad)
    return (
        "v-bad",
        "Not reproducible",
        f"{len(bad)} of {len(repeated)} model/backend pair(s) gave new outputs to repeated "
        f"locked requests ({new} of {total} repeat calls) without a change of backend "
        f"identity. Lowest: {worst.model_key} on {_backend_name(worst)}: "
        f"{_rate_cell(worst.known_repeats, worst.repeat_calls)}.{change_note}",
    )


def _header(report: Report) -> str:
    from langchain_seedlock import __version__

    css, headline, detail = verdict(report)
    o = report.options
    span = "-"
    if report.backends:
        first = min(b.first_seen for b in report.backends)
        last = max(b.last_seen for b in report.backends)
        span = f"{h.iso(first)} to {h.iso(last)}"
    calls = sum(b.calls for b in report.backends)
    return (
        "<h1>seedlock report</h1>"
        f'<div class="verdict {css}" id="verdict"><strong>{h.esc(headline)}</strong>'
        f"<div>{h.esc(detail)}</div></div>"
        + h.facts(
            [
                ("generated", f"{h.iso(report.generated_at)} by langchain-seedlock {__version__}"),
                ("store", report.store_url),
                ("data", f"{calls} stored calls, {span}"),
                ("models", ", ".join(report.models) or "-"),
                (
                    "options",
                    f"model={o.model or 'all'}, bucket={_duration(report.width)}, "
                    f"top={o.top} requests, last {o.events} events",
                ),
            ]
        )
    )


def _resolved_models(events: Sequence[StoredEvent]) -> dict[str, str]:
    """Backend id -> the model name the server answered with, from the newest
    event about it (the store keeps it only in events)."""
    found: dict[str, str] = {}
    for e in events:  # newest first
        backend, model = e.fields.get(ev.K_BACKEND_ID), e.fields.get(ev.K_RESPONSE_MODEL)
        if isinstance(backend, str) and model is not None:
            found.setdefault(backend, str(model))
    return found


def _backends_table(backends: Sequence[BackendSummary], events: Sequence[StoredEvent]) -> str:
    resolved = _resolved_models(events)
    rows = [
        (
            b.model_key,
            b.system_fingerprint or "(none)",
            resolved.get(b.backend_id, "- (no recent event)"),
            h.Raw(f"<code>{h.esc(b.backend_id)}</code>"),
            b.requests,
            b.calls,
            b.repeat_calls,
            _rate_cell(b.known_repeats, b.repeat_calls),
            "-" if b.tarr is None else f"{h.percent(b.tarr)} of {b.tarr_requests}",
            h.iso(b.first_seen),
            h.iso(b.last_seen),
        )
        for b in backends
    ]
    return h.table(
        [
            "model",
            "fingerprint",
            "resolved model (server)",
            "backend identity",
            "requests",
            "calls",
            "repeat calls",
            "reproducibility [95% interval]",
            "TARr",
            "first seen",
            "last seen",
        ],
        rows,
        numeric=(4, 5, 6),
        table_id="backends",
    )


def _model_section(report: Report, index: int, model: str) -> str:
    backends = [b for b in report.backends if b.model_key == model]
    order = {b.backend_id: i for i, b in enumerate(backends)}
    names = [f"{_backend_name(b)}" for b in backends]
    x0 = min(b.first_seen for b in backends)
    x1 = max(*(b.last_seen for b in backends), x0 + report.width)
    rates = [r for r in report.rates if r.model_key == model and r.backend_id in order]
    x0 = min([x0, *(r.start for r in rates)])
    x1 = max([x1, *(r.start + report.width for r in rates)])
    lanes = [
        h.Lane(
            f"{names[i]}: {h.iso(b.first_seen)} to {h.iso(b.last_seen)}", b.first_seen, b.last_seen
        )
        for i, b in enumerate(backends)
    ]
    series: list[list[h.Point]] = [[] for _ in backends]
    bars: list[list[h.Point]] = [[] for _ in backends]
    rows = []
    for r in sorted(rates, key=lambda r: (order[r.backend_id], r.start)):
        i = order[r.backend_id]
        mid = r.start + report.width / 2
        if r.repeat_calls:
            lo, hi = wilson(r.known_repeats, r.repeat_calls)
            rate = r.known_repeats / r.repeat_calls
            series[i].append(h.Point(mid, rate, lo, hi, f"{h.iso(r.start)}: {h.percent(rate)}"))
        bars[i].append(
            h.Point(r.start, r.new_variants, label=f"{h.iso(r.start)}: {r.new_variants}")
        )
        rows.append((
            _short(r.backend_id), h.iso(r.start), r.requests, r.calls, r.repeat_calls,
            _rate_cell(r.known_repeats, r.repeat_calls), r.new_variants,
        ))  # fmt: skip
    points = sum(len(s) for s in series)
    sid = f"m{index}"
    return (
        f'<section class="model" id="{sid}" data-model="{h.esc(model)}"><h2>{h.esc(model)}</h2>'
        "<h3>Backend identity over time</h3>"
        '<p class="note">One bar per backend identity, from its first to its last stored call; '
        "a dashed line marks where each later one begins (a change of fingerprint, resolved "
        "model or service tier).</p>"
        + h.lanes_chart(lanes, x0=x0, x1=x1, label=f"backend identities of {model}")
        + "<h3>Reproducibility rate over time (higher is better)</h3>"
        + '<p class="note">Per backend and per '
        + h.esc(_duration(report.width))
        + " period: the share of repeat calls that gave an output already seen, for the "
        "requests <em>first seen</em> in that period (all their calls, whenever made); the "
        "bar around each point is its 95% interval. A period with no repeat call has no "
        f"point. {points} point(s).</p>"
        + h.legend(names)
        + h.rate_chart(
            [h.Series(n, s) for n, s in zip(names, series, strict=True)],
            x0=x0,
            x1=x1,
            label=f"reproducibility rate of {model} over time",
        )
        + "<h3>New variants by the time they first appeared (lower is better)</h3>"
        + '<p class="note">Outputs first seen in each period that were not the first output '
        "of their request under that backend: each is one repeat call that did not "
        "reproduce, at the time it happened.</p>"
        + h.count_chart(
            [h.Series(n, b) for n, b in zip(names, bars, strict=True)],
            x0=x0,
            x1=x1,
            width=report.width,
            label=f"new variants of {model} over time",
            y_label="new variants",
        )
        + "<details open><summary>The data behind these charts</summary>"
        + h.table(
            [
                "backend",
                "period start",
                "requests first seen",
                "their calls",
                "repeat calls",
                "reproducibility [95%]",
                "new variants",
            ],
            rows,
            numeric=(2, 3, 4, 6),
        )
        + "</details></section>"
    )


def _position(r: DriftingRequest) -> str:
    parts = []
    if r.first_difference_char is not None:
        parts.append(f"char {r.first_difference_char}")
    if r.first_difference_token is not None:
        parts.append(f"token {r.first_difference_token}")
    if not parts and r.divergence_at is not None:
        parts.append(f"chars {r.divergence_at} (estimated)")
    if parts:
        return ", ".join(parts)
    return "unknown (no drift event with a position)"


def _drifting_table(drifting: Sequence[DriftingRequest]) -> str:
    if not drifting:
        return '<p id="drifting">No request has more than one distinct output.</p>'
    rows = [
        (
            h.Raw(f"<code>{h.esc(r.request_hash)}</code>"),
            r.model_key,
            r.distinct_outputs,
            r.distinct_backends,
            r.calls,
            f"{r.drift_events} ({r.unexplained_events} unexplained)",
            _position(r),
            h.iso(r.first_seen),
            h.iso(r.last_seen),
        )
        for r in drifting
    ]
    return h.table(
        [
            "request hash",
            "model",
            "distinct outputs",
            "backends",
            "calls",
            "drift events",
            "earliest divergence",
            "first seen",
            "last seen",
        ],
        rows,
        numeric=(2, 3, 4),
        table_id="drifting",
    )


def _inflight_section(rows: Sequence[InFlightSummary]) -> str:
    if not rows:
        return (
            '<p id="inflight">Not recorded in this store: its calls were stored without the '
            "number of calls in flight beside them.</p>"
        )
    return h.table(
        ["model", "calls in flight", "calls", "repeat calls", "reproducibility"],
        [
            (r.model_key, r.bucket, r.calls, r.repeat_calls, h.percent(r.reproducibility_rate))
            for r in rows
        ],
        numeric=(2, 3, 4),
        table_id="inflight",
    )


def _summary(e: StoredEvent) -> str:
    f = e.fields
    text = f.get(ev.K_SUMMARY)
    if isinstance(text, str):
        return text
    if e.name == ev.FINGERPRINT_CHANGED:
        return f"fingerprint {f.get(ev.K_PREVIOUS_FINGERPRINT)} -> {f.get(ev.K_FINGERPRINT)}"
    return ""


EVENTS_SCRIPT = """
(function () {
  var name = document.getElementById("f-name"), model = document.getElementById("f-model"),
      text = document.getElementById("f-text"), shown = document.getElementById("f-shown"),
      rows = Array.prototype.slice.call(document.querySelectorAll("#events tbody tr"));
  function apply() {
    var n = name.value, m = model.value, t = text.value.trim().toLowerCase(), k = 0;
    rows.forEach(function (r) {
      var ok = (!n || r.dataset.name === n) && (!m || r.dataset.model === m) &&
               (!t || (r.textContent + " " + (r.dataset.request || "")).toLowerCase()
                        .indexOf(t) >= 0);
      r.hidden = !ok;
      if (ok) k++;
    });
    shown.textContent = k + " of " + rows.length + " events shown";
  }
  [name, model, text].forEach(function (el) {
    el.addEventListener("input", apply);
    el.addEventListener("change", apply);
  });
  apply();
})();
"""


def _options(id_: str, label: str, values: Sequence[str]) -> str:
    opts = '<option value="">all</option>' + "".join(
        f'<option value="{h.esc(v)}">{h.esc(v)}</option>' for v in values
    )
    return f'<label>{h.esc(label)} <select id="{id_}">{opts}</select></label>'


def _events_section(report: Report) -> str:
    counts = h.table(
        ["event", "stored", "first", "last"],
        [(n, c, h.iso(a), h.iso(b)) for n, c, a, b in report.event_counts],
        numeric=(1,),
        table_id="event-counts",
    )
    events = report.events
    if not events:
        return counts + '<p id="events">No stored event.</p>'
    models = [_event_model(e.fields) for e in events]
    filters = (
        '<div class="filters">'
        + _options("f-name", "event", sorted({e.name for e in events}))
        + _options("f-model", "model", sorted(set(models)))
        + '<label>text <input id="f-text" type="search" placeholder="hash, summary..."></label>'
        + '<span id="f-shown" class="muted"></span></div>'
    )
    rows = [
        (
            h.iso(e.at),
            e.name,
            m,
            h.Raw(f"<code>{h.esc(str(e.fields.get(ev.K_REQUEST_HASH) or '')[:16])}</code>"),
            _summary(e),
        )
        for e, m in zip(events, models, strict=True)
    ]
    table = h.table(
        ["at", "event", "model", "request", "summary"],
        rows,
        row_attrs=[
            {"data-name": e.name, "data-model": m, "data-request": e.fields.get(ev.K_REQUEST_HASH)}
            for e, m in zip(events, models, strict=True)
        ],
        table_id="events",
    )
    return (
        counts + f'<p class="note">The {len(events)} most recent stored events, newest first '
        "(the counts above cover every stored event). Filters run in the page.</p>"
        + filters
        + table
    )


HOW_TO_READ = """
<h2>How to read this page</h2>
<ul>
<li><b>Backend identity</b>: a hash of what the responses say about the server: the
<code>system_fingerprint</code>, the resolved model name and the service tier. Server settings
no response reports (flash attention, KV-cache type, parallel slots, prompt cache) are not part
of it: a change there shows as drift under an unchanged backend.</li>
<li><b>Reproducibility rate</b>: per request and backend with <i>n</i> calls and <i>k</i>
distinct outputs, <i>n</i> - 1 repeat calls of which <i>n</i> - <i>k</i> gave an output already
seen. 100% means every repeat call reproduced. The interval is Wilson's at 95%.</li>
<li><b>TARr</b>: the share of requests called at least twice whose outputs were all identical.</li>
<li><b>Over time</b>: the store keeps counts per distinct output, not one row per call, so the
time of each call is not known; the charts use the two measures that are exact: requests by the
period they were first seen, and new variants by the period they first appeared.</li>
<li><b>Earliest divergence</b>: where a drifted output first left the usual one, from the
stored drift events: a character and token position when the texts were known to the process,
else a character range estimated from the outputs' sketches.</li>
</ul>
"""


def render(report: Report) -> str:
    """The page's HTML."""
    body = [
        _header(report),
        "<h2>Backends (per model and backend identity)</h2>",
        _backends_table(report.backends, report.events),
    ]
    for i, model in enumerate(report.models):
        body.append(_model_section(report, i, model))
    body += [
        "<h2>Requests that drift most</h2>",
        '<p class="note">Requests with more than one distinct output, most outputs first '
        f"(at most {report.options.top}). A request with one backend and several outputs "
        "drifted without any change the responses report.</p>",
        _drifting_table(report.drifting),
        "<h2>Reproducibility by calls in flight</h2>",
        '<p class="note">Concurrent calls share batches and the prompt cache, the usual cause '
        "of drift under an unchanged backend.</p>",
        _inflight_section(report.inflight),
        "<h2>Event log</h2>",
        _events_section(report),
        HOW_TO_READ,
    ]
    return h.page(
        "seedlock report",
        "\n".join(body),
        generated_at=report.generated_at,
        script=EVENTS_SCRIPT if report.events else "",
    )


def build(store: BaselineStore, options: Options, *, now: float | None = None) -> str:
    """The page for ``store``; `StoreError` when ``options.model`` names no
    model the store knows (a typo must not give an empty, reassuring page)."""
    report = collect(store, options, now=now)
    if options.model is not None and not report.backends:
        known = ", ".join(sorted({b.model_key for b in store.backends()})) or "none"
        raise StoreError(f"no model {options.model!r} in the store (models: {known})")
    return render(report)
