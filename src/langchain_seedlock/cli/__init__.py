"""The ``seedlock`` command: probe, serve, drift, verify, prune, report.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``; modules are imported lazily so ``seedlock --help``
stays fast and an optional extra is only needed by the command that uses it.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

# subcommand -> module under langchain_seedlock.cli
COMMANDS: dict[str, str] = {
    "probe": "_probe_cmd",
    "serve": "_serve_cmd",
    "drift": "_drift_cmd",
    "verify": "_verify_cmd",
    "prune": "_prune_cmd",
    "report": "_report_cmd",
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_REPRODUCED = 3  # probe below --fail-under, or verify found drift
EXIT_BACKEND = 4  # the model server could not be reached or started


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for integers >= ``minimum`` (and <= ``maximum``), with a
    message naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid count {text!r}: not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be <= {maximum}")
        return value

    return parse


def seed(text: str) -> int:
    """An argparse ``type`` for a seed: an integer in the signed 64-bit range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: not an integer") from None
    if not -(2**63) <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(
            f"invalid seed {text!r}: must fit in a signed 64-bit integer"
        )
    return value


def prompt_text(text: str) -> str:
    """An argparse ``type`` for a prompt: not empty or blank."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty")
    return text


def open_existing_store(url: str | None, *, write: bool = False) -> Any:
    """Open the store of a command that looks at (or prunes) baselines.

    Such a command must never create a store: a mistyped ``--store`` path is
    an error (`StoreError`, exit 1), not a new empty store and a false "all
    clear". A SQLite store is opened read-only, or without creating it when
    the command writes (``prune``).
    """
    from langchain_seedlock._store import default_store_url, open_store

    url = url or default_store_url()
    options: dict[str, Any] = {}
    if url.lower().startswith("sqlite:"):
        options = {"create": False} if write else {"read_only": True}
    return open_store(url, **options)


def float_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type`` for finite floats in ``[low, high]`` (NaN refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}: must be between {low:g} and {high:g}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from langchain_seedlock import __version__

    parser = argparse.ArgumentParser(
        prog="seedlock",
        description="Measure, record and verify the reproducibility of LLM calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(f"langchain_seedlock.cli.{module_name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
