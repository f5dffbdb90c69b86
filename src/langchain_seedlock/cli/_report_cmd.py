"""``seedlock report --html PATH``: a self-contained HTML page from a store."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from langchain_seedlock.cli import int_at_least

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """An argparse ``type``: ``90``, ``90s``, ``5m``, ``1h``, ``1d`` -> seconds (>= 1)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use seconds or a number with s, m, h or d (e.g. 1h)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be at least 1 second")
    return seconds


def add_parser(subparsers: Any) -> None:
    """Register ``seedlock report``."""
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of the store: backends, reproducibility over time, drift",
        description=(
            "Write one self-contained HTML page (no network needed to open it) from the "
            "baseline store: a verdict; per model and backend identity the reproducibility "
            "rate with its interval, a timeline of identity changes and the rate over time; "
            "the requests that drift most; reproducibility by calls in flight; and the event "
            "log with filters. Reads aggregates only: fine for large stores."
        ),
    )
    parser.add_argument(
        "--html", metavar="PATH", required=True, help="where to write the page ('-': stdout)"
    )
    parser.add_argument(
        "--store", metavar="URL", default=None,
        help="store URL (default: $SEEDLOCK_STORE, else SQLite in the user state directory)",
    )  # fmt: skip
    parser.add_argument(
        "--model", metavar="M", default=None,
        help="only this model: 'gpt-4o-mini' or 'provider:model' (e.g. openai:gpt-4o-mini)",
    )  # fmt: skip
    parser.add_argument(
        "--bucket", metavar="DURATION", type=duration, default=None,
        help="period of the charts over time, e.g. 15m, 1h, 1d (default: chosen for at "
        "most 48 periods)",
    )  # fmt: skip
    parser.add_argument(
        "--top", metavar="N", type=int_at_least(1, 1000), default=25,
        help="list the N requests that drift most (default 25)",
    )  # fmt: skip
    parser.add_argument(
        "--events", metavar="N", type=int_at_least(0, 5000), default=500,
        help="show the N most recent events in the log (default 500)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def _write(path: str, page: str) -> None:
    """Write atomically: a reader (or a browser refresh) never sees half a page.
    The file gets the usual permissions (umask), unlike a ``mkstemp`` file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Write the page; 1 if the store cannot be read or the file written."""
    from langchain_seedlock._errors import StoreError
    from langchain_seedlock._report._page import Options, build
    from langchain_seedlock.cli import EXIT_ERROR, EXIT_OK, open_existing_store

    options = Options(model=args.model, bucket=args.bucket, top=args.top, events=args.events)
    try:
        with open_existing_store(args.store) as store:  # read-only: never creates one
            page = build(store, options)
    except StoreError as exc:
        print(f"seedlock report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.html == "-":
        sys.stdout.write(page)
        return EXIT_OK
    try:
        _write(args.html, page)
    except OSError as exc:
        print(f"seedlock report: cannot write {args.html!r}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    size = len(page.encode())
    print(f"wrote {args.html} ({size / 1024:.0f} KiB)", file=sys.stderr)
    return EXIT_OK
