"""``seedlock verify``: do recorded requests still reproduce their baseline?

Re-sends seeded requests through the locked model and compares each output
hash with the baseline the store holds for that request hash (the output
seen most often; ties go to the most recent). By default it re-sends the
probe's seeded request (same prompt, seed, temperature and max_tokens
defaults as ``seedlock probe``), so the CI pattern is:

    seedlock probe  --store sqlite:///baselines.db    # once: records the baseline
    seedlock verify --store sqlite:///baselines.db    # later: exit 3 if it drifted

``--prompt`` (repeatable) or ``--prompt-file`` (one prompt per line) verify
other requests with the same lock settings. The store is only read: a
verification never moves a baseline.

Exit codes: 0 every output matches its baseline; 3 at least one differs;
1 a request has no baseline in the store (nothing to verify against) or
another error; 4 the backend cannot be reached or started.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_seedlock._errors import BackendUnavailableError, SeedLockError
from langchain_seedlock.cli import (
    EXIT_BACKEND,
    EXIT_ERROR,
    EXIT_NOT_REPRODUCED,
    EXIT_OK,
    EXIT_USAGE,
    float_between,
    int_at_least,
    open_existing_store,
    prompt_text,
    seed,
)
from langchain_seedlock.cli._probe_cmd import (
    add_backend_arguments,
    configure_cli_logging,
    open_backend,
)
from langchain_seedlock.cli._serve_cmd import add_server_arguments

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from langchain_seedlock._store._base import BaselineStore, OutputSeen


def add_parser(subparsers: Any) -> None:
    from langchain_seedlock.probe._runner import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT

    parser = subparsers.add_parser(
        "verify",
        help="re-send seeded requests and compare with the store's baselines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store", default=None, metavar="URL",
        help="the baseline store (default: $SEEDLOCK_STORE or SQLite in the user state directory)",
    )  # fmt: skip
    parser.add_argument(
        "--prompt", action="append", default=None, type=prompt_text,
        help=f"a prompt to verify (repeatable; default: the probe's prompt {DEFAULT_PROMPT!r})",
    )  # fmt: skip
    parser.add_argument("--prompt-file", type=Path, help="prompts to verify, one per line")
    parser.add_argument("--seed", type=seed, default=123, help="the lock's seed (default: 123)")
    parser.add_argument(
        "--temperature", type=float_between(0.0, 2.0), default=0.7, help="(default: 0.7)"
    )
    parser.add_argument("--max-tokens", type=int_at_least(1), default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--runs", type=int_at_least(1), default=1, help="sends per prompt (default: 1)"
    )
    add_backend_arguments(parser)
    add_server_arguments(parser)
    parser.set_defaults(run=run)


def baseline_output(outputs: list[OutputSeen]) -> OutputSeen | None:
    """The reference output of a request: seen most often, then most recently."""
    if not outputs:
        return None
    return max(outputs, key=lambda o: (o.count, o.last_seen))


class _NoPromptsError(ValueError):
    """--prompt-file holds no prompt: verifying nothing must not pass."""


def _prompts(args: argparse.Namespace) -> list[str]:
    from langchain_seedlock.probe._runner import DEFAULT_PROMPT

    prompts = list(args.prompt or [])
    if args.prompt_file is not None:
        text = args.prompt_file.read_text(encoding="utf-8")
        from_file = [line.strip() for line in text.splitlines() if line.strip()]
        if not from_file:
            raise _NoPromptsError(
                f"--prompt-file {str(args.prompt_file)!r} holds no prompt (one per line); "
                "verifying nothing would pass"
            )
        prompts += from_file
    return prompts or [DEFAULT_PROMPT]


def _seeded_model(args: argparse.Namespace, kwargs: dict[str, Any]) -> BaseChatModel:
    from langchain_seedlock.probe._runner import build_models

    if "chat_models" in kwargs:
        seeded: BaseChatModel = kwargs["chat_models"][1]
        return seeded
    _, seeded = build_models(
        model=kwargs["model"],
        base_url=kwargs.get("base_url"),
        api_key=kwargs.get("api_key"),
        seed=args.seed,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        timeout=120.0,
    )
    return seeded


def _short(value: str | None) -> str:
    return "-" if value is None else value[:12]


def run(args: argparse.Namespace) -> int:
    from langchain_seedlock.probe._runner import run_arm

    configure_cli_logging()
    drifted = missing = 0
    with ExitStack() as stack:
        try:
            prompts = _prompts(args)
            # Only read: a mistyped --store is an error, never a new empty store.
            store: BaselineStore = stack.enter_context(open_existing_store(args.store))
            model = _seeded_model(args, open_backend(args, stack))
            for prompt in prompts:
                for run_ in run_arm(
                    model, arm="seeded", prompt=prompt, runs=args.runs, seed=args.seed
                ):
                    if run_.request_hash is None or run_.output_hash is None:
                        raise SeedLockError("the model did not report seedlock hashes")
                    expected = baseline_output(store.outputs_for(run_.request_hash))
                    label = f"request {_short(run_.request_hash)} ({run_.excerpt[:40]!r})"
                    if expected is None:
                        missing += 1
                        print(f"NO BASELINE {label}")
                    elif expected.output_hash == run_.output_hash:
                        print(f"OK          {label}")
                    else:
                        drifted += 1
                        print(
                            f"DRIFT       {label}: output {_short(run_.output_hash)}, "
                            f"baseline {_short(expected.output_hash)} "
                            f"(fingerprint then {expected.system_fingerprint}, "
                            f"now {run_.system_fingerprint})"
                        )
        except _NoPromptsError as exc:
            print(f"seedlock verify: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BackendUnavailableError as exc:
            print(f"seedlock verify: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return EXIT_BACKEND
        except (SeedLockError, OSError, ValueError) as exc:
            print(f"seedlock verify: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if drifted:
        print(f"seedlock verify: {drifted} output(s) differ from the baseline", file=sys.stderr)
        return EXIT_NOT_REPRODUCED
    if missing:
        print(
            f"seedlock verify: {missing} request(s) have no baseline in the store; "
            "record one with `seedlock probe --store ...` first",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK
