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
        "--limit", metavar="N", type=int_at_least(1), default=50,
        help="at most N requests, most recently seen first (default 50)",
    )  # fmt: skip
    parser.set_defaults(run=run)


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
    return {"store": store.url, "models": models, "requests": requests}


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


def run(args: argparse.Namespace) -> int:
    """Print the report; 1 if the store cannot be read."""
    from langchain_seedlock._errors import StoreError
    from langchain_seedlock.cli import EXIT_ERROR, EXIT_OK, open_existing_store

    try:
        # Read-only: looking must never create (or migrate) a store.
        with open_existing_store(args.store) as store:
            report = collect(store, model=args.model, limit=args.limit)
    except StoreError as exc:
        print(f"seedlock drift: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_tables(report)
    return EXIT_OK
