"""``seedlock prune``: retention for the baseline store, by age and/or count."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from langchain_seedlock.cli import int_at_least

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid age {text!r}: use a number with a unit s, m, h, d or w (e.g. 30d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_parser(subparsers: Any) -> None:
    """Register ``seedlock prune``."""
    parser = subparsers.add_parser(
        "prune",
        help="delete old baselines and events from the store",
        description=(
            "Delete outputs and events last seen before --older-than, and/or keep only the "
            "--keep-last most recently seen requests. The newest fingerprint of each model is "
            "always kept."
        ),
    )
    parser.add_argument(
        "--store", metavar="URL", default=None,
        help="store URL (default: $SEEDLOCK_STORE, else SQLite in the user state directory)",
    )  # fmt: skip
    parser.add_argument(
        "--older-than", metavar="AGE", type=parse_age, default=None,
        help="delete what was last seen longer ago than AGE (e.g. 30d, 12h)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-last", metavar="N", type=int_at_least(0), default=None,
        help="keep only the N most recently seen requests",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Prune the store; print how many rows were deleted."""
    # Lazy, as every subcommand: keeps `seedlock --help` fast.
    from langchain_seedlock._errors import StoreError
    from langchain_seedlock.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, open_existing_store

    if args.older_than is None and args.keep_last is None:
        print("seedlock prune: give --older-than AGE and/or --keep-last N", file=sys.stderr)
        return EXIT_USAGE
    older_than = None if args.older_than is None else time.time() - args.older_than
    try:
        with open_existing_store(args.store, write=True) as store:
            deleted = store.prune(older_than=older_than, keep_last=args.keep_last)
            url = store.url
    except StoreError as exc:
        print(f"seedlock prune: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"pruned {deleted} rows from {url}")
    return EXIT_OK
