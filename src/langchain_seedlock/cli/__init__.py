"""The ``seedlock`` command: probe, serve, drift, verify, prune.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``; modules are imported lazily so ``seedlock --help``
stays fast and an optional extra is only needed by the command that uses it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> module under langchain_seedlock.cli
COMMANDS: dict[str, str] = {
    "probe": "_probe_cmd",
    "serve": "_serve_cmd",
    "drift": "_drift_cmd",
    "verify": "_verify_cmd",
    "prune": "_prune_cmd",
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_REPRODUCED = 3  # probe below --fail-under, or verify found drift
EXIT_BACKEND = 4  # the model server could not be reached or started


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers >= ``minimum``, with a message naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid count {text!r}: not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be >= {minimum}")
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
