"""``seedlock drift``: what the baseline store knows, per model and per request."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from langchain_seedlock.cli import int_at_least


def add_parser(subparsers: Any) -> None:
    """Register ``seedlock drift``."""
    parser = subparsers.add_parser(
        "drift",
        help="show fingerprints per model and outputs per request from the store",
        description=(
            "Show what the baseline store knows: per model, each system_fingerprint seen "
            "(calls, first and last seen); per request hash, the calls, distinct outputs and "
            "distinct backends, and the output_drift events logged for it. A request with "
            "more than one distinct output did not reproduce."
        ),
    )
    parser.add_argument(
        "--store", metavar="URL", default=None,
        help="store URL (default: $SEEDLOCK_STORE, else SQLite in the user state directory)",
    )  # fmt: skip
    parser.add_argument(
        "--model", metavar="M", default=None,
        help="only this model: 'gpt-4o-mini' or 'provider:model' (e.g. openai:gpt-4o-mini)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--request", metavar="HASH", default=None,
        help="drill into one request (a request hash or a unique prefix of one): its "
        "variants with counts, backends, first/last seen, and its drift events",
    )  # fmt: skip
    parser.add_argument(
        "--fail-on", choices=FAIL_ON, default=None,
        help="exit 3 when the store holds drift of this kind: 'new' (a new variant under "
        "an unchanged backend, logged as a warning), 'unexplained' (any new variant under "
        "an unchanged backend), 'any' (any output_drift, explained ones included)",
    )  # fmt: skip
    parser.add_argument(
        "--limit", metavar="N", type=int_at_least(1), default=50,
        help="at most N requests, most recently seen first (default 50)",
    )  # fmt: skip
    parser.set_defaults(run=run)


FAIL_ON = ("new", "unexplained", "any")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _matches(model_key: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    return model_key == wanted or model_key.split(":", 1)[-1] == wanted


def collect(store: Any, *, model: str | None, limit: int) -> dict[str, Any]:
    """The report as plain data (what ``--json`` prints)."""
    from langchain_seedlock._events import OUTPUT_DRIFT

    models = [
        {
            "model": f.model_key,
            "system_fingerprint": f.system_fingerprint,
            "calls": f.count,
            "first_seen": _iso(f.first_seen),
            "last_seen": _iso(f.last_seen),
        }
        for f in store.models()
        if _matches(f.model_key, model)
    ]
    drift_events: dict[str, int] = {}
    unexplained: dict[str, int] = {}
    for event in store.events(name=OUTPUT_DRIFT, limit=100_000):
        rh = event.fields.get("seedlock.request_hash")
        if isinstance(rh, str):
            drift_events[rh] = drift_events.get(rh, 0) + 1
            if event.fields.get("seedlock.explained") is False:
                unexplained[rh] = unexplained.get(rh, 0) + 1
    wanted_key = model if model is None or ":" in model else None
    requests = [
        {
            "request_hash": r.request_hash,
            "model": r.model_key,
            "calls": r.calls,
            "distinct_outputs": r.distinct_outputs,
            "distinct_backends": r.distinct_backends,
            "drift_events": drift_events.get(r.request_hash, 0),
            "unexplained_drift_events": unexplained.get(r.request_hash, 0),
            "reproducible": r.distinct_outputs == 1,
            "first_seen": _iso(r.first_seen),
            "last_seen": _iso(r.last_seen),
        }
        # Filter after reading when only the bare model name is known.
        for r in store.requests(model_key=wanted_key, limit=limit if model is None else 100_000)
        if _matches(r.model_key, model)
    ][:limit]
    return {
        "store": store.url,
        "models": models,
        "backends": backends(store, model),
        "in_flight": in_flight(store, model),
        "changes": changes(store, model),
        "requests": requests,
    }


def changes(store: Any, model: str | None, limit: int = 100) -> list[dict[str, Any]]:
    """The changes over time, oldest first: backend changes (fingerprint or
    other identity fields, named) and
    reproducibility-rate changes, as stored by every process."""
    from langchain_seedlock._events import (
        BACKEND_CHANGED,
        FINGERPRINT_CHANGED,
        K_CHANGED_FIELDS,
        K_FINGERPRINT,
        K_MODEL_KEY,
        K_PREVIOUS_FINGERPRINT,
        K_SUMMARY,
        REPRODUCIBILITY_CHANGED,
    )

    found = []
    for name in (FINGERPRINT_CHANGED, BACKEND_CHANGED, REPRODUCIBILITY_CHANGED):
        for e in store.events(name=name, limit=100_000):
            f = e.fields
            key = str(f.get(K_MODEL_KEY))
            if not _matches(key, model):
                continue
            fields = f.get(K_CHANGED_FIELDS)
            if name != REPRODUCIBILITY_CHANGED and isinstance(fields, dict) and fields:
                what = ", ".join(
                    f"{'fingerprint' if k == 'system_fingerprint' else k} {old} -> {new}"
                    for k, (old, new) in fields.items()
                )
            elif name == FINGERPRINT_CHANGED:
                what = f"fingerprint {f.get(K_PREVIOUS_FINGERPRINT)} -> {f.get(K_FINGERPRINT)}"
            else:
                what = str(f.get(K_SUMMARY, "reproducibility changed"))
            found.append({"at": _iso(e.at), "event": name, "model": key, "change": what})
    found.sort(key=lambda c: str(c["at"]))
    return found[-limit:]


def in_flight(store: Any, model: str | None) -> list[dict[str, Any]]:
    """Per model and in-flight bucket (calls to the same base URL in flight in
    the process when a call started, itself included): reproducibility rate
    of the repeat calls. Aggregated in the database."""
    from langchain_seedlock._decide import wilson

    out = []
    for b in store.in_flight():
        if not _matches(b.model_key, model):
            continue
        rate = b.reproducibility_rate
        out.append(
            {
                "model": b.model_key,
                "in_flight": b.bucket,
                "calls": b.calls,
                "repeat_calls": b.repeat_calls,
                "reproducibility_rate": None if rate is None else round(rate, 4),
                "reproducibility_interval": (
                    None
                    if rate is None
                    else [round(x, 4) for x in wilson(b.known_repeats, b.repeat_calls)]
                ),
            }
        )
    return out


def _rate_text(row: dict[str, Any]) -> str:
    if row["reproducibility_rate"] is None:
        return "-"
    lo, hi = row["reproducibility_interval"]
    return f"{row['reproducibility_rate']:.0%} [{lo:.0%}-{hi:.0%}]"


def backends(store: Any, model: str | None) -> list[dict[str, Any]]:
    """Per model and backend identity: calls, reproducibility rate, TARr."""
    from langchain_seedlock._decide import wilson

    out = []
    for b in store.backends():
        if not _matches(b.model_key, model):
            continue
        rate = b.reproducibility_rate
        out.append(
            {
                "model": b.model_key,
                "backend_id": b.backend_id,
                "system_fingerprint": b.system_fingerprint,
                "requests": b.requests,
                "calls": b.calls,
                "repeat_calls": b.repeat_calls,
                "reproducibility_rate": None if rate is None else round(rate, 4),
                "reproducibility_interval": (
                    None
                    if rate is None
                    else [round(x, 4) for x in wilson(b.known_repeats, b.repeat_calls)]
                ),
                "tarr": None if b.tarr is None else round(b.tarr, 4),
                "tarr_requests": b.tarr_requests,
                "first_seen": _iso(b.first_seen),
                "last_seen": _iso(b.last_seen),
            }
        )
    return out


def drill(store: Any, prefix: str) -> dict[str, Any]:
    """One request: its variants per backend and its drift events."""
    from langchain_seedlock._errors import StoreError
    from langchain_seedlock._events import K_REQUEST_HASH, OUTPUT_DRIFT, OUTPUT_VARIANT

    matches = [r for r in store.requests(limit=1_000_000) if r.request_hash.startswith(prefix)]
    if len(matches) != 1:
        found = "no request" if not matches else f"{len(matches)} requests"
        raise StoreError(f"{found} in the store with a hash starting {prefix!r}")
    (req,) = matches
    outputs = store.outputs_for(req.request_hash)
    events = [
        {"event": e.name, "at": _iso(e.at), **e.fields}
        for name in (OUTPUT_DRIFT, OUTPUT_VARIANT)
        for e in store.events(name=name, limit=100_000)
        if e.fields.get(K_REQUEST_HASH) == req.request_hash
    ]
    events.sort(key=lambda e: str(e["at"]))
    usual = max(outputs, key=lambda o: (o.count, -o.first_seen), default=None)
    return {
        "store": store.url,
        "request_hash": req.request_hash,
        "model": req.model_key,
        "calls": req.calls,
        "usual_output_hash": None if usual is None else usual.output_hash,
        "variants": [
            {
                "output_hash": o.output_hash,
                "backend_id": o.backend_id,
                "system_fingerprint": o.system_fingerprint,
                "count": o.count,
                "first_seen": _iso(o.first_seen),
                "last_seen": _iso(o.last_seen),
                **_distance_to(usual, o),
                "text": o.output_text,  # only when stored with capture_content=True
            }
            for o in outputs
        ],
        "events": events,
    }


def _distance_to(usual: Any, output: Any) -> dict[str, Any]:
    """How far ``output`` is from the request's usual output, from the two
    stored sketches (no text needed): where they first differ and the
    estimated word-shingle similarity. Nones when a sketch is missing."""
    from langchain_seedlock._sketch import sketch_distance

    if usual is None or output is usual:
        return {"divergence_at": None, "similarity_estimate": None}
    found = sketch_distance(usual.sketch, output.sketch)
    if found is None:
        return {"divergence_at": None, "similarity_estimate": None}
    return {"divergence_at": found[0], "similarity_estimate": round(found[1], 3)}


def failing(store: Any, fail_on: str, model: str | None) -> int:
    """How many stored drift events match ``--fail-on``."""
    from langchain_seedlock._events import K_EXPLAINED, K_PROVIDER, K_REQUEST_MODEL, OUTPUT_DRIFT

    count = 0
    for e in store.events(name=OUTPUT_DRIFT, limit=1_000_000):
        f = e.fields
        key = f"{f.get(K_PROVIDER)}:{f.get(K_REQUEST_MODEL)}"
        if model is not None and not _matches(key, model):
            continue
        explained = f.get(K_EXPLAINED) is True
        warned = f.get("level", "warning") == "warning"  # the level it was logged at
        if fail_on == "any" or (
            not explained and (fail_on == "unexplained" or (fail_on == "new" and warned))
        ):
            count += 1
    return count


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=max(Console().width, 120))
    console.print(f"store: {report['store']}")
    models = Table(title="Fingerprints per model")
    for col in ("model", "system_fingerprint", "calls", "first seen", "last seen"):
        models.add_column(col, justify="right" if col == "calls" else "left")
    for m in report["models"]:
        fp = m["system_fingerprint"] if m["system_fingerprint"] is not None else "(none)"
        models.add_row(m["model"], fp, str(m["calls"]), m["first_seen"], m["last_seen"])
    console.print(models)
    backends_table = Table(title="Reproducibility per model and backend (repeat calls)")
    for col in ("model", "fingerprint", "backend", "requests", "calls", "repeat", "rate", "TARr"):
        backends_table.add_column(
            col, justify="left" if col in ("model", "fingerprint", "backend") else "right"
        )
    for b in report["backends"]:
        rate = _rate_text(b)
        tarr = "-" if b["tarr"] is None else f"{b['tarr']:.0%} of {b['tarr_requests']}"
        backends_table.add_row(
            b["model"], b["system_fingerprint"] or "(none)", b["backend_id"][:12],
            str(b["requests"]), str(b["calls"]), str(b["repeat_calls"]), rate, tarr,
        )  # fmt: skip
    console.print(backends_table)
    if report["in_flight"]:
        load = Table(title="Reproducibility by calls in flight to the same server (repeat calls)")
        for col in ("model", "in flight", "calls", "repeat", "rate"):
            load.add_column(col, justify="left" if col == "model" else "right")
        for r in report["in_flight"]:
            load.add_row(
                r["model"], r["in_flight"], str(r["calls"]), str(r["repeat_calls"]), _rate_text(r)
            )
        console.print(load)
    if report["changes"]:
        timeline = Table(title="Changes over time (oldest first)")
        for col in ("at", "model", "change"):
            timeline.add_column(col)
        for c in report["changes"]:
            timeline.add_row(c["at"], c["model"], c["change"])
        console.print(timeline)
    requests = Table(title="Requests (most recently seen first)")
    for col in ("request", "model", "calls", "outputs", "backends", "drift", "last seen"):
        requests.add_column(
            col, justify="right" if col in ("calls", "outputs", "backends") else "left"
        )
    for r in report["requests"]:
        if r["reproducible"]:
            status = "-"
        else:
            status = f"{r['drift_events']} ({r['unexplained_drift_events']} unexplained)"
        requests.add_row(
            r["request_hash"][:12], r["model"], str(r["calls"]), str(r["distinct_outputs"]),
            str(r["distinct_backends"]), status, r["last_seen"],
        )  # fmt: skip
    console.print(requests)
    if not report["models"] and not report["requests"]:
        console.print("nothing recorded yet")


def _print_request(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=max(Console().width, 120))
    console.print(f"store: {report['store']}")
    console.print(f"request {report['request_hash']} ({report['model']}), {report['calls']} calls")
    table = Table(title="Variants (distances to the usual output, estimated from sketches)")
    columns = ("output", "fingerprint", "backend", "count", "first seen", "last seen",
               "differs at char", "similarity", "text")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right" if col in ("count", "similarity") else "left")
    for v in report["variants"]:
        text = v["text"] if v["text"] is not None else "(not stored: capture_content=False)"
        usual = v["output_hash"] == report["usual_output_hash"]
        at = "(usual)" if usual else v["divergence_at"] or "-"
        similarity = "-" if v["similarity_estimate"] is None else f"~{v['similarity_estimate']:.2f}"
        table.add_row(
            v["output_hash"][:12], v["system_fingerprint"] or "(none)", v["backend_id"][:12],
            str(v["count"]), v["first_seen"], v["last_seen"], at, similarity, text,
        )  # fmt: skip
    console.print(table)
    for e in report["events"]:
        console.print(f"{e['at']}  {e['event']}  {e.get('seedlock.summary', '')}")


def run(args: argparse.Namespace) -> int:
    """Print the report; 1 if the store cannot be read, 3 for ``--fail-on`` drift."""
    from langchain_seedlock._errors import StoreError
    from langchain_seedlock.cli import (
        EXIT_ERROR,
        EXIT_NOT_REPRODUCED,
        EXIT_OK,
        open_existing_store,
    )

    try:
        # Read-only: looking must never create (or migrate) a store.
        with open_existing_store(args.store) as store:
            if args.request is not None:
                report = drill(store, args.request)
            else:
                report = collect(store, model=args.model, limit=args.limit)
            failures = failing(store, args.fail_on, args.model) if args.fail_on else 0
    except StoreError as exc:
        print(f"seedlock drift: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.request is not None:
        _print_request(report)
    else:
        _print_tables(report)
    if failures:
        print(
            f"seedlock drift: {failures} drift event(s) match --fail-on {args.fail_on}",
            file=sys.stderr,
        )
        return EXIT_NOT_REPRODUCED
    return EXIT_OK
