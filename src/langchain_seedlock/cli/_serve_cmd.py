"""``seedlock serve``: run the embedded local backend until Ctrl-C.

Starts llama.cpp's ``llama-server`` with SmolLM2-135M-Instruct on a free
127.0.0.1 port, prints its OpenAI-compatible base URL on stdout (one line,
so scripts can read it) and details on stderr, then waits. Ctrl-C (SIGINT)
or SIGTERM stops the server and its process group; nothing is left behind.

The server settings are the ones that decide whether seeded outputs
reproduce: ``--slots 1 --no-cache-prompt`` is the reproducible setup;
llama-server's own default (``--slots auto``: 4 slots, one unified KV cache,
prompt cache on) changes seeded outputs when requests arrive concurrently,
and ``--flash-attn``/``--cache-type-k``/``--cache-type-v`` change the numerics.
Point ``seedlock probe --base-url URL`` at it to measure each setup.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType
from typing import Any

from langchain_seedlock._errors import BackendUnavailableError
from langchain_seedlock.cli import EXIT_BACKEND, float_between, int_at_least

EXIT_OK = 0


def _slots(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1 or 'auto' (got {text!r})"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or 'auto' (got {text})")
    return value


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The embedded server's settings (shared with ``seedlock probe``)."""
    group = parser.add_argument_group("embedded llama-server")
    group.add_argument(
        "--slots", type=_slots, default=1, metavar="N|auto",
        help="parallel decoding slots, llama-server -np (default: 1, the reproducible setup; "
        "auto: llama-server's default, 4 slots sharing a unified KV cache)",
    )  # fmt: skip
    group.add_argument(
        "--threads",
        type=int_at_least(1, 1024),
        default=2,
        metavar="N",
        help="CPU threads (default: 2)",
    )
    group.add_argument(
        "--no-cache-prompt", dest="cache_prompt", action="store_false",
        help="disable the prompt (KV) cache; with --slots 1 outputs reproduce exactly",
    )  # fmt: skip
    group.add_argument(
        "--flash-attn", choices=("on", "off", "auto"), default=None,
        help="flash attention (llama-server -fa); changing it changes seeded outputs",
    )  # fmt: skip
    group.add_argument("--cache-type-k", default=None, metavar="TYPE", help="KV cache type for K")
    group.add_argument("--cache-type-v", default=None, metavar="TYPE", help="KV cache type for V")
    group.add_argument(
        "--kv-unified", action=argparse.BooleanOptionalAction, default=None,
        help="one KV buffer shared by all slots (default: on only with --slots auto)",
    )  # fmt: skip
    group.add_argument(
        "--startup-timeout", type=float_between(0.1, 86_400.0), default=60.0, metavar="S",
        help="seconds to wait for the server to answer (default: 60)",
    )  # fmt: skip


def server_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`LocalServer` keyword arguments from parsed `add_server_arguments` options."""
    return {
        "slots": args.slots,
        "threads": args.threads,
        "cache_prompt": args.cache_prompt,
        "flash_attn": args.flash_attn,
        "cache_type_k": args.cache_type_k,
        "cache_type_v": args.cache_type_v,
        "kv_unified": args.kv_unified,
        "startup_timeout": args.startup_timeout,
    }


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run llama-server with SmolLM2 locally until Ctrl-C",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int_at_least(1, 65_535), default=None,
        help="TCP port (default: a free one)",
    )  # fmt: skip
    add_server_arguments(parser)
    parser.set_defaults(run=run)


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    """Raised from the SIGTERM handler to unwind through the context manager."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run(args: argparse.Namespace) -> int:
    from langchain_seedlock.local import LocalServer

    server = LocalServer(port=args.port, **server_kwargs(args))
    # SIGTERM (docker stop, systemd, kill) must stop the server like Ctrl-C
    # does: turn it into an exception so the `with` block cleans up.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # A shell starts background jobs (`seedlock serve &`) with SIGINT ignored,
    # and Python then keeps it ignored: restore Ctrl-C / `kill -INT` explicitly.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with server:
            print(server.base_url, flush=True)
            print(
                f"seedlock serve: llama-server ready in {server.startup_seconds or 0:.2f} s "
                f"(pid {server.pid}, slots={server.slots or 'auto'}, threads={server.threads}, "
                f"cache_prompt={server.cache_prompt}); Ctrl-C to stop.\n"
                f"  try: seedlock probe --base-url {server.base_url}",
                file=sys.stderr,
                flush=True,
            )
            while server.running:
                time.sleep(0.2)
            print(
                "seedlock serve: error: llama-server exited unexpectedly",
                file=sys.stderr,
            )
            return EXIT_BACKEND
    except (KeyboardInterrupt, _Stop):
        print("seedlock serve: stopped", file=sys.stderr, flush=True)
        return EXIT_OK
    except BackendUnavailableError as exc:
        first, _, rest = str(exc).partition("\n")
        print(f"seedlock serve: error: {first}", file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        return EXIT_BACKEND
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
